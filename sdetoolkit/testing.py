r"""A testing kit for sampler authors: hypothesis strategies and assertions (needs hypothesis: the ``dev`` extra).

**Strategies** (any test suite, ``@given(...)``):

* :func:`spectra`, :func:`spd_matrices`, :func:`covariances`: positive spectra, with a controlled condition number
  where asked, and SPD matrices in a Haar-random basis;
* :func:`gaussians`, :func:`mixtures`: random data distributions; mixtures with a controlled number of components,
  mode separation and weight ratio;
* :func:`schedules`: the built-in schedule families, with their default or random parameters;
* :func:`times`, :func:`grids`: times and decreasing time grids (any spacing, in t or in lambda) inside a schedule's
  range; :func:`seeds`: noise seeds.

**Assertions** (each raises ``AssertionError`` with the evidence, or returns what it measured). A solver is a
registered name, a :class:`~sdetoolkit.solvers.base.Solver` subclass or an instance (:func:`make_solver`); a
problem is a catalogue name or a :class:`~sdetoolkit.catalogue.Problem`.

* :func:`assert_order`: the expected order lies in the fitted interval of the ODE, weak or strong order study, and the
  interval is narrow enough to tell it from its neighbours (the rule of ``tests/test_solver_orders.py``; never a
  fixed band around the estimate);
* :func:`assert_converges_to_truth`: the limit. The error against the exact answer falls with refinement and is
  small on the finest grid. An order test alone cannot see a wrong limit: a stochastic solver with the wrong noise
  scale still converges strongly, at its order, to its own wrong process (diffrax tests "rate and limit" for the
  same reason);
* :func:`assert_reduces_to`: an identity between two solvers on the same inputs and noise, e.g. zero noise gives
  the ODE solver; a failure names the first step where the trajectories part;
* :func:`assert_deterministic`: the same seed gives bit-identical output, a different seed a different one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from hypothesis import assume
from hypothesis import strategies as st

from .catalogue import Problem, get_problem
from .distributions import Gaussian, GaussianMixture
from .findings import findings_for
from .grids import make_grid, validate_grid
from .noise import IIDNoise
from .schedules import NoiseSchedule, get_schedule, list_schedules
from .solvers import Solver, get_solver, sample
from .studies.convergence import ode_errors, ode_order
from .studies.order import OrderFit
from .studies.strong import strong_order
from .studies.weak import default_test_functions, weak_order

COVARIANCE_KINDS = ("isotropic", "diagonal", "full")
KINDS = ("ode", "weak", "strong")
CLAIM_KIND = {"ode": "global", "weak": "weak", "strong": "strong"}


def _strategy(value) -> st.SearchStrategy:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def _check_condition(condition: float, dim: int, min_eig: float, max_eig: float) -> float:
    condition = float(condition)
    if not (math.isfinite(condition) and condition >= 1.0):
        raise ValueError(f"condition: expected a finite number >= 1, got {condition!r}")
    if dim == 1 and condition != 1.0:
        raise ValueError(f"condition: a 1-d covariance has condition number 1, asked for {condition:g}")
    if condition > max_eig / min_eig * (1 + 1e-12):
        raise ValueError(f"condition: {condition:g} exceeds max_eig/min_eig = {max_eig / min_eig:g}")
    return condition


# -- strategies ---------------------------------------------------------------------------------------------------
@st.composite
def spectra(draw, dim: int, min_eig: float = 1e-3, max_eig: float = 10.0, condition=None) -> np.ndarray:
    """Positive eigenvalues in [min_eig, max_eig], log-uniformly spread.

    ``condition`` (a number or a strategy of numbers): the largest over the smallest is exactly that (dim >= 2), the
    others log-uniform between them, in random order.
    """
    if condition is None:
        logs = draw(st.lists(st.floats(np.log(min_eig), np.log(max_eig)), min_size=dim, max_size=dim))
        return np.exp(np.asarray(logs))
    log_c = np.log(_check_condition(draw(_strategy(condition)), dim, min_eig, max_eig))
    top = draw(st.floats(min(np.log(min_eig) + log_c, np.log(max_eig)), np.log(max_eig)))
    inner = draw(st.lists(st.floats(top - log_c, top), min_size=max(dim - 2, 0), max_size=max(dim - 2, 0)))
    logs = [top, top - log_c, *inner][:dim]
    return np.exp(np.asarray(draw(st.permutations(logs))))


@st.composite
def spd_matrices(draw, dim: int, min_eig: float = 1e-3, max_eig: float = 10.0, condition=None) -> np.ndarray:
    """A symmetric positive-definite matrix with spectrum in [min_eig, max_eig] (condition number ``condition`` where
    given) and a Haar-random basis."""
    eig = draw(spectra(dim, min_eig, max_eig, condition))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    return (q * eig) @ q.T


@st.composite
def covariances(draw, kind: str, count: int, dim: int, min_eig: float = 1e-3, max_eig: float = 10.0,
                condition=None):
    """``count`` covariances of one kind, in the shape :class:`GaussianMixture` takes; ``condition``: the condition
    number of each (not with ``isotropic`` in dimension >= 2, whose condition number is 1)."""
    if kind == "isotropic":
        if condition is not None and dim > 1:
            raise ValueError("condition: isotropic covariances have condition number 1; use 'diagonal' or 'full'")
        return np.exp(draw(st.lists(st.floats(np.log(min_eig), np.log(max_eig)), min_size=count, max_size=count)))
    if kind == "diagonal":
        return np.stack([draw(spectra(dim, min_eig, max_eig, condition)) for _ in range(count)])
    if kind == "full":
        return np.stack([draw(spd_matrices(dim, min_eig, max_eig, condition)) for _ in range(count)])
    raise ValueError(f"kind: expected one of {COVARIANCE_KINDS}, got {kind!r}")


def _means(count: int, dim: int, scale: float):
    coordinate = st.floats(-scale, scale, allow_nan=False, allow_infinity=False)
    return st.lists(st.lists(coordinate, min_size=dim, max_size=dim), min_size=count, max_size=count)


def mode_separation(means: np.ndarray, covs: np.ndarray) -> float:
    r"""The smallest :math:`\|\mu_k - \mu_l\| / (\sqrt{s_k} + \sqrt{s_l})` over pairs, :math:`s_k` the largest
    eigenvalue of component k (the catalogue's ``mode_separation`` fact); inf for one component."""
    means = np.asarray(means, dtype=float)
    covs = np.asarray(covs, dtype=float)
    if covs.ndim == 1:
        largest = covs
    elif covs.ndim == 2:
        largest = covs.max(axis=1)
    else:
        largest = np.linalg.eigvalsh(covs).max(axis=1)
    spread = np.sqrt(largest)
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1) / (spread[:, None] + spread[None])
    np.fill_diagonal(gaps, np.inf)
    return float(gaps.min())


