"""SDE-DPM-Solver++ 1/2M/3M, the k-diffusion eta variants and SDE-DPM-Solver: closed forms, identities, truth."""

import math

import pytest
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.exact import propagate
from sdetoolkit.noise import IIDNoise, data_prediction_kernel, gram_factor
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.sde_dpm_solver_pp import eta_data_kernel


@pytest.fixture(scope="module")
def problem():
    return get_problem("gauss-full-d16")


def start(problem, n=8, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed)).to(torch.float64)


def reference_run(problem, grid, x, seed, orders, eta, solver_type, third, s_noise=1.0):
    """The k-diffusion / diffusers updates written out (VP form), with the step normals of IIDNoise(seed)."""
    sch, model = problem.schedule, problem.model()
    ts = [float(t) for t in grid]
    lam = [float(sch.lam(t)) for t in ts]
    al = [float(sch.alpha(t)) for t in ts]
    si = [float(sch.sigma(t)) for t in ts]
    outs, xs = [], [x]
    for i, order in enumerate(orders):
        outs.append(model(xs[-1], ts[i]).x0)
        h = lam[i + 1] - lam[i]
        h_eta = h * (eta + 1)
        y = si[i + 1] / si[i] * math.exp(-eta * h) * xs[-1] + (-math.expm1(-h_eta)) * al[i + 1] * outs[-1]
        if order >= 2:
            r = (lam[i] - lam[i - 1]) / h
            d = (outs[-1] - outs[-2]) / r
            if order == 2 and solver_type == "midpoint":
                y = y + 0.5 * (-math.expm1(-h_eta)) * al[i + 1] * d
            elif order == 2:
                y = y + ((-math.expm1(-h_eta)) / (-h_eta) + 1) * al[i + 1] * d
            else:
                r0, r1 = r, (lam[i - 1] - lam[i - 2]) / h
                d1_0, d1_1 = d, (outs[-2] - outs[-3]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                if third == "k-diffusion":
                    y = y + al[i + 1] * (phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2)
                else:   # diffusers, eta = 1
                    y = y + al[i + 1] * ((1 - math.exp(-2 * h)) / (-2 * h) + 1) * d1
                    y = y + al[i + 1] * ((1 - math.exp(-2 * h) - 2 * h) / (2 * h) ** 2 - 0.5) * d2
        if eta:
            z = IIDNoise(seed).normal(ts[i], ts[i + 1], x)
            y = y + z * si[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise
        xs.append(y)
    return torch.stack(xs)


CASES = [("sde-dpmpp-1", {}, [1] * 6, "midpoint", "diffusers"),
         ("sde-dpmpp-2m", {}, [1, 2, 2, 2, 2, 1], "midpoint", "diffusers"),
         ("sde-dpmpp-2m-heun", {}, [1, 2, 2, 2, 2, 1], "heun", "diffusers"),
         ("sde-dpmpp-3m", {}, [1, 2, 3, 3, 2, 1], "midpoint", "diffusers"),
         ("dpmpp-2m-sde", {}, [1, 2, 2, 2, 2, 2], "midpoint", "k-diffusion"),
         ("dpmpp-2m-sde", dict(eta=0.5, s_noise=0.7), [1, 2, 2, 2, 2, 2], "midpoint", "k-diffusion"),
         ("dpmpp-2m-sde-heun", dict(eta=0.3), [1, 2, 2, 2, 2, 2], "heun", "k-diffusion"),
         ("dpmpp-3m-sde", {}, [1, 2, 3, 3, 3, 3], "heun", "k-diffusion"),
         ("dpmpp-3m-sde", dict(eta=0.5), [1, 2, 3, 3, 3, 3], "heun", "k-diffusion")]


@pytest.mark.parametrize("name, params, orders, solver_type, third", CASES)
def test_every_step_matches_the_official_update(problem, name, params, orders, solver_type, third):
    """Each step of a 6-step run equals diffusers' / k-diffusion's update written independently, same normals."""
    grid = make_grid("uniform-lambda", problem.schedule, 6, problem.t_min, problem.t_max)
    x = start(problem)
    run = sample(get_solver(name, **params), problem.model(), grid, x, IIDNoise(5), return_trace=True,
                 return_trajectory=True)
    assert list(run.trace["order"]) == orders
    expected = reference_run(problem, grid, x, 5, orders, params.get("eta", 1.0), solver_type, third,
                             params.get("s_noise", 1.0))
    torch.testing.assert_close(run.trajectory, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.05])
def test_eta_kernel_has_the_closed_form_variance(problem, eta):
    """int K_eta^2 over [t, s] = e^(2 eta lam_t) - e^(2 eta lam_s): noise variance sigma_t^2 (1 - e^(-2 eta h))."""
    sch = problem.schedule
    lo, hi = torch.tensor([0.05, 0.3], dtype=torch.float64), torch.tensor([0.2, 0.9], dtype=torch.float64)
    factor = gram_factor([eta_data_kernel(sch, eta)], lo, hi)[:, 0, 0]
    expected = torch.exp(2 * eta * sch.lam(lo)) - torch.exp(2 * eta * sch.lam(hi))
    torch.testing.assert_close(factor**2, expected, rtol=1e-12, atol=0)
    assert eta_data_kernel(sch, 1.0) == data_prediction_kernel(sch)
    with pytest.raises(ValueError, match="eta > 0"):
        eta_data_kernel(sch, 0.0)


@pytest.mark.parametrize("names", [("sde-dpmpp-1", "seeds-1-data", "ddim-eta", "dpmpp-2m-sde"),
                                   ("sde-dpm-solver-1", "seeds-1-noise")])
def test_first_order_identities_on_the_same_noise(problem, names):
    """SDE-DPM-Solver++1 = SEEDS-1 (data) = DDIM(eta = 1) (and 2M-SDE on a one-step grid); SDE-DPM-Solver-1 =
    SEEDS-1 (noise)."""
    grid = make_grid("edm", problem.schedule, 9, problem.t_min, problem.t_max)
    ref = sample(get_solver(names[0]), problem.model(), grid, start(problem), IIDNoise(2))
    for other in names[1:]:
        g = grid[[0, -1]] if other == "dpmpp-2m-sde" else grid
        r = ref if other != "dpmpp-2m-sde" else sample(get_solver(names[0]), problem.model(), g, start(problem),
                                                       IIDNoise(2))
        torch.testing.assert_close(sample(get_solver(other), problem.model(), g, start(problem), IIDNoise(2)), r,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, ode", [("dpmpp-2m-sde", dict(name="dpmpp-2m")),
                                       ("dpmpp-2m-sde-heun", dict(name="dpmpp-2m-heun")),
                                       ("dpmpp-3m-sde", dict(name="dpmpp-3m", solver_type="heun")),
                                       ("sde-dpmpp-3m", None)])
