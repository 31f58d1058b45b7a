r"""One-step prediction error: start from an exact sample of :math:`p_t`, take one step, compare with the exact map.

Cui et al. (ER-SDE-Solver, arXiv 2309.06169) compare samplers through their *one-step prediction error*, the error
of one step of an approximate solution against the exact solution from the same point: the local truncation error
of numerical ODE analysis (Hairer, Norsett & Wanner, *Solving ODEs I*, Sec. II.2 and III.2). This study measures it
for any registered solver, as a function of the step h and the time t.

**Layout.** The step goes from t to s, :math:`\lambda_s = \lambda_t + h` (h in log-SNR whatever variable the
solver steps in, so every solver is compared on the same footing). A multistep solver gets its steady step: its
history holds the exact solution at :math:`\lambda_t - kh`, k = 1 .. ``solver.history`` (a uniform-:math:`\lambda`
past, as in :mod:`sdetoolkit.symbolic.local_order`), with exact model outputs there, and the solver's own ``step``
runs on a prepared :class:`~sdetoolkit.solvers.base.StepState` at full order (warm-up and ``lower_order_final`` out
of the way). The model is evaluated at the exact :math:`x_t`: an evaluation a predictor-corrector method would
re-use from its previous step (UniPC, SA-Solver) is made afresh, so what is measured is the step's own local error.

**ODE solvers.** The error of :math:`x_s^{\text{num}}` against the exact probability-flow map of :math:`x_t`,
as the root mean square over :math:`x_t \sim p_t` (metric ``rms``). For a linear solver on Gaussian data
:math:`x_s^{\text{num}} - x_s^{\text{exact}}` is affine in :math:`x_t`, and its mean square is a closed form
(read off the solver's code on probe inputs, as :mod:`sdetoolkit.exact` does): no sampling error. Otherwise (mixture
data) it is a Monte Carlo average over ``n_samples`` seeded exact samples against
:meth:`~sdetoolkit.distributions.Gaussian.pf_ode_map` or a tight DOP853 solve
(:mod:`sdetoolkit.solvers.scipy_reference`), with ``max`` and a standard error beside ``rms``.

**SDE solvers.** A stochastic solver discretises a member of the marginal-preserving family
:math:`\mathrm dx = [f x - \tfrac{1+\eta}{2}g^2\nabla\log p]\,\mathrm dt + \sqrt\eta\,g\,\mathrm d\bar W`
(:math:`\eta = 1` the reverse SDE; :func:`noise_level` says which :math:`\eta(t)` each solver's paper uses). On
Gaussian data, per eigen-direction with data variance :math:`s` and marginal variance
:math:`v = \alpha^2 s + \sigma^2`, its exact transition from :math:`x_t` to s is Gaussian:

.. math:: x_s - \alpha_s\mu \mid x_t \sim \mathcal N\big(\sqrt{v_s/v_t}\,e^{-J/2}(x_t - \alpha_t\mu),\;
          v_s(1 - e^{-J})\big), \qquad J = \int_{\lambda_t}^{\lambda_s}\frac{2\eta}{1 + s\,e^{2\lambda}}\,
          \mathrm d\lambda,

(the linear drift integrated with :math:`g^2 = \dot v - 2fv`; the variance follows because the marginal is kept;
:math:`\eta = 0` is the flow map, :math:`\eta = 1` the forward posterior of
:meth:`~sdetoolkit.distributions.Gaussian.reverse_sde_transition`). The process reversed in time has the same form,
so the exact history given :math:`x_t` is drawn from the same formula backwards. A linear solver's step given
:math:`x_t` and its history is Gaussian too, :math:`m(x_t, \text{history}) + \sum_j c_j z_j`, and is compared with
the exact law given :math:`x_t` (the exact process is Markov) in closed form, per eigen-direction, averaged over
:math:`x_t \sim p_t` and the exact history (no Monte Carlo): ``mean``, the RMS error of the conditional mean;
``var``, the error of the conditional variances (Euclidean norm over directions); ``w2``,
:math:`\big(E\,W_2^2\big)^{1/2}` between the two conditional laws (Bures), whose standard-deviation part is the
variance error divided by :math:`2\sqrt{\mathrm{var}} = O(h^{1/2})`. For a one-step solver of weak order p the
mean and variance errors are :math:`O(h^{p+1})` (the weak local error; Milstein & Tretyakov 2004, Thm. 2.2.1) and
W2 is :math:`O(h^{p+1/2})`. A multistep solver's conditional mean also carries the history's draws, which
correlate with the next steps; its one-step orders then need not predict its global weak order (SDE-DPM-Solver++(2M):
one-step ``mean`` and ``w2`` of order 1.5, global weak order 2). A solver whose noise does not match its drift (a
clipped variance, a quadrature error in its coefficients, S_noise > 1) shows a floor or a reduced order.

**Output.** A tidy table, one row per (t, h, metric), and per t and fitted metric the local order from
:func:`~sdetoolkit.studies.order.fit_order` with its interval, and the error constant :math:`C(t) = e / h^{q}` at the
finest fitted h, q the fitted order rounded to an integer (to a half-integer for an SDE solver). Errors below
:data:`ROUND_OFF` machine epsilons of the size of :math:`x_t` (or ten times the reference's tolerance) are
round-off, not truncation error, and are not fitted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..distributions import Gaussian
from ..exact import SUPERPOSITION_TOLERANCE, NonlinearSolverError, _Probe, gaussian_law
from ..models import AnalyticModel
from ..noise import lambda_nodes
from ..solvers.base import DivergenceError, Evaluation, Solver, StepState, get_solver
from .order import OrderFit, fit_order

H_MAX = 0.4
"""The largest default step h, in log-SNR."""

LEVELS = 14
"""Default steps: H_MAX halved up to LEVELS - 1 times (down to 5e-5), stopping at the round-off floor."""

WINDOW = 6
"""Default steps fitted: the finest WINDOW above the round-off floor (the coarse ones may be pre-asymptotic)."""

ROUND_OFF = 100.0
"""Errors below this many machine epsilons of the RMS size of x_t are round-off and are not fitted."""

FUTURE = 6
"""Grid points placed after s, so that no rule for the final steps (``lower_order_final``) touches the step."""

Eta = Callable[[torch.Tensor], torch.Tensor]


# -- the SDE each stochastic solver discretises -------------------------------------------------------------------
def _constant(value: float) -> Eta:
    return lambda t: torch.full_like(t, float(value))


def _sa_solver_eta(solver: Solver) -> Eta:
    """SA-Solver's tau(t)^2: tau inside [tau_t_min, tau_t_max], 0 outside (Xue et al. 2023, arXiv 2309.05019)."""
    tau2, lo, hi = solver.tau**2, solver.tau_t_min, solver.tau_t_max
    return lambda t: torch.where((t >= lo) & (t <= hi), torch.full_like(t, tau2), torch.zeros_like(t))


