"""Exact-moment weak-order study against its Monte Carlo equivalent.

SDE-DPM-Solver++(2M) on ``gauss-diag-d1024``, 8 step counts: the exact study (:func:`sdetoolkit.exact.weak_errors`,
no sampling) is timed whole; the Monte Carlo equivalent (the same runs on N samples with seeded i.i.d. noise, plus the
sample mean and variance) is timed at two smaller N in the same process, checked to scale linearly in N, and
extrapolated to N = 1e5, where it would need ~0.8 GB per state in float64. Reports the ratio MC / exact.

Run: ``python benchmarks/bench_exact_moments.py [--solver sde-dpmpp-2m] [--n 1000 4000]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.exact import weak_errors
from sdetoolkit.noise import IIDNoise
from sdetoolkit.solvers import get_solver, sample

STEPS = [8, 12, 16, 24, 32, 48, 64, 96]


def monte_carlo(solver, problem, n: int) -> float:
    start = time.perf_counter()
    x_T = problem.prior().sample(n, torch.Generator().manual_seed(0))
    for steps in STEPS:
        grid = make_grid("edm", problem.schedule, steps, problem.t_min, problem.t_max)
        x = sample(solver, problem.model(), grid, x_T, IIDNoise(0))
        x.mean(0), x.var(0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--solver", default="sde-dpmpp-2m")
    parser.add_argument("--n", type=int, nargs=2, default=[1000, 4000])
    args = parser.parse_args()
    problem = get_problem("gauss-diag-d1024")
    solver = get_solver(args.solver)
    weak_errors(solver, problem, STEPS[:2], grid="edm")
    start = time.perf_counter()
    table = weak_errors(solver, problem, STEPS, grid="edm")
    exact = time.perf_counter() - start
    small, large = (monte_carlo(solver, problem, n) for n in args.n)
    per_sample = (large - small) / (args.n[1] - args.n[0])
    extrapolated = small + per_sample * (100_000 - args.n[0])
    print(table[["steps", "nfe", "w2_marginal", "kl_marginal"]].to_string(index=False))
    print(f"exact study, 8 step counts: {exact:.2f} s")
    print(f"Monte Carlo: {small:.2f} s at N = {args.n[0]}, {large:.2f} s at N = {args.n[1]} "
          f"(scaling ratio {large / small:.2f} for {args.n[1] / args.n[0]:.0f}x samples)")
    print(f"Monte Carlo at N = 1e5 (linear extrapolation): {extrapolated:.1f} s; ratio MC / exact = "
          f"{extrapolated / exact:.0f}")


if __name__ == "__main__":
    main()
