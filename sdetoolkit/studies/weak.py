r"""Weak order of a sampler: :math:`e_f(h) = E f(X_h) - E f(X)`, X distributed as the exact marginal at t_min.

**Exact path** (Gaussian data, a solver affine in x and its noise): the output law of the solver is an exact
Gaussian (:func:`~sdetoolkit.exact.propagate`), so :math:`E f(X_h)` of every test function below, the
2-Wasserstein distance and the KL divergence to the target are closed forms, with no sampling error (``stderr`` is
NaN). Orders come from :func:`~sdetoolkit.studies.order.fit_order`.

**Monte Carlo path** (mixtures, nonlinear solvers). Test functions with closed-form means under a Gaussian mixture
:math:`\sum_k \pi_k\mathcal N(\mu_k, \Sigma_k)` of mean m and covariance :math:`\Sigma`: the first and second
moments along a unit direction u, :math:`u\cdot x` and :math:`(u\cdot(x - m))^2` (means :math:`u\cdot m` and
:math:`u^\top\Sigma u`), and the real part of the empirical characteristic function at a frequency w with a phase
:math:`\theta`, :math:`\cos(w\cdot x + \theta)`, of mean
:math:`\mathrm{Re}\,e^{i\theta}\sum_k\pi_k e^{i w\cdot\mu_k - w^\top\Sigma_k w/2}`.

Which estimator. A run of the same solver on a finer grid, coupled to :math:`X_h` by a shared Brownian path,
makes :math:`E[f(X_h) - f(X_{ref})]` cheap to estimate, but it is :math:`e(h) - e(ref)`. Adding back the exact
:math:`E f(X)` in place of :math:`E f(X_{ref})` leaves the reference's own weak error out of the error bar, and all
of it for a sampler that converges to a biased limit (its order would be that of its self-convergence). Adding back
a Monte Carlo estimate of :math:`E f(X_{ref})` from the same runs is, term for term, the plain estimator
:math:`\overline{f(X_h)} - E f(X)`: the coupling does not reduce the variance of e(h), it only makes the errors at
the different h move together; from more runs, it spends them on the most expensive grid. The variance that
matters is that of a mean of f, and it is cheapest on the *coarsest* grid. Hence the multilevel estimator (Giles
2008, Multilevel Monte Carlo path simulation, Oper. Res. 56(3), 607-617): for the step counts
:math:`n_0 < \dots < n_{J-1}`,

.. math:: \hat e(h_j) = \Big[\overline{f(X_{n_0})} - E f(X)\Big]
          + \sum_{l=1}^{j}\overline{f(X_{n_l}) - f(X_{n_{l-1}})},

each level l from its own independent runs, the pair of level l on one :class:`~sdetoolkit.noise.BrownianPath`
from one exact prior sample. It is unbiased for every h (no reference solution and no assumption on the limit), and
the variance of a level correction falls with the strong error, so most runs go to the cheap coarse grids: level
l makes ``allocation[l]`` runs for each run of the finest level, by default in proportion to
:math:`\sqrt{V_l/C_l}` (Giles 2008, Sec. 2; :math:`V_l` from a seeded pilot of :data:`PILOT_RUNS` runs per level,
:math:`C_l` its NFE). A *unit* is one run of the finest level with its ``allocation[l]`` runs of every level; units
are independent, so the standard error of :math:`\hat e(h_j)` is the standard deviation of the per-unit estimates
over :math:`\sqrt{N}`, and the order's bootstrap (:func:`~sdetoolkit.studies.order.bootstrap_fit`) resamples whole
units, keeping the correlation of the errors across h that the shared levels create. Points with
:math:`|\hat e| \le 2\,\mathrm{SE}` are in the Monte Carlo noise floor and are dropped and named. The table also
reports each level correction (``level_difference``, steps = :math:`n_l`): the coupled difference of means.
Weak convergence of order p means :math:`|e_f(h)| \le C_f h^p` for smooth f (Kloeden & Platen 1992, Sec. 9.7);
h is 1/steps.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from ..distributions import Gaussian, GaussianMixture
from ..exact import GaussianLaw, NonlinearSolverError, gaussian_law, propagate
from ..grids import make_grid
from ..noise import CACHE_BYTES, BrownianPath, IIDNoise
from ..solvers.base import Solver, sample
from .order import OrderFit, bootstrap_fit, fit_order

METHODS = ("auto", "exact", "monte-carlo")
PILOT_RUNS = 1024
"""Runs per level of the pilot that sets the default allocation."""
MAX_ALLOCATION = 1024
"""Largest number of runs of one level per unit under the default allocation."""
BOOTSTRAP_GROUPS = 1000
"""The bootstrap resamples this many groups of units (each group's total scaled so that their average is the mean
over units): resampling groups of independent units is resampling units, at a cost independent of N."""
CHUNK_ELEMENTS = 2**22
"""Runs per batch are limited to this many (sample x component x dimension) elements."""
EXACT_FLOOR = 1e-12
"""Exact errors at or below this are round-off and left out of the fits."""


@dataclass(frozen=True)
class TestFunction:
    """A test function f: ``values`` maps samples (N, d) to (N,), ``expectation`` gives E f under a
    :class:`~sdetoolkit.distributions.GaussianMixture` in closed form."""

    __test__ = False  # a library class, not a pytest test class

    name: str
    values: Callable[[torch.Tensor], torch.Tensor]
    expectation: Callable[[GaussianMixture], float]


def moment_functions(mixture: GaussianMixture, direction, label: str) -> tuple[TestFunction, TestFunction]:
    r"""The first and second moments along the unit vector of ``direction``: :math:`u\cdot x` and
    :math:`(u\cdot(x - m))^2`, m the mean of ``mixture``; named ``mean:<label>`` and ``second:<label>``."""
    u = _unit(direction, mixture.dim, "direction")
    centre = float(u @ mixture.mean())

    def second(q: GaussianMixture) -> float:
        return float(u @ q.covariance() @ u + (u @ q.mean() - centre) ** 2)

    return (TestFunction(f"mean:{label}", lambda x: x @ u.to(x), lambda q: float(u @ q.mean())),
            TestFunction(f"second:{label}", lambda x: (x @ u.to(x) - centre) ** 2, second))


def ecf_function(frequency, phase: float, name: str) -> TestFunction:
    r""":math:`\cos(w\cdot x + \theta)`, the real part of :math:`e^{i\theta}` times the empirical characteristic
    function at w; its mean under a mixture is :math:`\sum_k\pi_k e^{-w^\top\Sigma_k w/2}\cos(w\cdot\mu_k + \theta)`."""
    w = torch.as_tensor(frequency, dtype=torch.float64)
    if w.ndim != 1 or not bool(torch.isfinite(w).all()):
        raise ValueError(f"frequency: expected a finite vector, got {frequency!r}")
    if not math.isfinite(phase):
        raise ValueError(f"phase: expected a finite number, got {phase!r}")

    def expectation(q: GaussianMixture) -> float:
        spread = torch.einsum("i,kij,j->k", w, q.component_covariances(), w)
        return float((q.weights * torch.exp(-0.5 * spread) * torch.cos(q.means @ w + phase)).sum())

    return TestFunction(name, lambda x: torch.cos(x @ w.to(x) + phase), expectation)


def default_test_functions(mixture: GaussianMixture, directions: int = 2, radii: Sequence[float] = (1.0, 2.0),
                           seed: int = 0) -> tuple[TestFunction, ...]:
    r"""Per seeded unit direction u_k (one, u = 1, in dimension 1): its mean and second moment, and the ECF at
    :math:`w = r\,u_k/\sqrt{u_k^\top\Sigma u_k}` for each r in ``radii`` (r radians per standard deviation along
    u_k) with a seeded phase. The seed is fixed by default, so that studies with different seeds share their test
    functions."""
    if not isinstance(directions, int) or directions < 1:
        raise ValueError(f"directions: expected a positive int, got {directions!r}")
    generator = torch.Generator().manual_seed(seed)
    count = 1 if mixture.dim == 1 else directions
    vectors = torch.ones(1, 1, dtype=torch.float64) if mixture.dim == 1 else torch.randn(
        count, mixture.dim, generator=generator, dtype=torch.float64)
    phases = 2 * math.pi * torch.rand(count, len(radii), generator=generator, dtype=torch.float64)
    covariance = mixture.covariance()
    functions = []
    for k, v in enumerate(vectors):
        u = v / v.norm()
        functions += moment_functions(mixture, u, f"u{k}")
        scale = 1.0 / math.sqrt(float(u @ covariance @ u))
        functions += [ecf_function(r * scale * u, float(phases[k, j]), f"ecf:u{k}:r{r:g}") for j, r in enumerate(radii)]
    return tuple(functions)


@dataclass(frozen=True)
class WeakStudy:
    """Tidy weak errors, the fitted order per test function (and ``w2`` on the exact path), the test functions that
    could not be fitted with the reason, the method used, and on the Monte Carlo path the allocation (runs per unit
    per level) and the per-unit estimates (steps, test functions, units), from which
    :func:`monte_carlo_fits` refits."""

    table: pd.DataFrame
    fits: dict[str, OrderFit]
    skipped: dict[str, str]
    method: str
    allocation: tuple[int, ...]
    estimates: np.ndarray | None = None


def weak_order(solver: Solver, problem, steps, *, n_samples: int = 1000, seed: int = 0,
               dtype: torch.dtype = torch.float64, device="cpu", grid: str = "uniform-lambda",
               test_functions: Sequence[TestFunction] | None = None, method: str = "auto",
               allocation: Sequence[int] | None = None, confidence: float = 0.95,
               corrections: int = 1) -> WeakStudy:
    """Weak errors of ``solver`` on ``problem`` at each of ``steps`` and their orders (see the module docstring).

    ``method``: ``exact`` (Gaussian data and an affine solver; float64 on the CPU, ``n_samples``, ``dtype`` and
    ``device`` unused), ``monte-carlo``, or ``auto``: exact where it applies, else Monte Carlo (also for a solver
    that declares itself affine but fails the superposition check). ``n_samples``: Monte Carlo units (runs of the
    finest level). ``allocation``: runs per unit of each level, coarsest first (default from a pilot).
    ``test_functions``: default :func:`default_test_functions` of the target. ``corrections``: terms of the error
    expansion in the fits (:func:`~sdetoolkit.studies.order.fit_order`). On the Monte Carlo path 1 is conservative
    (the truncation term, the change of the estimate when the correction is dropped, is taken on the noisy means
    and so counts sampling noise a second time); 0 gives intervals 2 to 4 times narrower that miss a slow
    pre-asymptotic drift of the local slopes.
    """
    steps = _check_steps(steps)
    if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 2:
        raise ValueError(f"n_samples: expected an int of at least 2, got {n_samples!r}")
    if allocation is not None:
        allocation = tuple(allocation)
        if len(allocation) != len(steps) or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1
                                                    for r in allocation):
            raise ValueError(f"allocation: expected {len(steps)} positive ints (one per level), got {allocation!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch dtype, got {dtype!r}")
    target = problem.target()
    functions = default_test_functions(target) if test_functions is None else tuple(test_functions)
    names = [f.name for f in functions]
    if not functions or not all(isinstance(f, TestFunction) for f in functions) or len(set(names)) != len(names):
        raise ValueError("test_functions: expected a non-empty sequence of TestFunction with distinct names")
    grids = [make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max) for n in steps]
    gaussian = problem.distribution.n_components == 1
    if method == "exact" and not gaussian:
        raise ValueError(f"method: the exact path needs Gaussian data; {problem.name!r} has "
                         f"{problem.distribution.n_components} components")
    if method == "exact" or (method == "auto" and gaussian and solver.linear):
        try:
            return _exact_study(solver, problem, steps, grids, functions, seed, confidence, corrections)
        except NonlinearSolverError:
            if method == "exact":
                raise
    ladder = _Ladder(solver, problem, grids, functions, dtype, device, seed)
    return _monte_carlo_study(ladder, ladder.allocation() if allocation is None else allocation, n_samples,
                              confidence, corrections)


def _check_steps(steps) -> list[int]:
    try:
        values = list(steps)
    except TypeError:
        raise ValueError(f"steps: expected a sequence of step counts, got {steps!r}") from None
    if not values or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in values):
        raise ValueError(f"steps: expected positive integers, got {steps!r}")
    values = sorted(int(n) for n in values)
    if len(set(values)) != len(values):
        raise ValueError(f"steps: contains duplicates: {values}")
    return values


def _unit(direction, dim: int, name: str) -> torch.Tensor:
    u = torch.as_tensor(direction, dtype=torch.float64)
    if u.shape != (dim,) or not bool(torch.isfinite(u).all()) or float(u.norm()) == 0.0:
        raise ValueError(f"{name}: expected a finite non-zero vector of length {dim}, got {direction!r}")
    return u / u.norm()


def _law_mixture(law: GaussianLaw) -> Gaussian:
    return Gaussian(law.mean, law.variances if law.basis is None else law.cov)


def _base(problem, solver, n: int, nfe: int, seed: int, dtype: str) -> dict:
    return dict(problem=problem.name, solver=solver.name, steps=n, nfe=nfe, seed=seed, dtype=dtype)


def _nfe(solver: Solver, problem, times: torch.Tensor) -> int:
    """Model evaluations per trajectory over ``times``: declared, or counted on one run."""
    expected = solver.expected_nfe(times)
    if expected is not None:
        return expected
    model = problem.model()
    sample(solver, model, times, problem.prior().sample(1, torch.Generator().manual_seed(0)), IIDNoise(0))
    return model.nfe


def _exact_study(solver, problem, steps, grids, functions, seed, confidence, corrections) -> WeakStudy:
    target = problem.target()
    marginal = gaussian_law(target)
    exact = [f.expectation(target) for f in functions]
    rows, errors = [], {name: [] for name in ["w2", *(f.name for f in functions)]}
    for n, times in zip(steps, grids, strict=True):
        law = propagate(solver, problem.distribution, problem.schedule, times)
        output = _law_mixture(law)
        base = _base(problem, solver, n, _nfe(solver, problem, times), seed, "float64")
        values = {"w2": law.w2(marginal), "kl": law.kl(marginal)}
        rows += [dict(base, metric=m, value=v, stderr=math.nan, test_function="law") for m, v in values.items()]
        errors["w2"].append(values["w2"])
        for f, mean in zip(functions, exact, strict=True):
            e = f.expectation(output) - mean
            rows.append(dict(base, metric="weak_error", value=e, stderr=math.nan, test_function=f.name))
            errors[f.name].append(abs(e))
    fits, skipped = {}, {}
    h = 1.0 / np.asarray(steps, dtype=float)
    for name, e in errors.items():
        try:
            fits[name] = fit_order(h, np.asarray(e), floor=EXACT_FLOOR, confidence=confidence,
                                   corrections=corrections)
        except ValueError as error:
            skipped[name] = str(error)
    return WeakStudy(table=pd.DataFrame(rows), fits=fits, skipped=skipped, method="exact", allocation=())


class _Ladder:
    """The runs of the multilevel estimator: level 0 on the coarsest grid, level l >= 1 coupled pairs of grids
    l - 1 and l on one Brownian path, each level in seeded batches (chunks)."""

    def __init__(self, solver, problem, grids, functions, dtype, device, seed):
        self.solver, self.problem, self.grids, self.functions = solver, problem, grids, functions
        self.dtype, self.device, self.seed = dtype, device, seed
        self.model = problem.model()
        self.exact = torch.tensor([f.expectation(problem.target()) for f in functions], dtype=torch.float64)
        self.costs = [_nfe(solver, problem, times) for times in grids]
        self.paths = [None] + [BrownianPath.covering(solver, self.model, pair) for pair in itertools.pairwise(grids)]

    def level_cost(self, level: int) -> int:
        return self.costs[level] + (self.costs[level - 1] if level else 0)

    def _chunk(self, level: int) -> int:
        dim, components = self.problem.distribution.dim, self.problem.distribution.n_components
        runs = CHUNK_ELEMENTS // (dim * components)
        path = self.paths[level]
        if path is not None:  # keep the path's increments of a batch in its cache
            runs = min(runs, CACHE_BYTES // ((len(path.times) - 1) * len(path.kernels) * dim * 8))
        return max(1, runs)

    def _values(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([f.values(x).to(torch.float64) for f in self.functions])

    def run(self, level: int, units: int, repeats: int, tag: int) -> torch.Tensor:
        """Per-unit means (n_functions, units) of level ``level``'s correction over ``repeats`` runs per unit."""
        per_chunk = max(1, self._chunk(level) // repeats)
        out = []
        for chunk, start in enumerate(range(0, units, per_chunk)):
            count = min(per_chunk, units - start)
            seed_x, seed_w = (int(s) for s in np.random.SeedSequence([self.seed, tag, level, chunk]).generate_state(
                2, np.uint64))
            x = self.problem.prior().sample(count * repeats, torch.Generator().manual_seed(seed_x))
            x = x.to(dtype=self.dtype, device=self.device)
            if level == 0:
                y = self._values(sample(self.solver, self.model, self.grids[0], x, IIDNoise(seed_w)))
                y = y - self.exact.to(y)[:, None]
            else:
                template = self.paths[level]
                path = BrownianPath(template.times, seed_w, template.kernels[1:])
                fine = self._values(sample(self.solver, self.model, self.grids[level], x, path))
                y = fine - self._values(sample(self.solver, self.model, self.grids[level - 1], x, path))
            out.append(y.reshape(len(self.functions), count, repeats).mean(-1).cpu())
        return torch.cat(out, dim=1)

    def allocation(self) -> tuple[int, ...]:
        r"""Runs per unit of each level, :math:`\propto\sqrt{V_l/C_l}` (the least 1, at most
        :data:`MAX_ALLOCATION`), V_l the pilot's variance of the level correction relative to level 0's, averaged
        over the test functions."""
        variances = torch.stack([self.run(level, PILOT_RUNS, 1, tag=1).var(dim=1)
                                 for level in range(len(self.grids))])
        relative = (variances / variances[0].clamp_min(torch.finfo(torch.float64).tiny)).mean(dim=1)
        costs = torch.tensor([self.level_cost(level) for level in range(len(self.grids))], dtype=torch.float64)
        score = (relative / costs).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
        return tuple(int(v) for v in (score / score.min()).round().clamp(1, MAX_ALLOCATION))


def _grouped(values: np.ndarray, groups: int) -> np.ndarray:
    """(J, N) per-unit values -> (J, G) group totals times G/N (their average is the mean over units)."""
    n = values.shape[1]
    g = min(groups, n)
    edges = np.linspace(0, n, g + 1).astype(int)[:-1]
    return np.add.reduceat(values, edges, axis=1) * (g / n)


def monte_carlo_fits(steps, estimates: np.ndarray, names: Sequence[str], *, confidence: float = 0.95,
                     corrections: int = 1, seed: int = 0) -> tuple[dict[str, OrderFit], dict[str, str]]:
    r"""Orders from per-unit estimates ``estimates`` (len(steps), len(names), N) of the weak errors: points with
    :math:`|\hat e| \le 2\,\mathrm{SE}` dropped as the noise floor, the rest fitted by
    :func:`~sdetoolkit.studies.order.bootstrap_fit` over units. Returns (fits, skipped with the reason)."""
    h = 1.0 / np.asarray(steps, dtype=float)
    fits, skipped = {}, {}
    for k, name in enumerate(names):
        values = estimates[:, k]
        mean, stderr = values.mean(axis=1), values.std(axis=1, ddof=1) / math.sqrt(values.shape[1])
        keep = np.abs(mean) > 2 * stderr
        dropped = tuple(float(v) for v in h[~keep])
        if keep.sum() < corrections + 3:
            skipped[name] = (f"{keep.sum()} of {len(h)} step counts above the noise floor |e| > 2 SE, need "
                             f"{corrections + 3}; dropped h = {', '.join(f'{v:.4g}' for v in dropped)}")
            continue
        fit = bootstrap_fit(h[keep], _grouped(values[keep], BOOTSTRAP_GROUPS), statistic=np.abs,
                            confidence=confidence, corrections=corrections, seed=seed)
        fits[name] = replace(fit, dropped=dropped, drop_reasons=("noise floor",) * len(dropped))
    return fits, skipped


def _monte_carlo_study(ladder: _Ladder, allocation, n_samples, confidence, corrections) -> WeakStudy:
    solver, problem = ladder.solver, ladder.problem
    levels = torch.stack([ladder.run(level, n_samples, repeats, tag=0)
                          for level, repeats in enumerate(allocation)]).numpy()
    estimates = levels.cumsum(axis=0)  # (J, n_functions, N): per-unit estimates of e(h_j)
    steps = [len(times) - 1 for times in ladder.grids]
    dtype = str(ladder.dtype).removeprefix("torch.")
    root = math.sqrt(n_samples)
    rows = []
    for j, n in enumerate(steps):
        base = _base(problem, solver, n, ladder.costs[j], ladder.seed, dtype)
        for k, f in enumerate(ladder.functions):
            rows.append(dict(base, metric="weak_error", value=float(estimates[j, k].mean()),
                             stderr=float(estimates[j, k].std(ddof=1) / root), test_function=f.name))
            if j:
                rows.append(dict(base, metric="level_difference", value=float(levels[j, k].mean()),
                                 stderr=float(levels[j, k].std(ddof=1) / root), test_function=f.name))
    names = [f.name for f in ladder.functions]
    fits, skipped = monte_carlo_fits(steps, estimates, names, confidence=confidence, corrections=corrections,
                                     seed=ladder.seed)
    return WeakStudy(table=pd.DataFrame(rows), fits=fits, skipped=skipped, method="monte-carlo",
                     allocation=tuple(allocation), estimates=estimates)
