"""Distances vs NFE: the exact rows equal the exact-law errors, the sampled MMD agrees with the exact law's MMD, the
floor lies below a coarse solver, distances fall with NFE, runs are reproducible, and bad input is refused."""

import math

import pandas as pd
import pytest
import torch

from sdetoolkit import get_problem
from sdetoolkit.distributions import Gaussian
from sdetoolkit.exact import propagate, weak_errors
from sdetoolkit.grids import make_grid
from sdetoolkit.metrics import mixture_mmd2
from sdetoolkit.solvers import get_solver
from sdetoolkit.studies.distances import COLUMNS, distance_vs_nfe

Z = 4.0


def _rows(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    return table[table.metric == metric].set_index("steps")


@pytest.fixture(scope="module")
def ring():
    """DDIM on the 8-mode ring at 2, 4 and 8 steps, 2000 samples in batches of 500."""
    return distance_vs_nfe(get_solver("ddim"), get_problem("gmm-ring8-2d"), [2, 4, 8], n_samples=2000, seed=1).table


def test_table_has_the_common_columns_first(ring):
    assert tuple(ring.columns) == COLUMNS
    assert set(ring.metric) == {"w2-ot", "w2-sliced", "mean-error", "cov-error", "mmd2"}  # no exact law: a mixture
    assert (ring.nfe == ring.steps).all() and (ring.dtype == "float64").all() and (ring.wall_time > 0).all()
    assert ring.stderr.notna().all() and ring.floor.notna().all()


@pytest.mark.parametrize("metric", ["w2-ot", "w2-sliced", "cov-error", "mmd2"])
def test_the_floor_lies_below_a_coarse_solver(ring, metric):
    row = _rows(ring, metric).loc[2]
    assert row.value - row.floor > Z * math.hypot(row.stderr, row.floor_stderr)


def test_mmd_falls_with_nfe_and_its_floor_is_zero(ring):
    """Each doubling of the steps lowers MMD^2 by more than 4 standard errors (the runs share their prior draws and
    reference, so the independent-error bound is conservative); an exact sample scores zero within its error."""
    mmd = _rows(ring, "mmd2")
    for coarse, fine in [(2, 4), (4, 8)]:
        assert mmd.value[coarse] - mmd.value[fine] > Z * math.hypot(mmd.stderr[coarse], mmd.stderr[fine])
    assert abs(mmd.floor.iloc[0]) < Z * mmd.floor_stderr.iloc[0]


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_exact_rows_are_the_exact_law_and_the_sampled_mmd_agrees_with_it(name):
    """On a Gaussian problem a linear solver (deterministic or stochastic, noise from IIDNoise(seed)) gets exact W2
    and KL rows equal to exact.weak_errors; its sampled MMD^2 is the exact MMD^2 of its output law within 4 standard
    errors, and the exact W2 falls with every doubling of the steps."""
    problem = get_problem("gauss-aniso-d64")
    solver = get_solver(name)
    steps = [4, 8, 16]
    table = distance_vs_nfe(solver, problem, steps, n_samples=1000, metrics=("w2", "kl", "mmd2"), seed=2).table
    reference = weak_errors(solver, problem, steps).set_index("steps")
    w2, kl, mmd = _rows(table, "w2"), _rows(table, "kl"), _rows(table, "mmd2")
    assert w2.value.to_numpy() == pytest.approx(reference.w2_marginal.to_numpy(), rel=1e-12)
    assert kl.value.to_numpy() == pytest.approx(reference.kl_marginal.to_numpy(), rel=1e-12)
    assert w2.stderr.isna().all() and w2.floor.isna().all() and (w2.batch_size == 0).all()
    assert (w2.value.diff().dropna() < 0).all()
    for n in steps:
        law = propagate(solver, problem.distribution, problem.schedule,
                        make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max))
        exact = mixture_mmd2(Gaussian(law.mean, law.cov), problem.target(), mmd.bandwidth[n])
        assert abs(mmd.value[n] - exact) < Z * mmd.stderr[n]


def test_runs_are_reproducible_and_seeded():
    problem, solver = get_problem("gmm-1d-bimodal"), get_solver("euler-maruyama")
    kwargs = dict(n_samples=200, batch_size=100, metrics=("w2-sliced", "mmd2", "mean-error"))
    first = distance_vs_nfe(solver, problem, [8], seed=3, **kwargs).table.drop(columns="wall_time")
    again = distance_vs_nfe(solver, problem, [8], seed=3, **kwargs).table.drop(columns="wall_time")
    other = distance_vs_nfe(solver, problem, [8], seed=4, **kwargs).table.drop(columns="wall_time")
    pd.testing.assert_frame_equal(first, again)
    assert not first.value.equals(other.value)


def test_exact_rows_are_left_out_where_the_law_is_not_exact_gaussian():
    problem = get_problem("gauss-1d")
    kwargs = dict(n_samples=100, batch_size=50, metrics=("w2", "kl", "mean-error"))
    nonlinear = distance_vs_nfe(get_solver("score-sde-pc"), problem, [4], **kwargs).table
    single = distance_vs_nfe(get_solver("ddim"), problem, [4], dtype=torch.float32, **kwargs).table
    assert list(nonlinear.metric) == ["mean-error"]
    assert list(single.metric) == ["mean-error"] and (single.dtype == "float32").all()


def test_bad_arguments_raise_value_errors_naming_them():
    problem, solver = get_problem("gauss-1d"), get_solver("ddim")
    for bad, match in [(dict(steps=[]), "steps: expected positive ints"),
                       (dict(steps=[0]), "steps: expected positive ints"),
                       (dict(metrics=("w3",)), "metrics: expected distinct names"),
                       (dict(metrics=("w2", "w2")), "metrics: expected distinct names"),
                       (dict(batch_size=300), "batch_size: n_samples = 1000 must split"),
                       (dict(n_samples=3), "n_samples: expected an int >= 4"),
                       (dict(seed=-1), "seed: expected a non-negative int"),
                       (dict(dtype=torch.int64), "dtype: expected a floating torch.dtype"),
                       (dict(bandwidth=0.0, metrics=("mmd2",)), "bandwidth: expected a finite positive number"),
                       (dict(dtype=torch.float32, metrics=("w2", "kl")), "metrics: .* need the exact output law")]:
        args = dict(steps=[4], n_samples=1000) | bad
        with pytest.raises(ValueError, match=match):
            distance_vs_nfe(solver, problem, args.pop("steps"), **args)
