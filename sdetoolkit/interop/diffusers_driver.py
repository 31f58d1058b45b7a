r"""Drive a ``diffusers`` scheduler over its own noise levels with an sdetoolkit model.

:func:`run_diffusers_scheduler` runs the usual diffusers loop (``scale_model_input``, model call, ``step``) with an
:class:`~sdetoolkit.models.AnalyticModel` in place of the network. It hides every diffusers convention, so that
its result can be compared entry by entry with :func:`sdetoolkit.solvers.sample` on the same grid:

* **Noise level of a model call.** Every scheduler handled here has, at each call, a noise level
  :math:`\tilde\sigma = \sigma/\alpha` (its ``sigmas`` entry, or :math:`\sqrt{(1-\bar\alpha)/\bar\alpha}` of its
  :math:`\bar\alpha` table at the timestep). The model is called at the time t of *its* schedule where
  :math:`\sigma(t)/\alpha(t) = \tilde\sigma` (:func:`times_for_sigmas`), never at the rounded integer timestep a
  network would see.
* **State.** diffusers' ``sample`` is either variance preserving, :math:`x = \alpha_s \tilde x` (DDIM, PNDM,
  DPM-Solver, UniPC, DEIS, iPNDM), or variance exploding, :math:`\tilde x = x_0 + \tilde\sigma\varepsilon`
  (k-diffusion style Euler, Heun and LMS, and the EDM schedulers). With :math:`\tilde x` the common currency, the model
  sees :math:`\alpha(t)\tilde x` and the caller's ``x_T`` and the returned states are in the model's convention.
* **Model output.** Our :class:`~sdetoolkit.models.Prediction` is converted to the scheduler's
  ``prediction_type`` with the scheduler's own coefficients: ``epsilon`` is :math:`\hat\varepsilon`, ``sample`` is
  :math:`\hat x_0`, ``v_prediction`` is :math:`\alpha_s\hat\varepsilon - \sigma_s\hat x_0` (Salimans & Ho 2022, with
  the VP pair :math:`\alpha_s, \sigma_s` the scheduler uses). The EDM schedulers precondition the output
  (``precondition_outputs``: :math:`D = c_{skip} x + c_{out} F`, Karras et al. 2022, Table 1); the driver reads
  :math:`c_{skip}, c_{out}` off that affine map and passes :math:`F = (\hat x_0 - c_{skip}x)/c_{out}`, so the
  scheduler's denoised equals :math:`\hat x_0`. ``IPNDMScheduler`` forms :math:`\varepsilon = \sigma x + \alpha F`
  (the v-diffusion convention); the driver passes :math:`F = (\hat\varepsilon - \sigma x)/\alpha`.
* **Precision.** With ``dtype`` (default float64) the scheduler's float tables (``sigmas``, ``alphas_cumprod``,
  ...) are cast to ``dtype`` after ``set_timesteps``. Their *values* stay those diffusers computed (mostly in
  float32), but the step arithmetic then runs in ``dtype``; since the comparison grid is built from the same values,
  the float32 rounding of the tables is shared by both sides. What remains is what a scheduler does in float32
  inside ``step`` (``DPMSolverMultistepScheduler``, ``EulerDiscreteScheduler`` and ``EDMEulerScheduler`` cast the
  sample to float32 there). ``dtype=None`` leaves the tables as shipped.
* **Noise.** A stochastic scheduler gets, for its step from level k to level k + 1, the standard normal
  ``noise.normal(t_k, t_{k+1}, x)`` of an sdetoolkit noise source over the model times of the step: with
  :class:`~sdetoolkit.noise.IIDNoise` this is the normal our solvers draw for that step (their closed-form noise,
  or their kernel integral :math:`\int K\,\mathrm{d}\bar W = \sqrt{\int K^2}` times that normal, is that normal
  times the step's standard deviation), so both runs see the same noise. Each scheduler here multiplies one standard
  normal per step by its closed-form standard deviation. ``DDIMScheduler`` (``eta > 0``) and
  ``DPMSolverMultistepScheduler`` (``sde-dpmsolver++``, ``sde-dpmsolver``) take it as ``variance_noise``. The others
  (``DDPMScheduler``, ``EulerAncestralDiscreteScheduler``, ``EDMDPMSolverMultistepScheduler`` with
  ``sde-dpmsolver++``, ``EulerDiscreteScheduler`` and ``EDMEulerScheduler`` with ``s_churn > 0``) take only a
  ``torch.Generator``, whose stream cannot reproduce another source's normals; for them the name ``randn_tensor``,
  through which ``step`` draws, is bound during ``step`` to a function that returns the step's normal, in the
  globals of every ``step`` along the class's MRO that looks it up (the module that *defines* the method, so a
  subclass defined elsewhere is patched where its inherited ``step`` looks). The original is restored after the
  step, also when it raises; a second draw in one step, or one of another shape, raises. The binding is a
  process-wide module global: patched steps of all threads are serialised by a lock, and a call to
  ``randn_tensor`` from another thread meanwhile gets the original.

diffusers itself is never imported here: the caller builds the scheduler. Supported classes are listed in
:data:`SUPPORTED`; others raise, because each one's conventions must be read from its source before it can be
compared.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import math
import threading
from dataclasses import dataclass

import sympy as sp
import torch

from ..models import AnalyticModel
from ..schedules import NoiseSchedule, T

SIGMA_VE = ("EulerDiscreteScheduler", "HeunDiscreteScheduler", "LMSDiscreteScheduler", "EDMEulerScheduler",
            "EDMDPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler")
"""Variance-exploding state, ``sigmas`` table: sample = x0 + sigma * eps."""

SIGMA_VP = ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler",
            "DEISMultistepScheduler")
"""Variance-preserving state, ``sigmas`` table: alpha = 1/sqrt(1 + sigma^2) (``_sigma_to_alpha_sigma_t``)."""

TABLE_VP = ("DDIMScheduler", "PNDMScheduler", "DDPMScheduler")
"""Variance-preserving state read off ``alphas_cumprod`` at the integer timestep."""

SUPPORTED = SIGMA_VE + SIGMA_VP + TABLE_VP + ("IPNDMScheduler",)

_TABLES = ("sigmas", "alphas_cumprod", "final_alpha_cumprod", "alpha_t", "sigma_t", "lambda_t", "betas", "alphas")


@dataclass(frozen=True)
class Level:
    """A noise level as a scheduler sees it: sigma~ = sigma/alpha, the scale of its state (sample = scale * x~),
    and the VP pair (alpha, sigma) its ``v_prediction`` (or iPNDM's epsilon) is formed with."""

    sigma: float
    scale: float
    alpha_vp: float
    sigma_vp: float


@dataclass
class DiffusersRun:
    """A diffusers run in the model's convention.

    ``xs`` is (n_steps + 1, N, d): ``x_T`` and the state after every completed step (a Heun correction, the four
    calls of a pseudo-RK4 step, PLMS's predictor call are parts of one step; UniPC's state is its corrected
    one). ``sigmas`` (sigma~) and ``times`` (in
    the model's schedule) are the grid those states sit on, and ``call_sigmas`` the sigma~ of every model call.
    """

    x: torch.Tensor
    xs: torch.Tensor
    sigmas: torch.Tensor
    times: torch.Tensor
    call_sigmas: torch.Tensor
    nfe: int


def _is_time_sigma(schedule: NoiseSchedule) -> bool:
    """Whether the schedule is alpha = 1, sigma = t (the ``edm`` family), so that t = sigma~ exactly."""
    return sp.simplify(schedule.alpha_expr - 1) == 0 and sp.simplify(schedule.sigma_expr - T) == 0


def times_for_sigmas(schedule: NoiseSchedule, sigmas, *, time_is_sigma: bool | None = None) -> torch.Tensor:
    r"""Times t of ``schedule`` with :math:`\sigma(t)/\alpha(t) = \tilde\sigma`: t = sigma~ on the EDM schedule,
    :math:`t(\lambda = -\log\tilde\sigma)` otherwise (sigma~ = 0 maps to lambda = inf). ``time_is_sigma`` skips
    the symbolic test of the schedule when the caller has made it."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if _is_time_sigma(schedule) if time_is_sigma is None else time_is_sigma:
        return schedule.check_time(sigmas.clone(), "sigmas")
    return schedule.t_of_lambda(-torch.log(sigmas))


def vp_trained_betas(schedule: NoiseSchedule, times) -> torch.Tensor:
    r"""``trained_betas`` whose :math:`\bar\alpha_n = \prod_{k \le n}(1-\beta_k)` is :math:`\alpha(t_n)^2` of a VP
    ``schedule`` at the increasing ``times`` (float64; diffusers stores them in float32)."""
    times = torch.as_tensor(times, dtype=torch.float64)
    alpha_bar = schedule.alpha(times) ** 2
    previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    return 1.0 - alpha_bar / previous


def _kind(scheduler) -> str:
    name = type(scheduler).__name__
    if name not in SUPPORTED:
        raise ValueError(f"scheduler: {name} is not supported; supported: {', '.join(SUPPORTED)}")
    config = scheduler.config
    if getattr(config, "use_flow_sigmas", False) or getattr(config, "prediction_type", None) == "flow_prediction":
        raise ValueError(f"scheduler: {name} with flow sigmas / flow_prediction is not supported")
    for flag in ("thresholding", "clip_sample"):
        if getattr(config, flag, False):
            raise ValueError(f"scheduler: {name} has {flag}=True, which clamps x0; turn it off for an ODE comparison")
    if getattr(scheduler, "num_inference_steps", None) is None:
        raise ValueError(f"scheduler: call {name}.set_timesteps first")
    if name in SIGMA_VE:
        return "sigma-ve"
    if name in SIGMA_VP:
        return "sigma-vp"
    return "table" if name in TABLE_VP else "ipndm"


def _upcast(scheduler, dtype: torch.dtype) -> None:
    for key in _TABLES:
        value = getattr(scheduler, key, None)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            setattr(scheduler, key, value.to(dtype))


def _start(scheduler) -> int:
    return getattr(scheduler, "begin_index", None) or 0


def _index(scheduler, timestep) -> int:
    """The table index of the coming call (``step_index``; on the first call ``begin_index`` or the lookup)."""
    if getattr(scheduler, "step_index", None) is not None:
        return scheduler.step_index
    if getattr(scheduler, "begin_index", None) is not None:
        return scheduler.begin_index
    return scheduler.index_for_timestep(timestep)


def _sigma_level(sigma: float, kind: str) -> Level:
    alpha_vp = 1.0 / math.sqrt(1.0 + sigma * sigma)
    return Level(sigma, 1.0 if kind == "sigma-ve" else alpha_vp, alpha_vp, sigma * alpha_vp)


def _table_level(alpha_bar: float) -> Level:
    alpha, sigma = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
    return Level(sigma / alpha, alpha, alpha, sigma)


def _ipndm_level(scheduler, index: int) -> Level:
    alpha, sigma = float(scheduler.alphas[index]), float(scheduler.betas[index])
    if alpha <= 0.0:
        raise ValueError(f"IPNDMScheduler: alpha = 0 at index {index} (sigma~ = inf); start later with "
                         f"set_begin_index")
    return Level(sigma / alpha, alpha, alpha, sigma)


def _alpha_bar(scheduler, timestep: int) -> float:
    """alphas_cumprod at ``timestep``; below 0 the final value (DDPM's is ``one``)."""
    if timestep >= 0:
        return float(scheduler.alphas_cumprod[timestep])
    return float(scheduler.one if type(scheduler).__name__ == "DDPMScheduler" else scheduler.final_alpha_cumprod)


def _call_level(scheduler, kind: str, timestep) -> Level:
    if kind == "table":
        return _table_level(_alpha_bar(scheduler, int(timestep)))
    if kind == "ipndm":
        return _ipndm_level(scheduler, _index(scheduler, timestep))
    return _sigma_level(float(scheduler.sigmas[_index(scheduler, timestep)]), kind)


def _table_grid(scheduler) -> list[int]:
    """The timesteps DDIM / PNDM / DDPM move the state through, ending with the last target (negative: the final
    alpha)."""
    if type(scheduler).__name__ == "DDPMScheduler":  # previous_timestep: the next of its timesteps, then -1
        return [*(int(t) for t in scheduler.timesteps), -1]
    ratio = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    if type(scheduler).__name__ == "DDIMScheduler":
        steps = [int(t) for t in scheduler.timesteps]
    else:  # PNDM: its PRK and PLMS timesteps both walk the base grid _timesteps, largest first.
        steps = sorted((int(t) for t in scheduler._timesteps), reverse=True)
    grid = [*steps, steps[-1] - ratio]
    # Both step from t to t - num_train_timesteps // num_inference_steps, whatever the spacing.
    if any(a - b != ratio for a, b in itertools.pairwise(grid)):
        raise ValueError(f"{type(scheduler).__name__}: its steps go from t to t - {ratio}, but its timesteps "
                         f"{steps} are not spaced by {ratio} (timestep_spacing="
                         f"{scheduler.config.timestep_spacing!r}): the model would be called off the state's noise "
                         f"level. Use timestep_spacing='leading'.")
    if grid[-1] >= 0 and grid[-1] == grid[-2]:
        raise ValueError("final step has zero length")
    return grid


def _state_levels(scheduler, kind: str) -> list[Level]:
    start = _start(scheduler)
    if kind == "table":
        levels = [_table_level(_alpha_bar(scheduler, t)) for t in _table_grid(scheduler)]
        if levels[-1].sigma == levels[-2].sigma:
            raise ValueError(f"{type(scheduler).__name__}: the last step goes from alphas_cumprod[0] to "
                             f"final_alpha_cumprod = alphas_cumprod[0] (set_alpha_to_one=False), a step of zero "
                             f"length; use set_alpha_to_one=True")
        return levels
    if kind == "ipndm":
        return [_ipndm_level(scheduler, i) for i in range(start, len(scheduler.betas))]
    sigmas = [float(s) for s in scheduler.sigmas[start:]]
    if type(scheduler).__name__ == "HeunDiscreteScheduler":
        sigmas = sigmas[:1] + sigmas[1::2]  # [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0]: the repeats are Heun's stages
    if any(b >= a for a, b in itertools.pairwise(sigmas)):
        raise ValueError(f"{type(scheduler).__name__}: its sigmas {sigmas} do not decrease strictly; with "
                         f"final_sigmas_type='sigma_min' some schedulers append a last sigma equal to (or, after "
                         f"float32 rounding, above) the one before it, a step of zero length")
    return [_sigma_level(s, kind) for s in sigmas]


def _completes_step(scheduler) -> bool:
    """Whether the last ``step`` call finished a step (not a Heun predictor, a PRK stage or PLMS's predictor)."""
    name = type(scheduler).__name__
    if name == "HeunDiscreteScheduler":
        return scheduler.state_in_first_order
    if name == "PNDMScheduler":
        counter = scheduler.counter
        if scheduler.config.skip_prk_steps:
            return counter != 1
        return counter > len(scheduler.prk_timesteps) or counter % 4 == 0
    return True


def _edm_coefficients(scheduler, sigma: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of the scheduler's ``precondition_outputs`` D = c_skip x + c_out F, read off the map."""
    zero, one = torch.zeros((), dtype=like.dtype), torch.ones((), dtype=like.dtype)
    s = torch.tensor(sigma, dtype=like.dtype)
    return scheduler.precondition_outputs(one, zero, s), scheduler.precondition_outputs(zero, one, s)


def _model_output(scheduler, kind: str, prediction, sample: torch.Tensor, level: Level) -> torch.Tensor:
    if hasattr(scheduler, "precondition_outputs"):
        c_skip, c_out = _edm_coefficients(scheduler, level.sigma, sample)
        return (prediction.x0 - c_skip * sample) / c_out
    if kind == "ipndm":
        return (prediction.eps - level.sigma_vp * sample) / level.alpha_vp
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return prediction.eps
    if prediction_type == "sample":
        return prediction.x0
    if prediction_type == "v_prediction":
        return level.alpha_vp * prediction.eps - level.sigma_vp * prediction.x0
    raise ValueError(f"scheduler: prediction_type {prediction_type!r} is not supported")


def draws_noise(scheduler, step_options=None) -> bool:
    """Whether ``scheduler.step(..., **step_options)`` adds noise: DDIM with ``eta > 0``, the ``sde-*`` algorithms
    of the DPM-Solver multistep schedulers, Euler / EDM Euler with ``s_churn > 0``, DDPM and Euler ancestral."""
    name, options = type(scheduler).__name__, dict(step_options or {})
    if name == "DDIMScheduler":
        return options.get("eta", 0.0) > 0
    if name in ("DPMSolverMultistepScheduler", "EDMDPMSolverMultistepScheduler"):
        return scheduler.config.algorithm_type.startswith("sde-")
    if name in ("EulerDiscreteScheduler", "EDMEulerScheduler"):
        return options.get("s_churn", 0.0) > 0
    return name in ("DDPMScheduler", "EulerAncestralDiscreteScheduler")


_DRAWING = threading.Lock()
"""Held while a step runs with ``randn_tensor`` patched (a module global, shared by all threads)."""


def _drawing_globals(scheduler) -> list[dict]:
    """The globals of every ``step`` in the scheduler's MRO that binds ``randn_tensor`` (each once)."""
    found = {}
    for cls in type(scheduler).__mro__:
        step = vars(cls).get("step")
        namespace = inspect.unwrap(step).__globals__ if callable(step) else {}
        if "randn_tensor" in namespace:
            found[id(namespace)] = namespace
    if not found:
        raise RuntimeError(f"{type(scheduler).__name__}: no step in its MRO draws through randn_tensor")
    return list(found.values())


@contextlib.contextmanager
def _drawing(scheduler, normal):
    """``randn_tensor`` of the scheduler's ``step`` bound, inside the block and for this thread only, to one that
    returns ``normal()`` (once); other threads get the original."""
    owner, draws = threading.get_ident(), []

    def standing_in_for(original):
        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
            if threading.get_ident() != owner:
                return original(shape, generator=generator, device=device, dtype=dtype, layout=layout)
            z = None if draws else normal()
            if z is None or tuple(shape) != tuple(z.shape):
                raise RuntimeError(f"{type(scheduler).__name__}: step drew noise of shape {tuple(shape)}"
                                   f"{' a second time' if draws else ''}; the driver feeds one normal shaped like "
                                   f"the state per step")
            draws.append(shape)
            return z.to(device=device, dtype=dtype)
        return randn_tensor

    with _DRAWING:
        namespaces = _drawing_globals(scheduler)
        originals = [namespace["randn_tensor"] for namespace in namespaces]
        for namespace, original in zip(namespaces, originals, strict=True):
            namespace["randn_tensor"] = standing_in_for(original)
        try:
            yield
        finally:
            for namespace, original in zip(namespaces, originals, strict=True):
                namespace["randn_tensor"] = original


def _step(scheduler, output, timestep, x, options: dict, normal):
    """``scheduler.step`` with the step's normal (``normal()``) as its noise, where it adds noise."""
    if normal is None:
        return scheduler.step(output, timestep, x, **options).prev_sample
    if "variance_noise" in inspect.signature(scheduler.step).parameters:
        return scheduler.step(output, timestep, x, variance_noise=normal(), **options).prev_sample
    with _drawing(scheduler, normal):
        return scheduler.step(output, timestep, x, **options).prev_sample


def run_diffusers_scheduler(scheduler, model: AnalyticModel, x_T: torch.Tensor, noise=None, *,
                            dtype: torch.dtype | None = torch.float64, step_options=None) -> DiffusersRun:
    """Run ``scheduler`` (after its ``set_timesteps``, from its ``begin_index``) with ``model`` from ``x_T``.

    ``x_T`` is in the model's convention at the scheduler's first noise level (time ``times[0]`` of the result);
    so are the returned states. ``dtype`` casts the scheduler's float tables and ``x_T`` (None: leave both).
    ``step_options`` are passed to every ``step`` (DDIM's ``eta``, Euler's ``s_churn``, ...). ``noise``: an
    sdetoolkit noise source, required when the scheduler adds noise (:func:`draws_noise`); it is reset first, and the
    step from level k to k + 1 gets its normal over (times[k], times[k + 1]) (see the module doc).
    """
    kind = _kind(scheduler)
    options = dict(step_options or {})
    stochastic = draws_noise(scheduler, options)
    if stochastic and noise is None:
        raise ValueError(f"noise: {type(scheduler).__name__} with {options or 'its defaults'} adds noise in step and "
                         f"needs an sdetoolkit noise source (it would otherwise draw its own)")
    if stochastic:
        noise.reset()
    if dtype is not None:
        _upcast(scheduler, dtype)
        x_T = x_T.to(dtype)
    schedule = model.schedule
    time_is_sigma = _is_time_sigma(schedule)
    levels = _state_levels(scheduler, kind)
    sigmas = torch.tensor([level.sigma for level in levels], dtype=torch.float64)
    times = times_for_sigmas(schedule, sigmas, time_is_sigma=time_is_sigma)

    def alpha(t) -> float:
        return float(schedule.alpha(t))

    x = x_T * (levels[0].scale / alpha(times[0]))
    xs, call_sigmas, done = [x_T], [], 0
    timesteps = scheduler.timesteps[_start(scheduler):]
    for k, timestep in enumerate(timesteps):
        scheduler.scale_model_input(x, timestep)  # initialises step_index where the scheduler keeps one
        level = _call_level(scheduler, kind, timestep)
        t = times_for_sigmas(schedule, [level.sigma], time_is_sigma=time_is_sigma)[0]
        prediction = model(x * (alpha(t) / level.scale), float(t))
        normal = functools.partial(noise.normal, float(times[done]), float(times[done + 1]), x) if stochastic else None
        x = _step(scheduler, _model_output(scheduler, kind, prediction, x, level), timestep, x, options, normal)
        call_sigmas.append(level.sigma)
        if kind == "sigma-vp" and type(scheduler).__name__ == "UniPCMultistepScheduler" and k >= 1:
            # UniPC returns the predictor's x and corrects it inside the next call (UniC, with the model output at
            # the predicted x): the state of level k is the corrected sample it keeps as last_sample.
            xs[k] = scheduler.last_sample * (alpha(times[k]) / levels[k].scale)
        if _completes_step(scheduler) or k == len(timesteps) - 1:
            done += 1
            if done >= len(levels):
                raise RuntimeError(f"{type(scheduler).__name__}: more completed steps than grid points {sigmas}")
            xs.append(x * (alpha(times[done]) / levels[done].scale))
    if done != len(levels) - 1:
        raise RuntimeError(f"{type(scheduler).__name__}: {done} completed steps on a grid of {len(levels)} points")
    return DiffusersRun(x=xs[-1], xs=torch.stack(xs), sigmas=sigmas, times=times,
                        call_sigmas=torch.tensor(call_sigmas, dtype=torch.float64), nfe=len(timesteps))
