"""Sample paths of two ODE and two SDE samplers on gmm-ring8-2d over the exact data density.

Writes analysis/results/trajectories.csv (solver, path, step, x, y) and docs/figures/trajectories.{pdf,png}.
Run: ``python analysis/trajectories.py`` (seconds).
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import torch

from sdetoolkit import figures, get_problem, make_grid
from sdetoolkit.noise import IIDNoise
from sdetoolkit.solvers import get_solver, sample

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOLVERS = ("ddim", "dpmpp-2m", "euler-maruyama", "sde-dpmpp-2m")
PATHS, STEPS, SEED = 24, 30, 0


def paths_table(problem) -> pd.DataFrame:
    x_T = problem.prior().sample(PATHS, torch.Generator().manual_seed(SEED))
    grid = make_grid("uniform-lambda", problem.schedule, STEPS, problem.t_min, problem.t_max)
    rows = []
    for name in SOLVERS:
        solver = get_solver(name)
        noise = IIDNoise(SEED) if solver.stochastic else None
        trajectory = sample(solver, problem.model(), grid, x_T, noise, return_trajectory=True).trajectory
        steps, paths = np.meshgrid(np.arange(trajectory.shape[0]), np.arange(PATHS), indexing="ij")
        rows.append(pd.DataFrame(dict(solver=name, path=paths.ravel(), step=steps.ravel(),
                                      x=trajectory[..., 0].reshape(-1).numpy(),
                                      y=trajectory[..., 1].reshape(-1).numpy())))
    return pd.concat(rows, ignore_index=True)


def density(problem, half_width: float = 4.0, n: int = 241) -> dict:
    """The exact log density of the data at t_min on a regular grid."""
    axis = np.linspace(-half_width, half_width, n)
    X, Y = np.meshgrid(axis, axis)
    points = torch.from_numpy(np.stack([X.ravel(), Y.ravel()], axis=1))
    return dict(X=X, Y=Y, logp=problem.target().log_prob(points).numpy().reshape(X.shape))


def main() -> None:
    problem = get_problem("gmm-ring8-2d")
    table = paths_table(problem)
    out = ROOT / "analysis" / "results" / "trajectories.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    for path in figures.save(figures.trajectories(table, density(problem)), ROOT / "docs" / "figures" / "trajectories"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
