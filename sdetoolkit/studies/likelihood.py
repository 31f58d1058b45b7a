r"""Log-likelihood through the probability-flow ODE (instantaneous change of variables), exact or Hutchinson trace.

Along the PF-ODE :math:`\dot x = v(x, t) = \dot\alpha\hat x_0 + \dot\sigma\hat\varepsilon`, the continuity equation
gives :math:`\tfrac{d}{dt}\log p_t(x(t)) = -\nabla\cdot v`, so a point x at :math:`t_{min}` has

.. math:: \log p_{t_{min}}(x) = \log p_{t_{max}}(x(t_{max})) + \int_{t_{min}}^{t_{max}} \nabla\cdot v(x(t), t)\,dt,

with x(t) integrated forward from :math:`t_{min}` (Chen et al. 2018, Neural ODEs, Thm. 1; Song et al. 2021,
Score-SDE, App. D.2). The prior term uses the **exact** noised marginal :math:`p_{t_{max}}` of the analytic problem,
not the standard normal that Score-SDE uses, so the remaining error is only the discretisation of the augmented ODE
:math:`(x, \ell)` and, for Hutchinson, the trace estimation.

The divergence, exactly: Tweedie's second-order identity :math:`\partial\hat x_0/\partial x = (\alpha/\sigma^2)
\operatorname{Cov}[x_0\mid x_t]` and :math:`\hat\varepsilon = (x - \alpha\hat x_0)/\sigma` give

.. math:: \nabla\cdot v = \frac{\alpha(\dot\alpha\sigma - \alpha\dot\sigma)}{\sigma^3}\,
          \operatorname{tr}\operatorname{Cov}[x_0\mid x_t] + d\,\frac{\dot\sigma}{\sigma}
          = e^{2\lambda}\dot\lambda\,\operatorname{tr}\operatorname{Cov}[x_0\mid x_t] + d\,\frac{\dot\sigma}{\sigma},

finite where :math:`\alpha = 0`. For a mixture, :math:`x_0\mid x_t` is a mixture with weights the responsibilities
:math:`r_k`, means :math:`m_k = \mu_k + \alpha U_k(s_k\odot w_k)` and covariances
:math:`U_k\operatorname{diag}(s_k\sigma^2/v_k)U_k^\top`, :math:`v_k = \alpha^2 s_k + \sigma^2` (notation of
:mod:`sdetoolkit.distributions`), so :math:`\operatorname{tr}\operatorname{Cov} = \sum_k r_k\sum_i s_{ki}\sigma^2/
v_{ki} + \sum_k r_k\|m_k - \hat x_0\|^2`. The within-component part joins :math:`d\dot\sigma/\sigma` exactly, which
removes the cancellation of the two terms as :math:`\sigma\to 0`:

.. math:: \nabla\cdot v = \sum_k r_k\sum_i \frac{\alpha\dot\alpha s_{ki} + \sigma\dot\sigma}{v_{ki}}
          + \frac{\alpha(\dot\alpha\sigma - \alpha\dot\sigma)}{\sigma^3}\sum_k r_k\|m_k - \hat x_0\|^2,

the first sum being :math:`\tfrac12\tfrac{d}{dt}\log\det` of each component's marginal covariance.

Hutchinson's estimator (Hutchinson 1990; FFJORD, Grathwohl et al. 2019): :math:`\nabla\cdot v \approx
\epsilon^\top(\partial v/\partial x)\,\epsilon` with :math:`E[\epsilon\epsilon^\top] = I` (Rademacher or Gaussian),
one vector-Jacobian product per probe (``torch.autograd``), each probe fixed along the trajectory as in FFJORD. The
trajectory x(t) does not depend on the probes, so the estimate is the exact-trace estimate plus zero-mean noise, of
variance :math:`2\|A\|_F^2` (Gaussian) or :math:`2(\|A\|_F^2 - \sum_i A_{ii}^2)` (Rademacher) per probe, A the
discretised :math:`\int \partial v/\partial x\,dt` (symmetric: it is made of score Hessians); averaging n probes
divides it by n. In one dimension a Rademacher probe is exact (:math:`\epsilon^2 = 1`).

Integrators: the explicit Runge-Kutta solvers of :mod:`sdetoolkit.solvers.runge_kutta` (their tableau, in their
integration variable u, with :math:`d\ell/du = \nabla\cdot v\;dt/du`) on a grid refined by ``steps``, and
``scipy.integrate.solve_ivp`` (RK45 or DOP853, the adaptive reference Score-SDE uses) on each grid interval.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.integrate import solve_ivp

from .._checks import check_batch
from ..distributions import GaussianMixture
from ..grids import make_grid, validate_grid
from ..models import AnalyticModel
from ..schedules import NoiseSchedule
from ..solvers.base import Solver
from ..solvers.runge_kutta import TABLEAUS, ExplicitRungeKutta
from ..solvers.scipy_reference import ScipyReference
from ..solvers.variables import IntegrationVariable
from .order import OrderFit, bootstrap_fit, fit_order

PROBES = ("rademacher", "gaussian")
_CHUNK_ELEMENTS = 1 << 22  # rows x components x dim per chunk


def _posterior_mixture(distribution: GaussianMixture, alpha: float, sigma: float, x: torch.Tensor):
    r"""The law of :math:`x_0\mid x_t = x` as a mixture: responsibilities (N, K), and the spread
    :math:`\sum_k r_k\|m_k - \hat x_0\|^2` (N,) of its component means; dtype and device follow x."""
    x = check_batch(x, distribution.dim)
    if not sigma > 0:
        raise ValueError(f"sigma: the posterior is a point mass at sigma = 0, got sigma={sigma}")

    def cast(v):
        return None if v is None else v.to(dtype=x.dtype, device=x.device)

    weights, means, eigvals, basis = (cast(v) for v in (distribution.weights, distribution.means,
                                                         distribution.eigvals, distribution.basis))
    var = alpha**2 * eigvals + sigma**2                                      # (K, d)
    log_norm = torch.log(weights) - 0.5 * torch.log(var).sum(dim=1)          # (K,)
    responsibilities, spreads = [], []
    for chunk in x.split(max(1, _CHUNK_ELEMENTS // (distribution.n_components * distribution.dim))):
        if basis is None:
            y = chunk[:, None, :] - alpha * means                            # (n, K, d), eigenbasis = identity
        else:
            y = torch.einsum("nj,kji->nki", chunk, basis) - alpha * torch.einsum("kj,kji->ki", means, basis)
        w = y / var
        resp = torch.softmax(log_norm - 0.5 * (y * w).sum(dim=2), dim=1)     # (n, K)
        shift = alpha * eigvals * w                                          # m_k - mu_k in the eigenbasis
        m = means + (shift if basis is None else torch.einsum("kij,nkj->nki", basis, shift))
        responsibilities.append(resp)
        spreads.append((resp * (m - (resp[:, :, None] * m).sum(dim=1, keepdim=True)).square().sum(dim=2)).sum(1))
    return torch.cat(responsibilities), torch.cat(spreads), eigvals, var


def posterior_covariance_trace(distribution: GaussianMixture, alpha: float, sigma: float,
                               x: torch.Tensor) -> torch.Tensor:
    r""":math:`\operatorname{tr}\operatorname{Cov}[x_0\mid x_t = x]` for :math:`x_t = \alpha x_0 + \sigma\varepsilon`,
    one value per row of x, in closed form (module docstring); dtype and device follow x."""
    resp, spread, eigvals, var = _posterior_mixture(distribution, alpha, sigma, x)
    return resp @ (eigvals * sigma**2 / var).sum(dim=1) + spread


def velocity_divergence(distribution: GaussianMixture, schedule: NoiseSchedule, x: torch.Tensor, t) -> torch.Tensor:
    r"""Exact :math:`\nabla\cdot v` of the PF-ODE velocity of ``distribution`` under ``schedule`` at one time t,
    one value per row of x: :math:`\sum_k r_k\sum_i \tfrac12 \tfrac{d}{dt}\log v_{ki} + c\,\sum_k r_k
    \|m_k - \hat x_0\|^2` (module docstring), no cancellation as sigma -> 0 and finite where alpha = 0."""
    values = schedule.at(t)
    alpha, sigma, dalpha, dsigma = values.alpha, values.sigma, values.dalpha_dt, values.dsigma_dt
    resp, spread, eigvals, var = _posterior_mixture(distribution, alpha, sigma, x)
    within = ((alpha * dalpha * eigvals + sigma * dsigma) / var).sum(dim=1)         # (K,): d/dt log det / 2
    return resp @ within + alpha * (dalpha * sigma - alpha * dsigma) / sigma**3 * spread


def draw_probes(kind: str, n_probes: int, shape, *, seed: int = 0, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """``n_probes`` seeded probe vectors per row, shape (n_probes, *shape), with E[eps eps^T] = I: Rademacher
    (+-1) or standard Gaussian."""
    if kind not in PROBES:
        raise ValueError(f"probe: expected one of {PROBES}, got {kind!r}")
    if not isinstance(n_probes, int) or isinstance(n_probes, bool) or n_probes < 1:
        raise ValueError(f"n_probes: expected a positive integer, got {n_probes!r}")
    generator = torch.Generator().manual_seed(seed)
    size = (n_probes, *shape)
    if kind == "rademacher":
        probes = torch.randint(0, 2, size, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    else:
        probes = torch.randn(size, generator=generator, dtype=torch.float64)
    return probes.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class LogLikelihood:
    """Estimates of log p_{t_min}(x): ``exact`` (N,) with the exact trace, ``hutchinson`` (n_probes, N) one per probe
    (None without probes; average over the first axis for an n-probe estimate), the end point ``x_end`` = x(t_max),
    and ``nfe``, the velocity evaluations per trajectory (each adds one vector-Jacobian product per probe)."""

    exact: torch.Tensor
    hutchinson: torch.Tensor | None
    x_end: torch.Tensor
    nfe: int


def hutchinson_divergence(model: AnalyticModel, x: torch.Tensor, t, probes: torch.Tensor) -> torch.Tensor:
    r"""Hutchinson estimates :math:`\epsilon^\top(\partial v/\partial x)\,\epsilon` of the PF-ODE velocity's
    divergence at one time t, (n_probes, N) for ``probes`` (n_probes, N, d): one vector-Jacobian product per probe,
    batched over probes (the rows of x are repeated once per probe)."""
    n_probes, n, dim = probes.shape
    flat = probes.reshape(n_probes * n, dim)
    with torch.enable_grad():
        x_rep = x.detach().repeat(n_probes, 1).requires_grad_(True)
        v = model.pf_ode_drift(x_rep, t)
        (vjp,) = torch.autograd.grad(v, x_rep, grad_outputs=flat)
    return (vjp * flat).sum(dim=1).reshape(n_probes, n).detach()


class _Divergence:
    """The velocity and its divergence at one stage: exact, and Hutchinson with fixed probes (n_probes, N, d)."""

    def __init__(self, model: AnalyticModel, probes: torch.Tensor | None):
        self.model, self.probes = model, probes
        n_components, dim = model.distribution.n_components, model.distribution.dim
        self.probes_per_chunk = None if probes is None else max(
            1, _CHUNK_ELEMENTS // (probes.shape[1] * n_components * dim))

    def __call__(self, x: torch.Tensor, t: float):
        """(eps, v, divergences): divergences is (1 + n_probes, N), the exact trace first."""
        schedule = self.model.schedule
        values = schedule.at(t)
        prediction = self.model(x, t)
        v = values.dalpha_dt * prediction.x0 + values.dsigma_dt * prediction.eps
        divergences = [velocity_divergence(self.model.distribution, schedule, x, t)[None]]
        if self.probes is not None:
            divergences += [hutchinson_divergence(self.model, x, t, chunk)
                            for chunk in self.probes.split(self.probes_per_chunk)]
        return prediction.eps, v, torch.cat(divergences)


def log_likelihood(solver: Solver, model: AnalyticModel, x: torch.Tensor, grid, *, probes: torch.Tensor | None = None,
                   prior: GaussianMixture | None = None) -> LogLikelihood:
    r"""Estimate :math:`\log p_{t_{min}}(x)` by integrating the augmented PF-ODE forward over ``grid``.

    ``grid`` is a sampling grid (decreasing, :math:`t_{max}` first); it is traversed from its last time
    :math:`t_{min}` to its first. ``solver`` is an explicit Runge-Kutta solver (``get_solver("rk4-lambda")``) or the
    scipy reference (``get_solver("scipy-rk45")``). ``probes`` (n_probes, N, d), e.g. from :func:`draw_probes`,
    switches on Hutchinson's estimator beside the exact trace. ``prior`` is the law at :math:`t_{max}` whose
    log-density closes the formula; by default the exact noised marginal.
    """
    if not isinstance(model, AnalyticModel):
        raise TypeError(f"model: expected an AnalyticModel, got {type(model).__name__}")
    if model.error is not None:
        raise ValueError("model: the exact trace needs the exact model's velocity; got a model with a ScoreError")
    x = check_batch(x, model.distribution.dim)
    times = validate_grid(grid, model.schedule, "grid")
    if probes is not None and (probes.ndim != 3 or probes.shape[1:] != x.shape):
        raise ValueError(f"probes: expected shape (n_probes, {x.shape[0]}, {x.shape[1]}), got {tuple(probes.shape)}")
    if probes is not None:
        probes = probes.to(dtype=x.dtype, device=x.device)
    divergence = _Divergence(model, probes)
    ascending = [float(t) for t in times.flip(0)]
    if isinstance(solver, ExplicitRungeKutta):
        x_end, gain, nfe = _runge_kutta(solver, divergence, x, ascending)
    elif isinstance(solver, ScipyReference):
        x_end, gain, nfe = _scipy(solver, divergence, x, ascending)
    else:
        raise ValueError(f"solver: the augmented ODE needs a Runge-Kutta tableau or the scipy reference (e.g. "
                         f"rk4-lambda, heun-t, scipy-rk45); got {solver.name!r}")
    prior = model.distribution.noised(model.schedule, ascending[-1]) if prior is None else prior
    estimates = prior.log_prob(x_end) + gain
    return LogLikelihood(exact=estimates[0], hutchinson=None if probes is None else estimates[1:], x_end=x_end,
                         nfe=nfe)


def _dt_du(variable: IntegrationVariable, t: float) -> float:
    """dt/du of the integration variable u: 1 (t), 1/lambda' (lambda), -e^lambda/lambda' (sigma = e^-lambda)."""
    if variable.kind == "t":
        return 1.0
    values = variable.schedule.at(t)
    return 1.0 / values.dlambda_dt if variable.kind == "lambda" else -math.exp(values.lam) / values.dlambda_dt


def _runge_kutta(solver: ExplicitRungeKutta, divergence: _Divergence, x: torch.Tensor, ascending: list):
    """The solver's tableau on (X, l) in its variable u, with dX/du from the solver's velocity and
    dl/du = div v dt/du."""
    tableau = TABLEAUS[solver.tableau]
    a = [[float(v) for v in row] for row in tableau.A]
    b, c = [float(v) for v in tableau.b], [float(v) for v in tableau.c]
    variable = IntegrationVariable.of(solver.variable, divergence.model.schedule)
    gain = 0.0
    for t0, t1 in itertools.pairwise(ascending):
        u0 = variable.u(t0)
        h = variable.u(t1) - u0
        state = variable.state(x, t0)
        slopes, rates = [], []
        for i, c_i in enumerate(c):
            t_i = t0 if i == 0 else variable.t(u0 + c_i * h)
            x_i = x if i == 0 else variable.x(state + h * sum(a_ij * k for a_ij, k in zip(a[i][:i], slopes,
                                                                                          strict=True)), t_i)
            eps, _, div = divergence(x_i, t_i)
            slopes.append(variable.velocity(x_i, t_i, eps))
            rates.append(div * _dt_du(variable, t_i))
        x = variable.x(state + h * sum(b_i * k for b_i, k in zip(b, slopes, strict=True)), t1)
        gain = gain + h * sum(b_i * r for b_i, r in zip(b, rates, strict=True))
    return x, gain, len(b) * (len(ascending) - 1)


def _scipy(solver: ScipyReference, divergence: _Divergence, x: torch.Tensor, ascending: list):
    """solve_ivp on the flattened augmented system (x, l) in t, per grid interval, in float64."""
    shape, dtype, device = x.shape, x.dtype, x.device
    rows = 1 if divergence.probes is None else 1 + divergence.probes.shape[0]

    def rhs(t, y):
        state = torch.from_numpy(y[: x.numel()].reshape(shape)).to(device=device)
        _, v, div = divergence(state, t)
        return np.concatenate([v.detach().cpu().double().numpy().ravel(), div.cpu().double().numpy().ravel()])

    y = np.concatenate([x.detach().cpu().double().numpy().ravel(), np.zeros(rows * shape[0])])
    nfe = 0
    for t0, t1 in itertools.pairwise(ascending):
        solution = solve_ivp(rhs, (t0, t1), y, method=solver.method, rtol=solver.rtol, atol=solver.atol)
        if not solution.success:
            raise RuntimeError(f"{solver.name}: solve_ivp failed on [{t0}, {t1}]: {solution.message}")
        y, nfe = solution.y[:, -1], nfe + solution.nfev
    x_end = torch.from_numpy(y[: x.numel()].reshape(shape)).to(dtype=dtype, device=device)
    gain = torch.from_numpy(y[x.numel():].reshape(rows, shape[0])).to(dtype=dtype, device=device)
    return x_end, gain, nfe


@dataclass(frozen=True)
class LikelihoodStudy:
    """Tidy table of log-likelihood errors; ``fit``: order of the exact-trace RMS error in 1/steps (None for the
    adaptive reference or fewer than 4 step counts); ``probe_fit``: order of the Hutchinson variance in 1/probes at
    the finest steps (1 expected; None without at least 3 probe counts, or where the variance is zero)."""

    table: pd.DataFrame
    fit: OrderFit | None
    probe_fit: OrderFit | None


def likelihood(solver: Solver, problem, steps, *, n_samples: int = 256, seed: int = 0, dtype=torch.float64,
               device="cpu", grid: str = "uniform-lambda", probes=(), probe: str = "rademacher", repeats: int = 8,
               confidence: float = 0.95) -> LikelihoodStudy:
    r"""Errors :math:`e = \hat\ell - \log p_{t_{min}}(x)` of the PF-ODE log-likelihood at each of ``steps``, on
    ``n_samples`` exact samples of :math:`p_{t_{min}}` (the same samples for every step count).

    Rows (column ``trace``, ``probes``): exact trace (``probes`` = 0): ``bias`` (mean e, stderr over samples),
    ``rms`` and ``max`` (|e|; exact for these samples, stderr NaN). Hutchinson with ``probe`` vectors, for each n in
    ``probes``, from ``repeats`` independent n-probe estimates per sample: ``bias`` (mean e), ``trace_bias`` (mean
    difference from the exact-trace estimate on the same trajectory: zero in expectation) and ``variance`` (the
    variance over probes, averaged over samples), each with its standard error over samples. The NLL error is -bias.
    """
    steps = [int(n) for n in steps]
    probes = [int(n) for n in probes]
    if probe not in PROBES:
        raise ValueError(f"probe: expected one of {PROBES}, got {probe!r}")
    if not steps or min(steps) < 1:
        raise ValueError(f"steps: expected positive step counts, got {steps}")
    if probes and min(probes) < 1:
        raise ValueError(f"probes: expected positive probe counts, got {probes}")
    if probes and repeats < 2:
        raise ValueError(f"repeats: need at least 2 estimates per sample for a variance, got {repeats}")
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples: expected an integer of at least 2, got {n_samples!r}")
    model = problem.model()
    x = problem.target().sample(n_samples, torch.Generator().manual_seed(seed)).to(dtype=dtype, device=device)
    exact = problem.target().log_prob(x)
    draws = None if not probes else draw_probes(probe, repeats * max(probes), x.shape, seed=seed + 1, dtype=dtype,
                                                device=device)
    common = dict(problem=problem.name, solver=solver.name, seed=seed, dtype=str(dtype).removeprefix("torch."))
    rows, rms, variances = [], [], {}
    for n in steps:
        result = log_likelihood(solver, model, x, make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max),
                                probes=draws)
        base = dict(common, steps=n, nfe=result.nfe)
        error = result.exact - exact
        rms.append(float(error.square().mean().sqrt()))
        rows += [dict(base, metric="bias", value=float(error.mean()), stderr=_stderr(error), trace="exact", probes=0),
                 dict(base, metric="rms", value=rms[-1], stderr=math.nan, trace="exact", probes=0),
                 dict(base, metric="max", value=float(error.abs().max()), stderr=math.nan, trace="exact", probes=0)]
        for m in probes:
            blocks = result.hutchinson[: repeats * m].reshape(repeats, m, -1).mean(dim=1)       # (repeats, N)
            variance = blocks.var(dim=0)
            variances[n, m] = variance
            for metric, per_sample in (("bias", (blocks - exact).mean(dim=0)),
                                       ("trace_bias", (blocks - result.exact).mean(dim=0)), ("variance", variance)):
                rows.append(dict(base, metric=metric, value=float(per_sample.mean()), stderr=_stderr(per_sample),
                                 trace=probe, probes=m))
    columns = ["problem", "solver", "steps", "nfe", "seed", "dtype", "metric", "value", "stderr", "trace", "probes"]
    table = pd.DataFrame(rows, columns=columns)
    fit = None
    if solver.claimed().order is not None and len(steps) >= 4:
        fit = fit_order([1.0 / n for n in steps], rms, confidence=confidence)
    probe_fit = None
    finest = max(steps)
    if len(probes) >= 3 and all(float(variances[finest, m].mean()) > 0 for m in probes):
        samples = torch.stack([variances[finest, m] for m in probes]).cpu().double().numpy()
        probe_fit = bootstrap_fit([1.0 / m for m in probes], samples, statistic=lambda means: means,
                                  confidence=confidence, corrections=0, seed=seed)
    return LikelihoodStudy(table=table, fit=fit, probe_fit=probe_fit)


def _stderr(values: torch.Tensor) -> float:
    """Standard error of the mean of ``values``."""
    return float(values.std() / math.sqrt(values.numel()))
