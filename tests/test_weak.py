"""Weak-order study: closed-form test-function means, the exact path, the multilevel Monte Carlo estimator against
the exact path, the noise floor, Euler-Maruyama's weak order 1 on a mixture, and input validation."""

import math

import numpy as np
import pytest
import torch

from sdetoolkit import get_problem
from sdetoolkit.distributions import Gaussian
from sdetoolkit.exact import NonlinearSolverError
from sdetoolkit.solvers import get_solver
from sdetoolkit.studies.weak import (
    default_test_functions,
    ecf_function,
    moment_functions,
    monte_carlo_fits,
    weak_order,
)

COLUMNS = ["problem", "solver", "steps", "nfe", "seed", "dtype", "metric", "value", "stderr", "test_function"]


@pytest.mark.parametrize("name", ["gmm-ring8-2d", "gmm-d16-k10", "gauss-full-d16"])
def test_closed_form_means_match_a_large_sample(name):
    """E f under the mixture (moments, ECF in closed form) against the mean of 100k exact samples: every z-score
    below 4.5 (P < 1e-5 each). On the 16-dimensional problems a wrong sign of the ECF's phase gives |z| > 40 for
    every ECF function, and a missing 1/2 in its exponent |z| > 5 for at least one."""
    target = get_problem(name).target()
    x = target.sample(100_000, torch.Generator().manual_seed(1))
    for f in default_test_functions(target):
        values = f.values(x)
        z = (float(values.mean()) - f.expectation(target)) / (float(values.std()) / math.sqrt(len(values)))
        assert abs(z) < 4.5, (f.name, z)


def test_test_functions_validate_and_have_their_closed_forms():
    gaussian = Gaussian(torch.tensor([1.0, -2.0], dtype=torch.float64), torch.tensor([4.0, 9.0], dtype=torch.float64))
    mean, second = moment_functions(gaussian, [0.0, 3.0], "y")
    assert (mean.name, second.name) == ("mean:y", "second:y")
    assert mean.expectation(gaussian) == pytest.approx(-2.0) and second.expectation(gaussian) == pytest.approx(9.0)
    ecf = ecf_function([0.5, 0.0], 0.25, "c")
    assert ecf.expectation(gaussian) == pytest.approx(math.exp(-0.5 * 0.25 * 4.0) * math.cos(0.5 + 0.25))
    with pytest.raises(ValueError, match="direction"):
        moment_functions(gaussian, [0.0, 0.0], "zero")
    with pytest.raises(ValueError, match="frequency"):
        ecf_function([math.inf, 0.0], 0.0, "bad")
    with pytest.raises(ValueError, match="phase"):
        ecf_function([1.0, 0.0], math.nan, "bad")


def test_exact_path_gives_euler_maruyama_weak_order_one():
    """Gaussian data and an affine solver: no sampling error, and EM's weak order 1 (Kloeden & Platen 1992,
    Thm. 14.1.5) in the interval of W2 and of every test function, 1/2 and 2 outside."""
    study = weak_order(get_solver("euler-maruyama"), get_problem("gauss-1d"), [32, 48, 64, 96, 128, 192])
    assert study.method == "exact" and study.allocation == () and study.estimates is None
    assert list(study.table.columns) == COLUMNS and study.table.stderr.isna().all()
    assert set(study.table.metric) == {"w2", "kl", "weak_error"}
    assert set(study.fits) == {"w2", "mean:u0", "second:u0", "ecf:u0:r1", "ecf:u0:r2"} and not study.skipped
    for name, fit in study.fits.items():
        assert fit.contains(1.0) and not fit.contains(0.5) and not fit.contains(2.0), (name, fit)


def test_monte_carlo_agrees_with_the_exact_path():
    """On gauss-1d the multilevel estimate of every weak error and of every level difference lies within 4 SE of
    the exact value (12 + 8 correlated comparisons), while the mean and second-moment errors at 8 steps are > 10 SE
    from zero: the comparison can see a bias far smaller than the errors being measured."""
    solver, problem, steps = get_solver("euler-maruyama"), get_problem("gauss-1d"), [8, 16, 32]
    exact = weak_order(solver, problem, steps).table
    exact = exact[exact.metric == "weak_error"].set_index(["steps", "test_function"]).value
    study = weak_order(solver, problem, steps, n_samples=8000, method="monte-carlo", seed=3)
    assert study.method == "monte-carlo" and len(study.allocation) == 3 and study.allocation[-1] == 1
    table = study.table
    assert list(table.columns) == COLUMNS and (table.stderr > 0).all()
    mc = table[table.metric == "weak_error"].set_index(["steps", "test_function"])
    z = (mc.value - exact[mc.index]) / mc.stderr
    assert z.abs().max() < 4, z
    coarse = mc.loc[8].loc[["mean:u0", "second:u0"]]
    assert (coarse.value.abs() > 10 * coarse.stderr).all(), coarse
    differences = table[table.metric == "level_difference"].set_index(["steps", "test_function"])
    for (n, name), row in differences.iterrows():
        previous = steps[steps.index(n) - 1]
        assert abs(row.value - (exact[n, name] - exact[previous, name])) < 4 * row.stderr, (n, name, row)


