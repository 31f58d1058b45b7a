"""Score-SDE predictor-corrector: one step against the official predictor/corrector updates, the noise requests,
the NFE declaration, zero corrector steps = the predictor alone, the nonlinearity flag, batch (in)dependence of the
norms, the Langevin corrector's stationary law, and convergence on gauss-1d."""

import math

import pytest
import torch
from stochastic_helpers import FixedNoise, draws, gauss_1d_on, moment_z_scores, start

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import IIDNoise, noise_prediction_kernel
from sdetoolkit.solvers import get_solver, sample

N_SAMPLES, STEPS = 2000, 400


def mean_norm(v):
    return float(v.reshape(v.shape[0], -1).norm(dim=-1).mean())


@pytest.mark.parametrize("schedule", ["vp-linear", "ve"])
def test_one_step_is_the_official_langevin_then_reverse_diffusion(schedule):
    """LangevinCorrector.update_fn (alpha = 1 - beta_i on VP, 1 on VE; batch-mean norms), then
    ReverseDiffusionPredictor with VPSDE.discretize ((2 - sqrt(1 - beta)) x + beta s + sqrt(beta) z) or
    VESDE.discretize (x + (sigma^2 - sigma_adj^2) s + sqrt(sigma^2 - sigma_adj^2) z)."""
    problem = gauss_1d_on(schedule)
    s = problem.schedule
    t, t_next = 0.5, 0.45
    x = start(problem, 12)
    z1, z2 = draws(2, x.shape)
    grid = torch.tensor([t, t_next], dtype=torch.float64)
    out = sample(get_solver("score-sde-pc", denoise=False), problem.model(), grid, x, FixedNoise([z1, z2]))
    model = problem.model()
    beta = 1 - (float(s.alpha(t)) / float(s.alpha(t_next))) ** 2
    alpha_i = 1 - beta if schedule == "vp-linear" else 1.0
    grad = model(x, t).score
    step = (0.16 * mean_norm(z1) / mean_norm(grad)) ** 2 * 2 * alpha_i
    x1 = x + step * grad + math.sqrt(2 * step) * z1
    s1 = model(x1, t).score
    if schedule == "vp-linear":
        expected = (2 - math.sqrt(1 - beta)) * x1 + beta * s1 + math.sqrt(beta) * z2
    else:
        d = float(s.sigma(t)) ** 2 - float(s.sigma(t_next)) ** 2
        expected = x1 + d * s1 + math.sqrt(d) * z2
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_noise_requests_and_nfe():
    """Corrector draws at the single time t (fresh per update), the predictor over [t_next, t]; 1 + n_steps NFE."""
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-t", problem.schedule, 3, problem.t_min, problem.t_max)
    noise = FixedNoise(draws(9, (4, 1)))
    model = problem.model()
    sample(get_solver("score-sde-pc", n_steps=2), model, grid, start(problem, 4), noise)
    assert model.nfe == 9 and get_solver("score-sde-pc", n_steps=2).expected_nfe(grid) == 9
    t = [float(v) for v in grid]
    expected = []
    for i in range(3):
        expected += [("normal", t[i], t[i]), ("normal", t[i], t[i])]
        if i < 2:                                      # denoise: no predictor noise on the last step
            expected.append(("normal", t[i], t[i + 1]))
    assert noise.calls == expected


def test_ve_predictor_noise_is_the_exact_integral():
    problem = gauss_1d_on("ve")
    grid = make_grid("uniform-t", problem.schedule, 2, problem.t_min, problem.t_max)
    noise = FixedNoise(draws(4, (4, 1)))
    sample(get_solver("reverse-diffusion", denoise=False), problem.model(), grid, start(problem, 4), noise)
    name = noise_prediction_kernel(problem.schedule).name
    assert noise.calls == [("integrals", float(grid[i]), float(grid[i + 1]), (name,)) for i in range(2)]


@pytest.mark.parametrize("schedule", ["vp-linear", "ve", "flow"])
@pytest.mark.parametrize("params", [dict(n_steps=0), dict(corrector="none", n_steps=3)])
def test_zero_corrector_steps_is_the_reverse_diffusion_predictor(schedule, params):
    problem = gauss_1d_on(schedule)
    grid = make_grid("uniform-lambda", problem.schedule, 8, problem.t_min, problem.t_max)
    x = start(problem, 16)
    a = sample(get_solver("score-sde-pc", **params), problem.model(), grid, x, IIDNoise(4))
    b = sample(get_solver("reverse-diffusion"), problem.model(), grid, x, IIDNoise(4))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("predictor, other", [("euler_maruyama", "euler-maruyama"),
                                              ("ancestral_sampling", "score-sde-ancestral")])
