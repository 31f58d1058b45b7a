"""DEIS: coefficients against closed forms and an independent quadrature, faithfulness to the official integrand,
the identities tAB0 = DDIM and rhoRK = RK in sigma/alpha, the warm-up, and the size of the official Riemann error."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy import integrate

from sdetoolkit import get_problem, make_grid
from sdetoolkit.schedules import get_schedule
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.deis import RK_METHODS, gauss_coefficients, lagrange_basis, riemann_coefficients

SCHEDULES = {"vp-linear": (1e-3, 1.0), "vp-cosine": (1e-3, 0.99), "ve": (1e-3, 1.0), "edm": (0.002, 80.0),
             "flow": (1e-3, 0.99)}


@pytest.fixture(scope="module")
def gauss_1d():
    return get_problem("gauss-1d")


def grid_of(problem, n):
    return make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max).numpy()


def on_schedule(name):
    t_min, t_max = SCHEDULES[name]
    return dataclasses.replace(get_problem("gauss-1d"), schedule=get_schedule(name), t_min=t_min, t_max=t_max)


def start(problem, n=16, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed))


def quad_coefficients(schedule, t_start, t_end, nodes):
    """C_j by adaptive quadrature in t of alpha_{i+1} (sigma' - f sigma)/alpha * l_j: an independent route."""
    alpha_end = float(schedule.alpha(t_end))

    def integrand(t, j):
        tt = torch.tensor([t], dtype=torch.float64)
        weight = float((schedule.dsigma_dt(tt) - schedule.f(tt) * schedule.sigma(tt)) / schedule.alpha(tt))
        return alpha_end * weight * lagrange_basis(np.array([t]), nodes)[j, 0]

    return np.array([integrate.quad(integrand, t_start, t_end, args=(j,), epsabs=0, epsrel=1e-13, limit=200)[0]
                     for j in range(len(nodes))])


def step_nodes(times, i, degree):
    return [times[i - j] for j in range(degree + 1)]


# -- coefficients -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_degree_zero_coefficient_is_the_ddim_coefficient(schedule):
    """r = 0: C = alpha_{i+1} (rho_{i+1} - rho_i) = sigma_{i+1} - alpha_{i+1} sigma_i / alpha_i, on every schedule."""
    problem = on_schedule(schedule)
    s, times = problem.schedule, grid_of(problem, 12)
    for i in range(12):
        closed = float(s.sigma(times[i + 1]) - s.alpha(times[i + 1]) * s.sigma(times[i]) / s.alpha(times[i]))
        c = gauss_coefficients(s, times[i], times[i + 1], [times[i]])
        assert abs(c[0] - closed) <= 1e-13 * abs(closed)


@pytest.mark.parametrize("n, i, degree", [(8, 5, 3), (32, 3, 3), (32, 31, 3), (256, 200, 2), (256, 255, 3), (3, 2, 2)])
def test_gauss_coefficients_match_adaptive_quadrature_in_t(gauss_1d, n, i, degree):
    times = grid_of(gauss_1d, n)
    nodes = step_nodes(times, i, degree)
    exact = quad_coefficients(gauss_1d.schedule, times[i], times[i + 1], nodes)
    numeric = gauss_coefficients(gauss_1d.schedule, times[i], times[i + 1], nodes)
    np.testing.assert_allclose(numeric, exact, rtol=1e-12, atol=1e-13 * np.abs(exact).max())


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_coefficients_integrate_polynomials_of_the_degree_exactly(gauss_1d, degree):
    """sum_j C_j p(t_{i-j}) = alpha_{i+1} int p d rho for every polynomial p of degree <= r (the Lagrange property)."""
    s, times = gauss_1d.schedule, grid_of(gauss_1d, 16)
    i = 9
    nodes = step_nodes(times, i, degree)
    coef = gauss_coefficients(s, times[i], times[i + 1], nodes)
    alpha_end = float(s.alpha(times[i + 1]))
    for k in range(degree + 1):
        def integrand(t, k=k):
            tt = torch.tensor([t], dtype=torch.float64)
            return alpha_end * float((s.dsigma_dt(tt) - s.f(tt) * s.sigma(tt)) / s.alpha(tt)) * t**k
        exact = integrate.quad(integrand, times[i], times[i + 1], epsabs=0, epsrel=1e-13)[0]
        assert abs(sum(c * node**k for c, node in zip(coef, nodes, strict=True)) - exact) <= 1e-12 * abs(exact)


def test_riemann_weight_is_the_official_vp_integrand():
    """On vp-linear the general weight equals the official psi * eps_integrand written in alpha-bar = alpha^2:
    sqrt(abar_end / abar) * (-0.5 d log abar / d tau) / sqrt(1 - abar), with the official left-point grid."""
    s = get_schedule("vp-linear")
    b0, b1 = 0.1, 20.0
    t_start, t_end, m = 0.31, 0.27, 10000
    nodes = [0.31, 0.35, 0.39, 0.43]
    tau = np.linspace(t_start, t_end, m, endpoint=False)
    log_abar = -0.5 * (b1 - b0) * tau**2 - b0 * tau
    d_log_abar = -(b1 - b0) * tau - b0
    abar_end = np.exp(-0.5 * (b1 - b0) * t_end**2 - b0 * t_end)
    official = np.sqrt(abar_end / np.exp(log_abar)) * (-0.5 * d_log_abar / np.sqrt(-np.expm1(log_abar)))
    expected = (lagrange_basis(tau, nodes) * official).sum(axis=1) * (t_end - t_start) / m
    np.testing.assert_allclose(riemann_coefficients(s, t_start, t_end, nodes, m), expected, rtol=1e-12)


def test_official_riemann_coefficient_error(gauss_1d):
    """The 10,000-point left Riemann sum: relative error about 1e-5 for r = 0 (shrinking with h), but about 1.2e-4
    for r = 3 at every step size (the extrapolating Lagrange basis changes by O(1) over a step), halving when
    num_item doubles (first order in dt)."""
    s = gauss_1d.schedule
    for n, (lo0, hi0) in [(32, (5e-6, 4e-5)), (256, (5e-7, 5e-6))]:
        times = grid_of(gauss_1d, n)
        rel0, rel3 = [], []
        for i in range(3, n):
            for degree, rel in ((0, rel0), (3, rel3)):
                nodes = step_nodes(times, i, degree)
                exact = gauss_coefficients(s, times[i], times[i + 1], nodes)
                official = riemann_coefficients(s, times[i], times[i + 1], nodes)
                rel.append(np.abs(official - exact).max() / np.abs(exact).max())
        assert lo0 < max(rel0) < hi0
        assert 8e-5 < max(rel3) < 2e-4 and 8e-5 < np.median(rel3) < 2e-4
    times = grid_of(gauss_1d, 64)
    nodes = step_nodes(times, 40, 3)
    exact = gauss_coefficients(s, times[40], times[41], nodes)
    ratio = (np.abs(riemann_coefficients(s, times[40], times[41], nodes, 10000) - exact).max()
             / np.abs(riemann_coefficients(s, times[40], times[41], nodes, 20000) - exact).max())
    assert 1.9 < ratio < 2.1


def test_official_quadrature_adds_a_first_order_global_error(gauss_1d):
    """Sampled with tAB3, official minus accurate quadrature shrinks like 1/N (slope 1) and like 1/num_item. On
    gauss-1d it is 4e-5 at N = 32 and 6e-6 at N = 256, where the accurate run's own error is 2.6e-7: the official
    quadrature, not the method, sets the error there, and the measured order drops towards 1."""
    x = start(gauss_1d, 64)
    reference = gauss_1d.distribution.pf_ode_map(x, gauss_1d.schedule, gauss_1d.t_max, gauss_1d.t_min)

    def run(name, n, **params):
        grid = make_grid("uniform-lambda", gauss_1d.schedule, n, gauss_1d.t_min, gauss_1d.t_max)
        return sample(get_solver(name, **params), gauss_1d.model(), grid, x)

    gaps = []
    for n in (64, 128, 256):
        exact = run("deis-tab3-exact", n)
        gaps.append((run("deis-tab3", n) - exact).pow(2).mean().sqrt().item())
    slopes = -np.diff(np.log(gaps)) / np.log(2)
    assert np.all((slopes > 0.85) & (slopes < 1.15)), slopes
    error_exact = (run("deis-tab3-exact", 256) - reference).pow(2).mean().sqrt().item()
    assert gaps[-1] > 10 * error_exact
    finer = (run("deis-tab3", 256, num_item=20000) - run("deis-tab3-exact", 256)).pow(2).mean().sqrt().item()
    assert 1.8 < gaps[-1] / finer < 2.2


# -- identities, warm-up, schedules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_tab0_is_ddim(schedule):
    """tAB-DEIS with r = 0 is DDIM (Zhang & Chen 2023, Sec. 4). With the official quadrature it differs by ~1e-5,
    except on edm, where the weight d rho/dt = 1 is constant and the Riemann sum is exact."""
    problem = on_schedule(schedule)
    grid = make_grid("uniform-lambda", problem.schedule, 10, problem.t_min, problem.t_max)
    x = start(problem)
    ddim = sample(get_solver("ddim"), problem.model(), grid, x)
    exact = sample(get_solver("deis-tab0", quadrature="gauss"), problem.model(), grid, x)
    torch.testing.assert_close(exact, ddim, rtol=1e-12, atol=1e-12)
    official = sample(get_solver("deis-tab0"), problem.model(), grid, x)
    gap = (official - ddim).abs().max().item() / ddim.abs().max().item()
    assert gap < 1e-13 if schedule == "edm" else 1e-7 < gap < 1e-3


@pytest.mark.parametrize("method, twin", [("1euler", "euler-sigma"), ("2heun", "heun-sigma"), ("3kutta", "rk3-sigma"),
                                          ("4rk", "rk4-sigma")])
def test_rhork_is_runge_kutta_in_sigma_over_alpha(gauss_1d, method, twin):
    problem = get_problem("gauss-full-d16")
    grid = make_grid("edm", problem.schedule, 7, problem.t_min, problem.t_max)
    x = start(problem, 8)
    a = sample(get_solver(f"deis-rhork-{method}"), problem.model(), grid, x)
    b = sample(get_solver(twin), problem.model(), grid, x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_official_rk_tableaus():
    """The extra official tableaus of rk.py are third order (checked against the order conditions on import)."""
    assert {name: t.order for name, t in RK_METHODS.items()} == dict(
        [("1euler", 1), ("2heun", 2), ("3kutta", 3), ("3ral", 3), ("3heun", 3), ("3vdh", 3), ("3ssprk", 3),
         ("4rk", 4)])
    assert get_solver("deis-rhork").rk_method == "3kutta" and get_solver("deis-rhork-3vdh").nfe_per_step == 3


def test_warm_up_follows_the_official_rule(gauss_1d):
    """Step i uses degree min(i, r) (get_ab_eps_coef); no lower-order final steps."""
    grid = make_grid("uniform-lambda", gauss_1d.schedule, 6, gauss_1d.t_min, gauss_1d.t_max)
    for r in range(4):
        trace = sample(get_solver(f"deis-tab{r}"), gauss_1d.model(), grid, start(gauss_1d), return_trace=True).trace
        assert list(trace["order"]) == [min(i, r) + 1 for i in range(6)]
        assert list(trace["nfe"]) == list(range(1, 7))


def test_defaults_and_claims():
    solver = get_solver("deis-tab")
    assert solver.config == dict(ab_order=3, quadrature="riemann", num_item=10000)
    assert [get_solver(f"deis-tab{r}").claimed().order for r in range(4)] == [1, 2, 3, 4]
    assert get_solver("deis-tab3-exact").quadrature == "gauss"
    with pytest.raises(ValueError, match="ab_order"):
        get_solver("deis-tab", ab_order=4)
    with pytest.raises(ValueError, match="num_item"):
        get_solver("deis-tab", num_item=0)
    with pytest.raises(ValueError, match="quadrature: fixed by the variant"):
        get_solver("deis-tab3-exact", quadrature="riemann")


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_tab3_exact_converges_on_every_schedule(schedule):
    """The general weight (sigma' - f sigma)/alpha = d rho/dt: tAB3 converges at high order on VP, VE, EDM, flow."""
    problem = on_schedule(schedule)
    x = start(problem)
    reference = problem.distribution.pf_ode_map(x, problem.schedule, problem.t_max, problem.t_min)
    errors = []
    for n in (40, 80):
        grid = make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max)
        errors.append((sample(get_solver("deis-tab3-exact"), problem.model(), grid, x) - reference).abs().max().item())
    assert errors[1] < errors[0] / 6, errors


@pytest.mark.parametrize("name", ["deis-tab3", "deis-tab3-exact", "deis-tab0"])
def test_step_to_sigma_zero(name):
    """A final step to sigma = 0 (lambda = inf): the accurate quadrature cuts the tail, both stay finite and
    tAB0 still equals DDIM there."""
    problem = get_problem("gauss-diag-d1024")
    grid = make_grid("edm", problem.schedule, 6, 0.0, problem.t_max)
    x = start(problem, 4)
    out = sample(get_solver(name), problem.model(), grid, x)
    assert bool(torch.isfinite(out).all())
    if name == "deis-tab0":
        exact = sample(get_solver(name, quadrature="gauss"), problem.model(), grid, x)
        torch.testing.assert_close(exact, sample(get_solver("ddim"), problem.model(), grid, x), rtol=1e-11,
                                   atol=1e-11)
