r"""Run k-diffusion's samplers (``k_diffusion/sampling.py``, Crowson) on sdetoolkit's analytic models.

**Loading without the package.** ``import k_diffusion`` runs its ``__init__``, which imports every submodule and
with them clip, wandb, torchvision, kornia and scikit-image; on recent setuptools it fails. The samplers need none of
that: ``sampling.py`` imports torch, scipy, torchsde, torchdiffeq, tqdm and, from its own package, ``utils``, of
which it uses one function, ``append_dims``. So install the wheel without its dependencies and add the two that
sdetoolkit does not already depend on::

    pip install --no-deps k-diffusion==0.1.1.post1
    pip install torchsde torchdiffeq

(scipy, torch and tqdm are already dependencies of sdetoolkit) or ``pip install sdetoolkit[kdiffusion]`` followed by
the ``--no-deps`` line. :func:`load_sampling` then finds the installed ``sampling.py`` (``importlib.util.find_spec``,
which does not execute the package) and executes that file alone, by location, as the submodule ``sampling`` of a
synthetic package :data:`PACKAGE` whose ``utils`` provides ``append_dims`` (written here: a view of the tensor with
trailing singleton axes). Before executing it, the loader reads the file's syntax tree and refuses (ImportError
naming them) any other relative import or ``utils`` attribute, so a k-diffusion release that needs more fails
loudly instead of at a sampler's first step. No k-diffusion code is copied into sdetoolkit.

**The model convention.** A k-diffusion sampler integrates the variance-exploding probability-flow ODE (Karras et
al. 2022, eq. 4) of :math:`\tilde x = x/\alpha` in :math:`\tilde\sigma = \sigma/\alpha`, and calls
``model(x~, sigma~)`` for the denoised :math:`\hat x_0`; ``sigmas`` decrease. On the ``edm`` schedule
(:math:`\alpha = 1`, :math:`\sigma = t`) this is the model itself. On any other schedule :class:`Denoiser` calls
our model at the time t with :math:`\sigma(t)/\alpha(t) = \tilde\sigma` on :math:`x = \alpha(t)\tilde x`
(:math:`\hat x_0` needs no rescaling), and the runners here convert the start and every returned state back to the
model's convention. Times of grid points are looked up rather than recomputed, so k-diffusion and our solvers call
the model at bit-identical times.

**Noise.** A stochastic sampler receives a ``noise_sampler(sigma, sigma_next)`` built from an sdetoolkit noise
source (:class:`NoiseSampler`): the source's ``normal`` over the interval of model times. With
:class:`~sdetoolkit.noise.IIDNoise` this is the normal our solvers draw for the same step (their closed-form or
kernel-integral noise is that normal times its standard deviation), so a k-diffusion run and ours see the same
noise. With a :class:`~sdetoolkit.noise.BrownianPath` it is the normalised Brownian increment in the model's time,
which on the ``edm`` schedule is k-diffusion's own ``BrownianTreeNoiseSampler`` convention (a Brownian motion in
sigma). Samplers with ``s_churn > 0`` (euler, heun, dpm_2) draw ``torch.randn_like`` inside and are refused.

:class:`KDiffusionSampler` presents a sampler that takes ``sigmas`` as an (unregistered) :class:`Solver`, so every
study (:func:`~sdetoolkit.studies.ode_order`, weak and strong orders, distances) runs on it unchanged.
``sample_dpm_fast`` and ``sample_dpm_adaptive`` build their own grids and have their own runners.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import importlib.metadata
import importlib.util
import inspect
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models import AnalyticModel
from ..schedules import get_schedule
from ..solvers.base import Claim, Solver
from .diffusers_driver import _is_time_sigma, times_for_sigmas

PACKAGE = "sdetoolkit_k_diffusion"
"""The synthetic package ``sampling.py`` is executed in (``sys.modules[PACKAGE + ".sampling"]``)."""

TESTED_VERSION = "0.1.1.post1"
"""The k-diffusion release this adapter was written and tested against."""

INSTALL = "pip install --no-deps k-diffusion==0.1.1.post1 && pip install torchsde torchdiffeq"

PROVIDED_UTILS = ("append_dims",)
"""The names of ``k_diffusion.utils`` the synthetic package provides."""

GRID_FREE = ("dpm_fast", "dpm_adaptive")
"""Samplers that build their own grid from (sigma_min, sigma_max) and have their own runners."""

_LOOP_ARGUMENTS = ("model", "x", "sigmas", "extra_args", "callback", "disable", "noise_sampler")


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """``x`` viewed with trailing singleton axes up to ``target_dims`` axes (k-diffusion's ``utils.append_dims``)."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"target_dims: {target_dims} is fewer than the {x.ndim} axes of x")
    return x.reshape(*x.shape, *([1] * missing))


def _package_dependencies(path: Path) -> tuple[set[str], set[str]]:
    """(names imported relatively by ``from . import ...``, attributes read off ``utils``) in ``sampling.py``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    relative, attributes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            relative.update(f"{node.module + '.' if node.module else ''}{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "utils":
            attributes.add(node.attr)
    return relative, attributes


def sampling_path() -> Path:
    """The installed ``k_diffusion/sampling.py`` (found without executing the package)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"k-diffusion is not installed; install its sampling module with: {INSTALL}",
                                  name="k_diffusion")
    path = Path(next(iter(spec.submodule_search_locations))) / "sampling.py"
    if not path.is_file():
        raise ModuleNotFoundError(f"k_diffusion has no sampling.py at {path}", name="k_diffusion")
    return path


