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

2. Achieved GFLOP/s, from flop counts per row of x (GEMMs at 2mnk; each elementwise arithmetic operation, an
   addcmul counting two, and each exp and max as one flop per element), of our ``score`` and ``x0_and_score`` for
   the branch of ``GaussianMixture._posterior`` that serves the input (printed as ``path``):

   * ``expanded`` (diagonal covariances, when expanding about the mixture mean is accurate enough for the dtype):
     GEMMs against (d, K) and (K, 2d) matrices, 8 d K for the score (12 d K with x0); elementwise 5 d + 10 K
     (7 d + 10 K);
   * ``centred`` (diagonal covariances otherwise): elementwise on (K, rows, d) chunks, 6 K d + 9 K + d for the score
     (11 K d + 9 K + 2 d with x0, one (K, d) GEMM included);
   * ``full`` (full covariances): the same chunks times the precisions by a batched GEMM, 2 K d^2 + 5 K d + 9 K + d
     for the score (4 K d^2 + 9 K d + 9 K + 2 d with x0).

   and of the ``MVN(scale_tril)`` baseline, counting only its two triangular solves (``log_prob`` and its
   backward), 2 K d^2 per row: a lower bound on its work, and the same count as our ``full`` score's GEMM.
   They are compared with a plain (N, d) @ (d, K d) GEMM in the same dtype, and with the time of the path's own
   GEMMs run alone on random operands of the chunk's shapes, both writing into preallocated outputs so that they
   measure arithmetic, not the first-touch page faults of a fresh output (which every call of ours and of the
   baselines does pay). ``bound`` is the ratio ours would reach if our score ran at the plain GEMM's rate:
   baseline time x GEMM GFLOP/s / our flops. For the ``full`` case, where both sides do about 2 K d^2 flops per
   row, it is the GEMM's rate over the baseline's.

Timing: ``torch.utils.benchmark.Timer`` with all torch threads, after a warm-up call (for ours and the baselines,
the agreement check), then ``blocked_autorange`` (at least 3 blocks) or, for calls slower than 1/3 s, 3 single
calls; medians are reported. The script prints the load average: other busy processes on the machine inflate every
time, the ratios less so.

Run (N = 1e5 took about 4 minutes on the 2-core development VM; the baselines' large fresh temporaries make page
faults a big part of their calls there; use ``--n`` for a shorter run)::

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
from sdetoolkit.distributions import _CHUNK_ELEMENTS, _EXPANDED_ROWS  # chunk sizes of the kernel's paths

T = 0.5
SEED = 0


# -- timing -------------------------------------------------------------------------------------------------------
def median_seconds(fn, min_run_time: float, min_blocks: int, *, warm: bool = False) -> float:
    """Median wall time of one ``fn()`` call over at least ``min_blocks`` timed blocks.

    The first call is a warm-up unless ``warm`` (``fn`` already ran once); it also tells fast calls
    (``blocked_autorange`` for ``min_run_time``) from slow ones (exactly ``min_blocks`` single calls, which keeps
    the whole script within a few minutes).
    """
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    first = timer.timeit(1).times[0]
    if first * min_blocks >= min_run_time:
        times = [first] if warm else []
        times += [timer.timeit(1).times[0] for _ in range(min_blocks - len(times))]
        return statistics.median(times)
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


# -- the kernel's path and its flop count (per call; see the module docstring) -------------------------------------
def kernel_path(noised, x: torch.Tensor) -> str:
    """The branch of ``GaussianMixture._posterior`` that serves ``noised.score(x)`` (mirrors its dispatch)."""
    p = noised._parameters(torch.empty(0, dtype=torch.float64))
    if p.basis is not None:
        return "full"
    return "expanded" if noised._expansion_is_accurate(p, 1.0, p.eigvals, x.dtype) else "centred"


def our_flops(n: int, d: int, k: int, path: str, both: bool) -> float:
    per_row = {("expanded", False): 8 * d * k + 5 * d + 10 * k,
               ("expanded", True): 12 * d * k + 7 * d + 10 * k,
               ("centred", False): 6 * k * d + 9 * k + d,
               ("centred", True): 11 * k * d + 9 * k + 2 * d,
               ("full", False): 2 * k * d * d + 5 * k * d + 9 * k + d,
               ("full", True): 4 * k * d * d + 9 * k * d + 9 * k + 2 * d}[path, both]
    return n * per_row


