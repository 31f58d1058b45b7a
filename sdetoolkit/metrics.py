r"""Distances between a sample (or a Gaussian law) and the truth.

* **Gaussian closed forms.** :func:`gaussian_w2` is the 2-Wasserstein (Bures) distance between two Gaussians with
  arbitrary covariances (Dowson & Landau 1982; Givens & Shortt 1984); :func:`gaussian_kl` the KL divergence,
  reduced to :meth:`~sdetoolkit.exact.GaussianLaw.kl` by whitening (KL is invariant under an invertible affine map).
  For laws that share an eigenbasis (the output of :func:`~sdetoolkit.exact.propagate`) use
  :meth:`~sdetoolkit.exact.GaussianLaw.w2` and :meth:`~sdetoolkit.exact.GaussianLaw.kl`, which are free of
  cancellation.
* **Empirical W2.** :func:`wasserstein2`: exact optimal transport between two uniform empirical measures by POT's
  network simplex (``ot.emd2``; Bonneel et al. 2011, Flamary et al. 2021), for moderate sizes (cost
  :math:`O(n^3)`). :func:`sliced_wasserstein2`: the sliced distance
  :math:`SW_2^2 = \int_{S^{d-1}} W_2^2(\theta_\#\mu, \theta_\#\nu)\,\mathrm d\theta` (Rabin et al. 2011; Bonneel et
  al. 2015) over seeded random directions, each 1-D distance by quantile functions, cost :math:`O(Ln\log n)`.
  It is written here rather than taken from POT so that it needs no optional dependency and its directions come
  from a seeded ``torch.Generator`` that every call with the same seed repeats: rows of a study share one set of
  directions, and differences between rows carry no projection noise. Note :math:`SW_2 \le W_2`; for a shift
  :math:`\Delta` alone :math:`SW_2^2 = |\Delta|^2/d`.
  Both are biased upwards at finite n (by :math:`O(n^{-1/d})` in dimension d > 4; Fournier & Guillin 2015): the same
  estimator on two exact samples of the same size (the *floor*) shows by how much.
* **MMD against an exact mixture.** With the Gaussian kernel :math:`k(x, y) = \exp(-|x-y|^2/2h^2)` and a Gaussian
  mixture :math:`Q`, both :math:`E\,k(x, Y)` and :math:`E\,k(Y, Y')` are Gaussian integrals (:func:`kernel_mean`,
  :func:`expected_kernel`), so :math:`\mathrm{MMD}^2(P, Q) = E k(X, X') - 2E k(X, Y) + E k(Y, Y')` needs samples of
  P only. :func:`mmd2_to_mixture` uses the U-statistic for the first term (Gretton et al. 2012, eq. 3), which makes
  the estimate unbiased, with the unbiased estimate of its variance (Hoeffding 1948; Sutherland & Deka 2019).
* **Batch means.** :func:`batch_means` evaluates a statistic on consecutive batches of samples and returns their
  mean and standard error: an estimate of the statistic's expectation at that batch size (the minibatch estimator
  of Fatras et al. 2020 for W2) whose error bar is honest whatever the statistic's bias.
* **Moment errors.** :func:`mean_error` and :func:`covariance_error` against exact moments.

Every function computes in float64 on the device of its input and raises ValueError naming a bad argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._checks import as_tensor, check_finite
from .distributions import GaussianMixture
from .exact import GaussianLaw

EXACT_OT_MAX_PAIRS = 25_000_000
"""Largest n * m for :func:`wasserstein2` (its cost matrix alone is 8 n m bytes; the simplex is O(n^3))."""

_CHUNK_ELEMENTS = 1 << 22  # rows x columns (x dim) per block of kernel evaluations


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate and its standard error."""

    value: float
    stderr: float


# -- checks -------------------------------------------------------------------------------------------------------
def _samples(x, name: str, min_rows: int = 1) -> torch.Tensor:
    x = as_tensor(x, name)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (N, d) with N >= {min_rows} and d >= 1, got {tuple(x.shape)}")
    return check_finite(x, name)


