r"""Precision: the order and distance studies in float64, float32, bfloat16 and float16, and where a schedule breaks.

**Solver runs.** For each dtype the prior draws :math:`x_T` (float64, seeded), the time grid and every model
evaluation are in that dtype, as with a user's network: :math:`x_T` and the grid are rounded to it, the analytic
model computes in the dtype of its input, and the noise is drawn in float64 and rounded. The schedule's coefficients
are the float64 numbers the sampling loop reads (:meth:`NoiseSchedule.at`), applied to tensors of the dtype. The
rounded grid is the window actually solved, so every reference runs between its ends. Metrics:

* ``rms``, ``max`` (deterministic solvers): global error :math:`e_i = \lVert x_i - \Phi(x_{T,i})\rVert_2/\sqrt d`
  against the float64 flow :math:`\Phi` of the unrounded :math:`x_T` (exact for a Gaussian; DOP853 at
  rtol = atol = 1e-12 for a mixture, whose accuracy, 100 tolerances times the solution's size, is a ``floor``), so the
  quantisation of :math:`x_T` is part of the round-off; RMS and maximum over samples;
* ``w2-roundoff`` (low dtypes): :math:`(E\lVert x - x^{64}\rVert^2)^{1/2}` against the same solver in float64 on
  the same grid from the unrounded :math:`x_T` with the same noise: a coupling, hence an upper bound of
  :math:`W_2` between the two output laws, the distance that the precision alone costs;
* ``w2`` (float64; Gaussian problem, linear solver): the exact Bures :math:`W_2` of the output law to the exact
  marginal at the grid's end (:func:`~sdetoolkit.exact.propagate`); ``w2-bound`` (low dtypes): ``w2`` of the
  float64 law on the same grid plus ``w2-roundoff``, an upper bound of the low-precision distance (triangle
  inequality).

As the steps grow, truncation error falls and round-off accumulates (about :math:`\sqrt N\,\epsilon` per step
count, :math:`\epsilon` the dtype's machine epsilon): the curve has a floor. Per dtype the order is fitted to ``rms``
(or to ``w2``/``w2-bound`` for a stochastic solver) by :func:`~sdetoolkit.studies.order.fit_order` with the
dtype's resolution, which drops and names the round-off points (with one correction term, or with none where too
few points are left for one); the floor is the smallest error attained, reached when a coarser grid attains it or
the finest points were dropped as round-off. A low-precision run that diverges
(NaN or inf) or a grid that does not survive rounding (two times rounding to one, a time rounding out of the
schedule's range) is recorded in ``issues`` and its cell left out; in float64 either is an error. Stochastic solvers
draw their noise from ``IIDNoise(seed)``; their low-precision runs and the float64 runs share it.

**Schedules.** :func:`schedule_limits` finds, per dtype, the times where the schedule's quantities, rounded to the
dtype, degenerate although their float64 values do not: near t_min :math:`\bar\alpha = \alpha^2` rounding to 1
(a pipeline that forms :math:`\sigma = \sqrt{1-\bar\alpha}`, as DDPM's does, gets :math:`\sigma = 0` and
:math:`\lambda = +\infty` there), :math:`\sigma` subnormal or rounding to 0 (:math:`\lambda = +\infty`); near t_max
:math:`\bar\alpha` subnormal, :math:`\alpha` rounding to 0 (:math:`\lambda = -\infty`), :math:`\sigma^2` or
:math:`\sigma` overflowing (the marginal variance :math:`\alpha^2 s + \sigma^2` is infinite). Values are rounded as
torch rounds them, float64 through float32 to the dtype: a double rounding, so a value within half a float32 spacing
beyond a midpoint of the dtype rounds as the midpoint does (``alpha_bar = 1 - eps/4 - 2^-26`` becomes 1 in float16).
Rounding is monotone, so each break is one time, found by a scan and bisection to float64 resolution.
:func:`catalogue_limits` lists the catalogue problems whose window [t_min, t_max] reaches a break. References:
IEEE 754-2019 (rounding to nearest, ties to even); Ho et al. 2020 (DDPM, :math:`\bar\alpha`); Higham 2002,
*Accuracy and Stability of Numerical Algorithms*, ch. 3 (accumulation of rounding errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..catalogue import Problem, get_problem, list_problems
from ..distributions import Gaussian
from ..exact import gaussian_law, propagate
from ..grids import make_grid, validate_grid
from ..noise import IIDNoise
from ..schedules import NoiseSchedule, get_schedule, list_schedules
from ..solvers.base import DivergenceError, Solver, get_solver, sample
from .order import OrderFit, fit_order

DTYPES = ("float64", "float32", "bfloat16", "float16")
COLUMNS = ("problem", "solver", "steps", "nfe", "seed", "dtype", "metric", "value", "stderr", "reference")
"""Table columns: the common ones, then ``reference`` (what the metric is measured against)."""
ISSUE_COLUMNS = ("problem", "solver", "steps", "dtype", "issue", "detail")
FLOOR_COLUMNS = ("problem", "solver", "dtype", "metric", "eps", "floor", "floor_steps", "reached", "order", "low",
                 "high", "dropped", "note")
REFERENCE_TOLERANCE = 1e-12


def as_dtype(name) -> torch.dtype:
    """One of :data:`DTYPES` (a name or a torch dtype) as a torch dtype."""
    label = str(name).removeprefix("torch.")
    if label not in DTYPES:
        raise ValueError(f"dtypes: expected names from {DTYPES}, got {name!r}")
    return getattr(torch, label)


@dataclass(frozen=True)
class PrecisionStudy:
    """Tidy errors (:data:`COLUMNS`), the floor and fitted order per dtype (:data:`FLOOR_COLUMNS`), the fits, and the
    cells that low precision broke (:data:`ISSUE_COLUMNS`)."""

    table: pd.DataFrame
    floors: pd.DataFrame
    fits: dict[str, OrderFit | None]
    issues: pd.DataFrame


def _check_steps(steps) -> list[int]:
    steps = list(steps)
    if len(steps) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in steps):
        raise ValueError(f"steps: expected at least two positive ints, got {steps!r}")
    return sorted(set(steps))


def _per_sample(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distances ||x_i - y_i||^2 in float64 on the CPU."""
    return (x.detach().to(device="cpu", dtype=torch.float64) - y).square().sum(1)


