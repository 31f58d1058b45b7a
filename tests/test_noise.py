"""Noise sources: the law of Brownian increments and kernel integrals at every level, refinement consistency,
batch-size invariance, and the errors a misuse gets."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from sdetoolkit import get_schedule
from sdetoolkit.noise import (
    BLOCK,
    BrownianPath,
    IIDNoise,
    Kernel,
    data_prediction_kernel,
    gram_factor,
    noise_prediction_kernel,
)
from sdetoolkit.solvers.base import Claim, Solver, sample

Z_BOUND = 4.5
"""Two-sided bound on a standardised statistic; at most ~7e-6 false-alarm rate per check."""


def fine_times(schedule, n=64, t_lo=1e-3):
    lam_hi, lam_lo = (float(schedule.lam(t)) for t in (t_lo, schedule.t_hi * (1 - 1e-3)))
    return schedule.t_of_lambda(torch.linspace(lam_lo, lam_hi, n + 1, dtype=torch.float64)).flip(0).tolist()


def quad_covariance(kernels, lo, hi):
    def value(k, u):
        return 1.0 if k is None else float(k(torch.tensor(u, dtype=torch.float64)))
    m = len(kernels)
    cov = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            cov[i, j] = integrate.quad(lambda u, a=kernels[i], b=kernels[j]: value(a, u) * value(b, u), lo, hi,
                                       epsabs=0, epsrel=1e-13, limit=200)[0]
    return cov


@pytest.mark.parametrize("family", ["vp-linear", "vp-cosine", "ve", "edm", "flow"])
def test_gram_factor_matches_adaptive_quadrature(family):
    schedule = get_schedule(family)
    kernels = [None, data_prediction_kernel(schedule), noise_prediction_kernel(schedule)]
    times = fine_times(schedule, 4)
    for lo, hi in [(times[0], times[1]), (times[0], times[-1]), (times[2], times[3])]:
        ends = (torch.tensor([v], dtype=torch.float64) for v in (lo, hi))
        factor = gram_factor(kernels, *ends)[0].numpy()
        exact = quad_covariance(kernels, lo, hi)
        assert np.allclose(factor @ factor.T, exact, rtol=1e-10, atol=0)
        assert factor[0, 0] == pytest.approx(math.sqrt(hi - lo), rel=1e-14)


def test_exponential_integrator_variances_have_closed_forms():
    r"""Var of the data kernel is e^{2 lam_lo} - e^{2 lam_hi}; of the noise kernel e^{-2 lam_hi} - e^{-2 lam_lo}."""
    schedule = get_schedule("vp-linear")
    lo, hi = 0.05, 0.6
    factor = gram_factor([data_prediction_kernel(schedule), noise_prediction_kernel(schedule)],
                         torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64))[0]
    cov = factor @ factor.T
    lam_lo, lam_hi = float(schedule.lam(lo)), float(schedule.lam(hi))
    assert float(cov[0, 0]) == pytest.approx(math.exp(2 * lam_lo) - math.exp(2 * lam_hi), rel=1e-13)
    assert float(cov[1, 1]) == pytest.approx(math.exp(-2 * lam_hi) - math.exp(-2 * lam_lo), rel=1e-13)


def test_coarse_increments_are_sums_of_fine_ones():
    schedule = get_schedule("vp-linear")
    kernel = data_prediction_kernel(schedule)
    times = fine_times(schedule, 32)
    path = BrownianPath(times, seed=3, kernels=[kernel])
    like = torch.zeros(50, 3, dtype=torch.float64)
    for stride in (2, 8, 32):
        for start in range(0, 32, stride):
            hi, lo = times[start + stride], times[start]
            coarse = path.integrals(hi, lo, [None, kernel], like)
            fine = [path.integrals(times[j + 1], times[j], [None, kernel], like) for j in range(start, start + stride)]
            for c, parts in zip(coarse, zip(*fine, strict=True), strict=True):
                assert torch.allclose(c, sum(parts), rtol=0, atol=1e-13 * (1 + float(c.abs().max())))


@pytest.mark.parametrize("stride", [1, 4, 16])
def test_increments_have_the_right_law_at_every_level(stride):
    """(dW, I_K) over each step of a level: mean 0, covariance (int 1, int K; int K, int K^2), independent steps."""
    schedule = get_schedule("vp-linear")
    kernel = data_prediction_kernel(schedule)
    times = fine_times(schedule, 32)
    path = BrownianPath(times, seed=11, kernels=[kernel])
    n = 6000
    like = torch.zeros(n, 1, dtype=torch.float64)
    previous = None
    for start in range(0, 32, stride):
        lo, hi = times[start], times[start + stride]
        draws = torch.cat(path.integrals(hi, lo, [None, kernel], like), dim=1).numpy()
        exact = quad_covariance([None, kernel], lo, hi)
        scale = np.sqrt(np.diag(exact))
        z_mean = draws.mean(0) / (scale / math.sqrt(n))
        assert np.abs(z_mean).max() < Z_BOUND
        sample_cov = draws.T @ draws / n
        se = np.sqrt((np.outer(np.diag(exact), np.diag(exact)) + exact**2) / n)
        assert np.abs((sample_cov - exact) / se).max() < Z_BOUND
        if previous is not None:
            corr = np.corrcoef(previous[:, 0], draws[:, 0])[0, 1]
            assert abs(corr) * math.sqrt(n) < Z_BOUND
        previous = draws


def test_a_wrong_covariance_is_detected():
    """The law test above has power: draws scaled by 3% in standard deviation fail its covariance check."""
    schedule = get_schedule("vp-linear")
    times = fine_times(schedule, 4)
    path = BrownianPath(times, seed=11)
    n = 60000
    draws = 1.03 * path.integrals(times[4], times[0], [None], torch.zeros(n, 1, dtype=torch.float64))[0].numpy()
    var = times[4] - times[0]
    assert abs(draws.var() - var) / (var * math.sqrt(2 / n)) > Z_BOUND


@pytest.mark.parametrize("source", ["iid", "path"])
def test_batch_size_invariance(source):
    schedule = get_schedule("edm")
    times = [0.5, 1.0, 2.0]
    kernel = data_prediction_kernel(schedule)
    big, small = torch.zeros(BLOCK + 700, 2, dtype=torch.float64), torch.zeros(10, 2, dtype=torch.float32)
    noise = IIDNoise(5) if source == "iid" else BrownianPath(times, 5, [kernel])
    a = noise.integrals(2.0, 0.5, [None, kernel], big)
    noise.reset()
    b = noise.integrals(2.0, 0.5, [None, kernel], small)
    for x, y in zip(a, b, strict=True):
        assert y.dtype == torch.float32
        assert torch.allclose(x[:10].float(), y, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(a[0][:10], a[0][BLOCK:BLOCK + 10])


def test_iid_single_kernel_integral_is_the_step_normal_scaled():
    schedule = get_schedule("vp-linear")
    kernel = data_prediction_kernel(schedule)
    like = torch.zeros(7, 2, dtype=torch.float64)
    noise = IIDNoise(1)
    z = noise.normal(0.6, 0.3, like)
    noise.reset()
    (integral,) = noise.integrals(0.6, 0.3, [kernel], like)
    lam_lo, lam_hi = float(schedule.lam(0.3)), float(schedule.lam(0.6))
    std = math.sqrt(math.exp(2 * lam_lo) - math.exp(2 * lam_hi))
    assert torch.allclose(integral, std * z, rtol=1e-13, atol=0)
    again = noise.normal(0.6, 0.3, like)
    assert not torch.allclose(again, z), "a second request for the same step must be a fresh draw"


def test_path_normal_is_the_normalised_increment_and_a_single_time_draw_is_fresh():
    path = BrownianPath([0.1, 0.4, 0.9], seed=2)
    like = torch.zeros(5, 1, dtype=torch.float64)
    (dw,) = path.integrals(0.9, 0.1, [None], like)
    assert torch.allclose(path.normal(0.9, 0.1, like), dw / math.sqrt(0.8), rtol=1e-14, atol=0)
    assert not torch.allclose(path.normal(0.4, 0.4, like), path.normal(0.4, 0.4, like))


class _Midpoint(Solver):
    """A test-only stochastic step that asks for noise at the step's midpoint in t."""

    name = "test-midpoint-noise"
    family = "test"
    parameterisation = "x0"
    stochastic = True
    claim = Claim(None, "none", "test")
    nfe_per_step = 0
    register = False

    def step(self, state):
        mid = 0.5 * (state.t + state.t_next)
        first = state.normal(state.t, mid)
        second = state.normal(mid, state.t_next)
        return state.x + 1e-3 * (first + second)


