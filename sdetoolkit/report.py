"""The declared-vs-measured order report: every registered solver on the standard problems (``sdetoolkit report``).

Four studies, each a resumable sweep (:mod:`sdetoolkit.studies.study`):

* ``ode-gauss-1d``: global order of every deterministic solver against the exact flow, 32..256 steps;
* ``ode-gmm-1d-bimodal``: the same against a DOP853 reference, 64..1024 steps (some rates set in late);
* ``weak-gauss-1d``: exact weak order (W2 of the output law, no Monte Carlo) of every linear stochastic solver,
  16..256 steps;
* ``strong-gauss-1d``: strong order of every stochastic solver on one Brownian path, 16..128 steps against a
  16 times finer run, 200 trajectories.

Registry aliases (two names, one configuration) are measured once. Each fitted order is compared with the solver's
claim of that kind and with the findings recorded in :mod:`sdetoolkit.findings`. The status says which:

* ``agrees``: the claim is inside the interval and the interval rules out the claim ± 0.5;
* ``inconclusive``: the claim is inside, but so is a neighbour at ± 0.5 (a wide interval, or local
  slopes that drift: the window has not reached the asymptotic rate);
* ``finding reproduced``: one of a recorded finding's orders (its value in the standard window, or its asymptotic
  order) is inside, and its neighbours at ± 0.5 and the claim are not; ``finding inconclusive``: inside, but so is
  one of those; ``finding NOT reproduced``: neither is inside (a stale finding is flagged, not hidden);
* ``faster than claimed``; ``no claim``; ``MISMATCH``: a claim above the interval with no recorded explanation;
  ``not fitted``: too few points above the floors, with the reason.

A row left inconclusive, or missing its finding, is measured again on doublings of the study's finest step
count (four for ``ode-gauss-1d``, two for the others) and fitted on the last three doublings; a coupled (strong)
row is fitted on its whole refined cell. The refined fit replaces the row where its interval is narrower (the
``steps`` column shows the window fitted); a rate that is no single power law over the longer window usually fits
wider there and keeps its first verdict.

Written: ``rows.csv`` per study, ``orders.csv``, ``report.md``, ``report.tex`` and one convergence figure per study
(PDF and PNG).
"""

from __future__ import annotations

import pathlib
import re
import time
from dataclasses import dataclass, replace

import pandas as pd

from .findings import findings_for
from .solvers import get_solver
from .studies.cells import fit_orders
from .studies.study import COUPLED_KINDS, Study, aliases
from .studies.sweep import Cell, LocalExecutor

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
AXIS_LABEL = {"ode": "RMS error at $t_{min}$", "weak-exact": "$W_2$ to the exact marginal",
              "weak-mc": "weak error", "strong": "RMS pathwise error"}
KIND_LABEL = {"ode": "global (ODE)", "weak-exact": "weak (exact W2)", "weak-mc": "weak (Monte Carlo)",
              "strong": "strong"}
RESOLUTION = 0.5  # orders this far apart must be told apart (strong orders come in halves)
CLAIM_KIND = {"ode": "global", "weak-exact": "weak", "weak-mc": "weak", "strong": "strong"}
FIT_KEY = ["problem", "solver", "params", "options", "seed", "dtype"]
COLUMNS = ["solver", "problem", "kind", "steps", "claimed", "order", "low", "high", "local_slopes", "dropped",
           "finest_error", "status", "params", "options", "seed", "dtype", "test_function"]