def version() -> str:
    """The installed k-diffusion version."""
    return importlib.metadata.version("k-diffusion")


def check_sampling_source(path: Path) -> None:
    """Raise ImportError if the ``sampling.py`` at ``path`` needs more of its package than the synthetic one
    provides (a relative import other than ``utils``, or a ``utils`` attribute not in :data:`PROVIDED_UTILS`)."""
    relative, attributes = _package_dependencies(Path(path))
    unknown = (relative - {"utils"}) | {f"utils.{name}" for name in attributes - set(PROVIDED_UTILS)}
    if unknown:
        raise ImportError(f"{path}: sampling.py needs {sorted(unknown)} from its package, which the loader does not "
                          f"provide (written for k-diffusion {TESTED_VERSION}, which needs utils.append_dims only)")


@functools.cache
def load_sampling() -> types.ModuleType:
    """``k_diffusion/sampling.py`` executed alone in the synthetic package :data:`PACKAGE` (see the module doc)."""
    path = sampling_path()
    check_sampling_source(path)
    package = types.ModuleType(PACKAGE, "Synthetic parent of k-diffusion's sampling.py (sdetoolkit.interop).")
    package.__path__ = []
    utils = types.ModuleType(f"{PACKAGE}.utils", "The part of k_diffusion.utils that sampling.py uses.")
    utils.append_dims = append_dims
    package.utils = utils
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}.sampling", path)
    module = importlib.util.module_from_spec(spec)
    saved = {name: sys.modules.get(name) for name in (PACKAGE, utils.__name__, spec.name)}
    sys.modules.update({PACKAGE: package, utils.__name__: utils, spec.name: module})
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
        raise
    package.sampling = module
    return module


def available() -> bool:
    """Whether k-diffusion's sampling module can be loaded (installed, with torchsde and torchdiffeq)."""
    try:
        load_sampling()
    except ImportError:
        return False
    return True


def sampler_names() -> list[str]:
    """Every ``sample_*`` function of the installed sampling module, without the prefix."""
    module = load_sampling()
    return sorted(name.removeprefix("sample_") for name, value in vars(module).items()
                  if name.startswith("sample_") and callable(value))


def sampler_function(name: str):
    """The function ``sample_<name>``."""
    function = getattr(load_sampling(), f"sample_{name}", None)
    if function is None:
        raise ValueError(f"sampler: k-diffusion {version()} has no sample_{name}; it has {', '.join(sampler_names())}")
    return function


def sampler_options(name: str) -> dict:
    """The keyword options of ``sample_<name>`` with their defaults (the loop's own arguments left out)."""
    parameters = inspect.signature(sampler_function(name)).parameters
    skipped = (*_LOOP_ARGUMENTS, "sigma_min", "sigma_max", "n")
    return {key: p.default for key, p in parameters.items()
            if key not in skipped and p.default is not inspect.Parameter.empty}


def is_stochastic(name: str, options: dict) -> bool:
    """Whether ``sample_<name>`` with ``options`` draws noise: it takes a noise sampler, and eta and s_noise are
    non-zero (its ``s_churn`` is refused elsewhere)."""
    settings = {**sampler_options(name), **options}
    takes_noise = "noise_sampler" in inspect.signature(sampler_function(name)).parameters
    return takes_noise and bool(settings.get("eta", 1.0)) and bool(settings.get("s_noise", 1.0))


