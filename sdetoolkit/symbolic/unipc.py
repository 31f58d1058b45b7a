r"""UniPC's coefficients (Zhao et al. 2023, arXiv 2302.04867, Sec. 3.1-3.2 and App. E; ``wl-zhao/UniPC``
``uni_pc.py::multistep_uni_pc_bh_update``), data-prediction form with :math:`hh = -h`.

* :math:`B(h)`: ``bh1`` :math:`B = hh`, ``bh2`` :math:`B = e^{hh} - 1` (paper eq. 17: any :math:`B(h) = O(h)`);
* right-hand side :math:`b_j = j!\,hh\,\varphi_{j+1}(hh)/B(h)`, j = 1 .. p (the official recurrence
  :math:`g_1 = (e^{hh}-1)/hh - 1`, :math:`g_{j+1} = g_j/hh - 1/(j+1)!` is :math:`g_j = hh\,\varphi_{j+1}(hh)`,
  here evaluated by :func:`~.phi.phi` without its cancellation);
* the Vandermonde system :math:`\sum_k r_k^{j-1}\rho_k = b_j` (paper eq. 8, :math:`R_p(h)`), solved once in sympy
  for symbolic :math:`r_k, b_j` and compiled (:func:`vandermonde_solution`);
* UniP-p solves the first p - 1 rows with the past ratios (official: :math:`\rho = [1/2]` for p = 2), UniC-p all p
  rows with :math:`r_p = 1` (official: :math:`\rho = [1/2]` for p = 1).
"""

from __future__ import annotations

import math
from functools import cache

import sympy as sp

from . import ops
from .phi import z_phi

VARIANTS = ("bh1", "bh2")


def b_of_h(h, variant: str):
    """B(h) of the variant, at hh = -h."""
    if variant == "bh1":
        return -h
    if variant == "bh2":
        return ops.expm1(-h)
    raise ValueError(f"variant: expected 'bh1' or 'bh2', got {variant!r}")


def rhs(h, order: int, b_h):
    r""":math:`b_j = j!\,hh\,\varphi_{j+1}(hh)/B(h)`, j = 1 .. order."""
    hh = -h
    return [math.factorial(j) * z_phi(j + 1, hh) / b_h for j in range(1, order + 1)]


@cache
def vandermonde_expr(n: int):
    r"""Symbols (r_1..r_n, b_1..b_n) and the exact solution :math:`\rho` of :math:`\sum_k r_k^{j-1}\rho_k = b_j`."""
    r = sp.symbols(f"r1:{n + 1}")
    b = sp.symbols(f"b1:{n + 1}")
    matrix = sp.Matrix(n, n, lambda j, k: r[k] ** j)
    rho = [sp.factor(v) for v in matrix.LUsolve(sp.Matrix(b))]
    return r, b, rho


@cache
def _vandermonde_compiled(n: int):
    r, b, rho = vandermonde_expr(n)
    return sp.lambdify([*r, *b], rho, "math")


def vandermonde_solution(ratios, rhs_values) -> list:
    """rho for the ratios r_k and right-hand side b_j (floats: compiled closed form; sympy: exact)."""
    n = len(ratios)
    if n == 0:
        return []
    if ops.is_symbolic(*ratios, *rhs_values):
        r, b, rho = vandermonde_expr(n)
        values = dict(zip(r, ratios, strict=True)) | dict(zip(b, rhs_values, strict=True))
        return [v.subs(values) for v in rho]
    return list(_vandermonde_compiled(n)(*ratios, *rhs_values))


def unipc_coefficients(h, rks, variant: str, corrector: bool = True):
    """(B(h), rho_p, rho_c) for one step of order p = len(rks) + 1, as the official code defines them.

    ``h`` is lambda_t - lambda_s; ``rks`` are the ratios r_1 .. r_{p-1} of the past points. ``rho_p`` has p - 1
    entries (empty for p = 1); ``rho_c`` has p entries, the last for the new point (None without corrector).
    """
    order = len(rks) + 1
    b_h = b_of_h(h, variant)
    b = rhs(h, order, b_h)
    half = sp.Rational(1, 2) if ops.is_symbolic(h, *rks) else 0.5
    if order == 1:
        rho_p = []
    elif order == 2:
        rho_p = [half]
    else:
        rho_p = vandermonde_solution(list(rks), b[:-1])
    rho_c = None
    if corrector:
        rho_c = [half] if order == 1 else vandermonde_solution([*rks, 1], b)
    return b_h, rho_p, rho_c
