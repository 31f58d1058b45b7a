"""PNDM (F-PNDM, S-PNDM) and PLMS: coefficients, NFE, the DDIM transfer, and agreement with the official loops."""

import itertools
import math
from fractions import Fraction

import pytest
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.pndm import ADAMS_BASHFORTH, transfer


@pytest.fixture(scope="module")
def problem():
    return get_problem("gauss-full-d16")


def start(problem, n=6, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed))


def grid(problem, steps, kind="uniform-lambda"):
    return make_grid(kind, problem.schedule, steps, problem.t_min, problem.t_max)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_adams_bashforth_coefficients_have_their_order(order):
    """Equal steps: sum_j b_j (-j)^m = 1/(m + 1) for m < order (exact for polynomials of degree < order)."""
    exact = {1: [1], 2: [3, -1], 3: [23, -16, 5], 4: [55, -59, 37, -9]}[order]
    denominator = {1: 1, 2: 2, 3: 12, 4: 24}[order]
    b = [Fraction(c, denominator) for c in exact]
    assert ADAMS_BASHFORTH[order] == tuple(float(c) for c in b)
    for m in range(order):
        assert sum(c * Fraction(-j) ** m for j, c in enumerate(b)) == Fraction(1, m + 1)
    assert sum(c * Fraction(-j) ** order for j, c in enumerate(b)) != Fraction(1, order + 1)


def test_transfer_is_the_official_formula(problem):
    """PNDM's ``transfer`` (a = alpha^2),
    x + (a' - a)(x / (sqrt a (sqrt a + sqrt a')) - e / (sqrt a (sqrt((1-a')a) + sqrt((1-a)a')))), is the DDIM step."""
    model = problem.model()
    x = start(problem)
    t, t_next = 0.7, 0.45
    state = type("S", (), {"alpha": lambda self, s: float(model.schedule.alpha(s)),
                           "sigma": lambda self, s: float(model.schedule.sigma(s))})()
    eps = model(x, t).eps
    a, a_next = state.alpha(t) ** 2, state.alpha(t_next) ** 2
    official = x + (a_next - a) * (x / (math.sqrt(a) * (math.sqrt(a) + math.sqrt(a_next)))
                                   - eps / (math.sqrt(a) * (math.sqrt((1 - a_next) * a) + math.sqrt((1 - a) * a_next))))
    torch.testing.assert_close(transfer(state, x, t, t_next, eps), official, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, nfe", [
    ("pndm-f", lambda n: 4 * min(n, 3) + max(n - 3, 0)),
    ("pndm-s", lambda n: n + 1),
    ("plms", lambda n: n + 1 if n >= 2 else 1),
])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 9])
def test_nfe_of_the_warm_up(problem, name, nfe, steps):
    model = problem.model()
    sample(get_solver(name), model, grid(problem, steps), start(problem))
    assert model.nfe == nfe(steps) == get_solver(name).expected_nfe(grid(problem, steps))


def test_trace_shows_the_warm_up(problem):
    f = sample(get_solver("pndm-f"), problem.model(), grid(problem, 6), start(problem), return_trace=True).trace
    assert list(f["nfe"]) == [4, 8, 12, 13, 14, 15] and list(f["order"]) == [4] * 6
    plms = sample(get_solver("plms"), problem.model(), grid(problem, 6), start(problem), return_trace=True).trace
    assert list(plms["nfe"]) == [2, 3, 4, 5, 6, 7] and list(plms["order"]) == [1, 2, 3, 4, 4, 4]


def test_plms_with_one_step_is_ddim_and_s_pndm_is_not(problem):
    g = grid(problem, 1)
    ddim = sample(get_solver("ddim"), problem.model(), g, start(problem))
    torch.testing.assert_close(sample(get_solver("plms"), problem.model(), g, start(problem)), ddim, rtol=1e-13,
                               atol=1e-13)
    assert (sample(get_solver("pndm-s"), problem.model(), g, start(problem)) - ddim).abs().max() > 1e-6


