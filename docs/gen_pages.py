"""Generate the documentation site's catalogue and reference pages from the code.

* ``catalogue/solvers/``: one page per solver module of the registry (``sdetoolkit.solvers.list_solvers``), with the
  module's formulas, each class's parameters, and one entry per registered name: claims and their sources, the
  measured orders from ``docs/report/orders.csv`` (written by ``sdetoolkit report``) and the recorded findings;
* ``catalogue/problems.md``: every problem of ``problems/`` (``sdetoolkit.list_problems``) with its facts and TOML;
* ``catalogue/findings.md``: every entry of ``sdetoolkit.findings.FINDINGS`` with the report row that reproduces it;
* ``api/``: one mkdocstrings page per public module of ``sdetoolkit/``.

mkdocs-gen-files runs this file during ``mkdocs build`` (see mkdocs.yml) and the pages never touch the disk. To
look at them without mkdocs::

    python docs/gen_pages.py --out /tmp/pages
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import pandas as pd

from sdetoolkit import get_problem, list_problems
from sdetoolkit.catalogue import load_problem_spec
from sdetoolkit.findings import FINDINGS, findings_for
from sdetoolkit.solvers import get_solver, list_solvers
from sdetoolkit.studies.study import aliases

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
ORDERS = DOCS / "report" / "orders.csv"
sys.path.insert(0, str(DOCS))
from rst_markdown import rst_to_markdown  # noqa: E402

SOLVER_DIR = "catalogue/solvers"
MARKS = {"finding reproduced": " *finding*", "finding inconclusive": " *finding?*",
         "finding NOT reproduced": " **finding NOT reproduced**"}
"""The solver index's mark on a measured order, by the report's status (its words before the colon)."""


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _cell(text) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _main_names() -> dict[str, str]:
    """Registered name -> the name the report measures it under (aliases share one configuration)."""
    main = {name: name for name in list_solvers()}
    for chosen, others in aliases().items():
        main.update({other: chosen for other in others})
    return main


def _orders() -> pd.DataFrame:
    orders = pd.read_csv(ORDERS)
    orders["study"] = orders["kind"] + ", " + orders["problem"]
    return orders


def _solver_modules() -> dict[str, dict[type, list[str]]]:
    """Solver module -> its registered classes (in registration order) -> their registered names."""
    modules: dict[str, dict[type, list[str]]] = {}
    for name in list_solvers():
        cls = type(get_solver(name))
        modules.setdefault(cls.__module__, {}).setdefault(cls, []).append(name)
    return modules


def _page_of(module: str) -> str:
    return module.rsplit(".", 1)[1].replace("_", "-") + ".md"


def _title(doc: str) -> str:
    """A docstring's first line up to its first aside: "DPM-Solver++ (Lu et al. ...): ..." -> "DPM-Solver++"."""
    return re.split(r" \(|, |; |: ", doc.strip().split("\n", 1)[0].rstrip("."), maxsplit=1)[0]


def _claims(solver) -> str:
    return "; ".join(f"{_fmt(c.order)} ({c.kind}): {c.source}" for c in solver.claims())


