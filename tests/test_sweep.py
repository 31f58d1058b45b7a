"""Sweeps: cells, the result store, resuming after a kill, executors, TOML studies."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from sdetoolkit.studies.cells import fit_orders
from sdetoolkit.studies.study import Study, expand_solvers
from sdetoolkit.studies.sweep import Cell, LocalExecutor, ResultStore, run_cell, run_sweep

VOLATILE = ["wall_time", "cell_seconds"]  # timings differ between runs; everything else must not


def small_study(**changes) -> Study:
    spec = dict(name="small", kind="ode", problems=("gauss-1d",), solvers=("ddim", "dpmpp-2m"), steps=(8, 12, 16, 24),
                options={"n_samples": 8})
    return Study(**{**spec, **changes})


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=VOLATILE).sort_values(["cell", "metric"]).reset_index(drop=True)


class Killed(Exception):
    pass


class DiesAfter(LocalExecutor):
    """Runs cells until ``count`` have finished, then dies as a killed process would (nothing after is stored)."""

    def __init__(self, count: int):
        super().__init__(1)
        self.count = count

    def run(self, cells):
        for i, pair in enumerate(super().run(cells)):
            if i == self.count:
                raise Killed
            yield pair


def test_killed_and_resumed_sweep_gives_the_uninterrupted_table(tmp_path):
    study = small_study()
    whole = study.run(tmp_path / "whole", progress=False)
    with pytest.raises(Killed):
        study.run(tmp_path / "killed", executor=DiesAfter(3), progress=False)
    partial = ResultStore(tmp_path / "killed" / "rows.csv").table()
    assert partial.cell.nunique() == 3
    resumed = study.run(tmp_path / "killed", progress=False)
    pd.testing.assert_frame_equal(comparable(resumed), comparable(whole))
    # the resumed run re-ran only the missing cells: the first three kept their original timings
    assert set(partial.cell_seconds) <= set(resumed.cell_seconds)


def test_a_row_cut_by_a_kill_is_discarded_on_resume(tmp_path):
    study = small_study()
    whole = study.run(tmp_path / "whole", progress=False)
    store_path = tmp_path / "cut" / "rows.csv"
    with pytest.raises(Killed):
        study.run(tmp_path / "cut", executor=DiesAfter(2), progress=False)
    finished = set(ResultStore(store_path).table().cell)
    unfinished = next(line for line, cell in zip((tmp_path / "whole" / "rows.csv").read_text().splitlines()[1:],
                                                 whole.cell, strict=True) if cell not in finished)
    with open(store_path, "a") as handle:  # a row of a cell still being written, then a row cut mid-line
        handle.write(unfinished + "\n" + unfinished[:25])
    resumed = study.run(tmp_path / "cut", progress=False)
    pd.testing.assert_frame_equal(comparable(resumed), comparable(whole))


def test_sigkill_mid_sweep_then_resume(tmp_path):
    """A real kill -9 of a sweep process after its first finished cell; the resumed sweep completes the table."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        from sdetoolkit.studies.study import Study
        Study(name="k", kind="ode", problems=("gmm-1d-bimodal",), solvers=("ddim",), steps=(8, 16, 32, 64, 128),
              options={{"n_samples": 4}}).run({str(tmp_path / "out")!r}, progress=False)
    """))
    process = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ, OMP_NUM_THREADS="1"))
    done = tmp_path / "out" / "rows.csv.done"
    try:
        for _ in range(600):
            if done.exists() and done.read_text().count("\n") >= 1:
                break
            if process.poll() is not None:
                break
            subprocess.run(["sleep", "0.1"])
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    finished_before = done.read_text().count("\n")
    assert finished_before >= 1
    study = Study(name="k", kind="ode", problems=("gmm-1d-bimodal",), solvers=("ddim",), steps=(8, 16, 32, 64, 128),
                  options={"n_samples": 4})
    resumed = study.run(tmp_path / "out", progress=False)
    assert sorted(resumed.steps.unique()) == [8, 16, 32, 64, 128]
    assert len(resumed) == 2 * 5


def test_process_pool_gives_the_same_rows_as_in_process(tmp_path):
    study = small_study()
    serial = study.run(tmp_path / "serial", progress=False)
    pooled = study.run(tmp_path / "pooled", executor=LocalExecutor(2), progress=False)
    pd.testing.assert_frame_equal(comparable(pooled), comparable(serial))


def test_failed_cells_are_logged_and_the_sweep_goes_on(tmp_path):
    cells = [Cell.make("ode", "gauss-1d", "ddim", 8), Cell.make("ode", "gauss-1d", "dpmpp-2m", 8,
                                                                 options={"grid": "no-such-grid"})]
    store = ResultStore(tmp_path / "rows.csv")
    table = run_sweep(cells, store, progress=False)
    assert set(table.solver) == {"ddim"}
    (failure,) = store.failures()
    assert "no-such-grid" in failure["error"] and json.loads(failure["cell"])["solver"] == "dpmpp-2m"
    assert not store.finished(cells[1])  # retried on the next resume


def test_rows_carry_version_parameters_and_seed():
    rows = run_cell(Cell.make("ode", "gauss-1d", "unipc", 8, seed=3, params={"order": 2}, options={"n_samples": 4}))
    assert set(rows.metric) == {"rms", "max"}
    assert (rows.seed == 3).all() and (rows.params == '{"order": 2}').all()
    assert rows.version.notna().all() and rows.cell.nunique() == 1


def test_cell_keys_are_canonical():
    a = Cell.make("ode", "gauss-1d", "unipc", 8, params={"order": 2, "variant": "bh1"})
    b = Cell.make("ode", "gauss-1d", "unipc", [8], params={"variant": "bh1", "order": 2})
    assert a == b and a.key == b.key
    assert a.key != Cell.make("ode", "gauss-1d", "unipc", 8, params={"order": 3, "variant": "bh1"}).key


def test_study_from_toml_expands_selectors_and_couples_strong_steps(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""
        [study]
        name = "t"
        kind = "strong"
        problems = ["gauss-1d"]
        solvers = ["ddpm", { name = "ddim-eta", params = { eta = 0.5 } }]
        steps = [32, 16, 64]
        seeds = [0, 1]
        options = { n_samples = 10 }

        [[figures]]
        type = "convergence"
    """))
    study = Study.from_toml(path)
    assert study.steps == (16, 32, 64)
    assert study.solvers == (("ddpm", {}), ("ddim-eta", {"eta": 0.5}))
    cells = study.cells()
    assert len(cells) == 4 and all(cell.steps == (16, 32, 64) for cell in cells)
    assert len(small_study().cells()) == 2 * 4  # per-step cells for the ODE study
    assert study.figures == ({"type": "convergence"},)