def _check_options(name: str, options: dict) -> None:
    known = sampler_options(name)
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"{', '.join(sorted(unknown))}: not options of sample_{name}; known: {', '.join(known)}")
    if options.get("s_churn", 0.0):
        raise ValueError(f"s_churn: sample_{name} draws its churn noise with torch.randn_like, which cannot be fed "
                         "from an sdetoolkit noise source; use s_churn=0 (or our edm-stochastic solvers)")


class Denoiser:
    r"""k-diffusion's ``model(x~, sigma~)`` on an :class:`~sdetoolkit.models.AnalyticModel`: the data prediction at
    :math:`x = \alpha(t)\tilde x`, t the time with :math:`\sigma(t)/\alpha(t) = \tilde\sigma`.

    ``times``: grid times whose sigma~ are looked up (exact round trip); other sigma~ are inverted.
    """

    def __init__(self, model: AnalyticModel, times=()):
        self.model = model
        self.schedule = model.schedule
        self._time_is_sigma = _is_time_sigma(self.schedule)
        times = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
        self.sigmas = self.schedule.sigma_over_alpha(times) if len(times) else times
        self._times = {float(s): float(t) for s, t in zip(self.sigmas, times, strict=True)}

    def time(self, sigma) -> float:
        """The model time of the noise level sigma~ (a float or a tensor whose entries are all equal)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        value = float(sigma[0])
        if bool((sigma != value).any()):
            raise ValueError(f"sigma: a k-diffusion model call with different noise levels in one batch "
                             f"({float(sigma.min())} to {float(sigma.max())}) is not supported")
        if value in self._times:
            return self._times[value]
        return float(times_for_sigmas(self.schedule, [value], time_is_sigma=self._time_is_sigma)[0])

    def __call__(self, x: torch.Tensor, sigma, **extra_args) -> torch.Tensor:
        if extra_args:
            raise ValueError(f"extra_args: the analytic model takes none, got {sorted(extra_args)}")
        t = self.time(sigma)
        return self.model(x * float(self.schedule.alpha(t)), t).x0


class NoiseSampler:
    """k-diffusion's ``noise_sampler(sigma, sigma_next)`` from an sdetoolkit noise source: the source's standard
    normal over the model times of [sigma_next, sigma], shaped like ``like``."""

    def __init__(self, noise, denoiser: Denoiser, like: torch.Tensor):
        self.noise, self.denoiser, self.like = noise, denoiser, like

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        return self.noise.normal(self.denoiser.time(sigma), self.denoiser.time(sigma_next), self.like)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """torch's default dtype set to ``dtype`` inside the block (dpm_fast and dpm_adaptive build their log-sigma
    grids and tolerances with ``torch.linspace`` / ``torch.tensor`` of Python numbers, i.e. in the default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@dataclass(frozen=True)
class KDiffusionRun:
    """A k-diffusion run in the model's convention: ``xs`` (n_steps + 1, N, d) holds x_T and the state after every
    step on ``times`` (model times) / ``sigmas`` (sigma~); ``nfe`` counts model evaluations per trajectory; ``info``
    is what an adaptive sampler reports."""

    x: torch.Tensor
    xs: torch.Tensor
    sigmas: torch.Tensor
    times: torch.Tensor
    nfe: int
    info: dict | None = None


def _zero_noise(sigma, sigma_next) -> float:
    """The noise sampler of a deterministic run: some samplers build a torchsde Brownian tree (seeded from torch's
    global generator) or draw from it even when eta = 0 multiplies the draw by zero."""
    return 0.0


def _noise_sampler(name: str, options: dict, noise, denoiser: Denoiser, like: torch.Tensor) -> dict:
    if "noise_sampler" not in inspect.signature(sampler_function(name)).parameters:
        return {}
    if not is_stochastic(name, options):
        return dict(noise_sampler=_zero_noise)
    if noise is None:
        raise ValueError(f"noise: sample_{name} with {options or 'its defaults'} is stochastic and needs an "
                         "sdetoolkit noise source (it would otherwise draw its own)")
    noise.reset()
    return dict(noise_sampler=NoiseSampler(noise, denoiser, like))


