r"""Model-error robustness: the exact distance to the truth of ODE and SDE samplers as the model's error grows.

The model is the exact one with a controlled :class:`~sdetoolkit.models.ScoreError` of one ``kind`` and magnitude
c: ``bias``, a fixed unit direction :math:`u` (seeded by ``seed``) times :math:`b(t)`, or ``noise``, a fresh
:math:`n(t)\,\xi`, :math:`\xi \sim \mathcal N(0, I)`, at every evaluation. The ``profile`` sets the time
dependence: ``eps`` (default) gives :math:`b = n = c/\sigma(t)` in the score, an error of constant size c in the
noise prediction :math:`\hat\varepsilon = -\sigma s` (the scale a trained network's error is measured in); ``score``
gives :math:`b = n = c`. A bias has norm c, a noise c per coordinate.

On a Gaussian problem the biased model is still affine in x and the random error is one more Gaussian draw per
evaluation, so a linear solver's output is exactly Gaussian: :func:`~sdetoolkit.exact.propagate` gives its law and
the study reports, with no Monte Carlo error (``stderr`` NaN), the exact Bures :math:`W_2` (``w2``) and
:math:`\mathrm{KL}(\text{output}\,\|\,\text{truth})` (``kl``) to the exact marginal at t_min, and ``w2-shift``, the
:math:`W_2` between the output laws of the same solver with and without the error: how far the error moves the
samples, apart from the discretisation error (which the error can partly offset, so ``w2`` need not grow with c).
Solvers are compared at equal NFE: each is given the number of steps that spends exactly the requested evaluations
(:func:`steps_for_nfe`).

The claim under test: stochastic samplers tolerate score error better than deterministic ones, since the noise they
inject lets the dynamics forget errors made earlier (Karras et al. 2022, EDM, arXiv 2206.00364, Sec. 4; Song et al.
2021, Score-SDE, arXiv 2011.13456, Sec. 4.3 on predictor-corrector samplers correcting errors). The study measures
it; it does not assume it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from ..catalogue import Problem
from ..distributions import Gaussian
from ..exact import gaussian_law, propagate
from ..grids import make_grid
from ..models import ScoreError
from ..schedules import NoiseSchedule
from ..solvers.base import Solver

KINDS = ("bias", "noise")
PROFILES = ("eps", "score")
METRICS = ("w2", "kl", "w2-shift")
COLUMNS = ("problem", "solver", "steps", "nfe", "seed", "dtype", "metric", "value", "stderr", "error_kind",
           "error_magnitude", "error_profile", "stochastic")
"""Table columns: the common ones, then the error's ``error_kind``, ``error_magnitude`` (c) and ``error_profile``,
and whether the solver is ``stochastic``."""


@dataclass(frozen=True)
class RobustnessStudy:
    """One row per (solver, NFE, error kind, magnitude, metric), columns :data:`COLUMNS`."""

    table: pd.DataFrame


def model_error(kind: str, magnitude: float, schedule: NoiseSchedule, *, profile: str = "eps",
                seed: int = 0) -> ScoreError:
    """The :class:`ScoreError` of one ``kind`` and magnitude c (see the module docstring for ``profile``)."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES}, got {profile!r}")
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)) or not 0 <= magnitude < math.inf:
        raise ValueError(f"magnitude: expected a finite non-negative number, got {magnitude!r}")
    c = float(magnitude)

    def eps_scaled(t: float) -> float:
        return c / schedule.at(t).sigma

    size = eps_scaled if profile == "eps" else c
    return ScoreError(**{kind: size}, seed=seed)


def steps_for_nfe(solver: Solver, problem: Problem, nfe: int, grid: str = "uniform-lambda", **grid_params) -> int:
    """The number of steps at which ``solver`` spends exactly ``nfe`` model evaluations on ``problem``'s window."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe: expected a positive int, got {nfe!r}")
    for n in range(1, nfe + 1):
        spent = solver.expected_nfe(make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max, **grid_params))
        if spent is None:
            raise ValueError(f"solver: {solver.name!r} is adaptive; its NFE cannot be set")
        if spent == nfe:
            return n
        if spent > nfe:
            break
    raise ValueError(f"nfe: {solver.name!r} cannot spend exactly {nfe} evaluations on any number of steps")


def robustness_study(solvers: Sequence[Solver], problem: Problem, nfe: Iterable[int], magnitudes: Iterable[float], *,
                     kinds: Iterable[str] = KINDS, profile: str = "eps", seed: int = 0, grid: str = "uniform-lambda",
                     **grid_params) -> RobustnessStudy:
    """Exact W2 and KL to the truth of each solver at each NFE budget, for each error kind and magnitude."""
    solvers = list(solvers)
    if not solvers or not all(isinstance(s, Solver) for s in solvers):
        raise ValueError(f"solvers: expected a non-empty list of Solver instances, got {solvers!r}")
    if not isinstance(problem.distribution, Gaussian):
        raise ValueError(f"problem: the exact study needs Gaussian data; {problem.name!r} is a mixture")
    nonlinear = [s.name for s in solvers if not s.linear]
    if nonlinear:
        raise ValueError(f"solvers: {nonlinear} are not affine in x, their output law is not exactly Gaussian")
    budgets = sorted(set(nfe))
    magnitudes = list(magnitudes)
    kinds = list(kinds)
    if not budgets or not magnitudes or not kinds:
        raise ValueError("nfe, magnitudes, kinds: each needs at least one value")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    errors = {(k, c): model_error(k, c, problem.schedule, profile=profile, seed=seed) for k in kinds
              for c in magnitudes}
    truth = gaussian_law(problem.target())
    rows = []
    for solver in solvers:
        for budget in budgets:
            n = steps_for_nfe(solver, problem, budget, grid, **grid_params)
            times = make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max, **grid_params)
            clean = propagate(solver, problem.distribution, problem.schedule, times)
            for (kind, c), error in errors.items():
                law = propagate(solver, problem.distribution, problem.schedule, times, error=error)
                for metric, value in (("w2", law.w2(truth)), ("kl", law.kl(truth)), ("w2-shift", law.w2(clean))):
                    rows.append(dict(problem=problem.name, solver=solver.name, steps=n, nfe=budget, seed=seed,
                                     dtype="float64", metric=metric, value=value, stderr=math.nan, error_kind=kind,
                                     error_magnitude=float(c), error_profile=profile, stochastic=solver.stochastic))
    return RobustnessStudy(table=pd.DataFrame(rows, columns=list(COLUMNS)))
