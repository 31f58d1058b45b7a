import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from sdetoolkit import Gaussian, GaussianMixture, get_problem, get_schedule
from sdetoolkit.testing import batch, gaussians, mixtures, schedules, times

VP_WINDOW = dict(t_min=1e-3, t_max=1.0)


@st.composite
def noised_cases(draw, distributions=None):
    """A distribution, a schedule, a time away from the singular ends, and a seed for evaluation points."""
    schedule = draw(schedules())
    t, seed = draw(times(schedule, margin=1e-2)), draw(st.integers(0, 2**31 - 1))
    return draw(distributions or mixtures()), schedule, t, seed


def dense_reference(distribution: GaussianMixture, schedule, t):
    """torch.distributions' mixture of dense MVNs for the noised marginal: an independent implementation."""
    alpha, sigma = schedule.alpha(t).item(), schedule.sigma(t).item()
    covs = alpha**2 * distribution.component_covariances() + sigma**2 * torch.eye(distribution.dim,
                                                                                 dtype=torch.float64)
    components = torch.distributions.MultivariateNormal(alpha * distribution.means, covariance_matrix=covs)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(distribution.weights), components)


@given(noised_cases())
def test_log_prob_matches_dense_mixture(case):
    distribution, schedule, t, seed = case
    x = batch(distribution.noised(schedule, t), 16, seed, scale=2.0)
    torch.testing.assert_close(distribution.noised(schedule, t).log_prob(x), dense_reference(distribution, schedule,
                               t).log_prob(x), rtol=1e-10, atol=1e-10)


@given(noised_cases())
def test_score_is_gradient_of_log_density(case):
    distribution, schedule, t, seed = case
    x = batch(distribution.noised(schedule, t), 16, seed, scale=2.0).requires_grad_(True)
    gradient, = torch.autograd.grad(dense_reference(distribution, schedule, t).log_prob(x).sum(), x)
    _, score = distribution.x0_and_score(x.detach(), schedule, t)
    scale = gradient.abs().max().item() + 1.0
    assert (score - gradient).abs().max().item() <= 1e-9 * scale
    torch.testing.assert_close(distribution.noised(schedule, t).score(x.detach()), score, rtol=1e-10, atol=1e-10)


@given(noised_cases())
def test_tweedie_identity(case):
    """E[x0 | x_t] = (x + sigma^2 score) / alpha; x0 is computed without dividing by alpha."""
    distribution, schedule, t, seed = case
    x = batch(distribution.noised(schedule, t), 16, seed, scale=2.0)
    x0, score = distribution.x0_and_score(x, schedule, t)
    alpha, sigma = schedule.alpha(t).item(), schedule.sigma(t).item()
    tweedie = (x + sigma**2 * score) / alpha
    assert (x0 - tweedie).abs().max().item() <= 1e-9 * (1 + tweedie.abs().max().item()) / min(alpha, 1.0)


@given(noised_cases())
def test_denoiser_is_posterior_mean_of_each_component(case):
    """Independent formula: E[x0|x] = sum_k r_k (mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^{-1} (x - alpha mu_k))."""
    distribution, schedule, t, seed = case
    x = batch(distribution.noised(schedule, t), 8, seed, scale=2.0)
    alpha, sigma = schedule.alpha(t).item(), schedule.sigma(t).item()
    covs = distribution.component_covariances()
    eye = torch.eye(distribution.dim, dtype=torch.float64)
    gains = torch.linalg.solve(alpha**2 * covs + sigma**2 * eye, alpha * covs).transpose(1, 2)
    resp = distribution.noised(schedule, t).responsibilities(x)
    centred = x[:, None, :] - alpha * distribution.means[None]
    expected = torch.einsum("nk,nki->ni", resp, distribution.means[None] + torch.einsum("kij,nkj->nki", gains,
                                                                                        centred))
    x0, _ = distribution.x0_and_score(x, schedule, t)
    torch.testing.assert_close(x0, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name, fraction", [(name, f) for name in ("gmm-1d-bimodal", "gmm-ring8-2d")
                                            for f in (0.05, 0.4, 1.0)] + [("gauss-full-d16", 0.4),
                                                                          ("gauss-full-d16", 1.0)])
