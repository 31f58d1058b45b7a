r"""Lagrange interpolation weights of multistep methods, integrated exactly in sympy (and the official quadratures).

* :func:`adams_bashforth`: variable-step Adams-Bashforth weights :math:`w_j = \int_0^1 \ell_j(\theta)\,d\theta`,
  :math:`\ell_j` the Lagrange basis through :math:`\theta_0 = 0` and :math:`\theta_j = -(h_1+\dots+h_j)/h_0`
  (Hairer, Norsett & Wanner, *Solving ODEs I*, Sec. III.5, eq. 5.4), so that
  :math:`\int_{u_0}^{u_0+h_0} f \approx h_0\sum_j w_j f_j`. Derived once per order as rational functions of the step
  ratios :math:`h_j/h_0` and compiled; on equal steps they are the classical [1], [3, -1]/2, [23, -16, 5]/12,
  [55, -59, 37, -9]/24 (:func:`equal_step_adams_bashforth`) that PNDM/PLMS (Liu et al. 2022, eq. 12) and iPNDM use.
* :func:`exponential_adams`: the exponential Adams-Bashforth weights in lambda of the data-form exponential
  integrator, :math:`\int_0^1 h e^{-h(1-\theta)}\ell_j(\theta)\,d\theta = h\sum_m a_{jm}\,m!\,\varphi_{m+1}(-h)`
  (Hochbruck & Ostermann 2010, Sec. 2.4; the 2-point case is DPM-Solver++(2M) "heun", Lu et al. 2022b, App. B).
* DEIS tAB (Zhang & Chen 2023, arXiv 2204.13902, eq. 14; ``qsh-zh/deis`` ``th_deis/multistep.py``):
  :math:`C_j = \alpha(t_e)\int_{t_s}^{t_e}\ell_j(\tau)\,\rho'(\tau)\,d\tau` with :math:`\rho = \sigma/\alpha` and the
  basis in t: :func:`riemann_weights` (the official 10,000-point left Riemann sum), :func:`gauss_weights`
  (composite Gauss-Legendre in lambda, accurate to rounding) and, on sympy inputs, the exact integral
  (:func:`exact_time_weights`) or the exact finite Riemann sum.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import sympy as sp
import torch

from . import ops
from .phi import phi

THETA = sp.Symbol("theta")

GAUSS_NODES = 16
GAUSS_PIECE = 1.0
TAIL = 40.0


class NotClosedForm(ValueError):
    """The requested weights have no closed form on these inputs (e.g. a Riemann sum of a non-polynomial)."""


def lagrange_polynomials(nodes, var) -> list[sp.Expr]:
    r"""The Lagrange basis :math:`\ell_j(v) = \prod_{k\ne j}(v - n_k)/(n_j - n_k)` as sympy expressions."""
    return [sp.Mul(*[(var - n_k) / (n_j - n_k) for k, n_k in enumerate(nodes) if k != j])
            for j, n_j in enumerate(nodes)]


def lagrange_basis(tau: np.ndarray, nodes) -> np.ndarray:
    r"""(len(nodes), len(tau)): :math:`\ell_j(\tau)` evaluated in float64 for each node j."""
    nodes = [float(v) for v in nodes]
    basis = np.ones((len(nodes), len(tau)))
    for j, t_j in enumerate(nodes):
        for k, t_k in enumerate(nodes):
            if k != j:
                basis[j] *= (tau - t_k) / (t_j - t_k)
    return basis


# -- Adams-Bashforth ---------------------------------------------------------------------------------------------
def ratio_symbols(order: int) -> tuple[sp.Symbol, ...]:
    """q_1 .. q_{order-1}: the past steps over the new one, h_j / h_0."""
    return sp.symbols(f"q1:{order}", positive=True) if order > 1 else ()


@cache
def adams_bashforth_expr(order: int) -> tuple[sp.Expr, ...]:
    r"""The weights :math:`w_0 .. w_{order-1}` as rational functions of :func:`ratio_symbols`, integrated exactly."""
    if not 1 <= order <= 6:
        raise ValueError(f"order: expected 1 .. 6, got {order}")
    q = ratio_symbols(order)
    nodes = [sp.Integer(0)] + [-sum(q[:j]) for j in range(1, order)]
    return tuple(sp.factor(sp.integrate(sp.expand(ell), (THETA, 0, 1)))
                 for ell in lagrange_polynomials(nodes, THETA))


@cache
def _adams_compiled(order: int):
    return sp.lambdify(ratio_symbols(order), list(adams_bashforth_expr(order)), "math")


def adams_bashforth(steps) -> tuple:
    """Variable-step Adams-Bashforth weights for the steps (h_0, h_1, ...) (new step first); floats or sympy."""
    steps = tuple(steps)
    ratios = [s / steps[0] for s in steps[1:]]
    if ops.is_symbolic(*steps):
        q = ratio_symbols(len(steps))
        return tuple(w.subs(dict(zip(q, ratios, strict=True))) for w in adams_bashforth_expr(len(steps)))
    return tuple(_adams_compiled(len(steps))(*ratios))


@cache
def equal_step_adams_bashforth(order: int) -> tuple[sp.Rational, ...]:
    """The classical equal-step weights (nodes 0, -1, -2, ...), integrated exactly: exact rationals."""
    nodes = [sp.Integer(-j) for j in range(order)]
    return tuple(sp.integrate(sp.expand(ell), (THETA, 0, 1)) for ell in lagrange_polynomials(nodes, THETA))


# -- exponential Adams-Bashforth in lambda ----------------------------------------------------------------------------
@cache
def _monomial_coefficients(order: int):
    """(a_jm) with ell_j(theta) = sum_m a_jm theta^m, as functions of the node ratios (nodes 0, -q_1, -q_1-q_2..)."""
    q = ratio_symbols(order)
    nodes = [sp.Integer(0)] + [-sum(q[:j]) for j in range(1, order)]
    rows = [sp.Poly(sp.expand(ell), THETA).all_coeffs()[::-1] for ell in lagrange_polynomials(nodes, THETA)]
    rows = [row + [sp.Integer(0)] * (order - len(row)) for row in rows]
    return sp.lambdify(q, [[sp.factor(a) for a in row] for row in rows], "math"), rows


def exponential_adams(h, steps) -> tuple:
    r"""Weights :math:`W_j = \int_0^1 h e^{-h(1-\theta)}\ell_j(\theta)\,d\theta` for the data-form step of length h
    in lambda, nodes at the current point and at the past steps ``steps`` (h_1, h_2, ...) before it.

    The data-form exponential integrator reads :math:`x_t = (\sigma_t/\sigma_s)x_s + \alpha_t\sum_j W_j\hat x_{0,j}`.
    """
    order = len(steps) + 1
    ratios = [s / h for s in steps]
    fn, rows = _monomial_coefficients(order)
    if ops.is_symbolic(h, *ratios):
        q = ratio_symbols(order)
        a = [[c.subs(dict(zip(q, ratios, strict=True))) for c in row] for row in rows]
    else:
        a = fn(*ratios)
    moments = [math.factorial(m) * phi(m + 1, -h) for m in range(order)]
    return tuple(h * sum(a_jm * mom for a_jm, mom in zip(row, moments, strict=True)) for row in a)


# -- DEIS tAB: the integral of the Lagrange basis in t against d rho ----------------------------------------------
def _numpy(fn, t: np.ndarray) -> np.ndarray:
    return fn(torch.as_tensor(t, dtype=torch.float64)).numpy()


def _rho_weight(schedule, var):
    r""":math:`\rho'(\tau) = (\dot\sigma - f\sigma)/\alpha` from the schedule's sympy expressions, at ``var``."""
    from ..schedules import T

    return sp.simplify(sp.diff(schedule.sigma_expr / schedule.alpha_expr, T)).subs(T, var)


