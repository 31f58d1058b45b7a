r"""Distances between a solver's samples and the truth, against the number of model evaluations.

The truth is the exact marginal :math:`p_{t_{min}}` (``problem.target()``), where every grid ends; sampling starts
from exact draws of :math:`p_{t_{max}}`, so prior mismatch is never counted. Metrics (:mod:`sdetoolkit.metrics`):

* ``w2``, ``kl``: exact :math:`W_2` (Bures) and :math:`\mathrm{KL}(\text{output}\,\|\,\text{truth})` of the output
  law from :func:`~sdetoolkit.exact.propagate`, no Monte Carlo. Only for a Gaussian problem, a linear solver and a
  float64 run (propagation is float64; in a lower precision the run's round-off is part of what is measured, which
  only the sampled metrics see); elsewhere these rows are left out (and asking for exact metrics only is an error).
* ``w2-ot`` (exact OT, POT) and ``w2-sliced`` (sliced W2) between the samples and an exact sample of the same size,
  ``mean-error`` and ``cov-error`` against the exact moments: batch means (:func:`~sdetoolkit.batch_means`)
  over consecutive batches of ``batch_size`` samples; the value estimates the expected distance at that batch size
  and ``stderr`` is the standard error over batches.
* ``mmd2``: unbiased :math:`\mathrm{MMD}^2` against the exact mixture with the Gaussian kernel, on all samples, with
  its standard error; default bandwidth :math:`h = (E|Y - Y'|^2)^{1/2} = (2\operatorname{tr}\Sigma)^{1/2}` of the
  target, the closed-form analogue of the median heuristic (Gretton et al. 2012).

Bias and variance are explicit in two columns: ``floor`` is the same estimator with the samples replaced by a second
exact sample of the same size (independent of the first), ``floor_stderr`` its standard error. A solver is resolved
only where its value stands clear of the floor; for ``mmd2`` the floor's expectation is zero. Exact metrics have
NaN ``stderr`` and ``floor``.

All step counts share the prior draws, the noise seed and the exact reference sample (common random numbers), so
differences between rows are not blurred by independent sampling noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch

from ..exact import gaussian_law, propagate
from ..grids import make_grid
from ..metrics import (
    Estimate,
    batch_means,
    covariance_error,
    mean_error,
    mmd2_to_mixture,
    sliced_wasserstein2,
    wasserstein2,
)
from ..noise import IIDNoise
from ..solvers.base import Solver, sample

EXACT_METRICS = ("w2", "kl")
SAMPLED_METRICS = ("w2-ot", "w2-sliced", "mean-error", "cov-error")
METRICS = (*EXACT_METRICS, *SAMPLED_METRICS, "mmd2")
COLUMNS = ("problem", "solver", "steps", "nfe", "seed", "dtype", "metric", "value", "stderr", "n_samples",
           "batch_size", "floor", "floor_stderr", "bandwidth", "wall_time")
"""Table columns: the common ones, then ``n_samples`` (samples drawn per run), ``batch_size`` (samples per estimate;
0 for exact metrics), ``floor`` and ``floor_stderr``, ``bandwidth`` (of ``mmd2``; NaN otherwise) and ``wall_time``
(seconds of the sampling run that the row describes, after an untimed warm-up run)."""


@dataclass(frozen=True)
class DistanceStudy:
    """One row per (steps, metric), columns :data:`COLUMNS`."""

    table: pd.DataFrame


def _seeded(seed: int, stream: int) -> torch.Generator:
    """An independent generator for one of the study's exact samples."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _check(steps, metric_names, n_samples, batch_size, seed, dtype) -> tuple[list[int], tuple[str, ...]]:
    steps = list(steps)
    if not steps or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in steps):
        raise ValueError(f"steps: expected positive ints, got {steps!r}")
    names = tuple(metric_names)
    unknown = sorted(set(names) - set(METRICS))
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"metrics: expected distinct names from {METRICS}, got {names!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 4:
        raise ValueError(f"n_samples: expected an int >= 4, got {n_samples!r}")
    if set(names) & set(SAMPLED_METRICS) and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2
            or n_samples % batch_size or n_samples // batch_size < 2):
        raise ValueError(f"batch_size: n_samples = {n_samples} must split into at least two batches of "
                         f"{batch_size!r} (an int >= 2)")
    return sorted(set(steps)), names


