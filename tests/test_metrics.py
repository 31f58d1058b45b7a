"""Distances: Gaussian closed forms against independent formulas and Monte Carlo, exact and sliced OT against the
Bures value and translation identities, the MMD closed forms against Monte Carlo (z-scores), the MMD estimator's
unbiasedness and standard error over seeded repetitions, and argument validation."""

import math
import sys

import numpy as np
import pytest
import torch
from scipy import linalg

from sdetoolkit import get_problem
from sdetoolkit.distributions import Gaussian, GaussianMixture
from sdetoolkit.exact import GaussianLaw
from sdetoolkit.metrics import (
    EXACT_OT_MAX_PAIRS,
    batch_means,
    covariance_error,
    expected_kernel,
    gaussian_kl,
    gaussian_w2,
    kernel_mean,
    mean_error,
    mixture_mmd2,
    mmd2_to_mixture,
    sliced_wasserstein2,
    sphere_directions,
    wasserstein2,
)

Z = 4.0  # |z| bound of the Monte Carlo checks (two-sided p ~ 6e-5 each)


def _random_gaussian(rng, d):
    root = rng.standard_normal((d, d))
    return torch.as_tensor(rng.standard_normal(d)), torch.as_tensor(root @ root.T / d + 0.2 * np.eye(d))


def test_gaussian_w2_and_kl_reduce_to_the_shared_basis_forms():
    rng = np.random.default_rng(0)
    basis = torch.as_tensor(linalg.qr(rng.standard_normal((5, 5)))[0])
    a = GaussianLaw(torch.as_tensor(rng.standard_normal(5)), torch.as_tensor(rng.uniform(0.1, 2, 5)), basis)
    b = GaussianLaw(torch.as_tensor(rng.standard_normal(5)), torch.as_tensor(rng.uniform(0.1, 2, 5)), basis)
    assert gaussian_w2(a.mean, a.cov, b.mean, b.cov) == pytest.approx(a.w2(b), rel=1e-12)
    assert gaussian_kl(a.mean, a.cov, b.mean, b.cov) == pytest.approx(a.kl(b), rel=1e-12)
    assert gaussian_w2(a.mean, a.cov, a.mean, a.cov) < 1e-7


def test_gaussian_w2_and_kl_match_the_textbook_formulas_for_non_commuting_covariances():
    rng = np.random.default_rng(1)
    (ma, ca), (mb, cb) = _random_gaussian(rng, 4), _random_gaussian(rng, 4)
    a, b = ca.numpy(), cb.numpy()
    root = linalg.sqrtm(a)
    bures = float((ma - mb).square().sum()) + np.trace(a + b - 2 * linalg.sqrtm(root @ b @ root)).real
    inverse = np.linalg.inv(b)
    delta = (mb - ma).numpy()
    kl = 0.5 * (np.trace(inverse @ a) + delta @ inverse @ delta - 4 + np.log(np.linalg.det(b) / np.linalg.det(a)))
    assert gaussian_w2(ma, ca, mb, cb) == pytest.approx(math.sqrt(bures), rel=1e-10)
    assert gaussian_kl(ma, ca, mb, cb) == pytest.approx(kl, rel=1e-10)
    assert gaussian_kl(ma, torch.zeros(4, 4, dtype=torch.float64), mb, cb) == math.inf


def test_gaussian_kl_matches_monte_carlo():
    """KL(a || b) = E_a[log a(X) - log b(X)], 200000 seeded draws, z-score."""
    rng = np.random.default_rng(2)
    (ma, ca), (mb, cb) = _random_gaussian(rng, 3), _random_gaussian(rng, 3)
    a, b = Gaussian(ma, ca), Gaussian(mb, cb)
    x = a.sample(200_000, torch.Generator().manual_seed(2))
    ratio = a.log_prob(x) - b.log_prob(x)
    z = (float(ratio.mean()) - gaussian_kl(ma, ca, mb, cb)) / float(ratio.std() / len(ratio) ** 0.5)
    assert abs(z) < Z


def _shifted_pair(n, seed, shift):
    """Two independent samples of N(0, C) in d = 2, the second shifted by ``shift``."""
    g = torch.Generator().manual_seed(seed)
    root = torch.tensor([[1.0, 0.0], [0.6, 0.5]], dtype=torch.float64)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) @ root.T
    y = torch.randn(n, 2, generator=g, dtype=torch.float64) @ root.T
    return x, y + shift


