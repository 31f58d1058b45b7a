"""The declared-vs-measured order report: every registered solver on the standard problems (``sdetoolkit report``).

Four studies, each a resumable sweep (:mod:`sdetoolkit.studies.study`):

* ``ode-gauss-1d``: global order of every deterministic solver against the exact flow, 32..256 steps;
* ``ode-gmm-1d-bimodal``: the same against a DOP853 reference, 64..1024 steps (some rates set in late);
* ``weak-gauss-1d``: exact weak order (W2 of the output law, no Monte Carlo) of every linear stochastic solver,
  16..256 steps;
* ``strong-gauss-1d``: strong order of every stochastic solver on one Brownian path, 16..128 steps against a
  16 times finer run, 200 trajectories.

Registry aliases (two names, one configuration) are measured once. Each fitted order is compared with the solver's
claim of that kind and with the findings recorded in :mod:`sdetoolkit.findings` (a recorded finding must be
reproduced: its order inside the interval). The status says which: ``agrees``, ``finding reproduced``, ``finding NOT
reproduced``, ``faster than claimed``, ``no claim``, or ``MISMATCH`` (a claim outside the interval with no recorded
explanation). Written: ``rows.csv`` per study, ``orders.csv``, ``report.md``, ``report.tex`` and one convergence
figure per study (PDF and PNG).
"""

from __future__ import annotations

import pathlib
import re
import time
from dataclasses import dataclass

import pandas as pd

from .findings import findings_for
from .solvers import get_solver
from .studies.cells import fit_orders
from .studies.study import Study, aliases
from .studies.sweep import LocalExecutor

STUDIES = (
    Study(name="ode-gauss-1d", kind="ode", problems=("gauss-1d",), solvers=("deterministic claimed",),
          steps=(32, 48, 64, 96, 128, 192, 256), options={"n_samples": 64}),
    Study(name="ode-gmm-1d-bimodal", kind="ode", problems=("gmm-1d-bimodal",), solvers=("deterministic claimed",),
          steps=(64, 96, 128, 256, 512, 1024), options={"n_samples": 32}),
    Study(name="weak-gauss-1d", kind="weak-exact", problems=("gauss-1d",), solvers=("stochastic linear",),
          steps=(16, 24, 32, 48, 64, 128, 256)),
    Study(name="strong-gauss-1d", kind="strong", problems=("gauss-1d",), solvers=("stochastic",),
          steps=(16, 32, 64, 128), options={"n_samples": 200}),
)
VERDICT_METRIC = {"ode": "rms", "weak-exact": "w2_marginal", "weak-mc": "weak_error", "strong": "strong"}
KIND_LABEL = {"ode": "global (ODE)", "weak-exact": "weak (exact W2)", "weak-mc": "weak (Monte Carlo)",
              "strong": "strong"}
CLAIM_KIND = {"ode": "global", "weak-exact": "weak", "weak-mc": "weak", "strong": "strong"}
COLUMNS = ["solver", "problem", "kind", "claimed", "order", "low", "high", "local_slopes", "dropped", "finest_error",
           "status"]


@dataclass(frozen=True)
class Report:
    """The order table (one row per solver, problem and kind), every study's rows, the wall-clock seconds of this
    run per study, and the compute seconds of its cells (summed over the cells, whenever they ran)."""

    orders: pd.DataFrame
    rows: dict
    seconds: dict
    compute: dict


def claimed_order(solver, kind: str) -> float | None:
    """The order ``solver`` claims of this kind; a deterministic solver's global order also bounds its weak one."""
    for claim in solver.claims():
        if claim.order is not None and (claim.kind == kind or (kind == "weak" and claim.kind == "global")):
            return claim.order
    return None


def verdict(row: dict) -> str:
    """The status of one fitted order against the claim and the recorded findings (see the module docstring)."""
    if row.get("note"):
        return f"not fitted: {row['note']}"
    kind = CLAIM_KIND[row["study"]]
    names = (row["solver"], *aliases().get(row["solver"], ()))
    recorded = [f for name in names for f in findings_for(name) if f.problem == row["problem"] and f.kind == kind]
    low, high, claimed = row["low"], row["high"], row["claimed"]
    if recorded:
        expected = recorded[0].window if recorded[0].window is not None else recorded[0].measured
        reproduced = low <= expected <= high
        window = "" if recorded[0].window is None else f" (in this window {recorded[0].window:g})"
        return (f"finding {'reproduced' if reproduced else 'NOT reproduced'}: measured {recorded[0].measured:g}"
                + window + ("" if claimed is None else f", claimed {claimed:g}"))
    if claimed is None:
        return "no claim"
    if low <= claimed <= high:
        return "agrees"
    if low > claimed:
        return "faster than claimed"
    return "MISMATCH: claim outside the interval, no recorded finding"