def riemann_weights(schedule, t_start, t_end, nodes, num_item: int = 10000):
    r"""The official :math:`C_j`: a left Riemann sum of ``num_item`` points from ``t_start`` toward ``t_end``
    (``multistep.py::get_integrator_basis_fn``). On sympy inputs the finite sum is done exactly (Faulhaber), which
    needs a polynomial :math:`\rho'` (the ``edm`` schedule); otherwise :class:`NotClosedForm`."""
    if ops.is_symbolic(t_start, t_end, *nodes):
        return _exact_riemann(schedule, t_start, t_end, nodes, num_item)
    tau = np.linspace(t_start, t_end, num_item, endpoint=False)
    dt = (t_end - t_start) / num_item
    alpha = _numpy(schedule.alpha, tau)
    weight = (_numpy(schedule.dsigma_dt, tau) - _numpy(schedule.f, tau) * _numpy(schedule.sigma, tau)) / alpha
    weight *= float(schedule.alpha(t_end))
    return (lagrange_basis(tau, nodes) * weight).sum(axis=1) * dt


def _exact_riemann(schedule, t_start, t_end, nodes, num_item: int):
    from ..schedules import T

    k = sp.Symbol("k", integer=True, nonnegative=True)
    dt = (t_end - t_start) / num_item
    weight = _rho_weight(schedule, T)
    if not weight.is_polynomial(T):
        raise NotClosedForm(f"official Riemann sum: rho'(t) = {weight} is not a polynomial on schedule "
                            f"{schedule.name!r}, so the {num_item}-term sum has no closed form")
    alpha_end = schedule.alpha_expr.subs(T, t_end)
    powers = [sp.summation(k**m, (k, 0, num_item - 1)) for m in range(len(nodes) + sp.degree(weight, T) + 1)]
    out = []
    for ell in lagrange_polynomials(list(nodes), T):
        poly = sp.Poly(sp.expand((ell * weight).subs(T, t_start + k * dt)), k)
        out.append(alpha_end * dt * sum(c * powers[m] for (m,), c in poly.terms()))
    return out


