r"""Mutation test of the solvers: scale one coefficient by :math:`1 + \delta` and ask whether the order study fails.

A *mutant* is a solver module (``sdetoolkit/solvers/<family>.py``) with one coefficient scaled by
:math:`1 + \delta` (:data:`DELTA` = 1e-3). It is compiled from the edited syntax tree into fresh module objects
(no file is written; the registry and ``sys.modules`` are restored afterwards), together with every solver module
that imports it, so a helper such as ``edm.edm_step`` is mutated for all the samplers that call it. The coefficient
sites of a module are:

* **literals**: a non-zero number in the code of a step or its helpers, or in module-level data (tableaus, nodes).
  Left out, by their syntactic role: declarations (class bodies, the overrides of :class:`Solver`'s declaration
  methods such as ``claimed`` or ``expected_nfe``, ``Claim``/``Param`` calls), comparison operands (branches and
  thresholds), subscripts, exponents, keyword arguments and defaults, dict keys, ``range`` bounds and messages;
  an integer counts only as an arithmetic operand, a ``sympy.Rational``/``float`` argument or a table entry, since
  an integer passed to another call is an order, a count or an index (``phi(2, h)``, ``linspace(..., 257)``).
* **values** a step receives, at each call site: every number from :mod:`sdetoolkit.symbolic` (phi functions,
  Lagrange and Adams weights, UniPC's B(h) and rho, ER-SDE integrals, ``ops`` conversions; kind 'symbolic') and
  every schedule value from the step state (``state.alpha``, ``sigma``, ``lam``, ``t_of_lam``; kind 'schedule',
  the coefficients of DDIM-like steps). The call is wrapped so that one entry of its result (a scalar, a tuple
  entry at any depth, or a row of an array) is scaled; which entries exist is read from a recording run of the
  unmutated module.

Each mutant runs the order study of every registered configuration whose code executes the site (line coverage of
a traced run on the coarsest grid), on ``gauss-1d``, uniform-lambda grids of :data:`STEPS` steps:

* deterministic solvers: the global-order check of ``tests/test_solver_orders.py`` (RMS error of 64 exact prior
  samples against the exact flow; the claimed order, or the recorded finding, inside the interval of
  :func:`~sdetoolkit.studies.order.fit_order`, and for a finding the claim outside it);
* linear stochastic solvers: the exact weak order (W2 of the exact output law to the exact marginal,
  :func:`sdetoolkit.exact.propagate`; no Monte Carlo) against the weak claim or recorded weak finding;
* other stochastic solvers: the W2 of the Gaussian fitted to 256 samples on fixed noise (coupled across mutants).

Where the correct solver misses its claim or finding in this window, the expected order is its own fitted order.
Besides the rate, every study checks the limit (the two tests per solver of diffrax's test suite): the mutant's
error must stay within :data:`LIMIT_FACTOR` times the correct solver's at every step count of the window (at the
finest grid alone, a perturbation that happens to cancel the error there would pass; :meth:`MutantResult.caught_at`
gives both forms).

A mutant is *caught* when the study that the correct solver passes fails (order outside the interval, limit
exceeded, or the run fails: a divergence, a domain error), or *rejected* when the module refuses it on import (a
Butcher tableau checks its order conditions). It is *not exercised* when no study runs its site or every studied
output is bit-identical to the correct solver's (the site belongs to another configuration); it is *structural*
when the run raises a TypeError, IndexError or KeyError, or changes the number of model evaluations (the literal
is used as an integer: an order, a count, an index). Neither counts. A *survivor* passes every study that
exercises it and is classified by the perturbation it causes, :math:`d(N) = \|X_{mut}(N) - X(N)\|` (RMS, or W2
between the two exact laws), against the expected order p:

* ``no rate``: the correct solver does not converge in the window (a biased sampler): there is no order to lose;
* ``higher order``: the fitted rate of :math:`d` reaches p (its interval's upper end is at least p): the mutant
  changes the error constant, not the order, and no order study can catch it;
* ``below resolution``: :math:`d` stays below :data:`RESOLUTION` of the correct solver's error at every N;
* ``beyond the window``: :math:`d` falls more slowly than the error (or not at all) but is still smaller than it at
  the finest grid: the mutant's order is lower, visible only on a longer window (where :math:`d` overtakes);
* ``unexplained``: none of these (the perturbation already dominates at the finest grid), a gap of the study.

Mutation analysis: DeMillo, Lipton & Sayward 1978, Hints on test data selection, IEEE Computer 11(4).
"""

from __future__ import annotations