def _rms(squared: torch.Tensor) -> tuple[float, float]:
    """sqrt(mean) of per-sample squared errors and its delta-method standard error."""
    value = float(squared.mean().sqrt())
    if value == 0.0:
        return 0.0, 0.0
    return value, float(squared.std() / (2 * value * math.sqrt(len(squared))))


class _Reference:
    """The float64 flow of the unrounded prior draws between the ends of a grid, memoised per window."""

    def __init__(self, problem: Problem, x_T: torch.Tensor):
        self.problem, self.x_T, self._flows = problem, x_T, {}
        self.exact = isinstance(problem.distribution, Gaussian)
        self.method = "exact flow" if self.exact else f"DOP853 rtol=atol={REFERENCE_TOLERANCE:g}"

    def flow(self, t_hi: float, t_lo: float) -> torch.Tensor:
        if (t_hi, t_lo) not in self._flows:
            p = self.problem
            if self.exact:
                end = p.distribution.pf_ode_map(self.x_T, p.schedule, t_hi, t_lo)
            else:
                solver = get_solver("scipy-dop853", rtol=REFERENCE_TOLERANCE, atol=REFERENCE_TOLERANCE)
                end = sample(solver, p.model(), torch.tensor([t_hi, t_lo], dtype=torch.float64), self.x_T)
            self._flows[t_hi, t_lo] = end
        return self._flows[t_hi, t_lo]

    def floor(self, scale: float) -> float:
        return 0.0 if self.exact else 100 * REFERENCE_TOLERANCE * max(scale, 1.0)


