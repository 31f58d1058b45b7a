"""Symbolic local order (sdetoolkit.symbolic.local_order): expected orders from claims and findings, the power-series
expansion against sympy.series, and the symbolic leading term against the torch code's one-step error."""

import pytest
import sympy as sp

from sdetoolkit.cli import main
from sdetoolkit.findings import findings_for
from sdetoolkit.solvers import get_solver, list_solvers
from sdetoolkit.symbolic.local_order import (
    PROBLEMS,
    H,
    local_order,
    numeric_ratios,
    series_coefficients,
    symbolic_step,
)


def measured(solver: str, problem: str = "gauss-1d") -> float:
    """The measured global order recorded in sdetoolkit/findings.py."""
    (finding,) = [f for f in findings_for(solver) if f.problem == problem]
    return finding.measured


# (solver, position, expected local order, where the expectation comes from)
EXPECTED = [
    ("ddim", "steady", get_solver("ddim").claimed().order + 1, "claim"),
    ("dpmpp-2m", "steady", get_solver("dpmpp-2m").claimed().order + 1, "claim"),
    ("dpmpp-3m", "steady", measured("dpmpp-3m") + 1, "finding: official D2 lacks a factor 2"),
    ("dpmpp-3m-taylor", "steady", get_solver("dpmpp-3m-taylor").claimed().order + 1, "claim"),
    ("ipndm", "steady", measured("ipndm") + 1, "finding: fixed AB coefficients on geometric steps"),
    ("ipndm-v", "steady", measured("ipndm-v") + 1, "finding: order-4 formula exact only for quadratics"),
    ("deis-tab3", "steady", measured("deis-tab3") + 1, "finding: official Riemann sum"),
    ("deis-tab2-exact", "steady", get_solver("deis-tab2-exact").claimed().order + 1, "claim"),
    # a single warm-up or final step's local error stays in the global error undivided: local order = measured
    ("deis-tab3-exact", "first", measured("deis-tab3-exact", "gmm-1d-bimodal"), "finding: DEIS warm-up"),
    ("unipc-bh2-p2", "steady", get_solver("unipc-bh2-p2").claimed().order + 1, "claim"),
    ("unipc-bh2-p2", "last", measured("unipc-bh2-p2", "gmm-1d-bimodal"), "finding: lower_order_final"),
    ("midpoint-sigma", "steady", measured("midpoint-sigma") + 1, "finding: superconvergence on the Gaussian"),
    ("rk4-lambda", "steady", get_solver("rk4-lambda").claimed().order + 1, "claim"),
]


@pytest.mark.parametrize(("solver", "position", "expected", "source"), EXPECTED)
def test_symbolic_local_order_matches_claims_and_findings(solver, position, expected, source):
    for problem in PROBLEMS:
        result = local_order(solver, problem, position=position)
        assert result.symbolic, result.reason
        assert result.local_order == expected, (solver, position, source, result.constant)
        assert result.constant != 0 and result.constant.is_Rational


def test_power_series_agrees_with_sympy_series():
    for name in ("dpmpp-2m", "heun-sigma"):
        numerical, exact, _ = symbolic_step(get_solver(name), PROBLEMS[1])
        error = numerical - exact
        assert series_coefficients(error, 6) == series_coefficients(error, 6, method="sympy")


def test_symbolic_step_is_the_solvers_own_code():
    """Breaking a coefficient in the solver changes the symbolic order (no hand-written twin is analysed)."""
    solver = get_solver("dpmpp-3m", third_order_term="taylor")
    numerical, exact, _ = symbolic_step(solver, PROBLEMS[0])
    assert series_coefficients(numerical - exact, 5)[3] == 0
    solver.config["third_order_term"] = "official"
    numerical, exact, _ = symbolic_step(solver, PROBLEMS[0])
    assert series_coefficients(numerical - exact, 5)[3] != 0


def test_exact_flow_is_a_fixed_point_of_the_symbolic_model():
    """Sanity of the problem: the step error of every consistent solver vanishes at h = 0."""
    numerical, exact, _ = symbolic_step(get_solver("ddim"), PROBLEMS[0])
    assert sp.simplify((numerical - exact).subs(H, 0)) == 0


@pytest.mark.parametrize("solver", ["ddim", "dpmpp-3m", "dpmpp-2s", "unipc-bh1-p2", "ipndm", "pndm-s",
                                    "midpoint-sigma", "deis-tab3"])
def test_symbolic_leading_term_predicts_the_torch_one_step_error(solver):
    """|ratio - 1| falls toward 0 (like h) and is < 1e-2 at the smallest h before round-off (|error| > 1e-12, where
    float64 round-off of x ~ 2, a few 1e-16, is below 1e-3 relative); the two-term series C h^{p+1} + C' h^{p+2}
    does better."""
    result = local_order(solver)
    rows = [row for row in numeric_ratios(result, floor=1e-13) if abs(row[1]) > 1e-12]
    deviations = [abs(ratio - 1) for _, _, ratio in rows]
    assert len(rows) >= 4
    assert all(later < earlier for earlier, later in zip(deviations[-4:-1], deviations[-3:], strict=True))
    assert deviations[-1] < 1e-2
    h, error, _ = rows[-1]
    two_terms = float(result.constant) * h**result.local_order + float(result.next_constant) * h**(
        result.local_order + 1)
    assert abs(error / two_terms - 1) < max(deviations[-1], 1e-3)


def test_not_symbolic_solvers_are_reported_with_a_reason():
    assert "adaptive" in local_order("scipy").reason
    stochastic = [name for name in list_solvers() if get_solver(name).stochastic]
    if stochastic:
        result = local_order(stochastic[0])
        assert not result.symbolic and "stochastic" in result.reason


def test_cli_symbolic_order(capsys):
    assert main(["symbolic-order", "dpmpp-3m"]) == 0
    assert "local order 3 (global 2)" in capsys.readouterr().out


@pytest.mark.slow
def test_every_symbolic_solver_leading_term_predicts_the_torch_code():
    for name in list_solvers():
        result = local_order(name)
        if not result.symbolic:
            continue
        rows = numeric_ratios(result, floor=1e-13)
        h, error, _ = rows[-1]
        two_terms = float(result.constant) * h**result.local_order + float(result.next_constant) * h**(
            result.local_order + 1)
        assert abs(error / two_terms - 1) < 1e-2, name
