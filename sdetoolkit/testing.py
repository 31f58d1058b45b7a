"""hypothesis strategies for sdetoolkit's objects, usable in any test suite (requires the ``dev`` extra).

* :func:`spd_matrices`: symmetric positive-definite matrices with a controlled spectrum, in a Haar-random basis.
* :func:`gaussians`, :func:`mixtures`: random data distributions with isotropic, diagonal or full covariances.
* :func:`schedules`: the built-in schedule families.
* :func:`times`: times inside a schedule's range, away from its singular ends.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from .distributions import Gaussian, GaussianMixture
from .schedules import NoiseSchedule, get_schedule, list_schedules

COVARIANCE_KINDS = ("isotropic", "diagonal", "full")


@st.composite
def spectra(draw, dim: int, min_eig: float = 1e-3, max_eig: float = 10.0) -> np.ndarray:
    """Positive eigenvalues in [min_eig, max_eig], log-uniformly spread."""
    logs = draw(st.lists(st.floats(np.log(min_eig), np.log(max_eig)), min_size=dim, max_size=dim))
    return np.exp(np.asarray(logs))


@st.composite
def spd_matrices(draw, dim: int, min_eig: float = 1e-3, max_eig: float = 10.0) -> np.ndarray:
    """A symmetric positive-definite matrix with spectrum in [min_eig, max_eig] and a Haar-random basis."""
    eig = draw(spectra(dim, min_eig, max_eig))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))
    return (q * eig) @ q.T


@st.composite
def covariances(draw, kind: str, count: int, dim: int, min_eig: float = 1e-3, max_eig: float = 10.0):
    """``count`` covariances of one kind, in the shape :class:`GaussianMixture` takes."""
    if kind == "isotropic":
        return np.exp(draw(st.lists(st.floats(np.log(min_eig), np.log(max_eig)), min_size=count, max_size=count)))
    if kind == "diagonal":
        return np.stack([draw(spectra(dim, min_eig, max_eig)) for _ in range(count)])
    if kind == "full":
        return np.stack([draw(spd_matrices(dim, min_eig, max_eig)) for _ in range(count)])
    raise ValueError(f"kind: expected one of {COVARIANCE_KINDS}, got {kind!r}")


def _means(count: int, dim: int, scale: float):
    coordinate = st.floats(-scale, scale, allow_nan=False, allow_infinity=False)
    return st.lists(st.lists(coordinate, min_size=dim, max_size=dim), min_size=count, max_size=count)


@st.composite
def mixtures(draw, dims=st.integers(1, 4), components=st.integers(1, 4), kinds=st.sampled_from(COVARIANCE_KINDS),
             mean_scale: float = 3.0, min_eig: float = 1e-3, max_eig: float = 10.0) -> GaussianMixture:
    """A random Gaussian mixture; weights are bounded away from zero."""
    dim, count, kind = draw(dims), draw(components), draw(kinds)
    raw = np.asarray(draw(st.lists(st.floats(0.05, 1.0), min_size=count, max_size=count)))
    means = np.asarray(draw(_means(count, dim, mean_scale)))
    return GaussianMixture(raw / raw.sum(), means, draw(covariances(kind, count, dim, min_eig, max_eig)))


@st.composite
def gaussians(draw, dims=st.integers(1, 4), kinds=st.sampled_from(COVARIANCE_KINDS), mean_scale: float = 3.0,
              min_eig: float = 1e-3, max_eig: float = 10.0) -> Gaussian:
    """A random Gaussian."""
    dim, kind = draw(dims), draw(kinds)
    mean = np.asarray(draw(_means(1, dim, mean_scale)))[0]
    cov = draw(covariances(kind, 1, dim, min_eig, max_eig))[0]
    return Gaussian(mean, cov)


def schedules(names=None) -> st.SearchStrategy[NoiseSchedule]:
    """Built-in schedule families (default parameters), built once each."""
    built = [get_schedule(name) for name in (names or list_schedules())]
    return st.sampled_from(built)


@st.composite
def times(draw, schedule: NoiseSchedule, margin: float = 1e-3) -> float:
    """A time in the schedule's range, at least ``margin`` (relative) from both ends."""
    width = schedule.t_hi - schedule.t_lo
    return draw(st.floats(schedule.t_lo + margin * width, schedule.t_hi - margin * width))


def batch(distribution: GaussianMixture, n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    """A reproducible float64 batch of points around a distribution's means (for evaluating scores)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(distribution.n_components, (n,), generator=generator)
    noise = torch.randn(n, distribution.dim, dtype=torch.float64, generator=generator)
    return distribution.means[labels] + scale * noise
