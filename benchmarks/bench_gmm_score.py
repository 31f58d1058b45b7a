r"""Benchmark the exact Gaussian-mixture score against autograd through ``torch.distributions``.

What it measures, at N samples (default 1e5) in d = 64 with K = 16 components, in float32 and float64, for the
noised marginal p_t at t = 0.5 on the ``vp-linear`` schedule:

1. Wall-time ratios baseline / ours, where the baseline is the score a generic user gets from
   ``torch.distributions.MixtureSameFamily`` (``log_prob``, then ``torch.autograd.grad``) and ours is
   ``dist.noised(schedule, t).score(x)`` (the noised mixture built once, like the baseline object) and
   ``dist.x0_and_score(x, schedule, t)`` (score and denoiser from one call). Cases:

   * ``diag``: the catalogued ``gmm-d64-k16`` problem (diagonal covariances), baselines with
     ``Independent(Normal)`` components and with ``MultivariateNormal(scale_tril=...)`` components;
   * ``full``: the same weights, means and per-component spectra in Haar-random bases (seeded), i.e. full SPD
     covariances, built with ``sdetoolkit.GaussianMixture``; baseline ``MultivariateNormal(scale_tril=...)``.

   The baselines get the noised parameters (means alpha*mu_k, covariances alpha^2 Sigma_k + sigma^2 I, Cholesky
   factors computed in float64) and ``validate_args=False``. Before timing, every pair is checked to compute the
   same thing: the max over rows of ||ours - baseline|| / ||baseline|| for the score, and for our denoiser against
   Tweedie's formula (x + sigma^2 score) / alpha applied to the baseline score. In float32 both are also compared
   with our float64 score.

2. Achieved GFLOP/s of our score, from the flop count of the algorithm in ``sdetoolkit/distributions.py``
   (GEMMs at 2mnk, each elementwise op, exp, log and max as one flop per element; per row of x):

   * diagonal path: 6 GEMMs against (d, K) or (K, d) matrices, 12 d K; elementwise 7 d + 11 K;
   * full path: (N, d) x (d, K d) then (2N, K d) x (K d, d), 6 K d^2; elementwise 9 K d + 8 K + 2 d.

   ``score`` and ``x0_and_score`` run the same kernel (score alone still computes the denoiser), so the count
   is the same for both. The throughput is compared with a plain (N, d) @ (d, K d) GEMM in the same dtype, and
   with the time of the path's own GEMMs run alone on random operands of the same shapes (the full path works in
   chunks of rows; the reference uses the same chunk).

Timing: ``torch.utils.benchmark.Timer`` with all torch threads and one warm-up call, then ``blocked_autorange``
(at least 3 blocks) or, for calls slower than 1/3 s, 3 single calls; medians are reported. The script prints the
load average: other busy processes on the machine inflate every time, the ratios less so.

Run (about 2-3 minutes on 2 CPU cores)::

    python benchmarks/bench_gmm_score.py            # N = 1e5
    python benchmarks/bench_gmm_score.py --n 20000  # another N
    python benchmarks/bench_gmm_score.py --quick    # smoke run, a few seconds
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics

import pandas as pd
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, MultivariateNormal, Normal
from torch.utils import benchmark

import sdetoolkit
from sdetoolkit.distributions import _CHUNK_ELEMENTS  # rows per chunk on the full-covariance path

T = 0.5
SEED = 0


# -- timing -------------------------------------------------------------------------------------------------------
def median_seconds(fn, min_run_time: float, min_blocks: int) -> float:
    """Median wall time of one ``fn()`` call over at least ``min_blocks`` timed blocks, after a warm-up call.

    Fast calls: ``blocked_autorange`` for ``min_run_time``. Slow calls (``min_blocks`` calls exceed it): exactly
    ``min_blocks`` single calls, which keeps the whole script within a few minutes.
    """
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    warm_up = timer.timeit(1).times[0]
    if warm_up * min_blocks >= min_run_time:
        return statistics.median(timer.timeit(1).times[0] for _ in range(min_blocks))
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    times = list(measurement.times)
    while len(times) < min_blocks:
        times.append(timer.timeit(measurement.number_per_run).times[0])
    return statistics.median(times)


# -- the problems -------------------------------------------------------------------------------------------------
def haar_rotations(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` Haar-random orthogonal (dim, dim) matrices in float64 (QR with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(count, dim, dim, dtype=torch.float64, generator=generator))
    return q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]


def build_cases() -> dict:
    """name -> (our mixture, dense float64 covariances (K, d, d), is_diagonal)."""
    diag = sdetoolkit.get_problem("gmm-d64-k16").distribution
    variances = diag.component_covariances().diagonal(dim1=1, dim2=2)
    q = haar_rotations(diag.n_components, diag.dim, torch.Generator().manual_seed(SEED))
    full_covs = (q * variances[:, None, :]) @ q.transpose(1, 2)
    full_covs = 0.5 * (full_covs + full_covs.transpose(1, 2))
    full = sdetoolkit.GaussianMixture(diag.weights, diag.means, full_covs)
    return {"diag": (diag, torch.diag_embed(variances), True), "full": (full, full_covs, False)}


def noised_parameters(dist, covs: torch.Tensor, alpha: float, sigma: float):
    """Float64 means (K, d), covariances (K, d, d) and their Cholesky factors of p_t, from the data parameters."""
    noised_covs = alpha**2 * covs + sigma**2 * torch.eye(dist.dim, dtype=torch.float64)
    return alpha * dist.means, noised_covs, torch.linalg.cholesky(noised_covs)


def sample_noised(dist, covs: torch.Tensor, alpha: float, sigma: float, n: int) -> torch.Tensor:
    """``n`` float64 samples of p_t, one component at a time (MVN.sample would broadcast to (n, K, d, d))."""
    loc, _, scale_tril = noised_parameters(dist, covs, alpha, sigma)
    g = torch.Generator().manual_seed(SEED)
    labels = torch.multinomial(dist.weights, n, replacement=True, generator=g)
    x = torch.randn(n, dist.dim, dtype=torch.float64, generator=g)
    for k in range(dist.n_components):
        rows = labels == k
        x[rows] = loc[k] + x[rows] @ scale_tril[k].T
    return x


def baselines(dist, covs: torch.Tensor, is_diagonal: bool, alpha: float, sigma: float, dtype) -> dict:
    """name -> MixtureSameFamily of the noised mixture in ``dtype``, from the float64 parameters."""
    loc, noised_covs, scale_tril = noised_parameters(dist, covs, alpha, sigma)
    mixing = Categorical(probs=dist.weights.to(dtype), validate_args=False)
    loc = loc.to(dtype)
    out = {}
    if is_diagonal:
        scale = noised_covs.diagonal(dim1=1, dim2=2).sqrt().to(dtype)
        out["Independent(Normal)"] = MixtureSameFamily(
            mixing, Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False), validate_args=False)
    out["MVN(scale_tril)"] = MixtureSameFamily(
        mixing, MultivariateNormal(loc, scale_tril=scale_tril.to(dtype), validate_args=False), validate_args=False)
    return out


def autograd_score(mixture: MixtureSameFamily, x: torch.Tensor) -> torch.Tensor:
    """The generic-user score: ``log_prob`` and ``torch.autograd.grad``."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(x).sum(), x)
    return grad


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max over rows of ||a - b|| / ||b||, computed in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm(dim=1) / b.norm(dim=1)).max().item()


