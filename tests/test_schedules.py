import math

import pytest
import sympy as sp
import torch
from scipy.integrate import solve_ivp

from sdetoolkit.schedules import LAMBDA, NoiseSchedule, T, get_schedule, list_schedules

FAMILIES = list_schedules()


def interior_times(schedule, n=400):
    """Times from 1e-6 of the range up to just below t_hi, log-spaced, where lambda is finite."""
    width = schedule.t_hi - schedule.t_lo
    return schedule.t_lo + width * torch.logspace(-6, math.log10(1 - 1e-6), n, dtype=torch.float64)


def without_inverse(schedule):
    return NoiseSchedule("numeric", schedule.alpha_expr, schedule.sigma_expr, (schedule.t_lo, schedule.t_hi))


def test_families_are_listed():
    assert set(FAMILIES) == {"vp-linear", "vp-cosine", "ve", "edm", "flow"}


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("inverse", ["closed form", "numerical"])
def test_t_of_lambda_inverts_lambda(name, inverse):
    schedule = get_schedule(name)
    if inverse == "numerical":
        schedule = without_inverse(schedule)
    t = interior_times(schedule)
    recovered = schedule.t_of_lambda(schedule.lam(t))
    # 1e-12 relative, with an absolute floor of 1e-12 of the range where t itself is tiny.
    tolerance = 1e-12 * torch.clamp(t, min=1e-3 * (schedule.t_hi - schedule.t_lo))
    assert bool(((recovered - t).abs() <= tolerance).all()), (recovered - t).abs().max()


@pytest.mark.parametrize("name", FAMILIES)
def test_f_g2_and_dlambda_match_finite_differences(name):
    schedule = get_schedule(name)
    t = interior_times(schedule, 60)
    t = t[(t > 1e-4 * schedule.t_hi) & (t < 0.99 * schedule.t_hi)]
    h = 1e-3 * t

    def central(fn):
        """Fourth-order central difference."""
        return (fn(t - 2 * h) - 8 * fn(t - h) + 8 * fn(t + h) - fn(t + 2 * h)) / (12 * h)

    log_alpha = lambda u: torch.log(schedule.alpha(u))  # noqa: E731
    variance = lambda u: schedule.sigma(u) ** 2  # noqa: E731
    f_fd = central(log_alpha)
    g2_fd = central(variance) - 2 * f_fd * variance(t)
    checks = [(schedule.f(t), f_fd), (schedule.g2(t), g2_fd), (schedule.dlambda_dt(t), central(schedule.lam))]
    for exact, approx in checks:
        scale = exact.abs().clamp_min(1e-300)
        assert bool(((exact - approx).abs() <= 1e-7 * scale).all()), ((exact - approx).abs() / scale).max()


def test_vp_linear_matches_score_sde_beta():
    """g^2 = beta(t) = beta_min + t (beta_max - beta_min) and f = -beta/2 for the VP SDE (Song et al. 2021)."""
    schedule = get_schedule("vp-linear")
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    beta = 0.1 + t * 19.9
    torch.testing.assert_close(schedule.g2(t), beta, rtol=1e-13, atol=0)
    torch.testing.assert_close(schedule.f(t), -beta / 2, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["vp-linear", "vp-cosine"])
def test_variance_preserving(name):
    schedule = get_schedule(name)
    t = interior_times(schedule)
    torch.testing.assert_close(schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2, torch.ones_like(t), rtol=0,
                               atol=1e-14)


def test_vp_cosine_sigma_form_is_one_minus_alpha_squared():
    """The cancellation-free sigma^2 used by vp-cosine equals 1 - alpha^2 symbolically."""
    schedule = get_schedule("vp-cosine")
    difference = sp.expand_trig(schedule.sigma_expr**2 + schedule.alpha_expr**2 - 1)
    assert sp.simplify(sp.expand_trig(sp.simplify(difference))) == 0


def coupled_em(schedule, t_end, steps, n, mean0, var0, generator):
    """Euler-Maruyama for dx = f x dt + g dW from x0 ~ N(mean0, var0) with ``steps`` and ``steps // 2`` steps on
    the same Brownian path (coarse increments are sums of fine ones).

    Returns the fine and coarse end points, and the exact means and variances of both EM chains (from the EM
    moment recursion, no sampling).
    """
    x0 = mean0 + math.sqrt(var0) * torch.randn(n, dtype=torch.float64, generator=generator)
    grid = torch.linspace(schedule.t_lo, t_end, steps + 1, dtype=torch.float64)
    f, g2, dt = schedule.f(grid).tolist(), schedule.g2(grid).tolist(), (grid[1] - grid[0]).item()
    fine, coarse, coarse_dw = x0.clone(), x0.clone(), torch.zeros(n, dtype=torch.float64)
    moments = {"fine": [mean0, var0], "coarse": [mean0, var0]}
    for i in range(steps):
        dw = math.sqrt(dt) * torch.randn(n, dtype=torch.float64, generator=generator)
        fine = fine + f[i] * fine * dt + math.sqrt(g2[i]) * dw
        m, v = moments["fine"]
        moments["fine"] = [(1 + f[i] * dt) * m, (1 + f[i] * dt) ** 2 * v + g2[i] * dt]
        coarse_dw += dw
        if i % 2 == 1:
            j, big = i - 1, 2 * dt
            coarse = coarse + f[j] * coarse * big + math.sqrt(g2[j]) * coarse_dw
            coarse_dw.zero_()
            m, v = moments["coarse"]
            moments["coarse"] = [(1 + f[j] * big) * m, (1 + f[j] * big) ** 2 * v + g2[j] * big]
    return fine, coarse, moments


