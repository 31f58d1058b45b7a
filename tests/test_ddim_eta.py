"""DDIM(eta): eta = 0 is the deterministic ddim, eta = 1 is DDPM's posterior step, one step against the DDIM paper's
eq. 16 in alpha-bar (and against diffusers' DDIMScheduler where it is installed), and convergence on gauss-1d."""

import math

import pytest
import torch
from stochastic_helpers import FixedNoise, draws, gauss_1d_on, moment_z_scores, start

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import BrownianPath, IIDNoise
from sdetoolkit.solvers import get_solver, sample

N_SAMPLES, STEPS = 2000, 400
"""Moment checks: the first-order bias in the variance (about 2.5/n here) stays below one standard error
(0.25 sqrt(2/N)) at these sizes, so a |z| > 4 flags an error, not the discretisation."""


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine", "edm"])
def test_eta_zero_is_ddim(schedule):
    problem = gauss_1d_on(schedule)
    grid = make_grid("uniform-lambda", problem.schedule, 10, problem.t_min, problem.t_max)
    x = start(problem, 16)
    noise = FixedNoise([])
    a = sample(get_solver("ddim-eta", eta=0.0), problem.model(), grid, x, noise)
    b = sample(get_solver("ddim"), problem.model(), grid, x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert noise.calls == []


def test_small_eta_tends_to_ddim():
    """The noise and the direction coefficient are continuous in eta: eta = 1e-6 is within 1e-5 of ddim."""
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 10, problem.t_min, problem.t_max)
    x = start(problem, 16)
    a = sample(get_solver("ddim-eta", eta=1e-6), problem.model(), grid, x, IIDNoise(0))
    b = sample(get_solver("ddim"), problem.model(), grid, x)
    assert 0 < float((a - b).abs().max()) < 1e-5


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine", "ve", "edm", "flow"])
def test_eta_one_is_ddpm_posterior_with_beta_tilde(schedule):
    """DDIM paper, Sec. 4.1: eta = 1 is DDPM; same IID noise, to round-off, on every schedule."""
    problem = gauss_1d_on(schedule)
    grid = make_grid("uniform-lambda", problem.schedule, 12, problem.t_min, problem.t_max)
    x = start(problem, 16)
    a = sample(get_solver("ddim-eta", eta=1.0), problem.model(), grid, x, IIDNoise(7))
    b = sample(get_solver("ddpm", variance="fixed_small"), problem.model(), grid, x, IIDNoise(7))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", ["vp-linear", "edm"])
@pytest.mark.parametrize("brownian", [False, True])
def test_eta_one_is_sde_dpm_solver_pp_1_and_seeds_1_on_the_same_noise(schedule, brownian):
    """DDIM(eta = 1) = DDPM (beta tilde) = SDE-DPM-Solver++1 = SEEDS-1 (data form): with IID noise, and on one
    Brownian path, since all four draw the step's noise as the data-prediction kernel's integral."""
    problem = gauss_1d_on(schedule)
    grid = make_grid("uniform-lambda", problem.schedule, 10, problem.t_min, problem.t_max)
    x = start(problem, 16)
    names = ["ddim-eta", "ddpm", "sde-dpmpp-1", "seeds-1-data"]
    if brownian:
        path = BrownianPath.covering(get_solver("ddim-eta"), problem.model(), [grid], seed=1)
        outputs = [sample(get_solver(name), problem.model(), grid, x, path) for name in names]
    else:
        outputs = [sample(get_solver(name), problem.model(), grid, x, IIDNoise(3)) for name in names]
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_one_step_is_eq_16_in_alpha_bar(eta):
    """sigma_eta = eta sqrt((1 - ab_prev)/(1 - ab)) sqrt(1 - ab/ab_prev); x_prev = sqrt(ab_prev) x0
    + sqrt(1 - ab_prev - sigma_eta^2) eps + sigma_eta z (diffusers DDIMScheduler.step)."""
    problem = get_problem("gauss-1d")
    t, t_next = 0.8, 0.35
    x = start(problem)
    (z,) = draws(1, x.shape)
    grid = torch.tensor([t, t_next], dtype=torch.float64)
    out = sample(get_solver("ddim-eta", eta=eta), problem.model(), grid, x, FixedNoise([z]))
    ab, ab_prev = float(problem.schedule.alpha(t)) ** 2, float(problem.schedule.alpha(t_next)) ** 2
    sigma_eta = eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(1 - ab / ab_prev)
    eps = problem.model()(x, t).eps
    x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    expected = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - sigma_eta**2) * eps + sigma_eta * z
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_against_diffusers_ddim_scheduler():
    """diffusers' DDIMScheduler (linear betas, 1000 train steps, 10 'leading' steps, eta = 0.5, variance_noise given)
    and ddim-eta on the vp-linear grid whose alpha^2 are those timesteps' alpha-bar, ending at sigma = 0."""
    pytest.importorskip("diffusers")
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, prediction_type="epsilon")
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    scheduler.set_timesteps(10)
    problem = get_problem("gauss-1d")
    abar = scheduler.alphas_cumprod[scheduler.timesteps]
    times = problem.schedule.t_of_lambda(0.5 * torch.log(abar / (1 - abar)))
    grid = torch.cat([times, torch.zeros(1, dtype=torch.float64)])
    x = start(problem, 6)
    noises = draws(10, x.shape, seed=2)
    model = problem.model()
    y = x
    for k, timestep in enumerate(scheduler.timesteps):
        eps = model(y, float(grid[k])).eps
        y = scheduler.step(eps, int(timestep), y, eta=0.5, variance_noise=noises[k]).prev_sample
    ours = sample(get_solver("ddim-eta", eta=0.5), problem.model(), grid, x, FixedNoise(noises))
    torch.testing.assert_close(ours, y, rtol=1e-10, atol=1e-10)


def test_eta_too_large_for_a_step_is_refused():
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 2, problem.t_min, problem.t_max)
    with pytest.raises(ValueError, match=r"eta: 3\.0 makes sigma_eta exceed sigma_next"):
        sample(get_solver("ddim-eta", eta=3.0), problem.model(), grid, start(problem), IIDNoise(0))
    with pytest.raises(ValueError, match="eta: invalid value"):
        get_solver("ddim-eta", eta=-0.5)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_converges_to_the_exact_marginal_on_gauss_1d(eta):
    z_mean, z_var = moment_z_scores("ddim-eta", get_problem("gauss-1d"), STEPS, N_SAMPLES, eta=eta)
    assert abs(z_mean) < 4 and abs(z_var) < 4, (z_mean, z_var)
