r"""SDE-DPM-Solver++ 1/2M/3M and the k-diffusion eta variants; SDE-DPM-Solver (noise form, diffusers).

**The eta-SDE.** For :math:`\eta \ge 0` the reverse SDE
:math:`\mathrm{d}x = [f x - \tfrac{1+\eta}{2} g^2 \nabla\log p]\,\mathrm{d}t + \sqrt{\eta}\,g\,\mathrm{d}\bar W`
has the marginals of the data for every :math:`\eta` (:math:`\eta = 0` is the PF-ODE, :math:`\eta = 1` the reverse
SDE of Score-SDE). With :math:`\nabla\log p = -(x - \alpha\hat x_0)/\sigma^2` and :math:`g^2/(2\sigma^2) =
-\dot\lambda`, its linear part is :math:`(f - (1+\eta)\dot\lambda)x`, with transition
:math:`(\sigma_t/\sigma_u)e^{-\eta(\lambda_t - \lambda_u)}`, so from s to t (:math:`h = \lambda_t - \lambda_s`)

.. math:: x_t = \frac{\sigma_t}{\sigma_s}e^{-\eta h}x_s
          + \alpha_t\int_{\lambda_s}^{\lambda_t}(1+\eta)e^{-(1+\eta)(\lambda_t-\lambda)}\hat x_0\,\mathrm{d}\lambda
          + \sigma_t e^{-\eta\lambda_t}\int_t^s K_\eta\,\mathrm{d}\bar W,
   \qquad K_\eta(u) = \sqrt{\eta}\,g(u)\,e^{\eta\lambda(u)}/\sigma(u).

The noise has variance :math:`\sigma_t^2(1 - e^{-2\eta h})`, the k-diffusion form. :func:`eta_data_kernel` is
:math:`K_\eta`; at :math:`\eta = 1` it is :func:`sdetoolkit.noise.data_prediction_kernel`. The same SDE with
:math:`\eta = \tau^2` is SA-Solver's (Xue et al. 2023, :mod:`.sa_solver`).

**Updates** (:math:`h_\eta = (1+\eta)h`, :math:`\varphi_1 = e^{-h_\eta} - 1`, :math:`\varphi_2 = \varphi_1/h_\eta
+ 1`, :math:`\varphi_3 = \varphi_2/h_\eta - \tfrac12`, past outputs :math:`m_k`, :math:`D_{1,0} = (m_0 - m_1)/r_0`,
:math:`D_1, D_2` the 3M differences of :mod:`.dpm_solver_pp`, :math:`\xi` the step's noise above):

* 1: :math:`x_t = (\sigma_t/\sigma_s)e^{-\eta h}x_s - \alpha_t\varphi_1 m_0 + \xi`. At :math:`\eta = 1` this is
  diffusers' ``dpm_solver_first_order_update`` (``algorithm_type="sde-dpmsolver++"``) and DDIM(eta = 1);
* 2M: adds :math:`-\tfrac12\alpha_t\varphi_1 D_{1,0}` (midpoint) or :math:`+\alpha_t\varphi_2 D_{1,0}` (heun):
  diffusers ``multistep_dpm_solver_second_order_update`` and k-diffusion ``sample_dpmpp_2m_sde``;
* 3M, ``third_order="k-diffusion"``: adds :math:`\alpha_t(\varphi_2 D_1 - \varphi_3 D_2)` (k-diffusion
  ``sample_dpmpp_3m_sde``; at :math:`\eta = 0` this is the ODE DPM-Solver++(3M) as officially coded);
* 3M, ``third_order="diffusers"`` (eta = 1 only): diffusers ``multistep_dpm_solver_third_order_update`` adds
  :math:`\alpha_t\varphi_2 D_1 + \alpha_t((1 - e^{-2h} - 2h)/(2h)^2 - \tfrac12)D_2`; that D2 weight is
  :math:`-\varphi_3 - 1`, one full :math:`\alpha_t D_2` below k-diffusion's (docs/findings.md).

A final step to :math:`\sigma = 0` returns :math:`\alpha_t m_0` (k-diffusion's "denoising step"; diffusers'
first-order step with ``final_sigmas_type="zero"`` gives the same). ``s_noise`` scales the noise (k-diffusion).
"""

from __future__ import annotations

import math

from ..noise import Kernel, data_prediction_kernel, noise_prediction_kernel
from ..symbolic.phi import data_phis
from .base import Claim, Param, Solver, integer, real

