"""UniPC (Zhao et al. 2023): coefficients, identities, NFE, orders of the steps, and the official loop."""

import math

import numpy as np
import pytest
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.unipc import unipc_coefficients


@pytest.fixture(scope="module")
def problem():
    return get_problem("gauss-full-d16")


def start(problem, n=8, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed)).to(torch.float64)


def phi(k, z):
    """phi_k(z) = (e^z - sum_{m<k} z^m/m!)/z^k, written out directly."""
    return (math.exp(z) - sum(z**m / math.factorial(m) for m in range(k))) / z**k


def b_vector(h, order, variant):
    hh = -h
    b_h = hh if variant == "bh1" else math.expm1(hh)
    return [math.factorial(j) * hh * phi(j + 1, hh) / b_h for j in range(1, order + 1)], b_h


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("h", [0.05, 0.3, 1.0, 2.5])
def test_coefficients_against_closed_forms_for_p1_and_p2(variant, h):
    b_h, rho_p, rho_c = unipc_coefficients(h, [], variant)
    assert b_h == (-h if variant == "bh1" else math.expm1(-h))
    assert rho_p == [] and rho_c == [0.5]             # UniC-1: the official simplified rho = 1/2
    r = -0.7
    (b1, b2), _ = b_vector(h, 2, variant)
    b_h, rho_p, rho_c = unipc_coefficients(h, [r], variant)
    assert rho_p == [0.5]                              # UniP-2: rho = [1/2], as stated in the paper and code
    # R = [[1, 1], [r, 1]]: rho_1 = (b1 - b2)/(1 - r), rho_2 = (b2 - r b1)/(1 - r)
    np.testing.assert_allclose(rho_c, [(b1 - b2) / (1 - r), (b2 - r * b1) / (1 - r)], rtol=1e-9)
    assert unipc_coefficients(h, [r], variant, corrector=False)[2] is None


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_coefficients_solve_the_order_conditions(variant):
    """sum_k rho_k r_k^(j-1) = b_j, j = 1 .. p (UniC) and j = 1 .. p-1 (UniP, p = 3), with b_j from phi_{j+1}."""
    h, rks = 0.4, [-0.8, -1.9]
    b, _ = b_vector(h, 3, variant)
    _, rho_p, rho_c = unipc_coefficients(h, rks, variant)
    ratios = [*rks, 1.0]
    for j in range(3):
        assert sum(rho * q**j for rho, q in zip(rho_c, ratios, strict=True)) == pytest.approx(b[j], rel=1e-10)
    for j in range(2):
        assert sum(rho * q**j for rho, q in zip(rho_p, rks, strict=True)) == pytest.approx(b[j], rel=1e-10)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_small_step_limits_are_adams_bashforth_and_adams_moulton(variant):
    """As h -> 0 on a uniform grid (r_k = -k), b_j -> 1/(j+1) and x_t ~ x_s + h(m0 + sum rho_k D_k): the weights on
    the outputs become Adams-Bashforth 3 for UniP-3 and Adams-Moulton 3 and 4 for UniC-2 and UniC-3."""
    h = 1e-3                                # small, with phi_4(hh) well above rounding (eps / h^3)
    def weights(rho, rks, new):             # coefficients of (m_new, m0, m_-1, m_-2) in m0 + sum rho_k D_k
        w = np.zeros(4)
        w[1] = 1.0
        for k, (rho_k, r) in enumerate(zip(rho, rks, strict=False)):
            w[2 + k] += rho_k / r
            w[1] -= rho_k / r
        if new:
            w[0] += rho[-1]
            w[1] -= rho[-1]
        return w
    _, rho_p, rho_c = unipc_coefficients(h, [-1.0, -2.0], variant)
    np.testing.assert_allclose(weights(rho_p, [-1.0, -2.0], False), [0, 23 / 12, -16 / 12, 5 / 12], atol=2e-3)
    np.testing.assert_allclose(weights(rho_c, [-1.0, -2.0], True), [9 / 24, 19 / 24, -5 / 24, 1 / 24], atol=2e-3)
    _, _, rho_c = unipc_coefficients(h, [-1.0], variant)
    np.testing.assert_allclose(weights(rho_c, [-1.0], True), [5 / 12, 8 / 12, -1 / 12, 0], atol=2e-3)