def test_plms_and_f_pndm_share_the_four_step_formula_but_not_the_warm_up(problem):
    g = grid(problem, 8)
    plms = sample(get_solver("plms"), problem.model(), g, start(problem))
    f_pndm = sample(get_solver("pndm-f"), problem.model(), g, start(problem))
    assert (plms - f_pndm).abs().max() > 1e-8


# -- transcriptions of the official loops, driven on the analytic model in continuous time ----------------------------
def official_transfer(model, x, t, t_next, eps):
    a, a_next = float(model.schedule.alpha(t)) ** 2, float(model.schedule.alpha(t_next)) ** 2
    return x + (a_next - a) * (x / (math.sqrt(a) * (math.sqrt(a) + math.sqrt(a_next)))
                               - eps / (math.sqrt(a) * (math.sqrt((1 - a_next) * a) + math.sqrt((1 - a) * a_next))))


def official_pndm(model, times, x, method):
    """``runner/method.py``: gen_order_4 (runge_kutta) or gen_order_2 (improved_eular), one ``ets`` list."""
    ets = []
    eps = lambda y, s: model(y, s).eps  # noqa: E731
    for t, t_next in zip(times[:-1].tolist(), times[1:].tolist(), strict=True):
        if method == "F-PNDM" and len(ets) > 2:
            ets.append(eps(x, t))
            noise = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        elif method == "F-PNDM":
            mid = (t + t_next) / 2
            e_1 = eps(x, t)
            ets.append(e_1)
            e_2 = eps(official_transfer(model, x, t, mid, e_1), mid)
            e_3 = eps(official_transfer(model, x, t, mid, e_2), mid)
            e_4 = eps(official_transfer(model, x, t, t_next, e_3), t_next)
            noise = (e_1 + 2 * e_2 + 2 * e_3 + e_4) / 6
        elif len(ets) > 0:
            ets.append(eps(x, t))
            noise = 0.5 * (3 * ets[-1] - ets[-2])
        else:
            e_1 = eps(x, t)
            ets.append(e_1)
            noise = (e_1 + eps(official_transfer(model, x, t, t_next, e_1), t_next)) / 2
        x = official_transfer(model, x, t, t_next, noise)
    return x


def diffusers_plms(model, times, x):
    """``PNDMScheduler`` with skip_prk_steps: the timestep list repeats times[1]; step_plms with its counter."""
    times = times.tolist()
    n = len(times) - 1
    calls = [times[0]] if n == 1 else [times[0], times[1], *times[1:-1]]
    next_of = dict(itertools.pairwise(times))
    ets, counter, cur_sample = [], 0, None
    for timestep in calls:
        output = model(x, timestep).eps
        prev_timestep = next_of[timestep]
        if counter != 1:
            ets = [*ets[-3:], output]
        else:
            prev_timestep, timestep = timestep, times[0]
        sample_ = x
        if len(ets) == 1 and counter == 0:
            cur_sample = x
        elif len(ets) == 1 and counter == 1:
            output = (output + ets[-1]) / 2
            sample_, cur_sample = cur_sample, None
        elif len(ets) == 2:
            output = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            output = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            output = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        x = official_transfer(model, sample_, timestep, prev_timestep, output)
        counter += 1
    return x


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("kind", ["uniform-lambda", "uniform-t"])
def test_agreement_with_the_official_loops(problem, steps, kind):
    g = grid(problem, steps, kind)
    x = start(problem)
    for name, reference in [("pndm-f", official_pndm(problem.model(), g, x, "F-PNDM")),
                            ("pndm-s", official_pndm(problem.model(), g, x, "S-PNDM")),
                            ("plms", diffusers_plms(problem.model(), g, x))]:
        # the official algebraic form of the transfer cancels digits near t = 1 (alpha^2 ~ 4e-5): relative tolerance
        torch.testing.assert_close(sample(get_solver(name), problem.model(), g, x), reference, rtol=1e-11,
                                   atol=1e-11 * (1 + reference.abs().max().item()), msg=name)
