r"""The name map: which diffusers scheduler (and configuration), k-diffusion sampler and ComfyUI sampler name is
which sdetoolkit solver with which parameters.

Every row of :data:`NAME_MAP` is a claim of numerical identity, checked by :func:`check_kdiffusion` and
:func:`check_diffusers` (run by ``tests/test_kdiffusion_crosscheck.py`` and reported in ``docs/interop.md``):
both sides run on the same grid from the same x_T, with the same normals where the sampler is stochastic
(:class:`~sdetoolkit.noise.IIDNoise`, see :mod:`.kdiffusion` and :mod:`.diffusers_driver`), and every state along
the way agrees to the row's tolerance. A diffusers configuration that cannot be run here carries the reason
(``DiffusersConfig.unverified``).

Conditions a row can carry (``Equivalent.schedule``):

* ``"any"``: the identity holds on every schedule (the methods are written in :math:`\tilde x = x/\alpha`,
  :math:`\tilde\sigma = \sigma/\alpha` or in :math:`\lambda`, and so are invariant under the change of schedule).
* ``"sigma"``: only where the model's time is :math:`\tilde\sigma` (the ``edm`` schedule): LMS interpolates in
  :math:`\tilde\sigma`, our tAB-DEIS in the model's time.
* ``"log-sigma"``: only where the model's time is :math:`\log\tilde\sigma` up to a shift (:func:`log_sigma_schedule`):
  diffusers' DEIS interpolates in :math:`\log\tilde\sigma`.

ComfyUI names: the ``sampler_name`` of ComfyUI's KSampler, which runs the same-named function of its fork of
k-diffusion's ``sampling.py`` (``ddim`` runs ``sample_euler``; ``dpmpp_2m_sde_heun`` runs ``sample_dpmpp_2m_sde``
with ``solver_type='heun'``). They are verified here through k-diffusion 0.1.1.post1 only; ComfyUI's copy has
diverged since (e.g. its ``euler_ancestral`` returns the denoised sample on a step to sigma = 0, where k-diffusion
takes a Euler step, which is the same point).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import sympy as sp
import torch

from ..grids import make_grid
from ..models import AnalyticModel
from ..noise import IIDNoise
from ..schedules import LAMBDA, NoiseSchedule, T, get_schedule
from ..solvers import get_solver, sample
from . import kdiffusion
from .diffusers_driver import DiffusersRun, draws_noise, run_diffusers_scheduler, times_for_sigmas, vp_trained_betas

EXACT = 1e-12
"""Agreement of two float64 implementations of one method: about 1e4 ulps, margin for the accumulation."""

F32 = 2.0**-24
"""Unit roundoff of float32."""

N_TRAIN = 1000
"""Training steps of the diffusers beta tables built here."""

LOG_SIGMA_SHIFT = 13.0
EDM_SIGMA_MAX = 1000.0
"""sigma_max of the ``edm`` schedule that "sigma" rows and EDM schedulers run on (the catalogue's vp-linear reaches
sigma~ = 152; this is only the schedule's domain, the scheduler keeps its own levels)."""


def float32_step(steps: int, roundings: int = 1) -> float:
    """Tolerance for a scheduler that rounds to float32 inside ``step`` (``roundings`` per step: the sample, and in
    the ``sde-*`` algorithms of ``DPMSolverMultistepScheduler`` also the noise; carried along by the flow):
    4 roundings n 2^-24."""
    return 4 * roundings * steps * F32


@dataclass(frozen=True)
class DiffusersConfig:
    """A diffusers scheduler class and configuration, with what comparing it needs.

    ``stride``: our grid is every ``stride``-th state of the scheduler (singlestep methods, whose inner levels are
    our stage points). ``begin_index``: start there (IPNDM's first level has sigma~ = inf). ``exact_table``: install
    the float64 alpha(t_n)^2 table (PNDM's pseudo-RK4 midpoints then sit exactly at our midpoints). ``float32``:
    how many tensors the scheduler rounds to float32 in each ``step`` (:func:`float32_step`; 0: none, the sample: 1,
    the sample and the noise: 2). ``steps``: the number of steps
    the check must use (None: any). ``unverified``: why this configuration is not run here (None when it is).
    ``step_options``: keyword arguments of every ``step`` call (DDIM's ``eta``).
    """

    cls: str
    config: Mapping = field(default_factory=dict)
    step_options: Mapping = field(default_factory=dict)
    stride: int = 1
    begin_index: int | None = None
    exact_table: bool = False
    float32: int = 0
    steps: int | None = None
    unverified: str | None = None

    def tolerance(self, steps: int) -> float:
        return float32_step(steps, self.float32) if self.float32 else EXACT

    def __str__(self) -> str:
        config = ", ".join(f"{key}={value!r}" for key, value in self.config.items())
        options = ", ".join(f"{key}={value!r}" for key, value in self.step_options.items())
        return f"{self.cls}({config})" + (f".step({options})" if options else "")


@dataclass(frozen=True)
class Equivalent:
    """One row: our solver and parameters, and the third-party names that compute the same thing."""

    ours: str
    params: Mapping = field(default_factory=dict)
    kdiffusion: str | None = None
    k_options: Mapping = field(default_factory=dict)
    comfyui: tuple[str, ...] = ()
    diffusers: tuple[DiffusersConfig, ...] = ()
    schedule: str = "any"
    note: str = ""
    diverges_at: int | None = None
    """For a near miss (:data:`NEAR_MISSES`): the first state at which the two differ (12 uniform-lambda steps)."""

    def __post_init__(self):
        if self.schedule not in ("any", "sigma", "log-sigma"):
            raise ValueError(f"schedule: expected 'any', 'sigma' or 'log-sigma', got {self.schedule!r}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "k_options", MappingProxyType(dict(self.k_options)))

    def solver(self):
        """Our solver of this row."""
        return get_solver(self.ours, **self.params)

    @property
    def label(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.ours}({params})" if params else self.ours

    @property
    def k_label(self) -> str | None:
        if self.kdiffusion is None:
            return None
        options = ", ".join(f"{key}={value!r}" for key, value in self.k_options.items())
        return f"sample_{self.kdiffusion}({options})"


_F32 = dict(float32=1)
_F32_NOISE = dict(float32=2)
_DDIM = dict(clip_sample=False, set_alpha_to_one=True)
_VP = dict(timestep_spacing="linspace")
_SINGLESTEP = ("its levels are float32 table values, so its inner (stage) levels are not the exact log-sigma "
               "midpoints ours use, and with final_sigmas_type='sigma_min' it appends a step of zero length; "
               "tests/test_diffusers_crosscheck.py compares it on float64 levels rebuilt by its own formula")
_EDM_SDE_3M = ("diffusers 0.42.1: EDMDPMSolverMultistepScheduler's third-order update has no 'sde-dpmsolver++' "
               "branch (UnboundLocalError at the first third-order step)")

NAME_MAP: tuple[Equivalent, ...] = (
    Equivalent("edm-euler", kdiffusion="euler", comfyui=("euler",),
               diffusers=(DiffusersConfig("EulerDiscreteScheduler", **_F32),
                          DiffusersConfig("EDMEulerScheduler", **_F32)),
               note="Euler in sigma~ on x/alpha; the same map as DDIM (next row)"),
    Equivalent("ddim", kdiffusion="euler", comfyui=("ddim",),
               diffusers=(DiffusersConfig("DDIMScheduler", _DDIM),
                          DiffusersConfig("DPMSolverMultistepScheduler", dict(
                              solver_order=1, algorithm_type="dpmsolver", final_sigmas_type="sigma_min", **_VP),
                              **_F32)),
               note="DDIM is Euler in sigma~ on x/alpha (= DPM-Solver-1); ComfyUI's 'ddim' runs sample_euler"),
    Equivalent("edm-euler", kdiffusion="euler_ancestral", k_options=dict(eta=0.0), comfyui=("euler_ancestral",),
               note="eta = 0 removes the ancestral noise"),
    Equivalent("ddim-eta", kdiffusion="euler_ancestral", comfyui=("euler_ancestral",),
               diffusers=(DiffusersConfig("EulerAncestralDiscreteScheduler", **_F32),
                          DiffusersConfig("DDIMScheduler", _DDIM, dict(eta=1.0)),
                          DiffusersConfig("DDPMScheduler", dict(clip_sample=False))),
               note="sigma_down/sigma_up of the ancestral step are DDIM(eta)'s variance split, for eta <= 1; at "
                    "eta = 1 DDIM is DDPM's posterior step (beta tilde) and SDE-DPM-Solver++1"),
    Equivalent("ddim-eta", dict(eta=0.5), kdiffusion="euler_ancestral", k_options=dict(eta=0.5),
               comfyui=("euler_ancestral",), diffusers=(DiffusersConfig("DDIMScheduler", _DDIM, dict(eta=0.5)),)),
    Equivalent("edm-heun", kdiffusion="heun", comfyui=("heun",), diffusers=(DiffusersConfig("HeunDiscreteScheduler"),),
               note="a final step to sigma = 0 is a Euler step in all three"),
    Equivalent("dpm-solver-2", kdiffusion="dpm_2", comfyui=("dpm_2",),
               diffusers=(DiffusersConfig("KDPM2DiscreteScheduler", unverified=(
                   "the driver does not read KDPM2's interleaved sigmas_interpol")),),
               note="DPM-Solver-2 (noise form, r1 = 1/2) is Euler to the log-midpoint of sigma~, then the full step "
                    "with the midpoint's derivative"),
    Equivalent("dpm-solver-2", kdiffusion="dpm_2_ancestral", k_options=dict(eta=0.0), comfyui=("dpm_2_ancestral",),
               note="eta = 0 removes the ancestral noise"),
    Equivalent("deis-tab3-exact", kdiffusion="lms", comfyui=("lms",), schedule="sigma",
               diffusers=(DiffusersConfig("LMSDiscreteScheduler"),),
               note="LMS is Adams-Bashforth in sigma~ with Lagrange weights integrated by quadrature (exact for "
                    "these polynomials); that is tAB-DEIS with exact weights where the model's time is sigma~"),
    Equivalent("dpmpp-2s", kdiffusion="dpmpp_2s_ancestral", k_options=dict(eta=0.0), comfyui=("dpmpp_2s_ancestral",),
               note="eta = 0 removes the ancestral noise"),
    Equivalent("dpmpp-2s", kdiffusion="dpmpp_sde", k_options=dict(eta=0.0), comfyui=("dpmpp_sde",),
               note="with eta = 0 DPM-Solver++ (stochastic) is DPM-Solver++(2S) with r = 1/2"),
    Equivalent("dpmpp-2s", dict(r1=1 / 3), kdiffusion="dpmpp_sde", k_options=dict(eta=0.0, r=1 / 3),
               comfyui=("dpmpp_sde",)),
    Equivalent("dpmpp-2m", dict(lower_order_final=False), kdiffusion="dpmpp_2m", comfyui=("dpmpp_2m",),
               diffusers=(DiffusersConfig("DPMSolverMultistepScheduler", dict(lower_order_final=False), **_F32),
                          DiffusersConfig("EDMDPMSolverMultistepScheduler", dict(lower_order_final=False))),
               note="a step into sigma = 0 is first order in all three"),
    Equivalent("dpmpp-2m", dict(lower_order_final=False), kdiffusion="dpmpp_2m_sde", k_options=dict(eta=0.0),
               comfyui=("dpmpp_2m_sde",)),
    Equivalent("dpmpp-2m", dict(lower_order_final_below=15),
               diffusers=(DiffusersConfig("DPMSolverMultistepScheduler", **_F32),
                          DiffusersConfig("EDMDPMSolverMultistepScheduler")),
               note="diffusers lowers the final steps' order below 15 steps (the official code below 10)"),
    Equivalent("dpmpp-2m-heun", dict(lower_order_final_below=15),
               diffusers=(DiffusersConfig("DPMSolverMultistepScheduler", dict(solver_type="heun"), **_F32),)),
    Equivalent("dpmpp-3m", dict(lower_order_final_below=15),
               diffusers=(DiffusersConfig("DPMSolverMultistepScheduler", dict(solver_order=3), **_F32),
                          DiffusersConfig("EDMDPMSolverMultistepScheduler", dict(solver_order=3)))),
    Equivalent("dpmpp-3m", dict(solver_type="heun", lower_order_final=False), kdiffusion="dpmpp_3m_sde",
               k_options=dict(eta=0.0), comfyui=("dpmpp_3m_sde",),
               note="its warm-up second step uses the 'heun' (phi_2) correction"),
    Equivalent("dpmpp-2m-sde", kdiffusion="dpmpp_2m_sde", comfyui=("dpmpp_2m_sde",)),
    Equivalent("dpmpp-2m-sde", dict(eta=0.5, s_noise=0.8), kdiffusion="dpmpp_2m_sde",
               k_options=dict(eta=0.5, s_noise=0.8), comfyui=("dpmpp_2m_sde",)),
    Equivalent("dpmpp-2m-sde-heun", kdiffusion="dpmpp_2m_sde", k_options=dict(solver_type="heun"),
               comfyui=("dpmpp_2m_sde_heun",)),
    Equivalent("dpmpp-3m-sde", kdiffusion="dpmpp_3m_sde", comfyui=("dpmpp_3m_sde",)),
    *(Equivalent(name, diffusers=(
        DiffusersConfig("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++", **config), **_F32_NOISE),
        DiffusersConfig("EDMDPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++", **config),
                        unverified=_EDM_SDE_3M if name == "sde-dpmpp-3m" else None)),
                 note=note)
      for name, config, note in (
          ("sde-dpmpp-1", dict(solver_order=1), ""),
          ("sde-dpmpp-2m", {}, "diffusers lowers the final steps' order below 15 steps"),
          ("sde-dpmpp-2m-heun", dict(solver_type="heun"), ""),
          ("sde-dpmpp-3m", dict(solver_order=3), "diffusers' D2 weight -phi_3 - 1 (docs/findings.md)"))),
    *(Equivalent(name, diffusers=(DiffusersConfig("DPMSolverMultistepScheduler", dict(
        algorithm_type="sde-dpmsolver", final_sigmas_type="sigma_min", **_VP, **config), **_F32_NOISE),),
                 note="noise prediction; diffusers refuses final_sigmas_type='zero' for it")
      for name, config in (("sde-dpm-solver-1", dict(solver_order=1)), ("sde-dpm-solver-2m", {}),
                           ("sde-dpm-solver-2m-heun", dict(solver_type="heun")))),
    Equivalent("dpm-solver-3", kdiffusion="dpm_fast", comfyui=("dpm_fast",),
               note="steps uniform in log sigma~, third order, the last ones of order 2 and 1 "
                    "(kdiffusion.dpm_fast_orders); ours runs each step with dpm-solver-<order>"),
    Equivalent("dpm-solver-3", kdiffusion="dpm_adaptive", comfyui=("dpm_adaptive",),
               note="on the steps the adaptive controller accepted (the result is the order-3 solution)"),
    Equivalent("dpm-solver-2", kdiffusion="dpm_adaptive", k_options=dict(order=2), comfyui=("dpm_adaptive",),
               note="on the steps the adaptive controller accepted"),
    *(Equivalent(name, diffusers=(DiffusersConfig("DPMSolverSinglestepScheduler", dict(
        solver_order=2, algorithm_type=algorithm, use_exponential_sigmas=True), unverified=_SINGLESTEP),))
      for name, algorithm in (("dpmpp-2s", "dpmsolver++"), ("dpm-solver-2", "dpmsolver"))),
    *(Equivalent(f"unipc-{variant}-p{order}", diffusers=(DiffusersConfig("UniPCMultistepScheduler", dict(
        solver_order=order, solver_type=variant, final_sigmas_type="sigma_min", **_VP)),))
      for variant in ("bh1", "bh2") for order in (1, 2, 3)),
    Equivalent("unipc-bh2-p2", diffusers=(DiffusersConfig("UniPCMultistepScheduler"),),
               note="diffusers' defaults (bh2, order 2, final sigma 0)"),
    *(Equivalent(f"deis-tab{order - 1}-exact" if order > 1 else "deis-tab0", dict(quadrature="gauss"),
                 schedule="log-sigma", diffusers=(DiffusersConfig("DEISMultistepScheduler", dict(
                     solver_order=order, lower_order_final=False, **_VP)),),
                 note="diffusers' DEIS interpolates eps in log sigma~ and integrates exactly")
      for order in (1, 2, 3)),
    Equivalent("plms", diffusers=(DiffusersConfig("PNDMScheduler", dict(skip_prk_steps=True, set_alpha_to_one=True),
                                                  exact_table=True),)),
    Equivalent("pndm-f", diffusers=(DiffusersConfig("PNDMScheduler", dict(skip_prk_steps=False, set_alpha_to_one=True),
                                                    exact_table=True, steps=10),),
               note="its pseudo-RK4 midpoints are timesteps t - N_train/(2 steps): exact midpoints only when that is "
                    "an integer (checked with 10 steps)"),
    Equivalent("ipndm", diffusers=(DiffusersConfig("IPNDMScheduler", begin_index=1),),
               note="from its second level (its first has sigma~ = inf)"),
    Equivalent("ddpm", diffusers=(DiffusersConfig("DDPMScheduler", dict(clip_sample=False)),),
               note="variance_type='fixed_small' (beta tilde)"),
    Equivalent("ddpm-large", diffusers=(DiffusersConfig("DDPMScheduler", dict(clip_sample=False,
                                                                             variance_type="fixed_large")),)),
)