def _pair(x, y, min_rows: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _samples(x, "x", min_rows), _samples(y, "y", min_rows)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y: dimension {y.shape[1]} differs from that of x, {x.shape[1]}")
    return x, y.to(x.device)


def _bandwidth(bandwidth) -> float:
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not math.isfinite(bandwidth) \
            or bandwidth <= 0:
        raise ValueError(f"bandwidth: expected a finite positive number, got {bandwidth!r}")
    return float(bandwidth)


def _mixture(q, dim: int | None, name: str) -> GaussianMixture:
    if not isinstance(q, GaussianMixture):
        raise TypeError(f"{name}: expected a Gaussian or GaussianMixture, got {type(q).__name__}")
    if dim is not None and q.dim != dim:
        raise ValueError(f"{name}: dimension {q.dim} differs from that of the samples, {dim}")
    return q


def _gaussian(mean, cov, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    mean, cov = as_tensor(mean, f"mean_{name}"), as_tensor(cov, f"cov_{name}")
    d = mean.shape[0] if mean.ndim == 1 else -1
    if mean.ndim != 1 or cov.shape != (d, d):
        raise ValueError(f"mean_{name}, cov_{name}: expected shapes (d,) and (d, d), got {tuple(mean.shape)} and "
                         f"{tuple(cov.shape)}")
    check_finite(mean, f"mean_{name}")
    check_finite(cov, f"cov_{name}")
    if not torch.allclose(cov, cov.T, rtol=0, atol=1e-10 * float(cov.abs().max())):
        raise ValueError(f"cov_{name}: not symmetric")
    return mean, 0.5 * (cov + cov.T)


# -- Gaussian closed forms ----------------------------------------------------------------------------------------
def gaussian_w2(mean_a, cov_a, mean_b, cov_b) -> float:
    r""":math:`W_2^2 = |m_a - m_b|^2 + \operatorname{tr}\big(A + B - 2(A^{1/2} B A^{1/2})^{1/2}\big)` (Dowson &
    Landau 1982), by symmetric eigendecompositions. Round-off is about machine epsilon times tr A + tr B, so for
    nearly equal covariances sharing an eigenbasis prefer :meth:`~sdetoolkit.exact.GaussianLaw.w2`."""
    mean_a, cov_a = _gaussian(mean_a, cov_a, "a")
    mean_b, cov_b = _gaussian(mean_b, cov_b, "b")
    if mean_b.shape != mean_a.shape:
        raise ValueError(f"mean_b: dimension {mean_b.shape[0]} differs from that of mean_a, {mean_a.shape[0]}")
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = (vectors * values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    squared = (mean_a - mean_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross
    return float(squared.clamp_min(0).sqrt())


def gaussian_kl(mean_a, cov_a, mean_b, cov_b) -> float:
    r""":math:`\mathrm{KL}(\mathcal N(m_a, A)\,\|\,\mathcal N(m_b, B))`: whitened by the Cholesky factor
    :math:`B = LL^\top`, the pair becomes :math:`\mathcal N(L^{-1}(m_a - m_b), L^{-1}AL^{-\top})` against
    :math:`\mathcal N(0, I)`, which share the eigenbasis of :math:`L^{-1}AL^{-\top}`; then
    :meth:`~sdetoolkit.exact.GaussianLaw.kl`. B must be positive definite; a singular A gives inf."""
    mean_a, cov_a = _gaussian(mean_a, cov_a, "a")
    mean_b, cov_b = _gaussian(mean_b, cov_b, "b")
    if mean_b.shape != mean_a.shape:
        raise ValueError(f"mean_b: dimension {mean_b.shape[0]} differs from that of mean_a, {mean_a.shape[0]}")
    chol, info = torch.linalg.cholesky_ex(cov_b)
    if int(info) != 0:
        raise ValueError("cov_b: not positive definite (the KL divergence to a degenerate Gaussian is infinite or "
                         "undefined)")
    shift = torch.linalg.solve_triangular(chol, (mean_a - mean_b)[:, None], upper=False)[:, 0]
    half = torch.linalg.solve_triangular(chol, cov_a, upper=False)
    whitened = torch.linalg.solve_triangular(chol, half.T, upper=False)
    variances, basis = torch.linalg.eigh(0.5 * (whitened + whitened.T))
    law = GaussianLaw(shift, variances.clamp_min(0), basis)
    return law.kl(GaussianLaw(torch.zeros_like(shift), torch.ones_like(variances), basis))


# -- empirical Wasserstein ----------------------------------------------------------------------------------------
def _pot():
    try:
        import ot
    except ImportError as err:
        raise ImportError("wasserstein2 needs POT (exact optimal transport): pip install sdetoolkit[ot]") from err
    return ot


def wasserstein2(x, y, *, max_iter: int = 10_000_000) -> float:
    r"""Exact :math:`W_2` between the uniform empirical measures of the rows of ``x`` (n, d) and ``y`` (m, d): POT's
    ``ot.emd2`` on the squared Euclidean cost. Raises RuntimeError if the simplex stops before optimality."""
    x, y = _pair(x, y)
    if x.shape[0] * y.shape[0] > EXACT_OT_MAX_PAIRS:
        raise ValueError(f"x, y: exact OT on {x.shape[0]} x {y.shape[0]} points exceeds {EXACT_OT_MAX_PAIRS} pairs; "
                         "use smaller batches (batch_means) or sliced_wasserstein2")
    ot = _pot()
    cost = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square()
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=y.dtype, device=y.device)
    value, log = ot.emd2(a, b, cost, numItermax=max_iter, log=True)
    if log["warning"] is not None:
        raise RuntimeError(f"wasserstein2: the network simplex did not reach optimality ({log['warning']})")
    return float(value) ** 0.5


def sphere_directions(n: int, dim: int, seed: int = 0, device=None) -> torch.Tensor:
    """``n`` directions (n, dim) uniform on the unit sphere, float64, from ``torch.Generator().manual_seed(seed)``
    (drawn on the CPU, so the same on every device)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n_projections: expected a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    z = torch.randn(n, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return (z / z.norm(dim=1, keepdim=True)).to(device)


def _w2_squared_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Per row, :math:`W_2^2 = \int_0^1 (F_a^{-1}(u) - F_b^{-1}(u))^2\,\mathrm du` of sorted rows a (L, n),
    b (L, m): both quantile functions are constant between the merged levels i/n and j/m."""
    n, m = a.shape[1], b.shape[1]
    levels = torch.cat([torch.arange(1, n + 1, dtype=a.dtype, device=a.device) / n,
                        torch.arange(1, m + 1, dtype=a.dtype, device=a.device) / m]).sort().values
    width = torch.diff(levels, prepend=levels.new_zeros(1))
    middle = levels - width / 2
    ia = (middle * n).long().clamp(0, n - 1)
    ib = (middle * m).long().clamp(0, m - 1)
    return ((a[:, ia] - b[:, ib]).square() @ width)


def sliced_wasserstein2(x, y, *, n_projections: int = 256, seed: int = 0) -> float:
    r"""Sliced :math:`SW_2` between the empirical measures of ``x`` (n, d) and ``y`` (m, d), averaged over
    ``n_projections`` directions from :func:`sphere_directions` (``seed``)."""
    x, y = _pair(x, y)
    theta = sphere_directions(n_projections, x.shape[1], seed, x.device)
    a = (theta @ x.T).sort(dim=1).values
    b = (theta @ y.T).sort(dim=1).values
    return float(_w2_squared_1d(a, b).mean().sqrt())


# -- MMD against an exact Gaussian mixture -----------------------------------------------------------------------
def kernel_mean(x, mixture: GaussianMixture, bandwidth: float) -> torch.Tensor:
    r""":math:`E\,k(x_i, Y)`, :math:`Y \sim \sum_k \pi_k\mathcal N(\mu_k, U_k S_k U_k^\top)`, for each row of x:

    .. math:: \sum_k \pi_k \det(I + S_k/h^2)^{-1/2}
              \exp\!\big(-\tfrac12 |(S_k + h^2 I)^{-1/2} U_k^\top (x - \mu_k)|^2\big),

    the Gaussian integral :math:`h^d\,\mathcal N(x;\mu_k, \Sigma_k + h^2 I)`. The mixture stores its covariances in
    spectral form, so the solve is a rotation and a division; summed by log-sum-exp, in row blocks.
    """
    x = _samples(x, "x")
    h2 = _bandwidth(bandwidth) ** 2
    q = _mixture(mixture, x.shape[1], "mixture")
    means, eigvals = q.means.to(x.device), q.eigvals.to(x.device)
    basis = None if q.basis is None else q.basis.to(x.device)
    log_scale = q.weights.to(x.device).log() - 0.5 * torch.log1p(eigvals / h2).sum(1)
    rows = max(1, _CHUNK_ELEMENTS // (q.n_components * q.dim))
    out = []
    for block in x.split(rows):
        z = block[:, None, :] - means
        if basis is not None:
            z = torch.einsum("nkd,kde->nke", z, basis)
        out.append(torch.logsumexp(log_scale - 0.5 * (z.square() / (eigvals + h2)).sum(2), dim=1).exp())
    return torch.cat(out)


def expected_kernel(p: GaussianMixture, q: GaussianMixture, bandwidth: float) -> float:
    r""":math:`E\,k(X, Y)` for independent :math:`X \sim p`, :math:`Y \sim q` (Gaussian mixtures): over component
    pairs, :math:`X - Y \sim \mathcal N(\mu_a - \mu_b, \Sigma_a + \Sigma_b)`, so with the Cholesky factor
    :math:`LL^\top = I + (\Sigma_a + \Sigma_b)/h^2` the pair contributes
    :math:`\prod_i L_{ii}^{-1} \exp(-\tfrac12 |L^{-1}(\mu_a - \mu_b)|^2/h^2)` (elementwise when both are diagonal)."""
    p, q = _mixture(p, None, "p"), _mixture(q, p.dim, "q")
    h2 = _bandwidth(bandwidth) ** 2
    delta = p.means[:, None, :] - q.means[None, :, :]
    if p.basis is None and q.basis is None:
        spread = 1.0 + (p.eigvals[:, None, :] + q.eigvals[None, :, :]) / h2
        log_k = -0.5 * (torch.log(spread).sum(2) + (delta.square() / spread).sum(2) / h2)
    else:
        eye = torch.eye(p.dim, dtype=torch.float64)
        spread = eye + (p.component_covariances()[:, None] + q.component_covariances()[None, :]) / h2
        chol = torch.linalg.cholesky(spread)
        white = torch.linalg.solve_triangular(chol, delta[..., None], upper=False)[..., 0]
        log_k = -(torch.log(torch.diagonal(chol, dim1=2, dim2=3)).sum(2) + 0.5 * white.square().sum(2) / h2)
    log_w = p.weights.log()[:, None] + q.weights.log()[None, :]
    return float(torch.logsumexp((log_w + log_k).flatten(), 0).exp())


def mixture_mmd2(p: GaussianMixture, q: GaussianMixture, bandwidth: float) -> float:
    r"""Exact :math:`\mathrm{MMD}^2(p, q) = E k(X, X') - 2E k(X, Y) + E k(Y, Y')` between two Gaussian mixtures."""
    return expected_kernel(p, p, bandwidth) - 2 * expected_kernel(p, q, bandwidth) + expected_kernel(q, q, bandwidth)


def mmd2_to_mixture(x, mixture: GaussianMixture, bandwidth: float) -> Estimate:
    r"""Unbiased :math:`\widehat{\mathrm{MMD}}^2` between the sample ``x`` (n >= 4 rows) and the exact ``mixture``:

    .. math:: U = \frac{1}{n(n-1)}\sum_{i \ne j} h_{ij},\qquad h_{ij} = k(x_i, x_j) - g(x_i) - g(x_j) + c,

    with :math:`g = ` :func:`kernel_mean` and :math:`c = ` :func:`expected_kernel` (q, q). Its variance
    :math:`[4(n-2)\zeta_1 + 2\zeta_2]/(n(n-1))` (Hoeffding 1948) is estimated from the unbiased estimates of
    :math:`\zeta_1, \zeta_2` over distinct index pairs, triples and quadruples of h (Sutherland & Deka 2019), with
    :math:`\hat\zeta_1` clamped at zero: :math:`\zeta_1 = \operatorname{Var} h_1(X) \ge 0`, and near P = Q (where
    :math:`\zeta_1 \to 0`, the degenerate case) the unbiased estimate is often negative, which would give a standard
    error of zero. The clamped one is never below the degenerate variance :math:`2\zeta_2/(n(n-1))` and errs on the
    conservative side near P = Q (measured: about 30% too large there, within 10% away from it). Cost
    :math:`O(n^2 d)` in row blocks.
    """
    x = _samples(x, "x", min_rows=4)
    h2 = _bandwidth(bandwidth) ** 2
    n = x.shape[0]
    g = kernel_mean(x, mixture, bandwidth)
    c = expected_kernel(mixture, mixture, bandwidth)
    centred = x - x.mean(0)
    norms = centred.square().sum(1)
    row_sums = torch.empty(n, dtype=torch.float64, device=x.device)
    sum_squares = torch.zeros((), dtype=torch.float64, device=x.device)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        distance = (norms[start:stop, None] + norms[None, :] - 2 * centred[start:stop] @ centred.T).clamp_min(0)
        h = torch.exp(-distance / (2 * h2)) - g[start:stop, None] - g[None, :] + c
        h[torch.arange(stop - start), torch.arange(start, stop)] = 0.0
        row_sums[start:stop] = h.sum(1)
        sum_squares += h.square().sum()
    total = row_sums.sum()
    triples = row_sums.square().sum() - sum_squares
    quadruples = total**2 - 2 * sum_squares - 4 * triples
    theta2 = quadruples / (n * (n - 1) * (n - 2) * (n - 3))
    zeta1 = triples / (n * (n - 1) * (n - 2)) - theta2
    zeta2 = sum_squares / (n * (n - 1)) - theta2
    variance = (4 * (n - 2) * zeta1.clamp_min(0) + 2 * zeta2) / (n * (n - 1))
    return Estimate(float(total / (n * (n - 1))), float(variance.clamp_min(0).sqrt()))


# -- moments and batch means --------------------------------------------------------------------------------------
def mean_error(x, mean) -> float:
    r""":math:`|\bar x - m|_2` of the sample mean against the exact mean ``mean`` (d,)."""
    x = _samples(x, "x")
    mean = check_finite(as_tensor(mean, "mean", device=x.device), "mean")
    if mean.shape != (x.shape[1],):
        raise ValueError(f"mean: expected shape ({x.shape[1]},), got {tuple(mean.shape)}")
    return float((x.mean(0) - mean).norm())


def covariance_error(x, cov) -> float:
    r""":math:`\|\hat C - C\|_F` of the unbiased sample covariance (n >= 2 rows) against the exact ``cov`` (d, d)."""
    x = _samples(x, "x", min_rows=2)
    cov = check_finite(as_tensor(cov, "cov", device=x.device), "cov")
    if cov.shape != (x.shape[1], x.shape[1]):
        raise ValueError(f"cov: expected shape ({x.shape[1]}, {x.shape[1]}), got {tuple(cov.shape)}")
    centred = x - x.mean(0)
    return float((centred.T @ centred / (x.shape[0] - 1) - cov).norm())


def batch_means(statistic: Callable[..., float], *samples, batch_size: int) -> Estimate:
    """Mean and standard error of ``statistic`` over consecutive batches of ``batch_size`` rows of each sample.

    The samples must have equal numbers of rows, a multiple of ``batch_size`` giving at least two batches; batch b
    of every sample goes to the b-th call. The estimate is of the statistic's expectation at ``batch_size`` rows.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if not samples:
        raise ValueError("samples: expected at least one sample")
    rows = {len(s) for s in samples}
    if len(rows) != 1:
        raise ValueError(f"samples: expected equal numbers of rows, got {sorted(rows)}")
    n = rows.pop()
    if n % batch_size or n // batch_size < 2:
        raise ValueError(f"batch_size: {n} rows must split into at least two batches of {batch_size}")
    values = torch.tensor([statistic(*(s[i:i + batch_size] for s in samples)) for i in range(0, n, batch_size)],
                          dtype=torch.float64)
    return Estimate(float(values.mean()), float(values.std() / len(values) ** 0.5))