def precision_study(solver: Solver, problem: Problem, steps: Iterable[int], *, dtypes: Iterable = DTYPES,
                    n_samples: int = 64, seed: int = 0, device="cpu", grid: str = "uniform-lambda",
                    **grid_params) -> PrecisionStudy:
    """Errors and distances of ``solver`` on ``problem`` at each of ``steps`` in each of ``dtypes`` (see the module
    docstring), with the round-off floor and the order fitted per dtype."""
    steps = _check_steps(steps)
    names = [str(as_dtype(d)).removeprefix("torch.") for d in dtypes]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"dtypes: expected distinct names from {DTYPES}, got {list(dtypes)!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples: expected an int >= 2, got {n_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed))
    reference = _Reference(problem, x_T)
    exact_law = isinstance(problem.distribution, Gaussian) and solver.linear
    float64_runs: dict[bytes, tuple[torch.Tensor, int]] = {}
    rows, issues = [], []

    def run(times: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        if x.dtype == torch.float64 and times.numpy().tobytes() in float64_runs:
            return float64_runs[times.numpy().tobytes()]
        model = problem.model()
        out = sample(solver, model, times, x, IIDNoise(seed) if solver.stochastic else None), model.nfe
        if x.dtype == torch.float64:
            float64_runs[times.numpy().tobytes()] = out
        return out

    for name in names:
        dtype = as_dtype(name)
        x = x_T.to(device=device, dtype=dtype)
        for n in steps:
            common = dict(problem=problem.name, solver=solver.name, steps=n, seed=seed, dtype=name)
            rounded = make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max, **grid_params).to(dtype)
            try:
                times = validate_grid(rounded.to(torch.float64), problem.schedule, "grid")
            except ValueError as err:
                if dtype == torch.float64:
                    raise
                issues.append(dict(common, issue="grid", detail=f"the grid rounded to {name}: {err}"))
                continue
            try:
                out, nfe = run(times, x)
            except DivergenceError as err:
                if dtype == torch.float64:
                    raise
                issues.append(dict(common, issue="diverged", detail=str(err)))
                continue
            common["nfe"] = nfe
            t_hi, t_lo = float(times[0]), float(times[-1])
            if not solver.stochastic:
                squared = _per_sample(out, reference.flow(t_hi, t_lo)) / problem.distribution.dim
                rms, rms_se = _rms(squared)
                rows.append(dict(common, metric="rms", value=rms, stderr=rms_se, reference=reference.method))
                rows.append(dict(common, metric="max", value=float(squared.max().sqrt()), stderr=math.nan,
                                 reference=reference.method))
            roundoff = None
            if dtype != torch.float64:
                roundoff = _rms(_per_sample(out, run(times, x_T.to(device))[0].cpu()))
                rows.append(dict(common, metric="w2-roundoff", value=roundoff[0], stderr=roundoff[1],
                                 reference="float64 run, same grid, x_T and noise"))
            if exact_law:
                law = propagate(solver, problem.distribution, problem.schedule, times)
                w2 = law.w2(gaussian_law(problem.distribution.noised(problem.schedule, t_lo)))
                metric, value, se = ("w2", w2, math.nan) if roundoff is None else ("w2-bound", w2 + roundoff[0],
                                                                                   roundoff[1])
                rows.append(dict(common, metric=metric, value=value, stderr=se, reference="exact marginal at t_min"))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    floors, fits = _floors(table, solver, problem, reference)
    return PrecisionStudy(table=table, floors=floors, fits=fits, issues=pd.DataFrame(issues,
                                                                                      columns=list(ISSUE_COLUMNS)))


