r"""Truncated Laurent series in one symbol with exact coefficients: a fast ``sympy.series`` for solver steps.

A sympy expression in h built from +, *, powers, exp and log is evaluated bottom-up as
:math:`\sum_{i} c_i h^{v+i} + O(h^{v+r})`, tracking the precision of every operation (Knuth, *TAOCP* vol. 2,
Sec. 4.7: power-series reciprocal, powers, exp and log by their recurrences). Lagrange denominators such as
:math:`1/(e^{h} - e^{2h})` are poles of order one; the lost precision is tracked, and :func:`taylor` retries with
more working terms until the requested ones are known. ``sympy.series`` computes the same coefficients (tested)
but is orders of magnitude slower on a composed multistep or Runge-Kutta step.
"""

from __future__ import annotations

import sympy as sp


class PrecisionLost(ArithmeticError):
    """Division by a series none of whose terms is known at the working precision."""


class Series:
    """sum_i coeffs[i] h^(val + i) + O(h^(val + len(coeffs))); leading coefficient non-zero unless empty."""

    __slots__ = ("coeffs", "val")

    def __init__(self, val: int, coeffs: list):
        while coeffs and coeffs[0] == 0:
            coeffs = coeffs[1:]
            val += 1
        self.val, self.coeffs = val, coeffs

    @property
    def order(self) -> int:
        return self.val + len(self.coeffs)

    def coefficient(self, power: int):
        if power >= self.order:
            raise PrecisionLost(f"h^{power} is beyond the known order {self.order}")
        return self.coeffs[power - self.val] if power >= self.val else sp.Integer(0)

    @classmethod
    def constant(cls, c, order: int) -> Series:
        return cls(0, [sp.sympify(c)] + [sp.Integer(0)] * (order - 1)) if c != 0 else cls(order, [])

    def __add__(self, other: Series) -> Series:
        order = min(self.order, other.order)
        val = min(self.val, other.val, order)
        return Series(val, [self.coefficient(k) + other.coefficient(k) for k in range(val, order)])

    def __neg__(self) -> Series:
        return Series(self.val, [-c for c in self.coeffs])

    def __mul__(self, other: Series) -> Series:
        n = min(len(self.coeffs), len(other.coeffs))
        if n == 0:
            return Series(min(self.order + other.val, other.order + self.val), [])
        a, b = self.coeffs, other.coeffs
        return Series(self.val + other.val, [sum(a[i] * b[k - i] for i in range(k + 1)) for k in range(n)])

    def inverse(self) -> Series:
        if not self.coeffs:
            raise PrecisionLost("division by a series with no known term")
        b, n = self.coeffs, len(self.coeffs)
        c = [1 / b[0]]
        for k in range(1, n):
            c.append(-sum(b[i] * c[k - i] for i in range(1, k + 1)) / b[0])
        return Series(-self.val, c)

    def _unit(self):
        """(c0, u) with self = c0 h^val (1 + u), u of valuation >= 1."""
        if not self.coeffs:
            raise PrecisionLost("no known term")
        c0 = self.coeffs[0]
        return c0, Series(1, [c / c0 for c in self.coeffs[1:]])

    def power(self, exponent) -> Series:
        exponent = sp.Rational(exponent)
        if exponent.is_integer:
            n = int(exponent)
            base = self if n >= 0 else self.inverse()
            result = Series.constant(1, base.order - base.val + 1)
            for _ in range(abs(n)):
                result = result * base
            return result
        if (self.val * exponent).q != 1:
            raise PrecisionLost(f"h^{self.val} to the power {exponent} is not a Laurent series")
        c0, u = self._unit()
        terms = len(self.coeffs)
        out, binomial, u_power = [sp.Integer(0)] * terms, sp.Integer(1), Series.constant(1, terms)
        for k in range(terms):
            for i in range(k, terms):
                out[i] += binomial * u_power.coefficient(i) if i < u_power.order else 0
            binomial = binomial * (exponent - k) / (k + 1)
            u_power = u_power * u
        return Series(int(self.val * exponent), [c0**exponent * c for c in out])

    def exp(self) -> Series:
        if self.val < 0:
            raise PrecisionLost("exp of a series with a pole")
        order = self.order
        c0 = self.coefficient(0) if order > 0 else sp.Integer(0)
        u = self + Series.constant(-c0, order) if c0 != 0 else self
        out, term = Series.constant(1, order), Series.constant(1, order)
        for k in range(1, order + 1):
            term = term * u * Series.constant(sp.Rational(1, k), order)
            if term.val >= order:
                break
            out = out + term
        return out * Series.constant(sp.exp(c0), order)

    def log(self) -> Series:
        if self.val != 0:
            raise PrecisionLost("log of a series vanishing or singular at h = 0")
        c0, u = self._unit()
        terms = len(self.coeffs)
        out, u_power = Series.constant(sp.log(c0), terms), Series.constant(1, terms)
        for k in range(1, terms + 1):
            u_power = u_power * u
            if u_power.val >= terms:
                break
            out = out + u_power * Series.constant(sp.Rational((-1) ** (k + 1), k), terms)
        return out


def evaluate(expr: sp.Expr, h: sp.Symbol, terms: int) -> Series:
    """The series of ``expr`` at h = 0 with every leaf known to O(h^terms)."""
    cache: dict = {}

    def walk(e):
        if e in cache:
            return cache[e]
        if not e.has(h):
            out = Series.constant(e, terms)
        elif e == h:
            out = Series(1, [sp.Integer(1)] + [sp.Integer(0)] * (terms - 2))
        elif e.is_Add:
            out = walk(e.args[0])
            for arg in e.args[1:]:
                out = out + walk(arg)
        elif e.is_Mul:
            out = walk(e.args[0])
            for arg in e.args[1:]:
                out = out * walk(arg)
        elif e.is_Pow and not e.exp.has(h):
            out = walk(e.base).power(e.exp)
        elif isinstance(e, sp.exp):
            out = walk(e.args[0]).exp()
        elif isinstance(e, sp.log):
            out = walk(e.args[0]).log()
        else:
            raise TypeError(f"power series: unsupported sub-expression {e}")
        cache[e] = out
        return out

    return walk(expr)


def _clean(c):
    """A coefficient in lowest terms: rationals as they are, other numbers (sqrt, exp(1)) simplified."""
    c = sp.sympify(c)
    return c if c.is_Rational else sp.simplify(c)


def taylor(expr: sp.Expr, h: sp.Symbol, terms: int, margin: int = 6, max_margin: int = 40) -> list:
    """Exact coefficients of h^0 .. h^(terms - 1) of ``expr`` (analytic at 0), adding working terms as needed."""
    while True:
        try:
            series = evaluate(expr, h, terms + margin)
            if series.order >= terms:
                if series.val < 0:
                    raise ValueError(f"power series: expression has a pole of order {-series.val} at h = 0")
                return [_clean(series.coefficient(k)) for k in range(terms)]
        except PrecisionLost:
            pass
        if margin >= max_margin:
            raise PrecisionLost(f"power series: {terms} terms not reached with {margin} extra working terms")
        margin *= 2
