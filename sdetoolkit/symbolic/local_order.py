r"""Symbolic local order: a solver's own ``step`` run on sympy values, expanded in h against the exact flow.

On data :math:`N(\mu, s^2)` with the ``edm`` schedule (:math:`\alpha = 1`, :math:`\sigma = t`,
:math:`\lambda = -\log\sigma`) the probability-flow ODE is linear with the exact flow
:math:`x_t - \mu = (x_s - \mu)\sqrt{(s^2 + \sigma_t^2)/(s^2 + \sigma_s^2)}` and the exact denoiser
:math:`\hat x_0(x, \sigma) = (s^2 x + \sigma^2\mu)/(s^2 + \sigma^2)` (Karras et al. 2022, eq. 3-4; the Gaussian
posterior mean). :class:`SymbolicStepState` is a :class:`~sdetoolkit.solvers.base.StepState` whose times, alpha,
sigma, lambda, t(lambda) and model outputs are sympy expressions in the step :math:`h` in :math:`\lambda`, so
``solver.step(state)`` composes the one-step map from the very coefficient code the solver runs on tensors.

The step starts at :math:`\sigma_s` and ends at :math:`\sigma_s e^{-h}`; a multistep solver's history holds the exact
flow at :math:`\sigma_s e^{kh}`, k = 1, 2, ... (a uniform-:math:`\lambda` grid), with exact model outputs. The local
error (numerical - exact) is expanded in h; its first non-zero term :math:`C h^{p+1}` gives the local order p + 1
and the error constant C (Hairer, Norsett & Wanner, *Solving ODEs I*, Sec. II.2 and III.2). Float constants in a
solver's code (0.5, tableau entries) are read as the nearest simple rational within a few ulps; the problem's
numbers enter only after that, as symbols substituted at the end.

:func:`numeric_one_step_error` makes the same step with the solver's torch code in float64, so the symbolic
leading term can be checked against what the code computes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from types import SimpleNamespace

import sympy as sp
import torch

from ..schedules import LAMBDA, T, get_schedule
from ..solvers.base import Evaluation, Solver, StepState, get_solver
from . import ops
from .power_series import taylor

H = sp.Symbol("h", positive=True)
"""The step in lambda."""

TERMS = 9
"""Series terms computed: powers h^0 .. h^8, enough for local order 8."""


class NotSymbolic(TypeError):
    """The solver's step cannot run on sympy values (adaptive, stochastic, ...)."""


@dataclass(frozen=True)
class GaussProblem:
    """Scalar data N(mu, s^2), one step from (sigma_s, x_s) on the edm schedule; exact rationals."""

    mu: sp.Expr = field(default_factory=lambda: sp.Integer(1))
    s: sp.Expr = field(default_factory=lambda: sp.Rational(1, 2))
    sigma_s: sp.Expr = field(default_factory=lambda: sp.Integer(1))
    x_s: sp.Expr = field(default_factory=lambda: sp.Integer(2))

    def exact(self, sigma):
        """The exact flow from (sigma_s, x_s) to sigma (floats or sympy)."""
        ratio = (self.s**2 + sigma**2) / (self.s**2 + self.sigma_s**2)
        return self.mu + (self.x_s - self.mu) * ops.sqrt(ratio)

    def sigma_at(self, k, h):
        """sigma_s e^{-k h}: k steps of h in lambda after the start (negative k: before it)."""
        return self.sigma_s * ops.exp(-k * h)


PARAMETERS = (sp.Symbol("mu", real=True), sp.Symbol("s", positive=True), sp.Symbol("sigma_s", positive=True),
              sp.Symbol("x_s", real=True))
"""The step is composed with these symbols, then the problem's numbers are substituted: float literals of a solver
then never meet the problem's rationals (which would turn exact numbers into floats)."""