import ast
import builtins
import fractions
import importlib
import inspect
import math
import numbers
import pathlib
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pandas as pd
import sympy as sp
import torch

from ..catalogue import get_problem
from ..exact import GaussianLaw, gaussian_law, propagate
from ..findings import FINDINGS
from ..grids import make_grid
from ..noise import IIDNoise
from ..solvers import base
from ..solvers.base import Claim, Param, Solver, StepState, sample
from .order import OrderFit, fit_order

DELTA = 1e-3
"""Relative perturbation of a coefficient."""
STEPS = (32, 48, 64, 96, 128, 192, 256)
"""Step counts of every study (those of tests/test_solver_orders.py)."""
PROBLEM = "gauss-1d"
LIMIT_FACTOR = 1.1
"""A mutant whose error exceeds this multiple of the correct solver's fails the limit check: a margin of 10%, a
hundred times the change delta = 1e-3 that a higher-order perturbation makes to the error constant."""
RESOLUTION = 1e-2
"""A perturbation below this fraction of the correct solver's error at every N is below the study's resolution."""
FLOORS = {"global": 0.0, "weak": 1e-12, "moments": 0.0}
"""Error floors of the fits, as in tests/test_solver_orders.py and tests/test_weak_orders.py."""
STUDY_PARAMS = {"edm-stochastic": {"S_noise": 1.0}, "edm-stochastic-euler": {"S_noise": 1.0}}
"""Configurations studied instead of the defaults: with the recommended S_noise = 1.003 EDM's sampler has a bias
that no step count removes (docs/findings.md), so its order study is run where it converges (S_noise = 1)."""
N_SAMPLES = {"global": 64, "moments": 256}
SOLVERS = "sdetoolkit.solvers"
_HOOK = "__sdetoolkit_mutation__"
_DECLARATIONS = frozenset(k for k in {*vars(Solver), *Solver.__annotations__} if not k.startswith("_")) - {"step"}
_STATE_VALUES = frozenset(key for key, value in vars(StepState).items() if inspect.isfunction(value)
                          and value.__annotations__.get("return") in ("float", float))
_NUMERIC_CONSTRUCTORS = (sp.Rational, sp.Integer, fractions.Fraction, float)
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div)


# -- coefficient sites ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    """One coefficient of a solver module: a literal (kind 'literal'), or one entry (``path``) of the value a call
    site returns (kinds 'symbolic' and 'schedule').

    ``key`` locates the node (line, column, end line, end column); ``span`` is the first and last line of the
    statement that holds it (line coverage decides who runs it); ``module_level`` is true for data built on import;
    ``context`` is the expression around it, for tables.
    """

    module: str
    kind: str
    key: tuple[int, int, int, int]
    text: str
    span: tuple[int, int]
    module_level: bool
    path: tuple = ()
    context: str = ""

    @property
    def line(self) -> int:
        return self.key[0]

    @property
    def family(self) -> str:
        return self.module.rsplit(".", 1)[-1]

    @property
    def label(self) -> str:
        entry = "".join(f"[{i}]" for i in self.path)
        return f"{self.text}{entry}"


def _key(node: ast.AST) -> tuple[int, int, int, int]:
    return node.lineno, node.col_offset, node.end_lineno, node.end_col_offset


@cache
def _source(module: str) -> tuple[str, str]:
    """(file name, source) of a solver module."""
    path = inspect.getsourcefile(importlib.import_module(module))
    return path, pathlib.Path(path).read_text()


def _parents(tree: ast.AST) -> dict:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _resolve(func: ast.AST, namespace: dict):
    """The object a call's function expression names in the module namespace (a name or module.attribute)."""
    if isinstance(func, ast.Name):
        return namespace.get(func.id, getattr(builtins, func.id, None))
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner = namespace.get(func.value.id)
        return getattr(owner, func.attr, None) if isinstance(owner, types.ModuleType) else None
    return None


