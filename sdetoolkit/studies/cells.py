"""The built-in study kinds a sweep cell can run, each with the order fitter for its rows.

* ``ode``: :func:`~sdetoolkit.studies.convergence.ode_errors` (one cell per step count; errors ``rms``, ``max``).
* ``weak-exact``: :func:`~sdetoolkit.exact.weak_errors`, the exact W2 and KL of a linear solver's output law on a
  Gaussian problem (``w2_marginal``, ``kl_marginal``, ``w2_data``, ``kl_data``; no Monte Carlo).
* ``strong``: :func:`~sdetoolkit.studies.strong.strong_order`, coupled over all step counts of the cell (one
  Brownian path); its bootstrap fit travels in the rows (columns ``fit_order``, ``fit_low``, ``fit_high``).
* ``weak-mc``: :func:`~sdetoolkit.studies.weak.weak_order` (exact where it applies, else multilevel Monte Carlo
  on shared paths), coupled over all step counts; its fits per test function travel in the rows.
* ``distance``: :func:`~sdetoolkit.studies.distances.distance_vs_nfe` (W2, KL, OT and sliced W2, MMD, moments;
  no order fitted: distances against NFE are what the figures show).
* ``likelihood``: :func:`~sdetoolkit.studies.likelihood.likelihood`; the order of the exact-trace ``rms`` error.
* ``one-step``: :func:`~sdetoolkit.studies.one_step.one_step_error` (options ``t`` and ``h``; the cell's steps are
  unused); local orders per t are in its own summary, not fitted here.

Options (``n_samples``, ``grid``, ``levels``, ``device`` where the study takes one, ``"auto"`` for CUDA when present)
come from the cell; everything else is the studies' defaults.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from ..catalogue import Problem, get_problem
from ..exact import weak_errors
from ..solvers import get_solver
from .convergence import fit_table, ode_errors
from .distances import distance_vs_nfe
from .likelihood import likelihood
from .one_step import one_step_error
from .order import OrderFit, fit_order
from .strong import strong_order
from .sweep import Cell, cell_kind
from .weak import weak_order


@lru_cache(maxsize=64)
def problem_named(name: str) -> Problem:
    """One Problem object per name and process, so references memoised per problem are reused across cells."""
    return get_problem(name)


def options(cell: Cell) -> dict:
    """The cell's study options; ``device = "auto"`` becomes ``cuda`` where a GPU is present, else ``cpu``."""
    chosen = dict(cell.options)
    if chosen.get("device") == "auto":
        chosen["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return chosen


def _common(cell: Cell) -> dict:
    return dict(problem=cell.problem, solver=cell.solver, seed=cell.seed, dtype=cell.dtype)


def _fit_ode(rows: pd.DataFrame) -> OrderFit:
    return fit_table(rows, str(rows.metric.iloc[0]))


GRID_PARAMETERS = {"rho"}  # the keyword parameters of the grid builders (sdetoolkit.grids)


def _parameters(function, skip: tuple = ("solver", "problem", "steps", "seed", "dtype")) -> set:
    """The keyword options a study function takes: its signature less what the cell supplies, and the grid
    parameters where it passes keywords on to the grid builder."""
    parameters = inspect.signature(function).parameters
    named = {name for name, p in parameters.items() if name not in skip and p.kind is not p.VAR_KEYWORD}
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return named | (GRID_PARAMETERS if passes_on else set())


@cell_kind("ode", fit=_fit_ode, options=_parameters(ode_errors))
def ode_cell(cell: Cell) -> pd.DataFrame:
    solver = get_solver(cell.solver, **dict(cell.params))
    return pd.concat([ode_errors(solver, problem_named(cell.problem), n, seed=cell.seed,
                                 dtype=getattr(torch, cell.dtype), **options(cell)) for n in cell.steps],
                     ignore_index=True)


WEAK_METRICS = ("w2_marginal", "kl_marginal", "w2_data", "kl_data")
WEAK_FLOOR = 1e-12


def _fit_weak(rows: pd.DataFrame) -> OrderFit:
    rows = rows.sort_values("steps")
    return fit_order(1.0 / rows.steps.to_numpy(float), rows.value.to_numpy(float), floor=WEAK_FLOOR)


@cell_kind("weak-exact", fit=_fit_weak, options=_parameters(weak_errors))
def weak_exact_cell(cell: Cell) -> pd.DataFrame:
    if cell.dtype != "float64":
        raise ValueError(f"dtype: the exact weak study runs in float64, got {cell.dtype!r}")
    solver = get_solver(cell.solver, **dict(cell.params))
    table = weak_errors(solver, problem_named(cell.problem), list(cell.steps), **options(cell))
    long = table.melt(id_vars=["steps", "nfe"], value_vars=list(WEAK_METRICS), var_name="metric")
    return long.assign(**_common(cell), stderr=np.nan)


def _fit_from_columns(rows: pd.DataFrame) -> OrderFit:
    """The fit a coupled cell computed itself (bootstrap over trajectories), carried in its rows' fit_* columns."""
    first = rows.sort_values("steps").iloc[0]
    if pd.isna(first.fit_order):
        raise ValueError(str(first.get("fit_note", "not fitted")))
    kept = rows.sort_values("steps")
    h, e = 1.0 / kept.steps.to_numpy(float), kept.value.abs().to_numpy(float)
    local = np.diff(np.log(e[::-1])) / np.diff(np.log(h[::-1]))
    return OrderFit(order=float(first.fit_order), low=float(first.fit_low), high=float(first.fit_high),
                    ci_low=float(first.fit_low), ci_high=float(first.fit_high), stderr=float(first.fit_stderr),
                    truncation=float("nan"), confidence=0.95, steps=h[::-1], errors=e[::-1], local_slopes=local,
                    dropped=(), interval="bootstrap interval")


@cell_kind("strong", fit=_fit_from_columns, options=_parameters(strong_order))
def strong_cell(cell: Cell) -> pd.DataFrame:
    if cell.dtype != "float64":
        raise ValueError(f"dtype: the strong study runs in float64, got {cell.dtype!r}")
    solver = get_solver(cell.solver, **dict(cell.params))
    study = strong_order(solver, problem_named(cell.problem), list(cell.steps), seed=cell.seed,
                         **options(cell))
    table = study.table
    return pd.DataFrame(dict(**_common(cell), steps=table.steps, nfe=np.nan, metric="strong",
                             value=table.strong_error, stderr=table.standard_error,
                             reference_steps=table.reference_steps, fit_order=study.fit.order,
                             fit_low=study.fit.low, fit_high=study.fit.high, fit_stderr=study.fit.stderr))


@cell_kind("weak-mc", fit=_fit_from_columns, options=_parameters(weak_order))
def weak_mc_cell(cell: Cell) -> pd.DataFrame:
    solver = get_solver(cell.solver, **dict(cell.params))
    study = weak_order(solver, problem_named(cell.problem), list(cell.steps), seed=cell.seed,
                       dtype=getattr(torch, cell.dtype), **options(cell))
    table = study.table[study.table.metric == "weak_error"].copy()
    for column in ("fit_order", "fit_low", "fit_high", "fit_stderr"):
        table[column] = np.nan
    table["fit_note"] = ""
    for name, fit in study.fits.items():
        mine = table.test_function == name
        table.loc[mine, ["fit_order", "fit_low", "fit_high", "fit_stderr"]] = [fit.order, fit.low, fit.high,
                                                                              fit.stderr]
    for name, reason in study.skipped.items():
        table.loc[table.test_function == name, "fit_note"] = reason
    return table


@cell_kind("distance", options=_parameters(distance_vs_nfe))
def distance_cell(cell: Cell) -> pd.DataFrame:
    solver = get_solver(cell.solver, **dict(cell.params))
    return distance_vs_nfe(solver, problem_named(cell.problem), list(cell.steps), seed=cell.seed,
                           dtype=getattr(torch, cell.dtype), **options(cell)).table


def _fit_likelihood(rows: pd.DataFrame) -> OrderFit | None:
    rows = rows[rows.probes == 0].sort_values("steps")
    if rows.metric.iloc[0] != "rms" or rows.empty:
        return None
    return fit_order(1.0 / rows.steps.to_numpy(float), rows.value.to_numpy(float))


@cell_kind("likelihood", fit=_fit_likelihood, options=_parameters(likelihood))
def likelihood_cell(cell: Cell) -> pd.DataFrame:
    solver = get_solver(cell.solver, **dict(cell.params))
    return likelihood(solver, problem_named(cell.problem), list(cell.steps), seed=cell.seed,
                      dtype=getattr(torch, cell.dtype), **options(cell)).table


@cell_kind("one-step", options=_parameters(one_step_error))
def one_step_cell(cell: Cell) -> pd.DataFrame:
    solver = get_solver(cell.solver, **dict(cell.params))
    return one_step_error(solver, problem_named(cell.problem), seed=cell.seed, dtype=getattr(torch, cell.dtype),
                          **options(cell)).table


FIT_GROUP = ["study", "problem", "solver", "params", "options", "seed", "dtype", "metric"]


def fit_orders(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (study, problem, solver, parameters, options, seed, dtype, metric) with the fitted order, its
    interval, the local slopes and the dropped points; groups whose kind fits nothing, or that cannot be fitted
    (too few points above the floors), say why in ``note``."""
    from .sweep import fitter

    rows = []
    group_by = FIT_GROUP + [column for column in ("test_function",) if column in table]
    for key, group in table.groupby(group_by, sort=False, dropna=False):
        fit_function = fitter(key[0])
        if fit_function is None:
            continue
        row = dict(zip(group_by, key, strict=True))
        try:
            fit = fit_function(group)
        except ValueError as err:
            rows.append(dict(row, note=str(err)))
            continue
        if fit is None:
            continue
        rows.append(dict(row, order=fit.order, low=fit.low, high=fit.high, interval=fit.interval,
                         local_slopes=" ".join(f"{v:.2f}" for v in fit.local_slopes),
                         dropped=" ".join(f"{1 / h:.0f}:{why}" for h, why in zip(fit.dropped, fit.drop_reasons,
                                                                               strict=True)),
                         finest_error=float(group.sort_values("steps").value.abs().iloc[-1]), note=""))
    return pd.DataFrame(rows)