class SymbolicSchedule:
    """The schedule's sympy expressions evaluated at sympy times (what solvers call on ``state.schedule``)."""

    def __init__(self, schedule):
        self.schedule, self.name = schedule, schedule.name
        self.alpha_expr, self.sigma_expr = schedule.alpha_expr, schedule.sigma_expr

    def _at(self, expr, t):
        return sp.sympify(expr).subs(T, t)

    def alpha(self, t):
        return self._at(self.schedule.alpha_expr, t)

    def sigma(self, t):
        return self._at(self.schedule.sigma_expr, t)

    def lam(self, t):
        return sp.expand_log(self._at(self.schedule.lambda_expr, t), force=True)

    def f(self, t):
        return self._at(self.schedule.f_expr, t)

    def dalpha_dt(self, t):
        return self._at(self.schedule.dalpha_dt_expr, t)

    def dsigma_dt(self, t):
        return self._at(self.schedule.dsigma_dt_expr, t)

    def dlambda_dt(self, t):
        return self._at(self.schedule.dlambda_dt_expr, t)

    def sigma_over_alpha(self, t):
        return self.sigma(t) / self.alpha(t)

    def t_of_lambda(self, lam):
        if self.schedule.t_of_lambda_expr is None:
            raise NotSymbolic(f"schedule {self.name!r} has no closed-form t(lambda)")
        return self.schedule.t_of_lambda_expr.subs(LAMBDA, lam)

    def at(self, t):
        return SimpleNamespace(alpha=self.alpha(t), sigma=self.sigma(t), lam=self.lam(t),
                               dalpha_dt=self.dalpha_dt(t), dsigma_dt=self.dsigma_dt(t))


class SymbolicGaussModel:
    """The exact model of N(mu, s^2) on a symbolic schedule: every parameterisation, sympy in and out."""

    def __init__(self, problem: GaussProblem, schedule: SymbolicSchedule):
        self.problem, self.schedule, self.nfe = problem, schedule, 0

    def __call__(self, x, t) -> dict:
        p, alpha, sigma = self.problem, self.schedule.alpha(t), self.schedule.sigma(t)
        x0 = p.mu + alpha * p.s**2 * (x - alpha * p.mu) / (alpha**2 * p.s**2 + sigma**2)
        eps = (x - alpha * x0) / sigma
        self.nfe += 1
        return dict(x0=x0, eps=eps, v=alpha * eps - sigma * x0, score=-eps / sigma)


@dataclass
class SymbolicStepState(StepState):
    """A StepState on sympy values: times, coefficients and model outputs are expressions in h."""

    sym_schedule: SymbolicSchedule | None = None

    @property
    def t(self):
        return self.times[self.i]

    @property
    def t_next(self):
        return self.times[self.i + 1]

    @property
    def schedule(self):
        return self.sym_schedule

    def alpha(self, t):
        return self.sym_schedule.alpha(t)

    def sigma(self, t):
        return self.sym_schedule.sigma(t)

    def lam(self, t):
        return self.sym_schedule.lam(t)

    def t_of_lam(self, lam):
        return self.sym_schedule.t_of_lambda(lam)

    def evaluate(self, x, t):
        return self.model(x, t)[self.solver.parameterisation]

    def normal(self, *args, **kwargs):
        raise NotSymbolic("the step draws noise (stochastic solver)")

    def integrals(self, *args, **kwargs):
        raise NotSymbolic("the step draws noise (stochastic solver)")


def _layout(solver: Solver, position: str):
    """(past steps K, future steps F, index of the step) for the step analysed."""
    past = solver.history if position != "first" else 0
    future = 1 if position == "last" else 12
    return past, future, past


def _grid(problem: GaussProblem, h, past: int, future: int) -> list:
    return [problem.sigma_at(k, h) for k in range(-past, future + 1)]


def _rational(value: sp.Float) -> sp.Rational:
    """The simplest rational within 8 ulps of a float constant, else its exact binary value."""
    x = float(value)
    near = Fraction(x).limit_denominator(10**6)
    if abs(float(near) - x) <= 8 * 2.0**-52 * abs(x):
        return sp.Rational(near.numerator, near.denominator)
    return sp.Rational(x)


