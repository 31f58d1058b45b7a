r"""DDIM(η): Song, Meng & Ermon 2021, eqs. 12 and 16; ``diffusers`` ``DDIMScheduler.step`` (``eta``).

From t to t_next, with :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/\alpha` and :math:`\bar\alpha = \alpha^2`:

.. math:: \sigma_\eta = \eta\sqrt{\frac{1 - \bar\alpha_{prev}}{1 - \bar\alpha}}\sqrt{1 - \frac{\bar\alpha}
          {\bar\alpha_{prev}}} = \eta\,\sigma_{next}\sqrt{1 - e^{-2h}},\qquad
          x_{next} = \alpha_{next}\hat x_0 + \sqrt{\sigma_{next}^2 - \sigma_\eta^2}\,\hat\varepsilon + \sigma_\eta z,

the second form (h = λ_next − λ) holding on every schedule and equal to the first on VP ones. η = 0 is the
deterministic ``ddim``; η = 1 is DDPM's posterior step with variance β̃ (the DDIM paper, Sec. 4.1) and
SDE-DPM-Solver++1. diffusers' default ``eta = 0.0`` is the registered ``ddim``; this solver defaults to η = 1. The
noise is η times the step's exact stochastic integral with the data-prediction kernel (the η = 1 noise, shared with
``ddpm``), so a Brownian path drives every η consistently. No noise on a step to σ = 0 (σ_η = 0 there).
"""

from __future__ import annotations

import math

from .base import Claim, Param, Solver, real
from .ddpm import log_snr_step, small_noise


class DDIMEta(Solver):
    r"""DDIM with stochasticity η, noise prediction."""

    name = "ddim-eta"
    family = "ddim"
    parameterisation = "eps"
    stochastic = True
    citation = "Song, Meng & Ermon 2021, Denoising Diffusion Implicit Models, eqs. 12 and 16; diffusers DDIMScheduler"
    claim = Claim(None, "none", "Song et al. 2021 state no convergence order for eta > 0")
    params = {"eta": Param(1.0, "stochasticity: 0 is DDIM, 1 is DDPM's posterior variance",
                           check=real(0.0))}

    def step(self, state):
        eps = state.current()
        x0 = (state.x - state.sigma(state.t) * eps) / state.alpha(state.t)
        sigma_next = state.sigma(state.t_next)
        if self.eta == 0 or sigma_next == 0:
            return state.alpha(state.t_next) * x0 + sigma_next * eps
        fraction = -math.expm1(-2.0 * log_snr_step(state))
        keep = 1.0 - self.eta**2 * fraction
        if keep < 0:
            raise ValueError(f"eta: {self.eta} makes sigma_eta exceed sigma_next on the step t = {state.t} -> "
                             f"{state.t_next} (needs eta^2 (1 - exp(-2h)) <= 1)")
        return (state.alpha(state.t_next) * x0 + sigma_next * math.sqrt(keep) * eps
                + self.eta * small_noise(state))
