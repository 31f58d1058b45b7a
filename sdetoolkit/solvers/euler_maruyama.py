r"""Euler–Maruyama on the reverse SDE, plain and with the linear drift integrated exactly.

The reverse SDE (Anderson 1982; Song et al. 2021, Score-SDE, eq. 6), run from t down to t_next < t:

.. math:: \mathrm{d}x = [f(t)x - g(t)^2\nabla\log p_t(x)]\,\mathrm{d}t + g(t)\,\mathrm{d}\bar W.

* ``euler-maruyama``: :math:`x_{next} = x + [f x - g^2 s]\,(t_{next} - t) + g\,\Delta W`, everything frozen at the
  current (larger) time, :math:`\Delta W` the plain increment of the path over [t_next, t] (Kloeden & Platen 1992,
  eq. 9.1.3; ``yang-song/score_sde_pytorch`` ``sampling.py::EulerMaruyamaPredictor``, which uses dt = -1/N instead of
  the grid's own spacing; here the grid's spacing is used, so any grid works).
* ``exp-euler-maruyama``: the linear part :math:`f x` is integrated exactly and the score is frozen at the current
  point (the "exponential integrator" discretisation of the reverse SDE, Zhang & Chen 2023, DEIS, arXiv
  2204.13902, Sec. 3, with the score, not the noise prediction, held constant). By variation of constants,

  .. math:: x_{next} = \frac{\alpha_{next}}{\alpha}x + \Big(\alpha_{next}\int_{t_{next}}^{t}\frac{g^2}{\alpha}\,
            \mathrm{d}u\Big)s + \alpha_{next}\int_{t_{next}}^{t}\frac{g}{\alpha}\,\mathrm{d}\bar W,

  whose noise is the exact stochastic integral of :func:`~sdetoolkit.noise.noise_prediction_kernel` (variance
  :math:`\sigma_{next}^2(e^{2h} - 1)`). With :math:`g^2 = -2\sigma^2\,\mathrm{d}\lambda/\mathrm{d}t` and
  :math:`\sigma = \alpha e^{-\lambda}` the drift coefficient is :math:`2\alpha_{next}\int\alpha e^{-2\lambda}\,
  \mathrm{d}\lambda`: :math:`2(\alpha_{next}/\alpha - 1)` on VP schedules, :math:`\sigma^2 - \sigma_{next}^2` on VE
  ones (where this step is Score-SDE's reverse-diffusion predictor), computed here by Gauss–Legendre quadrature in
  :math:`\lambda` for any schedule (:func:`drift_integral`). A final step to :math:`\sigma = 0` is deterministic:
  the kernel has no finite integral in :math:`\lambda` there.
"""

from __future__ import annotations

import math

import torch

from ..noise import lambda_nodes, noise_prediction_kernel
from .base import Claim, Solver

TAIL = 20.0
r"""Log-SNR span integrated when the step ends at :math:`\sigma = 0`; the neglected tail is below :math:`e^{-40}`
of the integral (the integrand is :math:`\le 2\max\alpha\, e^{-2\lambda}`)."""

def drift_integral(schedule, t_hi: float, t_lo: float) -> float:
    r""":math:`\int_{t_{lo}}^{t_{hi}} g(u)^2/\alpha(u)\,\mathrm{d}u = 2\int_{\lambda(t_{hi})}^{\lambda(t_{lo})}
    \alpha\,e^{-2\lambda}\,\mathrm{d}\lambda`, by the Gauss–Legendre panels in log-SNR of
    :func:`~sdetoolkit.noise.lambda_nodes`."""
    lam_hi = float(schedule.lam(t_hi))
    lam_lo = float(schedule.lam(t_lo))
    end = lam_lo if math.isfinite(lam_lo) else lam_hi + TAIL
    lam, weight = (v[0] for v in lambda_nodes(torch.tensor([lam_hi], dtype=torch.float64),
                                               torch.tensor([end], dtype=torch.float64)))
    t = schedule.t_of_lambda(lam).clamp(t_lo, t_hi)
    return float((2.0 * schedule.alpha(t) * torch.exp(-2.0 * lam) * weight).sum())


def euler_maruyama_update(state, x: torch.Tensor, score: torch.Tensor, noise: bool = True) -> torch.Tensor:
    r"""One Euler–Maruyama step of the reverse SDE from (x, state.t) to state.t_next, given the score at (x, t)."""
    t, t_next = state.t, state.t_next
    f, g2 = float(state.schedule.f(t)), float(state.schedule.g2(t))
    x_next = x + (f * x - g2 * score) * (t_next - t)
    if noise:
        (dw,) = state.integrals((None,))
        x_next = x_next + math.sqrt(g2) * dw
    return x_next


class EulerMaruyama(Solver):
    r"""Euler–Maruyama on the reverse SDE in t (score parameterisation)."""

    name = "euler-maruyama"
    family = "euler-maruyama"
    parameterisation = "score"
    stochastic = True
    citation = ("Kloeden & Platen 1992, Numerical Solution of SDEs, Sec. 9.1 and 10.2; Song et al. 2021, Score-SDE, "
                "EulerMaruyamaPredictor")
    claim = Claim(0.5, "strong", "Kloeden & Platen 1992, Thm. 10.2.2")

    def claims(self) -> tuple[Claim, ...]:
        return (self.claim, Claim(1, "weak", "Kloeden & Platen 1992, Thm. 14.1.5"))

    def step(self, state):
        return euler_maruyama_update(state, state.x, state.current())


class ExponentialEulerMaruyama(Solver):
    r"""Euler–Maruyama with the linear drift :math:`f x` integrated exactly and the score frozen over the step."""

    name = "exp-euler-maruyama"
    family = "euler-maruyama"
    parameterisation = "score"
    stochastic = True
    citation = ("Zhang & Chen 2023, DEIS, arXiv 2204.13902, Sec. 3 (exponential integrator, score frozen); exact "
                "noise as in Lu et al. 2022, DPM-Solver, arXiv 2206.00927")
    claim = Claim(None, "none", "Zhang & Chen 2023 (DEIS) state no convergence order for the stochastic exponential "
                                "integrator")

    def step(self, state):
        t, t_next = state.t, state.t_next
        alpha, alpha_next = state.alpha(t), state.alpha(t_next)
        score = state.current()
        x_next = (alpha_next / alpha) * state.x + alpha_next * drift_integral(state.schedule, t, t_next) * score
        if state.sigma(t_next) > 0:
            (integral,) = state.integrals((noise_prediction_kernel(state.schedule),))
            x_next = x_next + alpha_next * integral
        return x_next