NEAR_MISSES: tuple[Equivalent, ...] = (
    Equivalent("deis-tab3-exact", kdiffusion="lms", diverges_at=2,
               note="on a VP schedule LMS interpolates in sigma~ and tAB-DEIS in t: the warm-up Euler step agrees, "
                    "the first step with a past point does not"),
    Equivalent("dpmpp-3m", dict(lower_order_final=False), kdiffusion="dpmpp_3m_sde", k_options=dict(eta=0.0),
               diverges_at=2, note="k-diffusion's second (warm-up) step uses the 'heun' (phi_2) correction, "
                                   "dpmpp-3m the 'midpoint' one unless solver_type='heun'"),
    Equivalent("sde-dpmpp-3m", dict(solver_type="heun", lower_order_final=False), kdiffusion="dpmpp_3m_sde",
               diverges_at=3, note="diffusers' SDE 3M weights D2 by -phi_3 - 1 where k-diffusion has -phi_3 "
                                   "(docs/findings.md): the first third-order step differs"),
    Equivalent("sde-dpmpp-2m", kdiffusion="dpmpp_2m_sde", diverges_at=12,
               note="diffusers' SDE-DPM-Solver++(2M) takes a first-order last step below 15 steps, k-diffusion never"),
    Equivalent("dpm-solver-2", kdiffusion="dpmpp_2s_ancestral", k_options=dict(eta=0.0), diverges_at=1,
               note="DPM-Solver-2 in noise prediction is not DPM-Solver++(2S) in data prediction: they differ from "
                    "the first step (both second order)"),
)
"""Pairs that look alike but are not the same method: each is checked to differ first at ``diverges_at``."""