REFINEMENTS = {"ode-gauss-1d": 4}
"""Doublings of a study's finest step count measured where its window leaves a row inconclusive (2 where not
listed: the mixture's reference and the strong study's 16-times-finer runs make more costly)."""


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
    """The status of one fitted order against the claim and the recorded findings (see the module docstring).

    A finding is reproduced by either of its orders: the one recorded for the standard window (``window``, tried
    first) or the asymptotic one (``measured``; tried first where the window was refined, ``row["refined"]``).
    Findings are recorded for registered configurations, so a row with other parameters (``row["params"]``) is
    judged against the claim alone."""
    if row.get("note"):
        return f"not fitted: {row['note']}"
    kind = CLAIM_KIND[row["study"]]
    names = (row["solver"], *aliases().get(row["solver"], ()))
    custom = isinstance(row.get("params"), str) and row["params"] != "{}"
    recorded = [] if custom else [f for name in names for f in findings_for(name)
                                  if f.problem == row["problem"] and f.kind == kind]
    low, high, claimed = row["low"], row["high"], row["claimed"]
    if recorded:
        finding = recorded[0]
        orders = [finding.window, finding.measured][::-1 if row.get("refined") else 1]
        orders = [order for order in orders if order is not None]
        expected = next((order for order in orders if low <= order <= high), orders[0])
        window = f" (in this window {finding.window:g})" if expected == finding.window != finding.measured else ""
        said = f"measured {finding.measured:g}" + window + ("" if claimed is None else f", claimed {claimed:g}")
        if not low <= expected <= high:
            return f"finding NOT reproduced: {said}"
        others = sorted(set(rivals(low, high, expected) + ([] if claimed is None or claimed == expected
                                                           or not low <= claimed <= high else [claimed])))
        if others:
            return f"finding inconclusive: {said}; the interval also holds {listed(others)}"
        return f"finding reproduced: {said}"
    if claimed is None:
        return "no claim"
    if low <= claimed <= high:
        others = rivals(low, high, claimed)
        return f"inconclusive: the interval also holds {listed(others)}" if others else "agrees"
    if low > claimed:
        return "faster than claimed"
    return "MISMATCH: claim outside the interval, no recorded finding"


def rivals(low: float, high: float, order: float) -> list:
    """The orders ``RESOLUTION`` away from ``order`` that the interval [low, high] cannot rule out: a verdict on
    ``order`` is conclusive only when there are none."""
    return [p for p in (order - RESOLUTION, order + RESOLUTION) if low <= p <= high]


def listed(orders: list) -> str:
    """Orders as a status names them: "0.5 and 1.5"."""
    return " and ".join(f"{p:g}" for p in orders)


def order_table(rows: pd.DataFrame, *, refined: bool = False) -> pd.DataFrame:
    """The declared-vs-measured table of one study's rows: the verdict metric's fit per configuration (solver and
    parameters, problem, options, seed, dtype, and test function where the study has them)."""
    fits = fit_orders(rows)
    fits = fits[fits.metric == fits.study.map(VERDICT_METRIC)]
    if not len(fits):
        return pd.DataFrame(columns=COLUMNS)
    key = fit_key(fits)
    spans = rows.groupby(key, dropna=False).steps.agg(["min", "max"])
    out = []
    for _, fit in fits.iterrows():
        row = fit.to_dict()
        row["claimed"] = claimed_order(get_solver(row["solver"]), CLAIM_KIND[row["study"]])
        row["refined"] = refined
        row["status"] = verdict(row)
        row["kind"] = KIND_LABEL[row["study"]]
        low, high = spans.loc[tuple(row[c] for c in key)]
        row["steps"] = f"{low:g}..{high:g}"
        out.append(row)
    return pd.DataFrame(out).reindex(columns=COLUMNS)


def fit_key(table: pd.DataFrame) -> list[str]:
    """The columns that tell one fitted configuration from another (a Monte Carlo weak study adds the test
    function)."""
    return FIT_KEY + (["test_function"] if "test_function" in table and table.test_function.notna().any() else [])


def unsettled(orders: pd.DataFrame) -> pd.DataFrame:
    """The rows a longer window may settle: inconclusive ones, and findings the window did not reproduce (their
    rate may set in later)."""
    return orders[orders.status.str.contains("inconclusive|NOT reproduced", na=False)]


