"""DDPM ancestral sampling: the posterior form against diffusers' formula written in alpha-bar (and against diffusers
itself where it is installed), Score-SDE's discretised-beta form against its official update, the identities
between the forms, the final step to sigma = 0, and convergence to the exact marginal on gauss-1d."""

import math

import pytest
import torch
from stochastic_helpers import FixedNoise, draws, gauss_1d_on, moment_z_scores, start

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import IIDNoise, data_prediction_kernel
from sdetoolkit.solvers import get_solver, sample

N_SAMPLES, STEPS = 2000, 400
"""Moment checks: the first-order bias in the variance (about 2.5/n here) stays below one standard error
(0.25 sqrt(2/N)) at these sizes, so a |z| > 4 flags an error, not the discretisation."""


def one_step(name, problem, t, t_next, x, noise, **params):
    grid = torch.tensor([t, t_next], dtype=torch.float64)
    return sample(get_solver(name, **params), problem.model(), grid, x, noise)


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_posterior_step_is_diffusers_formula_in_alpha_bar(schedule, variance):
    """diffusers DDPMScheduler.step: x0 = (x - sqrt(1 - ab) eps)/sqrt(ab); mean = sqrt(ab_prev) beta/(1 - ab) x0
    + sqrt(1 - beta) (1 - ab_prev)/(1 - ab) x; beta = 1 - ab/ab_prev; variance (1 - ab_prev)/(1 - ab) beta or beta."""
    problem = gauss_1d_on(schedule)
    t, t_next = 0.62, 0.41
    x = start(problem)
    (z,) = draws(1, x.shape)
    out = one_step("ddpm", problem, t, t_next, x, FixedNoise([z]), variance=variance)
    ab, ab_prev = float(problem.schedule.alpha(t)) ** 2, float(problem.schedule.alpha(t_next)) ** 2
    beta = 1 - ab / ab_prev
    eps = problem.model()(x, t).eps
    x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    mean = math.sqrt(ab_prev) * beta / (1 - ab) * x0 + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x
    var = (1 - ab_prev) / (1 - ab) * beta if variance == "fixed_small" else beta
    torch.testing.assert_close(out, mean + math.sqrt(var) * z, rtol=1e-12, atol=1e-12)


def test_posterior_noise_requests():
    """fixed_small: the data-prediction kernel's integral over the step; fixed_large: the step's plain normal."""
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-t", problem.schedule, 2, problem.t_min, problem.t_max)
    small, large = FixedNoise(draws(2, (4, 1))), FixedNoise(draws(2, (4, 1)))
    sample(get_solver("ddpm"), problem.model(), grid, start(problem, 4), small)
    sample(get_solver("ddpm-large"), problem.model(), grid, start(problem, 4), large)
    name = data_prediction_kernel(problem.schedule).name
    assert small.calls == [("integrals", float(grid[i]), float(grid[i + 1]), (name,)) for i in range(2)]
    assert large.calls == [("normal", float(grid[i]), float(grid[i + 1])) for i in range(2)]


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_against_diffusers_on_its_own_timesteps(monkeypatch, variance):
    """diffusers' linear-beta DDPM (1000 train steps) run with 10 'leading' timesteps, and ddpm on the vp-linear grid
    whose alpha^2 are those timesteps' alpha-bar, ending at sigma = 0 (alpha-bar_{-1} = 1): same noise, same x."""
    pytest.importorskip("diffusers")
    import diffusers.schedulers.scheduling_ddpm as ddpm_module
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(variance_type=variance, clip_sample=False, prediction_type="epsilon")
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
    scheduler.set_timesteps(10)
    problem = get_problem("gauss-1d")
    abar = scheduler.alphas_cumprod[scheduler.timesteps]
    times = problem.schedule.t_of_lambda(0.5 * torch.log(abar / (1 - abar)))
    grid = torch.cat([times, torch.zeros(1, dtype=torch.float64)])
    torch.testing.assert_close(problem.schedule.alpha(times) ** 2, abar, rtol=1e-13, atol=0)

    x = start(problem, 6).to(torch.float64)
    noises = draws(9, x.shape, seed=4)
    queue = list(noises)
    monkeypatch.setattr(ddpm_module, "randn_tensor", lambda *args, **kwargs: queue.pop(0))
    model = problem.model()
    y = x
    for k, timestep in enumerate(scheduler.timesteps):
        eps = model(y, float(grid[k])).eps
        y = scheduler.step(eps, int(timestep), y).prev_sample
    assert not queue
    ours = sample(get_solver("ddpm", variance=variance), problem.model(), grid, x, FixedNoise(noises))
    torch.testing.assert_close(ours, y, rtol=1e-10, atol=1e-10)


