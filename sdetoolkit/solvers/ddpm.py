r"""DDPM ancestral sampling in two forms, written for a continuous time grid.

**From discrete DDPM to a grid.** A DDPM chain has :math:`\bar\alpha_i = \prod_{j \le i}(1 - \beta_j)`; a step from
timestep i to its predecessor uses only :math:`\bar\alpha_i`, :math:`\bar\alpha_{prev}` and
:math:`\beta = 1 - \bar\alpha_i/\bar\alpha_{prev}` (``diffusers`` ``DDPMScheduler.step``'s ``current_beta_t``,
whatever the timestep spacing). On a grid of a schedule, a step from t to t_next < t takes
:math:`\bar\alpha_i = \alpha(t)^2`, :math:`\bar\alpha_{prev} = \alpha(t_{next})^2` and
:math:`\beta = 1 - (\alpha(t)/\alpha(t_{next}))^2`; on the grid whose :math:`\alpha(t)^2` are a discrete chain's
:math:`\bar\alpha` (ending at :math:`\bar\alpha_{-1} = 1`, i.e. :math:`\sigma = 0`) the steps are the discrete ones.

* ``ddpm`` (the posterior form; Ho et al. 2020, eqs. 6–7; ``diffusers`` ``DDPMScheduler.step`` with
  ``prediction_type="epsilon"``): :math:`\hat x_0 = (x - \sigma\hat\varepsilon)/\alpha`, then
  :math:`x_{next} = \frac{\sqrt{\bar\alpha_{prev}}\,\beta}{1 - \bar\alpha}\hat x_0
  + \frac{\sqrt{1-\beta}\,(1 - \bar\alpha_{prev})}{1 - \bar\alpha}x + \text{std}\cdot z`, with
  ``variance="fixed_small"`` :math:`\tilde\beta = \frac{1 - \bar\alpha_{prev}}{1 - \bar\alpha}\beta` (diffusers'
  default) or ``"fixed_large"`` :math:`\beta`, and no noise on a step to :math:`\sigma = 0` (diffusers adds noise only
  for t > 0). Written with :math:`1 - \bar\alpha = \sigma^2` and :math:`h = \lambda_{next} - \lambda`, this is the
  Gaussian posterior :math:`q(x_{next} \mid x, \hat x_0)` of any schedule (Kingma et al. 2021, VDM, eq. 16):
  :math:`x_{next} = \frac{\sigma_{next}}{\sigma}e^{-h}x + \alpha_{next}(1 - e^{-2h})\hat x_0 + \text{std}\cdot z`,
  :math:`\beta = \sigma^2(1 - e^{-2h})`, :math:`\tilde\beta = \sigma_{next}^2(1 - e^{-2h})`; it is used on every
  schedule (on VP ones it is diffusers' formula).
* ``score-sde-ancestral`` (the discretised-β form; ``yang-song/score_sde_pytorch`` ``sampling.py``
  ``AncestralSamplingPredictor``, which supports VP and VE SDEs only): VP
  :math:`x_{mean} = (x + \beta s)/\sqrt{1 - \beta}`, noise :math:`\sqrt\beta\,z`; VE
  :math:`x_{mean} = x + (\sigma^2 - \sigma_{next}^2)s`, noise
  :math:`\sqrt{\sigma_{next}^2(\sigma^2 - \sigma_{next}^2)/\sigma^2}\,z`. The official code takes
  :math:`\beta_i = \beta_{min}/N + i(\beta_{max} - \beta_{min})/(N(N-1))`, a first-order approximation of the ratio
  above, which is used here so that every grid and VP schedule works. Algebraically the VP form is ``ddpm`` with
  ``fixed_large`` and the VE form ``ddpm`` with ``fixed_small`` (tested to round-off). Score-SDE's sampler returns
  the last step's noise-free mean (``noise_removal = True``): ``denoise``.

**Noise.** The ``fixed_small`` noise is the step's exact stochastic integral
:math:`\sigma_{next}e^{-\lambda_{next}}\int K\,\mathrm{d}\bar W` with the data-prediction kernel (the step is then
SDE-DPM-Solver++1, Lu et al. 2022b), so that one Brownian path drives it consistently; the ``fixed_large`` noise, a
discretised-β (Euler-type) term, is :math:`\sqrt\beta` times the step's normalised plain increment.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..noise import data_prediction_kernel
from .base import Claim, Param, Solver

VARIANCES = ("fixed_small", "fixed_large")


@lru_cache(maxsize=64)
def schedule_kind(schedule) -> str | None:
    """'ve' where alpha = 1, 'vp' where alpha^2 + sigma^2 = 1 (checked on 257 times), else None."""
    t = torch.linspace(schedule.t_lo, schedule.t_hi, 257, dtype=torch.float64)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    if bool((alpha == 1).all()):
        return "ve"
    if float((alpha**2 + sigma**2 - 1).abs().max()) <= 1e-12:
        return "vp"
    return None


def log_snr_step(state) -> float:
    """h = lambda(t_next) - lambda(t) > 0 (inf on a step to sigma = 0)."""
    if state.sigma(state.t_next) == 0:
        return math.inf
    return state.lam(state.t_next) - state.lam(state.t)


def vp_beta(state) -> float:
    r""":math:`\beta = 1 - (\alpha/\alpha_{next})^2` of the step (the discrete DDPM :math:`\beta` on a VP grid)."""
    return -math.expm1(2.0 * math.log(state.alpha(state.t) / state.alpha(state.t_next)))


def small_noise(state) -> torch.Tensor:
    r"""The posterior (``fixed_small``) noise :math:`\sigma_{next}e^{-\lambda_{next}}\int K\,\mathrm{d}\bar W` with the
    data-prediction kernel: variance :math:`\sigma_{next}^2(1 - e^{-2h})`."""
    sigma_next = state.sigma(state.t_next)
    (integral,) = state.integrals((data_prediction_kernel(state.schedule),))
    return (sigma_next**2 / state.alpha(state.t_next)) * integral


def posterior_update(state, x: torch.Tensor, x0: torch.Tensor, variance: str, noise: bool = True) -> torch.Tensor:
    """The DDPM posterior step from (x, t) to t_next given the data prediction x0; no noise on a step to sigma = 0."""
    sigma, sigma_next = state.sigma(state.t), state.sigma(state.t_next)
    h = log_snr_step(state)
    one_minus = -math.expm1(-2.0 * h)
    x_next = (sigma_next / sigma) * math.exp(-h) * x + state.alpha(state.t_next) * one_minus * x0
    if not noise or sigma_next == 0:
        return x_next
    if variance == "fixed_small":
        return x_next + small_noise(state)
    return x_next + sigma * math.sqrt(one_minus) * state.normal()


def ancestral_update(state, x: torch.Tensor, score: torch.Tensor, noise: bool = True) -> torch.Tensor:
    """Score-SDE's ancestral predictor (VP or VE form by schedule) from (x, t) to t_next, given the score at (x, t)."""
    kind = schedule_kind(state.schedule)
    if kind is None:
        raise ValueError(f"schedule: Score-SDE's ancestral sampling supports VP and VE schedules only, got "
                         f"{state.schedule!r}; use 'ddpm' (the posterior form) on other schedules")
    sigma, sigma_next = state.sigma(state.t), state.sigma(state.t_next)
    if kind == "vp":
        beta = vp_beta(state)
        x_next = (x + beta * score) / math.sqrt(1.0 - beta)
        if noise and sigma_next > 0:
            x_next = x_next + math.sqrt(beta) * state.normal()
        return x_next
    x_next = x + (sigma**2 - sigma_next**2) * score
    if noise and sigma_next > 0:
        x_next = x_next + small_noise(state)
    return x_next