# -- schedules and grids of a check ---------------------------------------------------------------------------------
def log_sigma_schedule() -> NoiseSchedule:
    r"""A VP schedule whose time is :math:`\log\tilde\sigma` + 13 (:math:`\tilde\sigma` from e^-12 to e^8):
    :math:`\alpha = 1/\sqrt{1 + e^{2u}}`, :math:`\sigma = e^u\alpha`, u = t - 13, :math:`\lambda = 13 - t`."""
    u = T - LOG_SIGMA_SHIFT
    alpha = 1 / sp.sqrt(1 + sp.exp(2 * u))
    return NoiseSchedule("vp-log-sigma", alpha, sp.exp(u) * alpha, (1.0, 21.0), t_of_lambda=LOG_SIGMA_SHIFT - LAMBDA)


def schedule_for(entry: Equivalent, problem, cls: str | None = None) -> NoiseSchedule:
    """The schedule a row's check runs on: the problem's, or the one its condition (or an EDM scheduler) needs."""
    if entry.schedule == "sigma" or (cls is not None and cls.startswith("EDM")):
        return get_schedule("edm", sigma_max=EDM_SIGMA_MAX)
    if entry.schedule == "log-sigma":
        return log_sigma_schedule()
    return problem.schedule


def problem_window(problem, schedule: NoiseSchedule) -> tuple[float, float]:
    """(t_min, t_max) on ``schedule`` with the problem's range of sigma~."""
    sigmas = problem.schedule.sigma_over_alpha(torch.tensor([problem.t_min, problem.t_max], dtype=torch.float64))
    times = times_for_sigmas(schedule, sigmas)
    return float(times[0]), float(times[1])