def _measured_table(rows: pd.DataFrame) -> list[str]:
    lines = ["| kind | problem | claimed | measured | interval | local slopes (fine first) | finest error | status |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows.itertuples():
        lines.append(f"| {row.kind} | {row.problem} | {_fmt(row.claimed)} | {row.order:.2f} | "
                     f"[{row.low:.2f}, {row.high:.2f}] | {_fmt(row.local_slopes)} | {row.finest_error:.2e} | "
                     f"{_cell(row.status)} |")
    return lines


def _solver_entry(name: str, main: dict[str, str], orders: pd.DataFrame) -> list[str]:
    solver = get_solver(name)
    info = solver.describe()
    kind = "SDE" if info["stochastic"] else "ODE"
    linearity = "linear (exact moment propagation applies)" if solver.linear else "not linear (Monte Carlo only)"
    params = ", ".join(f"`{k}={v!r}`" for k, v in info["params"].items()) or "none"
    others = sorted(n for n, m in main.items() if m == main[name] and n != name)
    nfe = _fmt(info["nfe_per_step"]) if info["nfe_per_step"] else "adaptive"
    lines = [f"### `{name}` {{ #{name} }}", "",
             f"- **Type:** {kind}, {info['parameterisation']} parameterisation, {linearity}; {nfe} NFE per step, "
             f"{info['history']} past outputs kept.",
             f"- **Parameters:** {params}.",
             f"- **Claimed order:** {_claims(solver).rstrip('.')}.",
             f"- **Source:** {info['citation'].rstrip('.')}."]
    if others:
        lines.append(f"- **Same configuration as:** {', '.join(f'[`{n}`](#{n})' for n in others)}.")
    lines.append("")
    rows = orders[orders.solver == main[name]]
    if len(rows):
        measured_as = "" if main[name] == name else f" (measured as `{main[name]}`)"
        lines += [f"Measured by `sdetoolkit report`{measured_as}:", "", *_measured_table(rows), ""]
    else:
        lines += ["Not measured by `sdetoolkit report` (adaptive references and solvers without a claim of a "
                  "measured kind).", ""]
    for finding in findings_for(name):
        lines += [f"!!! note \"Finding: {finding.kind} order {_fmt(finding.measured)}, claimed "
                  f"{_fmt(finding.claimed)}, on {finding.problem}\"",
                  f"    {finding.explanation} ([all findings](../findings.md#{_finding_anchor(finding)}))", ""]
    return lines


def _parameter_table(cls) -> list[str]:
    lines = ["| parameter | default | choices | meaning |", "|---|---|---|---|"]
    for key, spec in cls.params.items():
        choices = ", ".join(map(repr, spec.choices)) if spec.choices else "–"
        lines.append(f"| `{key}` | `{spec.default!r}` | {_cell(choices)} | {_cell(spec.doc)} |")
    return [*lines, ""]


def _index_row(name: str, page: str, measured: pd.DataFrame, studies: list[str]) -> str:
    """One row of the catalogue's index: the claims, and the report's order per study (marked by ``MARKS`` where a
    finding is recorded)."""
    solver = get_solver(name)
    cells = []
    for study in studies:
        rows = measured[measured.study == study]
        mark = MARKS.get(str(rows.status.iloc[0]).split(":")[0], "") if len(rows) else ""
        cells.append(f"{rows.order.iloc[0]:.2f}{mark}" if len(rows) else "")
    claim = "; ".join(f"{_fmt(c.order)} ({c.kind})" for c in solver.claims())
    return (f"| [`{name}`]({page}#{name}) | {solver.family} | {'SDE' if solver.stochastic else 'ODE'} | {claim} | "
            + " | ".join(cells) + " |")


def solver_pages() -> dict[str, str]:
    """The solver catalogue: an index of every registered name and one page per solver module."""
    main, orders = _main_names(), _orders()
    studies = list(dict.fromkeys(orders["study"]))
    pages = {}
    index = ["# Solver catalogue", "",
             "Generated from the registry (`sdetoolkit.solvers.list_solvers()`): every registered name, its claim, "
             "and the orders `sdetoolkit report` measured (`docs/report/orders.csv`; the full table with intervals "
             "is [Declared vs measured orders](../../report/report.md)). A measured order marked *finding* "
             "reproduces a [recorded finding](../findings.md); *finding?* is consistent with one, but its interval "
             "also holds the claim or an order 0.5 away (the report's *finding inconclusive*: the window cannot "
             "separate the finding from them); **finding NOT reproduced** misses it. Names that build the same "
             "configuration are measured once, under the most specific name.", "",
             "| solver | family | type | claimed | " + " | ".join(studies) + " |",
             "|---|---|---|---|" + "---|" * len(studies)]
    summary = ["* [Overview](index.md)"]
    for module, classes in _solver_modules().items():
        page = _page_of(module)
        doc = sys.modules[module].__doc__ or module
        summary.append(f"* [{_title(doc)}]({page})")
        lines = [f"# {_title(doc)}", "",
                 f"Module `{module}` ([API reference](../../api/{module}.md)).", "",
                 rst_to_markdown(doc.strip()), ""]
        for cls, names in classes.items():
            lines += [f"## `{cls.__name__}`", "", rst_to_markdown((cls.__doc__ or "").strip()), ""]
            if cls.params:
                lines += _parameter_table(cls)
            for name in names:
                lines += _solver_entry(name, main, orders)
                index.append(_index_row(name, page, orders[orders.solver == main[name]], studies))
        pages[f"{SOLVER_DIR}/{page}"] = "\n".join(lines)
    pages[f"{SOLVER_DIR}/index.md"] = "\n".join(index) + "\n"
    pages[f"{SOLVER_DIR}/SUMMARY.md"] = "\n".join(summary) + "\n"
    return pages


def problem_page() -> str:
    """The problem catalogue: an overview table and one section per problem with its facts and its TOML file."""
    problems = [get_problem(name) for name in list_problems()]
    lines = ["# Problem catalogue", "",
             "Generated from `problems/*.toml` (`sdetoolkit.list_problems()`, `sdetoolkit.get_problem(name)`). A "
             "problem is a data distribution, a schedule and a window [t_min, t_max]; sampling starts from the exact "
             "marginal at t_max. The facts are recomputed by the test suite from the data "
             "(`sdetoolkit.reference_facts`), so they cannot drift. See [Ground truth](../ground-truth.md).", "",
             "| problem | dimension | components | schedule | window | condition number | mode separation |",
             "|---|---|---|---|---|---|---|"]
    for p in problems:
        lines.append(f"| [`{p.name}`](#{p.name}) | {p.facts.get('dimension', p.distribution.dim)} | "
                     f"{p.facts.get('n_components', p.distribution.n_components)} | `{p.schedule.name}` | "
                     f"[{p.t_min:g}, {p.t_max:g}] | {_fmt(p.facts.get('condition_number'))} | "
                     f"{_fmt(p.facts.get('mode_separation'))} |")
    lines.append("")
    for p in problems:
        spec = load_problem_spec(p.name)
        schedule = ", ".join(f"{k} = {v:g}" for k, v in p.schedule.params.items())
        lines += [f"## `{p.name}` {{ #{p.name} }}", "", p.description, "",
                  f"Schedule `{p.schedule.name}`" + (f" ({schedule})" if schedule else "") +
                  f", window [{p.t_min:g}, {p.t_max:g}], distribution kind `{spec['distribution']['kind']}`.", "",
                  "| fact | value |", "|---|---|"]
        lines += [f"| {key.replace('_', ' ')} | {_fmt(value)} |" for key, value in p.facts.items()]
        source = (ROOT / "problems" / f"{p.name}.toml").read_text(encoding="utf-8").strip()
        lines += ["", f'??? example "problems/{p.name}.toml"', "    ```toml",
                  *("    " + row if row else "" for row in source.split("\n")), "    ```", ""]
    return "\n".join(lines)


def _finding_anchor(finding) -> str:
    return f"{finding.solver}-{finding.problem}-{finding.kind}"


def findings_page() -> str:
    """Every recorded finding with the report row that reproduces it, grouped by explanation."""
    main, orders = _main_names(), _orders()
    groups: dict[str, list] = {}
    for finding in FINDINGS:
        groups.setdefault(finding.explanation, []).append(finding)
    lines = ["# Every finding, with its evidence", "",
             "Generated from `sdetoolkit.findings.FINDINGS`: every place where a measured order differs from the "
             "claimed one, what was measured and why. *Measured* is the asymptotic order; *window* the order fitted "
             "in the report's window where the rate has not set in yet. The evidence is the row of "
             "`sdetoolkit report` (`docs/report/orders.csv`) for the same solver, problem and kind, where the report "
             "measures it, and its status: *finding reproduced* where the interval holds the finding's order (its "
             "window value where it has one and the row was not refined) and rules out the claim and the orders 0.5 "
             "away; *finding inconclusive* where it holds the finding's order but also one of those, so the window "
             "cannot separate the finding from the claim or a neighbour; *finding NOT reproduced* where it misses "
             "the finding's order. The "
             "global orders are also under test (`tests/test_solver_orders.py`: on gauss-1d a conclusive verdict, "
             "from the report's refined window where the standard one falls short), and so are the weak and strong "
             "findings with a test of their own (e.g. `tests/test_weak_orders.py`, `tests/test_strong.py`, "
             "`tests/test_sa_solver_strong.py`). A summary with the side responsible is in "
             "[Findings](../findings.md).", ""]
    for explanation, findings in groups.items():
        solvers = list(dict.fromkeys(f.solver for f in findings))
        lines += [f"## {', '.join(solvers)}", "",
                  "".join(f'<a id="{_finding_anchor(f)}"></a>' for f in findings) + explanation, "",
                  "| solver | problem | kind | claimed | measured | report: fit [interval] | report: local slopes "
                  "(fine first) | report: status |", "|---|---|---|---|---|---|---|---|"]
        for f in findings:
            rows = orders[(orders.solver == main.get(f.solver, f.solver)) & (orders.problem == f.problem)
                          & (orders.kind.str.split().str[0] == f.kind)]
            evidence = ["not in the report"] * 3
            if len(rows):
                row = rows.iloc[0]
                evidence = [f"{row.order:.2f} [{row.low:.2f}, {row.high:.2f}]", _fmt(row.local_slopes),
                            _cell(row.status.split(":")[0])]
            window = "" if f.window is None else f" (window {_fmt(f.window)})"
            lines.append(f"| [`{f.solver}`](solvers/{_solver_page(f.solver)}#{f.solver}) | {f.problem} | {f.kind} | "
                         f"{_fmt(f.claimed)} | {_fmt(f.measured)}{window} | " + " | ".join(evidence) + " |")
        lines.append("")
    return "\n".join(lines)


def _solver_page(name: str) -> str:
    return _page_of(type(get_solver(name)).__module__)


def api_modules() -> list[str]:
    """Dotted names of sdetoolkit's public modules and packages (none whose own name starts with an underscore)."""
    names = []
    for path in sorted((ROOT / "sdetoolkit").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        names.append(".".join(parts))
    return names


def api_pages() -> dict[str, str]:
    """One page per public module (``::: module`` for mkdocstrings), and the section's navigation."""
    pages, summary = {}, []
    for module in api_modules():
        depth = module.count(".")
        pages[f"api/{module}.md"] = f"# `{module}`\n\n::: {module}\n"
        summary.append("    " * depth + f"* [{module.rsplit('.', 1)[-1]}]({module}.md)")
    pages["api/SUMMARY.md"] = "\n".join(summary) + "\n"
    return pages


def pages() -> dict[str, str]:
    """Every generated page: path under docs/ -> Markdown."""
    return {**solver_pages(), "catalogue/problems.md": problem_page(), "catalogue/findings.md": findings_page(),
            **api_pages()}


if __name__ == "<run_path>":  # mkdocs-gen-files runs this file with runpy.run_path during the build
    import mkdocs_gen_files

    for path, text in pages().items():
        with mkdocs_gen_files.open(path, "w") as handle:
            handle.write(text)
elif __name__ == "__main__":
    parser = argparse.ArgumentParser(description="write the generated pages to a folder (to read them)")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    out = parser.parse_args().out
    for path, text in pages().items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
