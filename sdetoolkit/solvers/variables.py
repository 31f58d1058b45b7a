r"""Integration variables for the probability-flow ODE.

The same Runge-Kutta tableau behaves very differently depending on the variable it integrates in:

* ``t``: :math:`\mathrm{d}x/\mathrm{d}t = f x + (\dot\sigma - f\sigma)\,\hat\varepsilon`
  (= :math:`\dot\alpha\hat x_0 + \dot\sigma\hat\varepsilon`);
* ``sigma``: the scaled state :math:`\tilde x = x/\alpha` in :math:`\tilde\sigma = \sigma/\alpha`,
  :math:`\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = \hat\varepsilon` (Karras et al. 2022, eq. 4; on the ``edm``
  schedule :math:`\tilde x = x`, :math:`\tilde\sigma = t`);
* ``lambda``: :math:`\mathrm{d}x/\mathrm{d}\lambda = (\mathrm{d}x/\mathrm{d}t)/(\mathrm{d}\lambda/\mathrm{d}t)`.
"""

from __future__ import annotations

import functools

import torch

from ..symbolic import ops

VARIABLES = ("t", "sigma", "lambda")


class IntegrationVariable:
    """Maps between time t and a variable u, between x and the integrated state X, and gives dX/du from eps."""

    def __init__(self, kind: str, schedule):
        if kind not in VARIABLES:
            raise ValueError(f"variable: expected one of {VARIABLES}, got {kind!r}")
        self.kind, self.schedule = kind, schedule
        self._times: dict[float, float] = {}

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def of(kind: str, schedule) -> IntegrationVariable:
        """One shared instance per (kind, schedule), so its memoised stage times serve every step and run."""
        return IntegrationVariable(kind, schedule)

    def _at(self, t):
        """The memoised float coefficients at a numeric t; None for a symbolic t (sympy), which takes the slow path."""
        return self.schedule.at(t) if isinstance(t, (int, float)) else None

    def u(self, t: float) -> float:
        if self.kind == "t":
            return t
        values = self._at(t)
        lam = values.lam if values is not None else ops.real(self.schedule.lam(t))
        return ops.exp(-lam) if self.kind == "sigma" else lam

    def t(self, u: float) -> float:
        if self.kind == "t":
            return u
        if isinstance(u, float) and u in self._times:  # stage times recur on every run over the same grid
            return self._times[u]
        lam = -ops.log(u) if self.kind == "sigma" else u
        t = ops.real(self.schedule.t_of_lambda(lam))
        if isinstance(u, float) and len(self._times) < 65536:
            self._times[u] = t
        return t

    def _alpha(self, t):
        values = self._at(t)
        return values.alpha if values is not None else ops.real(self.schedule.alpha(t))

    def state(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return x / self._alpha(t) if self.kind == "sigma" else x

    def x(self, state: torch.Tensor, t: float) -> torch.Tensor:
        return state * self._alpha(t) if self.kind == "sigma" else state

    def velocity(self, x: torch.Tensor, t: float, eps: torch.Tensor) -> torch.Tensor:
        """dX/du at (x, t) given the noise prediction eps."""
        if self.kind == "sigma":
            return eps
        values = self._at(t)
        if values is not None:
            f, sigma, dsigma, dlambda = values.f, values.sigma, values.dsigma_dt, values.dlambda_dt
        else:
            f, sigma, dsigma, dlambda = (ops.real(fn(t)) for fn in (self.schedule.f, self.schedule.sigma,
                                                                     self.schedule.dsigma_dt, self.schedule.dlambda_dt))
        dx_dt = f * x + (dsigma - f * sigma) * eps
        return dx_dt if self.kind == "t" else dx_dt / dlambda
