"""Regenerate every figure and table in docs/ with one command.

* the declared-vs-measured report (``sdetoolkit report``): rows in analysis/results/report/, the tables and
  figures in docs/report/;
* every study file in analysis/studies/*.toml: rows and fits in analysis/results/<name>/, figures in
  docs/figures/<name>/;
* the scripts beside this file that write into docs/ (trajectories, ER-SDE, weak/strong and symbolic order tables,
  mutation table, interop table).

Every sweep resumes from its rows (``--fresh`` discards them). Run from the repository root::

    OMP_NUM_THREADS=1 python analysis/regenerate.py [--fresh] [--workers 2] [--only report work-precision ...]
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import time

from sdetoolkit import figures
from sdetoolkit.report import run_report, write_report
from sdetoolkit.studies.cells import fit_orders
from sdetoolkit.studies.study import Study
from sdetoolkit.studies.sweep import LocalExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "analysis" / "results"
SCRIPTS = {  # script -> arguments that make it resume rather than start over
    "trajectories.py": [],
    "er_sde_figure.py": [],
    "stochastic_order_table.py": ["--resume"],
    "symbolic_order_table.py": [],
    "mutation_table.py": ["--resume"],
    "interop_table.py": ["--resume"],
}


def report(args) -> None:
    result = run_report(RESULTS / "report", workers=args.workers, resume=not args.fresh)
    for path in write_report(result, ROOT / "docs" / "report"):
        print(f"wrote {path.relative_to(ROOT)}")


def study(path: pathlib.Path, args) -> None:
    spec = Study.from_toml(path)
    out = RESULTS / spec.name
    rows = spec.run(out, executor=LocalExecutor(args.workers), resume=not args.fresh)
    fits = fit_orders(rows)
    fits.to_csv(out / "fits.csv", index=False)
    for written in figures.draw_study(spec.figures, rows, fits, ROOT / "docs" / "figures" / spec.name):
        print(f"wrote {written.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fresh", action="store_true", help="discard finished cells of every sweep")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="names: report, a study name, or a script name")
    args = parser.parse_args()
    studies = {path.stem: path for path in sorted((ROOT / "analysis" / "studies").glob("*.toml"))}
    jobs = ["report", *studies, *SCRIPTS]
    unknown = set(args.only or ()) - set(jobs)
    if unknown:
        parser.error(f"--only: unknown {sorted(unknown)}; known: {jobs}")
    for job in args.only or jobs:
        start = time.perf_counter()
        print(f"== {job}", flush=True)
        if job == "report":
            report(args)
        elif job in studies:
            study(studies[job], args)
        else:
            extra = SCRIPTS[job] if not args.fresh else []
            subprocess.run([sys.executable, str(ROOT / "analysis" / job), *extra], check=True, cwd=ROOT)
        print(f"== {job}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