def test_exact_ot_obeys_the_translation_identity():
    r"""For any coupling, :math:`\sum\pi|x - y - \Delta|^2 = \sum\pi|x - y|^2 + |\Delta|^2 - 2\Delta\cdot(\bar x -
    \bar y)`, so the optimal value moves by exactly that; a sub-optimal plan would not."""
    shift = torch.tensor([0.7, -0.4], dtype=torch.float64)
    x, y = _shifted_pair(300, 0, 0.0)
    moved = wasserstein2(x, y + shift) ** 2
    expected = wasserstein2(x, y) ** 2 + float(shift @ shift) - 2 * float(shift @ (x.mean(0) - y.mean(0)))
    assert moved == pytest.approx(expected, rel=1e-10)


def test_exact_ot_w2_minus_its_floor_matches_the_bures_value_within_sampling_error():
    """Shift only: E W2^2(X_n, Y_n + D) = |D|^2 + E W2^2(X'_n, Y'_n) exactly, so the batch mean of the difference
    with an independent floor pair estimates the Bures W2^2 = |D|^2 without bias; z-score over 12 batches."""
    shift = torch.tensor([0.5, 0.3], dtype=torch.float64)
    bures = gaussian_w2(torch.zeros(2), torch.eye(2), shift, torch.eye(2)) ** 2
    x, y = _shifted_pair(12 * 200, 3, shift)
    x0, y0 = _shifted_pair(12 * 200, 4, 0.0)
    estimate = batch_means(lambda a, b, c, d: wasserstein2(a, b) ** 2 - wasserstein2(c, d) ** 2, x, y, x0, y0,
                           batch_size=200)
    assert abs(estimate.value - bures) < Z * estimate.stderr
    assert estimate.stderr < 0.2 * bures  # the test has power


def test_sliced_w2_is_exact_ot_in_one_dimension_for_unequal_sizes():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 1, generator=g, dtype=torch.float64)
    y = 2 * torch.randn(170, 1, generator=g, dtype=torch.float64) + 1
    assert sliced_wasserstein2(x, y, n_projections=3) == pytest.approx(wasserstein2(x, y), rel=1e-12)
    assert sliced_wasserstein2(x, x[torch.randperm(300, generator=g)]) == 0.0


def test_sliced_w2_moves_by_the_projected_shift():
    """Per direction the 1-D translation identity holds, so SW2^2 moves by mean((t.D)^2 - 2 (t.D) t.(xbar - ybar))
    over the seeded directions, and mean((t.D)^2) estimates |D|^2 / d."""
    shift = torch.tensor([0.7, -0.4], dtype=torch.float64)
    x, y = _shifted_pair(400, 6, 0.0)
    theta = sphere_directions(2048, 2, seed=3)
    along = theta @ shift
    moved = sliced_wasserstein2(x, y + shift, n_projections=2048, seed=3) ** 2
    expected = (sliced_wasserstein2(x, y, n_projections=2048, seed=3) ** 2
                + float((along.square() - 2 * along * (theta @ (x.mean(0) - y.mean(0)))).mean()))
    assert moved == pytest.approx(expected, rel=1e-10)
    z = (float(along.square().mean()) - float(shift @ shift) / 2) / float(along.square().std() / 2048**0.5)
    assert abs(z) < Z


@pytest.mark.parametrize("name", ["gmm-ring8-2d", "gmm-d16-k10"])
def test_kernel_mean_matches_monte_carlo(name):
    """E k(x, Y) at a few points (diagonal and full covariances) against 200000 seeded draws of Y, z-scores."""
    target = get_problem(name).target()
    g = torch.Generator().manual_seed(7)
    points = target.sample(4, g) + 0.3
    y = target.sample(200_000, g)
    h = 1.5
    k = torch.exp(-torch.cdist(points, y).square() / (2 * h**2))
    z = (kernel_mean(points, target, h) - k.mean(1)) / (k.std(1) / y.shape[0] ** 0.5)
    assert float(z.abs().max()) < Z


def test_expected_kernel_matches_monte_carlo_across_covariance_kinds():
    """E k(X, Y) for (full, diagonal), (diagonal, diagonal) and (full, full) mixtures, 100000 seeded pairs each."""
    full = get_problem("gmm-d16-k10").target()
    diagonal = GaussianMixture([0.3, 0.7], torch.zeros(2, 16) + torch.arange(2.0)[:, None], [0.5, 2.0])
    g = torch.Generator().manual_seed(8)
    for p, q in [(full, diagonal), (diagonal, diagonal), (full, full)]:
        k = torch.exp(-(p.sample(100_000, g) - q.sample(100_000, g)).square().sum(1) / (2 * 4.0**2))
        z = (expected_kernel(p, q, 4.0) - float(k.mean())) / float(k.std() / len(k) ** 0.5)
        assert abs(z) < Z
    assert mixture_mmd2(full, full, 4.0) == pytest.approx(0.0, abs=1e-14)
    assert mixture_mmd2(full, diagonal, 4.0) > 0