def _exact_prior(problem, schedule: NoiseSchedule, t: float, n: int, seed: int) -> torch.Tensor:
    return problem.distribution.noised(schedule, t).sample(n, torch.Generator().manual_seed(seed)).to(torch.float64)


# -- k-diffusion -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """A row checked on one problem: our trajectory, theirs, and how they agree."""

    entry: Equivalent
    problem: str
    ours: torch.Tensor
    theirs: torch.Tensor
    times: torch.Tensor
    agreement: kdiffusion.Agreement
    nfe: int


def _ours_on(entry: Equivalent, model: AnalyticModel, times: torch.Tensor, x_T: torch.Tensor, seed: int,
             orders=None) -> torch.Tensor:
    """Our trajectory on ``times``; ``orders``: one step each with dpm-solver-<order> (dpm_fast)."""
    if orders is not None:
        states = [x_T]
        for k, order in enumerate(orders):
            states.append(sample(get_solver(f"dpm-solver-{order}"), model, times[k:k + 2], states[-1]))
        return torch.stack(states)
    solver = entry.solver()
    noise = IIDNoise(seed) if solver.stochastic else None
    return sample(solver, model, times, x_T, noise, return_trajectory=True).trajectory


def check_kdiffusion(entry: Equivalent, problem, steps: int = 12, *, n_samples: int = 16, seed: int = 0,
                     tolerance: float = EXACT) -> Check:
    """Run the row's k-diffusion sampler and our solver on ``problem`` over ``steps`` uniform-lambda steps (for
    dpm_fast: 3 ``steps`` evaluations; dpm_adaptive: rtol = atol = 1e-4) from the same exact x_T, with the same
    IIDNoise(seed) normals, and compare every state."""
    if entry.kdiffusion is None:
        raise ValueError(f"entry: {entry.label} has no k-diffusion sampler")
    schedule = schedule_for(entry, problem)
    t_min, t_max = problem_window(problem, schedule)
    x_T = _exact_prior(problem, schedule, t_max, n_samples, seed)
    model = AnalyticModel(problem.distribution, schedule)
    stochastic = kdiffusion.is_stochastic(entry.kdiffusion, dict(entry.k_options))
    noise = IIDNoise(seed) if stochastic else None
    orders = None
    if entry.kdiffusion == "dpm_fast":
        nfe = 3 * steps
        run = kdiffusion.run_dpm_fast(model, t_max, t_min, nfe, x_T, noise, **entry.k_options)
        orders = kdiffusion.dpm_fast_orders(nfe)
    elif entry.kdiffusion == "dpm_adaptive":
        run = kdiffusion.run_dpm_adaptive(model, t_max, t_min, x_T, noise, **{"rtol": 1e-4, "atol": 1e-4,
                                                                                 **entry.k_options})
    else:
        grid = make_grid("uniform-lambda", schedule, steps, t_min, t_max)
        run = kdiffusion.run_kdiffusion(entry.kdiffusion, model, grid, x_T, noise, **entry.k_options)
    ours = _ours_on(entry, AnalyticModel(problem.distribution, schedule), run.times, x_T, seed, orders)
    return Check(entry, problem.name, ours, run.xs, run.times, kdiffusion.agreement(ours, run.xs, tolerance), run.nfe)


