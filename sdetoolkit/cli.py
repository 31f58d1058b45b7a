"""The ``sdetoolkit`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import sys
import tempfile
import time

from .catalogue import get_problem, list_problems
from .schedules import get_schedule, list_schedules


def _demo(args) -> int:
    from .demo import format_report, run_demo

    table, nfe = run_demo(args.problem, n=args.n, seed=args.seed, rtol=args.rtol)
    print(format_report(args.problem, args.n, nfe, table))
    return 0


def _problems(args) -> int:
    rows = []
    for name in list_problems():
        problem = get_problem(name)
        rows.append(dict(name=name, schedule=problem.schedule.name, t_min=problem.t_min, t_max=problem.t_max,
                         description=problem.description, facts=problem.facts))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        facts = row["facts"]
        print(f"{row['name']:<22} d={facts['dimension']:<5} K={facts['n_components']:<3} "
              f"cond={facts['condition_number']:<9.4g} {row['schedule']:<10} t in [{row['t_min']}, {row['t_max']}]")
    return 0


def _solvers(args) -> int:
    from .findings import findings_for
    from .solvers import get_solver, list_solvers

    rows = []
    for name in list_solvers():
        row = get_solver(name).describe()
        row["findings"] = [f.summary() for f in findings_for(name)]
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for row in rows:
        claim = "-" if row["claimed_order"] is None else f"{row['claim_kind']} {row['claimed_order']:g}"
        params = ", ".join(f"{k}={v}" for k, v in row["params"].items())
        flag = "  [finding: see --json]" if row["findings"] else ""
        print(f"{row['name']:<18} {row['family']:<13} {'SDE' if row['stochastic'] else 'ODE':<4} "
              f"{claim:<10} nfe/step={row['nfe_per_step']}  {params}{flag}")
    return 0


def _schedules(args) -> int:
    for name in list_schedules():
        schedule = get_schedule(name)
        lam_lo, lam_hi = schedule.lambda_range()
        print(f"{name:<10} alpha = {schedule.alpha_expr}, sigma = {schedule.sigma_expr}; "
              f"t in [{schedule.t_lo}, {schedule.t_hi}], lambda in [{lam_lo:.4g}, {lam_hi:.4g}]")
    return 0


def _symbolic_order(args) -> int:
    from .symbolic.local_order import PROBLEMS, local_order, numeric_ratios

    results = [local_order(args.solver, PROBLEMS[0], position=position) for position in ("steady", "first", "last")]
    generic = local_order(args.solver, PROBLEMS[1])
    steady = results[0]
    row = steady.as_dict()
    row["local_order_problem_b"] = generic.local_order
    row["first_step_local_order"], row["last_step_local_order"] = results[1].local_order, results[2].local_order
    row["series"] = [str(c) for c in steady.coefficients]
    row["numeric_check"] = [dict(h=h, error=e, ratio=r) for h, e, r in numeric_ratios(steady, floor=1e-13)]
    if args.json:
        print(json.dumps(row, indent=2))
        return 0
    if not steady.symbolic:
        print(f"{args.solver}: not symbolic ({steady.reason})")
        return 0
    print(f"{args.solver}: local order {steady.local_order} (global {steady.global_order}), error constant "
          f"{steady.constant} = {float(steady.constant):.6g}, next term {row['next_constant']:.6g}; claimed order "
          f"{steady.claimed}")
    print(f"  generic: local order {generic.local_order} on the second problem; first step "
          f"{row['first_step_local_order']}, last step {row['last_step_local_order']}")
    for check in row["numeric_check"]:
        print(f"  torch float64, h = {check['h']:.4g}: error {check['error']:.6e}, ratio to C h^(p+1) "
              f"{check['ratio']:.6f}")
    return 0


def _order(args) -> int:
    from .findings import findings_for
    from .report import CLAIM_KIND, VERDICT_METRIC, claimed_order, verdict
    from .solvers import get_solver
    from .studies.cells import fit_orders
    from .studies.study import Study

    gaussian = get_problem(args.problem).distribution.n_components == 1
    kind = {"ode": "ode", "weak": "weak-exact" if gaussian else "weak-mc", "strong": "strong"}[args.kind]
    default_steps = {"ode": [32, 48, 64, 96, 128, 192, 256], "weak-exact": [16, 24, 32, 48, 64, 96, 128, 192, 256],
                     "weak-mc": [8, 16, 32, 64, 128], "strong": [16, 32, 64, 128]}[kind]
    params = json.loads(args.params) if args.params else {}
    options = {"grid": args.grid} | ({"n_samples": args.n_samples} if args.n_samples and kind != "weak-exact" else {})
    study = Study(name="order", kind=kind, problems=(args.problem,), solvers=({"name": args.solver, "params": params},),
                  steps=tuple(args.steps or default_steps), seeds=(args.seed,), options=options)
    folder = contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory(prefix="sdetoolkit-order-")
    with folder as store:  # rows kept only where --out asks for them
        rows = study.run(store, resume=args.out is not None, progress=not args.json)
    fits = fit_orders(rows)
    solver = get_solver(args.solver, **params)
    claimed = claimed_order(solver, CLAIM_KIND[kind])
    result = dict(solver=args.solver, params=params, problem=args.problem, kind=args.kind, claimed=claimed,
                  findings=[f.summary() for f in findings_for(args.solver) if f.problem == args.problem],
                  errors=rows.drop(columns=["cell", "params", "options"]).to_dict(orient="records"), fits=[])
    for _, fit in fits.iterrows():
        entry = {k: (None if isinstance(v, float) and v != v else v) for k, v in fit.to_dict().items()
                 if k in ("metric", "test_function", "order", "low", "high", "interval", "local_slopes", "dropped",
                          "finest_error", "note")}
        entry["status"] = (verdict(dict(fit.to_dict(), claimed=claimed)) if fit.metric == VERDICT_METRIC[kind]
                           else "")
        result["fits"].append(entry)
    if args.json:
        print(json.dumps(result, indent=2, default=float))
        return 0
    claim = "no claim" if claimed is None else f"claimed {claimed:g}"
    print(f"{args.solver} on {args.problem}, {args.kind} order ({claim}); steps {list(study.steps)}")
    for entry in result["fits"]:
        label = entry["metric"] + (f" {entry['test_function']}" if entry.get("test_function") else "")
        if entry.get("note"):
            print(f"  {label:<12} not fitted: {entry['note']}")
            continue
        dropped = f"; dropped {entry['dropped']}" if entry["dropped"] else ""
        print(f"  {label:<12} p = {entry['order']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}] "
              f"({entry['interval']}); local slopes {entry['local_slopes']}{dropped}"
              + (f" -> {entry['status']}" if entry["status"] else ""))
    for finding in result["findings"]:
        print(f"  finding: {finding}")
    return 0


def _study(args) -> int:
    from .studies.cells import fit_orders
    from .studies.study import Study
    from .studies.sweep import LocalExecutor

    study = Study.from_toml(args.file)
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.file).parent / "results" / study.name
    rows = study.run(out, executor=LocalExecutor(args.workers), resume=not args.fresh)
    fits = fit_orders(rows) if len(rows) else rows
    fits.to_csv(out / "fits.csv", index=False)
    written = [out / "rows.csv", out / "fits.csv"]
    if study.figures and len(rows):
        from .figures import draw_study

        written += draw_study(study.figures, rows, fits, out / "figures")
    for path in written:
        print(f"wrote {path}")
    return 0


def _report(args) -> int:
    from .report import run_report, summary, write_report

    start = time.perf_counter()
    report = run_report(args.out, workers=args.workers, resume=not args.fresh, progress=not args.quiet)
    written = write_report(report, args.out, figures=not args.no_figures)
    print(report.orders.to_string(index=False, columns=["solver", "problem", "kind", "claimed", "order", "low",
                                                        "high", "status"], float_format=lambda v: f"{v:.2f}"))
    print("\nstatus counts:", summary(report.orders))
    print("wall seconds per study (this run):", {k: round(v, 1) for k, v in report.seconds.items()},
          f"total {time.perf_counter() - start:.1f}")
    print("compute seconds per study (all cells):", {k: round(v, 1) for k, v in report.compute.items()})
    print(f"wrote {len(written)} files under {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdetoolkit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="exact prior -> probability-flow ODE (scipy) -> exact vs sampled stats")
    demo.add_argument("--problem", default="gmm-ring8-2d", choices=list_problems())
    demo.add_argument("--n", type=int, default=4000, help="number of samples")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--rtol", type=float, default=1e-9, help="solve_ivp rtol (= atol)")
    demo.set_defaults(run=_demo)
    problems = commands.add_parser("problems", help="list the problem catalogue")
    problems.add_argument("--json", action="store_true")
    problems.set_defaults(run=_problems)
    solvers = commands.add_parser("solvers", help="list every registered solver with its claimed order")
    solvers.add_argument("--json", action="store_true")
    solvers.set_defaults(run=_solvers)
    symbolic = commands.add_parser("symbolic-order", help="a solver's local order and error constant, derived "
                                   "symbolically from its own step on the scalar Gaussian (edm schedule)")
    symbolic.add_argument("solver")
    symbolic.add_argument("--json", action="store_true")
    symbolic.set_defaults(run=_symbolic_order)
    order = commands.add_parser("order", help="measure a solver's order (ode: global; weak: exact W2 on Gaussian "
                                "problems; strong: one Brownian path) with its interval and the claim")
    order.add_argument("solver")
    order.add_argument("--problem", default="gauss-1d", choices=list_problems())
    order.add_argument("--kind", default="ode", choices=("ode", "weak", "strong"),
                       help="weak: exact W2 on a Gaussian problem, multilevel Monte Carlo on a mixture")
    order.add_argument("--steps", type=int, nargs="+", help="step counts (defaults per kind)")
    order.add_argument("--params", help="solver parameters as JSON, e.g. '{\"order\": 3}'")
    order.add_argument("--grid", default="uniform-lambda")
    order.add_argument("--n-samples", type=int, help="trajectories (ode, strong; Monte Carlo units for weak)")
    order.add_argument("--seed", type=int, default=0)
    order.add_argument("--out", help="keep the rows in this folder (and resume from it)")
    order.add_argument("--json", action="store_true")
    order.set_defaults(run=_order)
    study = commands.add_parser("study", help="run a study described in a TOML file; write rows, fits, figures")
    study.add_argument("file")
    study.add_argument("--out", help="results folder (default: results/<name> beside the file)")
    study.add_argument("--workers", type=int, default=1, help="processes")
    study.add_argument("--fresh", action="store_true", help="discard finished cells instead of resuming")
    study.set_defaults(run=_study)
    report = commands.add_parser("report", help="declared-vs-measured orders of every solver on the standard "
                                 "problems: Markdown, LaTeX, figures")
    report.add_argument("--out", default="report")
    report.add_argument("--workers", type=int, default=2, help="processes")
    report.add_argument("--fresh", action="store_true", help="discard finished cells instead of resuming")
    report.add_argument("--no-figures", action="store_true")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    report.set_defaults(run=_report)
    schedules = commands.add_parser("schedules", help="list the schedule families")
    schedules.set_defaults(run=_schedules)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