@st.composite
def mixtures(draw, dims=st.integers(1, 4), components=st.integers(1, 4), kinds=st.sampled_from(COVARIANCE_KINDS),
             mean_scale: float = 3.0, min_eig: float = 1e-3, max_eig: float = 10.0, separation=None,
             weight_ratio: float = 20.0, condition=None) -> GaussianMixture:
    """A random Gaussian mixture.

    ``dims``, ``components``, ``kinds``: strategies. Weights: the largest is at most ``weight_ratio`` times the
    smallest (1: equal weights). ``separation`` (a number or a strategy): the :func:`mode_separation` is exactly the
    drawn value, the means spread about a centre in the box [-mean_scale, mean_scale]^d; without it the means lie in
    that box. ``condition``: the condition number of every component covariance.
    """
    if not (math.isfinite(weight_ratio) and weight_ratio >= 1.0):
        raise ValueError(f"weight_ratio: expected a finite number >= 1, got {weight_ratio!r}")
    dim, count, kind = draw(dims), draw(components), draw(kinds)
    if weight_ratio == 1.0:
        weights = np.full(count, 1.0 / count)
    else:
        raw = np.asarray(draw(st.lists(st.floats(1.0 / weight_ratio, 1.0), min_size=count, max_size=count)))
        weights = raw / raw.sum()
    covs = draw(covariances(kind, count, dim, min_eig, max_eig, condition))
    if separation is None or count == 1:
        means = np.asarray(draw(_means(count, dim, mean_scale)))
    else:
        target = float(draw(_strategy(separation)))
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"separation: expected a positive finite number, got {target!r}")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        offsets = rng.standard_normal((count, dim))
        offsets -= offsets.mean(axis=0)
        distances = np.linalg.norm(offsets[:, None] - offsets[None], axis=-1)[np.triu_indices(count, 1)]
        assume(distances.min() > 1e-2 * distances.max())  # no near-coincident pair: the spread stays moderate
        centre = np.asarray(draw(_means(1, dim, mean_scale)))[0]
        means = centre + offsets * (target / mode_separation(offsets, covs))
    return GaussianMixture(weights, means, covs)