def _er_sde_eta(solver: Solver, schedule) -> Eta:
    r"""ER-SDE: :math:`h^2 = \eta g^2` with :math:`\eta = s\varphi'(s)/\varphi(s) - 1`, :math:`s = \sigma/\alpha`.

    The ER SDE's data-form linear part :math:`\varphi(s_t)/\varphi(s_s)` is the eta-SDE's
    :math:`(s_t/s_s)\exp(-\int\eta\,\mathrm d\lambda)` exactly when :math:`\mathrm d\log\varphi/\mathrm d\log s =
    1 + \eta` (Cui et al., arXiv 2309.06169: :math:`\varphi = s` is the ODE, :math:`\varphi = s^2` the reverse
    SDE).
    """
    phi = solver.phi

    def eta(t: torch.Tensor) -> torch.Tensor:
        s = schedule.sigma_over_alpha(t.to(torch.float64))
        return (s * phi.derivative(s) / phi.fn(s) - 1.0).to(t.dtype)
    return eta


def noise_level(solver: Solver, schedule) -> Eta:
    r""":math:`\eta(t)` of the SDE ``solver`` discretises, as a function of (a tensor of) times.

    0 for an ODE solver; DDIM(:math:`\eta`): :math:`\eta^2` (its noise is :math:`\eta` times the exact one);
    DDPM, Euler-Maruyama, reverse diffusion, SDE-DPM-Solver (noise form): 1; SDE-DPM-Solver++, SEEDS: their ``eta``;
    SA-Solver: :math:`\tau(t)^2`; ER-SDE: from its noise scale function. Raises ValueError for a solver whose step
    is not a fixed discretisation of one such SDE (EDM's churn depends on the step count, Restart's jumps on the
    grid) and for an unknown stochastic family (pass ``eta`` to :func:`one_step_error` instead).
    """
    if not solver.stochastic:
        return _constant(0.0)
    family = solver.family
    if family == "ddim":
        return _constant(solver.eta**2)
    if family in ("ddpm", "euler-maruyama", "score-sde-pc", "dpm-solver"):
        return _constant(1.0)
    if family in ("dpm-solver++", "seeds"):
        return _constant(solver.config.get("eta", 1.0))
    if family == "sa-solver":
        return _sa_solver_eta(solver)
    if family == "er-sde":
        return _er_sde_eta(solver, schedule)
    if family in ("edm", "restart"):
        raise ValueError(f"solver: {solver.name!r} is not a fixed one-step discretisation of an SDE (its noise "
                         "depends on the number of steps or on the grid), so it has no exact one-step transition")
    raise ValueError(f"solver: no known SDE for the stochastic family {family!r}; pass eta= (a number or a "
                     "function of t) to one_step_error")