def order_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The declared-vs-measured table of one study's rows: the verdict metric's fit per solver and problem."""
    fits = fit_orders(rows)
    fits = fits[fits.metric == fits.study.map(VERDICT_METRIC)]
    out = []
    for _, fit in fits.iterrows():
        row = fit.to_dict()
        row["claimed"] = claimed_order(get_solver(row["solver"]), CLAIM_KIND[row["study"]])
        row["status"] = verdict(row)
        row["kind"] = KIND_LABEL[row["study"]]
        out.append(row)
    return pd.DataFrame(out).reindex(columns=COLUMNS)


def run_report(out="report", *, studies=STUDIES, workers: int = 1, resume: bool = True,
               progress: bool = True) -> Report:
    """Run (or resume) every study into ``out`` and build the order table."""
    out = pathlib.Path(out)
    rows, seconds, tables = {}, {}, []
    for study in studies:
        start = time.perf_counter()
        rows[study.name] = study.run(out / study.name, executor=LocalExecutor(workers), resume=resume,
                                     progress=progress)
        seconds[study.name] = time.perf_counter() - start
        if len(rows[study.name]):
            tables.append(order_table(rows[study.name]))
    orders = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    compute = {name: float(table.drop_duplicates("cell").cell_seconds.sum()) if len(table) else 0.0
               for name, table in rows.items()}
    return Report(orders=orders, rows=rows, seconds=seconds, compute=compute)


def summary(orders: pd.DataFrame) -> dict:
    """How many rows have each status (findings and mismatches counted by their first words)."""
    words = orders.status.str.extract(r"^(agrees|finding reproduced|finding NOT reproduced|faster than claimed|"
                                      r"no claim|MISMATCH|not fitted)")[0]
    return words.value_counts().to_dict()


def markdown(report: Report) -> str:
    """The report as Markdown: what was run, the status counts, and the table."""
    counts = ", ".join(f"{n} {status}" for status, n in summary(report.orders).items())
    lines = ["# Declared vs measured orders", "",
             "Generated by `sdetoolkit report`. " + _markdown_text("\n\n".join(__doc__.split("\n\n")[1:4])), "",
             f"Status counts: {counts}.", "",
             "Compute seconds per study (sum over its cells): " + ", ".join(
                 f"{k} {v:.0f}" for k, v in report.compute.items()) + f"; total {sum(report.compute.values()):.0f}.",
             "",
             "| solver | problem | kind | claimed | measured | interval | local slopes (fine first) | finest error "
             "| status |", "|---|---|---|---|---|---|---|---|---|"]
    for _, row in report.orders.iterrows():
        measured = "" if pd.isna(row.order) else f"{row.order:.2f}"
        interval = "" if pd.isna(row.low) else f"[{row.low:.2f}, {row.high:.2f}]"
        claimed = "" if pd.isna(row.claimed) else f"{row.claimed:g}"
        error = "" if pd.isna(row.finest_error) else f"{row.finest_error:.2e}"
        slopes = "" if pd.isna(row.local_slopes) else row.local_slopes
        dropped = f" (dropped {row.dropped})" if isinstance(row.dropped, str) and row.dropped else ""
        also = aliases().get(row.solver, ())
        name = row.solver + (f" (= {', '.join(also)})" if also else "")
        lines.append(f"| {name} | {row.problem} | {row.kind} | {claimed} | {measured} | {interval} | {slopes} "
                     f"| {error} | {row.status}{dropped} |")
    return "\n".join(lines) + "\n"


def _markdown_text(rst: str) -> str:
    """Docstring text as Markdown: double backticks and :mod: roles become code, bullet items keep their lines, and
    paragraphs stay apart."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", rst).replace("``", "`")
    return re.sub(r"(?<!\n)\n(?![*\n])\s*", " ", text)


def write_report(report: Report, out="report", *, figures: bool = True) -> list[pathlib.Path]:
    """Write orders.csv, report.md, report.tex and (``figures``) one convergence figure per study."""
    from . import figures as fig

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "orders.csv", out / "report.md", out / "report.tex"]
    report.orders.to_csv(written[0], index=False)
    written[1].write_text(markdown(report))
    written[2].write_text(fig.order_table_latex(report.orders, caption="Claimed and measured orders "
                                                "(sdetoolkit report).", label="tab:orders"))
    if figures:
        for name, rows in report.rows.items():
            if len(rows):
                written.extend(fig.save(family_panels(rows, report.orders), out / "figures" / name))
    return written


def family_panels(rows: pd.DataFrame, orders: pd.DataFrame):
    """One convergence panel per solver family (the verdict metric against steps, fits in the legends)."""
    from matplotlib.figure import Figure

    from . import figures as fig

    study = str(rows.study.iloc[0])
    rows = rows[rows.metric == VERDICT_METRIC[study]]
    family = rows.solver.map(lambda name: get_solver(name).family)
    families = sorted(family.unique())
    columns = 3
    grid_rows = -(-len(families) // columns)
    with fig.style():
        figure = Figure(figsize=(3.4 * columns, 3.1 * grid_rows), layout="constrained")
        axes = figure.subplots(grid_rows, columns, squeeze=False).ravel()
        for ax, name in zip(axes, families, strict=False):
            part = rows[family == name]
            fits = orders[orders.solver.isin(part.solver.unique()) & (orders.problem == part.problem.iloc[0])
                          & (orders.kind == KIND_LABEL[study])]
            fig.convergence(part, fits[["solver", "order", "low", "high", "claimed"]].dropna(subset=["order"]),
                            ax=ax, ylabel=VERDICT_METRIC[study])
            ax.set_title(f"{name} ({part.problem.iloc[0]})")
        for ax in axes[len(families):]:
            ax.set_visible(False)
    return figure