@st.composite
def gaussians(draw, dims=st.integers(1, 4), kinds=st.sampled_from(COVARIANCE_KINDS), mean_scale: float = 3.0,
              min_eig: float = 1e-3, max_eig: float = 10.0, condition=None) -> Gaussian:
    """A random Gaussian; ``condition`` (a number or a strategy): the condition number of its covariance."""
    dim, kind = draw(dims), draw(kinds)
    mean = np.asarray(draw(_means(1, dim, mean_scale)))[0]
    cov = draw(covariances(kind, 1, dim, min_eig, max_eig, condition))[0]
    return Gaussian(mean, cov)


SCHEDULE_PARAMETERS = {
    "vp-linear": {"beta_min": st.integers(5, 50).map(lambda k: k / 100), "beta_max": st.integers(5, 40).map(float)},
    "vp-cosine": {"s": st.integers(1, 20).map(lambda k: k / 1000)},
    "ve": {"sigma_min": st.integers(1, 10).map(lambda k: k / 200), "sigma_max": st.integers(10, 100).map(float)},
    "edm": {"sigma_max": st.integers(10, 160).map(float)},
    "flow": {},
}
"""Ranges of the random schedule parameters, on coarse grids so that each schedule is compiled once."""


@functools.lru_cache(maxsize=256)
def _schedule(name: str, params: tuple) -> NoiseSchedule:
    return get_schedule(name, **dict(params))


@st.composite
def schedules(draw, names=None, parameters: bool = False) -> NoiseSchedule:
    """A built-in schedule family; with ``parameters`` its parameters are drawn from :data:`SCHEDULE_PARAMETERS`,
    else the defaults. Each schedule is built once (sympy compiles it)."""
    name = draw(st.sampled_from(list(names or list_schedules())))
    ranges = SCHEDULE_PARAMETERS.get(name, {}) if parameters else {}
    return _schedule(name, tuple((key, draw(values)) for key, values in sorted(ranges.items())))


@st.composite
def times(draw, schedule: NoiseSchedule, margin: float = 1e-3) -> float:
    """A time in the schedule's range, at least ``margin`` (relative) from both ends."""
    width = schedule.t_hi - schedule.t_lo
    return draw(st.floats(schedule.t_lo + margin * width, schedule.t_hi - margin * width))


@st.composite
def grids(draw, schedule: NoiseSchedule, steps=st.integers(1, 16), t_min=None, t_max=None, margin: float = 1e-3,
          spacing: str = "t", step_ratio: float = 1e3) -> torch.Tensor:
    """A strictly decreasing float64 grid from t_max to t_min, validated by :func:`~sdetoolkit.grids.validate_grid`.

    The window defaults to the schedule's range less ``margin`` (relative) at both ends. ``steps``: a strategy of
    step counts. The steps are random in ``spacing`` ('t' or 'lambda'), the largest at most ``step_ratio`` times the
    smallest.
    """
    if spacing not in ("t", "lambda"):
        raise ValueError(f"spacing: expected 't' or 'lambda', got {spacing!r}")
    if not (math.isfinite(step_ratio) and step_ratio >= 1.0):
        raise ValueError(f"step_ratio: expected a finite number >= 1, got {step_ratio!r}")
    width = schedule.t_hi - schedule.t_lo
    lo = schedule.t_lo + margin * width if t_min is None else float(t_min)
    hi = schedule.t_hi - margin * width if t_max is None else float(t_max)
    n = draw(steps)
    sizes = np.exp(np.asarray(draw(st.lists(st.floats(0.0, math.log(step_ratio)), min_size=n, max_size=n))))
    fractions = np.concatenate([[0.0], np.cumsum(sizes) / sizes.sum()])
    if spacing == "t":
        grid = torch.as_tensor(hi - (hi - lo) * fractions, dtype=torch.float64)
    else:
        ends = schedule.lam(torch.tensor([hi, lo], dtype=torch.float64))
        grid = schedule.t_of_lambda(ends[0] + (ends[1] - ends[0]) * torch.as_tensor(fractions))
    grid[0], grid[-1] = hi, lo
    return validate_grid(grid, schedule, "grid")


