"""sdetoolkit.symbolic: phi functions, Lagrange / Adams weights and UniPC coefficients against independent formulas."""

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from sdetoolkit.schedules import get_schedule
from sdetoolkit.solvers.ipndm import ipndm_v_coefficients
from sdetoolkit.symbolic import ops
from sdetoolkit.symbolic.lagrange import (
    NotClosedForm,
    adams_bashforth,
    adams_bashforth_expr,
    equal_step_adams_bashforth,
    exact_time_weights,
    exponential_adams,
    gauss_weights,
    ratio_symbols,
    riemann_weights,
)
from sdetoolkit.symbolic.phi import K_MAX, data_phis, phi, phi_expr
from sdetoolkit.symbolic.unipc import b_of_h, rhs, unipc_coefficients, vandermonde_solution

H = sp.Symbol("h", positive=True)


# -- phi ------------------------------------------------------------------------------------------------------------
def phi_reference(k: int, z: float) -> mpmath.mpf:
    """phi_k(z) = sum_n z^n/(n+k)! at 60 digits (independent of the module's recurrence)."""
    with mpmath.workdps(60):
        z = mpmath.mpf(z)
        if abs(z) < 2:
            return mpmath.nsum(lambda n: z**n / mpmath.factorial(n + k), [0, mpmath.inf])
        with mpmath.workdps(80):
            return (mpmath.exp(z) - sum(z**m / mpmath.factorial(m) for m in range(k))) / z**k


@pytest.mark.parametrize("k", range(K_MAX + 1))
def test_phi_relative_accuracy_against_mpmath(k):
    hs = np.concatenate([np.geomspace(1e-12, 10.0, 70), [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]])
    for h in np.concatenate([hs, np.nextafter(hs, 0.0)]):
        for z in (float(h), -float(h)):
            reference = phi_reference(k, z)
            assert abs((phi(k, z) - reference) / reference) <= 1e-14, (k, z)


def test_phi_at_zero_and_the_recurrence():
    for k in range(K_MAX + 1):
        assert phi(k, 0.0) == 1 / math.factorial(k)
        series = sp.series(phi_expr(k, H), H, 0, 5).removeO()
        assert [series.coeff(H, n) for n in range(5)] == [sp.Rational(1, math.factorial(n + k)) for n in range(5)]
    for k in range(K_MAX):
        assert sp.simplify(phi_expr(k + 1, H) - (phi_expr(k, H) - sp.Rational(1, math.factorial(k))) / H) == 0


def test_phi_on_sympy_is_exact():
    assert sp.simplify(phi(2, -H) - (sp.exp(-H) - 1 + H) / H**2) == 0
    assert ops.is_symbolic(phi(3, H)) and not ops.is_symbolic(phi(3, 0.1))


@pytest.mark.parametrize("h", [0.05, 0.3, 1.0, 4.0])
def test_data_phis_match_the_official_recurrence(h):
    """dpm_solver_pytorch.py: phi_1 = expm1(-h), phi_2 = phi_1/h + 1, phi_3 = phi_2/h - 1/2."""
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    np.testing.assert_allclose(data_phis(h), (phi_1, phi_2, phi_2 / h - 0.5), rtol=1e-11)


def test_data_phis_have_no_cancellation_at_tiny_h():
    h = 1e-7
    np.testing.assert_allclose(data_phis(h), (-h + h**2 / 2, h / 2 - h**2 / 6, -h / 6 + h**2 / 24), rtol=1e-13)


def test_noise_form_phis_match_dpm_solver():
    """DPM-Solver-3 (Lu et al. 2022, Alg. 2): E/h - 1 = h phi_2(h), (e^{rh} - 1)/(rh) - 1 = r h phi_2(r h)."""
    for h in (0.1, 0.7, 3.0):
        assert h * phi(2, h) == pytest.approx(math.expm1(h) / h - 1, rel=1e-12)
        assert h * phi(1, h) == pytest.approx(math.expm1(h), rel=1e-15)


# -- Adams-Bashforth -------------------------------------------------------------------------------------------------
def test_equal_step_adams_bashforth_is_the_printed_table():
    """Liu et al. 2022 (PNDM), eq. 12 / Hairer et al. III.1: [1], [3, -1]/2, [23, -16, 5]/12, [55, -59, 37, -9]/24."""
    printed = {1: (1,), 2: (3, -1), 3: (23, -16, 5), 4: (55, -59, 37, -9)}
    denominators = {1: 1, 2: 2, 3: 12, 4: 24}
    for order, numerators in printed.items():
        assert equal_step_adams_bashforth(order) == tuple(sp.Rational(c, denominators[order]) for c in numerators)
        at_one = [w.subs(dict.fromkeys(ratio_symbols(order), 1)) for w in adams_bashforth_expr(order)]
        assert tuple(at_one) == equal_step_adams_bashforth(order)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_variable_step_adams_bashforth_integrates_polynomials_exactly(order):
    rng = np.random.default_rng(order)
    steps = tuple(rng.uniform(0.2, 1.5, order))
    weights = adams_bashforth(steps)
    nodes = [0.0, *(-np.cumsum(steps[1:]))]
    for degree in range(order):
        exact = steps[0] ** (degree + 1) / (degree + 1)
        quadrature = steps[0] * sum(w * u**degree for w, u in zip(weights, nodes, strict=True))
        assert quadrature == pytest.approx(exact, rel=1e-12, abs=1e-14)
    exact_degree = steps[0] ** (order + 1) / (order + 1)
    quadrature = steps[0] * sum(w * u**order for w, u in zip(weights, nodes, strict=True))
    assert quadrature != pytest.approx(exact_degree, rel=1e-6)  # and not one degree more: the order is sharp
    symbolic = adams_bashforth(tuple(sp.Rational(s).limit_denominator(1000) for s in steps))
    rational_steps = tuple(float(sp.Rational(s).limit_denominator(1000)) for s in steps)
    np.testing.assert_allclose([float(w) for w in symbolic], adams_bashforth(rational_steps), rtol=1e-13)