@pytest.mark.parametrize(("shift", "low", "high"), [(0.0, 1.0, 1.45), (1.0, 0.85, 1.15)])
def test_mmd2_is_unbiased_and_its_stderr_is_calibrated(shift, low, high):
    """300 seeded repetitions at n = 60 from the target (shift 0: the degenerate U-statistic) and from a shifted,
    widened mixture: the mean of the estimates is the exact MMD^2 within 4 of its standard errors, and the rms of the
    reported standard errors over the spread of the estimates (known to ~4% from 300 draws) is within 15% of one
    away from P = Q, and conservative but by less than 45% at P = Q, where the clamp of zeta_1 acts (see
    mmd2_to_mixture; measured 1.13-1.27 there over three seeds, 0.97-1.07 at shift 1)."""
    target = get_problem("gmm-ring8-2d").target()
    source = GaussianMixture(target.weights, target.means + shift, target.component_covariances() * (1 + shift))
    truth = mixture_mmd2(source, target, 1.0)
    g = torch.Generator().manual_seed(9)
    runs = [mmd2_to_mixture(source.sample(60, g), target, 1.0) for _ in range(300)]
    values = torch.tensor([r.value for r in runs])
    stderrs = torch.tensor([r.stderr for r in runs])
    assert abs(float(values.mean()) - truth) < Z * float(values.std()) / 300**0.5
    assert low < float(stderrs.square().mean().sqrt() / values.std()) < high
    assert float(stderrs.min()) > 0


def test_moment_errors_and_batch_means():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64)
    mean, cov = torch.ones(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    assert mean_error(x, mean) == pytest.approx(float(np.linalg.norm(x.numpy().mean(0) - 1)), rel=1e-12)
    assert covariance_error(x, cov) == pytest.approx(float(np.linalg.norm(np.cov(x.numpy().T) - np.eye(3))),
                                                     rel=1e-12)
    estimate = batch_means(lambda b: float(b[:, 0].mean()), x, batch_size=100)
    per_batch = x[:, 0].reshape(4, 100).mean(1)
    assert estimate.value == pytest.approx(float(per_batch.mean()), rel=1e-12)
    assert estimate.stderr == pytest.approx(float(per_batch.std() / 2), rel=1e-12)


def test_bad_arguments_raise_value_errors_naming_them():
    x = torch.randn(10, 2, dtype=torch.float64)
    target = get_problem("gmm-ring8-2d").target()
    with pytest.raises(ValueError, match="x: contains NaN"):
        sliced_wasserstein2(torch.full((5, 2), math.nan), x)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, d\)"):
        wasserstein2(torch.ones(5), x)
    with pytest.raises(ValueError, match="y: dimension 3 differs"):
        sliced_wasserstein2(x, torch.ones(4, 3))
    for bad in (0.0, -1.0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="bandwidth: expected a finite positive number"):
            mmd2_to_mixture(x, target, bad)
    with pytest.raises(ValueError, match=r"x: expected shape .* N >= 4"):
        mmd2_to_mixture(x[:3], target, 1.0)
    with pytest.raises(ValueError, match="mixture: dimension 2 differs"):
        kernel_mean(torch.ones(4, 3), target, 1.0)
    with pytest.raises(ValueError, match="n_projections: expected a positive int"):
        sliced_wasserstein2(x, x, n_projections=0)
    with pytest.raises(ValueError, match="batch_size: 10 rows must split into at least two batches of 4"):
        batch_means(mean_error, x, batch_size=4)
    with pytest.raises(ValueError, match="samples: expected equal numbers of rows"):
        batch_means(wasserstein2, x, x[:8], batch_size=2)
    with pytest.raises(ValueError, match="cov_b: not positive definite"):
        gaussian_kl(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="cov_a: not symmetric"):
        gaussian_w2(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="mean: expected shape"):
        mean_error(x, torch.zeros(3))
    side = math.isqrt(EXACT_OT_MAX_PAIRS) + 1
    with pytest.raises(ValueError, match=r"exceeds .* pairs; use smaller batches"):
        wasserstein2(torch.zeros(side, 1), torch.zeros(side, 1))


def test_exact_ot_without_pot_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ot", None)
    with pytest.raises(ImportError, match=r"pip install sdetoolkit\[ot\]"):
        wasserstein2(torch.zeros(3, 1), torch.ones(3, 1))