def refinement(study: Study, orders: pd.DataFrame) -> Study | None:
    """The follow-up study for the :func:`unsettled` rows of ``study``: their solver configurations and problems,
    with the study's options, on ``REFINEMENTS`` doublings of the finest step count (every step count for a coupled
    study, whose cell holds them all); None when every row is settled.

    The refined fit uses the fine end of the window, the last three doublings (step counts from an eighth of the
    finest on), so that a drifting rate is fitted where it has (nearly) settled; a coupled study's fit is its
    refined cell's own (the whole refined window, coupled errors)."""
    open_rows = unsettled(orders)
    if not len(open_rows):
        return None
    wanted = set(zip(open_rows.solver, open_rows.params, strict=True))
    solvers = tuple({"name": name, "params": params} for name, params in study.solvers
                    if (name, _params_column(study, name, params)) in wanted)
    extra = tuple(max(study.steps) * 2**j for j in range(1, REFINEMENTS.get(study.name, 2) + 1))
    steps = tuple(study.steps) + extra if study.kind in COUPLED_KINDS else extra
    return replace(study, name=f"{study.name}-refined", problems=tuple(sorted(set(open_rows.problem))),
                   solvers=solvers, steps=steps)


def _params_column(study: Study, name: str, params: dict) -> str:
    """The ``params`` column that the cells of this solver configuration write."""
    return Cell.make(study.kind, study.problems[0], name, study.steps, params=params).params_column


def _narrower(orders: pd.DataFrame, refined: pd.DataFrame, key: list[str]) -> tuple[pd.DataFrame, list]:
    """``orders`` (in its order) with each row that has a refined fit of narrower interval replaced by it, and the
    keys replaced. A rate that is no single power law over the longer window (a jump, a stall) usually fits wider
    there, and then keeps its first verdict. A finding the standard window did not reproduce says so after its new
    status."""
    table, better = orders.set_index(key), refined.set_index(key)
    replaced = [k for k in better.index if k in table.index
                and better.at[k, "high"] - better.at[k, "low"] < table.at[k, "high"] - table.at[k, "low"]]
    for k in replaced:
        first = table.at[k, "status"]
        table.loc[k] = better.loc[k, table.columns]
        if first.startswith("finding NOT reproduced"):
            table.at[k, "status"] += f" (the standard window did not reproduce it: {first})"
    return table.reset_index()[orders.columns], replaced


def _matching(frame: pd.DataFrame, keys: list, key: list[str]) -> pd.Series:
    """Which rows of ``frame`` belong to one of the configurations ``keys`` (tuples over ``key``)."""
    wanted = set(keys)
    return pd.Series([tuple(row) in wanted for row in frame[key].itertuples(index=False)], index=frame.index)


def run_report(out="report", *, studies=STUDIES, workers: int = 1, resume: bool = True,
               progress: bool = True) -> Report:
    """Run (or resume) every study into ``out``, refine its :func:`unsettled` rows (see :func:`refinement`; the
    refined fit replaces a row where its interval is narrower), and build the order table. ``Report.rows`` holds
    each study's rows as its fits use them: a replaced configuration's refined rows join its standard ones (a
    coupled study's refined cell takes the place of the standard one)."""
    out = pathlib.Path(out)
    rows, seconds, tables = {}, {}, []
    for study in studies:
        start = time.perf_counter()
        table = study.run(out / study.name, executor=LocalExecutor(workers), resume=resume, progress=progress)
        orders = order_table(table) if len(table) else pd.DataFrame(columns=COLUMNS)
        follow_up = refinement(study, orders)
        if follow_up is not None:
            extra = follow_up.run(out / follow_up.name, executor=LocalExecutor(workers), resume=resume,
                                  progress=progress)
            key = fit_key(orders)
            open_keys = list(unsettled(orders)[key].itertuples(index=False, name=None))
            if study.kind in COUPLED_KINDS:
                pool = extra
            else:
                pool = pd.concat([table, extra], ignore_index=True)
                pool = pool[pool.steps >= max(follow_up.steps) / 8]
            again = order_table(pool[_matching(pool, open_keys, key)], refined=True)
            orders, replaced = _narrower(orders, again, key)
            if study.kind in COUPLED_KINDS:
                table = pd.concat([table[~_matching(table, replaced, key)], extra[_matching(extra, replaced, key)]],
                                  ignore_index=True)
            else:
                table = pd.concat([table, extra[_matching(extra, replaced, key)]], ignore_index=True)
        rows[study.name], seconds[study.name] = table, time.perf_counter() - start
        tables.append(orders)
    orders = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
    compute = {name: float(table.drop_duplicates("cell").cell_seconds.sum()) if len(table) else 0.0
               for name, table in rows.items()}
    return Report(orders=orders, rows=rows, seconds=seconds, compute=compute)