def test_ipndm_v_against_exact_variable_step_adams_bashforth():
    """diff-sampler ipndm_v_sampler: order 2 is the exact variable-step AB2; orders 3 and 4 agree with AB only on
    equal steps for order 3 (docs/findings.md: the order-4 formula reduces to (57, -65, 43, -11)/24)."""
    steps = (-0.3, -0.45, -0.5, -0.8)
    np.testing.assert_allclose(ipndm_v_coefficients(steps[:2]), adams_bashforth(steps[:2]), rtol=1e-14)
    np.testing.assert_allclose(ipndm_v_coefficients((-0.2,) * 3), [23 / 12, -16 / 12, 5 / 12], rtol=1e-14)
    assert not np.allclose(ipndm_v_coefficients(steps[:3]), adams_bashforth(steps[:3]), rtol=1e-6)
    np.testing.assert_allclose(ipndm_v_coefficients((-0.2,) * 4), np.array([57, -65, 43, -11]) / 24, rtol=1e-14)
    assert not np.allclose(ipndm_v_coefficients((-0.2,) * 4), adams_bashforth((-0.2,) * 4), rtol=1e-6)


# -- exponential Adams-Bashforth -------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [(), (0.3,), (0.25, 0.4), (0.5, 0.2, 0.7)])
def test_exponential_adams_against_quadrature(steps):
    h = 0.6
    nodes = [0.0, *(-np.cumsum(steps) / h)]
    weights = exponential_adams(h, steps)
    for j in range(len(nodes)):
        def integrand(theta, j=j):
            basis = np.prod([(theta - n) / (nodes[j] - n) for k, n in enumerate(nodes) if k != j])
            return h * math.exp(-h * (1 - theta)) * basis
        assert weights[j] == pytest.approx(integrate.quad(integrand, 0, 1, epsabs=1e-15, epsrel=1e-14)[0], rel=1e-12)


def dpmpp_multistep_weights(h, h1, h2=None, factor=1.0):
    """Weights of (m0, m1, m2) in DPM-Solver++ 2M 'heun' / 3M as the official code combines them (alpha_t = 1)."""
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1
    phi_3 = phi_2 / h - 0.5
    r0 = h1 / h
    if h2 is None:
        return (-phi_1 + phi_2 / r0, -phi_2 / r0)
    r1 = h2 / h
    # D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1, D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0+r1)
    d1_0 = np.array([1, -1, 0]) / r0
    d1_1 = np.array([0, 1, -1]) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = factor * (d1_0 - d1_1) / (r0 + r1)
    return tuple(np.array([-phi_1, 0, 0]) + phi_2 * d1 - phi_3 * d2)


def test_exponential_adams_is_dpmpp_2m_heun_and_3m_with_the_factor_two():
    """Lu et al. 2022b, App. B: 2M 'heun' is the 2-point exponential AB; 3M matches the 3-point one only with
    D2 doubled (the 'taylor' variant), confirming the DPM-Solver++ 3M finding."""
    h, h1, h2 = 0.4, 0.5, 0.3
    np.testing.assert_allclose(exponential_adams(h, (h1,)), dpmpp_multistep_weights(h, h1), rtol=1e-12)
    exact = exponential_adams(h, (h1, h2))
    np.testing.assert_allclose(exact, dpmpp_multistep_weights(h, h1, h2, factor=2.0), rtol=1e-11)
    assert not np.allclose(exact, dpmpp_multistep_weights(h, h1, h2, factor=1.0), rtol=1e-4)


# -- DEIS weights ----------------------------------------------------------------------------------------------------
def test_deis_exact_weights_on_edm_are_adams_bashforth_in_sigma():
    """On edm (rho = t) the tAB integral is the variable-step Adams-Bashforth quadrature in t."""
    schedule = get_schedule("edm")
    t_s, t_e = sp.Integer(1), sp.Rational(9, 10)
    nodes = [t_s, sp.Rational(11, 10), sp.Rational(5, 4)]
    exact = exact_time_weights(schedule, t_s, t_e, nodes)
    steps = (t_e - t_s, nodes[0] - nodes[1], nodes[1] - nodes[2])
    assert [sp.nsimplify(c) for c in exact] == [(t_e - t_s) * w for w in adams_bashforth(steps)]
    numeric = gauss_weights(schedule, 1.0, 0.9, [1.0, 1.1, 1.25])
    np.testing.assert_allclose(numeric, [float(c) for c in exact], rtol=1e-13)


