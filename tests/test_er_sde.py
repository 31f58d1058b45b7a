"""ER-SDE-Solver-1/2/3: symbolic integrals and kernel, faithfulness to the official update (written here from
QinpengCui/ER-SDE-Solver's ve_*/vp_* functions), reductions to DDIM and DDPM, VE = VP, convergence on gauss-1d."""

import dataclasses
import math

import pytest
import sympy as sp
import torch
from scipy import integrate
from stochastic_helpers import CallOrderNoise, gauss_1d_edm, karras

from sdetoolkit import get_problem, make_grid
from sdetoolkit.exact import propagate
from sdetoolkit.grids import explicit
from sdetoolkit.models import AnalyticModel
from sdetoolkit.noise import BrownianPath, IIDNoise, gram_factor
from sdetoolkit.schedules import get_schedule
from sdetoolkit.solvers import get_solver, list_solvers, sample
from sdetoolkit.solvers.er_sde import er_sde_kernel
from sdetoolkit.symbolic import er_sde_integrals as er

TYPES = range(1, 8)


def official_phi(x, func_type, eta=0.0):
    """customized_func, written from the official code on floats."""
    if func_type == 1:
        return x
    if func_type == 2:
        return x**2
    if func_type == 3:
        return x * (math.exp(x ** (eta - 1) / (eta - 1)) + 10)
    if func_type == 4:
        return x**1.5
    if func_type == 5:
        return x**2.5
    if func_type == 6:
        return x**0.9 * math.log10(1 + 100 * x**1.5)
    return x * (math.exp(x**0.3) + 10)


# -- symbolic ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("func_type", TYPES)
def test_noise_scales_match_the_official_functions_and_derivatives(func_type):
    phi = er.official_noise_scale(func_type)
    s = torch.tensor([0.003, 0.2, 1.0, 7.5, 80.0], dtype=torch.float64)
    expected = torch.tensor([official_phi(float(v), func_type) for v in s], dtype=torch.float64)
    torch.testing.assert_close(phi(s), expected, rtol=1e-14, atol=0)
    h = 1e-6 * s
    central = (phi(s + h) - phi(s - h)) / (2 * h)
    torch.testing.assert_close(phi.derivative(s), central, rtol=1e-7, atol=0)


@pytest.mark.parametrize("func_type", [1, 2, 4, 5])
def test_power_law_integrals_are_closed_forms_that_match_quadrature(func_type):
    phi = er.official_noise_scale(func_type)
    assert phi.power == {1: 1, 2: 2, 4: sp.Rational(3, 2), 5: sp.Rational(5, 2)}[func_type]
    for lo, hi in [(0.002, 0.003), (0.5, 0.8), (3.0, 80.0)]:
        i1, i2 = er.exact_integrals(phi, lo, hi)
        q1 = integrate.quad(lambda u: 1 / official_phi(u, func_type), lo, hi, epsabs=0, epsrel=1e-13)[0]
        q2 = integrate.quad(lambda u, hi=hi: (u - hi) / official_phi(u, func_type), lo, hi, epsabs=0,
                            epsrel=1e-13)[0]
        assert i1 == pytest.approx(q1, rel=1e-11) and i2 == pytest.approx(q2, rel=1e-11)


@pytest.mark.parametrize("func_type", [3, 6, 7])
def test_quadrature_integrals_match_a_fine_official_sum(func_type):
    """Adaptive quadrature against the official left Riemann sum: its error is O(1/points), so it must shrink 10x
    from 100 to 1000 points and approach the exact value."""
    phi = er.official_noise_scale(func_type)
    lo, hi = 0.4, 0.9
    exact = er.exact_integrals(phi, lo, hi)

    def riemann(points):
        w = (hi - lo) / points
        nodes = [lo + k * w for k in range(points)]
        return (sum(w / official_phi(u, func_type) for u in nodes),
                sum(w * (u - hi) / official_phi(u, func_type) for u in nodes))

    official = er.official_integrals(phi, lo, hi)
    assert official == pytest.approx(riemann(100), rel=1e-13)
    err100 = [abs(a - b) for a, b in zip(riemann(100), exact, strict=True)]
    err1000 = [abs(a - b) for a, b in zip(riemann(1000), exact, strict=True)]
    assert all(8 < e1 / e2 < 12 for e1, e2 in zip(err100, err1000, strict=True))


