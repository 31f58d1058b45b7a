"""Euler–Maruyama and exponential Euler–Maruyama on the reverse SDE: one step against the closed forms, the drift
integral against its closed forms, the VE identity with Score-SDE's reverse-diffusion predictor, the noise requests,
and convergence to the exact marginal on gauss-1d."""

import math

import pytest
import torch
from stochastic_helpers import (
    FixedNoise,
    draws,
    exact_reverse_kernel,
    exact_reverse_solution,
    gauss_1d_on,
    moment_z_scores,
    start,
    strong_squared_errors,
)

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import BrownianPath, IIDNoise, noise_prediction_kernel
from sdetoolkit.schedules import get_schedule
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.euler_maruyama import drift_integral
from sdetoolkit.studies.order import bootstrap_fit

N_SAMPLES, STEPS = 2000, 400
"""Moment checks: the first-order bias in the variance (about 2.5/n here) stays below one standard error
(0.25 sqrt(2/N)) at these sizes, so a |z| > 4 flags an error, not the discretisation."""


def one_step(name, problem, t, t_next, x, noise, **params):
    grid = torch.tensor([t, t_next], dtype=torch.float64)
    return sample(get_solver(name, **params), problem.model(), grid, x, noise)


def test_euler_maruyama_step_is_the_vp_closed_form():
    """vp-linear: f = -beta(t)/2, g^2 = beta(t) = beta_min + t (beta_max - beta_min); dW = sqrt(t - t_next) z."""
    problem = get_problem("gauss-1d")
    t, t_next = 0.6, 0.55
    x = start(problem)
    (z,) = draws(1, x.shape)
    out = one_step("euler-maruyama", problem, t, t_next, x, FixedNoise([z]))
    beta = 0.1 + t * (20.0 - 0.1)
    score = problem.model()(x, t).score
    expected = x + (-0.5 * beta * x - beta * score) * (t_next - t) + math.sqrt(beta) * math.sqrt(t - t_next) * z
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)


def test_euler_maruyama_asks_for_the_plain_increment_of_the_step():
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-t", problem.schedule, 3, problem.t_min, problem.t_max)
    noise = FixedNoise(draws(3, (4, 1)))
    sample(get_solver("euler-maruyama"), problem.model(), grid, start(problem, 4), noise)
    assert noise.calls == [("integrals", float(grid[i]), float(grid[i + 1]), (None,)) for i in range(3)]


@pytest.mark.parametrize("schedule", ["vp-linear", "vp-cosine"])
def test_exponential_euler_maruyama_step_is_the_vp_closed_form(schedule):
    """VP: x_next = (a_n/a) x + 2 (a_n/a - 1) s + noise of variance sigma_next^2 (e^{2h} - 1)."""
    problem = gauss_1d_on(schedule)
    s = problem.schedule
    t, t_next = 0.7, 0.2
    x = start(problem)
    (z,) = draws(1, x.shape)
    out = one_step("exp-euler-maruyama", problem, t, t_next, x, FixedNoise([z]))
    a, a_n, sig_n = float(s.alpha(t)), float(s.alpha(t_next)), float(s.sigma(t_next))
    h = float(s.lam(t_next) - s.lam(t))
    score = problem.model()(x, t).score
    expected = (a_n / a) * x + 2 * (a_n / a - 1) * score + sig_n * math.sqrt(math.expm1(2 * h)) * z
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule, t_hi, t_lo", [("vp-linear", 1.0, 1e-3), ("vp-linear", 0.31, 0.3),
                                                  ("vp-cosine", 0.99, 0.5), ("ve", 0.9, 0.1), ("edm", 80.0, 0.002),
                                                  ("edm", 3.0, 0.0), ("flow", 0.9, 0.05), ("flow", 0.5, 0.0)])
def test_drift_integral_matches_closed_forms(schedule, t_hi, t_lo):
    r"""int g^2/alpha dt = int alpha d(rho^2), rho = sigma/alpha: VP 2(1/alpha_lo - 1/alpha_hi); VE rho^2 difference;
    flow (alpha = 1/(1 + rho)) 2[rho - log(1 + rho)]."""
    s = get_schedule(schedule)
    rho_hi, rho_lo = (float(s.sigma_over_alpha(t)) for t in (t_hi, t_lo))
    if schedule.startswith("vp"):
        exact = 2 * (1 / float(s.alpha(t_hi)) - 1 / float(s.alpha(t_lo)))
    elif schedule == "flow":
        exact = 2 * ((rho_hi - math.log1p(rho_hi)) - (rho_lo - math.log1p(rho_lo)))
    else:
        exact = rho_hi**2 - rho_lo**2
    assert abs(drift_integral(s, t_hi, t_lo) - exact) <= 1e-12 * abs(exact)


def test_drift_integral_against_adaptive_quadrature_in_t():
    """An independent route on vp-linear: scipy's adaptive quadrature of g^2/alpha in t."""
    from scipy import integrate

    s = get_schedule("vp-linear")

    def integrand(u):
        tt = torch.tensor([u], dtype=torch.float64)
        return float(s.g2(tt) / s.alpha(tt))

    exact = integrate.quad(integrand, 0.05, 0.8, epsabs=0, epsrel=1e-13)[0]
    assert abs(drift_integral(s, 0.8, 0.05) - exact) <= 1e-12 * exact