# -- diffusers -------------------------------------------------------------------------------------------------------
def _table_times() -> torch.Tensor:
    """t_n = (n + 1)/(N_train + 1): the times of the problem's schedule that alphas_cumprod[n] stands for."""
    return torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / (N_TRAIN + 1)


def set_levels(scheduler, levels) -> None:
    """Replace the sigma~ levels of a scheduler with a ``sigmas`` table, after its ``set_timesteps(n)``, by the
    n + 1 decreasing ``levels`` (float64); HeunDiscreteScheduler repeats the inner ones, as its own table does.
    Its update rules then run on that grid (e.g. a uniform-lambda family, for an order study)."""
    levels = torch.as_tensor(levels, dtype=torch.float64)
    if type(scheduler).__name__ == "HeunDiscreteScheduler":
        levels = torch.cat([levels[:1], levels[1:-1].repeat_interleave(2), levels[-1:]])
    table = getattr(scheduler, "sigmas", None)
    if table is None or len(table) != len(levels):
        raise ValueError(f"levels: {type(scheduler).__name__} has {'no sigmas' if table is None else len(table)} "
                         f"levels, got {len(levels)}")
    scheduler.sigmas = levels


def make_scheduler(diffusers_module, entry: Equivalent, config: DiffusersConfig, problem, steps: int):
    """The scheduler of ``config`` after ``set_timesteps(steps)``; VP tables are the problem's schedule at
    :func:`_table_times` (``trained_betas``), EDM and IPNDM schedulers keep their own."""
    if config.unverified is not None:
        raise ValueError(f"config: {config} is not run here: {config.unverified}")
    cls = getattr(diffusers_module, config.cls)
    options = dict(config.config)
    if not config.cls.startswith("EDM") and config.cls != "IPNDMScheduler":
        options.update(trained_betas=vp_trained_betas(problem.schedule, _table_times()).numpy(),
                       num_train_timesteps=N_TRAIN)
    scheduler = cls(**options)
    if config.exact_table:
        scheduler.alphas_cumprod = problem.schedule.alpha(_table_times()) ** 2
    scheduler.set_timesteps(steps)
    if config.begin_index is not None:
        scheduler.set_begin_index(config.begin_index)
    return scheduler