def exact_time_weights(schedule, t_start, t_end, nodes):
    r""":math:`C_j = \alpha(t_e)\int_{t_s}^{t_e}\ell_j(\tau)\rho'(\tau)\,d\tau` integrated by sympy (sympy inputs)."""
    from ..schedules import T

    weight = _rho_weight(schedule, T)
    alpha_end = schedule.alpha_expr.subs(T, t_end)
    out = []
    for ell in lagrange_polynomials(list(nodes), T):
        value = sp.integrate(sp.expand(ell * weight), (T, t_start, t_end))
        if value.has(sp.Integral):
            raise NotClosedForm(f"DEIS weights: no closed-form integral of l_j(t) rho'(t) on {schedule.name!r}")
        out.append(alpha_end * value)
    return out


def gauss_weights(schedule, t_start, t_end, nodes, n_nodes: int = GAUSS_NODES, piece: float = GAUSS_PIECE):
    r""":math:`C_j = -\alpha(t_e)\int \ell_j(t(\lambda)) e^{-\lambda}\,\mathrm{d}\lambda` by composite Gauss-Legendre
    in :math:`\lambda` (pieces of length at most ``piece``, ``n_nodes`` nodes each); a step to :math:`\sigma = 0` is
    cut at :math:`\lambda_s + 40`. On sympy inputs the same integral is done exactly (:func:`exact_time_weights`)."""
    if ops.is_symbolic(t_start, t_end, *nodes):
        return exact_time_weights(schedule, t_start, t_end, nodes)
    lam_start, lam_end = float(schedule.lam(t_start)), float(schedule.lam(t_end))
    if math.isinf(lam_end):
        lam_end = lam_start + TAIL
    pieces = max(1, math.ceil(abs(lam_end - lam_start) / piece))
    edges = np.linspace(lam_start, lam_end, pieces + 1)
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    half = 0.5 * np.diff(edges)
    lam = (0.5 * (edges[1:] + edges[:-1]))[:, None] + half[:, None] * x[None, :]
    weights = (half[:, None] * w[None, :]).ravel()
    lam = lam.ravel()
    tau = schedule.t_of_lambda(torch.as_tensor(lam, dtype=torch.float64)).numpy()
    integrand = -np.exp(-lam) * weights
    return float(schedule.alpha(t_end)) * (lagrange_basis(tau, nodes) * integrand).sum(axis=1)
