import math

import pytest
import torch

from sdetoolkit import AnalyticModel, Gaussian, ScoreError, get_problem, get_schedule


@pytest.fixture
def problem():
    return get_problem("gmm-d16-k10")


def points(problem, t, n=256, seed=0):
    return problem.distribution.noised(problem.schedule, t).sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("t", [1e-3, 0.3, 1.0])
def test_parameterisations_are_consistent(problem, t):
    model = problem.model()
    x = points(problem, t)
    pred = model(x, t)
    alpha, sigma = problem.schedule.alpha(t).item(), problem.schedule.sigma(t).item()
    torch.testing.assert_close(alpha * pred.x0 + sigma * pred.eps, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.eps, -sigma * pred.score, rtol=0, atol=0)
    torch.testing.assert_close(pred.v, alpha * pred.eps - sigma * pred.x0, rtol=0, atol=0)
    # variance preserving: x0 = alpha x - sigma v and eps = sigma x + alpha v
    torch.testing.assert_close(alpha * x - sigma * pred.v, pred.x0, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(sigma * x + alpha * pred.v, pred.eps, rtol=1e-11, atol=1e-11)
    x0, score = problem.distribution.x0_and_score(x, problem.schedule, t)
    assert torch.equal(pred.x0, x0) and torch.equal(pred.score, score)
    assert torch.equal(pred["eps"], pred.eps)


def test_counts_evaluations(problem):
    model = problem.model()
    x = points(problem, 0.5)
    for _ in range(3):
        model(x, 0.5)
    model.pf_ode_drift(x, 0.4)
    assert model.nfe == 4
    model.reset()
    assert model.nfe == 0


def test_pf_ode_drift_equals_f_x_minus_half_g2_score(problem):
    model = problem.model()
    t = 0.37
    x = points(problem, t)
    expected = problem.schedule.f(t).item() * x - 0.5 * problem.schedule.g2(t).item() * model(x, t).score
    torch.testing.assert_close(model.pf_ode_drift(x, t), expected, rtol=1e-11, atol=1e-11)


def test_pf_ode_drift_is_finite_where_alpha_vanishes():
    """Flow schedule at t = 1: f and g^2 are infinite, the velocity eps - x0 is not."""
    model = AnalyticModel(Gaussian([1.0, -2.0], [0.5, 0.2]), get_schedule("flow"))
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pred = model(x, 1.0)
    torch.testing.assert_close(model.pf_ode_drift(x, 1.0), pred.eps - pred.x0)
    torch.testing.assert_close(pred.x0, torch.tensor([[1.0, -2.0]], dtype=torch.float64).expand(5, 2))


def test_unknown_parameterisation(problem):
    with pytest.raises(ValueError, match="parameterisation: unknown 'noise'"):
        problem.model()(points(problem, 0.5), 0.5)["noise"]


def test_score_bias_is_exact_and_consistent(problem):
    t = 0.2
    exact, biased = problem.model(), problem.model(ScoreError(bias=lambda t: 3.0 * t))
    x = points(problem, t)
    clean, noisy = exact(x, t), biased(x, t)
    delta = noisy.score - clean.score
    torch.testing.assert_close(delta.norm(dim=1), torch.full((len(x),), 0.6, dtype=torch.float64))
    assert torch.allclose(delta, delta[:1].expand_as(delta))               # one fixed direction
    alpha, sigma = problem.schedule.alpha(t).item(), problem.schedule.sigma(t).item()
    torch.testing.assert_close(alpha * noisy.x0 + sigma * noisy.eps, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(noisy.x0, (x + sigma**2 * noisy.score) / alpha, rtol=1e-10, atol=1e-10)


def test_score_noise_has_the_requested_law_and_is_seeded(problem):
    t, magnitude = 0.5, 0.7
    x = points(problem, t, n=20_000)
    exact = problem.model()(x, t).score
    model = problem.model(ScoreError(noise=magnitude, seed=3))
    first = model(x, t).score - exact
    second = model(x, t).score - exact
    assert not torch.equal(first, second)                                 # fresh noise per evaluation
    model.reset()
    torch.testing.assert_close(model(x, t).score - exact, first, rtol=0, atol=0)   # reproducible from the seed
    n = first.numel()
    assert abs(first.mean().item()) < 4.5 * magnitude / math.sqrt(n)
    assert abs(first.var().item() - magnitude**2) < 4.5 * magnitude**2 * math.sqrt(2 / n)


def test_error_direction_and_magnitudes_are_validated(problem):
    with pytest.raises(ValueError, match="direction: expected"):
        problem.model(ScoreError(bias=1.0, direction=torch.zeros(16)))
    model = problem.model(ScoreError(bias=lambda t: -1.0))
    with pytest.raises(ValueError, match="bias: magnitude must be finite and non-negative"):
        model(points(problem, 0.5), 0.5)


def test_constructor_and_call_validation(problem):
    with pytest.raises(TypeError, match="distribution: expected"):
        AnalyticModel("not a distribution", problem.schedule)
    with pytest.raises(TypeError, match="schedule: expected"):
        AnalyticModel(problem.distribution, "vp-linear")
    with pytest.raises(ValueError, match="t: times must lie in"):
        problem.model()(points(problem, 0.5), 1.5)