def _structural_context(node: ast.AST, parents: dict, namespace: dict) -> bool:
    """Whether a node sits where a number is a declaration, a branch, an index, an exponent or a message."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, (ast.Compare, ast.keyword, ast.arguments, ast.JoinedStr, ast.Raise)):
            return True
        if isinstance(parent, ast.Subscript) and child is parent.slice:
            return True
        if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Pow) and child is parent.right:
            return True
        if isinstance(parent, ast.Dict) and any(child is k for k in parent.keys):
            return True
        if isinstance(parent, ast.Call) and _resolve(parent.func, namespace) in (range, Claim, Param):
            return True
        if isinstance(parent, (ast.FunctionDef, ast.Lambda)):
            owner = parents.get(parent)
            return isinstance(parent, ast.FunctionDef) and isinstance(owner, ast.ClassDef) and \
                parent.name in _DECLARATIONS
        if isinstance(parent, ast.ClassDef):
            return True
        child, parent = parent, parents.get(parent)
    return False


def _integer_is_coefficient(node: ast.Constant, parents: dict, namespace: dict) -> bool:
    """An integer is a coefficient as an arithmetic operand, a numeric-constructor argument or a table entry."""
    child, parent = node, parents[node]
    while isinstance(parent, ast.UnaryOp) and isinstance(parent.op, (ast.USub, ast.UAdd)):
        child, parent = parent, parents[parent]
    if isinstance(parent, ast.BinOp):
        return isinstance(parent.op, _ARITHMETIC)
    if isinstance(parent, ast.Call):
        return bool(parent.args) and child is parent.args[0] and \
            _resolve(parent.func, namespace) in _NUMERIC_CONSTRUCTORS
    return isinstance(parent, (ast.Tuple, ast.List))


def _statement_span(node: ast.AST, parents: dict) -> tuple[tuple[int, int], bool]:
    """Lines of the innermost statement holding ``node`` (a compound statement: its header) and whether that
    statement is at module level."""
    stmt = node
    while not isinstance(stmt, ast.stmt):
        stmt = parents[stmt]
    body = getattr(stmt, "body", None)
    end = body[0].lineno - 1 if isinstance(body, list) and body else stmt.end_lineno
    owner = parents.get(node)
    while owner is not None and not isinstance(owner, (ast.FunctionDef, ast.Lambda, ast.ClassDef)):
        owner = parents.get(owner)
    return (stmt.lineno, max(end, stmt.lineno)), owner is None


def _context(node: ast.AST, parents: dict, source: str, width: int = 48) -> str:
    """The smallest expression or statement around a literal that is more than the literal (for tables)."""
    outer = parents[node]
    while isinstance(outer, ast.UnaryOp):
        outer = parents[outer]
    text = " ".join((ast.get_source_segment(source, outer) or "").split())
    return text if len(text) <= width else text[:width - 3] + "..."


def literal_sites(module: str) -> list[Site]:
    """The numeric literals of a solver module that are coefficients (rules in the module docstring)."""
    _, source = _source(module)
    tree = ast.parse(source)
    parents = _parents(tree)
    namespace = vars(importlib.import_module(module))
    sites = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value != 0):
            continue
        if _structural_context(node, parents, namespace):
            continue
        if isinstance(node.value, int) and not _integer_is_coefficient(node, parents, namespace):
            continue
        span, module_level = _statement_span(node, parents)
        sites.append(Site(module, "literal", _key(node), ast.get_source_segment(source, node), span, module_level,
                          context=_context(node, parents, source)))
    return sorted(sites, key=lambda s: s.key)


def value_calls(module: str) -> list[Site]:
    """The call sites through which a step receives numbers (without their entry paths): functions of
    sdetoolkit.symbolic (kind 'symbolic') and the float-valued schedule accessors of the step state, such as
    ``state.alpha(t)`` (kind 'schedule')."""
    _, source = _source(module)
    tree = ast.parse(source)
    parents = _parents(tree)
    namespace = vars(importlib.import_module(module))
    sites = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _structural_context(node, parents, namespace):
            continue
        target = _resolve(node.func, namespace)
        if callable(target) and not isinstance(target, type) and \
                getattr(target, "__module__", "").startswith("sdetoolkit.symbolic"):
            kind = "symbolic"
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and \
                node.func.value.id == "state" and node.func.attr in _STATE_VALUES:
            kind = "schedule"
        else:
            continue
        span, module_level = _statement_span(node, parents)
        sites.append(Site(module, kind, _key(node), ast.get_source_segment(source, node), span, module_level))
    return sorted(sites, key=lambda s: s.key)


# -- entries of a symbolic value -----------------------------------------------------------------------------------
def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, sp.Basic):
        return bool(value.is_number)
    return isinstance(value, numbers.Number) or (isinstance(value, np.ndarray) and value.ndim == 0)


def entry_paths(value, prefix: tuple = ()) -> Iterator[tuple]:
    """Paths of the entries of a value: itself if a number, every entry of a tuple or list (recursively), every row
    of a float array."""
    if _is_number(value):
        yield prefix
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fc":
        yield from ((*prefix, i) for i in range(value.shape[0]))
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from entry_paths(item, (*prefix, i))


def scale_entry(value, path: tuple, factor: float):
    """``value`` with the entry at ``path`` multiplied by ``factor`` (unchanged where the entry does not exist)."""
    if not path:
        return value * factor if _is_number(value) else value
    head, rest = path[0], path[1:]
    if isinstance(value, np.ndarray) and not rest and head < value.shape[0]:
        scaled = value.copy()
        scaled[head] = scaled[head] * factor
        return scaled
    if isinstance(value, (tuple, list)) and head < len(value):
        items = list(value)
        items[head] = scale_entry(items[head], rest, factor)
        if isinstance(value, list):
            return items
        return value._make(items) if hasattr(value, "_make") else tuple(items)
    return value


# -- building mutant modules ---------------------------------------------------------------------------------------
@cache
def _imports() -> dict[str, frozenset]:
    """For every solver module, the solver modules it imports (relative imports)."""
    package = importlib.import_module(SOLVERS)
    graph = {}
    for path in sorted(pathlib.Path(package.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        graph[f"{SOLVERS}.{path.stem}"] = frozenset(f"{SOLVERS}.{n.module}" for n in ast.walk(tree)
                                                    if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module)
    return graph


def dependents(module: str) -> list[str]:
    """``module`` and every solver module that imports it, directly or not, in an order that imports first."""
    graph = _imports()
    closure = {module}
    while True:
        more = {m for m, deps in graph.items() if deps & closure} - closure
        if not more:
            break
        closure |= more
    ordered = []
    while len(ordered) < len(closure):
        ordered += sorted(m for m in closure - set(ordered) if not (graph[m] & closure) - set(ordered) - {m})
    return ordered


class _Rewrite(ast.NodeTransformer):
    """Scale one literal, or wrap symbolic call sites in a hook call ``hook(value, key)``."""

    def __init__(self, literal: tuple | None = None, factor: float = 1.0, calls: frozenset = frozenset()):
        self.literal, self.factor, self.calls = literal, factor, calls

    def visit_Constant(self, node):
        if self.literal is not None and _key(node) == self.literal:
            return ast.copy_location(ast.Constant(node.value * self.factor), node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if _key(node) in self.calls:
            hook = ast.Call(ast.Name(_HOOK, ast.Load()), [node, ast.Constant(_key(node))], [])
            return ast.copy_location(hook, node)
        return node


def load(module: str, rewrite: _Rewrite | None = None, hook=None) -> dict:
    """Execute ``module`` (its syntax tree rewritten) and its dependents into fresh module objects; return the
    registry entries {name: (class, fixed parameters)} they define. Nothing is written; the registry and
    ``sys.modules`` are restored."""
    chain = dependents(module)
    saved_registry, saved_modules = dict(base._REGISTRY), {name: sys.modules.get(name) for name in chain}
    base._REGISTRY.clear()
    try:
        for name in chain:
            path, source = _source(name)
            tree = ast.parse(source)
            if name == module and rewrite is not None:
                tree = ast.fix_missing_locations(rewrite.visit(tree))
            fresh = types.ModuleType(name)
            fresh.__file__, fresh.__package__ = path, SOLVERS
            setattr(fresh, _HOOK, hook)
            sys.modules[name] = fresh
            exec(compile(tree, path, "exec"), vars(fresh))
        return dict(base._REGISTRY)
    finally:
        base._REGISTRY.clear()
        base._REGISTRY.update(saved_registry)
        for name, original in saved_modules.items():
            sys.modules[name] = original


def mutant_registry(site: Site, delta: float = DELTA) -> dict:
    """The registry entries of the module of ``site`` (and its dependents) with that coefficient scaled."""
    factor = 1.0 + delta
    if site.kind == "literal":
        return load(site.module, _Rewrite(literal=site.key, factor=factor))
    return load(site.module, _Rewrite(calls=frozenset({site.key})),
                hook=lambda value, key: scale_entry(value, site.path, factor))


def build(registry: dict, name: str, **params) -> Solver:
    """A solver from a (mutant) registry, as :func:`sdetoolkit.solvers.get_solver` builds it."""
    cls, fixed = registry[name]
    solver = cls(**{**fixed, **params})
    solver.name = name
    return solver


# -- studies -------------------------------------------------------------------------------------------------------
@cache
def _problem_data():
    problem = get_problem(PROBLEM)
    grids = [make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max) for n in STEPS]
    prior = problem.prior()
    x = {kind: prior.sample(n, torch.Generator().manual_seed(0)) for kind, n in N_SAMPLES.items()}
    exact = problem.distribution.pf_ode_map(x["global"], problem.schedule, problem.t_max, problem.t_min)
    return problem, grids, x, exact, gaussian_law(problem.target())


def study_kind(solver: Solver) -> str | None:
    """'global' (deterministic with a claimed order), 'weak' (linear stochastic), 'moments' (other stochastic),
    or None (no order study: the adaptive references)."""
    if solver.stochastic:
        return "weak" if solver.linear else "moments"
    return "global" if solver.claimed().order else None


def run_study(solver: Solver, kind: str) -> list:
    """The studied outputs at each of :data:`STEPS`: final samples ('global', 'moments') or exact laws ('weak')."""
    problem, grids, x, _, _ = _problem_data()
    if kind == "weak":
        return [propagate(solver, problem.distribution, problem.schedule, g, check=False) for g in grids]
    noise = IIDNoise(0) if kind == "moments" else None
    return [sample(solver, problem.model(), g, x[kind], noise) for g in grids]


def _fitted_law(samples: torch.Tensor, like: GaussianLaw) -> GaussianLaw:
    rotated = samples if like.basis is None else samples @ like.basis
    mean = rotated.mean(0)
    return GaussianLaw(mean if like.basis is None else like.basis @ mean, rotated.var(0), like.basis)


def errors_of(outputs: list, kind: str) -> np.ndarray:
    """Error at each step count: RMS against the exact flow, or W2 (exact law, or fitted Gaussian) to the truth."""
    _, _, _, exact, marginal = _problem_data()
    if kind == "global":
        return np.array([float((y - exact).square().mean().sqrt()) for y in outputs])
    if kind == "weak":
        return np.array([law.w2(marginal) for law in outputs])
    return np.array([_fitted_law(y, marginal).w2(marginal) for y in outputs])


def differences(outputs: list, other: list) -> np.ndarray:
    """The perturbation d(N): RMS difference of samples, or W2 between the two exact laws."""
    return np.array([a.w2(b) if isinstance(a, GaussianLaw) else float((a - b).square().mean().sqrt())
                     for a, b in zip(outputs, other, strict=True)])


def identical(outputs: list, other: list) -> bool:
    """Bit-identical studied outputs."""
    def same(a, b) -> bool:
        if isinstance(a, GaussianLaw):
            return torch.equal(a.mean, b.mean) and torch.equal(a.variances, b.variances)
        return torch.equal(a, b)
    return all(same(a, b) for a, b in zip(outputs, other, strict=True))


@dataclass(frozen=True)
class Reference:
    """The order study of one configuration and what the correct solver measures in it.

    ``expected`` is the order the study asserts (``source``: the claim, a recorded finding, or the solver's own fit
    where it misses both in this window); ``excluded`` is the claim a finding must keep outside the interval.
    """

    name: str
    params: dict
    kind: str
    expected: float
    source: str
    excluded: float | None
    outputs: list = field(repr=False)
    errors: np.ndarray = field(repr=False)
    fit: OrderFit = field(repr=False)


def _candidates(solver: Solver, kind: str) -> list[tuple[float, str, float | None]]:
    """(expected order, source, excluded claim) in order of preference."""
    claimed = solver.claimed().order
    findings = [f for f in FINDINGS if f.solver == solver.name and f.problem == PROBLEM]
    if kind == "global":
        recorded = [f for f in findings if f.kind == "global"]
        if recorded:
            f = recorded[0]
            return [(f.window if f.window is not None else f.measured, "finding", claimed)]
        return [(claimed, "claim", None)]
    return [(c.order, "claim", None) for c in solver.claims() if c.kind == "weak" and c.order is not None] + \
        [(f.measured, "finding", None) for f in findings if f.kind == "weak"]


@dataclass(frozen=True)
class Verdict:
    """A study's verdict on errors: the order check (``order_ok``, with ``why`` and the fit) and the limit checks,
    through ``finest`` (the error at the finest grid over the correct solver's) and ``worst`` (the largest such
    ratio over the window)."""

    order_ok: bool
    why: str
    fit: OrderFit | None
    finest: float
    worst: float

    def passes(self, limit: float | None = None, window: bool = True) -> bool:
        """The order check and the limit check at ``limit`` (default :data:`LIMIT_FACTOR`; math.inf: the order check
        alone), over the whole window or (``window=False``) at the finest grid only."""
        bound = LIMIT_FACTOR if limit is None else limit
        return self.order_ok and (self.worst if window else self.finest) <= bound


def verdict(reference: Reference, errors: np.ndarray) -> Verdict:
    """The reference's study applied to errors: the expected order inside the fitted interval (a finding's claim
    outside it), and the errors against the correct solver's."""
    ratios = errors / reference.errors
    finest, worst = float(ratios[-1]), float(ratios.max())
    try:
        fit = fit_order([1.0 / n for n in STEPS], errors, floor=FLOORS[reference.kind])
    except ValueError as err:
        return Verdict(False, f"no fit ({err})", None, finest, worst)
    interval = f"[{fit.low:.2f}, {fit.high:.2f}]"
    if not fit.contains(reference.expected):
        return Verdict(False, f"order {reference.expected:.3g} outside {interval}", fit, finest, worst)
    if reference.excluded is not None and fit.contains(reference.excluded):
        return Verdict(False, f"claim {reference.excluded:.3g} inside {interval}", fit, finest, worst)
    return Verdict(True, f"p = {fit.order:.2f} {interval}", fit, finest, worst)


