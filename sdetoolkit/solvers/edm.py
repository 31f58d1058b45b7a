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


def edm_step(state, x_tilde, t, s, t_next, s_next, order: int = 2, denoised=None):
    r"""One EDM Euler (order 1) or Heun (order 2) step on :math:`\tilde x = x/\alpha` in :math:`s = \sigma/\alpha`,
    from (t, s) to (t_next, s_next): :math:`d = (\tilde x - D(\tilde x))/s`, with the trapezoidal correction
    skipped on a step to s = 0 (Karras et al. 2022, Alg. 1). ``denoised`` is :math:`D` at (x_tilde, t) if known."""
    if denoised is None:
        denoised = state.evaluate(state.alpha(t) * x_tilde, t)
    d = (x_tilde - denoised) / s
    x_next = x_tilde + (s_next - s) * d
    if order == 2 and s_next > 0:
        d_next = (x_next - state.evaluate(state.alpha(t_next) * x_next, t_next)) / s_next
        x_next = x_tilde + (s_next - s) * 0.5 * (d + d_next)
    return x_next

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
        s, s_next = ops.real(sched.sigma_over_alpha(state.t)), ops.real(sched.sigma_over_alpha(state.t_next))
        x_tilde = edm_step(state, state.x / state.alpha(state.t), state.t, s, state.t_next, s_next, self.order,
                           denoised=state.current())
        return state.alpha(state.t_next) * x_tilde
