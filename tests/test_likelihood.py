"""PF-ODE log-likelihood: the exact divergence against autograd, convergence to the exact log p_{t_min} at the
integrator's order, Hutchinson's estimator (unbiased, its variance law, probes fixed along the trajectory)."""

import math

import pytest
import torch

from sdetoolkit import Gaussian, ScoreError, get_problem, get_schedule, make_grid
from sdetoolkit.solvers import get_solver
from sdetoolkit.studies.likelihood import (
    draw_probes,
    hutchinson_divergence,
    likelihood,
    log_likelihood,
    posterior_covariance_trace,
    velocity_divergence,
)


def autograd_divergence(model, x, t):
    """Reference: the trace of dv/dx by one backward pass per dimension."""
    x = x.clone().requires_grad_(True)
    v = model.pf_ode_drift(x, t)
    return sum(torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))


def autograd_jacobian(model, x, t):
    """Reference: dv/dx, (N, d, d), row i the gradient of v_i."""
    x = x.clone().requires_grad_(True)
    v = model.pf_ode_drift(x, t)
    return torch.stack([torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0] for i in range(x.shape[1])], 1)


@pytest.mark.parametrize("name", ["gmm-ring8-2d", "gmm-d16-k10", "gauss-full-d16", "gmm-grid25-2d"])
def test_exact_divergence_matches_the_autograd_trace(name):
    """Diagonal and full covariances, VP and EDM schedules, from t_min to t_max."""
    problem = get_problem(name)
    model = problem.model()
    x = problem.target().sample(6, torch.Generator().manual_seed(1))
    for t in torch.linspace(problem.t_min, problem.t_max, 5).tolist():
        reference = autograd_divergence(model, x, t)
        exact = velocity_divergence(problem.distribution, problem.schedule, x, t)
        assert torch.allclose(exact, reference, rtol=1e-10, atol=1e-10 * float(reference.abs().max())), t


def test_exact_divergence_is_finite_where_alpha_vanishes():
    """Flow schedule at t = 1 (alpha = 0): the divergence is d sigma'/sigma = d, the limit of nearby times."""
    distribution = get_problem("gmm-ring8-2d").distribution
    schedule = get_schedule("flow")
    x = distribution.noised(schedule, 0.999).sample(4, torch.Generator().manual_seed(2))
    at_one = velocity_divergence(distribution, schedule, x, 1.0)
    assert torch.allclose(at_one, torch.full_like(at_one, 2.0), rtol=0, atol=1e-12)
    assert torch.allclose(velocity_divergence(distribution, schedule, x, 1.0 - 1e-9), at_one, rtol=0, atol=1e-6)


def test_exact_divergence_keeps_float32_accuracy_near_t_min():
    """The within-component term is written without the cancellation of d sigma'/sigma against the posterior
    covariance term (a factor ~100 at t_min = 0.001 on VP): float32 stays within 1e-6 of float64."""
    problem = get_problem("gmm-ring8-2d")
    x = problem.target().sample(64, torch.Generator().manual_seed(11))
    reference = velocity_divergence(problem.distribution, problem.schedule, x, problem.t_min)
    single = velocity_divergence(problem.distribution, problem.schedule, x.float(), problem.t_min)
    assert single.dtype == torch.float32
    assert float(((single.double() - reference) / reference.abs()).abs().max()) < 1e-6


def test_posterior_covariance_trace_of_a_gaussian_is_constant():
    """One Gaussian: Cov[x0 | x_t] = U diag(s sigma^2 / (alpha^2 s + sigma^2)) U^T whatever x."""
    distribution = get_problem("gauss-full-d16").distribution
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = distribution.eigvals[0]
    expected = float((s * 0.36 / (0.64 * s + 0.36)).sum())
    trace = posterior_covariance_trace(distribution, 0.8, 0.6, x)
    assert torch.allclose(trace, torch.full((5,), expected, dtype=torch.float64))


@pytest.mark.parametrize("solver, order, steps, name, limit", [
    ("rk4-lambda", 4, [4, 8, 16, 32, 64, 128], "gauss-1d", 1e-7),
    ("heun-lambda", 2, [4, 8, 16, 32, 64, 128], "gauss-1d", 2e-4),
    ("rk4-t", 4, [8, 16, 32, 64, 128], "gauss-full-d16", 2e-6),
])
def test_exact_trace_converges_at_the_integrators_order(solver, order, steps, name, limit):
    """The rate (the order's interval contains p and excludes p - 1) and the limit (the finest error is small)."""
    study = likelihood(get_solver(solver), get_problem(name), steps, n_samples=32)
    assert study.fit.contains(order) and not study.fit.contains(order - 1), study.fit
    rms = study.table.query("metric == 'rms'").value.to_numpy()
    assert rms[-1] < limit


