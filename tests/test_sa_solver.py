"""SA-Solver (Xue et al. 2023): exponential Adams weights, the official closed forms, tau = 0 reductions, truth."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from test_sde_dpm_solver_pp import moment_z_scores

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import IIDNoise, NoiseSource
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.sa_solver import adams_weights, rescale_terms
from sdetoolkit.solvers.unipc import unipc_coefficients


@pytest.fixture(scope="module")
def problem():
    return get_problem("gauss-full-d16")


def start(problem, n=8, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed)).to(torch.float64)


def official_weights(lams, lam_s, lam_t, tau):
    """get_coefficients_fn with predict_x0 as scxue/SA-Solver writes it: Lagrange coefficients in absolute lambda
    times the closed-form integrals of lambda^k e^{(1+tau^2) lambda}; returned per alpha_t (times (1+tau^2)
    sigma_t e^{-tau^2 lambda_t} / alpha_t)."""
    kappa = 1 + tau**2
    def power_integral(k):                   # int_{lam_s}^{lam_t} e^{kappa l} l^k dl, via the antiderivative
        def anti(v):
            c = kappa * v
            poly = {0: 1, 1: c - 1, 2: c * c - 2 * c + 2, 3: c**3 - 3 * c * c + 6 * c - 6}[k]
            return math.exp(c) * poly / kappa ** (k + 1)
        return anti(lam_t) - anti(lam_s)
    n = len(lams)
    out = []
    for i in range(n):
        others = [lams[j] for j in range(n) if j != i]
        coeffs = np.atleast_1d(np.poly(others)) / np.prod([lams[i] - v for v in others])
        value = sum(coeffs[j] * power_integral(n - 1 - j) for j in range(n))
        out.append(kappa * value * math.exp(-kappa * lam_t))
    return out


@pytest.mark.parametrize("tau", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_weights_equal_the_official_closed_form_and_quadrature(tau, n):
    lam_s, h = 0.3, 0.45
    lam_t = lam_s + h
    lams = [lam_t, lam_s, lam_s - 0.5, lam_s - 0.9][:n]
    ours = adams_weights([v - lam_t for v in lams], h, 1 + tau**2)
    np.testing.assert_allclose(ours, official_weights(lams, lam_s, lam_t, tau), rtol=1e-10, atol=1e-12)
    kappa = 1 + tau**2
    for j in range(n):
        def integrand(u, j=j):
            basis = np.prod([(u - (lams[k] - lam_t)) / (lams[j] - lams[k]) for k in range(n) if k != j])
            return kappa * math.exp(kappa * u) * basis
        assert ours[j] == pytest.approx(quad(integrand, -h, 0, epsabs=1e-14, epsrel=1e-13)[0], rel=1e-11, abs=1e-13)
    assert sum(ours) == pytest.approx(-math.expm1(-kappa * h), rel=1e-13)


def test_rescale_terms_are_the_official_few_step_additions():
    h, kappa, h_prev = 0.4, 1.49, 0.35
    a, c = rescale_terms(h, kappa, h_prev)
    q = h * kappa - 1 + math.exp(-kappa * h)
    assert a == pytest.approx(kappa * (h**2 / 2 - q / kappa**2) / h_prev, rel=1e-13)
    assert c == pytest.approx(kappa * (h / 2 - q / (kappa**2 * h)), rel=1e-13)
    assert abs(rescale_terms(1e-3, 1.0, 1e-3)[0]) < 1e-6          # O(h^3) per alpha_t m: does not change the order


def test_corrector_weights_are_unipc_and_predictor_weights_are_unip_3():
    """tau = 0: AM-(p+1) = UniC-p (p >= 2, solved rho) and AB-3 = UniP-3: both integrate the interpolant exactly."""
    h, rks = 0.37, [-0.8, -1.7]
    nodes = [r * h - h for r in rks]                                  # past lambdas relative to lambda_t
    for variant in ("bh1", "bh2"):
        b_h, rho_p, rho_c = unipc_coefficients(h, rks, variant)
        # weights on (m_new, m0, m_-1, m_-2) of x = ... + alpha_t * sum w m, from x~ - alpha_t B(h) sum rho D
        w = np.zeros(4)
        w[1] = -math.expm1(-h)
        for k, (rho, r) in enumerate(zip(rho_c[:-1], rks, strict=True)):
            w[2 + k] -= b_h * rho / r
            w[1] += b_h * rho / r
        w[0] -= b_h * rho_c[-1]
        w[1] += b_h * rho_c[-1]
        np.testing.assert_allclose(adams_weights([0.0, -h, *nodes], h, 1.0), w, rtol=1e-9, atol=1e-12)
        wp = np.zeros(3)
        wp[0] = -math.expm1(-h)
        for k, (rho, r) in enumerate(zip(rho_p, rks, strict=True)):
            wp[1 + k] -= b_h * rho / r
            wp[0] += b_h * rho / r
        np.testing.assert_allclose(adams_weights([-h, *nodes], h, 1.0), wp, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p, ode, params", [(1, "dpmpp-1", {}), (2, "dpmpp-2m-heun", {}),
                                            (3, "dpmpp-3m-taylor", dict(solver_type="heun"))])
def test_tau_zero_predictor_only_is_dpm_solver_pp_multistep(problem, p, ode, params):
    """tau = 0, no corrector, no rescaling: the exponential Adams-Bashforth methods are DPM-Solver++ 1, 2M (heun)
    and 3M with the Taylor-consistent D2 (official lower_order_final applies at every N, as here)."""
    grid = make_grid("uniform-lambda", problem.schedule, 12, problem.t_min, problem.t_max)
    solver = get_solver("sa-solver", tau=0.0, predictor_order=p, corrector_order=0, rescale=False)
    assert not solver.stochastic
    torch.testing.assert_close(sample(solver, problem.model(), grid, start(problem)),
                               sample(get_solver(ode, lower_order_final_below=10**9, **params), problem.model(), grid,
                                      start(problem)), rtol=1e-12, atol=1e-12)


class Recorder(NoiseSource):
    def __init__(self):
        super().__init__(0)
        self.calls = []

    def reset(self):
        self.calls = []

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        self.calls.append((t_hi, t_lo, tuple(k.name for k in kernels)))
        return tuple(torch.zeros_like(like) for _ in kernels)


@pytest.mark.parametrize("mode, nfe", [("PEC", 8), ("PECE", 15)])
def test_orders_nfe_and_one_noise_per_step_shared_by_predictor_and_corrector(problem, mode, nfe):
    grid = make_grid("uniform-t", problem.schedule, 8, problem.t_min, problem.t_max)
    solver = get_solver("sa-solver", pc_mode=mode, tau_t_min=-math.inf, tau_t_max=math.inf)
    model, noise = problem.model(), Recorder()
    run = sample(solver, model, grid, start(problem), noise, return_trace=True)
    assert model.nfe == nfe
    assert [solver.orders(i, 8) for i in range(8)] == [(1, 2), (2, 3), (3, 4), (3, 4), (3, 4), (3, 4), (2, 3), (1, 2)]
    assert list(run.trace["order"]) == [1, 2, 3, 3, 3, 3, 2, 1]
    # one integral per step (the predictor and the corrector share it), none on the last (tau = 0 there)
    assert [c[:2] for c in noise.calls] == [(float(grid[i]), float(grid[i + 1])) for i in range(7)]


def test_tau_window_is_evaluated_at_the_end_of_the_step():
    solver = get_solver("sa-solver", tau=0.7)
    assert [solver.tau_at(t) for t in (0.1, 0.2, 0.5, 0.8, 0.9)] == [0.0, 0.7, 0.7, 0.7, 0.0]
    assert solver.claimed().kind == "strong" and get_solver("sa-solver-ode").claimed().order == 4


@pytest.mark.parametrize("name, steps", [("sa-solver", 100), ("sa-solver-pece", 100), ("sa-solver-sde", 150),
                                         ("sa-solver-p2c2", 150)])
def test_output_moments_converge_to_the_truth(name, steps):
    z_mean, z_var = moment_z_scores(name, steps)
    assert abs(z_mean) < 4.5 and abs(z_var) < 4.5


def test_final_step_to_sigma_zero_denoises():
    problem = get_problem("gauss-diag-d1024")
    grid = make_grid("edm", problem.schedule, 5, 0.0, problem.t_max)
    run = sample(get_solver("sa-solver", tau_t_min=1.0, tau_t_max=20.0), problem.model(), grid,
                 start(problem, 2), IIDNoise(0), return_trajectory=True)
    assert bool(torch.isfinite(run.x).all())