def test_covering_path_holds_every_grid_and_stage_time(tmp_path):
    from sdetoolkit import get_problem, make_grid

    problem = get_problem("gauss-1d")
    grids = [make_grid("uniform-t", problem.schedule, n, problem.t_min, problem.t_max) for n in (2, 4)]
    solver = _Midpoint()
    path = BrownianPath.covering(solver, problem.model(), grids, seed=0)
    expected = {float(t) for g in grids for t in g} | {0.5 * float(g[i] + g[i + 1]) for g in grids
                                                        for i in range(len(g) - 1)}
    assert np.allclose(path.times, sorted(expected), rtol=1e-15)
    x = problem.prior().sample(3, torch.Generator().manual_seed(0))
    assert torch.isfinite(sample(solver, problem.model(), grids[1], x, path)).all()


def test_misuse_raises_clear_errors():
    schedule = get_schedule("edm")
    kernel = data_prediction_kernel(schedule)
    path = BrownianPath([0.5, 1.0, 2.0], seed=0, kernels=[kernel])
    like = torch.zeros(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"t_lo: time 0\.7"):
        path.integrals(1.0, 0.7, [None], like)
    with pytest.raises(ValueError, match=r"kernels: .* not declared"):
        path.integrals(1.0, 0.5, [noise_prediction_kernel(schedule)], like)
    with pytest.raises(ValueError, match="t_hi: must be >= t_lo"):
        IIDNoise(0).normal(0.2, 0.5, like)
    with pytest.raises(ValueError, match="seed"):
        IIDNoise(-1)
    with pytest.raises(ValueError, match="sigma = 0"):
        IIDNoise(0).integrals(1.0, 0.0, [kernel], like)
    with pytest.raises(ValueError, match="times: need at least two"):
        BrownianPath([1.0])
    assert Kernel("k", lambda u: u, schedule) == Kernel("k", lambda u: 2 * u, schedule)
