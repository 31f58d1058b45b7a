"""ER-SDE's seven official noise scale functions, and ER-SDE-1/2/3's final-time error against NFE on gauss-1d.

Prints (1) phi(s) of each official ``customized_func`` type and the step-noise ratio sqrt(s_t^2 - s_s^2 r^2)/s_t on
one step of an EDM grid, and (2) for each phi and order, the Monte Carlo error of the output's mean and variance
against the exact marginal at t_min (seeded, with standard errors) and, from the exact-moment engine, the exact W2.

    OMP_NUM_THREADS=1 python analysis/er_sde_noise_scales.py [--samples 20000] [--steps 5 10 20 40]
"""

from __future__ import annotations

import argparse
import math

import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.exact import gaussian_law, propagate
from sdetoolkit.noise import IIDNoise
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.symbolic import er_sde_integrals as er


def noise_scale_table() -> None:
    print("noise scale functions phi(s) (official customized_func types) and one-step noise ratio 0.5 -> 0.4")
    points = (0.01, 0.1, 1.0, 10.0, 80.0)
    print(f"{'type':>4} {'name':>6} " + " ".join(f"phi({p:g})".rjust(12) for p in points) + "  std/s_t")
    for func_type in range(1, 8):
        phi = er.official_noise_scale(func_type)
        values = " ".join(f"{phi.value(p):12.5g}" for p in points)
        ratio = math.sqrt(max(er.step_variance(phi, 0.4, 0.5), 0.0)) / 0.4
        print(f"{func_type:>4} {er.OFFICIAL_NAMES[func_type]:>6} {values}  {ratio:.4f}")


def error_table(samples: int, steps: list[int]) -> None:
    problem = get_problem("gauss-1d")
    target = problem.target()
    mean, var = float(target.mean()), float(target.covariance())
    truth = gaussian_law(target)
    print(f"\nER-SDE on gauss-1d (edm grid, VE form, official integration), N = {samples}; target mean {mean:.5f}, "
          f"variance {var:.5f}")
    print(f"{'type':>4} {'order':>5} {'nfe':>4} {'mean err':>10} {'(se)':>8} {'var err':>10} {'(se)':>8} "
          f"{'exact W2':>10}")
    x = problem.prior().sample(samples, torch.Generator().manual_seed(0))
    for func_type in range(1, 8):
        for order in (1, 2, 3):
            solver = get_solver(f"er-sde-{order}", noise_scale=func_type)
            for n in steps:
                grid = make_grid("edm", problem.schedule, n, problem.t_min, problem.t_max)
                y = sample(solver, problem.model(), grid, x, IIDNoise(1))[:, 0]
                w2 = propagate(solver, problem.distribution, problem.schedule, grid).w2(truth)
                print(f"{func_type:>4} {order:>5} {solver.expected_nfe(grid):>4} {float(y.mean()) - mean:10.2e} "
                      f"{math.sqrt(var / samples):8.1e} {float(y.var()) - var:10.2e} "
                      f"{var * math.sqrt(2 / (samples - 1)):8.1e} {w2:10.3e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40])
    args = parser.parse_args()
    noise_scale_table()
    error_table(args.samples, args.steps)


if __name__ == "__main__":
    main()
