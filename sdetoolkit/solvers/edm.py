r"""EDM's deterministic sampler (Karras et al. 2022, Alg. 1; ``NVlabs/edm`` ``generate.py::edm_sampler``).

It integrates :math:`\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = (\tilde x - D(\tilde x; \tilde\sigma))/\tilde\sigma`
for the scaled state :math:`\tilde x = x/\alpha` in :math:`\tilde\sigma = \sigma/\alpha` (eq. 4), D being the
denoiser (x0 prediction): an Euler step, then (order 2) the trapezoidal Heun correction, which is skipped on a final
step to :math:`\tilde\sigma = 0` exactly as the official code does. Stochastic churn belongs to the stochastic
samplers.
"""

from __future__ import annotations

from ..symbolic import ops
from .base import Claim, Param, Solver


class EDMSampler(Solver):
    """EDM Euler (order 1) or Heun (order 2) in sigma, data prediction."""

    name = "edm"
    family = "edm"
    parameterisation = "x0"
    citation = "Karras et al. 2022, Elucidating the Design Space of Diffusion-Based Generative Models, Alg. 1"
    params = {"order": Param(2, "1: Euler, 2: Heun (trapezoidal correction)", choices=(1, 2))}
    variants = {"edm-euler": dict(order=1), "edm-heun": dict(order=2)}

    @property
    def nfe_per_step(self) -> int:
        return self.order

    def claimed(self) -> Claim:
        return Claim(self.order, "global", "Karras et al. 2022, Sec. 3 (Heun's 2nd-order method)")

    def expected_nfe(self, times) -> int:
        """One per step, plus one per Heun correction; none on a final step to sigma = 0."""
        steps = len(times) - 1
        return steps if self.order == 1 else 2 * steps - (1 if float(times[-1]) == 0.0 else 0)

    def step(self, state):
        sched = state.schedule
        alpha, alpha_next = state.alpha(state.t), state.alpha(state.t_next)
        s, s_next = ops.real(sched.sigma_over_alpha(state.t)), ops.real(sched.sigma_over_alpha(state.t_next))
        x_tilde = state.x / alpha
        d = (x_tilde - state.current()) / s
        x_next = x_tilde + (s_next - s) * d
        if self.order == 2 and s_next > 0:
            d_next = (x_next - state.evaluate(alpha_next * x_next, state.t_next)) / s_next
            x_next = x_tilde + (s_next - s) * 0.5 * (d + d_next)
        return alpha_next * x_next