def test_exponential_euler_maruyama_noise_is_the_noise_prediction_kernel_and_none_at_sigma_zero():
    problem = gauss_1d_on("edm")
    grid = make_grid("edm", problem.schedule, 4, 0.0, problem.t_max)
    noise = FixedNoise(draws(4, (4, 1)))
    out = sample(get_solver("exp-euler-maruyama"), problem.model(), grid, start(problem, 4), noise)
    name = noise_prediction_kernel(problem.schedule).name
    assert noise.calls == [("integrals", float(grid[i]), float(grid[i + 1]), (name,)) for i in range(3)]
    assert bool(torch.isfinite(out).all())


def test_exponential_euler_maruyama_on_ve_is_the_reverse_diffusion_predictor():
    """On VE both are x + (sigma^2 - sigma_next^2) s + int g dW (Score-SDE's reverse diffusion, VESDE.discretize)."""
    problem = gauss_1d_on("ve")
    grid = make_grid("uniform-lambda", problem.schedule, 9, problem.t_min, problem.t_max)
    x = start(problem, 16)
    a = sample(get_solver("exp-euler-maruyama"), problem.model(), grid, x, IIDNoise(3))
    b = sample(get_solver("reverse-diffusion", denoise=False), problem.model(), grid, x, IIDNoise(3))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_drift_is_exact_for_the_frozen_score_ode():
    """Without noise the exponential Euler-Maruyama step solves x' = f x - g^2 s (s frozen at the start) exactly:
    compare with classical RK4 on 2000 steps in t."""
    problem = get_problem("gauss-1d")
    s = problem.schedule
    t, t_next, n = 0.5, 0.3, 2000
    x = start(problem)
    score = problem.model()(x, t).score
    nodes = torch.linspace(t, t_next, 2 * n + 1, dtype=torch.float64)
    f, g2 = s.f(nodes).tolist(), s.g2(nodes).tolist()
    dt = (t_next - t) / n
    y = x.clone()
    for i in range(n):
        k1 = f[2 * i] * y - g2[2 * i] * score
        k2 = f[2 * i + 1] * (y + 0.5 * dt * k1) - g2[2 * i + 1] * score
        k3 = f[2 * i + 1] * (y + 0.5 * dt * k2) - g2[2 * i + 1] * score
        k4 = f[2 * i + 2] * (y + dt * k3) - g2[2 * i + 2] * score
        y = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    out = one_step("exp-euler-maruyama", problem, t, t_next, x, FixedNoise([torch.zeros_like(x)]))
    torch.testing.assert_close(out, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["euler-maruyama", "exp-euler-maruyama"])
def test_converges_to_the_exact_marginal_on_gauss_1d(name):
    z_mean, z_var = moment_z_scores(name, get_problem("gauss-1d"), STEPS, N_SAMPLES)
    assert abs(z_mean) < 4 and abs(z_var) < 4, (z_mean, z_var)


def test_exact_reference_of_the_strong_study_has_the_exact_marginal():
    """The strong study's reference, the exact reverse-SDE solution on a Brownian path, has the exact marginal at
    t_min (z-tests of mean and variance, N = 20000), and a 4096-step Euler-Maruyama run on the same path is within
    0.005 RMS of it (strong error about 0.7/n)."""
    problem = get_problem("gauss-1d")
    path = BrownianPath([problem.t_min, problem.t_max], 3, kernels=[exact_reverse_kernel(problem)])
    n = 20000
    y = exact_reverse_solution(problem, problem.prior().sample(n, torch.Generator().manual_seed(2)), path)[:, 0]
    m, v = float(problem.target().mean()[0]), float(problem.target().covariance()[0, 0])
    assert abs(float(y.mean()) - m) < 4 * math.sqrt(v / n)
    assert abs(float(y.var()) - v) < 4 * v * math.sqrt(2 / (n - 1))
    assert float(strong_squared_errors("euler-maruyama", problem, [4096], 500).mean()) ** 0.5 < 0.005


@pytest.mark.parametrize("name", ["euler-maruyama", "exp-euler-maruyama"])
def test_strong_order_on_gauss_1d_is_one_not_the_generic_half(name):
    """Finding: Kloeden & Platen's strong order 0.5 is for multiplicative noise; the reverse SDE's noise g(t) dW is
    additive, where Euler-Maruyama is the Milstein scheme and has strong order 1 (Kloeden & Platen 1992, Sec. 10.3).
    RMS errors against the exact solution on one Brownian path, 2000 coupled trajectories, 16 to 256 steps; the
    bootstrap interval must contain 1 and exclude 0.5."""
    steps = [16, 32, 64, 128, 256]
    fit = bootstrap_fit([1 / n for n in steps], strong_squared_errors(name, get_problem("gauss-1d"), steps, 2000),
                        resamples=500)
    assert fit.contains(1.0) and not fit.contains(0.5), str(fit)


def test_claims():
    claims = get_solver("euler-maruyama").claims()
    assert [(c.kind, c.order) for c in claims] == [("strong", 0.5), ("weak", 1)]
    assert get_solver("exp-euler-maruyama").claimed().kind == "none"
