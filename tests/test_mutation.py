"""Mutation test of the order studies (sdetoolkit.studies.mutation): the site finder, the mutant builder, and the
verdicts on representative mutants; the full registry sweep is slow."""

import ast
import importlib
import inspect
import math
import pathlib
import sys

import numpy as np
import pytest

from sdetoolkit.solvers import base
from sdetoolkit.studies import mutation
from sdetoolkit.studies.order import fit_order
from sdetoolkit.symbolic.phi import data_phis

SOLVERS = "sdetoolkit.solvers"


def arithmetic_literals(module: str) -> list[int]:
    """Lines of the non-zero float literals and the integer operands of + - * / in the bodies of ``step`` methods
    and module-level functions, outside comparisons (for modules with no tables or declaration overrides, this is
    the whole coefficient rule)."""
    tree = ast.parse(pathlib.Path(inspect.getsourcefile(importlib.import_module(module))).read_text())
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    functions += [f for c in tree.body if isinstance(c, ast.ClassDef) for f in c.body
                  if isinstance(f, ast.FunctionDef) and f.name == "step"]
    lines = []
    for function in functions:
        compared = {id(n) for c in ast.walk(function) if isinstance(c, ast.Compare) for n in ast.walk(c)}
        operands = {id(side) for b in ast.walk(function) if isinstance(b, ast.BinOp)
                    and isinstance(b.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)) for side in (b.left, b.right)}
        for body_node in function.body:
            for node in ast.walk(body_node):
                if (isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value != 0
                        and id(node) not in compared and (isinstance(node.value, float) or id(node) in operands)):
                    lines.append(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize("module", ["ddim_eta", "dpm_solver_pp", "edm"])
def test_literal_sites_match_the_source(module):
    sites = mutation.literal_sites(f"{SOLVERS}.{module}")
    expected = arithmetic_literals(f"{SOLVERS}.{module}")
    assert expected, "the module should have coefficients"
    assert [s.line for s in sites] == expected


def test_declarations_and_orders_are_not_sites():
    """DPM-Solver's class declarations (orders, variants) and phi's index are left out; its nodes 1/3, 2/3 count."""
    module = f"{SOLVERS}.dpm_solver"
    lines = pathlib.Path(inspect.getsourcefile(importlib.import_module(module))).read_text().splitlines()
    sites = mutation.literal_sites(module)
    first_method = next(i for i, line in enumerate(lines, 1) if "def _point" in line)
    assert all(s.line > first_method for s in sites)
    assert not [s for s in sites if "phi(2," in lines[s.line - 1] and s.text == "2"]
    assert sorted(s.text for s in sites if "1 / 3, 2 / 3" in lines[s.line - 1]) == ["1", "2", "3", "3"]


def test_entries_of_symbolic_values():
    assert list(mutation.entry_paths((1.0, [2.0, 3.0], None, "x"))) == [(0,), (1, 0), (1, 1)]
    assert list(mutation.entry_paths(np.ones((2, 5)))) == [(0,), (1,)]
    scaled = mutation.scale_entry((1.0, [2.0, 3.0]), (1, 1), 2.0)
    assert scaled == (1.0, [2.0, 6.0])
    rows = mutation.scale_entry(np.ones((2, 3)), (1,), 2.0)
    np.testing.assert_array_equal(rows, [[1, 1, 1], [2, 2, 2]])
    assert mutation.scale_entry((1.0,), (3,), 2.0) == (1.0,)


@pytest.fixture(scope="module")
def dpmpp_plan():
    return mutation.plan(f"{SOLVERS}.dpm_solver_pp")


@pytest.fixture(scope="module")
def references():
    return {}


def find(plan, kind, text, path=()):
    (site,) = [s for s in plan.sites if s.kind == kind and (s.text == text or s.context == text) and s.path == path]
    return site


def test_plan_records_every_entry_of_a_symbolic_value(dpmpp_plan):
    entries = [s.path for s in dpmpp_plan.sites if s.text == "data_phis(h)"]
    assert entries == [(i,) for i in range(len(data_phis(0.3)))]
    assert len(dpmpp_plan.names) == len(set(dpmpp_plan.names)) >= 5


def test_mutants_are_built_in_memory(dpmpp_plan):
    module = f"{SOLVERS}.dpm_solver_pp"
    path = pathlib.Path(inspect.getsourcefile(importlib.import_module(module)))
    source, registry, original = path.read_text(), dict(base._REGISTRY), sys.modules[module]
    mutant = mutation.mutant_registry(find(dpmpp_plan, "literal", "0.5 * alpha_next"))
    assert mutant["dpmpp-2m"][0] is not base._REGISTRY["dpmpp-2m"][0]
    assert path.read_text() == source and base._REGISTRY == registry and sys.modules[module] is original


@pytest.mark.parametrize(("module", "kind", "text", "path"), [
    ("dpm_solver_pp", "literal", "0.5 * alpha_next", ()),   # 2M's midpoint weight
    ("dpm_solver_pp", "symbolic", "data_phis(h)", (0,)),                  # phi_1 of every step
    ("ddim", "schedule", "state.alpha(state.t)", ()),                     # DDIM's x0 prediction
    ("ddim_eta", "schedule", "state.alpha(state.t_next)", ()),            # weak order, exact law
])
def test_representative_mutants_are_caught(module, kind, text, path, references):
    plan = mutation.plan(f"{SOLVERS}.{module}")
    result = mutation.run_mutant(find(plan, kind, text, path), plan, references)
    assert result.outcome == "caught", result.detail


def test_a_higher_order_mutant_survives_and_is_classified(dpmpp_plan, references):
    """Scaling the official 3M second-difference factor (1.0) leaves dpmpp-3m second order: the perturbation falls
    like h^2, the order of the method (recorded finding), so no order study can catch it."""
    (site,) = [s for s in dpmpp_plan.sites if s.kind == "literal" and s.text == "1.0"]
    result = mutation.run_mutant(site, dpmpp_plan, references)
    assert result.outcome == "survived" and result.category == "higher order", result.detail
    (survivor,) = [s for s in result.solvers if s.outcome == "survived"]
    assert survivor.name == "dpmpp-3m" and survivor.d_rate == pytest.approx(2.0, abs=0.1)


def test_classification_can_report_an_unexplained_survivor():
    """A perturbation that falls slower than the error and already exceeds it is no known kind of survivor."""
    steps = np.array(mutation.STEPS, dtype=float)
    errors = 1e-2 * steps**-2.0 * (1 + 0.5 / steps)
    ref = mutation.Reference("synthetic", {}, "global", 2.0, "claim", None, [], errors, fit_order(1 / steps, errors))
    d = 2e-4 * steps**-1.0 * (1 + 0.3 / steps)
    change = mutation.Perturbation(d, fit_order(1 / steps, d), float(np.max(d / errors)))
    assert mutation.classify(ref, change)[0] == "unexplained"
    small = mutation.Perturbation(d * 0.1, fit_order(1 / steps, d * 0.1), float(np.max(d * 0.1 / errors)))
    assert mutation.classify(ref, small)[0] == "beyond the window"
    fast = errors * 1e-3 * (1 + 1 / steps)
    assert mutation.classify(ref, mutation.Perturbation(fast, fit_order(1 / steps, fast), 1e-3))[0] == "higher order"


def test_limit_check_over_the_window_and_at_the_finest_grid():
    steps = np.array(mutation.STEPS, dtype=float)
    errors = steps**-1.0
    ref = mutation.Reference("synthetic", {}, "global", 1.0, "claim", None, [], errors, fit_order(1 / steps, errors))
    bumped = errors * np.where(steps == 64, 1.3, 1.0)
    judged = mutation.verdict(ref, bumped)
    assert judged.finest == 1.0 and judged.worst == pytest.approx(1.3)
    assert judged.passes(math.inf) and judged.passes(window=False) is judged.order_ok
    assert not judged.passes()


def test_without_the_limit_check_a_lower_order_mutant_is_unexplained(dpmpp_plan, references, monkeypatch):
    """DPM-Solver++(2S) with its midpoint data weight alpha(t_mid) scaled is first order; in this window the order
    check alone passes it (the rate is still changing, so the interval is wide) and the classification says so;
    the limit check catches it."""
    site = find(dpmpp_plan, "schedule", "state.alpha(t_mid)")
    assert mutation.run_mutant(site, dpmpp_plan, references).outcome == "caught"
    monkeypatch.setattr(mutation, "LIMIT_FACTOR", math.inf)
    result = mutation.run_mutant(site, dpmpp_plan, references)
    assert result.outcome == "survived" and result.category == "unexplained", result.detail


@pytest.mark.slow
def test_every_survivor_of_the_registry_sweep_is_classified():
    """The full sweep (about five minutes on one core): every solver module is swept, and every mutant that survives its
    studies changes the error only at higher order, below the resolution, beyond the window, or for a solver that
    has no rate to lose."""
    results = list(mutation.mutation_sweep())
    assert {r.site.module for r in results} == {m for m in mutation.solver_modules()
                                                if mutation.literal_sites(m) or mutation.value_calls(m)}
    unexplained = [r for r in results if r.outcome == "survived" and r.category == "unexplained"]
    assert not unexplained, "\n".join(f"{r.site.module}:{r.site.line} {r.site.label}: {r.detail}"
                                      for r in unexplained)
