r"""EDM's stochastic sampler (Karras et al. 2022, Alg. 2; ``NVlabs/edm`` ``generate.py::edm_sampler``).

In EDM's sigma :math:`\tilde\sigma = \sigma/\alpha` and the scaled state :math:`\tilde x = x/\alpha` (the general
formulation of eq. 4 / ``ablation_sampler`` with scaling :math:`s(t) = \alpha`, where the churn reads
:math:`\hat x/s(\hat t) = x/s(t) + \sqrt{\hat\sigma^2 - \tilde\sigma^2}\,S_{noise}z`), on any schedule:

1. :math:`\gamma = \min(S_{churn}/N, \sqrt2 - 1)` if :math:`S_{tmin} \le \tilde\sigma \le S_{tmax}`, else 0
   (N = number of steps of the grid);
2. :math:`\hat\sigma = (1 + \gamma)\tilde\sigma`,
   :math:`\hat x = \tilde x + \sqrt{\hat\sigma^2 - \tilde\sigma^2}\,S_{noise}\,z`;
3. Euler from :math:`\hat\sigma` to :math:`\tilde\sigma_{next}` with
   :math:`d = (\hat x - D(\hat x;\hat\sigma))/\hat\sigma`, then (order 2) the Heun correction, skipped on a
   final step to :math:`\tilde\sigma = 0` as in the official code.

With :math:`S_{churn} = 0` no noise is drawn and this is ``edm-heun`` (``edm-euler`` for order 1). The model is
evaluated at the time :math:`\hat t` whose EDM sigma is :math:`\hat\sigma`. The official code does not clamp
:math:`\hat t` (its networks accept any sigma); where :math:`\hat\sigma` exceeds the schedule's largest sigma the step
raises (lower ``S_tmax`` below the grid's first sigma, or widen the schedule) rather than silently change γ.

**Noise.** The churn stands for the Langevin part of EDM's SDE (eq. 6) over the step, so its normal is keyed on
the step [t_next, t]: with a Brownian path it is the step's normalised increment, and grids that refine each other
share one path.

Defaults: the official recommended stochastic setting (README, ImageNet-64: ``S_churn=40, S_min=0.05, S_max=50,
S_noise=1.003``); ``generate.py``'s own defaults (``S_churn=0``) give the deterministic sampler.
"""

from __future__ import annotations

import math

from .base import Claim, Param, Solver, real
from .edm import edm_step


class EDMStochastic(Solver):
    """EDM stochastic sampler (churn + Euler/Heun in sigma), data prediction."""

    name = "edm-stochastic"
    family = "edm"
    parameterisation = "x0"
    stochastic = True
    citation = "Karras et al. 2022, Elucidating the Design Space of Diffusion-Based Generative Models, Alg. 2"
    claim = Claim(None, "none", "Karras et al. 2022 state no convergence order for the stochastic sampler")
    params = {
        "order": Param(2, "1: Euler, 2: Heun (trapezoidal correction)", choices=(1, 2)),
        "S_churn": Param(40.0, "stochasticity strength", check=real(0.0, finite=False)),
        "S_tmin": Param(0.05, "smallest EDM sigma that is churned", check=real(0.0, finite=False)),
        "S_tmax": Param(50.0, "largest EDM sigma that is churned (inf allowed)", check=real(0.0, finite=False)),
        "S_noise": Param(1.003, "noise inflation", check=real(0.0, finite=False)),
    }
    variants = {"edm-stochastic-euler": dict(order=1)}

    @property
    def nfe_per_step(self) -> int:
        return self.order

    def expected_nfe(self, times) -> int:
        """One per step, plus one per Heun correction; none on a final step to sigma = 0."""
        steps = len(times) - 1
        return steps if self.order == 1 else 2 * steps - (1 if float(times[-1]) == 0.0 else 0)

    def gamma(self, sigma: float, n_steps: int) -> float:
        if self.S_tmin <= sigma <= self.S_tmax:
            return min(self.S_churn / n_steps, math.sqrt(2.0) - 1.0)
        return 0.0

    def step(self, state):
        sched = state.schedule
        alpha, alpha_next = state.alpha(state.t), state.alpha(state.t_next)
        s, s_next = float(sched.sigma_over_alpha(state.t)), float(sched.sigma_over_alpha(state.t_next))
        x_tilde = state.x / alpha
        gamma = self.gamma(s, state.n_steps)
        if gamma > 0:
            s_hat = s + gamma * s
            top = float(sched.sigma_over_alpha(sched.t_hi))
            if s_hat > top:
                raise ValueError(f"S_tmax: the churned sigma {s_hat:.6g} at t = {state.t:.6g} exceeds the schedule's "
                                 f"largest sigma {top:.6g} ({sched!r}); lower S_tmax below {top / (1 + gamma):.6g} or "
                                 f"widen the schedule")
            t_hat = state.t_of_lam(-math.log(s_hat))
            x_hat = x_tilde + math.sqrt(s_hat**2 - s**2) * self.S_noise * state.normal()
            x_next = edm_step(state, x_hat, t_hat, s_hat, state.t_next, s_next, self.order)
        else:
            x_next = edm_step(state, x_tilde, state.t, s, state.t_next, s_next, self.order, denoised=state.current())
        return alpha_next * x_next
