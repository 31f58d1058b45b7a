"""EDM's stochastic sampler: S_churn = 0 is edm-heun / edm-euler, one step against the official loop body, the
general (scaled) formulation on a VP schedule equals the run on the EDM schedule, the churn's noise requests, the
churned sigma beyond the schedule, the final step to sigma = 0, and convergence on gauss-1d."""

import dataclasses
import math

import pytest
import torch
from stochastic_helpers import FixedNoise, draws, gauss_1d_on, moment_z_scores, start

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import IIDNoise
from sdetoolkit.schedules import get_schedule
from sdetoolkit.solvers import get_solver, sample

N_SAMPLES, STEPS = 2000, 400


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
@pytest.mark.parametrize("params, deterministic", [(dict(S_churn=0.0), "edm-heun"),
                                                   (dict(S_churn=0.0, order=1), "edm-euler"),
                                                   (dict(S_tmin=1e4, S_tmax=1e5), "edm-heun")])
def test_without_churn_it_is_the_deterministic_sampler(schedule, params, deterministic):
    problem = gauss_1d_on(schedule)
    grid = make_grid("edm", problem.schedule, 9, problem.t_min, problem.t_max)
    x = start(problem, 16)
    noise = FixedNoise([])
    a = sample(get_solver("edm-stochastic", **params), problem.model(), grid, x, noise)
    b = sample(get_solver(deterministic), problem.model(), grid, x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert noise.calls == []


def test_one_step_is_the_official_loop_body():
    """generate.py::edm_sampler on the EDM schedule: gamma = min(S_churn/N, sqrt 2 - 1) for S_min <= t <= S_max,
    t_hat = t + gamma t, x_hat = x + sqrt(t_hat^2 - t^2) S_noise z, Euler from t_hat, then the Heun correction."""
    problem = gauss_1d_on("edm")
    t, t_next = 10.0, 4.0
    x = start(problem)
    (z,) = draws(1, x.shape)
    grid = torch.tensor([t, t_next], dtype=torch.float64)
    out = sample(get_solver("edm-stochastic"), problem.model(), grid, x, FixedNoise([z]))
    net = problem.model()
    gamma = min(40.0 / 1, math.sqrt(2) - 1) if 0.05 <= t <= 50.0 else 0
    t_hat = t + gamma * t
    x_hat = x + math.sqrt(t_hat**2 - t**2) * 1.003 * z
    d_cur = (x_hat - net(x_hat, t_hat).x0) / t_hat
    x_next = x_hat + (t_next - t_hat) * d_cur
    d_prime = (x_next - net(x_next, t_next).x0) / t_next
    expected = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_general_formulation_on_vp_is_the_edm_run_in_scaled_variables():
    """On vp-linear the sampler works on x/alpha in sigma/alpha: a vp-linear run equals, after scaling by alpha(t_min),
    the run on the EDM schedule over the grid sigma~(t_i) from x_T/alpha(t_max), on the same draws."""
    vp = get_problem("gauss-1d")
    edm = dataclasses.replace(vp, schedule=get_schedule("edm", sigma_max=200.0))
    grid = make_grid("uniform-lambda", vp.schedule, 12, vp.t_min, vp.t_max)
    sigmas = vp.schedule.sigma_over_alpha(grid)
    x = start(vp, 8)
    noises = draws(12, x.shape)
    a = sample(get_solver("edm-stochastic"), vp.model(), grid, x, FixedNoise(noises))
    b = sample(get_solver("edm-stochastic"), edm.model(), sigmas, x / float(vp.schedule.alpha(vp.t_max)),
               FixedNoise(noises))
    torch.testing.assert_close(a / float(vp.schedule.alpha(vp.t_min)), b, rtol=1e-10, atol=1e-10)


def test_churn_noise_is_keyed_on_the_step_and_only_inside_the_window():
    problem = gauss_1d_on("edm")
    grid = make_grid("edm", problem.schedule, 10, problem.t_min, problem.t_max)
    noise = FixedNoise(draws(10, (4, 1)))
    sample(get_solver("edm-stochastic"), problem.model(), grid, start(problem, 4), noise)
    t = [float(v) for v in grid]
    assert noise.calls == [("normal", t[i], t[i + 1]) for i in range(10) if 0.05 <= t[i] <= 50.0]
    assert 0 < len(noise.calls) < 10


def test_churned_sigma_beyond_the_schedule_is_refused():
    problem = gauss_1d_on("edm")
    grid = make_grid("edm", problem.schedule, 6, problem.t_min, problem.t_max)
    with pytest.raises(ValueError, match="exceeds the schedule's largest sigma"):
        sample(get_solver("edm-stochastic", S_tmax=math.inf), problem.model(), grid, start(problem), IIDNoise(0))


def test_final_step_to_sigma_zero_is_euler():
    problem = get_problem("gauss-diag-d1024")
    grid = make_grid("edm", problem.schedule, 6, 0.0, problem.t_max)
    model = problem.model()
    x = start(problem, 4)
    out = sample(get_solver("edm-stochastic"), model, grid, x, IIDNoise(0))
    assert model.nfe == 11 and bool(torch.isfinite(out).all())


@pytest.mark.parametrize("params", [{}, dict(S_churn=80.0, S_tmin=0.0, S_tmax=100.0, S_noise=1.0)])
def test_converges_to_the_exact_marginal_on_gauss_1d(params):
    z_mean, z_var = moment_z_scores("edm-stochastic", get_problem("gauss-1d"), STEPS, N_SAMPLES, **params)
    assert abs(z_mean) < 4 and abs(z_var) < 4, (z_mean, z_var)
