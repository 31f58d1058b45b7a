r"""Noise sources: stochastic solvers never call ``torch.randn``, they ask a source.

Over a step of the reverse process from ``t_hi`` down to ``t_lo`` a solver asks for one of:

* :meth:`NoiseSource.normal`: a standard normal tensor shaped like ``x``;
* :meth:`NoiseSource.integrals`: the stochastic integrals :math:`I_K = \int_{t_{lo}}^{t_{hi}} K(u)\,\mathrm{d}W(u)`
  of deterministic kernels :math:`K` (``None`` is the plain increment :math:`\Delta W`), drawn **jointly and
  exactly** from their Gaussian law, :math:`\operatorname{Cov}(I_K, I_L) = \int K L\,\mathrm{d}u` (Itô isometry).

Exponential-integrator SDE solvers need exactly these integrals: with the linear part of the reverse SDE integrated
exactly, the noise of a step is :math:`c(t_{lo})\int K(u)\,\mathrm{d}\bar W(u)` for a kernel fixed by the schedule
(:func:`data_prediction_kernel`, :func:`noise_prediction_kernel`).

Two sources:

* :class:`IIDNoise`: fresh draws per step. Batch-size invariant: the noise of sample i depends on (seed, i, the
  step's times), not on how many samples are drawn together (normals come in seeded blocks of
  :data:`BLOCK` samples).
* :class:`BrownianPath`: one Brownian path on a fixed set of times, the union of every time the runs will ask for
  (:meth:`BrownianPath.covering` finds it by a dry run). On each elementary interval the vector
  :math:`(\Delta W, I_{K_1}, \dots)` is drawn exactly; a step's integrals are sums over its elementary intervals, so
  coarse increments are sums of fine ones and every grid sees the same path. This is what makes strong-order studies
  valid. (torchsde's ``BrownianInterval`` gives :math:`W` and Lévy areas of one Brownian motion, but not the
  kernel integrals, which are Gaussian jointly with :math:`W` and not functions of its values at the query times.)

Covariances :math:`\int K_i K_j` come from Gauss–Legendre quadrature in :math:`\lambda` (panels of width at most
:data:`PANEL`), factored by a QR decomposition of the weighted kernel values, which never forms the cancelling
difference :math:`\int K^2 - (\int K)^2/\Delta t`.
"""

from __future__ import annotations

import functools
import math
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from ._checks import check_scalar_time

BLOCK = 1024
"""Samples per seeded block of normals (the unit of batch-size invariance)."""

CACHE_BYTES = 2**29
"""A Brownian path keeps all its elementary increments for a batch when they fit in this many bytes."""

PANEL = 0.125
"""Widest quadrature panel, in log-SNR."""

_NODES, _WEIGHTS = (torch.as_tensor(a, dtype=torch.float64) for a in np.polynomial.legendre.leggauss(16))