def test_score_sde_ancestral_vp_step_is_the_official_update():
    """AncestralSamplingPredictor.vpsde_update_fn: x_mean = (x + beta s)/sqrt(1 - beta), x = x_mean + sqrt(beta) z,
    with beta = 1 - alpha(t)^2/alpha(t_next)^2 the step's discrete beta."""
    problem = get_problem("gauss-1d")
    t, t_next = 0.5, 0.47
    x = start(problem)
    (z,) = draws(1, x.shape)
    out = one_step("score-sde-ancestral", problem, t, t_next, x, FixedNoise([z]), denoise=False)
    beta = 1 - (float(problem.schedule.alpha(t)) / float(problem.schedule.alpha(t_next))) ** 2
    score = problem.model()(x, t).score
    expected = (x + beta * score) / math.sqrt(1 - beta) + math.sqrt(beta) * z
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_score_sde_ancestral_ve_step_is_the_official_update():
    """vesde_update_fn: x_mean = x + (sigma^2 - sigma_adj^2) s,
    std = sqrt(sigma_adj^2 (sigma^2 - sigma_adj^2)/sigma^2)."""
    problem = gauss_1d_on("ve")
    t, t_next = 0.5, 0.4
    x = start(problem)
    (z,) = draws(1, x.shape)
    out = one_step("score-sde-ancestral", problem, t, t_next, x, FixedNoise([z]), denoise=False)
    sig, sig_adj = float(problem.schedule.sigma(t)), float(problem.schedule.sigma(t_next))
    score = problem.model()(x, t).score
    expected = x + (sig**2 - sig_adj**2) * score + math.sqrt(sig_adj**2 * (sig**2 - sig_adj**2) / sig**2) * z
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule, ddpm", [("vp-linear", "ddpm-large"), ("vp-cosine", "ddpm-large"),
                                            ("ve", "ddpm"), ("edm", "ddpm")])
def test_score_sde_ancestral_is_the_posterior_form(schedule, ddpm):
    """VP: (x + beta s)/sqrt(1 - beta) with noise sqrt(beta) is the posterior step with beta (fixed_large); VE: it is
    the posterior step with beta tilde (fixed_small). Same IID noise, to round-off."""
    problem = gauss_1d_on(schedule)
    grid = make_grid("uniform-lambda", problem.schedule, 12, problem.t_min, problem.t_max)
    x = start(problem, 16)
    a = sample(get_solver("score-sde-ancestral", denoise=False), problem.model(), grid, x, IIDNoise(5))
    b = sample(get_solver(ddpm), problem.model(), grid, x, IIDNoise(5))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_denoise_drops_only_the_last_noise():
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 5, problem.t_min, problem.t_max)
    x = start(problem, 4)
    with_noise = FixedNoise(draws(5, x.shape))
    sample(get_solver("score-sde-ancestral", denoise=False), problem.model(), grid, x, with_noise)
    denoised = FixedNoise(draws(5, x.shape))
    out = sample(get_solver("score-sde-ancestral"), problem.model(), grid, x, denoised)
    assert len(with_noise.calls) == 5 and denoised.calls == with_noise.calls[:4]
    penultimate = sample(get_solver("score-sde-ancestral", denoise=False), problem.model(), grid[:-1], x,
                         FixedNoise(draws(5, x.shape)))
    last = one_step("score-sde-ancestral", problem, float(grid[-2]), float(grid[-1]), penultimate, FixedNoise([]))
    torch.testing.assert_close(out, last, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["ddpm", "ddpm-large", "score-sde-ancestral"])
def test_final_step_to_sigma_zero_returns_the_denoiser(name):
    """On an EDM grid ending at sigma = 0 the last step draws no noise and returns x0(x, t_{N-1})."""
    problem = gauss_1d_on("edm")
    grid = make_grid("edm", problem.schedule, 6, 0.0, problem.t_max)
    x = start(problem, 4)
    params = {"denoise": False} if name == "score-sde-ancestral" else {}
    noise = FixedNoise(draws(6, x.shape))
    out = sample(get_solver(name, **params), problem.model(), grid, x, noise)
    assert len(noise.calls) == 5
    penultimate = sample(get_solver(name, **params), problem.model(), grid[:-1], x, FixedNoise(draws(6, x.shape)))
    torch.testing.assert_close(out, problem.model()(penultimate, float(grid[-2])).x0, rtol=1e-12, atol=1e-12)


def test_score_sde_ancestral_refuses_other_schedules():
    problem = gauss_1d_on("flow")
    grid = make_grid("uniform-t", problem.schedule, 3, problem.t_min, problem.t_max)
    with pytest.raises(ValueError, match="supports VP and VE schedules only"):
        sample(get_solver("score-sde-ancestral"), problem.model(), grid, start(problem), IIDNoise(0))


@pytest.mark.parametrize("name", ["ddpm", "score-sde-ancestral"])  # the latter is ddpm-large on VP (tested above)
def test_converges_to_the_exact_marginal_on_gauss_1d(name):
    z_mean, z_var = moment_z_scores(name, get_problem("gauss-1d"), STEPS, N_SAMPLES)
    assert abs(z_mean) < 4 and abs(z_var) < 4, (z_mean, z_var)


def test_posterior_form_on_the_flow_schedule_converges():
    """The posterior form is defined on any schedule: on the flow schedule too it reaches the exact marginal."""
    z_mean, z_var = moment_z_scores("ddpm", gauss_1d_on("flow"), STEPS, N_SAMPLES)
    assert abs(z_mean) < 4 and abs(z_var) < 4, (z_mean, z_var)