def test_deis_riemann_sum_exact_and_numeric_agree():
    schedule = get_schedule("edm")
    nodes = [sp.Integer(1), sp.Rational(11, 10), sp.Rational(6, 5)]
    exact_sum = riemann_weights(schedule, sp.Integer(1), sp.Rational(9, 10), nodes, 1000)
    numeric = riemann_weights(schedule, 1.0, 0.9, [1.0, 1.1, 1.2], 1000)
    np.testing.assert_allclose(numeric, [float(c) for c in exact_sum], rtol=1e-12)
    integral = exact_time_weights(schedule, sp.Integer(1), sp.Rational(9, 10), nodes)
    relative = [abs(float((a - b) / b)) for a, b in zip(exact_sum, integral, strict=True)]
    assert 1e-5 < max(relative) < 1e-2  # the official sum's O(1/num_item) error (docs/findings.md, DEIS)


def test_deis_riemann_has_no_closed_form_on_vp():
    with pytest.raises(NotClosedForm):
        riemann_weights(get_schedule("vp-linear"), sp.Rational(1, 2), sp.Rational(2, 5), [sp.Rational(1, 2)], 10)


# -- UniPC -----------------------------------------------------------------------------------------------------------
def official_unipc(h, rks, variant):
    """uni_pc.py, multistep_uni_pc_bh_update (data prediction): the g recurrence and np.linalg.solve."""
    order = len(rks) + 1
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    ratios = np.array([*rks, 1.0])
    r_matrix = np.stack([ratios ** (j - 1) for j in range(1, order + 1)])
    b, g, factorial = [], math.expm1(hh) / hh - 1.0, 1
    for j in range(1, order + 1):
        b.append(g * factorial / b_h)
        factorial *= j + 1
        g = g / hh - 1.0 / factorial
    rho_p = [0.5] if order == 2 else list(np.linalg.solve(r_matrix[:-1, :-1], b[:-1])) if order > 2 else []
    rho_c = [0.5] if order == 1 else list(np.linalg.solve(r_matrix, b))
    return b_h, rho_p, rho_c, b


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("rks", [[], [-1.0], [-0.7], [-1.0, -2.0], [-0.6, -1.9]])
@pytest.mark.parametrize("h", [0.05, 0.4, 2.0])
def test_unipc_coefficients_match_the_official_code(variant, rks, h):
    b_h, rho_p, rho_c, b = official_unipc(h, rks, variant)
    ours = unipc_coefficients(h, rks, variant)
    assert ours[0] == pytest.approx(b_h, rel=1e-15)
    np.testing.assert_allclose(ours[1], rho_p, rtol=1e-9)
    np.testing.assert_allclose(ours[2], rho_c, rtol=1e-9)
    np.testing.assert_allclose(rhs(h, len(rks) + 1, b_of_h(h, variant)), b, rtol=1e-9)


def test_unipc_rhs_against_the_paper_definition_at_tiny_h():
    """b_j = j! hh phi_{j+1}(hh)/B(h) (Zhao et al. 2023, eq. 8) with mpmath phi: no cancellation at h = 1e-6, where
    the official recurrence has lost most of its digits for j = 3."""
    h = 1e-6
    for variant in ("bh1", "bh2"):
        b_h = b_of_h(h, variant)
        for j, value in enumerate(rhs(h, 3, b_h), start=1):
            reference = float(math.factorial(j) * -h * phi_reference(j + 1, -h) / b_h)
            assert value == pytest.approx(reference, rel=1e-13)


def test_vandermonde_solution_symbolic_and_compiled():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3):
        ratios = [*(-np.cumsum(rng.uniform(0.5, 1.5, n - 1))), 1.0]
        b = list(rng.normal(size=n))
        rho = vandermonde_solution(ratios, b)
        np.testing.assert_allclose(np.vander(ratios, increasing=True).T @ rho, b, rtol=1e-12, atol=1e-14)
    rho = vandermonde_solution([sp.Integer(-1), sp.Integer(1)], [sp.Rational(1, 2), sp.Rational(1, 3)])
    assert rho == [sp.Rational(1, 12), sp.Rational(5, 12)]


def test_step_to_sigma_zero_limits_match_the_official_recurrences():
    """h = inf (a final step to sigma = 0): the official recurrences give finite limits; so must the phi forms."""
    h = math.inf
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    assert data_phis(h) == (phi_1, phi_2, phi_2 / h - 0.5)
    for variant in ("bh1", "bh2"):
        _, _, _, b = official_unipc(h, [-0.5, -1.0], variant)
        assert rhs(h, 3, b_of_h(h, variant)) == pytest.approx(b, abs=0)
