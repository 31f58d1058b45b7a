"""Scalar functions that accept Python floats and sympy expressions alike.

Solver steps call these instead of :mod:`math` for their scalar coefficients, so the same ``step`` code runs on
floats (the fast path: one ``type`` check, then :mod:`math`) and on sympy expressions (exact coefficients for the
symbolic local-order analysis in :mod:`.local_order`).
"""

from __future__ import annotations

import math

import sympy as sp

_FLOATS = (float, int)


def is_symbolic(*values) -> bool:
    """Whether any of ``values`` is a sympy object."""
    return any(isinstance(v, sp.Basic) for v in values)


def real(value):
    """``float(value)`` for numbers and 0-d tensors; a sympy expression is returned as it is."""
    return value if isinstance(value, sp.Basic) else float(value)


def exp(x):
    """e^x."""
    return math.exp(x) if type(x) in _FLOATS else sp.exp(x)


def expm1(x):
    """e^x - 1 (``math.expm1`` on floats; the exact expression on sympy)."""
    return math.expm1(x) if type(x) in _FLOATS else sp.exp(x) - 1


def log(x):
    """Natural logarithm; -inf at 0 on floats, as a limit of the solvers' lambda = -log(sigma)."""
    if type(x) in _FLOATS:
        return math.log(x) if x > 0 else -math.inf
    return sp.log(x)


def sqrt(x):
    """Square root."""
    return math.sqrt(x) if type(x) in _FLOATS else sp.sqrt(x)


def isinf(x) -> bool:
    """Whether x is +-inf (never for a sympy expression with free symbols)."""
    if type(x) in _FLOATS:
        return math.isinf(x)
    return x in (sp.oo, -sp.oo, sp.zoo)
