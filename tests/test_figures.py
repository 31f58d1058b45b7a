"""Figures and LaTeX tables from small synthetic tidy tables: each figure type renders and saves, legends carry the
fitted intervals, reference slopes have the right slope, and bad input is a ValueError naming the column."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sdetoolkit import figures

SOLVERS = {"ddim": 1, "dpmpp_2m": 2, "dpm-solver-3": 3}


def tidy(steps=(8, 16, 32, 64), seeds=(0,), metrics=("rms",), rng=None):
    """errors C N^-p per solver, with the common columns of the spec and two extra ones (version, params)."""
    rows = []
    for name, p in SOLVERS.items():
        for n in steps:
            for seed in seeds:
                for metric in metrics:
                    noise = 1.0 if rng is None else float(np.exp(0.2 * rng.standard_normal()))
                    rows.append(dict(problem="gauss-1d", solver=name, steps=n, nfe=p * n, seed=seed, dtype="float64",
                                     metric=metric, value=2.0 * n**-p * noise, stderr=np.nan, version="0.1.0",
                                     params="{}", wall_time=1e-3 * p * n))
    return pd.DataFrame(rows)


FITS = pd.DataFrame(dict(solver=["ddim", "dpmpp_2m", "dpm-solver-3"], order=[1.0, 2.013, 2.99],
                         low=[0.97, 1.98, 2.9], high=[1.02, 2.03, 3.1], claimed=[1, 2, None]))


def legend_texts(fig: Figure) -> list[str]:
    legends = fig.legends or [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def saved(fig, tmp_path, name):
    pdf, png = figures.save(fig, tmp_path / "sub" / name)
    assert pdf.name == f"{name}.pdf" and png.name == f"{name}.png"
    assert pdf.stat().st_size > 1000 and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    return pdf, png


@pytest.mark.parametrize("x", ["steps", "nfe", "h"])
def test_convergence_renders_with_fits_and_reference_slopes(tmp_path, x):
    fig = figures.convergence(tidy(), FITS, x=x)
    if x == "steps":  # rendering is the slow part: save one of the three
        saved(fig, tmp_path, "convergence")
    texts = legend_texts(fig)
    assert "dpmpp_2m: p = 2.01 [1.98, 2.03] (claimed 2)" in texts
    assert "dpm-solver-3: p = 2.99 [2.90, 3.10]" in texts  # no claim, no "(claimed ...)"
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = {t.get_text() for t in ax.texts}
    assert {"p = 1", "p = 2", "p = 3"} <= labels
    for p in (1, 2, 3):
        (triangle,) = [line for line in ax.get_lines() if line.get_gid() == f"reference slope p = {p}"]
        dx, dy = np.diff(np.log10(triangle.get_xydata()), axis=0).T
        (slope,) = [b / a for a, b in zip(dx, dy, strict=True) if a != 0 and b != 0]  # the hypotenuse
        assert slope == pytest.approx(p if x == "h" else -p)


def test_convergence_averages_seeds_with_error_bars(tmp_path):
    table = tidy(seeds=range(6), rng=np.random.default_rng(0))
    fig = figures.convergence(table, reference_orders=())
    ax = fig.axes[0]
    (line,) = [line for line in ax.get_lines() if line.get_label() == "ddim"]
    means = table[table.solver == "ddim"].groupby("steps")["value"].mean().to_numpy()
    np.testing.assert_allclose(line.get_ydata(), means)
    assert len(ax.collections) == len(SOLVERS)  # one set of error bars per solver


def test_error_vs_nfe_work_precision_and_composition(tmp_path):
    table = tidy(metrics=("w2", "mmd"))
    fig = Figure(figsize=figures.TWO_COLUMN)
    left, right = fig.subplots(1, 2)
    names = ["dpm-solver-3", "ddim", "dpmpp_2m"]
    figures.error_vs_nfe(table, metric="w2", ax=left, names=names)
    figures.work_precision(table, metric="mmd", ax=right, names=names)
    assert left.get_ylabel() == "$W_2$" and right.get_xlabel() == "wall-clock time (s)"
    for ax in (left, right):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == names
        (first,) = [line for line in ax.get_lines() if line.get_label() == names[0]]
        assert first.get_color() == figures.COLOURS[0]
    saved(fig, tmp_path, "composed")
    assert legend_texts(figures.work_precision(table, metric="w2")) == ["ddim", "dpmpp_2m", "dpm-solver-3"]


@pytest.mark.parametrize("x", ["h", "t"])
def test_one_step_error_panels(tmp_path, x):
    rows = [dict(solver=name, t=t, h=h, value=(1 + t) * h ** (p + 1), metric="rms", extra=1)
            for name, p in SOLVERS.items() for t in (0.01, 0.1, 0.3, 0.6, 0.9) for h in (0.05, 0.1, 0.2, 0.4)]
    fig = figures.one_step_error(pd.DataFrame(rows), x=x)
    assert len(fig.axes) == 4  # four of five t values, or all four h values
    assert fig.axes[0].get_title() == ("$t = 0.01$" if x == "h" else "$h = 0.05$")
    if x == "h":
        saved(fig, tmp_path, "one-step")
    chosen = figures.one_step_error(pd.DataFrame(rows), x="h", at=[0.3])
    assert len(chosen.axes) == 1
    with pytest.raises(ValueError, match="at"):
        figures.one_step_error(pd.DataFrame(rows), x="h", at=[0.5])


def ring_density(as_frame=False):
    g = np.linspace(-3, 3, 61)
    X, Y = np.meshgrid(g, g)
    centres = 2 * np.exp(2j * np.pi * np.arange(8) / 8)
    d2 = np.abs((X + 1j * Y)[..., None] - centres) ** 2
    logp = np.log(np.exp(-d2 / (2 * 0.1**2)).sum(-1) / (8 * 2 * np.pi * 0.1**2) + 1e-300)
    if as_frame:
        return pd.DataFrame(dict(x=X.ravel(), y=Y.ravel(), logp=logp.ravel()))
    return dict(X=X, Y=Y, logp=logp)


def paths_table(solvers=("ddim", "euler-maruyama", "dpmpp_2m")):
    rng = np.random.default_rng(1)
    rows = []
    for name in solvers:
        for path in range(5):
            start, end = rng.standard_normal(2), 2 * np.array([np.cos(path), np.sin(path)])
            for step in range(11):
                x, y = start + step / 10 * (end - start)
                rows.append(dict(solver=name, path=path, step=step, x=x, y=y, t=1 - step / 10))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("as_frame", [False, True])
def test_trajectories_small_multiples(tmp_path, as_frame):
    fig = figures.trajectories(paths_table(), ring_density(as_frame), max_paths=3)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["ddim", "euler-maruyama", "dpmpp_2m"]
    assert len(panels[0].collections[-3].get_segments()) == 3  # paths limited to max_paths
    assert {"start", "end"} <= set(legend_texts(fig))
    if not as_frame:
        saved(fig, tmp_path, "trajectories")
    five = figures.trajectories(paths_table(["a", "b", "c", "d", "e"]), ring_density(), ncols=3)
    assert sum(ax.axison for ax in five.axes) == 5 and len(five.axes) == 6


def order_frame():
    return pd.DataFrame(dict(solver=["dpmpp_2m", "deis-tab3", "scipy"], problem=["gauss_1d", "gauss-1d", "gmm"],
                             kind=["ode", "ode", "weak"], claimed=[2, 4, None], order=[2.013, 0.993, np.nan],
                             low=[1.953, -0.901, np.nan], high=[2.046, 3.369, np.nan],
                             status=["agrees", "finding: measured 1 (50% & more)", None], extra=[1, 2, 3]))


def test_order_table_latex():
    text = figures.order_table_latex(order_frame())
    lines = text.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lllrrcl}" and lines[-1] == r"\end{tabular}"
    assert {r"\toprule", r"\midrule", r"\bottomrule"} <= set(lines)
    assert r"dpmpp\_2m & gauss\_1d & ode & 2 & $2.01$ & $[1.95, 2.05]$ & agrees \\" in lines
    assert r"deis-tab3 & gauss-1d & ode & 4 & $\mathbf{0.99}^\dagger$ & $[-0.90, 3.37]$ & " \
           r"finding: measured 1 (50\% \& more) \\" in lines
    assert r"scipy & gmm & weak & -- & -- & -- &  \\" in lines
    assert any(r"$^\dagger$ claimed order outside" in line for line in lines)
    assert text.count("{") == text.count("}")
    agreeing = figures.order_table_latex(order_frame().iloc[:1])
    assert r"\dagger" not in agreeing
    wrapped = figures.order_table_latex(order_frame(), caption="Orders: 100% of solvers", label="tab:orders")
    assert wrapped.startswith("\\begin{table}") and r"\caption{Orders: 100\% of solvers}" in wrapped
    assert r"\label{tab:orders}" in wrapped and wrapped.rstrip().endswith(r"\end{table}")


@pytest.mark.parametrize(("call", "match"), [
    (lambda: figures.convergence(tidy().drop(columns="steps")), "missing column.*'steps'"),
    (lambda: figures.convergence(tidy(), FITS.drop(columns="low")), "fits: missing column.*'low'"),
    (lambda: figures.convergence(tidy().assign(value=lambda t: t.value.where(t.steps != 16, 0.0))),
     "column 'value' must be finite and positive.*steps=16"),
    (lambda: figures.convergence(tidy().assign(value=np.nan)), "column 'value'"),
    (lambda: figures.convergence(tidy(), x="t"), "x: expected"),
    (lambda: figures.convergence(tidy(metrics=("rms", "max"))), "metric: .*several metrics"),
    (lambda: figures.convergence(tidy(), metric="w2"), "metric: 'w2' is not in the table"),
    (lambda: figures.convergence(pd.concat([tidy(), tidy().assign(dtype="float32")])), "column 'dtype'"),
    (lambda: figures.convergence(pd.concat([tidy(), tidy().assign(params="{'eta': 1}")])),
     "several rows for ddim at steps=8, seed=0; column.*'params'"),
    (lambda: figures.convergence(tidy().iloc[:0]), "table: has no rows"),
    (lambda: figures.convergence(tidy().to_dict()), "table: expected a pandas DataFrame"),
    (lambda: figures.work_precision(tidy().assign(wall_time=0.0)), "column 'wall_time'"),
    (lambda: figures.work_precision(tidy().drop(columns="wall_time")), "missing column.*'wall_time'"),
    (lambda: figures.one_step_error(tidy()), "missing column.*'t', 'h'"),
    (lambda: figures.trajectories(paths_table().drop(columns="y"), ring_density()), "paths: missing column.*'y'"),
    (lambda: figures.trajectories(paths_table(), {"X": 0, "Y": 0}), "density: missing key.*'logp'"),
    (lambda: figures.trajectories(paths_table(), ring_density(True).iloc[1:]), "density: .*regular grid"),
    (lambda: figures.trajectories(paths_table(), ring_density(), solvers=["rk4"]), "solvers: not in paths: rk4"),
    (lambda: figures.order_table_latex(order_frame().drop(columns="status")), "frame: missing column.*'status'"),
    (lambda: figures.save(Figure(), "figure.png"), "path_stem"),
])
def test_bad_input_is_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_style_and_line_styles():
    with figures.style():
        fig = Figure()
        ax = fig.add_subplot()
        assert not ax.spines["top"].get_visible() and not ax.spines["right"].get_visible()
        (line,) = ax.plot([1, 2])
        assert line.get_marker() == figures.MARKERS[0] and line.get_linestyle() == "-"
    assert ax.xaxis.label.get_fontfamily() == ["serif"]
    combos = {(s["color"], s["marker"], str(s["linestyle"])) for s in map(figures.line_style, range(49))}
    assert len(combos) == 49


def busy_panel(n=12, seed=7):
    """n solvers with errors C N^-p (p in 1..4, C over two decades, so curves cross), long names and fits, one
    fit's claim outside its interval: the report's busiest family panels."""
    rng = np.random.default_rng(seed)
    names = [f"solver-family-variant-{i}" for i in range(n)]
    orders, scales = rng.uniform(1, 4, n), 10 ** rng.uniform(-2, 0, n)
    table = pd.DataFrame([dict(problem="gauss-1d", solver=name, steps=steps, value=c * steps**-p)
                          for name, p, c in zip(names, orders, scales, strict=True) for steps in (16, 32, 64, 128)])
    fits = pd.DataFrame(dict(solver=names, order=orders, low=orders - 0.05, high=orders + 0.05,
                             claimed=np.round(orders)))
    fits.loc[0, "claimed"] = fits.loc[0, "order"] + 1  # outside [low, high]
    return table, fits


def data_points(ax) -> np.ndarray:
    """Display coordinates of every plotted point of every curve."""
    return np.concatenate([ax.transData.transform(line.get_xydata()) for line in ax.get_lines()
                           if not str(line.get_gid()).startswith("reference slope")])


def covers(box, points, pad) -> bool:
    return bool(((points[:, 0] > box.x0 - pad) & (points[:, 0] < box.x1 + pad)
                 & (points[:, 1] > box.y0 - pad) & (points[:, 1] < box.y1 + pad)).any())


def test_keyed_panels_keep_the_key_off_the_data():
    """The key table of a busy panel lies outside its axes (so it covers no data point, line or label), in the
    area reserved for it, its cells do not overlap, and it holds every fit and claim; the same panel with its legend
    inside the axes (the old report panels) fails the check."""
    table, fits = busy_panel()
    parts = [table, table[table.solver.isin(fits.solver[:2])], table[table.solver == fits.solver[0]]]
    fig, panels = figures.keyed_panels([part.solver.nunique() for part in parts])
    for (ax, key), part in zip(panels, parts, strict=True):
        figures.convergence(part, fits[fits.solver.isin(part.solver)], ax=ax, key=key)
    with figures.style():  # as figures.save draws
        fig.draw_without_rendering()
    pad = figures.STYLE["lines.markersize"] * fig.dpi / 72  # a marker's size around each point
    for (ax, key), part in zip(panels, parts, strict=True):
        texts = [t.get_window_extent() for t in key.texts]
        samples = [line.get_window_extent() for line in key.get_children() if isinstance(line, Line2D)]
        plotted = [ax.get_window_extent(), ax.xaxis.label.get_window_extent(), ax.title.get_window_extent()]
        assert not any(box.overlaps(area) for box in texts + samples for area in plotted)
        assert not any(covers(box, data_points(ax), pad) for box in texts + samples)
        assert not any(a.overlaps(b) for i, a in enumerate(texts) for b in texts[i + 1:])
        area = key.get_window_extent()  # 1 px for rounding
        assert all(area.y0 - 1 <= box.y0 and box.y1 <= area.y1 + 1 for box in texts)
        shown = fits[fits.solver.isin(part.solver)]
        n = len(shown)  # the texts go column by column: a header, then a cell per curve
        columns = [[t.get_text() for t in key.texts[j * (n + 1):(j + 1) * (n + 1)]] for j in range(4)]
        assert columns == [["solver", *shown.solver], ["p", *(f"{p:.2f}" for p in shown.order)],
                           ["interval", *(f"[{a:.2f}, {b:.2f}]" for a, b in zip(shown.low, shown.high, strict=True))],
                           ["claimed", *(f"{c:g}" for c in shown.claimed)]]
        weights = [t.get_fontweight() for t in key.texts[n + 2:2 * n + 2]]
        assert weights == ["bold" if not a <= c <= b else "normal"
                           for a, b, c in zip(shown.low, shown.high, shown.claimed, strict=True)]
    keys = [key.get_window_extent().height for _, key in panels]
    assert keys[2] < 0.25 * keys[0]  # a one-curve panel alone in its row keeps a small key

    inside = Figure(figsize=figures.ONE_COLUMN)
    figures.convergence(table, fits, ax=inside.add_subplot())
    with figures.style():
        inside.draw_without_rendering()
    assert covers(inside.axes[0].get_legend().get_window_extent(), data_points(inside.axes[0]), pad)


def test_flat_curve_has_no_squeezed_slope_triangles():
    flat = pd.DataFrame(dict(solver="restart", steps=[16, 32, 64, 128], value=[0.172, 0.1718, 0.1717, 0.1717]))
    ax = figures.convergence(flat).axes[0]
    assert not [line for line in ax.get_lines() if str(line.get_gid()).startswith("reference slope")]
    assert {"p = 1", "p = 2"} <= {t.get_text() for t in figures.convergence(tidy()).axes[0].texts}
