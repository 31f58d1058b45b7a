r"""Publication figures and LaTeX tables drawn from study results; nothing here runs a solver.

Every function takes the tidy tables of :mod:`sdetoolkit.studies` (one row per problem, solver, steps, seed and
metric; extra columns are ignored) and returns a :class:`matplotlib.figure.Figure` (or a string, for the table).
Figures are built on :class:`~matplotlib.figure.Figure` directly, without pyplot, so no backend and no global
figure list are involved; :func:`save` writes PDF and PNG. :func:`keyed_panels` lays out small multiples whose
keys sit in their own area under each panel (a table of fits, never over the data).

Rows repeated at one x (several seeds) are drawn as their mean, with the standard error of that mean across the
rows; a single row keeps its own ``stderr`` (NaN: an exact value, drawn without an error bar). Rows repeated within
one seed mean that some other key varies (a study parameter): that is an error naming the column, to be filtered
or added to ``by``. On a log axis an
error bar stops at a tenth of its value: a bar that would cross zero marks a point within noise of zero.

The style (:data:`STYLE`, :func:`style`) is one serif, mathtext-ready style sized for a 3.5 in column: the
Okabe-Ito colour-blind-safe palette (Okabe & Ito 2008, *Color Universal Design*), each colour paired with its own
line style and marker so that a figure survives greyscale printing.
"""

from __future__ import annotations

import itertools
import math
import pathlib

import matplotlib
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.textpath import text_to_path
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import Affine2D, ScaledTranslation

ONE_COLUMN = (3.5, 2.6)
"""Figure size (inches) for one column of a two-column paper."""
TWO_COLUMN = (7.2, 2.8)
"""Figure size (inches) across both columns."""

COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":", (0, (6, 2, 1, 2, 1, 2)), (0, (10, 3)), (0, (3, 1, 1, 1)))

STYLE = {
    "font.family": "serif",
    "font.serif": ["STIXGeneral", "DejaVu Serif"],
    "mathtext.fontset": "stix",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "legend.handlelength": 3.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.3,
    "grid.color": "0.85",
    "axes.prop_cycle": cycler(color=COLOURS) + cycler(marker=MARKERS) + cycler(linestyle=LINESTYLES),
    "lines.linewidth": 1.1,
    "lines.markersize": 3.5,
    "errorbar.capsize": 1.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "figure.figsize": ONE_COLUMN,
    "figure.constrained_layout.use": True,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,
}
"""rcParams of the publication style (``matplotlib.rcParams.update(STYLE)`` makes it global)."""

METRIC_LABELS = {"rms": "RMS error", "max": "max error", "w2": "$W_2$", "mmd": "MMD", "kl": "KL divergence",
                 "nll": "NLL"}
_X_LABELS = {"steps": "steps $N$", "nfe": "model evaluations (NFE)", "h": "step size $h = 1/N$"}


def style():
    """Context manager applying :data:`STYLE` (``with style(): ...``)."""
    return matplotlib.rc_context(STYLE)