def _resolve_eta(solver: Solver, schedule, eta) -> Eta:
    if eta is None:
        return noise_level(solver, schedule)
    if callable(eta):
        return eta
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta: expected a finite number >= 0 or a function of t, got {eta!r}")
    return _constant(eta)


def _decay(schedule, eta: Eta, lam_lo: float, lam_hi: float, variances: torch.Tensor) -> torch.Tensor:
    r""":math:`J = \int_{\lambda_{lo}}^{\lambda_{hi}} 2\eta(t(\lambda))/(1 + s e^{2\lambda})\,\mathrm d\lambda` per
    direction (Gauss-Legendre panels of :func:`~sdetoolkit.noise.lambda_nodes`)."""
    lam, weight = lambda_nodes(torch.tensor([lam_lo], dtype=torch.float64), torch.tensor([lam_hi], dtype=torch.float64))
    lam, weight = lam[0], weight[0]
    level = eta(schedule.t_of_lambda(lam)).to(torch.float64)
    if not bool(torch.isfinite(level).all()) or bool((level < 0).any()):
        raise ValueError(f"eta: must be finite and non-negative, got values in [{float(level.min())}, "
                         f"{float(level.max())}] on lambda in [{lam_lo}, {lam_hi}]")
    log_s = torch.log(variances.to(torch.float64))
    # 1 / (1 + s e^{2 lambda}) = exp(-softplus(log s + 2 lambda)), stable for large lambda and s = 0
    shrink = torch.exp(-torch.nn.functional.softplus(log_s[:, None] + 2.0 * lam[None, :]))
    return ((2.0 * weight * level)[None, :] * shrink).sum(1)


# -- results ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OneStepStudy:
    """One-step errors (a tidy table), the local order fits keyed by (t, metric), and a summary (one row per t and
    fitted metric: order, interval, expected order, error constant, the fitted h range, and what was dropped)."""

    table: pd.DataFrame
    summary: pd.DataFrame
    fits: dict

    @property
    def fit(self) -> OrderFit:
        """The fit of the primary metric (``rms``, or ``w2`` for an SDE solver) at the first t where it succeeded."""
        fit = next((fit for (_, metric), fit in self.fits.items() if metric in ("rms", "w2")), None)
        if fit is None:
            raise ValueError("fit: no local order could be fitted (see summary.note)")
        return fit


