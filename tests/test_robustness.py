"""Model-error robustness: exact propagation of a model error (against Monte Carlo), the clean limit, monotonicity in
the error's magnitude, equal-NFE step counts, and argument checks."""

import math

import pytest
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.exact import propagate, weak_errors
from sdetoolkit.noise import IIDNoise
from sdetoolkit.solvers.base import get_solver, sample
from sdetoolkit.studies.robustness import model_error, robustness_study, steps_for_nfe


@pytest.mark.parametrize("name", ["ddim", "sde-dpmpp-2m"])
def test_propagated_law_with_a_model_error_matches_monte_carlo(name):
    """gauss-full-d16 (a rotated eigenbasis, so the bias direction must be rotated too), bias and noise together:
    the sample mean of N = 20000 runs lies within 4.5 standard errors of the exact mean in every eigen-direction, and
    each sample variance within 5 of its standard errors, sqrt(2/N) relative (d = 16 directions)."""
    problem = get_problem("gauss-full-d16")
    solver = get_solver(name)
    grid = make_grid("uniform-lambda", problem.schedule, 8, problem.t_min, problem.t_max)
    error = model_error("bias", 0.3, problem.schedule, seed=4)
    error = type(error)(bias=error.bias, noise=model_error("noise", 0.5, problem.schedule).noise, seed=4)
    law = propagate(solver, problem.distribution, problem.schedule, grid, error=error)
    n = 20000
    x = sample(solver, problem.model(error), grid, problem.prior().sample(n, torch.Generator().manual_seed(1)),
               IIDNoise(2))
    rotated = x @ law.basis
    z = (rotated.mean(0) - law.basis.T @ law.mean) / (law.variances / n).sqrt()
    assert z.abs().max() < 4.5
    relative = rotated.var(0) / law.variances - 1
    assert relative.abs().max() < 5 * math.sqrt(2 / n)
    clean = propagate(solver, problem.distribution, problem.schedule, grid)
    assert (law.variances > clean.variances).all()   # the random error adds variance in every direction


def test_zero_magnitude_reproduces_the_clean_study_exactly():
    problem = get_problem("gauss-aniso-d64")
    solvers = [get_solver("dpmpp-2m"), get_solver("sde-dpmpp-2m")]
    table = robustness_study(solvers, problem, [6, 12], [0.0]).table
    for solver in solvers:
        clean = weak_errors(solver, problem, [6, 12]).set_index("steps").w2_marginal
        for kind in ("bias", "noise"):
            rows = table[(table.solver == solver.name) & (table.error_kind == kind)].set_index(["metric", "steps"])
            for steps in (6, 12):
                assert rows.loc[("w2", steps), "value"] == clean[steps]
                assert rows.loc[("w2-shift", steps), "value"] == 0.0


@pytest.mark.parametrize("profile", ["eps", "score"])
def test_the_shift_grows_with_the_magnitude(profile):
    """How far the error moves the output law grows strictly with c, for both kinds, an ODE and an SDE sampler;
    a bias moves the mean linearly in c (exactly: the output is affine in the bias)."""
    magnitudes = [0.0, 0.01, 0.1, 0.3]
    table = robustness_study([get_solver("ddim"), get_solver("ddpm")], get_problem("gauss-1d"), [10], magnitudes,
                             profile=profile).table
    shift = table[table.metric == "w2-shift"]
    for (_, kind), rows in shift.groupby(["solver", "error_kind"]):
        values = rows.sort_values("error_magnitude").value.to_numpy()
        assert (values[1:] > values[:-1]).all(), (kind, values)
        if kind == "bias":
            assert values[2] / values[1] == pytest.approx(10.0, rel=1e-9)


def test_model_error_profiles():
    schedule = get_problem("gauss-1d").schedule
    eps = model_error("bias", 0.2, schedule)
    assert eps.bias(0.5) * schedule.at(0.5).sigma == pytest.approx(0.2, rel=1e-15) and eps.noise == 0.0
    assert model_error("noise", 0.2, schedule, profile="score").noise == 0.2


def test_steps_for_nfe_gives_equal_budgets():
    problem = get_problem("gauss-1d")
    assert steps_for_nfe(get_solver("dpmpp-2m"), problem, 20) == 20
    assert steps_for_nfe(get_solver("edm-heun"), problem, 20) == 10
    with pytest.raises(ValueError, match="exactly 21"):
        steps_for_nfe(get_solver("edm-heun"), problem, 21)
    with pytest.raises(ValueError, match="adaptive"):
        steps_for_nfe(get_solver("scipy"), problem, 5)


def test_propagate_refuses_a_model_error_with_an_adaptive_solver():
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 2, problem.t_min, problem.t_max)
    with pytest.raises(ValueError, match="adaptive"):
        propagate(get_solver("scipy"), problem.distribution, problem.schedule, grid,
                  error=model_error("noise", 0.1, problem.schedule))


@pytest.mark.parametrize("change, match", [
    (dict(problem="gmm-ring8-2d"), "Gaussian"),
    (dict(solvers=["score-sde-pc"]), "affine"),
    (dict(solvers=[]), "solvers"),
    (dict(kinds=["drift"]), "kind"),
    (dict(profile="x0"), "profile"),
    (dict(magnitudes=[-0.1]), "magnitude"),
    (dict(magnitudes=[math.inf]), "magnitude"),
    (dict(nfe=[0]), "nfe"),
    (dict(seed=-2), "seed"),
])
def test_bad_arguments_are_named(change, match):
    args = dict(problem="gauss-1d", solvers=["ddim"], nfe=[4], magnitudes=[0.1]) | change
    problem, solvers = get_problem(args.pop("problem")), [get_solver(s) for s in args.pop("solvers")]
    with pytest.raises(ValueError, match=match):
        robustness_study(solvers, problem, args.pop("nfe"), args.pop("magnitudes"), **args)