def rationalize(expr: sp.Expr) -> sp.Expr:
    """Replace float constants (from a solver's float literals) by exact rationals."""
    return expr.xreplace({f: _rational(f) for f in expr.atoms(sp.Float)})


def symbolic_step(solver: Solver, problem: GaussProblem | None = None, position: str = "steady", h=H):
    """(numerical x_t, exact x_t, order used) as sympy expressions in h for one step of ``solver``."""
    problem = problem or GaussProblem()
    if solver.stochastic:
        raise NotSymbolic("stochastic solver (the local order of a deterministic map only)")
    if not solver.linear:
        raise NotSymbolic("declared non-linear")
    if solver.family == "reference":
        raise NotSymbolic("adaptive black-box reference (scipy solve_ivp), not a fixed one-step map")
    values = dict(zip(PARAMETERS, (problem.mu, problem.s, problem.sigma_s, problem.x_s), strict=True))
    problem = GaussProblem(*PARAMETERS)
    schedule = SymbolicSchedule(get_schedule("edm"))
    model = SymbolicGaussModel(problem, schedule)
    past, future, i = _layout(solver, position)
    times = _grid(problem, h, past, future)
    n = len(times) - 1
    order = solver.step_order(i, n)
    state = SymbolicStepState(solver=solver, model=model, times=times, i=i, order=order, x=problem.x_s,
                              history=deque(maxlen=max(solver.history, 1)), sym_schedule=schedule)
    for k in range(past, 0, -1):
        t_k = times[i - k]
        x_k = problem.exact(t_k)
        state.history.appendleft(Evaluation(t_k, state.lam(t_k), x_k, state.evaluate(x_k, t_k)))
    try:
        x_next = solver.step(state)
    except NotSymbolic:
        raise
    except (TypeError, AttributeError, ValueError) as error:
        raise NotSymbolic(f"step does not run on sympy values: {type(error).__name__}: {error}") from error
    return rationalize(sp.sympify(x_next)).subs(values), problem.exact(times[i + 1]).subs(values), order


@dataclass
class LocalOrder:
    """The symbolic local error of one solver: leading power (local order), its constant, and the next term."""

    solver: str
    position: str
    symbolic: bool
    reason: str = ""
    order_used: int | None = None
    local_order: int | None = None
    constant: sp.Expr | None = None
    next_constant: sp.Expr | None = None
    coefficients: list = field(default_factory=list)
    claimed: float | None = None

    @property
    def global_order(self) -> int | None:
        """local_order - 1 (the order a one-step error of that power gives over a run)."""
        return None if self.local_order is None else self.local_order - 1

    def predicted(self, h: float) -> float:
        """C h^{p+1}."""
        return float(self.constant) * h**self.local_order

    def as_dict(self) -> dict:
        return dict(solver=self.solver, position=self.position, symbolic=self.symbolic, reason=self.reason,
                    order_used=self.order_used, local_order=self.local_order, global_order=self.global_order,
                    constant=None if self.constant is None else str(self.constant),
                    constant_float=None if self.constant is None else float(self.constant),
                    next_constant=None if self.next_constant is None else float(self.next_constant),
                    claimed_order=self.claimed)


def series_coefficients(expr: sp.Expr, terms: int = TERMS, method: str = "power-series") -> list:
    """Exact Taylor coefficients of expr in h, powers 0 .. terms - 1 (:mod:`.power_series`, or ``sympy.series``)."""
    if method == "power-series":
        return taylor(expr, H, terms)
    expansion = sp.series(expr, H, 0, terms).removeO()
    return [sp.nsimplify(sp.simplify(expansion.coeff(H, k))) for k in range(terms)]