# -- the step on a prepared state ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    """The times of one steady step: K past points, t, s, future points; and the step index."""

    times: torch.Tensor
    lams: tuple
    past: int

    @property
    def t(self) -> float:
        return float(self.times[self.past])

    @property
    def s(self) -> float:
        return float(self.times[self.past + 1])


def _layout(solver: Solver, schedule, t: float, h: float) -> _Layout:
    past = solver.history
    lam_t = schedule.at(t).lam
    lam_lo, lam_hi = schedule.lambda_range()
    lams = [lam_t - k * h for k in range(past, 0, -1)] + [lam_t, lam_t + h]
    if lams[0] < lam_lo or lams[-1] > lam_hi:
        raise ValueError(f"h: the step {h:g} at t = {t:g} (lambda = {lam_t:.4g}) needs lambda in [{lams[0]:.4g}, "
                         f"{lams[-1]:.4g}] ({past} past points of a multistep solver included), outside the "
                         f"schedule's [{lam_lo:.4g}, {lam_hi:.4g}]")
    known = schedule.t_of_lambda(torch.tensor(lams[:past] + lams[-1:], dtype=torch.float64))
    s = float(known[-1])
    future = s - (s - schedule.t_lo) * torch.arange(1, FUTURE + 1, dtype=torch.float64) / (FUTURE + 1)
    times = torch.cat([known[:past], torch.tensor([t, s], dtype=torch.float64), future])
    if not bool((times[1:] < times[:-1]).all()):
        raise ValueError(f"h: the step {h:g} at t = {t:g} is below the schedule's time resolution")
    return _Layout(times, tuple(lams), past)


def _run_step(solver: Solver, model: AnalyticModel, layout: _Layout, x: torch.Tensor, history: list, noise
              ) -> tuple[torch.Tensor, int]:
    """The solver's own step from x at t to s with the given history (most recent first); (x_s, amortised NFE)."""
    n = len(layout.times) - 1
    state = StepState(solver=solver, model=model, times=layout.times, i=layout.past,
                      order=solver.step_order(layout.past, n), x=x, history=deque(maxlen=max(solver.history, 1)),
                      noise=noise)
    for k, x_k in enumerate(history):
        t_k = float(layout.times[layout.past - 1 - k])
        state.history.append(Evaluation(t_k, layout.lams[layout.past - 1 - k], x_k, state.evaluate(x_k, t_k)))
    start = model.nfe
    x_next = solver.step(state)
    if not bool(torch.isfinite(x_next).all()):
        raise DivergenceError(f"{solver.name}: NaN or inf on the step t = {layout.t:.6g} -> {layout.s:.6g}")
    return x_next, model.nfe - start - (state._pending is not None)