def _floors(table: pd.DataFrame, solver: Solver, problem: Problem, reference: _Reference):
    """Per dtype: the fitted order and the round-off floor of the study's error metric."""
    rows, fits = [], {}
    for name, group in table.groupby("dtype", sort=False):
        wanted = ("rms",) if not solver.stochastic else ("w2", "w2-bound")
        curve = group[group.metric.isin(wanted)].sort_values("steps")
        if curve.empty:
            continue
        steps, errors = curve.steps.to_numpy(int), curve.value.to_numpy(float)
        eps = float(torch.finfo(as_dtype(name)).eps)
        scale = float(reference.x_T.square().mean().sqrt())
        fit, note = None, ""
        positive = errors > 0
        for corrections in (1, 0):
            try:
                fit = fit_order(1.0 / steps[positive], errors[positive], floor=reference.floor(scale),
                                resolution=eps * max(scale, 1.0), corrections=corrections)
                note = "" if corrections else "fitted without a correction term (too few points for one)"
                break
            except ValueError as err:
                note = f"no fit: {err}"
        fits[name] = fit
        best = int(np.argmin(errors))
        dropped = "" if fit is None else ", ".join(f"{round(1 / h)} ({why})"
                                                    for h, why in zip(fit.dropped, fit.drop_reasons, strict=True))
        rows.append(dict(problem=problem.name, solver=solver.name, dtype=name, metric=curve.metric.iloc[-1], eps=eps,
                         floor=float(errors[best]), floor_steps=int(steps[best]),
                         reached=best < len(steps) - 1 or (fit is not None and "round-off plateau" in
                                                           fit.drop_reasons),
                         order=math.nan if fit is None else fit.order, low=math.nan if fit is None else fit.low,
                         high=math.nan if fit is None else fit.high, dropped=dropped, note=note))
    return pd.DataFrame(rows, columns=list(FLOOR_COLUMNS)), fits


# -- schedules -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Limit:
    """A degeneracy of a rounded schedule quantity: the side of the window where it sets in, where the float64 value
    itself is regular (``regular``), and the degeneracy of its rounding to a dtype (``degenerate``), both on the
    float64 values (alpha, sigma)."""

    side: str
    regular: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    degenerate: Callable[[torch.Tensor, torch.Tensor, torch.dtype], torch.Tensor]
    detail: str


def _rounded(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return v.to(dtype).to(torch.float64)


def _tiny(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).tiny)


LIMITS = {
    "alpha-bar-rounds-to-1": _Limit(
        "t_min", lambda a, s: a * a < 1, lambda a, s, d: _rounded(a * a, d) == 1,
        "alpha^2 rounds to 1: a pipeline forming sigma = sqrt(1 - alpha_bar) gets sigma = 0, lambda = +inf"),
    "sigma-subnormal": _Limit("t_min", lambda a, s: s > 0, lambda a, s, d: _rounded(s, d) < _tiny(d),
                              "sigma is subnormal: its relative precision is lost"),
    "sigma-underflow": _Limit("t_min", lambda a, s: s > 0, lambda a, s, d: _rounded(s, d) == 0,
                              "sigma rounds to 0: lambda = +inf, the score ~ 1/sigma^2 is infinite"),
    "alpha-bar-subnormal": _Limit("t_max", lambda a, s: a > 0, lambda a, s, d: _rounded(a * a, d) < _tiny(d),
                                  "alpha^2 is subnormal: its relative precision is lost"),
    "alpha-underflow": _Limit("t_max", lambda a, s: a > 0, lambda a, s, d: _rounded(a, d) == 0,
                              "alpha rounds to 0: lambda = -inf"),
    "sigma-squared-overflow": _Limit("t_max", lambda a, s: torch.isfinite(s * s),
                                     lambda a, s, d: torch.isinf(_rounded(s * s, d)),
                                     "sigma^2 overflows: the marginal variance alpha^2 s + sigma^2 is infinite"),
    "sigma-overflow": _Limit("t_max", lambda a, s: torch.isfinite(s), lambda a, s, d: torch.isinf(_rounded(s, d)),
                             "sigma overflows"),
}
"""The degeneracies :func:`schedule_limits` looks for, by name."""