def run_kdiffusion(sampler: str, model: AnalyticModel, times, x_T: torch.Tensor, noise=None,
                   **options) -> KDiffusionRun:
    """Run ``sample_<sampler>`` over the decreasing model ``times`` from ``x_T`` (model convention at times[0]).

    ``noise``: an sdetoolkit noise source, required when the sampler is stochastic with these ``options``.
    """
    if sampler in GRID_FREE:
        raise ValueError(f"sampler: {sampler} builds its own grid; use run_dpm_fast / run_dpm_adaptive")
    _check_options(sampler, options)
    times = torch.as_tensor(times, dtype=torch.float64)
    denoiser = Denoiser(model, times)
    sigmas = denoiser.sigmas.to(dtype=x_T.dtype, device=x_T.device)
    alphas = model.schedule.alpha(times)
    states = [x_T / float(alphas[0])]
    extra = _noise_sampler(sampler, options, noise, denoiser, states[0])

    def record(info: dict) -> None:
        if info["i"] > 0:
            states.append(info["x"])

    nfe = model.nfe
    x = sampler_function(sampler)(denoiser, states[0], sigmas, callback=record, disable=True, **extra, **options)
    states.append(x)
    if len(states) != len(times):
        raise RuntimeError(f"sample_{sampler}: {len(states) - 1} steps recorded on a grid of {len(times) - 1}")
    xs = torch.stack([state * float(alpha) for state, alpha in zip(states, alphas, strict=True)])
    return KDiffusionRun(x=xs[-1], xs=xs, sigmas=denoiser.sigmas, times=times, nfe=model.nfe - nfe)


def dpm_fast_orders(nfe: int) -> list[int]:
    """The order of each step of ``sample_dpm_fast`` with ``nfe`` evaluations: floor(nfe/3) + 1 steps uniform in
    log sigma~, third order, the last two second and first order (nfe mod 3 = 0) or the last of order nfe mod 3
    (Lu et al. 2022, DPM-Solver, arXiv 2206.00927, Sec. 3.4, "DPM-Solver-fast")."""
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise ValueError(f"nfe: expected a positive int, got {nfe!r}")
    steps = nfe // 3 + 1
    return [3] * (steps - 2) + [2, 1] if nfe % 3 == 0 else [3] * (steps - 1) + [nfe % 3]


def _grid_free_run(sampler: str, model: AnalyticModel, t_max: float, t_min: float, x_T: torch.Tensor, noise,
                   positional: tuple, options: dict) -> tuple[KDiffusionRun, dict | None]:
    """Run a sampler that takes (sigma_min, sigma_max); its callback reports (sigma, x) before each step
    (dpm_fast) or after each attempted step (dpm_adaptive, with its count of accepted steps)."""
    _check_options(sampler, options)
    denoiser = Denoiser(model, torch.tensor([t_max, t_min], dtype=torch.float64))
    sigma_max, sigma_min = (float(s) for s in denoiser.sigmas)
    alpha = model.schedule.alpha
    states, sigmas = [x_T / float(alpha(t_max))], [sigma_max]

    def record(info: dict) -> None:
        if info["n_accept"] > len(states) - 1 if "n_accept" in info else info["i"] > 0:
            states.append(info["x"])
            sigmas.append(float(info["sigma"]))

    extra = _noise_sampler(sampler, options, noise, denoiser, states[0])
    nfe = model.nfe
    with default_dtype(x_T.dtype):
        out = sampler_function(sampler)(denoiser, states[0], sigma_min, sigma_max, *positional, disable=True,
                                        callback=record, **extra, **options)
    x, info = out if isinstance(out, tuple) else (out, None)
    if sampler == "dpm_fast":  # the callback saw the state before each step: the result is the last state
        states.append(x)
        sigmas.append(sigma_min)
    times = torch.tensor([denoiser.time(s) for s in sigmas], dtype=torch.float64)
    xs = torch.stack([state * float(alpha(t)) for state, t in zip(states, times, strict=True)])
    return KDiffusionRun(x=xs[-1], xs=xs, sigmas=torch.tensor(sigmas, dtype=torch.float64), times=times,
                         nfe=model.nfe - nfe), info


def run_dpm_fast(model: AnalyticModel, t_max: float, t_min: float, nfe: int, x_T: torch.Tensor, noise=None,
                 **options) -> KDiffusionRun:
    """``sample_dpm_fast`` with ``nfe`` evaluations from t_max to t_min (orders: :func:`dpm_fast_orders`)."""
    dpm_fast_orders(nfe)
    return _grid_free_run("dpm_fast", model, t_max, t_min, x_T, noise, (nfe,), options)[0]


def run_dpm_adaptive(model: AnalyticModel, t_max: float, t_min: float, x_T: torch.Tensor, noise=None,
                     **options) -> KDiffusionRun:
    """``sample_dpm_adaptive`` from t_max to t_min (``rtol``, ``atol``, ``order``, ... as k-diffusion's). ``xs``
    and ``times`` are the accepted steps (it stops within 1e-5 in log sigma~ of t_min); ``info`` its step counts;
    ``nfe`` includes the evaluations of rejected steps."""
    run, info = _grid_free_run("dpm_adaptive", model, t_max, t_min, x_T, noise, (), {**options, "return_info": True})
    return KDiffusionRun(x=run.x, xs=run.xs, sigmas=run.sigmas, times=run.times, nfe=run.nfe,
                         info={key: int(value) for key, value in info.items()})


