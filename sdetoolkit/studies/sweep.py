"""Sweeps: cells (problem x solver with parameters x steps x seed x dtype) run by an executor, rows kept as they finish.

A :class:`Cell` is plain data (hashable, picklable, JSON-keyed), so any engine can run it: the
:class:`Executor` protocol is one method, ``run(cells)``, yielding ``(cell, rows or exception)`` as cells finish.
:class:`LocalExecutor` runs in this process or in a process pool; a Dask or Ray executor maps :func:`run_cell`
over the cells (``client.submit(run_cell, cell)`` with ``as_completed``, or ``ray.remote(run_cell)``) and yields
the same pairs. :class:`ResultStore` appends each finished cell's rows to a CSV file and then its key to a log,
so a killed sweep keeps every finished cell, and a resumed one skips them and discards any half-written rows.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Protocol

import pandas as pd

from .order import OrderFit


@dataclass(frozen=True)
class Cell:
    """One unit of work. ``steps`` holds one step count, or several for studies that couple them (one Brownian path
    shared by every grid); ``params`` and ``options`` are sorted (name, value) pairs (solver parameters, study
    options such as n_samples or the grid)."""

    study: str
    problem: str
    solver: str
    steps: tuple = ()
    seed: int = 0
    dtype: str = "float64"
    params: tuple = ()
    options: tuple = ()

    @classmethod
    def make(cls, study: str, problem: str, solver: str, steps, *, seed: int = 0, dtype: str = "float64",
             params: dict | None = None, options: dict | None = None) -> Cell:
        steps = (int(steps),) if isinstance(steps, int) else tuple(int(n) for n in steps)
        return cls(study, problem, solver, steps, int(seed), dtype, _frozen(params or {}), _frozen(options or {}))

    @property
    def params_column(self) -> str:
        """The solver parameters as the cell's rows write them in their ``params`` column (canonical JSON)."""
        return json.dumps(dict(self.params), sort_keys=True)

    @property
    def key(self) -> str:
        """A canonical JSON string naming the cell (the resume key)."""
        return json.dumps(asdict(self), sort_keys=True, default=str)