LIMIT_COLUMNS = ("schedule", "params", "dtype", "issue", "side", "breaks", "t_break", "t_lo", "t_hi", "detail")


def _boundary(schedule: NoiseSchedule, limit: _Limit, dtype: torch.dtype) -> float:
    """The time where ``limit`` stops holding, walking in from its side; NaN where it never holds, the far end of
    the range where it holds throughout."""
    lo, hi = schedule.t_lo, schedule.t_hi
    span = hi - lo
    offsets = torch.logspace(-300 if lo == 0 and limit.side == "t_min" else -16, 0, 3001, dtype=torch.float64) * span
    inward = lo + offsets if limit.side == "t_min" else hi - offsets
    inward = inward[(inward > lo) & (inward < hi)]
    inward = inward[limit.regular(schedule.alpha(inward), schedule.sigma(inward))]

    def holds(t: torch.Tensor) -> torch.Tensor:
        return limit.degenerate(schedule.alpha(t), schedule.sigma(t), dtype)

    flags = holds(inward)
    if not len(flags) or not bool(flags[0]):
        return math.nan
    if bool(flags.all()):
        return hi if limit.side == "t_min" else lo
    k = int((~flags).nonzero()[0])
    inside, outside = float(inward[k - 1]), float(inward[k])
    for _ in range(200):
        middle = 0.5 * (inside + outside)
        if middle in (inside, outside):
            break
        if bool(holds(torch.tensor([middle], dtype=torch.float64))[0]):
            inside = middle
        else:
            outside = middle
    return inside


def schedule_limits(schedule: NoiseSchedule, dtypes: Iterable = DTYPES) -> pd.DataFrame:
    """Where each of :data:`LIMITS` sets in for ``schedule`` in each dtype: one row per (dtype, issue); ``t_break`` is
    the last time, walking in from ``side``, at which it holds (NaN, ``breaks`` False, where it never does)."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule: expected a NoiseSchedule, got {type(schedule).__name__}")
    rows = []
    for d in dtypes:
        dtype = as_dtype(d)
        for issue, limit in LIMITS.items():
            t = _boundary(schedule, limit, dtype)
            rows.append(dict(schedule=schedule.name, params=", ".join(f"{k}={v}" for k, v in schedule.params.items()),
                             dtype=str(dtype).removeprefix("torch."), issue=issue, side=limit.side,
                             breaks=not math.isnan(t), t_break=t, t_lo=schedule.t_lo, t_hi=schedule.t_hi,
                             detail=limit.detail))
    return pd.DataFrame(rows, columns=list(LIMIT_COLUMNS))


def family_limits(dtypes: Iterable = DTYPES) -> pd.DataFrame:
    """:func:`schedule_limits` of every schedule family at its default parameters."""
    return pd.concat([schedule_limits(get_schedule(name), dtypes) for name in list_schedules()], ignore_index=True)


def catalogue_limits(dtypes: Iterable = DTYPES, problems: Iterable[str] | None = None) -> pd.DataFrame:
    """The catalogue problems whose window reaches a schedule break: one row per (problem, dtype, issue) where
    t_min <= t_break (a t_min-side issue) or t_max >= t_break (a t_max-side one)."""
    dtypes = list(dtypes)
    rows = []
    for name in list_problems() if problems is None else problems:
        problem = get_problem(name)
        limits = schedule_limits(problem.schedule, dtypes)
        for limit in limits[limits.breaks].itertuples():
            edge = problem.t_min if limit.side == "t_min" else problem.t_max
            if (edge <= limit.t_break) if limit.side == "t_min" else (edge >= limit.t_break):
                rows.append(dict(problem=name, schedule=limit.schedule, dtype=limit.dtype, issue=limit.issue,
                                 side=limit.side, edge=edge, t_break=limit.t_break, detail=limit.detail))
    return pd.DataFrame(rows, columns=["problem", "schedule", "dtype", "issue", "side", "edge", "t_break", "detail"])