@pytest.mark.slow
def test_exact_trace_converges_at_fourth_order_on_the_ring():
    study = likelihood(get_solver("rk4-lambda"), get_problem("gmm-ring8-2d"), [32, 64, 128, 256, 512, 1024],
                       n_samples=64)
    assert study.fit.contains(4) and not study.fit.contains(3), study.fit
    assert study.table.query("metric == 'rms'").value.iloc[-1] < 1e-8


def test_adaptive_reference_reaches_the_exact_log_density():
    problem = get_problem("gmm-ring8-2d")
    x = problem.target().sample(16, torch.Generator().manual_seed(4))
    grid = make_grid("uniform-lambda", problem.schedule, 4, problem.t_min, problem.t_max)
    result = log_likelihood(get_solver("scipy-dop853", rtol=1e-10, atol=1e-10), problem.model(), x, grid)
    assert float((result.exact - problem.target().log_prob(x)).abs().max()) < 1e-8
    assert result.nfe > 0 and result.hutchinson is None


@pytest.mark.parametrize("name, t", [("gmm-ring8-2d", 0.2), ("gmm-d16-k10", 0.2)])
@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_predicted_variance(name, kind, t):
    r"""2000 seeded probes at each of 6 points: the mean estimate is within 4 standard errors of the exact trace,
    and the sample variance within 4 of its standard errors of 2||J||_F^2 (Gaussian) or 2(||J||_F^2 - sum J_ii^2)
    (Rademacher), J = dv/dx symmetric. At t = 0.2 the ring's modes overlap, so J is not diagonal and the Rademacher
    variance is not zero (at t = 0.05 each point sees one isotropic mode: J is diagonal and Rademacher is exact)."""
    problem = get_problem(name)
    model = problem.model()
    x = problem.distribution.noised(problem.schedule, t).sample(6, torch.Generator().manual_seed(5))
    n_probes = 2000
    estimates = hutchinson_divergence(model, x, t, draw_probes(kind, n_probes, x.shape, seed=6))
    exact = velocity_divergence(problem.distribution, problem.schedule, x, t)
    mean, variance = estimates.mean(0), estimates.var(0)
    z = (mean - exact) / (variance / n_probes).sqrt()
    assert (z.abs() < 4).all(), z
    jacobian = autograd_jacobian(model, x, t)
    assert torch.allclose(jacobian, jacobian.transpose(1, 2), atol=1e-10)
    frobenius = jacobian.square().sum((1, 2))
    predicted = 2 * frobenius if kind == "gaussian" else 2 * (frobenius - torch.diagonal(jacobian, 0, 1, 2).square()
                                                              .sum(1))
    # Var(s^2) = (mu_4 - sigma^4 (n - 3)/(n - 1))/n for iid draws: exact, so it also holds for the two-point law of
    # a 2-D Rademacher estimate (mu_4 = sigma^4), whose first-order term (mu_4 - sigma^4)/n vanishes.
    fourth = (estimates - mean).pow(4).mean(0)
    se = ((fourth - variance.square() * (n_probes - 3) / (n_probes - 1)) / n_probes).sqrt()
    assert ((variance - predicted).abs() < 4 * se).all(), (variance - predicted) / se


def test_probes_are_fixed_along_the_trajectory():
    """In one dimension each probe estimate is l_exact + A (eps^2 - 1), A the integrated divergence: exactly, so one
    probe per trajectory, not one per stage. A Rademacher probe (eps^2 = 1) is exact."""
    problem = get_problem("gauss-1d")
    model = problem.model()
    x = problem.target().sample(8, torch.Generator().manual_seed(7))
    grid = make_grid("uniform-lambda", problem.schedule, 16, problem.t_min, problem.t_max)
    probes = draw_probes("gaussian", 5, x.shape, seed=8)
    result = log_likelihood(get_solver("rk4-lambda"), model, x, grid, probes=probes)
    gain = result.exact - problem.prior().log_prob(result.x_end)
    assert torch.allclose(result.hutchinson, result.exact + gain * (probes[..., 0].square() - 1), rtol=0, atol=1e-12)
    exact_probes = log_likelihood(get_solver("rk4-lambda"), model, x, grid,
                                  probes=draw_probes("rademacher", 3, x.shape, seed=9))
    assert torch.allclose(exact_probes.hutchinson, exact_probes.exact.expand(3, -1), rtol=0, atol=1e-12)


