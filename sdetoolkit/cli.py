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
    schedules = commands.add_parser("schedules", help="list the schedule families")
    schedules.set_defaults(run=_schedules)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
