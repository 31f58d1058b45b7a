"""The solver protocol, the registry, and the one sampling loop.

A solver is a small class: it declares what it is (name, family, parameterisation, stochastic, claimed order, NFE
per step, history length, parameters with their official defaults) and implements :meth:`Solver.step`. Defining
the class registers it, under its ``name`` and under each of its ``variants`` (fixed parameter sets), so a new
solver is one new file in ``sdetoolkit/solvers/``.

:func:`sample` is the only loop (the template method of scipy's ``OdeSolver``): it validates the grid, runs the
steps, keeps the multistep history, chooses the order of each step (warm-up with lower orders, optional
``lower_order_final``), re-uses an evaluation a solver has already made at the next point (UniPC's corrector),
counts NFE and checks it against the solver's declaration, records a trajectory and a per-step trace on request,
and stops with :class:`DivergenceError` naming the step and time at the first NaN or inf.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
import torch

from .._checks import check_batch
from ..grids import validate_grid
from ..models import AnalyticModel

PARAMETERISATIONS = ("x0", "eps", "v", "score")


class DivergenceError(FloatingPointError):
    """A run produced NaN or inf."""


@dataclass(frozen=True)
class Claim:
    """The convergence order a solver's paper states: ``kind`` is 'global' (ODE), 'strong', 'weak' or 'none'."""

    order: float | None
    kind: str
    source: str

    def __str__(self) -> str:
        return "none claimed" if self.order is None else f"{self.kind} order {self.order:g} ({self.source})"


@dataclass(frozen=True)
class Param:
    """A solver parameter: its official default, a description, and optional allowed values or a check."""

    default: Any
    doc: str
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None

    def validate(self, name: str, value: Any) -> Any:
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{name}: expected one of {self.choices}, got {value!r}")
        if self.check is not None:
            try:
                valid = bool(self.check(value))
            except (TypeError, ValueError):  # a check that cannot even compare the value (a string for a number)
                valid = False
            if not valid:
                raise ValueError(f"{name}: invalid value {value!r} ({self.doc})")
        return value