WINDOWS = {"vp-linear": 1.0, "vp-cosine": 0.9, "ve": 1.0, "edm": 2.0, "flow": 0.5}


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_marginal_matches_euler_maruyama(name):
    """Var[x_t] = alpha^2 Var[x_0] + sigma^2 and E[x_t] = alpha E[x_0], against an Euler-Maruyama simulation.

    EM is first order, so the estimate is Richardson-extrapolated from 1000 and 500 steps on one Brownian path
    (2 * fine - coarse), started from the exact marginal at t_lo. The remaining discretisation bias, computed
    exactly from the EM moment recursion, must be below a quarter of the Monte Carlo standard error, so the 4-SE
    bound tests the closed form, not the step size. The same bound must reject a 3% error in sigma^2 (power).
    """
    schedule = get_schedule(name)
    t_end, data_mean, data_var, n = WINDOWS[name], 0.7, 0.3, 100_000
    alpha0, sigma0 = schedule.alpha(schedule.t_lo).item(), schedule.sigma(schedule.t_lo).item()
    mean0, var0 = alpha0 * data_mean, alpha0**2 * data_var + sigma0**2   # the marginal where the SDE starts
    fine, coarse, em = coupled_em(schedule, t_end, 1000, n, mean0, var0, torch.Generator().manual_seed(1))
    alpha, sigma = schedule.alpha(t_end).item(), schedule.sigma(t_end).item()
    exact_mean, exact_var = alpha * data_mean, alpha**2 * data_var + sigma**2

    mean_terms = 2 * fine - coarse
    var_terms = 2 * (fine - fine.mean()) ** 2 - (coarse - coarse.mean()) ** 2
    se_mean, se_var = (t.std().item() / math.sqrt(n) for t in (mean_terms, var_terms))
    bias_mean = 2 * em["fine"][0] - em["coarse"][0] - exact_mean
    bias_var = 2 * em["fine"][1] - em["coarse"][1] - exact_var
    assert abs(bias_mean) < 0.25 * se_mean and abs(bias_var) < 0.25 * se_var

    assert abs(mean_terms.mean().item() - exact_mean) < 4 * se_mean
    assert abs(var_terms.mean().item() - exact_var) < 4 * se_var
    assert abs(var_terms.mean().item() - (alpha**2 * data_var + 1.03 * sigma**2)) > 4 * se_var


@pytest.mark.parametrize("name", FAMILIES)
def test_variance_ode_matches_closed_form(name):
    """dv/dt = 2 f v + g^2 integrated numerically reproduces alpha^2 v0 + sigma^2 (deterministic check)."""
    schedule = get_schedule(name)
    t_end = WINDOWS[name]
    start = schedule.alpha(0.0).item() ** 2 * 0.3 + schedule.sigma(0.0).item() ** 2
    sol = solve_ivp(lambda t, v: 2 * schedule.f(t).item() * v + schedule.g2(t).item(), (0.0, t_end), [start],
                    method="DOP853", rtol=1e-12, atol=1e-14)
    exact = schedule.alpha(t_end).item() ** 2 * 0.3 + schedule.sigma(t_end).item() ** 2
    assert sol.y[0, -1] == pytest.approx(exact, rel=1e-9)


def test_times_outside_the_schedule_are_rejected():
    schedule = get_schedule("vp-linear")
    with pytest.raises(ValueError, match="t: times must lie in"):
        schedule.alpha(1.5)
    with pytest.raises(ValueError, match="t: times must lie in"):
        schedule.sigma(torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match="t: contains NaN"):
        schedule.lam(float("nan"))
    with pytest.raises(ValueError, match="lam: log-SNR must lie in"):
        schedule.t_of_lambda(-50.0)


def test_bad_schedule_definitions_are_rejected():
    with pytest.raises(ValueError, match="lambda = log"):
        NoiseSchedule("increasing-snr", sp.Integer(1), 1 / (1 + T), (0.0, 1.0))
    with pytest.raises(ValueError, match="t_of_lambda: does not invert"):
        NoiseSchedule("wrong-inverse", sp.Integer(1), T, (0.1, 1.0), t_of_lambda=sp.exp(-2 * LAMBDA))
    with pytest.raises(ValueError, match="t_range"):
        NoiseSchedule("empty", sp.Integer(1), T, (1.0, 1.0))
    with pytest.raises(ValueError, match="name: unknown schedule 'vp'"):
        get_schedule("vp")


def test_dtype_follows_input():
    schedule = get_schedule("vp-cosine")
    t32 = torch.tensor([0.1, 0.5], dtype=torch.float32)
    for fn in (schedule.alpha, schedule.sigma, schedule.f, schedule.g2, schedule.lam):
        assert fn(t32).dtype == torch.float32
    assert get_schedule("edm").alpha(t32).dtype == torch.float32  # constant alpha still follows the input