def summary(orders: pd.DataFrame) -> dict:
    """How many rows have each status (findings and mismatches counted by their first words)."""
    words = orders.status.str.extract(r"^(agrees|inconclusive|finding reproduced|finding inconclusive|"
                                      r"finding NOT reproduced|faster than claimed|no claim|MISMATCH|not fitted)")[0]
    return words.value_counts().to_dict()


def markdown(report: Report) -> str:
    """The report as Markdown: what was run, the status counts, and the table."""
    counts = ", ".join(f"{n} {status}" for status, n in summary(report.orders).items())
    lines = ["# Declared vs measured orders", "",
             "Generated by `sdetoolkit report`. " + _markdown_text("\n\n".join(__doc__.split("\n\n")[1:6])), "",
             f"Status counts: {counts}.", "",
             "Compute seconds per study (sum over its cells): " + ", ".join(
                 f"{k} {v:.0f}" for k, v in report.compute.items()) + f"; total {sum(report.compute.values()):.0f}.",
             "",
             "| solver | problem | kind | steps | claimed | measured | interval | local slopes (fine first) "
             "| finest error | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for _, row in report.orders.iterrows():
        measured = "" if pd.isna(row.order) else f"{row.order:.2f}"
        interval = "" if pd.isna(row.low) else f"[{row.low:.2f}, {row.high:.2f}]"
        claimed = "" if pd.isna(row.claimed) else f"{row.claimed:g}"
        error = "" if pd.isna(row.finest_error) else f"{row.finest_error:.2e}"
        slopes = "" if pd.isna(row.local_slopes) else row.local_slopes
        dropped = f" (dropped {row.dropped})" if isinstance(row.dropped, str) and row.dropped else ""
        also = aliases().get(row.solver, ())
        name = row.solver + (f" (= {', '.join(also)})" if also else "")
        lines.append(f"| {name} | {row.problem} | {row.kind} | {row.steps} | {claimed} | {measured} | {interval} "
                     f"| {slopes} | {error} | {row.status}{dropped} |")
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
    """One convergence panel per solver family (the verdict metric against steps), busiest families first (rows of
    similar height), two to a row across a two-column page; under each panel a key table of its fits and claims."""
    from . import figures as fig

    study = str(rows.study.iloc[0])
    rows = rows[rows.metric == VERDICT_METRIC[study]]
    family = rows.solver.map(lambda name: get_solver(name).family)
    sizes = rows.groupby(family).solver.nunique()
    families = sorted(sizes.index, key=lambda name: (-sizes[name], name))
    figure, panels = fig.keyed_panels([sizes[name] for name in families])
    with fig.style():
        for (ax, key), name in zip(panels, families, strict=True):
            part = rows[family == name]
            fits = orders[orders.solver.isin(part.solver.unique()) & (orders.problem == part.problem.iloc[0])
                          & (orders.kind == KIND_LABEL[study])]
            fig.convergence(part, fits[["solver", "order", "low", "high", "claimed"]].dropna(subset=["order"]),
                            ax=ax, key=key, ylabel=AXIS_LABEL[study])
            ax.set_title(f"{name} ({part.problem.iloc[0]})")
    return figure