def test_hutchinson_variance_falls_like_one_over_probes():
    """The bootstrap interval of the variance's order in 1/probes contains 1 and excludes 1/2 and 3/2; Hutchinson's
    estimate agrees with the exact-trace estimate on the same trajectory (trace_bias within 4 standard errors)."""
    study = likelihood(get_solver("rk4-lambda"), get_problem("gmm-ring8-2d"), [16], n_samples=128,
                       probes=(1, 2, 4, 8, 16), probe="gaussian", repeats=8, seed=3)
    fit = study.probe_fit
    assert fit.contains(1.0) and not fit.contains(0.5) and not fit.contains(1.5), fit
    trace_bias = study.table.query("metric == 'trace_bias'")
    assert (trace_bias.value.abs() < 4 * trace_bias.stderr).all(), trace_bias


def test_study_table_layout_and_dtype():
    study = likelihood(get_solver("heun-lambda"), get_problem("gmm-ring8-2d"), [4, 8], n_samples=8,
                       dtype=torch.float32, probes=(1, 2), repeats=2)
    table = study.table
    assert list(table.columns) == ["problem", "solver", "steps", "nfe", "seed", "dtype", "metric", "value",
                                   "stderr", "trace", "probes"]
    assert len(table) == 2 * (3 + 2 * 3) and (table.dtype == "float32").all()
    assert list(table.query("trace == 'exact'").nfe.unique()) == [8, 16]
    assert study.fit is None and study.probe_fit is None
    assert table.query("metric == 'rms'").stderr.isna().all()


def test_a_different_prior_shifts_the_estimate_by_its_log_density_ratio():
    """Score-SDE closes the formula with N(0, I); here the exact marginal is the default."""
    problem = get_problem("gauss-1d")
    x = problem.target().sample(4, torch.Generator().manual_seed(10))
    grid = make_grid("uniform-lambda", problem.schedule, 8, problem.t_min, problem.t_max)
    standard = Gaussian([0.0], 1.0)
    exact = log_likelihood(get_solver("rk4-lambda"), problem.model(), x, grid)
    normal = log_likelihood(get_solver("rk4-lambda"), problem.model(), x, grid, prior=standard)
    shift = standard.log_prob(exact.x_end) - problem.prior().log_prob(exact.x_end)
    assert torch.allclose(normal.exact - exact.exact, shift, rtol=0, atol=1e-13)


def test_bad_input_is_rejected_with_the_argument_named():
    problem = get_problem("gauss-1d")
    model = problem.model()
    x = torch.zeros(3, 1, dtype=torch.float64)
    grid = make_grid("uniform-lambda", problem.schedule, 4, problem.t_min, problem.t_max)
    rk4 = get_solver("rk4-lambda")
    with pytest.raises(ValueError, match="solver: the augmented ODE"):
        log_likelihood(get_solver("ddim"), model, x, grid)
    with pytest.raises(ValueError, match="model: the exact trace"):
        log_likelihood(rk4, problem.model(ScoreError(bias=0.1)), x, grid)
    with pytest.raises(ValueError, match="probes: expected shape"):
        log_likelihood(rk4, model, x, grid, probes=torch.ones(2, 4, 1))
    with pytest.raises(ValueError, match="grid: must be strictly decreasing"):
        log_likelihood(rk4, model, x, grid.flip(0))
    with pytest.raises(ValueError, match="probe: expected one of"):
        likelihood(rk4, problem, [4], probe="uniform")
    with pytest.raises(ValueError, match="repeats"):
        likelihood(rk4, problem, [4], probes=(1,), repeats=1)
    with pytest.raises(ValueError, match="steps"):
        likelihood(rk4, problem, [])
    with pytest.raises(ValueError, match="probes: expected positive"):
        likelihood(rk4, problem, [4], probes=(0,))
    with pytest.raises(ValueError, match="n_samples"):
        likelihood(rk4, problem, [4], n_samples=1)
    with pytest.raises(ValueError, match="n_probes"):
        draw_probes("gaussian", 0, (3, 1))
    with pytest.raises(ValueError, match="sigma: the posterior"):
        posterior_covariance_trace(problem.distribution, 1.0, 0.0, x)
    assert math.isfinite(float(log_likelihood(rk4, model, x, grid).exact.sum()))