class Kernel:
    r"""A deterministic integrand :math:`K(t)` of :math:`\int K\,\mathrm{d}W`, tied to a schedule.

    Kernels compare equal by ``name``, which must identify the function (include the schedule and parameters).
    """

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], schedule):
        self.name, self.fn, self.schedule = name, fn, schedule

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return self.fn(t)

    def __eq__(self, other) -> bool:
        return isinstance(other, Kernel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Kernel({self.name!r})"


def data_prediction_kernel(schedule) -> Kernel:
    r""":math:`K(u) = g(u)\,\alpha(u)/\sigma(u)^2`: the noise of a data-prediction exponential integrator.

    The reverse SDE :math:`\mathrm{d}x = [f x - g^2\nabla\log p]\,\mathrm{d}t + g\,\mathrm{d}\bar W` with
    :math:`\nabla\log p = -(x - \alpha\hat x_0)/\sigma^2` has the linear part :math:`(2\dot\sigma/\sigma - f)x`,
    whose transition is :math:`(\sigma_t/\sigma_u)e^{\lambda_u - \lambda_t}`; the step's noise is
    :math:`\sigma_t e^{-\lambda_t}\int K\,\mathrm{d}\bar W`, of variance :math:`\sigma_t^2(1 - e^{-2h})`
    (Lu et al. 2022b, DPM-Solver++, arXiv 2211.01095, SDE-DPM-Solver++1; Gonzalez et al. 2023, SEEDS).
    """
    return Kernel(f"g*alpha/sigma^2[{schedule!r}]",
                  lambda u: schedule.g2(u).sqrt() * schedule.alpha(u) / schedule.sigma(u) ** 2, schedule)


def noise_prediction_kernel(schedule) -> Kernel:
    r""":math:`K(u) = g(u)/\alpha(u)`: the noise of a noise-prediction exponential integrator.

    With :math:`\nabla\log p = -\hat\varepsilon/\sigma` the linear part is :math:`f x`, transition
    :math:`\alpha_t/\alpha_u`; the step's noise is :math:`\alpha_t\int K\,\mathrm{d}\bar W`, of variance
    :math:`\sigma_t^2(e^{2h} - 1)` (Lu et al. 2022a, DPM-Solver, arXiv 2206.00927, App.; Gonzalez et al. 2023, SEEDS).
    """
    return Kernel(f"g/alpha[{schedule!r}]", lambda u: schedule.g2(u).sqrt() / schedule.alpha(u), schedule)


def lambda_nodes(lam_lo: torch.Tensor, lam_hi: torch.Tensor, panel: float = PANEL) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre nodes and weights on each interval [lam_lo_j, lam_hi_j] (1-d float64 tensors): 16-point panels
    of width at most ``panel``, the same panel count for every interval. Returns two (J, n) tensors."""
    panels = max(1, math.ceil(float((lam_hi - lam_lo).max()) / panel))
    edges = lam_lo[:, None] + (lam_hi - lam_lo)[:, None] * torch.linspace(0, 1, panels + 1, dtype=torch.float64)
    left, right = edges[:, :-1], edges[:, 1:]
    lam = (0.5 * (left + right))[..., None] + (0.5 * (right - left))[..., None] * _NODES
    weight = (0.5 * (right - left))[..., None] * _WEIGHTS
    return lam.reshape(len(lam_lo), -1), weight.reshape(len(lam_lo), -1)


def gram_factor(kernels: Sequence[Kernel | None], lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    r"""Lower-triangular :math:`L` with :math:`L L^\top = \big(\int_{lo}^{hi} K_i K_j\,\mathrm{d}u\big)_{ij}`.

    ``lo``, ``hi``: 1-d tensors of interval ends (float64). Returns (J, m, m). ``None`` is :math:`K = 1`; with it first,
    the first row is :math:`(\sqrt{hi - lo}, 0, \dots)`, so :math:`\Delta W` does not depend on the other kernels.
    """
    lo, hi = lo.to(torch.float64), hi.to(torch.float64)
    schedule = next((k.schedule for k in kernels if k is not None), None)
    width = hi - lo
    if schedule is None:
        factor = torch.zeros(len(lo), len(kernels), len(kernels), dtype=torch.float64)
        factor[:, :, 0] = width.sqrt()[:, None]
        return factor
    lam_lo, lam_hi = schedule.lam(hi), schedule.lam(lo)
    if not bool(torch.isfinite(lam_hi).all()):
        raise ValueError("t_lo: a stochastic integral down to sigma = 0 has no finite log-SNR; end the noise one "
                         "step earlier")
    lam, weight = lambda_nodes(lam_lo, lam_hi)
    t = schedule.t_of_lambda(lam).clamp(lo[:, None], hi[:, None])
    weight = weight / -schedule.dlambda_dt(t)
    values = torch.stack([torch.ones_like(t) if k is None else k(t) for k in kernels], dim=-1)
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"kernels: not finite on [{float(lo.min())}, {float(hi.max())}]")
    r = torch.linalg.qr(weight.sqrt()[..., None] * values, mode="r")[1]
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (sign[..., :, None] * r).transpose(-1, -2)


@functools.lru_cache(maxsize=65536)
def step_factor(kernels: tuple[Kernel | None, ...], t_lo: float, t_hi: float) -> torch.Tensor:
    """:func:`gram_factor` of one interval (m, m), memoised: every run over a grid asks for the same steps."""
    ends = (torch.tensor([t], dtype=torch.float64) for t in (t_lo, t_hi))
    return gram_factor(kernels, *ends)[0]


def _bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


class NoiseSource:
    """Base class: draws keyed by (seed, tag, interval, repeat); subclasses say how a step's noise is made."""

    def __init__(self, seed: int = 0):
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
        self.seed = seed
        self._repeats: Counter = Counter()

    def reset(self) -> None:
        """Forget which intervals were drawn, so the next run repeats the same noise (``sample`` calls this)."""
        self._repeats.clear()

    def _normals(self, key: tuple, count: int, like: torch.Tensor) -> torch.Tensor:
        """``count`` standard normal tensors shaped like ``like``: sample i from block i // BLOCK of ``key``."""
        n = like.shape[0]
        rest = like.shape[1:]
        blocks = []
        for block in range(-(-n // BLOCK)):
            entropy = [self.seed, *key, block]
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(
                1, np.uint64)[0]))
            blocks.append(torch.randn((BLOCK, count, *rest), generator=generator, dtype=torch.float64))
        draws = (blocks[0] if len(blocks) == 1 else torch.cat(blocks))[:n].transpose(0, 1)
        return draws.to(dtype=like.dtype, device=like.device)

    def _fresh_key(self, tag: int, t_hi: float, t_lo: float, copy: int = 0) -> tuple:
        interval = (tag, _bits(t_hi), _bits(t_lo), copy)
        repeat = self._repeats[interval]
        self._repeats[interval] += 1
        return (*interval, repeat)

    @staticmethod
    def _check_interval(t_hi, t_lo) -> tuple[float, float]:
        t_hi, t_lo = check_scalar_time(t_hi, "t_hi"), check_scalar_time(t_lo, "t_lo")
        if t_hi < t_lo:
            raise ValueError(f"t_hi: must be >= t_lo, got t_hi = {t_hi} < t_lo = {t_lo}")
        return t_hi, t_lo

    def normal(self, t_hi, t_lo, like: torch.Tensor, copy: int = 0) -> torch.Tensor:
        """A standard normal tensor shaped like ``like`` for the step from ``t_hi`` down to ``t_lo``.

        ``copy`` > 0 asks for an independent copy of the noise over the same interval (Restart's repeated jumps).
        """
        raise NotImplementedError

    def integrals(self, t_hi, t_lo, kernels: Sequence[Kernel | None], like: torch.Tensor,
                  copy: int = 0) -> tuple[torch.Tensor, ...]:
        r"""Jointly exact :math:`\int_{t_lo}^{t_hi} K\,\mathrm{d}W` for each kernel (``None``: :math:`\Delta W`);
        ``copy`` > 0: an independent copy over the same interval."""
        raise NotImplementedError


class IIDNoise(NoiseSource):
    """Independent draws for every step (and every repeated request of a step), seeded and batch-size invariant.

    ``integrals`` over one kernel is :math:`\\sqrt{\\int K^2}` times the same normal ``normal`` would return for
    that step, so a solver written with closed-form variances and one written with kernels see the same noise.
    """

    def normal(self, t_hi, t_lo, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        return self._normals(self._fresh_key(0, t_hi, t_lo, copy), 1, like)[0]

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        kernels = tuple(kernels)
        factor = step_factor(kernels, t_lo, t_hi).to(dtype=like.dtype, device=like.device)
        z = self._normals(self._fresh_key(0, t_hi, t_lo, copy), len(kernels), like)
        return tuple(torch.tensordot(factor, z, dims=1))


class BrownianPath(NoiseSource):
    """One Brownian path on the sorted union ``times`` of every time a run will ask for, with its kernel integrals.

    ``kernels`` are the kernels the runs will ask for (beyond the plain increment). Asking for a time not in
    ``times`` or an undeclared kernel is an error. ``normal`` over a step is :math:`\\Delta W/\\sqrt{t_{hi}-t_{lo}}`;
    at a single time (``t_hi == t_lo``, e.g. a Langevin corrector) it is an independent seeded draw. ``copy`` = k > 0
    reads the same interval of the k-th of a family of independent paths (the same for every grid).
    """

    def __init__(self, times: Iterable[float], seed: int = 0, kernels: Iterable[Kernel] = ()):
        super().__init__(seed)
        grid = np.unique(np.asarray([float(t) for t in times], dtype=np.float64))
        grid = grid[np.concatenate([[True], np.diff(grid) > 1e-12 * np.maximum(1.0, np.abs(grid[1:]))])]
        if grid.size < 2 or not np.isfinite(grid).all():
            raise ValueError("times: need at least two distinct finite times")
        self.times = grid
        self.kernels = (None, *dict.fromkeys(kernels))
        t = torch.as_tensor(grid)
        self._factors = gram_factor(self.kernels, t[:-1], t[1:])
        self._cache: torch.Tensor | None = None

    @classmethod
    def covering(cls, solver, model, grids: Iterable, seed: int = 0) -> BrownianPath:
        """The path covering every time and kernel ``solver`` asks for on each of ``grids`` (found by a dry run)."""
        from .solvers.base import sample

        recorder = _Recorder()
        x = torch.zeros(1, model.distribution.dim, dtype=torch.float64)
        nfe = model.nfe
        for grid in grids:
            sample(solver, model, grid, x, recorder)
        model.nfe = nfe
        return cls(recorder.times, seed, recorder.kernels)

    def _index(self, t: float, name: str) -> int:
        k = int(np.searchsorted(self.times, t))
        for j in (k - 1, k):
            if 0 <= j < len(self.times) and abs(self.times[j] - t) <= 1e-12 * max(1.0, abs(t)):
                return j
        raise ValueError(f"{name}: time {t!r} is not on the Brownian path's times (build the path with "
                         f"BrownianPath.covering or include every grid and stage time)")

    def _increment(self, j: int, like: torch.Tensor, copy: int = 0) -> torch.Tensor:
        """The exact (m, *like.shape) increments of (W, I_K1, ...) over elementary interval j, in float64 on CPU."""
        key = (1, j) if copy == 0 else (1, j, copy)
        z = self._normals(key, len(self.kernels), like.to(device="cpu", dtype=torch.float64))
        return torch.tensordot(self._factors[j], z, dims=1)

    def _increments(self, lo: int, hi: int, like: torch.Tensor, copy: int = 0) -> torch.Tensor:
        """Sum of the increments over elementary intervals lo..hi-1; those of the path itself are all kept when they
        fit in :data:`CACHE_BYTES`, so the many runs of a study draw each one once."""
        size = (len(self.times) - 1) * len(self.kernels) * like.numel() * 8
        if size > CACHE_BYTES or copy:
            return sum((self._increment(j, like, copy) for j in range(lo, hi)),
                       torch.zeros(len(self.kernels), *like.shape, dtype=torch.float64))
        if self._cache is None or self._cache.shape[2:] != like.shape:
            self._cache = torch.stack([self._increment(j, like) for j in range(len(self.times) - 1)])
        return self._cache[lo:hi].sum(0)

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        rows = []
        for kernel in kernels:
            if kernel not in self.kernels:
                raise ValueError(f"kernels: {kernel!r} was not declared when the path was built "
                                 f"(declared: {self.kernels[1:]})")
            rows.append(self.kernels.index(kernel))
        total = self._increments(self._index(t_lo, "t_lo"), self._index(t_hi, "t_hi"), like, copy)
        total = total.to(dtype=like.dtype, device=like.device)
        return tuple(total[r] for r in rows)

    def normal(self, t_hi, t_lo, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        if t_hi == t_lo:
            return self._normals(self._fresh_key(2, t_hi, t_lo, copy), 1, like)[0]
        return self.integrals(t_hi, t_lo, (None,), like, copy)[0] / math.sqrt(t_hi - t_lo)


class _Recorder(NoiseSource):
    """Zero noise that records the times and kernels a run asks for."""

    def __init__(self):
        super().__init__(0)
        self.times: set[float] = set()
        self.kernels: dict[Kernel, None] = {}

    def normal(self, t_hi, t_lo, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        self.times.update((t_hi, t_lo))
        return torch.zeros_like(like)

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        self.times.update((t_hi, t_lo))
        self.kernels.update((k, None) for k in kernels if k is not None)
        return tuple(torch.zeros_like(like) for _ in kernels)