def test_selectors():
    stochastic_linear = {name for name, _ in expand_solvers(["stochastic linear"])}
    assert "ddpm" in stochastic_linear
    assert "dpmpp-2m" not in stochastic_linear and "score-sde-pc" not in stochastic_linear
    assert not any(name.startswith("scipy") for name, _ in expand_solvers(["deterministic"]))


@pytest.mark.parametrize("change, message", [
    (dict(kind="nope"), "kind: unknown study kind"),
    (dict(problems=("gauss-2d-nope",)), "problems: unknown"),
    (dict(solvers=("no-solver",)), "name: unknown solver"),
    (dict(solvers=({"name": "unipc", "params": {"order": 9}},)), "order"),
    (dict(steps=(0, 8)), "steps: need positive"),
    (dict(options={"n_sample": 8}), "options: n_sample not taken by the 'ode' study; it takes .*n_samples"),
])
def test_bad_studies_are_refused_before_running(change, message):
    with pytest.raises(ValueError, match=message):
        small_study(**change)


def test_fits_of_a_sweep_recover_the_orders(tmp_path):
    rows = small_study(steps=(32, 48, 64, 96, 128)).run(tmp_path, progress=False)
    fits = fit_orders(rows).set_index(["solver", "metric"])
    assert fits.loc[("ddim", "rms"), "low"] <= 1 <= fits.loc[("ddim", "rms"), "high"]
    assert fits.loc[("dpmpp-2m", "max"), "low"] <= 2 <= fits.loc[("dpmpp-2m", "max"), "high"]


def test_coupled_weak_cells_carry_their_fits(tmp_path):
    """weak-mc on a Gaussian problem takes the exact path: one cell for all steps, one fit per test function, and
    the mean's order contains Euler-Maruyama's weak order 1."""
    study = Study(name="w", kind="weak-mc", problems=("gauss-1d",), solvers=("euler-maruyama",),
                  steps=(16, 32, 64, 128, 256))
    assert len(study.cells()) == 1
    fits = fit_orders(study.run(tmp_path, progress=False)).set_index("test_function")
    assert fits.loc["mean:u0", "low"] <= 1 <= fits.loc["mean:u0", "high"]
    assert len(fits) >= 2


def test_selectors_measure_each_configuration_once():
    """Registry aliases (edm and edm-heun) build the same solver; a selector keeps the variant's name only, and the
    two give identical samples."""
    from sdetoolkit.studies.study import aliases

    table = aliases()
    assert table["edm-heun"] == ("edm",) and "edm" not in table
    names = [name for name, _ in expand_solvers(["all"])]
    assert "edm-heun" in names and "edm" not in names and len(names) == len(set(names))
    rows = [run_cell(Cell.make("ode", "gauss-1d", name, 8, options={"n_samples": 4})) for name in ("edm", "edm-heun")]
    assert rows[0].value.tolist() == rows[1].value.tolist()