def test_taylor_coefficients_are_the_integrals_of_the_expansion():
    r"""c_k = phi(s_t) * int (u - s_s)^k / k! * phi'/phi^2 du, integrated directly (no integration by parts)."""
    for func_type in (2, 7):
        phi = er.official_noise_scale(func_type)
        t, s = 0.3, 0.7
        c = er.taylor_coefficients(phi, t, s, "exact")
        phi_t = official_phi(t, func_type)
        for k in range(3):
            def integrand(u, k=k, phi=phi, s=s, func_type=func_type):
                d = float(phi.derivative(torch.tensor(u, dtype=torch.float64)))
                return (u - s) ** k / math.factorial(k) * d / official_phi(u, func_type) ** 2
            direct = phi_t * integrate.quad(integrand, t, s, epsabs=0, epsrel=1e-13)[0]
            assert c[k] == pytest.approx(direct, rel=1e-10)


@pytest.mark.parametrize("func_type", TYPES)
def test_kernel_variance_is_the_official_step_variance(func_type):
    """phi(s_t)^2 int K^2 = s_t^2 - s_s^2 r^2: by scipy in log s, and by the noise module's quadrature on vp-linear."""
    phi = er.official_noise_scale(func_type)
    for lo, hi in [(0.01, 0.02), (0.3, 2.0), (5.0, 150.0)]:
        closed = lo**2 - hi**2 * (official_phi(lo, func_type) / official_phi(hi, func_type)) ** 2
        assert er.variance_by_quadrature(phi, lo, hi) == pytest.approx(closed, rel=1e-11, abs=1e-15 * hi**2)
    schedule = get_schedule("vp-linear")
    kernel = er_sde_kernel(schedule, phi)
    t = torch.tensor([0.001, 0.02, 0.3, 0.7, 1.0], dtype=torch.float64)
    factor = gram_factor([kernel], t[:-1], t[1:])[:, 0, 0]
    s = schedule.sigma_over_alpha(t)
    r = phi(s[:-1]) / phi(s[1:])
    closed = s[:-1] ** 2 - s[1:] ** 2 * r**2
    torch.testing.assert_close(phi(s[:-1]) ** 2 * factor**2, closed, rtol=1e-11, atol=1e-15)


def test_kernel_names_identify_schedule_and_phi():
    vp, edm = get_schedule("vp-linear"), get_schedule("edm")
    a = er_sde_kernel(vp, er.official_noise_scale(7))
    assert a == er_sde_kernel(vp, er.official_noise_scale(7))
    assert a != er_sde_kernel(edm, er.official_noise_scale(7)) and a != er_sde_kernel(vp, er.official_noise_scale(6))
    assert er_sde_kernel(vp, er.official_noise_scale(3, 0.0)) != er_sde_kernel(vp, er.official_noise_scale(3, 0.5))


# -- faithfulness to the official code --------------------------------------------------------------------------------
def official_ve(model, sigmas, x, order, noise, func_type=7, clip=1e-6):
    """ve_1_order / ve_2_order_taylor / ve_3_order_taylor with the normals of ``noise`` for each step interval."""
    old_x0 = old_d = None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = model(x, s).x0
        r = official_phi(s_next, func_type) / official_phi(s, func_type) if s_next > 0 else 0.0
        var = s_next**2 - s**2 * r**2
        z = noise.normal(s, s_next, x)
        term = math.sqrt(0.0 if abs(var) < clip else var) * z
        if order == 1 or old_x0 is None or s_next == 0:
            x = r * x + (1 - r) * x0 + term
        else:
            nodes = [s_next + k / 100 * (s - s_next) for k in range(100)]
            s_int = sum(1.0 / official_phi(u, func_type) * (s - s_next) / 100 for u in nodes)
            d = (x0 - old_x0) / (s - sigmas[i - 1])
            x_new = r * x + (1 - r) * x0 + (s_next - s + s_int * official_phi(s_next, func_type)) * d
            if order == 3 and old_d is not None:
                s_d_int = sum((u - s) / official_phi(u, func_type) * (s - s_next) / 100 for u in nodes)
                dd = 2 * (d - old_d) / (s - sigmas[i - 2])
                x_new = x_new + ((s_next - s) ** 2 / 2 + s_d_int * official_phi(s_next, func_type)) * dd
            x = x_new + term
            old_d = d
        old_x0 = x0
    return x