def reference(name: str, registry: dict | None = None) -> Reference | None:
    """The order study of registered configuration ``name`` (with :data:`STUDY_PARAMS`), or None if it has none."""
    params = STUDY_PARAMS.get(name, {})
    solver = build(registry if registry is not None else base._REGISTRY, name, **params)
    kind = study_kind(solver)
    if kind is None:
        return None
    outputs = run_study(solver, kind)
    errors = errors_of(outputs, kind)
    own = fit_order([1.0 / n for n in STEPS], errors, floor=FLOORS[kind])
    for expected, source, excluded in _candidates(solver, kind):
        candidate = Reference(name, params, kind, expected, source, excluded, outputs, errors, own)
        if verdict(candidate, errors).passes():
            return candidate
    return Reference(name, params, kind, own.order, "own fit", None, outputs, errors, own)


@dataclass(frozen=True)
class Perturbation:
    """What a mutant does to a study's outputs: d(N) (module docstring), its fitted rate (None where it has no fit)
    and its largest size relative to the correct solver's error."""

    d: np.ndarray
    rate: OrderFit | None
    relative: float

    def __str__(self) -> str:
        rate = "no fit" if self.rate is None else \
            f"h^{self.rate.order:.2f} [{self.rate.low:.2f}, {self.rate.high:.2f}]"
        return f"d ~ {rate}, max d/error {self.relative:.1e}"