def _frozen(mapping: dict) -> tuple:
    """Sorted (name, value) pairs with list values as tuples, so that a cell is hashable."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in mapping.items()))


CellRunner = Callable[[Cell], pd.DataFrame]
Fitter = Callable[[pd.DataFrame], OrderFit | None]
_KINDS: dict[str, tuple[CellRunner, Fitter | None]] = {}
_OPTIONS: dict[str, frozenset | None] = {}


def cell_kind(name: str, fit: Fitter | None = None, options: Iterable[str] | None = None
              ) -> Callable[[CellRunner], CellRunner]:
    """Register the function that runs cells of study kind ``name`` and returns their tidy rows; optionally the
    function that fits an order to the rows of one (problem, solver, parameters, options, seed, dtype, metric), and
    the option names the kind accepts (None: any), so that a misspelt option is refused before a sweep starts."""
    def register(function: CellRunner) -> CellRunner:
        _KINDS[name] = (function, fit)
        _OPTIONS[name] = None if options is None else frozenset(options)
        return function
    return register


def check_options(kind: str, options: dict) -> None:
    """Refuse options a study kind does not take, naming them and the accepted ones."""
    list_cell_kinds()
    accepted = _OPTIONS.get(kind)
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(f"options: {', '.join(unknown)} not taken by the {kind!r} study; it takes "
                         f"{', '.join(sorted(accepted))}")


def fitter(name: str) -> Fitter | None:
    """The order fitter of a study kind (None: the kind measures no order)."""
    list_cell_kinds()
    if name not in _KINDS:
        raise ValueError(f"study: unknown study kind {name!r}; known: {', '.join(sorted(_KINDS))}")
    return _KINDS[name][1]


def list_cell_kinds() -> list[str]:
    from . import cells  # noqa: F401  (registers the built-in kinds)
    return sorted(_KINDS)


def run_cell(cell: Cell) -> pd.DataFrame:
    """Run one cell and return its rows, stamped with the cell key, its run time in seconds, the package version and
    the parameters."""
    from .. import __version__
    from . import cells  # noqa: F401

    if cell.study not in _KINDS:
        raise ValueError(f"study: unknown study kind {cell.study!r}; known: {', '.join(sorted(_KINDS))}")
    start = time.perf_counter()
    rows = _KINDS[cell.study][0](cell)
    return rows.assign(cell_seconds=time.perf_counter() - start, study=cell.study,
                       params=cell.params_column,
                       options=json.dumps(dict(cell.options), sort_keys=True), version=__version__, cell=cell.key)


class Executor(Protocol):
    """Runs cells anywhere; yields each cell with its rows, or with the exception it raised, as it finishes."""

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, pd.DataFrame | BaseException]]: ...


@dataclass
class LocalExecutor:
    """Cells in this process (``workers = 1``) or in a pool of processes with one torch thread each."""

    workers: int = 1

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, pd.DataFrame | BaseException]]:
        cells = list(cells)
        if self.workers <= 1:
            for cell in cells:
                yield cell, _attempt(cell)
            return
        with ProcessPoolExecutor(self.workers, initializer=_one_thread) as pool:
            futures = {pool.submit(_attempt, cell): cell for cell in cells}
            for future in as_completed(futures):
                yield futures[future], future.result()


def _attempt(cell: Cell) -> pd.DataFrame | BaseException:
    try:
        return run_cell(cell)
    except Exception as err:  # a failing cell is a result of the sweep, not its end
        return err


def _one_thread() -> None:
    import torch
    torch.set_num_threads(1)


@dataclass
class ResultStore:
    """Rows in ``<path>`` (CSV), finished cell keys in ``<path>.done``, failures in ``<path>.failed``."""

    path: pathlib.Path
    _done: set = field(default_factory=set, init=False)
    _columns: list | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.path = pathlib.Path(self.path)
        self._done = set(self._lines(self.done_log))
        if self.path.exists():
            text = self.path.read_bytes()
            if text and not text.endswith(b"\n"):  # a row cut by a kill: drop the partial line
                self.path.write_bytes(text[:text.rfind(b"\n") + 1])
            if self.path.stat().st_size:
                table = pd.read_csv(self.path)
                if not table.cell.isin(self._done).all():  # rows of a cell killed mid-write: it will rerun
                    table[table.cell.isin(self._done)].to_csv(self.path, index=False)
                self._columns = list(table.columns)

    @property
    def done_log(self) -> pathlib.Path:
        return self.path.with_name(self.path.name + ".done")

    @property
    def failure_log(self) -> pathlib.Path:
        return self.path.with_name(self.path.name + ".failed")

    @staticmethod
    def _lines(path: pathlib.Path) -> list[str]:
        return path.read_text().splitlines() if path.exists() else []

    def finished(self, cell: Cell) -> bool:
        return cell.key in self._done

    def clear(self) -> None:
        for path in (self.path, self.done_log, self.failure_log):
            path.unlink(missing_ok=True)
        self._done, self._columns = set(), None

    def add(self, cell: Cell, rows: pd.DataFrame) -> None:
        """Append a finished cell's rows, then mark it done (the order makes a kill at any point safe)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._columns is None:
            _write(self.path, rows.to_csv(index=False))
            self._columns = list(rows.columns)
        elif set(rows.columns) <= set(self._columns):
            _write(self.path, rows.reindex(columns=self._columns).to_csv(index=False, header=False))
        else:  # a new column: rewrite the file once with the union of columns
            table = pd.concat([pd.read_csv(self.path), rows], ignore_index=True)
            table.to_csv(self.path, index=False)
            self._columns = list(table.columns)
        _write(self.done_log, cell.key + "\n")
        self._done.add(cell.key)

    def fail(self, cell: Cell, error: BaseException) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write(self.failure_log, json.dumps(dict(cell=cell.key, error=f"{type(error).__name__}: {error}")) + "\n")

    def failures(self) -> list[dict]:
        return [json.loads(line) for line in self._lines(self.failure_log)]

    def table(self) -> pd.DataFrame:
        """Every row of every finished cell."""
        if not self.path.exists():
            return pd.DataFrame()
        table = pd.read_csv(self.path)
        return table[table.cell.isin(self._done)].reset_index(drop=True)


def _write(path: pathlib.Path, text: str) -> None:
    with open(path, "a") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def run_sweep(cells: Iterable[Cell], store: ResultStore, *, executor: Executor | None = None, resume: bool = True,
              progress: bool = True) -> pd.DataFrame:
    """Run the cells not yet in ``store`` (all of them unless ``resume``) and return the store's table.

    Failed cells are logged with their error (and retried on the next resume); the sweep goes on.
    """
    from tqdm.auto import tqdm

    cells = list(dict.fromkeys(cells))
    if not resume:
        store.clear()
    todo = [cell for cell in cells if not store.finished(cell)]
    executor = executor or LocalExecutor()
    with tqdm(total=len(cells), initial=len(cells) - len(todo), disable=not progress, unit="cell") as bar:
        for cell, result in executor.run(todo):
            if isinstance(result, BaseException):
                store.fail(cell, result)
                bar.write(f"failed: {cell.study} {cell.problem} {cell.solver} {cell.steps}: {result}")
            else:
                store.add(cell, result)
            bar.update()
    return store.table()
