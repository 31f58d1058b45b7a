"""Loop overhead of ``sdetoolkit.sample``: wall time of a run divided by (NFE x one model evaluation).

DPM-Solver++(2M) on ``gmm-d64-k16`` (d = 64, K = 16) with N = 1e5 samples by default, 10 steps, float64 and
float32. The model evaluation is timed alone on the same batch in the same run, so the ratio is what the loop,
the solver's arithmetic and the schedule look-ups add on top of the model. Target: <= 1.05.

Run: ``python benchmarks/bench_loop_overhead.py [--n 100000] [--steps 10] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.solvers import get_solver, sample


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    problem = get_problem("gmm-d64-k16")
    grid = make_grid("uniform-lambda", problem.schedule, args.steps, problem.t_min, problem.t_max)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N = {args.n}, {args.steps} steps")
    for dtype in (torch.float64, torch.float32):
        measure(problem, grid, problem.prior().sample(args.n, torch.Generator().manual_seed(0)).to(dtype),
                args.repeats)


def measure(problem, grid, x: torch.Tensor, repeats: int) -> None:
    """Print the model-call time, the run time and their ratio for one batch."""
    model = problem.model()
    times = [float(t) for t in grid[:-1]]
    one_call = median_time(lambda: [model(x, t) for t in times], repeats) / len(times)
    run = median_time(lambda: sample(get_solver("dpmpp-2m"), model, grid, x), repeats)
    ratio = run / (len(times) * one_call)
    print(f"{x.dtype!s:<14} model call {one_call * 1e3:8.1f} ms   sample {run * 1e3:9.1f} ms   "
          f"overhead ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