def test_noised_density_is_the_convolution(name, fraction):
    """p_t(x) = E_{x0 ~ p_0}[N(x; alpha x0, sigma^2 I)], estimated by Monte Carlo with its standard error.

    The estimator's effective sample size must exceed 1000, so its standard error can be trusted (in d = 16 at
    small sigma it cannot, which is why that case is not listed).
    """
    problem = get_problem(name)
    schedule, t = problem.schedule, fraction * problem.t_max
    alpha, sigma = schedule.alpha(t).item(), schedule.sigma(t).item()
    generator = torch.Generator().manual_seed(11)
    data = problem.distribution.sample(200_000, generator)
    points = problem.distribution.noised(schedule, t).sample(5, generator)
    d = problem.distribution.dim
    exact = problem.distribution.noised(schedule, t).log_prob(points).exp()
    for point, value in zip(points, exact, strict=True):
        kernel = torch.exp(-((point - alpha * data) ** 2).sum(dim=1) / (2 * sigma**2)) / (2 * math.pi * sigma**2) ** (
            d / 2)
        assert kernel.sum().item() ** 2 / (kernel**2).sum().item() > 1000
        se = kernel.std().item() / math.sqrt(kernel.numel())
        assert abs(kernel.mean().item() - value.item()) < 4.5 * se


@pytest.mark.parametrize("name", ["gmm-ring8-2d", "gmm-d16-k10", "gauss-full-d16"])
def test_noised_moments_match_monte_carlo(name):
    """Mean and covariance of p_t against samples of alpha x0 + sigma eps (4.5 standard errors per entry)."""
    problem = get_problem(name)
    schedule, t, n = problem.schedule, 0.3 * problem.t_max, 200_000
    generator = torch.Generator().manual_seed(5)
    x0 = problem.distribution.sample(n, generator)
    xt = schedule.alpha(t).item() * x0 + schedule.sigma(t).item() * torch.randn(x0.shape, dtype=torch.float64,
                                                                                generator=generator)
    marginal = problem.distribution.noised(schedule, t)
    centred = xt - marginal.mean()
    mean_se = centred.std(dim=0) / math.sqrt(n)
    assert bool(((centred.mean(dim=0)).abs() < 4.5 * mean_se).all())
    products = centred[:, :, None] * centred[:, None, :]
    cov_se = products.std(dim=0) / math.sqrt(n)
    assert bool(((products.mean(dim=0) - marginal.covariance()).abs() < 4.5 * cov_se + 1e-12).all())


