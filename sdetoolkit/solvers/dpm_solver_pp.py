r"""DPM-Solver++ (Lu et al. 2022b, arXiv 2211.01095): data-prediction exponential integrators in lambda.

Faithful to ``LuChengTHU/dpm-solver`` ``dpm_solver_pytorch.py`` with ``algorithm_type="dpmsolver++"``. With
:math:`h = \lambda_t - \lambda_s`, :math:`\varphi_1 = e^{-h} - 1`, :math:`\varphi_2 = \varphi_1/h + 1`,
:math:`\varphi_3 = \varphi_2/h - \tfrac12` (the official recurrence; evaluated without its cancellation by
:func:`sdetoolkit.symbolic.phi.data_phis`), past outputs :math:`m_k` and ratios :math:`r_k` of past steps to h:

* 1: :math:`x_t = (\sigma_t/\sigma_s)x_s - \alpha_t\varphi_1 m_0`;
* 2M: adds :math:`-\tfrac12\alpha_t\varphi_1 D_0` (midpoint) or :math:`+\alpha_t\varphi_2 D_0` (heun),
  :math:`D_0 = (m_0 - m_1)/r_0`;
* 3M: :math:`x_t = (\sigma_t/\sigma_s)x_s - \alpha_t\varphi_1 m_0 + \alpha_t\varphi_2 D_1 - \alpha_t\varphi_3 D_2`
  with :math:`D_2 = (D_{1,0} - D_{1,1})/(r_0 + r_1) \approx \tfrac12 h^2 \hat x_0''`, while the exact integral's
  term is :math:`-\alpha_t h^2\varphi_3 \hat x_0''`: the official update is second order (see docs/findings.md).
  ``third_order_term="taylor"`` doubles :math:`D_2`, which restores third order;
* 2S (singlestep, :math:`r_1 = \tfrac12`): an intermediate point at :math:`\lambda_s + r_1 h`.

A step into sigma = 0 (h = inf) is first order, the denoiser itself (diffusers' ``final_sigmas_type="zero"``
rule; the official code never steps to sigma = 0, and the differences D would divide by r = 0). Warm-up uses orders
1 .. order-1; ``lower_order_final`` lowers the last steps' order on runs of fewer than 10 steps
(the official rule; diffusers uses 15).
"""

from __future__ import annotations

import math

from ..symbolic import ops
from ..symbolic.phi import data_phis
from .base import Claim, Param, Solver, integer, real

SOURCE = "Lu et al. 2022b (DPM-Solver++, arXiv 2211.01095), Sec. 4 and App. B"


class DPMSolverPPMultistep(Solver):
    """DPM-Solver++ 1, 2M and 3M (multistep, one evaluation per step), data prediction."""

    name = "dpmpp-multistep"
    family = "dpm-solver++"
    parameterisation = "x0"
    history = 2
    citation = SOURCE
    params = {
        "order": Param(2, "multistep order", choices=(1, 2, 3)),
        "solver_type": Param("midpoint", "second-order correction of 2M", choices=("midpoint", "heun")),
        "third_order_term": Param("official", "3M's second-difference term: 'official' as coded, or 'taylor' with "
                                  "the factor 2 the Taylor expansion needs", choices=("official", "taylor")),
        "lower_order_final": Param(True, "lower the order of the final steps", choices=(True, False)),
        "lower_order_final_below": Param(10, "apply lower_order_final only below this many steps",
                                         check=integer(1)),
    }
    variants = {"dpmpp-1": dict(order=1), "dpmpp-2m": dict(order=2), "dpmpp-2m-heun": dict(order=2,
                solver_type="heun"), "dpmpp-3m": dict(order=3),
                "dpmpp-3m-taylor": dict(order=3, third_order_term="taylor")}

    def claimed(self) -> Claim:
        return Claim(self.order, "global", SOURCE)

    def step(self, state):
        t, t_next = state.t, state.t_next
        lam, lam_next = state.lam(t), state.lam(t_next)
        h = lam_next - lam
        phi_1, phi_2, phi_3 = data_phis(h)
        alpha_next = state.alpha(t_next)
        m0 = state.current()
        x = (state.sigma(t_next) / state.sigma(t)) * state.x - alpha_next * phi_1 * m0
        if state.order == 1 or h == math.inf:
            return x
        prev1 = state.history[0]
        r0 = (lam - prev1.lam) / h
        d1_0 = (m0 - prev1.output) / r0
        if state.order == 2:
            if self.solver_type == "midpoint":
                return x - 0.5 * alpha_next * phi_1 * d1_0
            return x + alpha_next * phi_2 * d1_0
        prev2 = state.history[1]
        r1 = (prev1.lam - prev2.lam) / h
        d1_1 = (prev1.output - prev2.output) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1) * (2.0 if self.third_order_term == "taylor" else 1.0)
        return x + alpha_next * phi_2 * d1 - alpha_next * phi_3 * d2


class DPMSolverPP2S(Solver):
    """DPM-Solver++(2S): singlestep second order, two evaluations per step, data prediction."""

    name = "dpmpp-2s"
    family = "dpm-solver++"
    parameterisation = "x0"
    nfe_per_step = 2
    citation = SOURCE
    claim = Claim(2, "global", SOURCE)
    params = {"r1": Param(0.5, "position of the intermediate point in lambda", check=real(0.0, 1.0, open_low=True))}

    def step(self, state):
        t, t_next = state.t, state.t_next
        lam, lam_next = state.lam(t), state.lam(t_next)
        h = lam_next - lam
        lam_mid = lam + self.r1 * h
        t_mid = state.t_of_lam(lam_mid)
        sigma = state.sigma(t)
        m0 = state.current()
        u = (state.sigma(t_mid) / sigma) * state.x - state.alpha(t_mid) * ops.expm1(-self.r1 * h) * m0
        m_mid = state.evaluate(u, t_mid)
        alpha_next, phi_1 = state.alpha(t_next), ops.expm1(-h)
        return ((state.sigma(t_next) / sigma) * state.x - alpha_next * phi_1 * m0
                - (alpha_next * phi_1 / (2 * self.r1)) * (m_mid - m0))