# -- exact (Gaussian, linear solver) ------------------------------------------------------------------------------
def _exact_errors(solver: Solver, problem, layout: _Layout, eta: Eta, dtype, device) -> tuple[dict, int]:
    """Closed-form one-step errors of a linear solver on Gaussian data (see the module docstring)."""
    law = gaussian_law(problem.distribution)
    schedule = problem.schedule
    mean_rot = law.mean if law.basis is None else law.basis.T @ law.mean
    rotated = AnalyticModel(Gaussian(mean_rot, law.variances), schedule)
    centred = AnalyticModel(Gaussian(torch.zeros_like(mean_rot), law.variances), schedule)
    s_data = law.variances
    times = [float(v) for v in layout.times[:layout.past + 2]]
    alphas = {t: schedule.at(t).alpha for t in times}
    v = {t: alphas[t] ** 2 * s_data + schedule.at(t).sigma ** 2 for t in times}

    def conditional(t_from: float, t_to: float, lam_from: float, lam_to: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(coefficient, standard deviation) of y_to given y_from along the eta-SDE (either direction)."""
        decay = _decay(schedule, eta, min(lam_from, lam_to), max(lam_from, lam_to), s_data)
        return (v[t_to] / v[t_from]).sqrt() * torch.exp(-decay / 2), (-v[t_to] * torch.expm1(-decay)).sqrt()

    t, s, past = layout.t, layout.s, layout.past
    stochastic = solver.stochastic
    # past points, most recent first: coefficient on y of the previous one and the fresh noise's deviation
    links = [conditional(times[past - k], times[past - 1 - k], layout.lams[past - k], layout.lams[past - 1 - k])
             for k in range(past)]

    def tensor(values) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float64).to(dtype=dtype, device=device)

    def history(y: torch.Tensor, draws: torch.Tensor | None, mu: torch.Tensor) -> list:
        """The exact past (x at the past points, most recent first) from y_t and the history draws."""
        points = []
        for k, (coefficient, deviation) in enumerate(links):
            y = tensor(coefficient) * y
            if draws is not None:
                y = y + tensor(deviation) * draws[k]
            points.append(alphas[times[past - 1 - k]] * mu + y)
        return points

    hist_rows = past if stochastic else 0
    mu = tensor(mean_rot)[None]
    counter = _Probe()
    mean, nfe = _run_step(solver, rotated, layout, tensor(alphas[t]) * mu, history(torch.zeros_like(mu), None, mu),
                          counter if stochastic else None)
    draws = counter.count
    rows = 1 + hist_rows + draws
    y = torch.zeros(rows, s_data.numel(), dtype=dtype, device=device)
    y[0] = tensor(v[t].sqrt())
    units = torch.eye(rows, dtype=dtype, device=device)[1:1 + hist_rows, :, None].expand(-1, -1, s_data.numel())
    zero = torch.zeros_like(y[:1])
    parts, _ = _run_step(solver, centred, layout, y, history(y, units if stochastic else None, zero),
                         _Probe(offset=1 + hist_rows) if stochastic else None)
    mean, parts = mean[0].to(device="cpu", dtype=torch.float64), parts.to(device="cpu", dtype=torch.float64)
    _superposition(solver, rotated, layout, history, mean, parts, v[t], alphas[t], mu, hist_rows, draws, dtype, device)

    coefficient, deviation = conditional(t, s, layout.lams[past], layout.lams[past + 1])
    mean_error = (mean - alphas[s] * mean_rot).square().sum() + (parts[0] - coefficient * v[t].sqrt()).square().sum()
    if not stochastic:
        return {"rms": float(mean_error.sqrt())}, nfe
    mean_error = mean_error + parts[1:1 + hist_rows].square().sum()     # the history's draws move the mean
    variance = parts[1 + hist_rows:].square().sum(0)                    # the step's own noise
    exact_variance = deviation.square()
    std_error = ((variance - exact_variance) / (variance.sqrt() + deviation).clamp_min(1e-300)).square().sum()
    return {"w2": float((mean_error + std_error).sqrt()), "mean": float(mean_error.sqrt()),
            "var": float((variance - exact_variance).square().sum().sqrt())}, nfe


def _superposition(solver, rotated, layout, history, mean, parts, v_t, alpha_t, mu, hist_rows, draws, dtype, device
                   ) -> None:
    """Refuse a solver whose step is not affine after all (as :func:`sdetoolkit.exact.propagate` does)."""
    generator = torch.Generator().manual_seed(0)
    dim = mean.numel()
    zeta = torch.randn(dim, generator=generator, dtype=torch.float64)
    xi = torch.randn(hist_rows, dim, generator=generator, dtype=torch.float64)
    weights = torch.randn(draws, generator=generator, dtype=torch.float64)
    y = (v_t.sqrt() * zeta)[None].to(dtype=dtype, device=device)
    x_t = alpha_t * mu + y
    past = history(y, xi[:, None].to(dtype=dtype, device=device) if hist_rows else None, mu)
    direct, _ = _run_step(solver, rotated, layout, x_t, past, _Probe(weights=weights) if solver.stochastic else None)
    predicted = mean + zeta * parts[0] + (xi * parts[1:1 + hist_rows]).sum(0) + weights @ parts[1 + hist_rows:]
    scale = mean.abs().max() + parts.abs().sum(0).max()
    residual = float((direct[0].to(device="cpu", dtype=torch.float64) - predicted).abs().max() / scale)
    tolerance = max(SUPERPOSITION_TOLERANCE, ROUND_OFF * torch.finfo(dtype).eps)
    if residual > tolerance:
        raise NonlinearSolverError(f"solver: {solver.name!r} failed the superposition check (relative residual "
                                   f"{residual:.2e} > {tolerance:g}): its step is not affine; the exact one-step "
                                   "error needs a linear solver")


# -- Monte Carlo (ODE solvers on any data) ------------------------------------------------------------------------
def _flow(problem, model: AnalyticModel, x: torch.Tensor, t_from: float, t_to: float, rtol: float) -> torch.Tensor:
    """The exact probability-flow map (Gaussian) or a DOP853 solve to ``rtol`` (mixtures), either direction."""
    if isinstance(problem.distribution, Gaussian):
        return problem.distribution.pf_ode_map(x, problem.schedule, t_from, t_to)
    reference = get_solver("scipy-dop853", rtol=rtol, atol=rtol)
    state = StepState(solver=reference, model=model, times=torch.tensor([t_from, t_to], dtype=torch.float64), i=0,
                      order=1, x=x)
    return reference.step(state)


def _sampled_errors(solver: Solver, problem, layout: _Layout, x_t: torch.Tensor, rtol: float) -> tuple[dict, int]:
    """RMS and max one-step error over the exact samples ``x_t``, with the RMS's standard error."""
    model = problem.model()
    past, previous, t_prev = [], x_t, layout.t
    for k in range(layout.past):
        t_k = float(layout.times[layout.past - 1 - k])
        previous = _flow(problem, model, previous, t_prev, t_k, rtol)
        past.append(previous)
        t_prev = t_k
    numerical, nfe = _run_step(solver, model, layout, x_t, past, None)
    exact = _flow(problem, model, x_t, layout.t, layout.s, rtol)
    squared = (numerical - exact).to(torch.float64).square().sum(1)
    rms = squared.mean().sqrt()
    se = squared.std() / (2 * rms * math.sqrt(len(squared)))
    return {"rms": (float(rms), float(se)), "max": (float(squared.max().sqrt()), math.nan)}, nfe


# -- the study ------------------------------------------------------------------------------------------------------
def _default_times(problem, past: int, h_max: float) -> list[float]:
    """Five times uniform in lambda inside the window (its ends excluded), shrunk so that every step and its past fit
    inside it."""
    schedule = problem.schedule
    lo = schedule.at(problem.t_max).lam + past * h_max
    hi = schedule.at(problem.t_min).lam - h_max
    if not lo < hi:
        raise ValueError(f"h: steps up to {h_max:g} with {past} past points do not fit in the window "
                         f"[{problem.t_min}, {problem.t_max}]; give smaller h or explicit t")
    return [float(v) for v in schedule.t_of_lambda(torch.linspace(lo, hi, 7, dtype=torch.float64)[1:-1])]


def _positive_floats(values, name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an iterable of numbers, got {values!r}") from None
    if not out or not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{name}: expected finite positive values, got {values!r}")
    return out


def _claimed_order(solver: Solver) -> float | None:
    """The claimed global (ODE solver) or weak (SDE solver) order p; None where nothing of that kind is claimed."""
    for claim in solver.claims():
        if claim.order is not None and claim.kind == ("weak" if solver.stochastic else "global"):
            return claim.order
    return None


EXPECTED_SHIFT = {"rms": 1.0, "mean": 1.0, "var": 1.0, "w2": 0.5}
"""Local order minus the global (ODE) or weak (SDE) order p: p + 1 for the ODE error and for the conditional mean
and variance (a weak local error of order p + 1 gives weak order p), p + 1/2 for W2, whose standard-deviation part
is a variance error of order p + 1 divided by a standard deviation of order 1/2."""


def _size(problem, t: float) -> float:
    """The RMS size of x_t, the scale of round-off in a step from it."""
    marginal = problem.distribution.noised(problem.schedule, t)
    return math.sqrt(float(torch.trace(marginal.covariance()) + marginal.mean().square().sum()))


def _summarise(measured: list, entry: dict, floor: float, window: int | None, confidence: float, corrections: int,
               halves: bool) -> tuple[OrderFit | None, dict]:
    """Fit the local order over (h, error) pairs (the ``window`` finest above ``floor`` when given); the summary row
    with the constant e / h^q, q the order rounded to an integer (to a half-integer with ``halves``)."""
    if window is not None:
        measured = [point for point in measured if point[1] > floor][-window:]
    try:
        fit = fit_order([step for step, _ in measured], [value for _, value in measured], floor=floor,
                        confidence=confidence, corrections=corrections)
    except ValueError as error:
        return None, dict(entry, local_order=math.nan, low=math.nan, high=math.nan, power=math.nan,
                          constant=math.nan, h_min=math.nan, h_max=math.nan, note=str(error))
    power = float(np.rint(2 * fit.order) / 2) if halves else float(np.rint(fit.order))
    return fit, dict(entry, local_order=fit.order, low=fit.low, high=fit.high, power=power,
                     constant=float(fit.errors[0] / fit.steps[0] ** power), h_min=float(fit.steps[0]),
                     h_max=float(fit.steps[-1]), note="; ".join(f"dropped h={d:.3g}" for d in fit.dropped))


def one_step_error(solver: Solver, problem, h: Iterable[float] | None = None, t: Iterable[float] | None = None, *,
                   n_samples: int = 1000, seed: int = 0, dtype: torch.dtype = torch.float64, device="cpu",
                   eta: float | Eta | None = None, method: str = "auto", reference_rtol: float = 1e-12,
                   window: int = WINDOW, confidence: float = 0.95, corrections: int = 1) -> OneStepStudy:
    r"""One-step prediction error of ``solver`` on ``problem`` at steps ``h`` (log-SNR) from each time ``t``.

    ``h`` defaults to :data:`H_MAX` halved until the error reaches the round-off floor (at most :data:`LEVELS`
    steps), the fit then using the ``window`` finest steps above the floor (the asymptotic range); explicit ``h``
    are all computed and all fitted. ``t`` defaults to five times uniform in :math:`\lambda` inside the problem's
    window. ``method`` "auto": Gaussian data and a linear solver give closed-form errors ("exact", ``n_samples``
    unused), otherwise ("monte-carlo", ODE solvers only) the errors are averaged over ``n_samples`` seeded exact
    samples of :math:`p_t` against the exact flow (Gaussian) or DOP853 at ``reference_rtol``. ``eta`` overrides
    the SDE a stochastic solver is compared with (:func:`noise_level`). Per t and metric (``rms``; or ``w2``,
    ``mean``, ``var``) the local order is fitted with :func:`~sdetoolkit.studies.order.fit_order` (``confidence``,
    ``corrections``).
    """
    if not isinstance(solver, Solver):
        raise ValueError(f"solver: expected a Solver (get_solver(name)), got {type(solver).__name__}")
    if solver.family == "reference":
        raise ValueError(f"solver: {solver.name!r} is an adaptive reference, not a one-step map")
    steps = None if h is None else sorted(set(_positive_floats(h, "h")), reverse=True)
    times = (_default_times(problem, solver.history, H_MAX if steps is None else steps[0]) if t is None
             else _positive_floats(t, "t"))
    for value in times:
        if not problem.t_min <= value <= problem.t_max:
            raise ValueError(f"t: {value} is outside the problem's window [{problem.t_min}, {problem.t_max}]")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples: expected an integer >= 2, got {n_samples!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < corrections + 3:
        raise ValueError(f"window: expected an integer >= corrections + 3 = {corrections + 3}, got {window!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch dtype, got {dtype!r}")
    if not 0 < reference_rtol < 1e-6:
        raise ValueError(f"reference_rtol: expected a tolerance in (0, 1e-6), got {reference_rtol!r}")
    closed_form = isinstance(problem.distribution, Gaussian) and solver.linear
    if method not in ("auto", "exact", "monte-carlo"):
        raise ValueError(f"method: expected 'auto', 'exact' or 'monte-carlo', got {method!r}")
    if method == "exact" and not closed_form:
        raise ValueError(f"method: 'exact' needs Gaussian data and a linear solver ({problem.name!r}, "
                         f"{solver.name!r})")
    if method == "monte-carlo" and solver.stochastic:
        raise ValueError(f"method: 'monte-carlo' compares paths, which a stochastic solver ({solver.name!r}) "
                         "does not have; its one-step law is compared exactly")
    exact = closed_form and method != "monte-carlo"
    if solver.stochastic:
        if not solver.linear:
            raise NonlinearSolverError(f"solver: {solver.name!r} is not affine in x and its noise, so its one-step "
                                       "law is not Gaussian; the one-step law error needs a linear solver")
        if not exact:
            raise ValueError(f"problem: the exact SDE transition is known in closed form only for Gaussian data, "
                             f"and {problem.name!r} is a mixture")
    level = _resolve_eta(solver, problem.schedule, eta) if solver.stochastic else _constant(0.0)
    primary, fitted = ("w2", ("w2", "mean", "var")) if solver.stochastic else ("rms", ("rms",))
    claimed = _claimed_order(solver)
    rows, fits, summary = [], {}, []
    for t_value in times:
        lam_t = problem.schedule.at(t_value).lam
        size = _size(problem, t_value)
        floor = size * max(ROUND_OFF * torch.finfo(dtype).eps, 0.0 if exact else 10 * reference_rtol)
        x_t = None
        if not exact:
            generator = torch.Generator().manual_seed(seed)
            marginal = problem.distribution.noised(problem.schedule, t_value)
            x_t = marginal.sample(n_samples, generator).to(dtype=dtype, device=device)
        measured = {metric: [] for metric in fitted}
        for step in steps or [H_MAX * 2.0**-k for k in range(LEVELS)]:
            layout = _layout(solver, problem.schedule, t_value, step)
            if exact:
                values, nfe = _exact_errors(solver, problem, layout, level, dtype, device)
                values = {metric: (value, math.nan) for metric, value in values.items()}
            else:
                values, nfe = _sampled_errors(solver, problem, layout, x_t, reference_rtol)
            for metric, (value, se) in values.items():
                rows.append(dict(problem=problem.name, solver=solver.name, steps=1, nfe=nfe, seed=seed,
                                 dtype=str(dtype).removeprefix("torch."), metric=metric, value=value, stderr=se,
                                 t=t_value, s=layout.s, h=step, lambda_t=lam_t))
            for metric in fitted:
                measured[metric].append((step, values[metric][0]))
            if steps is None and values[primary][0] <= floor:
                break
        for metric in fitted:
            entry = dict(problem=problem.name, solver=solver.name, t=t_value, lambda_t=lam_t, metric=metric,
                         expected=None if claimed is None else claimed + EXPECTED_SHIFT[metric])
            metric_floor = floor * size if metric == "var" else floor        # a variance has units of x^2
            fit, row = _summarise(measured[metric], entry, metric_floor, None if steps else window, confidence,
                                  corrections, halves=solver.stochastic)
            summary.append(row)
            if fit is not None:
                fits[(t_value, metric)] = fit
    return OneStepStudy(table=pd.DataFrame(rows), summary=pd.DataFrame(summary), fits=fits)