def official_vp(model, schedule, times, x, order, noise, func_type=7, clip=1e-6):
    """vp_1_order / vp_2_order_taylor / vp_3_order_taylor (lambdas = sigmas / alphas)."""
    alphas = [float(schedule.alpha(t)) for t in times]
    lambdas = [float(schedule.sigma(t)) / a for t, a in zip(times, alphas, strict=True)]
    old_x0 = old_d = None
    for i in range(len(times) - 1):
        lam, lam_next, a_next = lambdas[i], lambdas[i + 1], alphas[i + 1]
        x0 = model(x, float(times[i])).x0
        r = official_phi(lam_next, func_type) / official_phi(lam, func_type)
        var = lam_next**2 - lam**2 * r**2
        z = noise.normal(float(times[i]), float(times[i + 1]), x)
        term = math.sqrt(0.0 if abs(var) < clip else var) * z * a_next
        x_new = (a_next / alphas[i]) * r * x + a_next * (1 - r) * x0
        if order >= 2 and old_x0 is not None:
            nodes = [lam_next + k / 100 * (lam - lam_next) for k in range(100)]
            s_int = sum(1.0 / official_phi(u, func_type) * (lam - lam_next) / 100 for u in nodes)
            d = (x0 - old_x0) / (lam - lambdas[i - 1])
            x_new = x_new + a_next * (lam_next - lam + s_int * official_phi(lam_next, func_type)) * d
            if order == 3 and old_d is not None:
                s_d_int = sum((u - lam) / official_phi(u, func_type) * (lam - lam_next) / 100 for u in nodes)
                dd = 2 * (d - old_d) / (lam - lambdas[i - 2])
                x_new = x_new + a_next * ((lam_next - lam) ** 2 / 2 + s_d_int * official_phi(lam_next, func_type)) * dd
            old_d = d
        x = x_new + term
        old_x0 = x0
    return x


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("func_type", [2, 6, 7])
def test_ve_form_is_the_official_ve_code(order, func_type):
    """On the official EDM grid (Karras rho = 7 from 80 to 0.002, then 0): final step to sigma = 0 included."""
    problem = gauss_1d_edm()
    sigmas = [*karras(80.0, 0.002, 10), 0.0]
    x = problem.prior().sample(16, torch.Generator().manual_seed(1))
    out = sample(get_solver(f"er-sde-{order}", noise_scale=func_type), problem.model(),
                 explicit(problem.schedule, sigmas), x, IIDNoise(3))
    ref = official_ve(problem.model(), sigmas, x, order, IIDNoise(3), func_type)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_vp_form_is_the_official_vp_code(order):
    problem = get_problem("gauss-1d")
    grid = make_grid("edm", problem.schedule, 9, problem.t_min, problem.t_max)
    x = problem.prior().sample(16, torch.Generator().manual_seed(2))
    out = sample(get_solver(f"er-sde-{order}", form="vp"), problem.model(), grid, x, IIDNoise(4))
    ref = official_vp(problem.model(), problem.schedule, grid, x, order, IIDNoise(4))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_official_clip_zeroes_small_variances():
    """Near sigma_min every step variance is below the official 1e-6, so the default run draws no noise (two seeds
    agree) and clip = 0 restores it."""
    problem = gauss_1d_edm()
    grid = explicit(problem.schedule, [0.01, 0.005, 0.002])
    phi = er.official_noise_scale(7)
    ends = zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True)
    assert all(0 < er.step_variance(phi, lo, hi) < 1e-6 for hi, lo in ends)
    x = problem.prior().sample(4, torch.Generator().manual_seed(0))
    a = sample(get_solver("er-sde-1"), problem.model(), grid, x, IIDNoise(0))
    b = sample(get_solver("er-sde-1"), problem.model(), grid, x, IIDNoise(1))
    c = sample(get_solver("er-sde-1", clip=0.0), problem.model(), grid, x, IIDNoise(0))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- identities (1e-12, same IIDNoise) --------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["ve", "vp"])