# -- flop counts (per call; see the module docstring) -------------------------------------------------------------
def score_flops(n: int, d: int, k: int, is_diagonal: bool) -> float:
    if is_diagonal:
        return n * (12 * d * k + 7 * d + 11 * k)
    return n * (6 * k * d * d + 9 * k * d + 8 * k + 2 * d)


def own_gemms(n: int, d: int, k: int, is_diagonal: bool, dtype):
    """A function running the path's GEMMs alone on random operands, and its time multiplier to reach n rows."""
    g = torch.Generator().manual_seed(SEED)

    def rand(*shape):
        return torch.randn(*shape, dtype=dtype, generator=g)

    if is_diagonal:
        x, w, r, m = rand(n, d), rand(k, d), rand(n, k), rand(k, d)

        def run():
            x @ w.T
            x @ w.T
            for _ in range(4):
                r @ m
        return run, 1.0
    rows = min(n, max(1, _CHUNK_ELEMENTS // (k * d)))
    x, u, y, v = rand(rows, d), rand(d, k * d), rand(2 * rows, k * d), rand(k * d, d)

    def run():
        x @ u
        y @ v
    return run, n / rows


# -- main ---------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of samples x (default 1e5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 2000 and short timings")
    args = parser.parse_args()
    n = 2000 if args.quick and args.n == 100_000 else args.n
    min_run_time, min_blocks = (0.05, 3) if args.quick else (1.0, 3)

    torch.manual_seed(SEED)
    schedule = sdetoolkit.get_schedule("vp-linear")
    t = torch.tensor(T, dtype=torch.float64)
    alpha, sigma = schedule.alpha(t).item(), schedule.sigma(t).item()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}; "
          f"N = {n}, vp-linear t = {T} (alpha = {alpha:.6f}, sigma = {sigma:.6f})")
    load = os.getloadavg()[0]
    print(f"1-minute load average before the run: {load:.2f}"
          + (" -- other processes are busy, timings will be inflated and noisy" if load > 0.5 else ""))

    checks, times, flops = [], [], []
    for case, (dist, covs, is_diagonal) in build_cases().items():
        d, k = dist.dim, dist.n_components
        x64 = sample_noised(dist, covs, alpha, sigma, n)
        noised = dist.noised(schedule, T)
        truth = noised.score(x64)
        truth_x0 = dist.x0_and_score(x64, schedule, T)[0]
        for dtype in (torch.float32, torch.float64):
            dname = str(dtype).removeprefix("torch.")
            x = x64.to(dtype)
            ours_score = noised.score(x)
            ours_x0, ours_score2 = dist.x0_and_score(x, schedule, T)
            single = dtype == torch.float32
            t_score = median_seconds(lambda x=x, p=noised: p.score(x), min_run_time, min_blocks)
            t_both = median_seconds(lambda x=x, p=dist: p.x0_and_score(x, schedule, T), min_run_time, min_blocks)
            for bname, mixture in baselines(dist, covs, is_diagonal, alpha, sigma, dtype).items():
                base = autograd_score(mixture, x)
                checks.append({
                    "case": case, "dtype": dname, "baseline": bname,
                    "score": max_rel_diff(ours_score, base),
                    "x0_and_score": max_rel_diff(ours_score2, base),
                    "x0 vs Tweedie": max_rel_diff(ours_x0, (x.double() + sigma**2 * base.double()) / alpha),
                    "f32 vs f64: ours": max_rel_diff(ours_score, truth) if single else math.nan,
                    "base": max_rel_diff(base, truth) if single else math.nan,
                    "ours x0": max_rel_diff(ours_x0, truth_x0) if single else math.nan,
                })
                t_base = median_seconds(lambda m=mixture, x=x: autograd_score(m, x), min_run_time, min_blocks)
                times.append({
                    "case": case, "dtype": dname, "baseline": bname, "base ms": 1e3 * t_base,
                    "score ms": 1e3 * t_score, "x0_and_score ms": 1e3 * t_both,
                    "base/score": t_base / t_score, "base/x0_and_score": t_base / t_both,
                })
            g = torch.Generator().manual_seed(SEED)
            a = torch.randn(n, d, dtype=dtype, generator=g)
            b = torch.randn(d, k * d, dtype=dtype, generator=g)
            t_gemm = median_seconds(lambda a=a, b=b: a @ b, min_run_time, min_blocks)
            run_gemms, multiplier = own_gemms(n, d, k, is_diagonal, dtype)
            t_own = multiplier * median_seconds(run_gemms, min_run_time, min_blocks)
            count = score_flops(n, d, k, is_diagonal)
            gemm_rate = 2 * n * d * k * d / t_gemm / 1e9
            flops.append({
                "case": case, "dtype": dname, "GFLOP/call": count / 1e9, "score ms": 1e3 * t_score,
                "score GFLOP/s": count / t_score / 1e9, "GEMM GFLOP/s": gemm_rate,
                "fraction of GEMM": count / t_score / 1e9 / gemm_rate,
                "own GEMMs ms": 1e3 * t_own, "own GEMMs / score": t_own / t_score,
            })
            del a, b, run_gemms

    pd.set_option("display.width", 200)
    print("\nAgreement, max over rows of ||a - b|| / ||b||: our score (from score and from x0_and_score) vs the "
          "baseline's;\nour x0 vs Tweedie (x + sigma^2 score) / alpha of the baseline's score, in float64; float32 "
          "results vs our float64 ones:")
    print(pd.DataFrame(checks).to_string(index=False, float_format=lambda v: f"{v:.1e}", na_rep="-"))
    print("\nWall time, median (ratio > 1: ours is faster):")
    print(pd.DataFrame(times).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print("\nThroughput of our score (GEMM: plain (N, d) @ (d, K d) in the same dtype; own GEMMs: the path's "
          "GEMMs alone):")
    print(pd.DataFrame(flops).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\n1-minute load average after the run: {os.getloadavg()[0]:.2f} (this run alone accounts for about "
          f"{torch.get_num_threads()})")


if __name__ == "__main__":
    main()
