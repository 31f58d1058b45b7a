"""A study: one study kind over problems x solvers (with parameters) x step counts x seeds x dtypes, from TOML or
Python, run as a resumable sweep.

A TOML study file::

    [study]
    name = "ode-orders"
    kind = "ode"                       # a registered study kind: sdetoolkit.studies.sweep.list_cell_kinds()
    problems = ["gauss-1d", "gmm-1d-bimodal"]
    solvers = ["dpmpp-2m", { name = "unipc", params = { order = 3 } }, "deterministic"]
    steps = [32, 64, 128, 256]
    seeds = [0]
    dtypes = ["float64"]
    options = { n_samples = 64, grid = "uniform-lambda" }

    [[figures]]                        # optional; made by sdetoolkit.figures after the run
    type = "convergence"
    metric = "rms"

A solver entry is a registered name, a table with ``name`` and ``params``, or a selector that expands to the
registry: ``deterministic``, ``stochastic``, ``linear`` (exact moment propagation applies), ``claimed`` (every
solver with a claimed order) or ``all``, or several of them separated by spaces (every one must hold:
``"stochastic linear"``). Selectors skip the adaptive references (family ``reference``) and measure each
configuration once: registry names that build the same solver (``edm`` and ``edm-heun``) are aliases, and the
most specific name stands for them (:func:`aliases`). Study kinds that
couple their step counts (``strong``) get one cell per (problem, solver, seed, dtype) holding every step count;
``one-step`` takes no step counts (its options set h and t); the others get one cell per step count.
"""

from __future__ import annotations

import functools
import pathlib
import sys
from dataclasses import dataclass, field

import pandas as pd

from ..catalogue import list_problems
from ..solvers import get_solver, list_solvers
from .sweep import Cell, Executor, ResultStore, check_options, list_cell_kinds, run_sweep

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

COUPLED_KINDS = frozenset({"strong", "weak-mc"})
STEPLESS_KINDS = frozenset({"one-step"})
SELECTORS = {
    "all": lambda solver: True,
    "deterministic": lambda solver: not solver.stochastic,
    "stochastic": lambda solver: solver.stochastic,
    "linear": lambda solver: solver.linear,
    "claimed": lambda solver: any(claim.order is not None for claim in solver.claims()),
}


@dataclass(frozen=True)
class Study:
    """A sweep description; :meth:`cells` expands it, :meth:`run` runs it into ``<out>/rows.csv``."""

    name: str
    kind: str
    problems: tuple
    solvers: tuple
    steps: tuple = ()
    seeds: tuple = (0,)
    dtypes: tuple = ("float64",)
    options: dict = field(default_factory=dict)
    figures: tuple = ()

    def __post_init__(self) -> None:
        if self.kind not in list_cell_kinds():
            raise ValueError(f"kind: unknown study kind {self.kind!r}; known: {', '.join(list_cell_kinds())}")
        unknown = [p for p in self.problems if p not in list_problems()]
        if unknown or not self.problems:
            raise ValueError(f"problems: unknown or empty {unknown or list(self.problems)}; known: "
                             f"{', '.join(list_problems())}")
        steps = [int(n) for n in self.steps]
        if self.kind in STEPLESS_KINDS:
            if steps:
                raise ValueError(f"steps: the {self.kind!r} study takes no step counts (its options set h and t)")
        elif not steps or min(steps) < 1:
            raise ValueError(f"steps: need positive step counts, got {list(self.steps)}")
        check_options(self.kind, self.options)
        object.__setattr__(self, "solvers", tuple(expand_solvers(self.solvers)))
        object.__setattr__(self, "steps", tuple(sorted(set(steps))))

    @classmethod
    def from_dict(cls, spec: dict) -> Study:
        study = dict(spec.get("study", spec))
        for key in ("name", "kind", "problems", "solvers"):
            if key not in study:
                raise ValueError(f"study.{key}: missing")
        return cls(name=study["name"], kind=study["kind"], problems=tuple(study["problems"]),
                   solvers=tuple(study["solvers"]), steps=tuple(study.get("steps", ())),
                   seeds=tuple(study.get("seeds", (0,))), dtypes=tuple(study.get("dtypes", ("float64",))),
                   options=dict(study.get("options", {})), figures=tuple(spec.get("figures", ())))

    @classmethod
    def from_toml(cls, path) -> Study:
        with open(path, "rb") as handle:
            return cls.from_dict(tomllib.load(handle))

    def cells(self) -> list[Cell]:
        coupled = self.kind in COUPLED_KINDS | STEPLESS_KINDS
        step_sets = [self.steps] if coupled else [(n,) for n in self.steps]
        return [Cell.make(self.kind, problem, name, steps, seed=seed, dtype=dtype, params=params,
                          options=self.options)
                for problem in self.problems for name, params in self.solvers for seed in self.seeds
                for dtype in self.dtypes for steps in step_sets]

    def run(self, out, *, executor: Executor | None = None, resume: bool = True,
            progress: bool = True) -> pd.DataFrame:
        """Run the cells not yet finished in ``<out>/rows.csv`` and return every row of this study."""
        store = ResultStore(pathlib.Path(out) / "rows.csv")
        table = run_sweep(self.cells(), store, executor=executor, resume=resume, progress=progress)
        keys = {cell.key for cell in self.cells()}
        return table[table.cell.isin(keys)].reset_index(drop=True) if len(table) else table


def expand_solvers(entries) -> list[tuple[str, dict]]:
    """(name, params) pairs from names, {name, params} tables and registry selectors, without duplicates."""
    out: list[tuple[str, dict]] = []
    for entry in entries:
        if isinstance(entry, dict):
            if "name" not in entry:
                raise ValueError(f"solvers: a table entry needs a 'name', got {entry}")
            name, params = entry["name"], dict(entry.get("params", {}))
            get_solver(name, **params)  # validates the name and the parameters now, not mid-sweep
            pairs = [(name, params)]
        elif all(word in SELECTORS for word in str(entry).split()):
            pairs = [(name, {}) for name in aliases() if get_solver(name).family != "reference"
                     and all(SELECTORS[word](get_solver(name)) for word in entry.split())]
        else:
            get_solver(entry)
            pairs = [(entry, {})]
        out.extend(pair for pair in pairs if pair not in out)
    if not out:
        raise ValueError("solvers: the study selects no solver")
    return out


@functools.lru_cache(maxsize=1)
def aliases() -> dict[str, tuple[str, ...]]:
    """Each distinct solver configuration of the registry under its most specific name (a variant's name rather than
    the family's default name, then the longest), with its other names."""
    groups: dict[tuple, list[str]] = {}
    for name in list_solvers():
        solver = get_solver(name)
        key = (type(solver), tuple(sorted((k, repr(v)) for k, v in solver.describe()["params"].items())))
        groups.setdefault(key, []).append(name)
    chosen = {}
    for names in groups.values():
        default = type(get_solver(names[0])).name
        main = max(names, key=lambda n: (n != default, len(n), n))
        chosen[main] = tuple(sorted(n for n in names if n != main))
    return dict(sorted(chosen.items()))