def local_order(name: str, problem: GaussProblem | None = None, position: str = "steady",
                terms: int = TERMS, **params) -> LocalOrder:
    """The symbolic local order and error constant of a registered solver (``position``: steady, first, last)."""
    if position not in ("steady", "first", "last"):
        raise ValueError(f"position: expected 'steady', 'first' or 'last', got {position!r}")
    solver = get_solver(name, **params)
    claimed = solver.claimed().order
    try:
        numerical, exact, order = symbolic_step(solver, problem, position)
    except NotSymbolic as error:
        return LocalOrder(name, position, False, reason=str(error), claimed=claimed)
    coefficients = series_coefficients(numerical - exact, terms)
    nonzero = [k for k, c in enumerate(coefficients) if c != 0]
    if not nonzero:
        return LocalOrder(name, position, True, reason=f"exact through h^{terms - 1}", order_used=order,
                          coefficients=coefficients, claimed=claimed)
    lead = nonzero[0]
    following = coefficients[lead + 1] if lead + 1 < terms else None
    return LocalOrder(name, position, True, order_used=order, local_order=lead, constant=coefficients[lead],
                      next_constant=following, coefficients=coefficients, claimed=claimed)


def numeric_one_step_error(name: str, h: float, problem: GaussProblem | None = None, position: str = "steady",
                           **params) -> float:
    """(numerical - exact) of one step of the solver's torch code in float64, on the same problem and history."""
    from ..distributions import Gaussian
    from ..models import AnalyticModel

    problem = problem or GaussProblem()
    solver = get_solver(name, **params)
    schedule = get_schedule("edm")
    model = AnalyticModel(Gaussian(torch.tensor([float(problem.mu)], dtype=torch.float64),
                                   torch.tensor([[float(problem.s) ** 2]], dtype=torch.float64)), schedule)
    past, future, i = _layout(solver, position)
    sigmas = [float(problem.sigma_at(k, sp.Float(h, 40))) for k in range(-past, future + 1)]
    times = torch.tensor(sigmas, dtype=torch.float64)
    n = len(sigmas) - 1
    x_s = torch.tensor([[float(problem.x_s)]], dtype=torch.float64)
    state = StepState(solver=solver, model=model, times=times, i=i, order=solver.step_order(i, n), x=x_s,
                      history=deque(maxlen=max(solver.history, 1)))
    for k in range(past, 0, -1):
        t_k = sigmas[i - k]
        x_k = torch.tensor([[float(problem.exact(sp.Float(t_k, 40)))]], dtype=torch.float64)
        state.history.appendleft(Evaluation(t_k, state.lam(t_k), x_k, model(x_k, t_k)[solver.parameterisation]))
    x_next = solver.step(state)
    exact = problem.exact(sp.Float(sigmas[i + 1], 40))
    return float(sp.Float(float(x_next.reshape(())), 40) - exact)


PROBLEMS = (GaussProblem(), GaussProblem(mu=sp.Integer(-3), s=sp.Rational(1, 3), sigma_s=sp.Integer(5),
                                         x_s=sp.Integer(7)))
"""The default problem and a second one: a local order is generic only where both agree (the first problem makes
UniP-2 bh1's h^3 term vanish by accident, for instance)."""


def numeric_ratios(result: LocalOrder, problem: GaussProblem | None = None, h0: float = 0.2, levels: int = 10,
                   floor: float = 1e-11, **params) -> list[tuple[float, float, float]]:
    """(h, measured one-step error of the torch code, measured / (C h^{p+1})) for h = h0 / 2^k while the predicted
    error stays above ``floor`` (float64 round-off of x ~ 1 is about 1e-16, so the ratio is then good to ~1e-5)."""
    if result.local_order is None:
        return []
    rows = []
    for k in range(levels):
        h = h0 / 2**k
        predicted = result.predicted(h)
        if abs(predicted) < floor:
            break
        error = numeric_one_step_error(result.solver, h, problem, result.position, **params)
        rows.append((h, error, error / predicted))
    return rows