def test_eta_zero_is_the_ode_solver(problem, name, ode):
    """eta = 0 removes the noise and gives DPM-Solver++(2M / 3M) as officially coded (3M-SDE warms up with heun)."""
    grid = make_grid("uniform-lambda", problem.schedule, 12, problem.t_min, problem.t_max)
    if ode is None:
        with pytest.raises(ValueError, match="eta = 1 only"):
            get_solver(name, eta=0.0)
        return
    solver = get_solver(name, eta=0.0)
    assert not solver.stochastic
    params = {k: v for k, v in ode.items() if k != "name"}
    expected = sample(get_solver(ode["name"], lower_order_final=False, **params), problem.model(), grid,
                      start(problem))
    torch.testing.assert_close(sample(solver, problem.model(), grid, start(problem), IIDNoise(0)), expected,
                               rtol=1e-12, atol=1e-12)


def test_final_step_to_sigma_zero_denoises():
    problem = get_problem("gauss-diag-d1024")
    grid = make_grid("edm", problem.schedule, 5, 0.0, problem.t_max)
    x = start(problem, 2)
    for name in ("sde-dpmpp-3m", "dpmpp-2m-sde", "sde-dpm-solver-2m"):
        run = sample(get_solver(name), problem.model(), grid, x, IIDNoise(1), return_trajectory=True)
        torch.testing.assert_close(run.x, problem.model()(run.trajectory[-2], float(grid[-2])).x0,
                                   rtol=1e-12, atol=1e-12)


def moment_z_scores(name, steps, n=20000, seed=0, **params):
    """z-scores of sample mean and variance on gauss-1d against the exact marginal at t_min (Gaussian standard
    errors), after checking from the exact output law that the discretisation bias is below 0.5 standard errors."""
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, steps, problem.t_min, problem.t_max)
    target = problem.target()
    m, v = float(target.mean()[0]), float(target.covariance()[0, 0])
    se_m, se_v = math.sqrt(v / n), v * math.sqrt(2 / (n - 1))
    law = propagate(get_solver(name, **params), problem.distribution, problem.schedule, grid)
    assert abs(float(law.mean[0]) - m) < 0.5 * se_m and abs(float(law.variances[0]) - v) < 0.5 * se_v
    x = problem.prior().sample(n, torch.Generator().manual_seed(seed)).to(torch.float64)
    y = sample(get_solver(name, **params), problem.model(), grid, x, IIDNoise(seed + 1))[:, 0]
    return (float(y.mean()) - m) / se_m, (float(y.var()) - v) / se_v


@pytest.mark.parametrize("name, steps, params", [("sde-dpmpp-2m", 200, {}), ("dpmpp-3m-sde", 200, {}),
                                                 ("dpmpp-2m-sde", 200, dict(eta=0.5)),
                                                 ("sde-dpm-solver-2m", 200, {})])
def test_output_moments_converge_to_the_truth(name, steps, params):
    z_mean, z_var = moment_z_scores(name, steps, **params)
    assert abs(z_mean) < 4.5 and abs(z_var) < 4.5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sde-dpmpp-1", "sde-dpmpp-3m"])
def test_output_moments_converge_to_the_truth_slow(name):
    z_mean, z_var = moment_z_scores(name, 2000)
    assert abs(z_mean) < 4.5 and abs(z_var) < 4.5
