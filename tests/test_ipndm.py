"""iPNDM and iPNDM-v in the EDM form: coefficients, identities, NFE, and agreement with the official loops."""

import itertools
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sdetoolkit import get_problem, make_grid
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.ipndm import ipndm_v_coefficients
from sdetoolkit.solvers.pndm import ADAMS_BASHFORTH


@pytest.fixture(scope="module")
def problem():
    return get_problem("gauss-full-d16")


def start(problem, n=6, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed))


def grid(problem, steps, kind="uniform-lambda"):
    return make_grid(kind, problem.schedule, steps, problem.t_min, problem.t_max)


def uniform_sigma_grid(problem, steps, s_max=20.0, s_min=0.5):
    """A grid uniform in sigma~ = sigma/alpha, the variable iPNDM steps in."""
    sigmas = torch.linspace(s_max, s_min, steps + 1, dtype=torch.float64)
    return problem.schedule.t_of_lambda(-torch.log(sigmas))


def integration_error(coefficients, steps, degree):
    """h_0 sum_j c_j p(s_{-j}) - int_{s_0}^{s_0 + h_0} p for p(s) = s^degree, with s_0 = 0 and past points behind it."""
    points = [Fraction(0)]
    for h in steps[1:]:
        points.append(points[-1] - h)
    quadrature = steps[0] * sum(c * p**degree for c, p in zip(coefficients, points, strict=False))
    return quadrature - steps[0] ** (degree + 1) / (degree + 1)


def test_equal_steps_orders_1_to_3_are_adams_bashforth_and_order_4_is_not():
    """The official ipndm_v formulas reduce to [1], [3, -1]/2, [23, -16, 5]/12 on equal steps, but order 4 gives
    (57, -65, 43, -11)/24, not (55, -59, 37, -9)/24: only exact for quadratics, i.e. third order."""
    for order in (1, 2, 3):
        coefficients = ipndm_v_coefficients((Fraction(-1),) * order)
        assert tuple(float(c) for c in coefficients) == ADAMS_BASHFORTH[order]
    fourth = ipndm_v_coefficients((Fraction(-1),) * 4)
    assert fourth == tuple(Fraction(c, 24) for c in (57, -65, 43, -11))
    equal = (Fraction(1),) * 4
    assert [integration_error(fourth, equal, degree) == 0 for degree in range(4)] == [True, True, True, False]
    assert all(integration_error(ADAMS_BASHFORTH_EXACT[4], equal, degree) == 0 for degree in range(4))


ADAMS_BASHFORTH_EXACT = {4: tuple(Fraction(c, 24) for c in (55, -59, 37, -9))}

ratios = st.fractions(min_value=Fraction(1, 4), max_value=Fraction(4), max_denominator=50)


@given(ratios, ratios, ratios)
def test_variable_step_coefficients_on_unequal_steps(r1, r2, r3):
    """As coded: order 2 is the exact variable-step Adams-Bashforth 2 (exact for linears); order 3 sums to 1 and is
    exact for linears, but for quadratics only when h2/h1 = r^2 + r - 1 with r = h0/h1 (equal steps among them);
    order 4 sums to 1 only when h1/h2 = h2/h3 (locally geometric steps, e.g. uniform in lambda), so on other unequal
    steps it is not even consistent. Only ratios enter: the steps' sign does not matter."""
    steps = (Fraction(1), r1, r1 * r2, r1 * r2 * r3)      # h_0, h_1, h_2, h_3 (most recent first)
    for order in (1, 2, 3, 4):
        coefficients = ipndm_v_coefficients(steps[:order])
        assert ipndm_v_coefficients(tuple(-h for h in steps[:order])) == coefficients
    second, third, fourth = (ipndm_v_coefficients(steps[:order]) for order in (2, 3, 4))
    assert [integration_error(second, steps[:2], d) == 0 for d in range(3)] == [True, True, r1 == 1]
    assert integration_error(third, steps[:3], 0) == 0 and integration_error(third, steps[:3], 1) == 0
    r = 1 / r1
    assert (integration_error(third, steps[:3], 2) == 0) == (r2 == r**2 + r - 1)
    assert (sum(fourth) == 1) == (r2 == r3)


def test_worked_cases_of_the_variable_step_formulas():
    """Steps (1, 1, 2): order 3 misses s^2 by 1/2. Steps (1, 1, 1, 2): order-4 coefficients sum to 1 - 11/96.
    Geometric steps (1, 1/2, 1/4, 1/8): order 4 sums to 1 but misses s^2 by -9/16 (a variable-step AB4 has none)."""
    steps = (Fraction(1), Fraction(1), Fraction(2))
    assert integration_error(ipndm_v_coefficients(steps), steps, 2) == Fraction(1, 2)
    assert sum(ipndm_v_coefficients((Fraction(1), Fraction(1), Fraction(1), Fraction(2)))) == 1 - Fraction(11, 96)
    geometric = tuple(Fraction(1, 2**k) for k in range(4))
    assert integration_error(ipndm_v_coefficients(geometric), geometric, 2) == Fraction(-9, 16)