def test_phi_identity_is_ddim(form):
    problem = get_problem("gauss-full-d16")
    grid = make_grid("uniform-lambda", problem.schedule, 7, problem.t_min, problem.t_max)
    x = problem.prior().sample(8, torch.Generator().manual_seed(0))
    ode = sample(get_solver("er-sde-1", noise_scale=1, form=form), problem.model(), grid, x, IIDNoise(5))
    ddim = sample(get_solver("ddim"), problem.model(), grid, x)
    torch.testing.assert_close(ode, ddim, rtol=1e-12, atol=1e-12)


def ddpm_posterior(model, grid, x, noise):
    """The DDPM posterior step q(x_t | x_s, x0_hat) in closed form (Ho et al. 2020, eqs. 6-7)."""
    sched = model.schedule
    for t, t_next in zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True):
        a, s, a_n, s_n = (float(f(v)) for f, v in ((sched.alpha, t), (sched.sigma, t), (sched.alpha, t_next),
                                                   (sched.sigma, t_next)))
        a_ts, var_ts = a / a_n, s**2 - (a / a_n) ** 2 * s_n**2
        x0 = model(x, t).x0
        mean = (a_ts * s_n**2 / s**2) * x + (a_n * var_ts / s**2) * x0
        x = mean + math.sqrt(var_ts * s_n**2 / s**2) * noise.normal(t, t_next, x)
    return x


@pytest.mark.parametrize("form", ["ve", "vp"])
def test_phi_square_is_ddpm_ancestral(form):
    problem = get_problem("gauss-full-d16")
    grid = make_grid("uniform-lambda", problem.schedule, 7, problem.t_min, problem.t_max)
    x = problem.prior().sample(8, torch.Generator().manual_seed(0))
    er2 = sample(get_solver("er-sde-1", noise_scale=2, form=form, clip=0.0), problem.model(), grid, x, IIDNoise(6))
    ref = ddpm_posterior(problem.model(), grid, x, IIDNoise(6))
    torch.testing.assert_close(er2, ref, rtol=1e-12, atol=1e-12)
    if "ddpm" in list_solvers():  # the DDPM family's own solver, where it is registered
        ddpm = sample(get_solver("ddpm"), problem.model(), grid, x, IIDNoise(6))
        torch.testing.assert_close(er2, ddpm, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("integration", ["official", "exact"])
def test_vp_form_on_vp_equals_ve_form_on_edm_on_matched_grids(order, integration):
    """x/alpha of the VP run on vp-linear equals the VE run on the edm schedule whose times are the VP grid's
    sigma/alpha, from x_T / alpha(t_max), with the same normals."""
    vp = get_problem("gauss-1d")
    grid = make_grid("edm", vp.schedule, 8, vp.t_min, vp.t_max)
    edm = dataclasses.replace(gauss_1d_edm(), schedule=get_schedule("edm", sigma_max=200.0))
    sigmas = vp.schedule.sigma_over_alpha(grid)
    x = vp.prior().sample(32, torch.Generator().manual_seed(0))
    alpha_T, alpha_0 = float(vp.schedule.alpha(grid[0])), float(vp.schedule.alpha(grid[-1]))
    out_vp = sample(get_solver(f"er-sde-{order}", form="vp", integration=integration), vp.model(), grid, x,
                    CallOrderNoise(9))
    out_ve = sample(get_solver(f"er-sde-{order}", form="ve", integration=integration),
                    AnalyticModel(edm.distribution, edm.schedule), explicit(edm.schedule, sigmas), x / alpha_T,
                    CallOrderNoise(9))
    torch.testing.assert_close(out_vp / alpha_0, out_ve, rtol=1e-12, atol=1e-12)
    same_schedule = sample(get_solver(f"er-sde-{order}", form="ve", integration=integration), vp.model(), grid, x,
                           CallOrderNoise(9))
    torch.testing.assert_close(same_schedule, out_vp, rtol=1e-12, atol=1e-12)


# -- parameters -------------------------------------------------------------------------------------------------------
def test_user_phi_matches_the_official_function_and_bad_phi_is_refused():
    problem = get_problem("gauss-1d")
    grid = make_grid("edm", problem.schedule, 6, problem.t_min, problem.t_max)
    x = problem.prior().sample(8, torch.Generator().manual_seed(0))
    official = sample(get_solver("er-sde-3", noise_scale=7, integration="exact"), problem.model(), grid, x,
                      IIDNoise(0))
    user = sample(get_solver("er-sde-3", noise_scale=lambda s: s * (torch.exp(s**0.3) + 10), integration="exact"),
                  problem.model(), grid, x, IIDNoise(0))
    torch.testing.assert_close(user, official, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match=r"non-increasing|constraint"):
        sample(get_solver("er-sde-1", noise_scale=lambda s: s**0.5), problem.model(), grid, x, IIDNoise(0))
    for bad in (dict(noise_scale=8), dict(noise_scale="x"), dict(eta=1), dict(clip=-1.0), dict(integration="gauss")):
        with pytest.raises(ValueError):
            get_solver("er-sde", **bad)


def test_official_default_and_claims():
    solver = get_solver("er-sde")
    assert solver.order == 3 and solver.phi.name == "official-7" and solver.integration == "official"
    assert get_solver("er-sde-2").claimed().order == 2 and get_solver("er-sde-2").claimed().kind == "strong"
    assert get_solver("er-sde-1", noise_scale=1).claimed().kind == "global"


def test_brownian_path_runs_are_consistent_under_refinement():
    """On one BrownianPath, the coarse run's noise is the sum of the fine run's kernel integrals: ER-SDE-1 with
    phi = s^2 on grid G and on G refined twice converge to each other (strong error shrinks)."""
    problem = get_problem("gauss-1d")
    solver = get_solver("er-sde-1", noise_scale=2, clip=0.0)
    grids = [make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max) for n in (8, 16, 32, 256)]
    path = BrownianPath.covering(solver, problem.model(), grids, seed=0)
    x = problem.prior().sample(256, torch.Generator().manual_seed(0))
    outs = [sample(solver, problem.model(), g, x, path) for g in grids]
    errors = [float((o - outs[-1]).square().mean().sqrt()) for o in outs[:-1]]
    assert errors[0] > errors[1] > errors[2]


