r"""ODE global order: the error at t_min of a probability-flow ODE solver, against steps and against NFE.

Every run starts from the same exact samples x_T ~ p_{t_max} (so prior mismatch is never counted) and is compared
with the exact flow map :math:`\Phi_{t_{max}\to t_{min}}(x_T)`: in closed form for a Gaussian
(:meth:`Gaussian.pf_ode_map`), and for a mixture a DOP853 solve of the same ODE at ``rtol = atol = 1e-13``
(Hairer, Norsett & Wanner 1993, Sec. II.10). Per sample, the error is the RMS over coordinates,
:math:`e_n = \lVert x_n - \Phi(x_T)_n\rVert_2/\sqrt d`; the study reports its RMS over samples (``rms``) and its
maximum (``max``). Errors within 1e3 rtol of the DOP853 reference (its own accuracy) are dropped as a floor, and
round-off plateaus at ``eps(dtype)`` are dropped by :func:`fit_order`. The orders are fitted against h = 1/steps
and against 1/NFE (multistep warm-up and final steps make the two differ slightly).
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import pandas as pd
import torch

from ..catalogue import Problem
from ..distributions import Gaussian
from ..grids import make_grid
from ..models import ScoreError
from ..solvers import get_solver, sample
from ..solvers.base import Solver
from .order import OrderFit, fit_order

REFERENCE_RTOL = 1e-13
METRICS = ("rms", "max")


@dataclass(frozen=True)
class ConvergenceStudy:
    """Tidy errors (one row per steps and metric) and the fitted orders per metric, against steps and NFE."""

    table: pd.DataFrame
    fits: dict[str, OrderFit]
    nfe_fits: dict[str, OrderFit]


@dataclass(frozen=True)
class Reference:
    """Exact starting samples, the flow's value at t_min, and the floor below which errors are not resolved."""

    x_T: torch.Tensor
    x_min: torch.Tensor
    floor: float
    method: str


def reference(problem: Problem, n_samples: int, seed: int, dtype: torch.dtype = torch.float64,
              device: str = "cpu") -> Reference:
    """The exact (Gaussian) or DOP853 (mixture) flow of ``n_samples`` seeded prior samples, memoised per problem
    object (pass the same :class:`Problem` to reuse a DOP853 reference)."""
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
    known = _REFERENCES.setdefault(problem.distribution, {})
    key = (problem.schedule.name, problem.t_min, problem.t_max, n_samples, seed)
    if key not in known:
        known[key] = _solve(problem, n_samples, seed)
    ref = known[key]
    return Reference(ref.x_T.to(dtype=dtype, device=device), ref.x_min.to(dtype=dtype, device=device), ref.floor,
                     ref.method)


_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _solve(problem: Problem, n_samples: int, seed: int) -> Reference:
    x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed))
    if isinstance(problem.distribution, Gaussian):
        x_min = problem.distribution.pf_ode_map(x_T, problem.schedule, problem.t_max, problem.t_min)
        return Reference(x_T, x_min, 0.0, "exact flow")
    grid = make_grid("uniform-lambda", problem.schedule, 1, problem.t_min, problem.t_max)
    solver = get_solver("scipy-dop853", rtol=REFERENCE_RTOL, atol=REFERENCE_RTOL)
    x_min = sample(solver, problem.model(), grid, x_T)
    scale = float(x_min.pow(2).mean().sqrt())
    return Reference(x_T, x_min, 1e3 * REFERENCE_RTOL * max(scale, 1.0), f"DOP853 rtol=atol={REFERENCE_RTOL:g}")


def ode_errors(solver: Solver, problem: Problem, steps: int, *, n_samples: int = 64, seed: int = 0,
               dtype: torch.dtype = torch.float64, device: str = "cpu", grid: str = "uniform-lambda",
               model_error: ScoreError | None = None, timing_repeats: int = 1, **grid_params) -> pd.DataFrame:
    """Tidy rows (``rms``, ``max``) of one run on an n-step grid, with its NFE and wall time.

    ``wall_time`` is one run's time; with ``timing_repeats`` = k > 1, an untimed warm-up run (first-call costs:
    compiled coefficients, caches) and then the fastest of k timed runs, for work-precision studies.
    """
    if not isinstance(timing_repeats, int) or timing_repeats < 1:
        raise ValueError(f"timing_repeats: expected a positive integer, got {timing_repeats!r}")
    if solver.stochastic:
        raise ValueError(f"solver: {solver.name!r} is stochastic; use the weak or strong order studies")
    ref = reference(problem, n_samples, seed, dtype, device)
    exact = reference(problem, n_samples, seed, torch.float64, device)
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max, **grid_params)
    grid_times = times.to(dtype=dtype)
    if timing_repeats > 1:
        sample(solver, problem.model(model_error), grid_times, ref.x_T)
    walls = []
    for _ in range(timing_repeats):
        model = problem.model(model_error)
        start = time.perf_counter()
        x = sample(solver, model, grid_times, ref.x_T)
        walls.append(time.perf_counter() - start)
    wall = min(walls)
    per_sample = (x.double() - exact.x_min).pow(2).mean(dim=1).sqrt()  # compared in float64
    values = dict(rms=float(per_sample.pow(2).mean().sqrt()), max=float(per_sample.max()))
    base = dict(problem=problem.name, solver=solver.name, steps=steps, nfe=model.nfe, seed=seed,
                dtype=str(dtype).removeprefix("torch."))
    return pd.DataFrame([dict(base, metric=m, value=values[m], stderr=float("nan"), wall_time=wall,
                              floor=ref.floor) for m in METRICS])


def fit_table(table: pd.DataFrame, metric: str, axis: str = "steps") -> OrderFit:
    """The order fitted to one metric of a tidy ODE-error table, against h = 1/steps or 1/NFE."""
    rows = table[table.metric == metric].sort_values(axis)
    if rows.empty:
        raise ValueError(f"metric: no rows of {metric!r} in the table")
    dtype = getattr(torch, str(rows.dtype.iloc[0]))
    resolution = torch.finfo(dtype).eps * max(1.0, float(rows.value.max()))
    return fit_order(1.0 / rows[axis].to_numpy(float), rows.value.to_numpy(float),
                     floor=float(rows.floor.max()), resolution=resolution)


def ode_order(solver: Solver, problem: Problem, steps, *, n_samples: int = 64, seed: int = 0,
              dtype: torch.dtype = torch.float64, device: str = "cpu", grid: str = "uniform-lambda",
              model_error: ScoreError | None = None, **grid_params) -> ConvergenceStudy:
    """Global order of a deterministic solver on ``problem`` over the step counts ``steps`` (see module doc)."""
    steps = sorted(int(n) for n in steps)
    if len(steps) < 4 or steps[0] < 1:
        raise ValueError(f"steps: need at least 4 positive step counts, got {steps}")
    table = pd.concat([ode_errors(solver, problem, n, n_samples=n_samples, seed=seed, dtype=dtype, device=device,
                                  grid=grid, model_error=model_error, **grid_params) for n in steps],
                      ignore_index=True)
    return ConvergenceStudy(table=table, fits={m: fit_table(table, m) for m in METRICS},
                            nfe_fits={m: fit_table(table, m, "nfe") for m in METRICS})