def _first_sigma(scheduler) -> float:
    first = getattr(scheduler, "begin_index", None) or 0
    if type(scheduler).__name__ == "IPNDMScheduler":
        return float(scheduler.betas[first] / scheduler.alphas[first])
    if hasattr(scheduler, "sigmas"):
        return float(scheduler.sigmas[first])
    abar = float(scheduler.alphas_cumprod[int(scheduler.timesteps[0])])
    return math.sqrt((1 - abar) / abar)


def run_diffusers(diffusers_module, entry: Equivalent, config: DiffusersConfig, problem, steps: int, *,
                  n_samples: int = 16, seed: int = 0, levels=None, x_T: torch.Tensor | None = None,
                  noise=None) -> tuple[DiffusersRun, AnalyticModel, torch.Tensor]:
    """The scheduler run (its tables upcast to float64) from ``x_T`` (default: exact samples at its first level, in
    the convention of the schedule it runs on, :func:`schedule_for`); ``levels``: see :func:`set_levels`. A
    scheduler that adds noise gets the normals of ``noise`` (default: ``IIDNoise(seed)``, the normals our
    stochastic solver draws in :func:`check_diffusers`). Returns the run, a fresh model on that schedule, and x_T."""
    scheduler = make_scheduler(diffusers_module, entry, config, problem, steps)
    if levels is not None:
        set_levels(scheduler, levels)
    schedule = schedule_for(entry, problem, config.cls)
    if x_T is None:
        t_T = float(times_for_sigmas(schedule, [_first_sigma(scheduler)])[0])
        x_T = _exact_prior(problem, schedule, t_T, n_samples, seed)
    if noise is None and draws_noise(scheduler, config.step_options):
        noise = IIDNoise(seed)
    run = run_diffusers_scheduler(scheduler, AnalyticModel(problem.distribution, schedule), x_T, noise,
                                  step_options=config.step_options)
    return run, AnalyticModel(problem.distribution, schedule), x_T


def check_diffusers(diffusers_module, entry: Equivalent, config: DiffusersConfig, problem, steps: int = 12, *,
                    n_samples: int = 16, seed: int = 0) -> Check:
    """Run the scheduler of ``config`` (``diffusers_module`` is the imported ``diffusers``) and our solver on the
    grid of its levels (every ``stride``-th) from the same exact x_T and compare every common state. The
    configuration's own ``steps``, where it has one, replaces ``steps``."""
    steps = config.steps or steps
    run, model, x_T = run_diffusers(diffusers_module, entry, config, problem, steps, n_samples=n_samples, seed=seed)
    theirs = run.xs[::config.stride]
    times = run.times[::config.stride]
    if (len(run.times) - 1) % config.stride:
        raise RuntimeError(f"{config}: {len(run.times) - 1} levels are not a multiple of the stride {config.stride}")
    ours = _ours_on(entry, model, times, x_T, seed)
    return Check(entry, problem.name, ours, theirs, times,
                 kdiffusion.agreement(ours, theirs, config.tolerance(len(times) - 1)), run.nfe)