@pytest.mark.parametrize("max_order", [1, 2, 3])
def test_ipndm_v_equals_ipndm_on_steps_uniform_in_sigma_up_to_order_3(problem, max_order):
    g = uniform_sigma_grid(problem, 9)
    a = sample(get_solver("ipndm", max_order=max_order), problem.model(), g, start(problem))
    b = sample(get_solver("ipndm-v", max_order=max_order), problem.model(), g, start(problem))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_ipndm_v_differs_from_ipndm_at_order_4_even_on_uniform_steps(problem):
    g = uniform_sigma_grid(problem, 9)
    a = sample(get_solver("ipndm"), problem.model(), g, start(problem))
    b = sample(get_solver("ipndm-v"), problem.model(), g, start(problem))
    assert (a - b).abs().max().item() > 1e-6
    short = uniform_sigma_grid(problem, 3)     # order 4 is first used on step 3: three steps agree
    torch.testing.assert_close(sample(get_solver("ipndm"), problem.model(), short, start(problem)),
                               sample(get_solver("ipndm-v"), problem.model(), short, start(problem)), rtol=1e-12,
                               atol=1e-12)


def test_ipndm_v_differs_from_ipndm_on_non_uniform_steps(problem):
    g = grid(problem, 6)
    a = sample(get_solver("ipndm", max_order=2), problem.model(), g, start(problem))
    b = sample(get_solver("ipndm-v", max_order=2), problem.model(), g, start(problem))
    assert (a - b).abs().max().item() > 1e-6


@pytest.mark.parametrize("name", ["ipndm", "ipndm-v"])
def test_order_1_is_ddim(problem, name):
    g = make_grid("edm", problem.schedule, 7, problem.t_min, problem.t_max)
    torch.testing.assert_close(sample(get_solver(name, max_order=1), problem.model(), g, start(problem)),
                               sample(get_solver("ddim"), problem.model(), g, start(problem)), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["ipndm", "ipndm-v"])
def test_nfe_warm_up_and_claim(problem, name):
    result = sample(get_solver(name), problem.model(), grid(problem, 6), start(problem), return_trace=True)
    assert list(result.trace["order"]) == [1, 2, 3, 4, 4, 4] and list(result.trace["nfe"]) == [1, 2, 3, 4, 5, 6]
    assert get_solver(name).claimed().order == 4 and get_solver(name, max_order=2).claimed().order == 2
    assert get_solver(name).describe()["citation"] != ""


@pytest.mark.parametrize("name", ["ipndm", "ipndm-v"])
def test_step_to_sigma_zero(name):
    """The final step of an EDM grid to sigma = 0 needs no evaluation there and stays finite."""
    problem = get_problem("gauss-diag-d1024")
    g = make_grid("edm", problem.schedule, 6, 0.0, problem.t_max)
    model = problem.model()
    x = sample(get_solver(name), model, g, start(problem, 4))
    assert model.nfe == 6 and bool(torch.isfinite(x).all())


# -- a transcription of the official loops (diff-sampler ipndm_sampler / ipndm_v_sampler), in sigma~ and x~ -----------
def official_ipndm(model, times, x, max_order=4, variable=False):
    sched = model.schedule
    t_steps = [float(sched.sigma_over_alpha(t)) for t in times.tolist()]
    x_next = x / float(sched.alpha(float(times[0])))
    buffer_model = []
    for i, (t_cur, t_next) in enumerate(itertools.pairwise(t_steps)):
        x_cur = x_next
        time = float(times[i])
        denoised = model(float(sched.alpha(time)) * x_cur, time).x0
        d_cur = (x_cur - denoised) / t_cur
        order = min(max_order, i + 1)
        h = [t_next - t_cur] + [t_steps[i - k] - t_steps[i - k - 1] for k in range(order - 1)]
        if variable:
            coefficients = ipndm_v_coefficients(tuple(h))
        else:
            coefficients = {1: (1,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12),
                            4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}[order]
        slopes = [d_cur, *buffer_model[::-1][:order - 1]]
        x_next = x_cur + (t_next - t_cur) * sum(c * s for c, s in zip(coefficients, slopes, strict=True))
        if len(buffer_model) == max_order - 1 and max_order > 1:
            buffer_model = [*buffer_model[1:], d_cur]
        elif max_order > 1:
            buffer_model.append(d_cur)
    return x_next * float(sched.alpha(float(times[-1])))


@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
@pytest.mark.parametrize("name", ["ipndm", "ipndm-v"])
def test_agreement_with_the_official_loops(problem, name, max_order):
    g = make_grid("edm", problem.schedule, 8, problem.t_min, problem.t_max)
    x = start(problem)
    reference = official_ipndm(problem.model(), g, x, max_order, variable=name == "ipndm-v")
    torch.testing.assert_close(sample(get_solver(name, max_order=max_order), problem.model(), g, x), reference,
                               rtol=1e-11, atol=1e-11 * (1 + reference.abs().max().item()))
    assert math.isfinite(reference.abs().max().item())