def perturbation(ref: Reference, mutant_outputs: list) -> Perturbation:
    """The perturbation d(N) of a mutant's outputs against the correct solver's."""
    d = differences(ref.outputs, mutant_outputs)
    try:
        rate = fit_order([1.0 / n for n in STEPS], d)
    except ValueError:
        rate = None
    return Perturbation(d, rate, float(np.max(d / ref.errors)))


def classify(ref: Reference, change: Perturbation) -> tuple[str, str]:
    """Why a survivor survives (category, explanation); the categories are defined in the module docstring."""
    if ref.fit.low <= 0:
        return "no rate", f"the correct solver's fitted order is {ref.fit.order:.2f}"
    if change.rate is not None and change.rate.high >= ref.expected:
        return "higher order", f"d vanishes at rate {change.rate.order:.2f}, the expected order is {ref.expected:.3g}"
    if change.relative < RESOLUTION:
        return "below resolution", f"d is at most {change.relative:.1e} of the error"
    finest = float(change.d[-1] / ref.errors[-1])
    if change.rate is not None and finest < 1:
        rate = change.rate.order
        crossing = STEPS[-1] * finest ** (-1.0 / (ref.expected - rate))
        trend = "does not vanish" if rate <= 0 else f"vanishes at rate {rate:.2f} < {ref.expected:.3g}"
        return "beyond the window", (f"d {trend}, is {finest:.2f} of the error at N = {STEPS[-1]} and overtakes "
                                     f"it near N = {crossing:.2g}")
    return "unexplained", f"d/error = {finest:.2f} at N = {STEPS[-1]} and the study passes"