def distance_vs_nfe(solver: Solver, problem, steps: Iterable[int], *, n_samples: int = 4000, seed: int = 0,
                    dtype: torch.dtype = torch.float64, device="cpu", grid: str = "uniform-lambda",
                    metrics: Iterable[str] = METRICS, batch_size: int = 500, n_projections: int = 256,
                    bandwidth: float | None = None) -> DistanceStudy:
    """Distances of ``solver``'s output from the exact marginal at ``problem.t_min``, for each of ``steps``.

    ``n_samples`` trajectories per step count start from seeded exact prior draws (``seed``); stochastic solvers
    take their noise from ``IIDNoise(seed)``. See the module docstring for the metrics and the floor.
    """
    steps, names = _check(steps, metrics, n_samples, batch_size, seed, dtype)
    target = problem.target()
    h = math.sqrt(2 * float(torch.trace(target.covariance()))) if bandwidth is None else bandwidth
    exact = target.n_components == 1 and solver.linear and dtype == torch.float64
    if not exact and set(names) <= set(EXACT_METRICS):
        raise ValueError(f"metrics: {names!r} need the exact output law (a Gaussian problem, a linear solver, float64),"
                         f" which {solver.name!r} on {problem.name!r} in {dtype} has not; add a sampled metric")
    x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed)).to(device=device, dtype=dtype)
    reference = target.sample(n_samples, _seeded(seed, 1)).to(device)
    second = target.sample(n_samples, _seeded(seed, 2)).to(device)
    two_sample = {"w2-ot": wasserstein2,
                  "w2-sliced": partial(sliced_wasserstein2, n_projections=n_projections, seed=seed)}
    one_sample = {"mean-error": partial(mean_error, mean=target.mean().to(device)),
                  "cov-error": partial(covariance_error, cov=target.covariance().to(device))}

    def estimate(name: str, x: torch.Tensor) -> Estimate:
        if name == "mmd2":
            return mmd2_to_mixture(x, target, h)
        if name in two_sample:
            return batch_means(two_sample[name], x, reference, batch_size=batch_size)
        return batch_means(one_sample[name], x, batch_size=batch_size)

    floors = {name: estimate(name, second) for name in names if name not in EXACT_METRICS}
    grids = [make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max) for n in steps]
    noise = IIDNoise(seed) if solver.stochastic else None
    sample(solver, problem.model(), grids[0], x_T[:8], noise)  # warm-up: one-time costs stay out of the timings
    wants_law = exact and bool(set(names) & set(EXACT_METRICS))
    truth = gaussian_law(target) if wants_law else None
    rows = []
    for n, times in zip(steps, grids, strict=True):
        model = problem.model()
        start = time.perf_counter()
        x = sample(solver, model, times, x_T, noise)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        wall = time.perf_counter() - start
        law = propagate(solver, problem.distribution, problem.schedule, times) if wants_law else None
        common = dict(problem=problem.name, solver=solver.name, steps=n, nfe=model.nfe, seed=seed,
                      dtype=str(dtype).removeprefix("torch."))
        for name in names:
            if name in EXACT_METRICS:
                if law is None:
                    continue
                result = Estimate(law.w2(truth) if name == "w2" else law.kl(truth), math.nan)
                floor, size = Estimate(math.nan, math.nan), 0
            else:
                result, floor = estimate(name, x), floors[name]
                size = n_samples if name == "mmd2" else batch_size
            rows.append(dict(common, metric=name, value=result.value, stderr=result.stderr, n_samples=n_samples,
                             batch_size=size, floor=floor.value, floor_stderr=floor.stderr,
                             bandwidth=h if name == "mmd2" else math.nan, wall_time=wall))
    return DistanceStudy(table=pd.DataFrame(rows, columns=list(COLUMNS)))