def seeds() -> st.SearchStrategy[int]:
    """Seeds for the noise sources (:class:`~sdetoolkit.noise.IIDNoise`, :class:`~sdetoolkit.noise.BrownianPath`)
    and for ``torch.Generator``."""
    return st.integers(0, 2**32 - 1)


def batch(distribution: GaussianMixture, n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A reproducible float64 batch of points around a distribution's means (for evaluating scores)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(distribution.n_components, (n,), generator=generator)
    noise = torch.randn(n, distribution.dim, dtype=torch.float64, generator=generator)
    return distribution.means[labels] + scale * noise


# -- solvers and problems -----------------------------------------------------------------------------------------
def make_solver(solver, **params) -> Solver:
    """A :class:`Solver` from a registered name, a Solver subclass, or an instance; ``params`` override its
    configuration (an instance is rebuilt with them and keeps its name)."""
    if isinstance(solver, str):
        return get_solver(solver, **params)
    if isinstance(solver, type) and issubclass(solver, Solver):
        return solver(**params)
    if isinstance(solver, Solver):
        if not params:
            return solver
        rebuilt = type(solver)(**{**solver.config, **params})
        rebuilt.name = solver.name
        return rebuilt
    raise ValueError(f"solver: expected a registered name, a Solver subclass or instance, got {solver!r}")


@functools.cache
def catalogue_problem(name: str) -> Problem:
    """A catalogue problem built once per name, so that its DOP853 reference is computed once per session."""
    return get_problem(name)


def as_problem(problem) -> Problem:
    """A :class:`Problem` from a catalogue name or a Problem."""
    if isinstance(problem, Problem):
        return problem
    if isinstance(problem, str):
        return catalogue_problem(problem)
    raise ValueError(f"problem: expected a catalogue name or a Problem, got {problem!r}")


def _label(solver: Solver, params: Mapping | None = None) -> str:
    """The solver's name and the given parameters that differ from their defaults."""
    shown = {k: v for k, v in (params or {}).items() if k not in solver.params or v != solver.params[k].default}
    return solver.name + (f"[{', '.join(f'{k}={v!r}' for k, v in shown.items())}]" if shown else "")


def _findings(solver: Solver, problem: Problem, kind: str) -> list[str]:
    return [f.summary() for f in findings_for(solver.name) if f.problem == problem.name and f.kind == kind]


def _scale(problem: Problem) -> float:
    """The target's RMS standard deviation per coordinate."""
    target = problem.target()
    return math.sqrt(float(torch.trace(target.covariance())) / target.dim)


# -- assert_order -------------------------------------------------------------------------------------------------
def _is_gaussian(problem: Problem) -> bool:
    return problem.distribution.n_components == 1


def _default_order_steps(kind: str, solver: Solver, problem: Problem) -> tuple[int, ...]:
    """The report's windows: ODE 32..256 against the exact flow, 64..1024 against DOP853 on mixtures (rates set in
    later); weak 16..256 on the exact path, 8..128 by Monte Carlo; strong 16..128."""
    if kind == "ode":
        return (32, 48, 64, 96, 128, 192, 256) if _is_gaussian(problem) else (64, 96, 128, 256, 512, 1024)
    if kind == "weak":
        exact = _is_gaussian(problem) and solver.linear
        return (16, 24, 32, 48, 64, 96, 128, 192, 256) if exact else (8, 16, 32, 64, 128)
    return (16, 32, 64, 128)


def _fit_report(fit: OrderFit) -> list[str]:
    lines = [f"  fit: p = {fit.order:.3f}, interval [{fit.low:.3f}, {fit.high:.3f}] ({fit.interval} "
             f"{fit.confidence:.1%} [{fit.ci_low:.3f}, {fit.ci_high:.3f}], truncation {fit.truncation:.3f})",
             "    steps        error   local slope"]
    n = np.round(1.0 / fit.steps[::-1]).astype(int)
    errors, slopes = fit.errors[::-1], fit.local_slopes[::-1]
    for k in range(len(n)):
        slope = f"{slopes[k - 1]:13.2f}" if k else ""
        lines.append(f"    {n[k]:5d}  {errors[k]:11.4e}{slope}")
    if fit.dropped:
        reasons = fit.drop_reasons or ("",) * len(fit.dropped)
        lines.append("  dropped: " + ", ".join(f"steps {round(1 / h)} ({why or 'not fitted'})"
                                             for h, why in zip(fit.dropped, reasons, strict=True)))
    return lines


def assert_order(solver, expected: float, kind: str = "ode", problems: Sequence = ("gauss-1d",), steps=None, *,
                 grid: str = "uniform-lambda", n_samples: int | None = None, seed: int = 0,
                 confidence: float = 0.95, resolve: float | None = 0.5, metric: str | None = None
                 ) -> dict[tuple[str, str], OrderFit]:
    r"""Assert that ``solver`` has order ``expected`` of ``kind`` ('ode', 'weak', 'strong') on each of ``problems``.

    The rule (the suite's own, ``tests/test_solver_orders.py``): ``expected`` lies in the fitted interval of
    :func:`~sdetoolkit.studies.order.fit_order` (exact errors: t-interval plus the truncation estimate, widened to
    the local slopes) or :func:`~sdetoolkit.studies.order.bootstrap_fit` (Monte Carlo errors), and, unless
    ``resolve`` is None, the interval excludes ``expected`` :math:`\pm` ``resolve``, so that the assertion could
    have failed: an interval holding both 1 and 1.5 cannot tell the orders apart (then refine ``steps`` or raise
    ``n_samples``). Where several Monte Carlo intervals are checked, each is taken at
    :math:`1 - (1 - \text{confidence})/m` (Bonferroni), so that a correct solver fails with probability at most
    1 - ``confidence``.

    The studies: ``ode`` :func:`~sdetoolkit.studies.convergence.ode_order` (RMS error against the exact flow or a
    DOP853 reference; ``metric`` 'rms' or 'max'); ``weak`` :func:`~sdetoolkit.studies.weak.weak_order` (the exact
    W2 of the output law for Gaussian data and an affine solver, ``metric`` 'w2' or a test function; otherwise
    multilevel Monte Carlo, every test function unless ``metric`` names one); ``strong``
    :func:`~sdetoolkit.studies.strong.strong_order` (one Brownian path, reference 16x finer). ``steps`` default to
    the report's windows. The failure message shows the fit, its interval, the errors with their local slopes, the
    dropped points, the solver's claim and the recorded finding (:mod:`sdetoolkit.findings`) for the problem.
    Returns the fits by (problem, metric).
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not the kit's frames
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if not (isinstance(expected, (int, float)) and math.isfinite(expected)):
        raise ValueError(f"expected: a finite order, got {expected!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    solver = make_solver(solver)
    problems = [as_problem(p) for p in ([problems] if isinstance(problems, (str, Problem)) else problems)]
    if not problems:
        raise ValueError("problems: expected at least one problem")
    plans = []
    for problem in problems:
        exact = kind == "ode" or (kind == "weak" and _is_gaussian(problem) and solver.linear)
        weak_monte_carlo = kind == "weak" and not exact and metric is None
        checks = len(default_test_functions(problem.target())) if weak_monte_carlo else 1
        plans.append((problem, exact, checks))
    monte_carlo = sum(checks for _, exact, checks in plans if not exact)
    level = 1 - (1 - confidence) / max(monte_carlo, 1)
    fits, failures = {}, []
    for problem, _, _ in plans:
        n = tuple(steps) if steps is not None else _default_order_steps(kind, solver, problem)
        for name, fit in _order_fits(solver, problem, kind, n, grid, n_samples, seed, level, metric).items():
            fits[(problem.name, name)] = fit
            verdict = _order_verdict(fit, expected, resolve)
            if verdict:
                failures.append(_order_message(solver, problem, kind, name, n, grid, fit, expected, verdict))
    if failures:
        raise AssertionError("\n\n".join(failures))
    return fits


def _order_fits(solver, problem, kind, steps, grid, n_samples, seed, confidence, metric) -> dict[str, OrderFit]:
    __tracebackhide__ = True
    if kind == "ode":
        n = n_samples or (64 if _is_gaussian(problem) else 32)
        study = ode_order(solver, problem, steps, n_samples=n, seed=seed, grid=grid)
        chosen = metric or "rms"
        if chosen not in study.fits:
            raise ValueError(f"metric: the ODE study fits {sorted(study.fits)}, got {metric!r}")
        return {chosen: study.fits[chosen]}
    if kind == "strong":
        study = strong_order(solver, problem, steps, n_samples=n_samples or 200, seed=seed, grid=grid,
                             confidence=confidence)
        return {"strong": study.fit}
    study = weak_order(solver, problem, steps, n_samples=n_samples or 1000, seed=seed, grid=grid,
                       confidence=confidence)
    names = [metric] if metric is not None else (["w2"] if study.method == "exact" else sorted(
        {*study.fits, *study.skipped} - {"w2"}))
    unknown = [name for name in names if name not in study.fits and name not in study.skipped]
    if unknown:
        raise ValueError(f"metric: the weak study ({study.method}) measures {sorted({*study.fits, *study.skipped})}, "
                         f"got {metric!r}")
    unfitted = {name: study.skipped[name] for name in names if name in study.skipped}
    if unfitted:
        raise AssertionError(f"assert_order: {solver.name}, weak order on {problem.name}: could not fit "
                             + "; ".join(f"{k}: {v}" for k, v in unfitted.items())
                             + " (raise n_samples or use coarser steps)")
    return {name: study.fits[name] for name in names}


def _order_verdict(fit: OrderFit, expected: float, resolve: float | None) -> str:
    if not fit.contains(expected):
        return f"expected {expected:g} lies outside the fitted interval [{fit.low:.3f}, {fit.high:.3f}]"
    if resolve is not None:
        neighbours = [p for p in (expected - resolve, expected + resolve) if fit.contains(p)]
        if neighbours:
            return (f"inconclusive: the interval [{fit.low:.3f}, {fit.high:.3f}] also holds "
                    f"{' and '.join(f'{p:g}' for p in neighbours)}, so it cannot tell {expected:g} from its "
                    f"neighbours at +-{resolve:g} (refine the steps, raise n_samples, or pass resolve=None)")
    return ""


def _order_message(solver, problem, kind, metric, steps, grid, fit, expected, verdict) -> str:
    claims = "; ".join(str(c) for c in solver.claims())
    lines = [f"assert_order: {_label(solver, solver.config)}, {kind} order of {metric} on {problem.name} "
             f"({grid} grid, steps {min(steps)}..{max(steps)}): {verdict}", *_fit_report(fit),
             f"  claim: {claims}"]
    recorded = _findings(solver, problem, CLAIM_KIND[kind])
    lines += [f"  recorded finding: {s}" for s in recorded] or ["  recorded finding: none"]
    return "\n".join(lines)


# -- assert_converges_to_truth ------------------------------------------------------------------------------------
def assert_converges_to_truth(solver, problem="gauss-1d", steps=None, *, rtol: float | None = None,
                              grid: str = "uniform-lambda", n_samples: int | None = None, seed: int = 0,
                              z: float = 2.0) -> pd.DataFrame:
    r"""Assert that ``solver``'s error against the exact answer falls with refinement and ends below a tolerance.

    The error: a deterministic solver's RMS error per coordinate at t_min against the exact flow (Gaussian data)
    or a DOP853 reference (:func:`~sdetoolkit.studies.convergence.ode_errors`, ``n_samples`` default 64); a
    stochastic one's weak error, exactly (the W2 distance of its output law to the exact marginal at t_min, over
    :math:`\sqrt d`, for Gaussian data and an affine solver) or by plain Monte Carlo: for each default test function
    f of :mod:`sdetoolkit.studies.weak`, :math:`|\overline{f(X_h)} - E f(X)|` over ``n_samples`` (default 4000) runs
    from exact prior samples, independent for each step count, with its standard error SE.

    It passes when (1) the finest error's upper bound e + z SE is at most ``rtol`` times the scale: the target's
    RMS standard deviation per coordinate, or for a test function its standard deviation under the target
    (default ``rtol``: 1e-2 for exact errors, 1e-1 for Monte Carlo ones); (2) no coarser error lies below the
    finest by more than z times their joint SE (plus round-off); and (3) the finest error is below the coarsest
    where that one is significant. Steps default to 16, 64, 256, 1024. Returns the error table (steps, metric,
    error, stderr, bound).
    """
    __tracebackhide__ = True
    solver = make_solver(solver)
    problem = as_problem(problem)
    if not (math.isfinite(z) and z >= 0):
        raise ValueError(f"z: expected a non-negative number, got {z!r}")
    steps = sorted(int(n) for n in (steps or (16, 64, 256, 1024)))
    if len(steps) < 2 or steps[0] < 1:
        raise ValueError(f"steps: need at least two positive step counts, got {steps}")
    scale = _scale(problem)
    if not solver.stochastic:
        rows = pd.concat([ode_errors(solver, problem, n, n_samples=n_samples or 64, seed=seed, grid=grid)
                          for n in steps])
        rows = rows[rows.metric == "rms"]
        table = pd.DataFrame(dict(steps=rows.steps.to_numpy(), metric="rms", error=rows.value.to_numpy(),
                                  stderr=0.0, bound=(rtol or 1e-2) * scale))
        what = "RMS error against the exact flow"
    elif _is_gaussian(problem) and solver.linear:
        study = weak_order(solver, problem, steps, grid=grid, method="exact")
        rows = study.table[study.table.metric == "w2"]
        table = pd.DataFrame(dict(steps=rows.steps.to_numpy(), metric="w2/sqrt(d)",
                                  error=rows.value.to_numpy() / math.sqrt(problem.distribution.dim), stderr=0.0,
                                  bound=(rtol or 1e-2) * scale))
        what = "exact W2 of the output law to the marginal at t_min"
    else:
        table = _monte_carlo_errors(solver, problem, steps, grid, n_samples or 4000, seed, rtol or 1e-1)
        what = "weak errors by Monte Carlo"
    floor = 1e3 * float(np.finfo(float).eps) * scale
    failures = [message for _, rows in table.groupby("metric", sort=False)
                if (message := _limit_verdict(rows.sort_values("steps"), z, floor))]
    if failures:
        raise AssertionError(f"assert_converges_to_truth: {_label(solver, solver.config)} on {problem.name} "
                             f"({grid} grid), {what}:\n" + "\n".join(failures) + "\n" + table.to_string(index=False))
    return table


def _monte_carlo_errors(solver, problem, steps, grid, n_samples, seed, rtol) -> pd.DataFrame:
    """|mean f(X_h) - E f(X)| and its standard error per default test function, an independent batch per step count;
    the bound is ``rtol`` times the standard deviation of f under the target (from seeded exact samples)."""
    target = problem.target()
    functions = default_test_functions(target)
    reference = target.sample(2**14, torch.Generator().manual_seed(seed))
    rows = []
    for n in steps:
        seed_x, seed_w = (int(v) for v in np.random.SeedSequence([seed, n]).generate_state(2))
        x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed_x))
        times = make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max)
        x = sample(solver, problem.model(), times, x_T, IIDNoise(seed_w)).double()
        for f in functions:
            values = f.values(x)
            rows.append(dict(steps=n, metric=f.name, error=abs(float(values.mean()) - f.expectation(target)),
                             stderr=float(values.std()) / math.sqrt(n_samples),
                             bound=rtol * float(f.values(reference).std())))
    return pd.DataFrame(rows)


def _limit_verdict(rows: pd.DataFrame, z: float, floor: float) -> str:
    error, stderr = rows.error.to_numpy(), rows.stderr.to_numpy()
    steps, name = rows.steps.to_numpy(), rows.metric.iloc[0]
    finest, noise = error[-1], z * stderr[-1]
    bound = float(rows.bound.iloc[-1])
    if finest + noise > bound:
        extra = f" + {z:g} SE = {finest + noise:.3e}" if noise else ""
        return (f"  {name}: the finest error {finest:.3e}{extra} at {steps[-1]} steps exceeds {bound:.3e} (a wrong "
                f"limit, or not yet converged: refine the steps" + (", raise n_samples" if noise else "") + ")")
    joint = z * np.sqrt(stderr**2 + stderr[-1] ** 2)
    below = np.flatnonzero(error[:-1] + joint[:-1] + floor < finest)
    if below.size:
        k = below[0]
        return (f"  {name}: the error grows with refinement: {error[k]:.3e} at {steps[k]} steps, {finest:.3e} at "
                f"{steps[-1]}")
    if error[0] > z * stderr[0] + floor and not finest < error[0]:
        return f"  {name}: the error does not fall: {error[0]:.3e} at {steps[0]} steps, {finest:.3e} at {steps[-1]}"
    return ""


# -- assert_reduces_to --------------------------------------------------------------------------------------------
def _run(solver: Solver, problem: Problem, times: torch.Tensor, x_T: torch.Tensor, seed: int | None):
    noise = IIDNoise(seed) if seed is not None else None
    return sample(solver, problem.model(), times, x_T, noise, return_trajectory=True).trajectory


def assert_reduces_to(solver_a, solver_b, when: Mapping | None = None, *,
                      problems: Sequence = ("gauss-1d", "gmm-1d-bimodal"), steps: Sequence[int] = (6, 20),
                      grid: str = "uniform-lambda", n_samples: int = 16, seed: int = 0, rtol: float = 1e-10) -> None:
    """Assert that ``solver_a`` with the parameters ``when`` is ``solver_b``: the same trajectories from the same
    exact prior samples and the same noise (``IIDNoise(seed)``, for each solver that is stochastic), to a relative
    difference ``rtol`` of the largest coordinate at every step, on each problem and step count.

    For identities such as "zero noise gives the ODE solver": ``assert_reduces_to("ddim-eta", "ddim",
    when={"eta": 0})``. A failure names the first step where the trajectories part, its times and the size of the
    difference there and at the end.
    """
    __tracebackhide__ = True
    if not (math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol: expected a non-negative number, got {rtol!r}")
    when = dict(when or {})
    a, b = make_solver(solver_a, **when), make_solver(solver_b)
    problems = [as_problem(p) for p in ([problems] if isinstance(problems, (str, Problem)) else problems)]
    failures = []
    for problem in problems:
        x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed))
        for n in steps:
            times = make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max)
            path_a = _run(a, problem, times, x_T, seed if a.stochastic else None)
            path_b = _run(b, problem, times, x_T, seed if b.stochastic else None)
            gap = (path_a - path_b).abs().amax(dim=(1, 2)) / path_b.abs().amax(dim=(1, 2)).clamp_min(1e-300)
            parted = torch.nonzero(gap > rtol)
            if parted.numel():
                k = int(parted[0])
                failures.append(f"  {problem.name}, {n} steps: the trajectories part at step {k - 1} "
                                f"(t = {float(times[k - 1]):.6g} -> {float(times[k]):.6g}): relative difference "
                                f"{float(gap[k]):.3e} there, {float(gap[-1]):.3e} at the end (rtol {rtol:g})")
    if failures:
        raise AssertionError(f"assert_reduces_to: {_label(a, a.config)} is not {_label(b, b.config)} ({grid} grid, "
                             f"{n_samples} samples, same prior samples and noise):\n" + "\n".join(failures))


# -- assert_deterministic -----------------------------------------------------------------------------------------
def assert_deterministic(solver, problem="gauss-1d", *, steps: int = 12, n_samples: int = 8,
                         seeds: tuple[int, int] = (0, 1), grid: str = "uniform-lambda") -> None:
    """Assert that ``solver`` is reproducible: three runs on one instance from the same prior samples, with noise
    seeds ``seeds[0]``, ``seeds[1]``, ``seeds[0]``, must give bit-identical outputs for the equal seeds (no global
    RNG, no state kept between runs). A stochastic solver must give a different output for every sample under the
    other seed (it uses the noise source it is given); a deterministic one the same output (it uses no noise).
    """
    __tracebackhide__ = True
    solver = make_solver(solver)
    problem = as_problem(problem)
    if len(seeds) != 2 or seeds[0] == seeds[1]:
        raise ValueError(f"seeds: expected two different seeds, got {seeds!r}")
    x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(0))
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max)
    first, other, again = (_run(solver, problem, times, x_T, s) for s in (seeds[0], seeds[1], seeds[0]))
    label = f"assert_deterministic: {_label(solver, solver.config)} on {problem.name} ({steps} steps)"
    if not torch.equal(first, again):
        k = int(torch.nonzero((first != again).flatten(1).any(dim=1))[0])
        raise AssertionError(f"{label}: two runs with noise seed {seeds[0]} differ, first after step {k - 1} "
                             f"(t = {float(times[k - 1]):.6g} -> {float(times[k]):.6g}), by up to "
                             f"{float((first[-1] - again[-1]).abs().max()):.3e} at the end, with a run with seed "
                             f"{seeds[1]} between them. Does the solver draw from torch's global RNG (torch.randn) "
                             "instead of state.normal / state.integrals, or keep state between runs?")
    same = (first[-1] == other[-1]).all(dim=1)
    if solver.stochastic and bool(same.any()):
        raise AssertionError(f"{label}: noise seeds {seeds[0]} and {seeds[1]} give identical outputs for "
                             f"{int(same.sum())} of {n_samples} samples; a stochastic solver must draw its noise "
                             "from the source it is given (state.normal / state.integrals)")
    if not solver.stochastic and not bool(same.all()):
        raise AssertionError(f"{label}: declared deterministic (stochastic = False), but noise seeds {seeds[0]} and "
                             f"{seeds[1]} give different outputs (up to "
                             f"{float((first[-1] - other[-1]).abs().max()):.3e}); declare stochastic = True")