# -- running mutants -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SolverOutcome:
    """One configuration's study of one mutant.

    ``outcome``: 'caught' (the study fails: order, limit over the window at :data:`LIMIT_FACTOR`, or the run
    fails), 'survived', 'identical' (bit-identical outputs) or 'structural' (the literal is used as an integer,
    :data:`_STRUCTURAL`). ``order_ok`` (None: the run failed), ``finest`` and ``worst``
    keep the checks apart, so that other limit checks can be read off; ``category`` and ``why`` classify a
    survivor.
    """

    name: str
    kind: str
    outcome: str
    detail: str
    nfe: int | None = None
    order_ok: bool | None = None
    finest: float = math.nan
    worst: float = math.nan
    finest_error: float = math.nan
    order: float = math.nan
    low: float = math.nan
    high: float = math.nan
    d_rate: float = math.nan
    d_relative: float = math.nan
    category: str = ""
    why: str = ""


@dataclass(frozen=True)
class MutantResult:
    """A mutant's fate, with each studied configuration's: 'caught' (by a study), 'rejected' (refused on import:
    caught by the module's own checks), 'survived', 'not exercised' or 'structural'."""

    site: Site
    outcome: str
    detail: str
    solvers: tuple[SolverOutcome, ...] = ()

    @property
    def category(self) -> str:
        """For a survivor: 'unexplained' if any configuration's survival is, else the categories seen."""
        if self.outcome != "survived":
            return ""
        kinds = sorted({s.category for s in self.solvers if s.outcome == "survived"})
        return "unexplained" if "unexplained" in kinds else " + ".join(kinds)

    def caught_at(self, limit: float, window: bool = True) -> bool:
        """Whether the mutant is caught with the limit check at ``limit`` over the window (or, ``window=False``, at
        the finest grid only; math.inf: the order check alone)."""
        if self.outcome in ("rejected", "structural", "not exercised"):
            return self.outcome == "rejected"
        return any(s.order_ok is None or not s.order_ok or (s.worst if window else s.finest) > limit
                   for s in self.solvers if s.outcome in ("caught", "survived"))


