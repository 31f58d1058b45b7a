"""Restart sampling: faithfulness to the official restart_sampler (written here from
Newbeeer/diffusion_restart_sampling's generate_restart.py), NFE accounting, reductions, convergence on gauss-1d."""

import math

import pytest
import torch
from stochastic_helpers import CallOrderNoise, gauss_1d_edm, karras

from sdetoolkit import get_problem, make_grid
from sdetoolkit.exact import propagate
from sdetoolkit.grids import explicit
from sdetoolkit.noise import BrownianPath, IIDNoise
from sdetoolkit.solvers import get_solver, sample


def official_restart(model, t_steps, x, restarts, noise, s_noise, gamma, s_min, s_max):
    """restart_sampler with S_churn = 0 (main loop Heun, no correction on the last step) on the edm schedule."""
    n = len(t_steps) - 1
    attach = {min(range(len(t_steps)), key=lambda j: abs(t_steps[j] - v[2])): v for v in restarts}
    den = lambda x, t: model(x, t).x0  # noqa: E731
    for i in range(n):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        d_cur = (x - den(x, t_cur)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if i < n - 1:
            x_next = x + (t_next - t_cur) * 0.5 * (d_cur + (x_next - den(x_next, t_next)) / t_next)
        x = x_next
        if i + 1 in attach:
            n_restart, k, _, t_max = attach[i + 1]
            for _ in range(k):
                new = karras(t_max, t_steps[i + 1], n_restart)
                x = x + noise.normal(new[0], new[-1], x) * math.sqrt(new[0] ** 2 - new[-1] ** 2) * s_noise
                for j in range(n_restart - 1):
                    t_cur, t_next = new[j], new[j + 1]
                    g = gamma if s_min <= t_cur <= s_max else 0
                    t_hat = t_cur + g * t_cur
                    x_hat = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * (noise.normal(t_cur, t_cur, x) if g
                                                                              else 0.0)
                    d_cur = (x_hat - den(x_hat, t_hat)) / t_hat
                    x = x_hat + (t_next - t_hat) * d_cur
                    if j < n_restart - 2 or new[-1] != 0:
                        x = x_hat + (t_next - t_hat) * 0.5 * (d_cur + (x - den(x, t_next)) / t_next)
    return x


CONFIGS = [
    dict(),
    dict(restarts=((3, 2, 0.14, 0.30), (4, 1, 1.09, 1.92)), s_noise=1.0),
    dict(restarts=((4, 3, 0.06, 0.30),), restart_gamma=0.0),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_restart_is_the_official_sampler(config):
    """Official 18-step EDM grid (Karras 80 -> 0.002, then 0) on the edm schedule, same normals in the same order."""
    problem = gauss_1d_edm()
    t_steps = [*karras(80.0, 0.002, 18), 0.0]
    x = problem.prior().sample(16, torch.Generator().manual_seed(0))
    solver = get_solver("restart", **config)
    model = problem.model()
    out = sample(solver, model, explicit(problem.schedule, t_steps), x, CallOrderNoise(1))
    assert model.nfe == solver.expected_nfe(explicit(problem.schedule, t_steps))
    cfg = solver.config
    ref = official_restart(problem.model(), t_steps, x, cfg["restarts"], CallOrderNoise(1), cfg["s_noise"],
                           cfg["restart_gamma"], cfg["s_min"], cfg["s_max"])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_jump_is_the_closed_form_std_times_the_step_normal_with_iid_noise():
    """One restart loop of one inner step with gamma = 0: the jump's noise is
    sqrt(t_max^2 - t_min^2) S_noise z with z = IIDNoise.normal on [t_min, t_max]."""
    problem = gauss_1d_edm()
    grid = explicit(problem.schedule, [1.0, 0.5])
    x = torch.zeros(64, 1, dtype=torch.float64)
    solver = get_solver("restart", restarts=((2, 1, 0.5, 2.0),), restart_gamma=0.0, s_noise=1.0)
    with_restart = sample(solver, problem.model(), grid, x, IIDNoise(2))
    main = sample(get_solver("edm-heun"), problem.model(), grid, x)
    z = IIDNoise(2).normal(2.0, 0.5, x)
    jumped = main + math.sqrt(2.0**2 - 0.5**2) * z
    model = problem.model()
    d = (jumped - model(jumped, 2.0).x0) / 2.0
    euler = jumped + (0.5 - 2.0) * d
    expected = jumped + (0.5 - 2.0) * 0.5 * (d + (euler - model(euler, 0.5).x0) / 0.5)
    torch.testing.assert_close(with_restart, expected, rtol=1e-12, atol=1e-12)


def test_nfe_accounting_and_attachment_rules():
    problem = gauss_1d_edm()
    grid = explicit(problem.schedule, [*karras(80.0, 0.002, 18), 0.0])
    two = get_solver("restart", restarts=((3, 2, 0.06, 0.30), (4, 1, 1.09, 1.92)))
    assert two.expected_nfe(grid) == (2 * 18 - 1) + 2 * 2 * 2 + 1 * 3 * 2
    replaced = get_solver("restart", restarts=((3, 2, 0.06, 0.30), (5, 1, 0.07, 0.30)))
    assert replaced.expected_nfe(grid) == 35 + 4 * 2
    at_start = get_solver("restart", restarts=((3, 2, 80.0, 90.0),))
    assert at_start.expected_nfe(grid) == 35
    model = problem.model()
    sample(two, model, grid, problem.prior().sample(2), IIDNoise(0))
    assert model.nfe == 49


def test_no_restart_is_edm_heun():
    problem = get_problem("gauss-1d")
    grid = make_grid("edm", problem.schedule, 12, problem.t_min, problem.t_max)
    x = problem.prior().sample(8, torch.Generator().manual_seed(0))
    for config in (dict(restarts=()), dict(restarts=((3, 0, 0.06, 0.3),))):
        out = sample(get_solver("restart", **config), problem.model(), grid, x, IIDNoise(0))
        torch.testing.assert_close(out, sample(get_solver("edm-heun"), problem.model(), grid, x), rtol=0, atol=0)


def test_repetitions_on_a_brownian_path_draw_independent_consistent_jumps():
    """Repetition k reads copy k of the path over the restart interval: the copies differ from each other, the same
    copy is the same on every request, and K = 2 runs on one path are reproducible."""
    problem = get_problem("gauss-1d")
    grids = [make_grid("edm", problem.schedule, n, problem.t_min, problem.t_max) for n in (8, 16)]
    x = problem.prior().sample(4, torch.Generator().manual_seed(0))
    twice = get_solver("restart", restarts=((3, 2, 0.06, 0.3),))
    path = BrownianPath.covering(twice, problem.model(), grids, seed=0)
    t_hi, t_lo = float(path.times[-1]), float(path.times[0])
    first, second, again = (path.integrals(t_hi, t_lo, [None], x, copy=c)[0] for c in (0, 1, 1))
    assert not torch.allclose(first, second) and torch.equal(second, again)
    runs = [sample(twice, problem.model(), grids[0], x, path) for _ in range(2)]
    assert torch.isfinite(runs[0]).all() and torch.equal(*runs)
    once = sample(get_solver("restart", restarts=((3, 1, 0.06, 0.3),)), problem.model(), grids[0], x, path)
    assert not torch.allclose(runs[0], once)


def test_claims_none_and_rejects_bad_parameters():
    claim = get_solver("restart").claimed()
    assert claim.order is None and claim.kind == "none" and "W1" in claim.source
    for bad in (dict(restarts=((1, 2, 0.1, 0.3),)), dict(restarts=((3, 2, 0.3, 0.1),)), dict(s_noise=-1.0),
                dict(restarts=((3, 2.5, 0.1, 0.3),))):
        with pytest.raises(ValueError):
            get_solver("restart", **bad)


def test_output_moments_match_the_exact_marginal_on_gauss_1d():
    """S_noise = 1, no churn, 40 inner points: Restart's loop then preserves the marginal up to discretisation.
    N = 20000 at 72 main steps; the bias, from the exact-moment engine, is below half a standard error; |z| < 4."""
    problem = get_problem("gauss-1d")
    grid = make_grid("edm", problem.schedule, 72, problem.t_min, problem.t_max)
    solver = get_solver("restart", restarts=((40, 2, 0.06, 0.30),), s_noise=1.0, restart_gamma=0.0)
    n = 20000
    target = problem.target()
    mean, var = float(target.mean()), float(target.covariance())
    law = propagate(solver, problem.distribution, problem.schedule, grid)
    assert abs(float(law.variances[0]) - var) < 0.5 * var * math.sqrt(2 / (n - 1))
    x = problem.prior().sample(n, torch.Generator().manual_seed(21))
    y = sample(solver, problem.model(), grid, x, IIDNoise(22))[:, 0]
    assert abs(float(y.mean()) - mean) < 4 * math.sqrt(var / n)
    assert abs(float(y.var()) - var) < 4 * var * math.sqrt(2 / (n - 1))