def test_monte_carlo_noise_floor_points_are_dropped_and_named():
    """With few units the fine points fall into the noise floor: exactly the points with |e| <= 2 SE are dropped,
    each named 'noise floor'; a test function with too few points left is skipped with the reason."""
    steps = [4, 8, 16, 32, 64, 128]
    study = weak_order(get_solver("euler-maruyama"), get_problem("gmm-1d-bimodal"), steps, n_samples=300,
                       allocation=(16, 8, 4, 2, 1, 1), corrections=0, seed=1)
    assert study.method == "monte-carlo" and study.estimates.shape == (6, 4, 300)
    rows = study.table[study.table.metric == "weak_error"]
    assert set(study.fits) | set(study.skipped) == set(rows.test_function)
    assert study.skipped and any(fit.dropped for fit in study.fits.values())
    for name, group in rows.groupby("test_function"):
        floor = {1.0 / n for n, e, se in zip(group.steps, group.value, group.stderr, strict=True) if abs(e) <= 2 * se}
        if name in study.skipped:
            assert "noise floor" in study.skipped[name]
            continue
        fit = study.fits[name]
        assert set(fit.dropped) == floor and fit.drop_reasons == ("noise floor",) * len(floor)
        assert len(fit.steps) == len(steps) - len(floor)
    refits, _ = monte_carlo_fits(steps, study.estimates, list(rows.test_function.unique()),
                                 corrections=0, seed=1)
    assert {k: v.order for k, v in refits.items()} == {k: v.order for k, v in study.fits.items()}


def test_monte_carlo_is_reproducible_and_runs_in_float32():
    solver, problem = get_solver("ddpm"), get_problem("gmm-1d-bimodal")
    a, b = (weak_order(solver, problem, [4, 8], n_samples=50, allocation=(2, 1), seed=5).table for _ in range(2))
    assert a.equals(b)
    c = weak_order(solver, problem, [4, 8], n_samples=50, allocation=(2, 1), seed=6).table
    assert not np.allclose(a.value, c.value)
    single = weak_order(solver, problem, [4, 8], n_samples=50, allocation=(2, 1), seed=5, dtype=torch.float32)
    assert (single.table.dtype == "float32").all()
    assert np.allclose(single.table.value, a.value, atol=1e-4)


def test_nonlinear_solvers_take_the_monte_carlo_path():
    """score-sde-pc's Langevin step size depends on |score|: 'auto' sends it to Monte Carlo, 'exact' refuses it."""
    solver, problem = get_solver("score-sde-pc"), get_problem("gauss-1d")
    assert weak_order(solver, problem, [2, 4], n_samples=20, allocation=(1, 1)).method == "monte-carlo"
    with pytest.raises(NonlinearSolverError):
        weak_order(solver, problem, [2, 4], method="exact")


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(steps=[]), "steps"),
    (dict(steps=[4, 4]), "steps: contains duplicates"),
    (dict(steps=[4, 2.5]), "steps"),
    (dict(steps=[True, 4]), "steps"),
    (dict(n_samples=1), "n_samples"),
    (dict(method="mc"), "method"),
    (dict(problem="gmm-1d-bimodal", method="exact"), "method: the exact path needs Gaussian data"),
    (dict(allocation=(1,)), "allocation"),
    (dict(allocation=(1, 0)), "allocation"),
    (dict(seed=-1), "seed"),
    (dict(dtype=torch.int64), "dtype"),
    (dict(test_functions=[]), "test_functions"),
    (dict(test_functions=[ecf_function([1.0], 0.0, "a"), ecf_function([2.0], 0.0, "a")]), "test_functions"),
])
def test_bad_input_is_refused(kwargs, match):
    args = dict(dict(steps=[2, 4], problem="gauss-1d"), **kwargs)
    steps, problem = args.pop("steps"), get_problem(args.pop("problem"))
    with pytest.raises(ValueError, match=match):
        weak_order(get_solver("euler-maruyama"), problem, steps, **args)


@pytest.mark.slow
def test_euler_maruyama_weak_order_one_on_a_mixture():
    """Coupled multilevel Monte Carlo on the bimodal mixture (no exact law): Euler-Maruyama's weak order 1 lies in
    the bootstrap interval of every test function that leaves the noise floor, and 1/2 and 2 lie outside it for the
    best resolved one."""
    study = weak_order(get_solver("euler-maruyama"), get_problem("gmm-1d-bimodal"), [16, 32, 64, 128, 256],
                       n_samples=50_000, seed=0)
    assert study.fits, study.skipped
    for name, fit in study.fits.items():
        assert fit.contains(1.0), (name, fit)
    best = min(study.fits.values(), key=lambda fit: fit.high - fit.low)
    assert not best.contains(0.5) and not best.contains(2.0), best