# -- convergence to the truth (Monte Carlo, seeded) -------------------------------------------------------------------
@pytest.mark.parametrize("order", [2, 3])
def test_output_moments_match_the_exact_marginal_on_gauss_1d(order):
    """N = 20000 samples at 100 EDM steps. The output is Gaussian (linear solver), so the sample mean and variance
    have standard errors sqrt(v/N) and v sqrt(2/(N-1)); |z| < 4. The discretisation bias at 100 steps, from the
    exact-moment engine, is checked to be below half a standard error, so the test measures convergence, not luck."""
    problem = get_problem("gauss-1d")
    grid = make_grid("edm", problem.schedule, 100, problem.t_min, problem.t_max)
    n = 20000
    target = problem.target()
    mean, var = float(target.mean()), float(target.covariance())
    law = propagate(get_solver(f"er-sde-{order}"), problem.distribution, problem.schedule, grid)
    assert abs(float(law.variances[0]) - var) < 0.5 * var * math.sqrt(2 / (n - 1))
    x = problem.prior().sample(n, torch.Generator().manual_seed(11))
    y = sample(get_solver(f"er-sde-{order}"), problem.model(), grid, x, IIDNoise(12))[:, 0]
    z_mean = (float(y.mean()) - mean) / math.sqrt(var / n)
    z_var = (float(y.var()) - var) / (var * math.sqrt(2 / (n - 1)))
    assert abs(z_mean) < 4 and abs(z_var) < 4


@pytest.mark.slow
def test_first_order_converges_on_gauss_1d():
    problem = get_problem("gauss-1d")
    grid = make_grid("edm", problem.schedule, 1000, problem.t_min, problem.t_max)
    n = 20000
    target = problem.target()
    mean, var = float(target.mean()), float(target.covariance())
    x = problem.prior().sample(n, torch.Generator().manual_seed(13))
    y = sample(get_solver("er-sde-1"), problem.model(), grid, x, IIDNoise(14))[:, 0]
    assert abs(float(y.mean()) - mean) < 4 * math.sqrt(var / n)
    assert abs(float(y.var()) - var) < 4 * var * math.sqrt(2 / (n - 1))