def own_gemms(n: int, d: int, k: int, path: str, dtype):
    """A function running one chunk of the score's GEMMs alone (random operands of the kernel's shapes and
    layouts, preallocated outputs), and the number of chunks in n rows; None for the GEMM-free ``centred`` path."""
    if path == "centred":
        return None, 0
    g = torch.Generator().manual_seed(SEED)

    def rand(*shape):
        return torch.randn(*shape, dtype=dtype, generator=g)

    rows = min(n, _EXPANDED_ROWS if path == "expanded" else max(1, _CHUNK_ELEMENTS // (k * d)))
    if path == "expanded":  # constant operands stored transposed, as in the kernel
        products = [(rand(rows, d), rand(k, d).T)] * 2 + [(rand(rows, k), rand(2 * d, k).T)]
        outs = [torch.empty(rows, k, dtype=dtype)] * 2 + [torch.empty(rows, 2 * d, dtype=dtype)]

        def run():
            for (a, b), out in zip(products, outs, strict=True):
                torch.mm(a, b, out=out)
    else:
        y, factors, out = rand(k, rows, d), rand(k, d, d), torch.empty(k, rows, d, dtype=dtype)

        def run():
            torch.bmm(y, factors.transpose(1, 2), out=out)
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
        for dtype in (torch.float64, torch.float32):  # float64 first: its results are the reference for float32
            dname = str(dtype).removeprefix("torch.")
            x = x64.to(dtype)
            ours_score = noised.score(x)
            ours_x0, ours_score2 = dist.x0_and_score(x, schedule, T)
            single = dtype == torch.float32
            if not single:
                truth, truth_x0 = ours_score, ours_x0
            path = kernel_path(noised, x)
            t_score = median_seconds(lambda x=x, p=noised: p.score(x), min_run_time, min_blocks, warm=True)
            t_both = median_seconds(lambda x=x, p=dist: p.x0_and_score(x, schedule, T), min_run_time, min_blocks,
                                    warm=True)
            g = torch.Generator().manual_seed(SEED)
            a = torch.randn(n, d, dtype=dtype, generator=g)
            b = torch.randn(d, k * d, dtype=dtype, generator=g)
            c = torch.empty(n, k * d, dtype=dtype)
            gemm_rate = 2 * n * d * k * d / median_seconds(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), min_run_time,
                                                           min_blocks) / 1e9
            del a, b, c
            run_gemms, multiplier = own_gemms(n, d, k, path, dtype)
            t_own = math.nan if run_gemms is None else multiplier * median_seconds(run_gemms, min_run_time, min_blocks)
            count, count_both = our_flops(n, d, k, path, False), our_flops(n, d, k, path, True)
            flops.append({
                "case": case, "dtype": dname, "path": path, "GEMM GFLOP/s": gemm_rate,
                "score GFLOP/s": count / t_score / 1e9, "x0_and_score GFLOP/s": count_both / t_both / 1e9,
                "score / GEMM": count / t_score / 1e9 / gemm_rate, "own GEMMs ms": 1e3 * t_own,
                "own GEMMs / score": t_own / t_score, "load": os.getloadavg()[0],
            })
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
                t_base = median_seconds(lambda m=mixture, x=x: autograd_score(m, x), min_run_time, min_blocks,
                                        warm=True)
                base_rate = 2 * n * k * d * d / t_base / 1e9 if bname == "MVN(scale_tril)" else math.nan
                times.append({
                    "case": case, "dtype": dname, "path": path, "baseline": bname, "base ms": 1e3 * t_base,
                    "score ms": 1e3 * t_score, "x0_and_score ms": 1e3 * t_both,
                    "base/score": t_base / t_score, "base/x0_and_score": t_base / t_both,
                    "bound": t_base * gemm_rate * 1e9 / count, "base GFLOP/s": base_rate, "load": os.getloadavg()[0],
                })

    pd.set_option("display.width", 200)
    print("\nAgreement, max over rows of ||a - b|| / ||b||: our score (from score and from x0_and_score) vs the "
          "baseline's;\nour x0 vs Tweedie (x + sigma^2 score) / alpha of the baseline's score, evaluated in float64 "
          "(it magnifies a float32\nscore's error by sigma^2 |score| / (alpha |x0|)); float32 results vs our float64 "
          "ones:")
    print(pd.DataFrame(checks).to_string(index=False, float_format=lambda v: f"{v:.1e}", na_rep="-"))
    print("\nWall time, median (ratio > 1: ours is faster); bound: base/score if our score ran at the plain GEMM's "
          "rate;\nbase GFLOP/s: the MVN baseline's two triangular solves, 2 K d^2 per row; load: 1-minute load "
          "average after the timing:")
    print(pd.DataFrame(times).to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
    print("(score skips the denoiser; x0_and_score computes both from one pass)")
    print("\nThroughput of ours (GEMM: plain (N, d) @ (d, K d) in the same dtype; own GEMMs: the score's GEMMs alone "
          "at the\nkernel's chunk shapes; both into preallocated outputs):")
    print(pd.DataFrame(flops).to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-"))
    cpu = os.times()
    print(f"\n1-minute load average after the run: {os.getloadavg()[0]:.2f} (this run alone accounts for about "
          f"{torch.get_num_threads()}); process CPU time: user {cpu.user:.0f} s, system {cpu.system:.0f} s (a large "
          f"system share usually means page faults on freshly allocated large tensors)")


if __name__ == "__main__":
    main()