def line_style(i: int) -> dict:
    """Colour, marker and line style of the i-th curve: the three cycle together for the first seven curves, and
    marker and line style shift against the colour afterwards, so 49 curves stay distinct."""
    return dict(color=COLOURS[i % 7], marker=MARKERS[(i + i // 7) % 7], linestyle=LINESTYLES[(i + 2 * (i // 7)) % 7])


# -- figures ------------------------------------------------------------------------------------------------------
def convergence(table: pd.DataFrame, fits: pd.DataFrame | None = None, *, x: str = "steps", metric: str | None = None,
                by="solver", names=None, ax=None, key=None, reference_orders=(1, 2, 3),
                ylabel: str | None = None) -> Figure:
    """Log-log error (column ``value``) against steps, NFE or h = 1/steps, one curve per ``by`` group.

    ``fits`` (columns ``by``, order, low, high, optionally claimed) puts each fit in the legend, e.g.
    ``dpmpp-2m: p = 2.01 [1.98, 2.03] (claimed 2)``. ``reference_orders`` draws slope triangles labelled
    ``p = 1`` ... in the emptiest corner (slopes -p against steps or NFE, +p against h).

    ``names`` (here and in the other figures) lists group names in the order that fixes their styles and legend
    order, so that several figures draw each solver alike; groups not in it follow in order of appearance.
    ``ax`` draws into a caller's axes (legend inside them) and returns its figure. ``key``, an axes of that figure
    (e.g. from :func:`keyed_panels`), takes the legend out of ``ax`` as a table: line sample, name and, with
    ``fits``, the fitted p, its interval and the claim in aligned columns (no repeated words, so it reads by column).
    """
    if x not in _X_LABELS:
        raise ValueError(f"x: expected one of {', '.join(_X_LABELS)}, got {x!r}")
    if key is not None and (ax is None or key.figure is not ax.figure):
        raise ValueError("key: give it with ax, both axes of one figure")
    by = _columns(by)
    table, metric = _prepare(table, by + ["steps", "value"] + (["nfe"] if x == "nfe" else []), metric, by)
    _check_positive(table, "steps" if x == "h" else x, "table")
    table = table.assign(h=1.0 / table["steps"]) if x == "h" else table
    fitted = _fit_values(fits, by) if fits is not None else {}
    labels = _fit_labels(fitted)
    own = ax is None
    fig, ax = _figure(ax, _legend_height(table.groupby(by).ngroups, long=bool(labels)))
    with style():
        order = _group_order(table, by, names)
        handles = _draw_curves(ax, table, by, key="steps", x=x, labels=labels, order=order)
        ax.set(xscale="log", yscale="log", xlabel=_X_LABELS[x], ylabel=ylabel or METRIC_LABELS.get(metric, metric))
        _title(ax, table)
        _log_ticks(ax)
        if reference_orders:
            _slope_triangles(ax, reference_orders, rising=x == "h")
        if key is None:
            _legend(fig, None if own else ax, handles, long=bool(labels))
        else:
            _key_table(key, list(handles), order, fitted, header=", ".join(by))
    return fig


def error_vs_nfe(table: pd.DataFrame, *, metric: str | None = None, by="solver", names=None, ax=None,
                 ylabel: str | None = None) -> Figure:
    """Log-log distance or error (``value``, e.g. W2, MMD, KL) against NFE, one curve per ``by`` group."""
    return convergence(table, x="nfe", metric=metric, by=by, names=names, ax=ax, reference_orders=(), ylabel=ylabel)


def work_precision(table: pd.DataFrame, *, metric: str | None = None, by="solver", names=None, ax=None,
                   ylabel: str | None = None) -> Figure:
    """Log-log error (``value``) against wall-clock time (column ``wall_time``, seconds), one curve per ``by`` group,
    its points joined in the order of ``steps`` (times are averaged over repeated rows, like the errors)."""
    by = _columns(by)
    table, metric = _prepare(table, [*by, "steps", "wall_time", "value"], metric, by)
    _check_positive(table, "wall_time", "table")
    own = ax is None
    fig, ax = _figure(ax, _legend_height(table.groupby(by).ngroups, long=False))
    with style():
        handles = _draw_curves(ax, table, by, key="steps", x="wall_time", labels={},
                               order=_group_order(table, by, names))
        ax.set(xscale="log", yscale="log", xlabel="wall-clock time (s)",
               ylabel=ylabel or METRIC_LABELS.get(metric, metric))
        _title(ax, table)
        _log_ticks(ax)
        _legend(fig, None if own else ax, handles, long=False)
    return fig


def one_step_error(table: pd.DataFrame, *, x: str = "h", metric: str | None = None, by="solver", names=None, at=None,
                   reference_orders=(2, 3, 4), ylabel: str | None = None) -> Figure:
    """One-step errors (``value``) against the step size h (one panel per start time t) or against t (one panel per
    h), log-log, one curve per ``by`` group and a shared y axis.

    ``at`` lists the values of the other variable to show (matched to 1e-9 relative); by default all of them when
    there are at most four, else four spread evenly over the sorted values. Against h, slope triangles of
    ``reference_orders`` (the local orders p + 1 of order-p methods) are drawn.
    """
    if x not in ("h", "t"):
        raise ValueError(f"x: expected 'h' or 't', got {x!r}")
    by, other = _columns(by), "t" if x == "h" else "h"
    table, metric = _prepare(table, [*by, "t", "h", "value"], metric, by)
    _check_positive(table, x, "table")
    values = np.sort(table[other].unique())
    if at is None:
        at = values if len(values) <= 4 else values[np.round(np.linspace(0, len(values) - 1, 4)).astype(int)]
    shown = [v for v in np.atleast_1d(np.asarray(at, dtype=float)) if np.isclose(values, v, rtol=1e-9, atol=0).any()]
    if len(shown) != len(np.atleast_1d(at)):
        raise ValueError(f"at: values of {other!r} not in the table (has {', '.join(f'{v:.4g}' for v in values)})")
    n_groups = table.groupby(by).ngroups
    with style():
        fig = Figure(figsize=(min(TWO_COLUMN[0], 2.4 * len(shown)), 2.4 + _legend_height(n_groups, long=False)))
        axes = fig.subplots(1, len(shown), sharey=True, squeeze=False)[0]
        order, handles = _group_order(table, by, names), {}
        for ax, value in zip(axes, shown, strict=True):
            part = table[np.isclose(table[other], value, rtol=1e-9, atol=0)]
            handles |= _draw_curves(ax, part, by, key=x, x=x, labels={}, order=order)
            ax.set(xscale="log", yscale="log", xlabel="step size $h$" if x == "h" else "time $t$",
                   title=f"${other} = {value:.3g}$")
        axes[0].set_ylabel(ylabel or f"one-step {METRIC_LABELS.get(metric, metric)}")
        for ax in axes:
            _log_ticks(ax)
        if x == "h" and reference_orders:
            for ax in axes:
                _slope_triangles(ax, reference_orders, rising=True)
        _legend(fig, None, dict(sorted(handles.items(), key=lambda item: order[item[0]])), long=False)
    return fig


def keyed_panels(entries, *, columns: int = 2) -> tuple[Figure, list]:
    """Empty panels across a two-column page, ``columns`` to a row, each an axes with a key area under it (axis
    off, for ``convergence(..., ax=, key=)``) as tall as :func:`key_height` of the most ``entries`` in its row.

    Returns the figure and one (axes, key) pair per entry, row by row. With two columns a panel is one column
    wide (:data:`ONE_COLUMN`), so the style's type sizes print as designed.
    """
    entries = list(entries)
    rows = [max(entries[i:i + columns]) for i in range(0, len(entries), columns)]
    with style():
        fig = Figure(figsize=(TWO_COLUMN[0], sum(_PANEL + _DECORATION + key_height(n) for n in rows)),
                     layout="constrained")
        grid = fig.add_gridspec(2 * len(rows), columns,
                                height_ratios=[h for n in rows for h in (_PANEL, key_height(n))])
        pairs = [(fig.add_subplot(grid[2 * (i // columns), i % columns]),
                  fig.add_subplot(grid[2 * (i // columns) + 1, i % columns])) for i in range(len(entries))]
    for _, key in pairs:
        key.set_axis_off()
    return fig, pairs


def key_height(entries: int) -> float:
    """Inches the key table of ``entries`` curves takes: a header, a rule and a row per curve."""
    return (entries + 1.5) * _KEY_PITCH * STYLE["legend.fontsize"] / 72


def trajectories(paths: pd.DataFrame, density, *, solvers=None, max_paths: int | None = None,
                 ncols: int = 4) -> Figure:
    r"""Sample paths of 2-D problems over the exact log density, one panel per solver (small multiples).

    ``paths`` has columns solver, path, step, x, y. ``density`` is the exact target density on a regular grid, as a
    dict of 2-D arrays ``X``, ``Y``, ``logp`` (``numpy.meshgrid`` layout) or a DataFrame with columns x, y, logp.
    Its filled contours are :math:`\log p = \max\log p - k^2/2`, k = 1..4: the 1-4 standard-deviation ellipses of an
    isotropic Gaussian mode. Paths start at hollow circles and end at filled dots; the axes span the density grid
    (paths leaving it are clipped). ``solvers`` picks the panels and their order (default: order of appearance).
    """
    _require(paths, ["solver", "path", "step", "x", "y"], "paths")
    for column in ("x", "y"):
        if not np.isfinite(paths[column].to_numpy(dtype=float)).all():
            raise ValueError(f"paths: column {column!r} has NaN or inf")
    X, Y, logp = _density_grid(density)
    names = list(dict.fromkeys(paths["solver"])) if solvers is None else list(solvers)
    if missing := [s for s in names if s not in set(paths["solver"])]:
        raise ValueError(f"solvers: not in paths: {', '.join(missing)}")
    if max_paths is not None and max_paths < 1:
        raise ValueError(f"max_paths: must be at least 1, got {max_paths}")
    cols = max(1, min(ncols, len(names)))
    rows = math.ceil(len(names) / cols)
    top = float(logp.max())
    levels = [top - k**2 / 2 for k in (4, 3, 2, 1)] + [top + 1.0]
    with style():
        width = TWO_COLUMN[0] if cols > 1 else ONE_COLUMN[0]
        fig = Figure(figsize=(width, rows * width / cols + 0.35))
        axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
        for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
            colour = line_style(i)["color"]
            ax.contourf(X, Y, logp, levels=levels, colors=["0.94", "0.87", "0.78", "0.66"])
            ax.contour(X, Y, logp, levels=levels[:-1], colors="0.55", linewidths=0.3, linestyles="solid")
            part = paths[paths["solver"] == name].sort_values(["path", "step"])
            ids = list(dict.fromkeys(part["path"]))[:max_paths]
            lines = [g[["x", "y"]].to_numpy(dtype=float) for _, g in part[part["path"].isin(ids)].groupby("path")]
            ax.add_collection(LineCollection(lines, colors=colour, linewidths=0.5, alpha=0.6))
            starts, ends = np.array([p[0] for p in lines]), np.array([p[-1] for p in lines])
            ax.scatter(starts[:, 0], starts[:, 1], s=6, facecolors="none", edgecolors="0.3", linewidths=0.4)
            ax.scatter(ends[:, 0], ends[:, 1], s=7, color=colour, edgecolors="white", linewidths=0.3, zorder=3)
            ax.set(title=name, xlim=(X.min(), X.max()), ylim=(Y.min(), Y.max()), aspect="equal")
            ax.grid(False)
        for ax in axes[len(names):]:
            ax.set_axis_off()
        handles = [Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3", ms=3, label="start"),
                   Line2D([], [], ls="none", marker="o", color="0.2", ms=3, label="end"),
                   Patch(facecolor="0.78", edgecolor="0.55", linewidth=0.3,
                         label=r"exact density, $1\sigma$–$4\sigma$ contours")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3)
    return fig


# -- tables -------------------------------------------------------------------------------------------------------
def order_table_latex(frame: pd.DataFrame, *, caption: str | None = None, label: str | None = None,
                      digits: int = 2) -> str:
    r"""A booktabs table of claimed against measured orders (requires ``\usepackage{booktabs}``).

    ``frame`` has columns solver, problem, kind, claimed, order, low, high, status. A row whose claimed order lies
    outside its interval [low, high] has its measured order in bold with a dagger, explained under the table
    (the status column is printed as given). Text is escaped for LaTeX; a missing number is a dash. With
    ``caption`` (and ``label``) the tabular is wrapped in a table environment.
    """
    _require(frame, ["solver", "problem", "kind", "claimed", "order", "low", "high", "status"], "frame")
    claimed = pd.to_numeric(frame["claimed"], errors="coerce")
    order, low, high = (frame[c].to_numpy(dtype=float) for c in ("order", "low", "high"))
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        measured = f"{order[i]:.{digits}f}" if np.isfinite(order[i]) else None
        if measured is not None and np.isfinite(claimed.iloc[i]) and not low[i] <= claimed.iloc[i] <= high[i]:
            measured = rf"\mathbf{{{measured}}}^\dagger"
        interval = f"[{low[i]:.{digits}f}, {high[i]:.{digits}f}]" if np.isfinite([low[i], high[i]]).all() else None
        cells = [_latex_escape(row.solver), _latex_escape(row.problem), _latex_escape(row.kind),
                 f"{claimed.iloc[i]:g}" if np.isfinite(claimed.iloc[i]) else "--",
                 f"${measured}$" if measured else "--", f"${interval}$" if interval else "--",
                 _latex_escape(row.status)]
        body.append(" & ".join(cells) + r" \\")
    lines = [r"\begin{tabular}{lllrrcl}", r"\toprule",
             r"Solver & Problem & Kind & Claimed & Measured $p$ & Interval & Status \\", r"\midrule", *body,
             r"\bottomrule"]
    if (np.isfinite(claimed) & ~((low <= claimed) & (claimed <= high))).any():
        lines.append(r"\multicolumn{7}{l}{\footnotesize $^\dagger$ claimed order outside the measured interval.} \\")
    lines.append(r"\end{tabular}")
    if caption is None:
        return "\n".join(lines) + "\n"
    head = [r"\begin{table}", r"\centering", rf"\caption{{{_latex_escape(caption)}}}"]
    if label is not None:
        head.append(rf"\label{{{label}}}")
    return "\n".join([*head, *lines, r"\end{table}"]) + "\n"


def save(fig: Figure, path_stem) -> tuple[pathlib.Path, pathlib.Path]:
    """Write ``path_stem.pdf`` and ``path_stem.png`` (200 dpi), creating directories; return the two paths.

    The PDF carries no creation date, so the same figure gives the same file."""
    stem = pathlib.Path(path_stem)
    if stem.suffix.lower() in (".pdf", ".png"):
        raise ValueError(f"path_stem: give the name without its extension, got {str(path_stem)!r}")
    stem.parent.mkdir(parents=True, exist_ok=True)
    pdf, png = stem.parent / f"{stem.name}.pdf", stem.parent / f"{stem.name}.png"
    with style():
        fig.savefig(pdf, metadata={"CreationDate": None})
        fig.savefig(png, dpi=200)
    return pdf, png


# -- helpers ------------------------------------------------------------------------------------------------------
def _columns(by) -> list:
    return [by] if isinstance(by, str) else list(by)


def _require(frame, columns, name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name}: expected a pandas DataFrame, got {type(frame).__name__}")
    if missing := [c for c in columns if c not in frame.columns]:
        raise ValueError(f"{name}: missing column(s) {', '.join(map(repr, missing))} "
                         f"(has {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise ValueError(f"{name}: has no rows")


def _check_positive(frame: pd.DataFrame, column: str, name: str) -> None:
    """Values of ``column`` must be finite and positive to be drawn on a log axis."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        first = frame.iloc[int(np.flatnonzero(bad)[0])]
        where = ", ".join(f"{k}={first[k]}" for k in ("problem", "solver", "steps", "metric") if k in frame.columns)
        raise ValueError(f"{name}: column {column!r} must be finite and positive on a log axis; {int(bad.sum())} "
                         f"row(s) are not (first: {where}, {column}={first[column]})")


def _prepare(table, columns, metric, by):
    """Check ``table``, keep the rows of one metric, and check that the curves do not mix problems or dtypes."""
    _require(table, columns, "table")
    if "metric" in table.columns:
        metrics = list(dict.fromkeys(table["metric"]))
        if metric is None and len(metrics) > 1:
            raise ValueError(f"metric: the table holds several metrics ({', '.join(map(str, metrics))}); choose one")
        metric = metrics[0] if metric is None else metric
        if metric not in metrics:
            raise ValueError(f"metric: {metric!r} is not in the table (has {', '.join(map(str, metrics))})")
        table = table[table["metric"] == metric]
    elif metric is not None:
        raise ValueError(f"metric: the table has no 'metric' column to select {metric!r} from")
    for column in ("problem", "dtype"):
        if column in table.columns and column not in by and table[column].nunique() > 1:
            raise ValueError(f"table: column {column!r} holds several values "
                             f"({', '.join(map(str, table[column].unique()))}); filter the table or add {column!r} "
                             "to by=")
    _check_positive(table, "value", "table")
    return table, metric


def _group_order(table: pd.DataFrame, by: list, names) -> dict:
    """Style index of each ``by`` group: ``names`` first (a name is a tuple when ``by`` has several columns), then
    the other groups in order of first appearance."""
    fixed = [] if names is None else [n if isinstance(n, tuple) else (n,) for n in names]
    return {key: i for i, key in enumerate(dict.fromkeys(fixed + _keys(table, by)))}


def _keys(table: pd.DataFrame, by: list) -> list:
    return list(table[by].itertuples(index=False, name=None))


def _name(key: tuple) -> str:
    return ", ".join(map(str, key))


def _draw_curves(ax, table, by, *, key, x, labels, order) -> dict:
    """Draw one curve per ``by`` group (mean over rows sharing ``key``, with error bars); return its line by group."""
    handles = {}
    table = table.assign(_key=_keys(table, by))
    for group, part in table.groupby("_key", sort=False):
        _check_repeats(part, [key, "seed"] if "seed" in part.columns else [key], group)
        kw = line_style(order[group])
        grouped = part.groupby(key, sort=True)
        mean_x, mean_y, count = grouped[x].mean(), grouped["value"].mean(), grouped["value"].count()
        spread = grouped["value"].std() / np.sqrt(count)
        own = grouped["stderr"].first() if "stderr" in part.columns else spread * np.nan
        stderr = spread.where(count > 1, own).to_numpy(dtype=float)
        xs, ys = mean_x.to_numpy(dtype=float), mean_y.to_numpy(dtype=float)
        (line,) = ax.plot(xs, ys, label=labels.get(group, _name(group)), **kw)
        bars = np.isfinite(stderr) & (stderr > 0)
        if bars.any():
            lower = np.minimum(stderr[bars], 0.9 * ys[bars])
            ax.errorbar(xs[bars], ys[bars], yerr=[lower, stderr[bars]], fmt="none", ecolor=kw["color"], lw=0.7)
        handles[group] = line
    return dict(sorted(handles.items(), key=lambda item: order[item[0]]))


def _check_repeats(part: pd.DataFrame, keys: list, group) -> None:
    """Rows of one curve may repeat a key only across seeds; otherwise name the columns that vary."""
    repeated = part[part.duplicated(keys, keep=False)]
    if repeated.empty:
        return
    first = repeated[(repeated[keys] == repeated[keys].iloc[0]).all(axis=1)]
    varying = [c for c in first.columns if c not in ("value", "stderr", "wall_time", "_key")
               and first[c].astype(str).nunique() > 1]
    raise ValueError(f"table: several rows for {_name(group)} at {', '.join(f'{k}={first[k].iloc[0]}' for k in keys)}; "
                     f"column(s) {', '.join(map(repr, varying)) or '(none)'} vary: filter the table or add them to by=")


def _fit_values(fits, by) -> dict:
    """(order, low, high, claimed) of each fitted group; claimed is NaN where the fit has none."""
    _require(fits, [*by, "order", "low", "high"], "fits")
    keys = _keys(fits, by)
    if len(set(keys)) != len(keys):
        raise ValueError(f"fits: several rows for one {', '.join(by)}")
    claimed = pd.to_numeric(fits["claimed"], errors="coerce") if "claimed" in fits.columns else pd.Series(
        np.nan, index=fits.index)
    columns = [fits[c].to_numpy(dtype=float) for c in ("order", "low", "high")] + [claimed.to_numpy(dtype=float)]
    return dict(zip(keys, zip(*columns, strict=True), strict=True))


def _fit_labels(fitted: dict) -> dict:
    """Legend label of each fitted group: ``name: p = 2.01 [1.98, 2.03] (claimed 2)``."""
    return {key: f"{_name(key)}: p = {p:.2f} [{low:.2f}, {high:.2f}]" + (f" (claimed {c:g})" if np.isfinite(c) else "")
            for key, (p, low, high, c) in fitted.items()}


def _key_table(key, groups: list, order: dict, fitted: dict, *, header: str) -> None:
    """The key of ``groups`` as a table from the top left of axes ``key``: line sample, name and, for fitted groups,
    p, interval and claim (a dash where missing); p is bold where its interval misses the claim, as in
    :func:`order_table_latex`. Columns are sized from the metrics of the style's font, named outright so that it is
    also the font drawn (the widths every backend lays out): they align without a renderer. The texts stay in the
    layout, so an overflow moves the panels, never covers them.
    """
    size, family = STYLE["legend.fontsize"], FontProperties().get_name()  # the font measured is the font drawn
    pitch, sample = _KEY_PITCH * size, STYLE["legend.handlelength"] * size
    points = Affine2D().scale(1 / 72) + key.figure.dpi_scale_trans + ScaledTranslation(0, 1, key.transAxes)
    cells = [fitted.get(g) for g in groups]
    outside = [c is not None and np.isfinite(c[3]) and not c[1] <= c[3] <= c[2] for c in cells]
    columns = [(header, "left", [_name(g) for g in groups])]
    if fitted:
        columns += [("p", "right", [_number(c[0]) if c else "–" for c in cells]),
                    ("interval", "left", [f"[{_number(c[1])}, {_number(c[2])}]" if c else "–" for c in cells]),
                    ("claimed", "right", [f"{c[3]:g}" if c and np.isfinite(c[3]) else "–" for c in cells])]
    rows = -pitch * (np.arange(len(groups) + 1) + 0.9)  # baselines: the header, then one per group
    for group, y in zip(groups, rows[1:], strict=True):
        key.add_artist(Line2D([0, sample / 2, sample], [y + 0.3 * size] * 3, markevery=[1], transform=points,
                              clip_on=False, **line_style(order[group])))
    left = sample + 0.8 * size
    for title, align, texts in columns:
        fonts = [FontProperties(family=family, size=size, weight="bold" if title == "p" and out else "normal")
                 for out in [False, *outside]]
        width = max(text_to_path.get_text_width_height_descent(text, font, ismath=False)[0]
                    for text, font in zip([title, *texts], fonts, strict=True))
        for i, (text, font, y) in enumerate(zip([title, *texts], fonts, rows, strict=True)):
            key.text(left + width * (align == "right"), y, text, ha=align, va="baseline", fontproperties=font,
                     color="0.3" if i == 0 else "black", transform=points)
        left += width + 1.2 * size
    rule = rows[0] - 0.35 * pitch
    key.add_artist(Line2D([0, left - 1.2 * size], [rule, rule], color="0.5", lw=0.4, marker="", transform=points,
                          clip_on=False))


def _number(value: float) -> str:
    """Two decimals with a typographic minus (and none on a value that rounds to zero)."""
    return f"{round(value, 2) + 0.0:.2f}".replace("-", "\u2212")


def _figure(ax, legend_height: float):
    """The axes to draw on: ``ax`` itself, or a new one-column figure with room for a legend below."""
    if ax is not None:
        return ax.figure, ax
    with style():
        fig = Figure(figsize=(ONE_COLUMN[0], ONE_COLUMN[1] + legend_height))
        return fig, fig.add_subplot()


_PANEL = 1.9  # inches of a keyed panel's plotting area
_DECORATION = 0.7  # inches a keyed panel's title, tick labels, axis label and padding take
_KEY_PITCH = 1.3  # key table row pitch, in font sizes


def _legend_height(entries: int, *, long: bool) -> float:
    """Inches a legend below the axes takes: one entry a row for long labels, else three a row."""
    return 0.15 * math.ceil(entries / (1 if long else 3)) + 0.1


def _legend(fig, ax, handles: dict, *, long: bool) -> None:
    """The legend below the axes of a figure made here (``ax`` None); inside the caller's axes otherwise."""
    if ax is not None:
        ax.legend(handles=list(handles.values()))
    else:
        fig.legend(handles=list(handles.values()), loc="outside lower center",
                   ncols=1 if long else min(3, len(handles)))


def _title(ax, table) -> None:
    if "problem" in table.columns and table["problem"].nunique() == 1:
        ax.set_title(str(table["problem"].iloc[0]))


def _log_ticks(ax) -> None:
    """Ticks at 1, 2, 5 x 10^k with plain labels on a log axis spanning at most two decades (matplotlib would label
    its minor ticks there, in crowded scientific notation); minor ticks unlabelled otherwise."""
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if np.log10(hi / lo) <= 2:
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(_tick_label))
        axis.set_minor_formatter(NullFormatter())


def _tick_label(value: float, _position=None) -> str:
    """``0.02`` or ``500`` for moderate values, ``$5\\times10^{-4}$`` otherwise."""
    if 1e-3 <= value < 1e5:
        return f"{value:g}"
    exponent = math.floor(math.log10(value) + 1e-9)
    mantissa = round(value / 10**exponent)
    return f"$10^{{{exponent}}}$" if mantissa == 1 else f"${mantissa}\\times10^{{{exponent}}}$"


def _slope_triangles(ax, orders, *, rising: bool) -> None:
    """Slope triangles (hypotenuse slope -p, or +p when ``rising``) labelled ``p = ...``, side by side in the corner
    of the axes that the drawn curves cross least, sized to the axis ranges; the limits are kept. None where the y
    range is too narrow for them (a flat curve): squeezed under a third of their width, their labels would collide.
    """
    orders = sorted(float(p) for p in orders)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    (x0, x1), (y0, y1) = np.log10(xlim), np.log10(ylim)
    width = min(0.14 * (x1 - x0), 0.3 * (y1 - y0) / orders[-1])
    if width < 0.14 * (x1 - x0) / 3:
        return
    gap, margin, label = 0.6 * width, 0.04 * (x1 - x0), 0.09 * (y1 - y0)
    span = len(orders) * width + (len(orders) - 1) * gap
    height = orders[-1] * width + label
    points = _curve_points(ax)
    low, high = y0 + 0.03 * (y1 - y0), y1 - 0.05 * (y1 - y0) - height
    corners = {"lower left": (x0 + margin, low), "lower right": (x1 - margin - span, low),
               "upper right": (x1 - margin - span, high), "upper left": (x0 + margin, high)}
    preference = (["lower right", "upper left"] if rising else ["lower left", "upper right"]) + list(corners)

    def crossings(corner):
        left, bottom = corners[corner]
        inside = ((points[:, 0] > left - margin / 2) & (points[:, 0] < left + span + margin / 2)
                  & (points[:, 1] > bottom) & (points[:, 1] < bottom + height + 0.03 * (y1 - y0)))
        return int(inside.sum())

    left, bottom = corners[min(preference, key=lambda c: (crossings(c), preference.index(c)))]
    base = bottom + label
    for i, p in enumerate(orders):
        a = left + i * (width + gap)
        if rising:
            xs, ys = [a, a + width, a + width, a], [base, base, base + p * width, base]
        else:
            xs, ys = [a, a + width, a, a], [base, base, base + p * width, base]
        ax.plot(10 ** np.array(xs), 10 ** np.array(ys), color="0.35", lw=0.7, ls="-", marker="", zorder=1,
                gid=f"reference slope p = {p:g}")
        ax.text(10 ** (a + width / 2), 10 ** (base - 0.015 * (y1 - y0)), f"p = {p:g}", ha="center", va="top",
                fontsize=6.5, color="0.25")
    ax.set(xlim=xlim, ylim=ylim)


def _curve_points(ax) -> np.ndarray:
    """The drawn curves of ``ax`` in log10 coordinates, 20 points per segment, so a box can test crossings."""
    parts = [np.zeros((0, 2))]
    for line in ax.get_lines():
        xy = np.log10(np.asarray(line.get_xydata(), dtype=float))
        if len(xy) == 1:
            parts.append(xy)
        for start, end in itertools.pairwise(xy):
            parts.append(start + np.linspace(0, 1, 20)[:, None] * (end - start))
    return np.concatenate(parts)


def _density_grid(density):
    """(X, Y, logp) 2-D arrays from a dict of them or a long DataFrame (x, y, logp) on a regular grid."""
    if isinstance(density, pd.DataFrame):
        _require(density, ["x", "y", "logp"], "density")
        grid = density.pivot_table(index="y", columns="x", values="logp", aggfunc="mean")
        if grid.isna().to_numpy().any():
            raise ValueError("density: columns 'x', 'y' do not form a regular grid (missing points)")
        X, Y = np.meshgrid(grid.columns.to_numpy(dtype=float), grid.index.to_numpy(dtype=float))
        logp = grid.to_numpy(dtype=float)
    elif isinstance(density, dict):
        if missing := [k for k in ("X", "Y", "logp") if k not in density]:
            raise ValueError(f"density: missing key(s) {', '.join(map(repr, missing))}")
        X, Y, logp = (np.asarray(density[k], dtype=float) for k in ("X", "Y", "logp"))
    else:
        raise ValueError(f"density: expected a dict of X, Y, logp or a DataFrame, got {type(density).__name__}")
    if not (X.ndim == 2 and X.shape == Y.shape == logp.shape and min(X.shape) >= 2):
        raise ValueError(f"density: X, Y, logp must be 2-D arrays of one shape, at least 2 x 2; got "
                         f"{X.shape}, {Y.shape}, {logp.shape}")
    if not (np.isfinite(X).all() and np.isfinite(Y).all() and np.isfinite(logp).all()):
        raise ValueError("density: 'X', 'Y' or 'logp' has NaN or inf")
    return X, Y, logp


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


FIGURE_TYPES = ("convergence", "error_vs_nfe", "work_precision", "one_step_error")


def draw_study(specs, rows: pd.DataFrame, fits: pd.DataFrame | None, folder) -> list[pathlib.Path]:
    """The figures a study file asks for: each spec names a ``type`` in :data:`FIGURE_TYPES`, an optional ``name``
    and the keyword arguments of that function (``metric``, ``x``...); one figure per problem, PDF and PNG."""
    written = []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind not in FIGURE_TYPES:
            raise ValueError(f"figures[{i}].type: expected one of {FIGURE_TYPES}, got {kind!r}")
        stem = spec.pop("name", f"{kind}-{i}")
        for problem, part in rows.groupby("problem"):
            extra = {}
            if kind == "convergence" and fits is not None and len(fits) and "order" in fits:
                metric = spec.get("metric")
                chosen = fits[(fits.problem == problem) & ((fits.metric == metric) if metric else True)]
                extra["fits"] = chosen.dropna(subset=["order"])
            written.extend(save(globals()[kind](part, **spec, **extra), pathlib.Path(folder) / f"{stem}-{problem}"))
    return written