CITATION = ("Lu et al. 2022b (DPM-Solver++, arXiv 2211.01095); diffusers DPMSolverMultistepScheduler "
            "(algorithm_type 'sde-dpmsolver++' / 'sde-dpmsolver'); crowsonkb/k-diffusion sampling.py "
            "sample_dpmpp_2m_sde, sample_dpmpp_3m_sde")
CLAIM = Claim(None, "none", "Lu et al. 2022b (arXiv 2211.01095) and the diffusers / k-diffusion code state no "
              "convergence order for the SDE variants")


def eta_data_kernel(schedule, eta: float) -> Kernel:
    r""":math:`K_\eta(u) = \sqrt{\eta}\,g(u)e^{\eta\lambda(u)}/\sigma(u)`, the noise kernel of the eta-SDE.

    The step's noise is :math:`\sigma_t e^{-\eta\lambda_t}\int K_\eta\,\mathrm{d}\bar W`, of variance
    :math:`\sigma_t^2(1 - e^{-2\eta h})`. At :math:`\eta = 1` this returns :func:`data_prediction_kernel` itself.
    """
    eta = float(eta)
    if not eta > 0:
        raise ValueError(f"eta: the kernel needs eta > 0, got {eta}")
    if eta == 1.0:
        return data_prediction_kernel(schedule)
    root = math.sqrt(eta)
    return Kernel(f"sqrt(eta)*g*exp(eta*lambda)/sigma[eta={eta!r}][{schedule!r}]",
                  lambda u: root * schedule.g2(u).sqrt() * (eta * schedule.lam(u)).exp() / schedule.sigma(u),
                  schedule)


def eta_noise(state, eta: float, t_hi: float, t_lo: float):
    r""":math:`e^{-\eta\lambda(t_{lo})}\int_{t_{lo}}^{t_{hi}} K_\eta\,\mathrm{d}\bar W` (multiply by
    :math:`\sigma(t_{lo})` for the exact noise of the eta-SDE over [t_lo, t_hi])."""
    (integral,) = state.integrals((eta_data_kernel(state.schedule, eta),), t_hi, t_lo)
    return math.exp(-eta * state.lam(t_lo)) * integral


class SDEDPMSolverPP(Solver):
    """SDE-DPM-Solver++ 1/2M/3M (data prediction, multistep, one evaluation per step), with eta and s_noise."""

    name = "sde-dpmpp-multistep"
    family = "dpm-solver++"
    parameterisation = "x0"
    stochastic = True
    history = 2
    citation = CITATION
    claim = CLAIM
    params = {
        "order": Param(2, "multistep order (diffusers solver_order default 2)", choices=(1, 2, 3)),
        "solver_type": Param("midpoint", "correction of the second-order step", choices=("midpoint", "heun")),
        "eta": Param(1.0, "eta of the eta-SDE: noise sigma_t sqrt(1 - e^(-2 eta h)); 0 is the ODE (k-diffusion)",
                     check=real(0.0)),
        "s_noise": Param(1.0, "noise scale (k-diffusion)", check=real(0.0)),
        "third_order": Param("diffusers", "3M's D2 weight: 'diffusers' as coded (eta = 1 only) or 'k-diffusion'",
                             choices=("diffusers", "k-diffusion")),
        "lower_order_final": Param(True, "lower the order of the final steps (diffusers; k-diffusion: no)",
                                   choices=(True, False)),
        "lower_order_final_below": Param(15, "apply lower_order_final only below this many steps (diffusers: 15)",
                                         check=integer(1)),
    }
    variants = {
        "sde-dpmpp-1": dict(order=1),
        "sde-dpmpp-2m": dict(order=2),
        "sde-dpmpp-2m-heun": dict(order=2, solver_type="heun"),
        "sde-dpmpp-3m": dict(order=3, third_order="diffusers"),
        "dpmpp-2m-sde": dict(order=2, solver_type="midpoint", lower_order_final=False),
        "dpmpp-2m-sde-heun": dict(order=2, solver_type="heun", lower_order_final=False),
        "dpmpp-3m-sde": dict(order=3, solver_type="heun", third_order="k-diffusion", lower_order_final=False),
    }

    def __init__(self, **params):
        super().__init__(**params)
        if self.order == 3 and self.third_order == "diffusers" and self.eta != 1.0:
            raise ValueError(f"eta: diffusers codes the SDE 3M update for eta = 1 only, got eta = {self.eta}; "
                             "use third_order='k-diffusion'")
        if self.eta == 0 or self.s_noise == 0:
            self.stochastic = False          # no noise: an ODE solver (eta = 0 is DPM-Solver++ 1/2M/3M)

    def step(self, state):
        t, t_next = state.t, state.t_next
        m0 = state.current()
        alpha_next, sigma_next = state.alpha(t_next), state.sigma(t_next)
        if sigma_next == 0.0:
            return alpha_next * m0
        lam, lam_next = state.lam(t), state.lam(t_next)
        h = lam_next - lam
        eta = self.eta
        h_eta = (1.0 + eta) * h
        phi_1, phi_2, phi_3 = data_phis(h_eta)
        x = (sigma_next / state.sigma(t) * math.exp(-eta * h)) * state.x - (alpha_next * phi_1) * m0
        if state.order >= 2:
            prev1 = state.history[0]
            r0 = (lam - prev1.lam) / h
            d1_0 = (m0 - prev1.output) / r0
            if state.order == 2:
                if self.solver_type == "midpoint":
                    x = x - (0.5 * alpha_next * phi_1) * d1_0
                else:
                    x = x + (alpha_next * phi_2) * d1_0
            else:
                prev2 = state.history[1]
                r1 = (prev1.lam - prev2.lam) / h
                d1_1 = (prev1.output - prev2.output) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                if self.third_order == "k-diffusion":
                    d2_weight = -phi_3
                else:  # diffusers codes (1 - e^{-2h} - 2h)/(2h)^2 - 1/2, which is -phi_3(2h) - 1
                    d2_weight = -data_phis(2.0 * h)[2] - 1.0
                x = x + (alpha_next * phi_2) * d1 + (alpha_next * d2_weight) * d2
        if eta > 0 and self.s_noise > 0:
            x = x + (self.s_noise * sigma_next) * eta_noise(state, eta, t, t_next)
        return x


