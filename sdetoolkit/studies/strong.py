r"""Strong order of an SDE solver: coupled runs on one Brownian path against a much finer run of the same solver.

Every grid is a subsample of one reference grid :math:`2^{\text{levels}}` times finer than the finest tested grid,
so the grids are nested, and every run draws its noise from one :class:`~sdetoolkit.noise.BrownianPath` covering
all of them (stage times included). The strong error at N steps is
:math:`\big(E\,\|X_N - X_{\text{ref}}\|^2\big)^{1/2}` over trajectories started from the same exact prior samples;
its order comes with a bootstrap interval over trajectories (:func:`~sdetoolkit.studies.order.bootstrap_fit`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..grids import make_grid
from ..noise import BrownianPath
from ..solvers.base import Solver, sample
from .order import OrderFit, bootstrap_fit


@dataclass(frozen=True)
class StrongStudy:
    """Per-step-count strong errors (a tidy table), the squared errors per trajectory, and the fitted order."""

    table: pd.DataFrame
    squared_errors: torch.Tensor
    fit: OrderFit


def strong_order(solver: Solver, problem, steps, *, levels: int = 4, n_samples: int = 1000, seed: int = 0,
                 grid: str = "uniform-lambda", confidence: float = 0.95) -> StrongStudy:
    """Strong errors of ``solver`` on ``problem`` at each of ``steps``, against the same solver on a grid
    ``2**levels`` times finer than the finest, all on one Brownian path."""
    steps = sorted(int(n) for n in steps)
    if levels < 1:
        raise ValueError(f"levels: need at least one level of refinement, got {levels}")
    n_ref = steps[-1] * 2**levels
    if any(n_ref % n for n in steps):
        raise ValueError(f"steps: each must divide the reference step count {n_ref} (nested grids)")
    reference_grid = make_grid(grid, problem.schedule, n_ref, problem.t_min, problem.t_max)
    grids = {n: reference_grid[:: n_ref // n] for n in steps}
    model = problem.model()
    path = BrownianPath.covering(solver, model, [reference_grid, *grids.values()], seed=seed)
    x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed))
    reference = sample(solver, model, reference_grid, x_T, path)
    squared = torch.stack([(sample(solver, model, g, x_T, path) - reference).square().sum(1) for g in grids.values()])
    fit = bootstrap_fit([1.0 / n for n in steps], squared.numpy(), confidence=confidence, seed=seed)
    rms = squared.mean(1).sqrt()
    se = squared.std(1) / (2 * rms * n_samples**0.5)
    table = pd.DataFrame(dict(solver=solver.name, problem=problem.name, steps=steps, reference_steps=n_ref,
                              strong_error=rms.numpy(), standard_error=se.numpy()))
    return StrongStudy(table=table, squared_errors=squared, fit=fit)