def real(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False, open_high: bool = False,
         finite: bool = True) -> Callable[[Any], bool]:
    """A :class:`Param` check: a real number (not a bool or NaN), finite unless ``finite=False``, in [low, high]
    (open at an end where asked)."""
    def check(value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        if finite and not math.isfinite(value):
            return False
        return (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    return check


def integer(low: int = 0) -> Callable[[Any], bool]:
    """A :class:`Param` check: an int (not a bool) of at least ``low``."""
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low


@dataclass
class Evaluation:
    """One model evaluation in the solver's parameterisation."""

    t: float
    lam: float
    x: torch.Tensor
    output: torch.Tensor


_REGISTRY: dict[str, tuple[type[Solver], dict]] = {}


class Solver:
    """Base class of every solver. Subclasses set the class attributes below and implement :meth:`step`."""

    name: ClassVar[str]
    family: ClassVar[str]
    parameterisation: ClassVar[str]
    stochastic: ClassVar[bool] = False
    claim: ClassVar[Claim]
    nfe_per_step: ClassVar[int | None] = 1
    history: ClassVar[int] = 0
    params: ClassVar[dict[str, Param]] = {}
    variants: ClassVar[dict[str, dict]] = {}
    citation: ClassVar[str] = ""
    register: ClassVar[bool] = True
    linear: ClassVar[bool] = True
    """Whether the step is affine in x, the model outputs and the noise (exact moment propagation needs it)."""
    reaches_sigma_zero: ClassVar[str | None] = None
    """None when the solver can step to sigma = 0 (the final denoising step of EDM/VE grids); otherwise the reason
    it cannot, which :func:`sample` reports for such a grid."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__ or not cls.__dict__.get("register", True):
            return
        if cls.parameterisation not in PARAMETERISATIONS:
            raise TypeError(f"{cls.__name__}.parameterisation: expected one of {PARAMETERISATIONS}")
        for registered, fixed in {cls.name: {}, **cls.variants}.items():
            if registered in _REGISTRY:
                raise TypeError(f"solver name {registered!r} is registered twice")
            unknown = set(fixed) - set(cls.params)
            if unknown:
                raise TypeError(f"{cls.__name__}.variants[{registered!r}]: unknown parameters {sorted(unknown)}")
            _REGISTRY[registered] = (cls, fixed)

    def __init__(self, **params):
        unknown = set(params) - set(self.params)
        if unknown:
            raise ValueError(f"{', '.join(sorted(unknown))}: unknown parameter(s) of {self.name!r}; "
                             f"known: {', '.join(sorted(self.params)) or 'none'}")
        self.config = {key: spec.validate(key, params.get(key, spec.default)) for key, spec in self.params.items()}

    def __getattr__(self, key):
        config = self.__dict__.get("config", {})
        if key in config:
            return config[key]
        raise AttributeError(key)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({params})"

    # -- what a solver may override ---------------------------------------------------------------------------------
    @property
    def order(self) -> int:
        """The nominal order used after warm-up (the ``order`` parameter where there is one)."""
        return self.config.get("order", 1)

    def claimed(self) -> Claim:
        """The claim for this configuration (override when it depends on the parameters)."""
        return self.claim

    def claims(self) -> tuple[Claim, ...]:
        """Every claim for this configuration (a stochastic solver may claim a strong and a weak order)."""
        return (self.claimed(),)

    def step_order(self, i: int, n: int) -> int:
        """Order of step i of n: multistep warm-up min(order, i + 1); ``lower_order_final`` where configured.

        ``lower_order_final`` follows the official rule: min(order, n - i) on runs of fewer than
        ``lower_order_final_below`` steps.
        """
        order = self.order
        if self.history:
            order = min(order, i + 1)
        if self.config.get("lower_order_final") and n < self.config.get("lower_order_final_below", math.inf):
            order = min(order, n - i)
        return order

    def expected_nfe(self, times: torch.Tensor) -> int | None:
        """NFE of a run over ``times``; None for adaptive solvers."""
        return None if self.nfe_per_step is None else self.nfe_per_step * (len(times) - 1)

    def step(self, state: StepState) -> torch.Tensor:
        """Advance ``state.x`` from ``state.t`` to ``state.t_next``; return the new x."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Name, family, claim and parameters, for listings."""
        return dict(name=self.name, family=self.family, parameterisation=self.parameterisation,
                    stochastic=self.stochastic, claimed_order=self.claimed().order, claim_kind=self.claimed().kind,
                    claim_source=self.claimed().source, nfe_per_step=self.nfe_per_step, history=self.history,
                    params=dict(self.config), citation=self.citation)


@dataclass
class StepState:
    """What a step sees: the current point, the next time, the history, and model access."""

    solver: Solver
    model: AnalyticModel
    times: torch.Tensor
    i: int
    order: int
    x: torch.Tensor
    history: deque = field(default_factory=deque)
    noise: Any = None
    _pending: Evaluation | None = None
    _current: Evaluation | None = None

    @property
    def t(self) -> float:
        return float(self.times[self.i])

    @property
    def t_next(self) -> float:
        return float(self.times[self.i + 1])

    @property
    def n_steps(self) -> int:
        return len(self.times) - 1

    @property
    def is_last(self) -> bool:
        return self.i == self.n_steps - 1

    @property
    def schedule(self):
        return self.model.schedule

    def alpha(self, t: float) -> float:
        return self.schedule.at(t).alpha

    def sigma(self, t: float) -> float:
        return self.schedule.at(t).sigma

    def lam(self, t: float) -> float:
        return self.schedule.at(t).lam

    def t_of_lam(self, lam: float) -> float:
        return float(self.schedule.t_of_lambda(lam))

    def evaluate(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """The model output at (x, t) in the solver's parameterisation (one NFE); a non-finite stage point (the run
        diverged inside the step) raises :class:`DivergenceError` naming the step."""
        if not bool(torch.isfinite(x).all()):
            raise DivergenceError(f"{self.solver.name}: NaN or inf at a stage of step {self.i} (t = {self.t:.6g} -> "
                                  f"{self.t_next:.6g}), evaluating the model at t = {float(t):.6g}")
        return self.model(x, t)[self.solver.parameterisation]

    def current(self) -> torch.Tensor:
        """The model output at the current point, evaluated once per step (or re-used from the previous step)."""
        if self._current is None:
            self._current = Evaluation(self.t, self.lam(self.t), self.x, self.evaluate(self.x, self.t))
        return self._current.output

    def normal(self, t_hi: float | None = None, t_lo: float | None = None, copy: int = 0) -> torch.Tensor:
        """A standard normal tensor shaped like x from the run's noise source, for this step by default."""
        return self.noise.normal(self.t if t_hi is None else t_hi, self.t_next if t_lo is None else t_lo, self.x,
                                 copy)

    def integrals(self, kernels, t_hi: float | None = None, t_lo: float | None = None,
                  copy: int = 0) -> tuple[torch.Tensor, ...]:
        r"""Jointly exact :math:`\int K\,\mathrm{d}W` over this step (or [t_lo, t_hi]) for each kernel; ``copy`` > 0:
        an independent copy over the same interval; see noise.py."""
        return self.noise.integrals(self.t if t_hi is None else t_hi, self.t_next if t_lo is None else t_lo,
                                    kernels, self.x, copy)

    def offer_next(self, x_next: torch.Tensor, output: torch.Tensor) -> None:
        """Hand the loop an evaluation already made at (x_next, t_next), to be re-used as the next current()."""
        self._pending = Evaluation(self.t_next, self.lam(self.t_next), x_next, output)


@dataclass
class SampleResult:
    """What :func:`sample` returns when a trajectory or trace is requested."""

    x: torch.Tensor
    trajectory: torch.Tensor | None
    trace: pd.DataFrame | None


def sample(solver: Solver, model: AnalyticModel, grid, x_T: torch.Tensor, noise=None, *,
           return_trajectory: bool = False, return_trace: bool = False):
    """Run ``solver`` over ``grid`` (decreasing times) from ``x_T``; return x at the last time.

    With ``return_trajectory`` or ``return_trace`` a :class:`SampleResult` is returned instead: the trajectory is
    (n_steps + 1, N, d); the trace has one row per step (i, t, t_next, h = lambda_next - lambda, order, nfe).
    Memory does not grow with the number of steps unless a trajectory is requested.
    """
    if not isinstance(solver, Solver):
        raise TypeError(f"solver: expected a Solver, got {type(solver).__name__}")
    times = validate_grid(grid, model.schedule, "grid")
    x = check_batch(x_T, model.distribution.dim, "x_T")
    if solver.stochastic and noise is None:
        raise ValueError(f"noise: solver {solver.name!r} is stochastic and needs a noise source")
    if solver.reaches_sigma_zero is not None and model.schedule.at(float(times[-1])).sigma == 0.0:
        raise ValueError(f"grid: ends at sigma = 0, which {solver.name!r} cannot reach: {solver.reaches_sigma_zero}; "
                         "end the grid at t_min > 0")
    if noise is not None:
        noise.reset()
    n = len(times) - 1
    nfe_start = model.nfe
    state = StepState(solver=solver, model=model, times=times, i=0, order=1, x=x,
                      history=deque(maxlen=max(solver.history, 1)), noise=noise)
    trajectory = [x] if return_trajectory else None
    trace = [] if return_trace else None
    for i in range(n):
        state.i, state.order, state.x = i, solver.step_order(i, n), x
        state._current, pending, state._pending = None, state._pending, None
        if pending is not None and pending.x is x and pending.t == state.t:
            state._current = pending
        x_next = solver.step(state)
        if not bool(torch.isfinite(x_next).all()):
            raise DivergenceError(f"{solver.name}: NaN or inf at step {i} of {n} (t = {state.t:.6g} -> "
                                  f"{state.t_next:.6g})")
        if solver.history and state._current is not None:
            state.history.appendleft(state._current)
        if trace is not None:
            lam_next = state.lam(state.t_next)
            trace.append(dict(i=i, t=state.t, t_next=state.t_next, h=lam_next - state.lam(state.t),
                              order=state.order, nfe=model.nfe - nfe_start))
        if state._pending is not None and state._pending.x is not x_next:
            state._pending = None
        x = x_next
        if trajectory is not None:
            trajectory.append(x)
    expected = solver.expected_nfe(times)
    if expected is not None and model.nfe - nfe_start != expected:
        raise RuntimeError(f"{solver.name}: used {model.nfe - nfe_start} model evaluations, declared {expected}")
    if not (return_trajectory or return_trace):
        return x
    return SampleResult(x=x, trajectory=None if trajectory is None else torch.stack(trajectory),
                        trace=None if trace is None else pd.DataFrame(trace))


def list_solvers() -> list[str]:
    """Names of every registered solver and variant."""
    return sorted(_REGISTRY)


def get_solver(name: str, **params) -> Solver:
    """Build a registered solver by name; ``params`` override the variant's and the official defaults."""
    try:
        cls, fixed = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"name: unknown solver {name!r}; known: {', '.join(list_solvers())}") from None
    clash = {k for k in params if k in fixed and params[k] != fixed[k]}
    if clash:
        raise ValueError(f"{', '.join(sorted(clash))}: fixed by the variant {name!r} ({fixed})")
    solver = cls(**{**fixed, **params})
    solver.name = name
    return solver