def test_official_defaults_and_claims():
    solver = get_solver("unipc")
    assert solver.config == dict(order=2, variant="bh1", use_corrector=True, lower_order_final=True)
    assert get_solver("unipc-bh2-p3").config == dict(order=3, variant="bh2", use_corrector=True,
                                                     lower_order_final=True)
    assert [get_solver(f"unipc-bh1-p{p}").claimed().order for p in (1, 2, 3)] == [2, 3, 4]
    assert [get_solver(f"unip-bh2-p{p}").claimed().order for p in (1, 2, 3)] == [1, 2, 3]
    with pytest.raises(ValueError, match="variant: expected one of"):
        get_solver("unipc", variant="vary_coeff")
    with pytest.raises(ValueError, match="variant: expected 'bh1' or 'bh2'"):
        unipc_coefficients(0.1, [], "bh3")


@pytest.mark.parametrize("name", ["unip-bh1-p1", "unip-bh2-p1"])
def test_unip_1_without_corrector_is_ddim(problem, name):
    grid = make_grid("edm", problem.schedule, 7, problem.t_min, problem.t_max)
    x = sample(get_solver(name), problem.model(), grid, start(problem))
    for other in ("dpmpp-1", "ddim"):
        torch.testing.assert_close(x, sample(get_solver(other), problem.model(), grid, start(problem)),
                                   rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_corrector_changes_the_result_except_on_the_last_step(problem, p):
    grid = make_grid("uniform-lambda", problem.schedule, 6, problem.t_min, problem.t_max)
    with_c = sample(get_solver(f"unipc-bh2-p{p}"), problem.model(), grid, start(problem))
    without = sample(get_solver(f"unip-bh2-p{p}"), problem.model(), grid, start(problem))
    assert (with_c - without).abs().max().item() > 1e-6
    one_step = grid[[0, -1]]
    torch.testing.assert_close(sample(get_solver(f"unipc-bh2-p{p}"), problem.model(), one_step, start(problem)),
                               sample(get_solver("ddim"), problem.model(), one_step, start(problem)),
                               rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("name", ["unipc-bh1-p3", "unipc-bh2-p2", "unip-bh2-p3"])
def test_one_evaluation_per_step_and_the_official_orders(problem, name):
    """Warm-up 1, 2, ..; lower_order_final at every N (no step threshold in the official UniPC loop)."""
    order = get_solver(name).order
    for steps in (6, 12):
        grid = make_grid("uniform-lambda", problem.schedule, steps, problem.t_min, problem.t_max)
        model = problem.model()
        trace = sample(get_solver(name), model, grid, start(problem), return_trace=True).trace
        # with the corrector a step evaluates at its predicted point (re-used next step); the last step does not
        ahead = 1 if get_solver(name).use_corrector else 0
        assert list(trace["nfe"]) == [min(i + 1 + ahead, steps) for i in range(steps)] and model.nfe == steps
        assert list(trace["order"]) == [min(order, i + 1, steps - i) for i in range(steps)]
        no_final = sample(get_solver(name, lower_order_final=False), problem.model(), grid, start(problem),
                          return_trace=True).trace
        assert list(no_final["order"]) == [min(order, i + 1) for i in range(steps)]


def official_loop(problem, grid, x, order, variant, corrector=True, lower_order_final=True):
    """A transcription of the structure of ``UniPC.sample`` (multistep) and ``multistep_uni_pc_bh_update`` (data
    prediction): lists of past outputs and times, the corrector's evaluation kept as the next model output, no
    corrector on the last step; the coefficients from the phi functions written out directly."""
    model, schedule = problem.model(), problem.schedule
    lam = lambda t: float(schedule.lam(t))  # noqa: E731
    ts = [float(t) for t in grid]
    steps = len(ts) - 1
    t_prev, m_prev = [ts[0]], [model(x, ts[0]).x0]

    def update(x, t, p, use_corrector):
        s, m0 = t_prev[-1], m_prev[-1]
        h = lam(t) - lam(s)
        rks = [(lam(t_prev[-(k + 1)]) - lam(s)) / h for k in range(1, p)]
        d1s = [(m_prev[-(k + 1)] - m0) / rks[k - 1] for k in range(1, p)]
        b, b_h = b_vector(h, p, variant)
        big_r = np.array([[r**j for r in [*rks, 1.0]] for j in range(p)])
        alpha_t, sigma_t, sigma_s = (float(schedule.alpha(t)), float(schedule.sigma(t)), float(schedule.sigma(s)))
        x_base = sigma_t / sigma_s * x - alpha_t * math.expm1(-h) * m0
        rho_p = [0.5] if p == 2 else (np.linalg.solve(big_r[:-1, :-1], b[:-1]) if p > 2 else [])
        x_t = x_base - alpha_t * b_h * sum((rho * d for rho, d in zip(rho_p, d1s, strict=True)), torch.zeros_like(x))
        if not use_corrector:
            return x_t, None
        rho_c = [0.5] if p == 1 else np.linalg.solve(big_r, b)
        model_t = model(x_t, t).x0
        corr = sum((rho * d for rho, d in zip(rho_c[:-1], d1s, strict=True)), torch.zeros_like(x))
        return x_base - alpha_t * b_h * (corr + rho_c[-1] * (model_t - m0)), model_t

    for step in range(1, steps + 1):
        step_order = min(order, step) if step < order else (min(order, steps + 1 - step) if lower_order_final
                                                            else order)
        x, model_x = update(x, ts[step], step_order, corrector and step < steps)
        if step < steps:
            t_prev.append(ts[step])
            m_prev.append(model(x, ts[step]).x0 if model_x is None else model_x)
    assert model.nfe == steps
    return x


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("corrector", [True, False])
@pytest.mark.parametrize("steps", [3, 7])
def test_matches_a_transcription_of_the_official_loop(problem, variant, order, corrector, steps):
    grid = make_grid("edm", problem.schedule, steps, problem.t_min, problem.t_max)   # unequal steps: r_k != -k
    name = f"{'unipc' if corrector else 'unip'}-{variant}-p{order}"
    ours = sample(get_solver(name), problem.model(), grid, start(problem))
    official = official_loop(problem, grid, start(problem), order, variant, corrector)
    torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-12)
    if steps > order:
        ours = sample(get_solver(name, lower_order_final=False), problem.model(), grid, start(problem))
        official = official_loop(problem, grid, start(problem), order, variant, corrector, lower_order_final=False)
        torch.testing.assert_close(ours, official, rtol=1e-12, atol=1e-12)


def test_lower_order_final_accounts_for_the_order_gap_on_gauss_1d():
    """Without the official lower_order_final, UniPC-3 reaches its claimed order 4 against the exact flow; the
    final first-order step that lower_order_final makes is what the recorded findings attribute the gap to."""
    from sdetoolkit.studies import fit_order

    problem = get_problem("gauss-1d")
    x = problem.prior().sample(64, torch.Generator().manual_seed(0))
    reference = problem.distribution.pf_ode_map(x, problem.schedule, problem.t_max, problem.t_min)
    steps = [96, 128, 192, 256, 384, 512, 768, 1024]
    errors, gaps = [], []
    for n in steps:
        grid = make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max)
        free = sample(get_solver("unipc-bh2-p3", lower_order_final=False), problem.model(), grid, x)
        official = sample(get_solver("unipc-bh2-p3"), problem.model(), grid, x)
        errors.append((free - reference).pow(2).mean().sqrt().item())
        gaps.append((official - free).pow(2).mean().sqrt().item())
    assert fit_order([1 / n for n in steps], errors).contains(4)
    assert fit_order([1 / n for n in steps], gaps).contains(2)
