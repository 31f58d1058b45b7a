"""ER-SDE: the seven official noise scale functions and the exact W2 error of ER-SDE-Solver-1/2/3 against NFE.

Left: the step's noise fraction sqrt(s_t^2 - s_s^2 r^2)/s_t, r = phi(s_t)/phi(s_s), over one step of a 20-step EDM
grid: 0 for the ODE (type 1), the reverse SDE's full noise for type 2, the official default (type 7) in between.
Right: W2 between each solver's exact output law (sdetoolkit.exact, no sampling) and the exact marginal at t_min,
on gauss-1d and gauss-aniso-d64 (vp-linear, EDM-rho grids, official quadrature), against NFE.

Writes docs/figures/er-sde.png and docs/figures/er-sde.csv. Run: ``python analysis/er_sde_figure.py``.
"""

from __future__ import annotations

import itertools
import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from sdetoolkit import get_problem, get_schedule, make_grid
from sdetoolkit.exact import weak_errors
from sdetoolkit.solvers import get_solver
from sdetoolkit.symbolic import er_sde_integrals as er

FIGURES = pathlib.Path(__file__).resolve().parents[1] / "docs" / "figures"
STEPS = [5, 10, 20, 40, 80, 160]
PROBLEMS = ("gauss-1d", "gauss-aniso-d64")


def noise_fractions() -> pd.DataFrame:
    grid = make_grid("edm", get_schedule("edm"), 20, 0.002, 80.0).tolist()
    rows = []
    for func_type in range(1, 8):
        phi = er.official_noise_scale(func_type)
        for s, s_next in itertools.pairwise(grid):
            variance = max(er.step_variance(phi, s_next, s), 0.0)
            rows.append(dict(func_type=func_type, s=s_next, fraction=math.sqrt(variance) / s_next))
    return pd.DataFrame(rows)


def errors() -> pd.DataFrame:
    tables = []
    for name in PROBLEMS:
        problem = get_problem(name)
        for func_type in range(1, 8):
            for order in (1, 2, 3):
                table = weak_errors(get_solver(f"er-sde-{order}", noise_scale=func_type), problem, STEPS, grid="edm")
                tables.append(table.assign(func_type=func_type, order=order))
    return pd.concat(tables, ignore_index=True)


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fractions, table = noise_fractions(), errors()
    table.to_csv(FIGURES / "er-sde.csv", index=False)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), constrained_layout=True)
    colours = plt.cm.viridis([i / 6 for i in range(7)])
    for func_type in range(1, 8):
        part = fractions[fractions.func_type == func_type]
        axes[0].semilogx(part.s, part.fraction, "o-", ms=3, color=colours[func_type - 1],
                         label=f"type {func_type} ({er.OFFICIAL_NAMES[func_type]})")
    axes[0].set(xlabel="noise level s at the end of the step", ylabel="step noise std / s",
                title="noise fraction per step (20-step EDM grid)")
    axes[0].legend(fontsize=7)
    styles = {1: ":", 2: "--", 3: "-"}
    for ax, name in zip(axes[1:], PROBLEMS, strict=True):
        for func_type in range(1, 8):
            for order in (1, 2, 3):
                part = table[(table.problem == name) & (table.func_type == func_type) & (table.order == order)]
                ax.loglog(part.nfe, part.w2_marginal, styles[order], color=colours[func_type - 1],
                          label=f"ER-SDE-{order}" if func_type == 7 else None)
        ax.set(xlabel="NFE", ylabel="exact W2 to the marginal at t_min", title=name)
        ax.legend(fontsize=7, title="line style (colour: type)")
    fig.savefig(FIGURES / "er-sde.png", dpi=130)
    print(table.pivot_table(index=["problem", "func_type", "order"], columns="steps", values="w2_marginal")
          .to_string(float_format=lambda v: f"{v:.2e}"))


if __name__ == "__main__":
    main()