class DDPM(Solver):
    r"""DDPM ancestral sampling, posterior (:math:`\bar\alpha`-ratio) form, noise prediction."""

    name = "ddpm"
    family = "ddpm"
    parameterisation = "eps"
    stochastic = True
    citation = "Ho, Jain & Abbeel 2020, Denoising Diffusion Probabilistic Models, eqs. 6-7; diffusers DDPMScheduler"
    claim = Claim(None, "none", "Ho et al. 2020 state no convergence order")
    params = {"variance": Param("fixed_small", "posterior variance: fixed_small (beta tilde) or fixed_large (beta), "
                                               "as diffusers' variance_type", choices=VARIANCES)}
    variants = {"ddpm-large": dict(variance="fixed_large")}

    def step(self, state):
        eps = state.current()
        x0 = (state.x - state.sigma(state.t) * eps) / state.alpha(state.t)
        return posterior_update(state, state.x, x0, self.variance)


class ScoreSDEAncestral(Solver):
    """Score-SDE's ancestral sampling predictor (discretised beta), score parameterisation, VP and VE schedules."""

    name = "score-sde-ancestral"
    family = "ddpm"
    parameterisation = "score"
    stochastic = True
    citation = "Song et al. 2021, Score-SDE, App. F (ancestral sampling); score_sde AncestralSamplingPredictor"
    claim = Claim(None, "none", "Song et al. 2021 state no convergence order")
    params = {"denoise": Param(True, "return the last step's noise-free mean (Score-SDE's noise_removal)",
                               choices=(True, False))}

    def step(self, state):
        return ancestral_update(state, state.x, state.current(), noise=not (self.denoise and state.is_last))