def _trace(filename: str, run) -> set[int]:
    """Lines of ``filename`` executed while ``run()`` runs."""
    lines: set[int] = set()

    def local(frame, event, arg):
        if event == "line":
            lines.add(frame.f_lineno)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == filename else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        run()
    finally:
        sys.settrace(previous)
    return lines


def _config_key(solver: Solver) -> tuple:
    return type(solver).__module__, type(solver).__qualname__, tuple(sorted((k, repr(v))
                                                                            for k, v in solver.config.items()))


@dataclass
class ModulePlan:
    """What a module's mutants are tested on: its sites (value sites with their recorded entries), the studied
    configurations of it and its dependents (one name per distinct configuration) and the lines each runs."""

    module: str
    sites: list
    names: list
    coverage: dict


def plan(module: str) -> ModulePlan:
    """Record the entries of the value sites and the line coverage of ``module`` by a traced run of every studied
    configuration on the coarsest grid."""
    calls = value_calls(module)
    seen: dict = {site.key: set() for site in calls}

    def record(value, key):
        seen[key].update(entry_paths(value))
        return value

    registry = load(module, _Rewrite(calls=frozenset(seen)), hook=record)
    problem, grids, x, _, _ = _problem_data()
    filename, _ = _source(module)
    names, coverage, configs = [], {}, set()
    for name in registry:
        solver = build(registry, name, **STUDY_PARAMS.get(name, {}))
        key = _config_key(solver)
        if study_kind(solver) is None or key in configs:
            continue
        configs.add(key)
        names.append(name)
        noise = IIDNoise(0) if solver.stochastic else None
        coverage[name] = _trace(filename, lambda s=solver, z=noise: sample(s, problem.model(), grids[0], x["global"],
                                                                              z))
    values = [Site(s.module, s.kind, s.key, s.text, s.span, s.module_level, path, s.text)
              for s in calls for path in sorted(seen[s.key])]
    return ModulePlan(module, sorted(literal_sites(module) + values, key=lambda s: (s.key, s.path)), names, coverage)


def covering(site: Site, module_plan: ModulePlan) -> list[str]:
    """The studied configurations whose traced run executes the site's statement (all of them for module data)."""
    if site.module_level:
        return list(module_plan.names)
    lines = set(range(site.span[0], site.span[1] + 1))
    return [name for name in module_plan.names if module_plan.coverage[name] & lines]


_STRUCTURAL = (TypeError, IndexError, KeyError, RuntimeError)
"""Errors of a run that mean the perturbed literal is used as an integer (an order, a count, an index): the
RuntimeError is the sampling loop's check that a run makes the model evaluations its solver declares."""