def test_other_predictors_alone_are_their_solvers(predictor, other):
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 8, problem.t_min, problem.t_max)
    x = start(problem, 16)
    a = sample(get_solver("score-sde-pc", predictor=predictor, corrector="none", denoise=False), problem.model(),
               grid, x, IIDNoise(4))
    b_params = {"denoise": False} if other == "score-sde-ancestral" else {}
    b = sample(get_solver(other, **b_params), problem.model(), grid, x, IIDNoise(4))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_reverse_diffusion_on_other_schedules_is_euler_maruyama():
    """SDE.discretize's default (used by any SDE without its own, e.g. subVP) is the Euler discretisation."""
    problem = gauss_1d_on("flow")
    grid = make_grid("uniform-lambda", problem.schedule, 8, problem.t_min, problem.t_max)
    x = start(problem, 16)
    a = sample(get_solver("reverse-diffusion", denoise=False), problem.model(), grid, x, IIDNoise(4))
    b = sample(get_solver("euler-maruyama"), problem.model(), grid, x, IIDNoise(4))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_linearity_flag():
    assert not get_solver("score-sde-pc").linear
    assert get_solver("score-sde-pc", corrector="ald").linear
    assert get_solver("score-sde-pc", n_steps=0).linear and get_solver("reverse-diffusion").linear


def test_batch_norms_couple_the_samples_and_per_sample_norms_do_not():
    """The official batch-mean norms make a sample's step depend on its batch; norm='sample' keeps the IID noise's
    batch-size invariance (the first 5 of 12 samples equal a run of those 5)."""
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 6, problem.t_min, problem.t_max)
    x = start(problem, 12)
    for norm, coupled in (("batch", True), ("sample", False)):
        whole = sample(get_solver("score-sde-pc", norm=norm), problem.model(), grid, x, IIDNoise(1))
        part = sample(get_solver("score-sde-pc", norm=norm), problem.model(), grid, x[:5], IIDNoise(1))
        assert torch.allclose(whole[:5], part, rtol=1e-13, atol=1e-13) is not coupled


@pytest.mark.parametrize("snr", [0.16, 0.3])
def test_langevin_corrector_stationary_variance_is_inflated_by_snr_squared(snr):
    """100 corrector updates at a fixed t (and a negligible predictor step) from the exact marginal N(m, v): with the
    batch-mean norms the step is 2 snr^2 v^2 / w for the current variance w (large-batch limit, d = 1), whose
    unadjusted-Langevin fixed point is w = v (1 + snr^2). The corrector therefore biases the law by snr^2, however
    small the predictor's steps: measured here with N = 20000 (variance-ratio standard error sqrt(2/N))."""
    problem = get_problem("gauss-1d")
    t, n = 0.5, 20000
    marginal = problem.distribution.noised(problem.schedule, t)
    v = float(marginal.covariance()[0, 0])
    x = marginal.sample(n, torch.Generator().manual_seed(3))
    grid = torch.tensor([t, t - 1e-10], dtype=torch.float64)
    y = sample(get_solver("score-sde-pc", snr=snr, n_steps=100), problem.model(), grid, x, IIDNoise(2))[:, 0]
    se = math.sqrt(2 / (n - 1))
    ratio = float(y.var()) / v
    assert abs(ratio - (1 + snr**2)) < 4 * se, ratio
    assert abs(float(y.mean()) - float(marginal.mean()[0])) < 4 * math.sqrt(ratio * v / n)


@pytest.mark.parametrize("params", [dict(corrector="none"), dict(corrector="ald"), dict(snr=0.05)])
def test_converges_to_the_exact_marginal_on_gauss_1d(params):
    """With snr = 0.05 the Langevin corrector's variance inflation (0.25%) is far below the standard error."""
    z_mean, z_var = moment_z_scores("score-sde-pc", get_problem("gauss-1d"), STEPS, N_SAMPLES, **params)
    assert abs(z_mean) < 4 and abs(z_var) < 4, (z_mean, z_var)
