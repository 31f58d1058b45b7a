"""The all-solvers matrix: construction, declared NFE, determinism, dtype, bad parameters, corner-case grids."""

import pytest
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import IIDNoise
from sdetoolkit.solvers import DivergenceError, Solver, get_solver, list_solvers, sample
from sdetoolkit.solvers.base import Claim

SOLVERS = list_solvers()
DETERMINISTIC = [name for name in SOLVERS if not get_solver(name).stochastic]


def noise_for(name, seed=0):
    """A seeded noise source for a stochastic solver, None for a deterministic one."""
    return IIDNoise(seed) if get_solver(name).stochastic else None


@pytest.fixture(scope="module")
def problem():
    return get_problem("gauss-full-d16")


def start(problem, n=8, seed=0, dtype=torch.float64):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("name", SOLVERS)
def test_construction_and_description(name):
    solver = get_solver(name)
    info = solver.describe()
    assert info["name"] == name and info["family"] and info["parameterisation"] in ("x0", "eps", "v", "score")
    assert isinstance(solver.claimed(), Claim) and solver.claimed().source
    assert set(info["params"]) == set(type(solver).params)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_corner_case_grids_stay_finite_and_use_the_declared_nfe(problem, name, steps):
    """N smaller than the order and N mod order != 0; the loop checks the NFE against the declaration."""
    model = problem.model()
    grid = make_grid("uniform-lambda", problem.schedule, steps, problem.t_min, problem.t_max)
    x = sample(get_solver(name), model, grid, start(problem), noise_for(name))
    assert bool(torch.isfinite(x).all())
    expected = get_solver(name).expected_nfe(grid)
    assert expected is None or model.nfe == expected


@pytest.mark.parametrize("name", SOLVERS)
def test_deterministic_and_dtype_follows_input(problem, name):
    """Same input and seed give the same output; a stochastic solver's output changes with the seed."""
    grid = make_grid("uniform-lambda", problem.schedule, 6, problem.t_min, problem.t_max)
    a = sample(get_solver(name), problem.model(), grid, start(problem), noise_for(name))
    b = sample(get_solver(name), problem.model(), grid, start(problem), noise_for(name))
    assert torch.equal(a, b)
    if get_solver(name).stochastic:
        other = sample(get_solver(name), problem.model(), grid, start(problem), noise_for(name, seed=1))
        assert not torch.allclose(a, other)
    single = sample(get_solver(name), problem.model(), grid, start(problem, dtype=torch.float32), noise_for(name))
    assert single.dtype == torch.float32
    assert (single.double() - a).abs().max().item() < 1e-4 * (1 + a.abs().max().item())


def test_edm_grid_to_sigma_zero():
    """The final step to sigma = 0: EDM Heun skips its correction (one NFE fewer), Euler steps to the denoiser."""
    problem = get_problem("gauss-diag-d1024")
    grid = make_grid("edm", problem.schedule, 6, 0.0, problem.t_max)
    x = start(problem, 4)
    model = problem.model()
    heun = sample(get_solver("edm-heun"), model, grid, x)
    assert model.nfe == 11 and bool(torch.isfinite(heun).all())
    euler = sample(get_solver("edm-euler"), problem.model(), grid, x)
    penultimate = sample(get_solver("edm-euler"), problem.model(), grid[:-1], x)
    torch.testing.assert_close(euler, problem.model()(penultimate, float(grid[-2])).x0)


@pytest.mark.parametrize("names", [("ddim", "dpm-solver-1", "dpmpp-1", "edm-euler", "euler-sigma"),
                                   ("edm-heun", "heun-sigma")])
def test_identities_between_solvers(problem, names):
    """DDIM = DPM-Solver-1 = DPM-Solver++1 = Euler in sigma (Lu et al. 2022, 2022b; Karras et al. 2022)."""
    grid = make_grid("edm", problem.schedule, 7, problem.t_min, problem.t_max)
    outputs = [sample(get_solver(name), problem.model(), grid, start(problem)) for name in names]
    for other in outputs[1:]:
        torch.testing.assert_close(other, outputs[0], rtol=1e-11, atol=1e-11)


def test_trace_and_trajectory_show_warm_up_and_lower_order_final(problem):
    grid = make_grid("uniform-lambda", problem.schedule, 6, problem.t_min, problem.t_max)
    result = sample(get_solver("dpmpp-3m"), problem.model(), grid, start(problem), return_trajectory=True,
                    return_trace=True)
    assert list(result.trace["order"]) == [1, 2, 3, 3, 2, 1]
    assert list(result.trace["nfe"]) == [1, 2, 3, 4, 5, 6]
    lam = problem.schedule.lam(grid)
    torch.testing.assert_close(torch.tensor(result.trace["h"].to_numpy()), torch.diff(lam))
    assert result.trajectory.shape == (7, 8, 16) and torch.equal(result.trajectory[-1], result.x)
    no_final = sample(get_solver("dpmpp-3m", lower_order_final=False), problem.model(), grid, start(problem),
                      return_trace=True)
    assert list(no_final.trace["order"]) == [1, 2, 3, 3, 3, 3]
    assert not torch.equal(no_final.x, result.x)
    long_grid = make_grid("uniform-lambda", problem.schedule, 12, problem.t_min, problem.t_max)
    official = sample(get_solver("dpmpp-3m"), problem.model(), long_grid, start(problem), return_trace=True)
    assert list(official.trace["order"])[-2:] == [3, 3]   # the official rule applies only below 10 steps


