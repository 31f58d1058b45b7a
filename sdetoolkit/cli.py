"""The ``sdetoolkit`` command."""

from __future__ import annotations

import argparse
import json
import sys

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
        row["findings"] = [f"measured {f.measured:g} vs claimed {f.claimed:g} on {f.problem}: {f.explanation}"
                           for f in findings_for(name)]
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
    schedules = commands.add_parser("schedules", help="list the schedule families")
    schedules.set_defaults(run=_schedules)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
