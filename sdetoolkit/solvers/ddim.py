r"""DDIM, deterministic (eta = 0): Song, Meng & Ermon 2021; ``diffusers`` ``DDIMScheduler.step``.

From s to t: :math:`\hat x_0 = (x_s - \sigma_s\hat\varepsilon)/\alpha_s`, then
:math:`x_t = \alpha_t\hat x_0 + \sigma_t\hat\varepsilon`. It equals DPM-Solver-1 (Lu et al. 2022, Sec. 4.1), the
exponential-integrator Euler step in lambda, which is why its claimed order is one.
"""

from __future__ import annotations

from .base import Claim, Solver


class DDIM(Solver):
    """DDIM with eta = 0, noise prediction."""

    name = "ddim"
    family = "ddim"
    parameterisation = "eps"
    citation = "Song, Meng & Ermon 2021, Denoising Diffusion Implicit Models, eq. 12 with sigma_t = 0"
    claim = Claim(1, "global", "Lu et al. 2022 (DPM-Solver, arXiv 2206.00927), Sec. 4.1: DDIM is DPM-Solver-1")

    def step(self, state):
        eps = state.current()
        x0 = (state.x - state.sigma(state.t) * eps) / state.alpha(state.t)
        return state.alpha(state.t_next) * x0 + state.sigma(state.t_next) * eps
