r"""The exponential-integrator functions :math:`\varphi_k` (Hochbruck & Ostermann 2010, Acta Numerica 19, eq. 2.10).

:math:`\varphi_0(z) = e^z` and :math:`\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z`, so
:math:`\varphi_k(z) = \sum_{n\ge0} z^n/(n+k)!` and :math:`\varphi_k(0) = 1/k!`. The recurrence is derived in sympy
(:func:`phi_expr`) and compiled twice: the closed form :math:`(\mathrm{expm1}(z) - \sum_{m=1}^{k-1} z^m/m!)/z^k`
for :math:`|z| \ge` :data:`THRESHOLDS` [k], and the Taylor series (exact rational coefficients, Horner) below it,
where the closed form would cancel. Relative accuracy is about 1e-15 for :math:`|z|` up to 700 (tested against
mpmath at 50 digits).

The solvers' coefficients are these functions at :math:`\pm h` (Lu et al. 2022b, DPM-Solver++, arXiv 2211.01095,
eq. 3.4 and App. B; Zhao et al. 2023, UniPC, arXiv 2302.04867, eq. 7):

* noise form (DPM-Solver): :math:`e^{h} - 1 = h\varphi_1(h)`, :math:`(e^h - 1)/h - 1 = h\varphi_2(h)`;
* data form (DPM-Solver++): :math:`\varphi^{++}_1 = e^{-h} - 1 = -h\varphi_1(-h)`,
  :math:`\varphi^{++}_2 = \varphi^{++}_1/h + 1 = h\varphi_2(-h)`,
  :math:`\varphi^{++}_3 = \varphi^{++}_2/h - \tfrac12 = -h\varphi_3(-h)` (:func:`data_phis`).

Every function takes a float or a sympy expression; on sympy it returns the exact closed form.
"""

from __future__ import annotations

import math
from functools import cache

import sympy as sp
from sympy.codegen.cfunctions import expm1

from . import ops

Z = sp.Symbol("z")
K_MAX = 6
"""Highest k compiled (UniPC-3 needs phi_4)."""

THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
r"""Below :math:`|z|` = THRESHOLDS[k] the Taylor series is used. The closed form loses about
:math:`\log_{10}(k!\,e^{|z|}/|z|^k)` digits, which stays below 1 digit above these values."""

SERIES_TOL = 1e-18


def phi_expr(k: int, z=Z) -> sp.Expr:
    r""":math:`\varphi_k(z)` from the recurrence :math:`\varphi_{k+1} = (\varphi_k - 1/k!)/z`, as a sympy expression."""
    if k < 0:
        raise ValueError(f"k: expected k >= 0, got {k}")
    expr = sp.exp(z)
    for j in range(k):
        expr = (expr - sp.Rational(1, math.factorial(j))) / z
    return expr


def closed_form(k: int, z=Z) -> sp.Expr:
    r"""The cancellation-reduced closed form :math:`(\mathrm{expm1}(z) - \sum_{m=1}^{k-1} z^m/m!)/z^k`."""
    if k == 0:
        return sp.exp(z)
    return (expm1(z) - sum(z**m / sp.factorial(m) for m in range(1, k))) / z**k


def series_coefficients(k: int, terms: int) -> list[sp.Rational]:
    r"""The Taylor coefficients :math:`1/(n+k)!`, n = 0 .. terms - 1."""
    return [sp.Rational(1, math.factorial(n + k)) for n in range(terms)]


def _series_terms(k: int, bound: float) -> int:
    """Terms so that the first omitted one is below SERIES_TOL relative to phi_k(-bound) >= e^-bound / k!."""
    floor = math.exp(-bound) / math.factorial(k)
    n = 1
    while bound**n / math.factorial(n + k) > SERIES_TOL * floor:
        n += 1
    return n


@cache
def _compiled(k: int):
    """(closed-form float function, Horner coefficients, threshold) for phi_k, checked against the recurrence."""
    if not 0 <= k <= K_MAX:
        raise ValueError(f"k: compiled phi functions cover 0 .. {K_MAX}, got {k}")
    closed = closed_form(k)
    if sp.cancel((closed.replace(expm1, lambda a: sp.exp(a) - 1) - phi_expr(k)).rewrite(sp.exp)) != 0:
        raise AssertionError(f"phi_{k}: closed form does not match the recurrence")
    threshold = THRESHOLDS[k]
    horner = [float(c) for c in reversed(series_coefficients(k, _series_terms(k, threshold)))]
    return sp.lambdify(Z, closed, "math"), tuple(horner), threshold


def phi(k: int, z):
    r""":math:`\varphi_k(z)` for a float (compiled, series below the threshold) or a sympy expression (exact)."""
    if ops.is_symbolic(z):
        return phi_expr(k, z)
    fn, horner, threshold = _compiled(k)
    z = float(z)
    if z == -math.inf:
        return 0.0                            # the limit: e^z and every phi_k decay
    if abs(z) >= threshold:
        return fn(z)
    value = 0.0
    for c in horner:
        value = value * z + c
    return value


def z_phi(k: int, z):
    r""":math:`z\varphi_k(z)`, with its finite limit :math:`\varphi_{k-1}(z) - 1/(k-1)!` at :math:`z = \pm\infty`
    (a step to :math:`\sigma = 0` has :math:`h = \infty`; the official recurrences give the same limits)."""
    if k < 1:
        raise ValueError(f"k: expected k >= 1, got {k}")
    if ops.isinf(z):
        return phi(k - 1, z) - 1 / math.factorial(k - 1)
    return z * phi(k, z)


def data_phis(h):
    r"""DPM-Solver++'s :math:`(\varphi^{++}_1, \varphi^{++}_2, \varphi^{++}_3) = (e^{-h} - 1,\ \varphi^{++}_1/h + 1,\
    \varphi^{++}_2/h - \tfrac12)` (official ``dpm_solver_pytorch.py``), computed as
    :math:`(-h\varphi_1(-h), h\varphi_2(-h), -h\varphi_3(-h))` without cancellation."""
    return z_phi(1, -h), -z_phi(2, -h), z_phi(3, -h)