@pytest.mark.parametrize("name", ["gmm-ring8-2d", "gmm-d16-k10", "gauss-full-d16"])
def test_sampling_is_seeded_and_has_the_right_moments(name):
    distribution = get_problem(name).distribution
    a = distribution.sample(100_000, torch.Generator().manual_seed(3))
    b = distribution.sample(100_000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    centred = a - distribution.mean()
    assert bool((centred.mean(dim=0).abs() < 4.5 * centred.std(dim=0) / math.sqrt(len(a))).all())
    _, labels = distribution.sample(100_000, torch.Generator().manual_seed(4), return_labels=True)
    shares = torch.bincount(labels, minlength=distribution.n_components) / len(labels)
    se = (distribution.weights * (1 - distribution.weights) / len(labels)).sqrt()
    assert bool(((shares - distribution.weights).abs() <= 4.5 * se).all())


# -- exact Gaussian flows ----------------------------------------------------------------------------------------
def affine_parts(fn, dim):
    """(A, b) of an affine map x -> x A^T + b, probed on 0 and the unit vectors."""
    probes = torch.cat([torch.zeros(1, dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)])
    out = fn(probes)
    return (out[1:] - out[0]).T, out[0]


@given(gaussians(), st.data())
def test_pf_ode_map_transports_the_marginal(gaussian, data):
    schedule = get_schedule("vp-linear")
    t = data.draw(st.floats(1e-3, 1.0))
    s = data.draw(st.floats(1e-3, 1.0))
    A, b = affine_parts(lambda x: gaussian.pf_ode_map(x, schedule, t, s), gaussian.dim)
    p_t, p_s = gaussian.noised(schedule, t), gaussian.noised(schedule, s)
    torch.testing.assert_close(A @ p_t.mean() + b, p_s.mean(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(A @ p_t.covariance() @ A.T, p_s.covariance(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule_name", ["vp-linear", "vp-cosine", "ve", "edm", "flow"])
def test_pf_ode_map_solves_the_ode(schedule_name):
    """The closed-form map agrees with DOP853 on dx/dt = f x - g^2/2 score at tight tolerance."""
    schedule = get_schedule(schedule_name)
    gaussian = get_problem("gauss-full-d16").distribution
    t, s = 0.8 * schedule.t_hi, 0.02 * schedule.t_hi
    x = gaussian.noised(schedule, t).sample(4, torch.Generator().manual_seed(2))

    def velocity(time, flat):
        state = torch.from_numpy(flat.reshape(x.shape))
        _, score = gaussian.x0_and_score(state, schedule, time)
        return (schedule.f(time).item() * state - 0.5 * schedule.g2(time).item() * score).numpy().ravel()

    solution = solve_ivp(velocity, (t, s), x.numpy().ravel(), method="DOP853", rtol=1e-12, atol=1e-12)
    numeric = torch.from_numpy(solution.y[:, -1].reshape(x.shape))
    torch.testing.assert_close(gaussian.pf_ode_map(x, schedule, t, s), numeric, rtol=1e-8, atol=1e-8)


@given(gaussians(), st.data())
def test_reverse_sde_transition_preserves_the_marginal(gaussian, data):
    """If x_t ~ p_t then x_s ~ p_s: E[mean] = m_s and Cov(mean) + cov = C_s (law of total covariance)."""
    schedule = data.draw(schedules())
    t = data.draw(times(schedule, margin=1e-2))
    s = data.draw(st.floats(schedule.t_lo + 1e-3 * schedule.t_hi, t * (1 - 1e-3)))
    A, b = affine_parts(lambda x: gaussian.reverse_sde_transition(x, schedule, t, s).mean, gaussian.dim)
    cov = gaussian.reverse_sde_transition(torch.zeros(1, gaussian.dim, dtype=torch.float64), schedule, t, s).cov
    p_t, p_s = gaussian.noised(schedule, t), gaussian.noised(schedule, s)
    torch.testing.assert_close(A @ p_t.mean() + b, p_s.mean(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(A @ p_t.covariance() @ A.T + cov, p_s.covariance(), rtol=1e-9, atol=1e-10)


@given(gaussians(), st.data())
def test_reverse_sde_transition_composes(gaussian, data):
    """Chapman-Kolmogorov: t -> u -> s equals t -> s."""
    schedule = get_schedule("vp-linear")
    t = data.draw(st.floats(0.1, 1.0))
    u = data.draw(st.floats(0.05, t * 0.99))
    s = data.draw(st.floats(0.01, u * 0.99))
    zero = torch.zeros(1, gaussian.dim, dtype=torch.float64)
    A_tu, b_tu = affine_parts(lambda x: gaussian.reverse_sde_transition(x, schedule, t, u).mean, gaussian.dim)
    A_us, b_us = affine_parts(lambda x: gaussian.reverse_sde_transition(x, schedule, u, s).mean, gaussian.dim)
    A_ts, b_ts = affine_parts(lambda x: gaussian.reverse_sde_transition(x, schedule, t, s).mean, gaussian.dim)
    cov_tu = gaussian.reverse_sde_transition(zero, schedule, t, u).cov
    cov_us = gaussian.reverse_sde_transition(zero, schedule, u, s).cov
    cov_ts = gaussian.reverse_sde_transition(zero, schedule, t, s).cov
    torch.testing.assert_close(A_us @ A_tu, A_ts, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(A_us @ b_tu + b_us, b_ts, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(A_us @ cov_tu @ A_us.T + cov_us, cov_ts, rtol=1e-9, atol=1e-11)


def test_reverse_sde_transition_samples_have_the_marginal_law():
    gaussian = get_problem("gauss-full-d16").distribution
    schedule, t, s, n = get_schedule("vp-linear"), 0.7, 0.2, 200_000
    generator = torch.Generator().manual_seed(8)
    x_t = gaussian.noised(schedule, t).sample(n, generator)
    x_s = gaussian.reverse_sde_transition(x_t, schedule, t, s).sample(generator)
    target = gaussian.noised(schedule, s)
    centred = x_s - target.mean()
    assert bool((centred.mean(dim=0).abs() < 4.5 * centred.std(dim=0) / math.sqrt(n)).all())
    products = centred[:, :, None] * centred[:, None, :]
    se = products.std(dim=0) / math.sqrt(n)
    assert bool(((products.mean(dim=0) - target.covariance()).abs() < 4.5 * se).all())


# -- dtype, device, precision ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gmm-ring8-2d", "gmm-d16-k10", "gmm-d64-k16", "gauss-aniso-d64", "gmm-1d-bimodal",
                                  "gauss-near-point-d4", "gmm-grid25-2d", "gauss-full-d16"])
@pytest.mark.parametrize("where", ["t_min", "middle", "t_max"])
def test_float32_follows_input_and_keeps_precision(name, where):
    """float32 in, float32 out, within 2e-5 (about 170 float32 epsilons) of float64 at the same rounded input.

    Errors are measured against natural scales (the data's RMS size for x0, the batch RMS of the score), since the
    score has zeros between modes and x0 averages modes at large t.
    """
    problem = get_problem(name)
    t = {"t_min": problem.t_min, "middle": 0.1 * problem.t_max, "t_max": problem.t_max}[where]
    x32 = problem.distribution.noised(problem.schedule, t).sample(2000, torch.Generator().manual_seed(0)).float()
    x0_64, score_64 = problem.distribution.x0_and_score(x32.double(), problem.schedule, t)
    x0_32, score_32 = problem.distribution.x0_and_score(x32, problem.schedule, t)
    assert x0_32.dtype == score_32.dtype == torch.float32
    data_scale = math.sqrt(problem.facts["covariance_trace"] + problem.facts["mean_norm"] ** 2)
    score_scale = score_64.norm(dim=1).square().mean().sqrt().item()
    for exact, single, scale in [(x0_64, x0_32, data_scale), (score_64, score_32, score_scale)]:
        error = ((single.double() - exact).norm(dim=1) / scale).max().item()
        assert error < 2e-5, error


NARROW_FAR_MODES = dict(weights=torch.full((3,), 1 / 3, dtype=torch.float64),
                        means=torch.tensor([[-100.0], [100.0], [100.02]], dtype=torch.float64),
                        covs=torch.full((3,), 1e-4, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_narrow_modes_far_from_the_mixture_mean(dtype):
    """Modes at -100, 100, 100.02 with variance 1e-4: no cancellation in the quadratic forms (regression; expanding
    about the mixture mean lost every digit in float32 here).

    Errors are in units of the marginal standard deviation, against float64 at the same rounded input. The floor
    is the rounding of the means themselves, 4 eps |mu| / sd: about 1e-3 in float32 and 2e-12 in float64.
    """
    mixture = GaussianMixture(**NARROW_FAR_MODES)
    schedule, t = get_schedule("edm"), 0.002
    x = torch.linspace(99.99, 100.03, 41, dtype=torch.float64)[:, None].to(dtype)
    reference = dense_reference(mixture, schedule, t)
    x_ref = x.double().requires_grad_(True)
    gradient, = torch.autograd.grad(reference.log_prob(x_ref).sum(), x_ref)
    _, score = mixture.x0_and_score(x, schedule, t)
    sd = math.sqrt(1e-4 + t**2)
    tolerance = 4 * torch.finfo(dtype).eps * 100.02 / sd
    assert ((score.double() - gradient).abs() * sd).max().item() < tolerance
    log_p = mixture.noised(schedule, t).log_prob(x)
    assert (log_p.double() - reference.log_prob(x.double())).abs().max().item() < tolerance * 10


@pytest.mark.parametrize("path", ["expanded", "centred", "full"])
def test_chunks_and_reused_buffers_change_nothing(path, monkeypatch):
    """Several chunks and a short last one, through the buffers reused across chunks (x without grad) and through
    fresh tensors (x requiring grad, which autograd records): the same numbers, and those of one big chunk."""
    if path == "centred":
        distribution, schedule, t = GaussianMixture(**NARROW_FAR_MODES), get_schedule("edm"), 0.002
    else:
        problem = get_problem("gmm-d64-k16" if path == "expanded" else "gmm-d16-k10")
        distribution, schedule, t = problem.distribution, problem.schedule, 0.5
    noised = distribution.noised(schedule, t)
    p = noised._parameters(torch.empty(0, dtype=torch.float64))
    assert (p.basis is not None) == (path == "full")
    assert path == "full" or noised._expansion_is_accurate(p, 1.0, p.eigvals, torch.float64) == (path == "expanded")
    monkeypatch.setattr("sdetoolkit.distributions._EXPANDED_ROWS", 7)
    monkeypatch.setattr("sdetoolkit.distributions._CHUNK_ELEMENTS", 7 * noised.n_components * noised.dim)
    x = noised.sample(23, torch.Generator().manual_seed(0))

    def evaluate(x):
        x0, score = distribution.x0_and_score(x, schedule, t)
        return [noised.score(x), x0, score, noised.log_prob(x), noised.responsibilities(x)]

    reused, fresh = evaluate(x), evaluate(x.clone().requires_grad_(True))
    monkeypatch.setattr("sdetoolkit.distributions._EXPANDED_ROWS", 10**6)
    monkeypatch.setattr("sdetoolkit.distributions._CHUNK_ELEMENTS", 10**9)
    whole = evaluate(x)
    for a, b, c in zip(reused, fresh, whole, strict=True):
        assert torch.equal(a, b.detach())
        torch.testing.assert_close(a, c, rtol=1e-13, atol=1e-13)


# -- validation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=[0.5, 0.6], means=[[0.0], [1.0]], covs=[1.0, 1.0]), "weights: must sum to one"),
    (dict(weights=[1.2, -0.2], means=[[0.0], [1.0]], covs=[1.0, 1.0]), "weights: must be non-negative"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [1.0], [2.0]], covs=[1.0, 1.0]), "means: expected shape"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], covs=[1.0, 1.0, 1.0]), "covs: expected shape"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [float("nan")]], covs=[1.0, 1.0]), "means: contains NaN"),
    (dict(weights=[0.5, 0.5], means=[[0.0], [1.0]], covs=[1.0, float("nan")]), "covs: contains NaN"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 2.0], [2.0, 1.0]]]), "covs: covariance 0 is not positive"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[[1.0, 0.5], [0.0, 1.0]]]), "covs: covariance 0 is not symm"),
    (dict(weights=[1.0], means=[[0.0, 0.0]], covs=[[1.0, -1.0]]), "covs: covariance 0 is not positive"),
])
def test_bad_mixtures_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(**kwargs)