class SDEDPMSolver(Solver):
    r"""SDE-DPM-Solver 1/2M, noise prediction (diffusers ``algorithm_type="sde-dpmsolver"``, deprecated there).

    The reverse SDE with :math:`\nabla\log p = -\hat\varepsilon/\sigma` has linear part :math:`f x`; from s to t
    (:math:`E = e^h - 1`): 1: :math:`x_t = (\alpha_t/\alpha_s)x_s - 2\sigma_t E\hat\varepsilon_s + \xi`;
    2M adds :math:`-\sigma_t E D_{1,0}` (midpoint) or :math:`-2\sigma_t(E/h - 1)D_{1,0}` (heun). The noise
    :math:`\xi = \alpha_t\int K\,\mathrm{d}\bar W` with :func:`noise_prediction_kernel`, variance
    :math:`\sigma_t^2(e^{2h} - 1)`. A final step to :math:`\sigma = 0` returns :math:`\hat x_0` (the limit).
    """

    name = "sde-dpm-solver-multistep"
    family = "dpm-solver"
    parameterisation = "eps"
    stochastic = True
    history = 1
    citation = CITATION
    claim = CLAIM
    params = {
        "order": Param(2, "multistep order (diffusers codes 1 and 2 for sde-dpmsolver)", choices=(1, 2)),
        "solver_type": Param("midpoint", "correction of the second-order step", choices=("midpoint", "heun")),
        "lower_order_final": Param(True, "lower the order of the final steps", choices=(True, False)),
        "lower_order_final_below": Param(15, "apply lower_order_final only below this many steps (diffusers: 15)",
                                         check=integer(1)),
    }
    variants = {"sde-dpm-solver-1": dict(order=1), "sde-dpm-solver-2m": dict(order=2),
                "sde-dpm-solver-2m-heun": dict(order=2, solver_type="heun")}

    def step(self, state):
        t, t_next = state.t, state.t_next
        eps = state.current()
        alpha, alpha_next, sigma_next = state.alpha(t), state.alpha(t_next), state.sigma(t_next)
        if sigma_next == 0.0:
            return alpha_next * (state.x - state.sigma(t) * eps) / alpha
        lam = state.lam(t)
        h = state.lam(t_next) - lam
        e = math.expm1(h)
        x = (alpha_next / alpha) * state.x - (2.0 * sigma_next * e) * eps
        if state.order == 2:
            prev = state.history[0]
            d1_0 = (eps - prev.output) / ((lam - prev.lam) / h)
            if self.solver_type == "midpoint":
                x = x - (sigma_next * e) * d1_0
            else:
                x = x - (2.0 * sigma_next * (e / h - 1.0)) * d1_0
        (integral,) = state.integrals((noise_prediction_kernel(state.schedule),))
        return x + alpha_next * integral
