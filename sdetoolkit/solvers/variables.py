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

import torch

from ..symbolic import ops

VARIABLES = ("t", "sigma", "lambda")


class IntegrationVariable:
    """Maps between time t and a variable u, between x and the integrated state X, and gives dX/du from eps."""

    def __init__(self, kind: str, schedule):
        if kind not in VARIABLES:
            raise ValueError(f"variable: expected one of {VARIABLES}, got {kind!r}")
        self.kind, self.schedule = kind, schedule

    def u(self, t: float) -> float:
        if self.kind == "t":
            return t
        lam = ops.real(self.schedule.lam(t))
        return ops.exp(-lam) if self.kind == "sigma" else lam

    def t(self, u: float) -> float:
        if self.kind == "t":
            return u
        lam = -ops.log(u) if self.kind == "sigma" else u
        return ops.real(self.schedule.t_of_lambda(lam))

    def state(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return x / ops.real(self.schedule.alpha(t)) if self.kind == "sigma" else x

    def x(self, state: torch.Tensor, t: float) -> torch.Tensor:
        return state * ops.real(self.schedule.alpha(t)) if self.kind == "sigma" else state

    def velocity(self, x: torch.Tensor, t: float, eps: torch.Tensor) -> torch.Tensor:
        """dX/du at (x, t) given the noise prediction eps."""
        if self.kind == "sigma":
            return eps
        f, sigma, dsigma = (ops.real(fn(t)) for fn in (self.schedule.f, self.schedule.sigma, self.schedule.dsigma_dt))
        dx_dt = f * x + (dsigma - f * sigma) * eps
        return dx_dt if self.kind == "t" else dx_dt / ops.real(self.schedule.dlambda_dt(t))