class KDiffusionSampler(Solver):
    """A k-diffusion sampler that takes ``sigmas``, as an unregistered :class:`Solver` for the studies.

    :func:`~sdetoolkit.solvers.sample` hands it the grid; its first step runs the whole k-diffusion loop
    (:func:`run_kdiffusion`, with the run's noise source) and every step returns the recorded state, so all model
    evaluations are counted on step 0 of a trace. It is not treated as affine (``linear = False``).
    """

    register = False
    name = "k-diffusion"
    family = "k-diffusion"
    parameterisation = "x0"
    nfe_per_step = None
    linear = False
    claim = Claim(None, "none", "k-diffusion's sampling.py states no orders")
    citation = "Crowson, k-diffusion (github.com/crowsonkb/k-diffusion), k_diffusion/sampling.py"

    def __init__(self, sampler: str, **options):
        if sampler in GRID_FREE:
            raise ValueError(f"sampler: {sampler} builds its own grid; use run_dpm_fast / run_dpm_adaptive")
        sampler_function(sampler)
        _check_options(sampler, options)
        self.sampler, self.options = sampler, dict(options)
        self.config = {"sampler": sampler, **options}
        self.name = f"k-diffusion:{sampler}"
        self.stochastic = is_stochastic(sampler, options)
        self._states: torch.Tensor | None = None

    @property
    def order(self) -> int:
        return 1

    def step(self, state) -> torch.Tensor:
        if state.i == 0:
            self._states = run_kdiffusion(self.sampler, state.model, state.times, state.x, state.noise,
                                          **self.options).xs
        return self._states[state.i + 1]


def on_sigma_schedule(problem, sigma_max: float | None = None):
    r"""``problem`` in k-diffusion's own variables: the same data on the ``edm`` schedule (:math:`\alpha = 1`,
    :math:`\sigma = t`) over the same range of :math:`\tilde\sigma`, so that a Brownian path in the model's time is
    one in sigma, as k-diffusion's ``BrownianTreeNoiseSampler`` draws it. ``sigma_max``: the schedule's upper end
    (default: the window's)."""
    window = problem.schedule.sigma_over_alpha(torch.tensor([problem.t_min, problem.t_max], dtype=torch.float64))
    t_min, t_max = float(window[0]), float(window[1])
    schedule = get_schedule("edm", sigma_max=t_max if sigma_max is None else sigma_max)
    return dataclasses.replace(problem, name=f"{problem.name}@edm", schedule=schedule, t_min=t_min, t_max=t_max)


def relative_differences(ours: torch.Tensor, theirs: torch.Tensor) -> np.ndarray:
    """Per state: max|ours - theirs| / max|theirs| over the batch (states along the first axis)."""
    scale = theirs.abs().flatten(1).amax(1).clamp_min(torch.finfo(theirs.dtype).tiny)
    return ((ours - theirs).abs().flatten(1).amax(1) / scale).cpu().double().numpy()


@dataclass(frozen=True)
class Agreement:
    """How two trajectories on one grid agree: per-state relative differences, the largest, and the first state
    above ``tolerance`` (None if none) with its difference."""

    differences: np.ndarray
    tolerance: float

    @property
    def max_difference(self) -> float:
        return float(self.differences.max())

    @property
    def first_divergence(self) -> int | None:
        above = np.flatnonzero(self.differences > self.tolerance)
        return int(above[0]) if above.size else None

    @property
    def agrees(self) -> bool:
        return self.first_divergence is None

    def __str__(self) -> str:
        if self.agrees:
            return f"agrees: max relative difference {self.max_difference:.3g} <= {self.tolerance:.3g}"
        first = self.first_divergence
        return (f"diverges at state {first}: relative difference {self.differences[first]:.3g} > "
                f"{self.tolerance:.3g} (max {self.max_difference:.3g})")


def agreement(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float) -> Agreement:
    """:class:`Agreement` of two (n_states, N, d) trajectories."""
    if ours.shape != theirs.shape:
        raise ValueError(f"ours: shape {tuple(ours.shape)} differs from theirs {tuple(theirs.shape)}")
    if not (isinstance(tolerance, float) and tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance: expected a finite non-negative float, got {tolerance!r}")
    return Agreement(relative_differences(ours, theirs), tolerance)
