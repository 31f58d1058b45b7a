r"""Score-SDE predictor–corrector sampling (Song et al. 2021, Sec. 4.2, Algs. 4–5; ``yang-song/score_sde_pytorch``
``sampling.py``: ``get_pc_sampler``, ``ReverseDiffusionPredictor``, ``EulerMaruyamaPredictor``,
``AncestralSamplingPredictor``, ``LangevinCorrector``, ``AnnealedLangevinDynamics``; ``sde_lib.py::discretize``).

Each step is the official loop body at grid time t: ``n_steps`` corrector updates at t, then one predictor update
from t to t_next, each with one score evaluation (NFE per step 1 + ``n_steps``, the official count
``N * (n_steps + 1)``). With ``denoise`` (the official ``noise_removal = True``) the last predictor step returns its
noise-free mean.

**Predictors** (continuous-grid forms; β = 1 − (α/α_next)², as for DDPM in :mod:`.ddpm`):

* ``reverse_diffusion``: x ← x − f_i + G_i² s + G_i z with the SDE's own discretisation: VE
  (``VESDE.discretize``): :math:`x + (\sigma^2 - \sigma_{next}^2)s + \sqrt{\sigma^2 - \sigma_{next}^2}\,z`, whose
  noise is the exact integral :math:`\int g\,\mathrm{d}\bar W` (this step is ``exp-euler-maruyama`` on VE); VP
  (``VPSDE.discretize``): :math:`(2 - \sqrt{1 - \beta})x + \beta s + \sqrt\beta\,z`; any other schedule: the base
  class's Euler discretisation, i.e. Euler–Maruyama.
* ``euler_maruyama``: :mod:`.euler_maruyama` (the official code's dt = −1/N becomes the grid's spacing).
* ``ancestral_sampling``: :func:`.ddpm.ancestral_update`.

**Correctors** at time t, each update drawing a fresh normal z at that single time:

* ``langevin``: :math:`\epsilon = 2\alpha_i(r\lVert z\rVert/\lVert s\rVert)^2`, :math:`x \leftarrow x + \epsilon s
  + \sqrt{2\epsilon}\,z`, r = ``snr``, with :math:`\alpha_i = 1 - \beta_i` on VP SDEs and 1 on VE ones; here
  :math:`\alpha_i = (\alpha/\alpha_{next})^2`, which is both. The official norms are per-sample norms averaged over
  the batch (``norm="batch"``), so a sample's step depends on the rest of its batch; ``norm="sample"`` uses each
  sample's own norms. Either way the step size depends on x and z: the update is **not** affine (``linear = False``).
* ``ald`` (annealed Langevin dynamics, NCSN): :math:`\epsilon = 2\alpha_i(r\sigma(t))^2`, affine.
* ``none``.

Defaults: ``snr = 0.16``, one corrector step (``configs/default_cifar10_configs.py``; the recommended VE setting),
reverse-diffusion predictor with the Langevin corrector (``configs/ve/cifar10_ncsnpp_continuous.py``).
"""

from __future__ import annotations

import math

import torch

from ..noise import noise_prediction_kernel
from .base import Claim, Param, Solver, integer, real
from .ddpm import ancestral_update, schedule_kind, vp_beta
from .euler_maruyama import euler_maruyama_update

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ancestral_sampling")
CORRECTORS = ("langevin", "ald", "none")


def reverse_diffusion_update(state, x: torch.Tensor, score: torch.Tensor, noise: bool = True) -> torch.Tensor:
    """Score-SDE's reverse-diffusion predictor from (x, t) to t_next, given the score at (x, t)."""
    kind = schedule_kind(state.schedule)
    if kind is None:
        return euler_maruyama_update(state, x, score, noise)
    sigma, sigma_next = state.sigma(state.t), state.sigma(state.t_next)
    if kind == "ve":
        x_next = x + (sigma**2 - sigma_next**2) * score
        if noise and sigma_next > 0:
            (integral,) = state.integrals((noise_prediction_kernel(state.schedule),))
            x_next = x_next + integral
        return x_next
    beta = vp_beta(state)
    x_next = (2.0 - math.sqrt(1.0 - beta)) * x + beta * score
    if noise and sigma_next > 0:
        x_next = x_next + math.sqrt(beta) * state.normal()
    return x_next


_PREDICT = {"reverse_diffusion": reverse_diffusion_update, "euler_maruyama": euler_maruyama_update,
            "ancestral_sampling": ancestral_update}


def _norms(v: torch.Tensor, per_sample: bool) -> torch.Tensor:
    norms = v.reshape(v.shape[0], -1).norm(dim=-1)
    return norms.reshape(-1, *([1] * (v.dim() - 1))) if per_sample else norms.mean()


class ScoreSDEPC(Solver):
    """Score-SDE predictor-corrector sampler, score parameterisation."""

    name = "score-sde-pc"
    family = "score-sde-pc"
    parameterisation = "score"
    stochastic = True
    linear = False
    citation = ("Song et al. 2021, Score-Based Generative Modeling through SDEs, Sec. 4.2 and Algs. 4-5; "
                "score_sde get_pc_sampler")
    claim = Claim(None, "none", "Song et al. 2021 state no convergence order for PC sampling")
    params = {
        "predictor": Param("reverse_diffusion", "predictor update", choices=PREDICTORS),
        "corrector": Param("langevin", "corrector update", choices=CORRECTORS),
        "snr": Param(0.16, "corrector signal-to-noise ratio r",
                     check=real(0.0, open_low=True)),
        "n_steps": Param(1, "corrector updates per step", check=integer(0)),
        "norm": Param("batch", "Langevin norms: batch mean of per-sample norms (official) or per sample",
                      choices=("batch", "sample")),
        "denoise": Param(True, "return the last predictor step's noise-free mean (Score-SDE's noise_removal)",
                         choices=(True, False)),
    }
    variants = {"reverse-diffusion": dict(corrector="none")}

    def __init__(self, **params):
        super().__init__(**params)
        self.corrections = 0 if self.corrector == "none" else self.n_steps
        self.linear = self.corrections == 0 or self.corrector == "ald"

    @property
    def nfe_per_step(self) -> int:
        return 1 + self.corrections

    def correct(self, state, x: torch.Tensor, score: torch.Tensor, alpha_i: float) -> torch.Tensor:
        """One corrector update at time t."""
        z = state.normal(state.t, state.t)
        if self.corrector == "langevin":
            per_sample = self.norm == "sample"
            step = 2.0 * alpha_i * (self.snr * _norms(z, per_sample) / _norms(score, per_sample)) ** 2
            return x + step * score + torch.sqrt(2.0 * step) * z
        step = 2.0 * alpha_i * (self.snr * state.sigma(state.t)) ** 2
        return x + step * score + math.sqrt(2.0 * step) * z

    def step(self, state):
        x, score = state.x, state.current()
        alpha_i = (state.alpha(state.t) / state.alpha(state.t_next)) ** 2
        for k in range(self.corrections):
            if k > 0:
                score = state.evaluate(x, state.t)
            x = self.correct(state, x, score, alpha_i)
        if self.corrections:
            score = state.evaluate(x, state.t)
        return _PREDICT[self.predictor](state, x, score, noise=not (self.denoise and state.is_last))