def test_bad_inputs_are_rejected():
    gaussian = Gaussian([0.0, 1.0], [[1.0, 0.2], [0.2, 0.5]])
    schedule = get_schedule("vp-linear")
    with pytest.raises(ValueError, match="cov: expected"):
        Gaussian([0.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="x: contains NaN"):
        gaussian.x0_and_score(torch.tensor([[0.0, float("nan")]], dtype=torch.float64), schedule, 0.5)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2\)"):
        gaussian.x0_and_score(torch.zeros(3, 3, dtype=torch.float64), schedule, 0.5)
    with pytest.raises(ValueError, match="t: times must lie in"):
        gaussian.x0_and_score(torch.zeros(3, 2, dtype=torch.float64), schedule, 1.5)
    with pytest.raises(ValueError, match="t: is NaN"):
        gaussian.noised(schedule, float("nan"))
    with pytest.raises(ValueError, match="s: the reverse SDE runs backwards"):
        gaussian.reverse_sde_transition(torch.zeros(1, 2, dtype=torch.float64), schedule, 0.2, 0.5)
    with pytest.raises(ValueError, match="t: expected a single time"):
        gaussian.x0_and_score(torch.zeros(3, 2, dtype=torch.float64), schedule, torch.tensor([0.1, 0.2]))


def test_weights_are_renormalised_within_tolerance():
    mixture = GaussianMixture(np.array([0.3, 0.7]) * (1 + 1e-12), [[0.0], [1.0]], [1.0, 1.0])
    assert mixture.weights.sum().item() == pytest.approx(1.0, abs=1e-15)


@settings(max_examples=20)
@given(mixtures())
def test_mixture_covariance_matches_dense_formula(mixture):
    w, mu, covs = mixture.weights, mixture.means, mixture.component_covariances()
    second = torch.einsum("k,kij->ij", w, covs + mu[:, :, None] * mu[:, None, :])
    expected = second - torch.outer(mixture.mean(), mixture.mean())
    torch.testing.assert_close(mixture.covariance(), expected, rtol=1e-9, atol=1e-9)
