"""The problem catalogue: named analytic test problems, kept as TOML data in ``problems/``.

A problem is a data distribution, a schedule and a time window [t_min, t_max]. Its file states the distribution as
explicit numbers or as a seeded recipe (numpy ``default_rng``), and documents reference facts (dimension,
condition number, mode separation, exact moments). :func:`reference_facts` recomputes the facts, and the test
suite checks the files against it, so the documentation cannot drift from the data.

Recipes for ``means``: ``ring`` (count, radius), ``grid`` (per_side, spacing), ``normal`` (count, dim, scale,
seed). Recipes for ``covs``: ``isotropic`` (variance, count), ``spectrum`` (dim, largest, condition, count,
rotate, jitter, seed): eigenvalues log-spaced from ``largest`` down by ``condition``, scaled per component by
``exp(jitter * N(0,1))``, in a Haar-random basis when ``rotate``. Recipes for ``weights``: ``uniform`` (count),
``dirichlet`` (count, concentration, seed).
"""

from __future__ import annotations

import importlib.resources
import itertools
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from .distributions import Gaussian, GaussianMixture
from .models import AnalyticModel, ScoreError
from .schedules import NoiseSchedule, get_schedule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Problem:
    """A named test problem: data distribution, schedule and time window."""

    name: str
    description: str
    distribution: GaussianMixture
    schedule: NoiseSchedule
    t_min: float
    t_max: float
    facts: dict = field(default_factory=dict)

    def model(self, error: ScoreError | None = None) -> AnalyticModel:
        """A fresh exact model (NFE counter at zero), optionally with a controlled error."""
        return AnalyticModel(self.distribution, self.schedule, error)

    def prior(self) -> GaussianMixture:
        """The exact marginal at t_max, where sampling starts (so prior mismatch is never counted as error)."""
        return self.distribution.noised(self.schedule, self.t_max)

    def target(self) -> GaussianMixture:
        """The exact marginal at t_min, where sampling ends."""
        return self.distribution.noised(self.schedule, self.t_min)


# -- recipes ------------------------------------------------------------------------------------------------------
def _haar_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the sign of diag(R) fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _means(spec) -> np.ndarray:
    if not isinstance(spec, dict):
        return np.atleast_2d(np.asarray(spec, dtype=np.float64))
    recipe = spec["recipe"]
    if recipe == "ring":
        angles = 2 * math.pi * np.arange(spec["count"]) / spec["count"]
        return spec["radius"] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if recipe == "grid":
        side = (np.arange(spec["per_side"]) - (spec["per_side"] - 1) / 2) * spec["spacing"]
        return np.array(list(itertools.product(side, side)), dtype=np.float64)
    if recipe == "normal":
        rng = np.random.default_rng(spec["seed"])
        return spec["scale"] * rng.standard_normal((spec["count"], spec["dim"]))
    raise ValueError(f"means: unknown recipe {recipe!r}")


def _covs(spec) -> np.ndarray:
    if not isinstance(spec, dict):
        return np.asarray(spec, dtype=np.float64)
    recipe = spec["recipe"]
    if recipe == "isotropic":
        return np.full(spec["count"], float(spec["variance"]))
    if recipe == "spectrum":
        rng = np.random.default_rng(spec.get("seed", 0))
        base = spec["largest"] * np.geomspace(1.0, 1.0 / spec["condition"], spec["dim"])
        covs = []
        for _ in range(spec.get("count", 1)):
            eig = base * math.exp(spec.get("jitter", 0.0) * rng.standard_normal())
            if spec.get("rotate", False):
                q = _haar_rotation(rng, spec["dim"])
                covs.append((q * eig) @ q.T)
            else:
                covs.append(eig)
        return np.stack(covs)
    raise ValueError(f"covs: unknown recipe {recipe!r}")


def _weights(spec) -> np.ndarray:
    if not isinstance(spec, dict):
        return np.asarray(spec, dtype=np.float64)
    recipe = spec["recipe"]
    if recipe == "uniform":
        return np.full(spec["count"], 1.0 / spec["count"])
    if recipe == "dirichlet":
        rng = np.random.default_rng(spec["seed"])
        return rng.dirichlet(np.full(spec["count"], float(spec["concentration"])))
    raise ValueError(f"weights: unknown recipe {recipe!r}")


def _distribution(spec: dict) -> GaussianMixture:
    kind = spec["kind"]
    if kind == "gaussian":
        cov = _covs(spec["cov"])
        return Gaussian(_means(spec["mean"])[0], cov[0] if isinstance(spec["cov"], dict) else cov)
    if kind == "mixture":
        return GaussianMixture(_weights(spec["weights"]), _means(spec["means"]), _covs(spec["covs"]))
    raise ValueError(f"distribution.kind: expected 'gaussian' or 'mixture', got {kind!r}")


# -- facts --------------------------------------------------------------------------------------------------------
def reference_facts(distribution: GaussianMixture) -> dict:
    """Dimension, component count, condition number, mode separation and exact moments of a distribution.

    ``condition_number``: the largest eigenvalue ratio over the component covariances. ``mode_separation``: the
    smallest :math:`\\|\\mu_k - \\mu_l\\| / (\\sqrt{s^{max}_k} + \\sqrt{s^{max}_l})` over pairs (mixtures only).
    """
    eig = distribution.eigvals
    facts = {
        "dimension": distribution.dim,
        "n_components": distribution.n_components,
        "condition_number": float((eig.amax(dim=1) / eig.amin(dim=1)).max()),
        "mean_norm": float(distribution.mean().norm()),
        "covariance_trace": float(torch.trace(distribution.covariance())),
        "smallest_variance": float(eig.min()),
    }
    if distribution.n_components > 1:
        scale = eig.amax(dim=1).sqrt()
        gaps = torch.cdist(distribution.means, distribution.means) / (scale[:, None] + scale[None, :])
        gaps.fill_diagonal_(float("inf"))
        facts["mode_separation"] = float(gaps.min())
    else:
        facts["log_det_covariance"] = float(torch.log(eig).sum())
    return facts


# -- loading ------------------------------------------------------------------------------------------------------
def _problem_files() -> dict:
    folder = importlib.resources.files("sdetoolkit.problems")
    return {entry.name[:-5]: entry for entry in folder.iterdir() if entry.name.endswith(".toml")}


def list_problems() -> list[str]:
    """Names of the catalogued problems."""
    return sorted(_problem_files())


def load_problem_spec(name: str) -> dict:
    """The raw TOML content of a problem."""
    files = _problem_files()
    if name not in files:
        raise ValueError(f"name: unknown problem {name!r}; known: {', '.join(sorted(files))}")
    return tomllib.loads(files[name].read_text(encoding="utf-8"))


def get_problem(name: str) -> Problem:
    """Build a catalogued problem by name."""
    spec = load_problem_spec(name)
    schedule_spec = dict(spec["schedule"])
    schedule = get_schedule(schedule_spec.pop("name"), **schedule_spec)
    t_min, t_max = float(spec["t_min"]), float(spec["t_max"])
    schedule.check_time(torch.tensor([t_min, t_max], dtype=torch.float64), f"{name}: t_min/t_max")
    return Problem(name=name, description=spec["description"].strip(), distribution=_distribution(
        spec["distribution"]), schedule=schedule, t_min=t_min, t_max=t_max, facts=dict(spec.get("facts", {})))