def study_mutant(ref: Reference, solver: Solver) -> SolverOutcome:
    """Run the reference's study on a mutant configuration and judge it."""
    nfe = solver.expected_nfe(_problem_data()[1][-1])
    try:
        outputs = run_study(solver, ref.kind)
    except _STRUCTURAL as err:
        return SolverOutcome(ref.name, ref.kind, "structural", f"{type(err).__name__}: {err}", nfe)
    except Exception as err:  # the run fails (divergence, a domain error, the loop's NFE check): the study fails
        return SolverOutcome(ref.name, ref.kind, "caught", f"the run fails: {type(err).__name__}: {err}", nfe)
    if identical(outputs, ref.outputs):
        return SolverOutcome(ref.name, ref.kind, "identical", "bit-identical outputs", nfe)
    errors = errors_of(outputs, ref.kind)
    judged = verdict(ref, errors)
    change = perturbation(ref, outputs)
    fit = judged.fit
    fields = dict(nfe=nfe, order_ok=judged.order_ok, finest=judged.finest, worst=judged.worst,
                  finest_error=float(errors[-1]), d_rate=math.nan if change.rate is None else change.rate.order,
                  d_relative=change.relative)
    if fit is not None:
        fields.update(order=fit.order, low=fit.low, high=fit.high)
    detail = f"{judged.why}, error ratio {judged.finest:.3g} at N = {STEPS[-1]} (worst {judged.worst:.3g}); {change}"
    if not judged.passes():
        return SolverOutcome(ref.name, ref.kind, "caught", detail, **fields)
    category, why = classify(ref, change)
    return SolverOutcome(ref.name, ref.kind, "survived", f"{detail}; {category}: {why}", category=category, why=why,
                         **fields)


def run_mutant(site: Site, module_plan: ModulePlan, references: dict, delta: float = DELTA) -> MutantResult:
    """Build the mutant of ``site`` and run the studies of the configurations that execute it. The run stops at the
    first configuration whose order check fails (caught whatever the limit factor); ``references`` caches
    :func:`reference` by name."""
    names = covering(site, module_plan)
    if not names:
        return MutantResult(site, "not exercised", "no studied configuration runs this line")
    try:
        registry = mutant_registry(site, delta)
    except Exception as err:  # a module that refuses the mutant on import (e.g. order conditions)
        return MutantResult(site, "rejected", f"refused on import: {type(err).__name__}: {err}")
    outcomes = []
    for name in names:
        if name not in references:
            references[name] = reference(name)
        ref = references[name]
        outcome = study_mutant(ref, build(registry, name, **ref.params))
        outcomes.append(outcome)
        if outcome.outcome == "structural" or (outcome.outcome == "caught" and not outcome.order_ok):
            break
    outcomes = tuple(outcomes)
    for fate in ("structural", "caught"):
        first = next((o for o in outcomes if o.outcome == fate), None)
        if first is not None:
            return MutantResult(site, fate, f"{first.name}: {first.detail}", outcomes)
    survived = [o for o in outcomes if o.outcome == "survived"]
    if not survived:
        return MutantResult(site, "not exercised", "bit-identical outputs in every study that runs it", outcomes)
    return MutantResult(site, "survived", "; ".join(f"{o.name}: {o.detail}" for o in survived), outcomes)


def solver_modules() -> list[str]:
    """Every solver module but the protocol (base)."""
    return sorted(m for m in _imports() if not m.endswith((".base", ".__init__")))


def mutation_sweep(modules=None, delta: float = DELTA) -> Iterator[MutantResult]:
    """Every mutant of the given solver modules (default: all), one result at a time."""
    references: dict = {}
    for module in modules or solver_modules():
        module_plan = plan(module)
        for site in module_plan.sites:
            yield run_mutant(site, module_plan, references, delta)


def result_rows(result: MutantResult) -> list[dict]:
    """Tidy rows of one mutant: one per studied configuration (one row with empty configuration columns if none was
    studied), all with the same columns.

    Common columns (problem, solver, steps, nfe, seed, dtype, metric, value = the mutant's error at the finest grid,
    stderr), then the site, the mutant's outcome and the configuration's.
    """
    site = result.site
    mutant = dict(module=site.module, family=site.family, site_kind=site.kind, line=site.line, site=site.label,
                  outcome=result.outcome, category=result.category, detail=result.detail)
    metric = {"global": "rms", "weak": "w2", "moments": "w2"}
    studied = result.solvers or (SolverOutcome("", "", "", ""),)
    return [dict(problem=PROBLEM, solver=s.name, steps=STEPS[-1], nfe=s.nfe, seed=0, dtype="float64",
                 metric=metric.get(s.kind, ""), value=s.finest_error, stderr=math.nan, **mutant,
                 solver_outcome=s.outcome, solver_category=s.category, order_ok=s.order_ok, finest=s.finest,
                 worst=s.worst, order=s.order, low=s.low, high=s.high, d_rate=s.d_rate, d_relative=s.d_relative,
                 solver_why=s.why, solver_detail=s.detail) for s in studied]


def results_table(results) -> pd.DataFrame:
    """The tidy table of a sweep's results."""
    return pd.DataFrame([row for result in results for row in result_rows(result)])