@pytest.mark.parametrize("flag, value", [("solver_type", "heun"), ("order", 3)])
def test_flags_change_the_output(problem, flag, value):
    grid = make_grid("uniform-lambda", problem.schedule, 8, problem.t_min, problem.t_max)
    base = sample(get_solver("dpmpp-multistep"), problem.model(), grid, start(problem))
    changed = sample(get_solver("dpmpp-multistep", **{flag: value}), problem.model(), grid, start(problem))
    assert (base - changed).abs().max().item() > 1e-8


def test_divergence_is_reported_with_step_and_time(problem):
    """A step that overflows: the loop names the solver, the step and the times instead of returning inf."""

    class Exploding(Solver):
        name = "test-exploding"
        family = "test"
        parameterisation = "x0"
        claim = Claim(None, "none", "test")
        register = False

        def step(self, state):
            x0 = state.current()
            return x0 * 1e300 * 1e300 if state.i == 2 else x0

    grid = make_grid("uniform-lambda", problem.schedule, 4, problem.t_min, problem.t_max)
    with pytest.raises(DivergenceError, match=r"test-exploding: NaN or inf at step 2 of 4 \(t = .* -> .*\)"):
        sample(Exploding(), problem.model(), grid, start(problem, 2))


def test_divergence_inside_a_step_is_reported_at_the_stage(problem):
    """A stage point that overflows (a multistage solver) is caught before the model sees it, naming the step."""

    class ExplodingStage(Solver):
        name = "test-exploding-stage"
        family = "test"
        parameterisation = "x0"
        claim = Claim(None, "none", "test")
        register = False

        def step(self, state):
            stage = state.current() * (1e300 * 1e300 if state.i == 1 else 1.0)
            return state.evaluate(stage, state.t_next)

    grid = make_grid("uniform-lambda", problem.schedule, 4, problem.t_min, problem.t_max)
    with pytest.raises(DivergenceError, match=r"test-exploding-stage: NaN or inf at a stage of step 1 \(t = "):
        sample(ExplodingStage(), problem.model(), grid, start(problem, 2))


def test_sigma_zero_is_refused_up_front_where_a_solver_cannot_reach_it():
    problem = get_problem("gauss-diag-d1024")
    grid = make_grid("edm", problem.schedule, 4, 0.0, problem.t_max)
    with pytest.raises(ValueError, match="grid: ends at sigma = 0, which 'euler-lambda' cannot reach: lambda is"):
        sample(get_solver("euler-lambda"), problem.model(), grid, start(problem, 2))


def test_nfe_mismatch_is_caught(problem):
    class Dishonest(Solver):
        name, family, parameterisation, register = "dishonest", "test", "eps", False
        claim = Claim(1, "global", "test")

        def step(self, state):
            state.evaluate(state.x, state.t)
            state.current()
            return state.x

    grid = make_grid("uniform-t", problem.schedule, 3, problem.t_min, problem.t_max)
    with pytest.raises(RuntimeError, match="used 6 model evaluations, declared 3"):
        sample(Dishonest(), problem.model(), grid, start(problem))


def test_bad_arguments(problem):
    with pytest.raises(ValueError, match="name: unknown solver 'dpmpp-4m'"):
        get_solver("dpmpp-4m")
    with pytest.raises(ValueError, match=r"order: expected one of \(1, 2, 3\), got 4"):
        get_solver("dpmpp-multistep", order=4)
    with pytest.raises(ValueError, match="eta: unknown parameter"):
        get_solver("ddim", eta=0.5)
    with pytest.raises(ValueError, match="order: fixed by the variant 'dpmpp-2m'"):
        get_solver("dpmpp-2m", order=3)
    grid = make_grid("uniform-t", problem.schedule, 3, problem.t_min, problem.t_max)
    with pytest.raises(ValueError, match="grid: must be strictly decreasing"):
        sample(get_solver("ddim"), problem.model(), grid.flip(0), start(problem))
    with pytest.raises(ValueError, match=r"x_T: expected shape \(N, 16\)"):
        sample(get_solver("ddim"), problem.model(), grid, torch.zeros(3, 4, dtype=torch.float64))
