r"""DEIS (Zhang & Chen 2023, arXiv 2204.13902): tAB-DEIS and rhoRK-DEIS.

Faithful to ``qsh-zh/deis`` (``th_deis/multistep.py``, ``rk.py``, ``sampler.py``). DEIS's "alpha" is our
:math:`\alpha^2`; below every symbol is ours (:math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`,
:math:`\rho = \sigma/\alpha = e^{-\lambda}`).

**tAB-DEIS** (``get_sampler_t_ab``). The exponential integrator of the PF-ODE
:math:`\mathrm{d}x/\mathrm{d}t = f x + (\dot\sigma - f\sigma)\hat\varepsilon` with :math:`\hat\varepsilon`
replaced by its degree-r Lagrange extrapolation in t through :math:`t_i, t_{i-1}, \dots, t_{i-r}`:

.. math::
    x_{i+1} = \frac{\alpha_{i+1}}{\alpha_i} x_i + \sum_{j=0}^{r} C_{ij}\,\hat\varepsilon_{i-j},\qquad
    C_{ij} = \int_{t_i}^{t_{i+1}} \frac{\alpha_{i+1}}{\alpha_\tau}\,(\dot\sigma_\tau - f_\tau\sigma_\tau)\,
    \ell_j(\tau)\,\mathrm{d}\tau = \alpha_{i+1}\int_{t_i}^{t_{i+1}} \ell_j(\tau)\,\mathrm{d}\rho_\tau,

:math:`\ell_j(\tau) = \prod_{k\ne j}(\tau - t_{i-k})/(t_{i-j} - t_{i-k})`. On a VP schedule the weight is the
official ``psi(tau, t_{i+1}) * eps_integrand(tau)`` :math:`= (\alpha_{i+1}/\alpha_\tau)(-f_\tau)/\sigma_\tau`
(``vpsde.py``); the form above is the same function and also holds for VE, EDM and flow schedules.
Quadrature (``quadrature``; the weights live in :mod:`sdetoolkit.symbolic.lagrange`, which also integrates them
exactly on sympy inputs):

* ``"riemann"`` (official default): ``multistep.py::get_integrator_basis_fn``, the left Riemann sum on
  ``linspace(t_i, t_{i+1}, num_item, endpoint=False)`` with ``dt = (t_{i+1} - t_i)/num_item``, ``num_item = 10000``.
  Its error is first order in dt: about :math:`\tfrac12 (t_{i+1}-t_i)/\mathrm{num\_item}` times the change of the
  integrand over the step, i.e. O(h^2/num_item) per step and O(h/num_item) globally;
* ``"gauss"``: composite Gauss-Legendre in :math:`\lambda` (:math:`\mathrm{d}\rho = -e^{-\lambda}\mathrm{d}\lambda`),
  16 nodes on pieces of :math:`\lambda`-length at most 1, accurate to rounding on the built-in schedules (their
  :math:`t(\lambda)` is analytic within :math:`|\mathrm{Im}\,\lambda| < \pi/2`). A step to :math:`\sigma = 0`
  (:math:`\lambda = \infty`) is cut at :math:`\lambda_i + 40`, where the tail is below :math:`e^{-40}` relative.

Warm-up as official (``get_ab_eps_coef``): step i uses degree min(i, r). r = ``ab_order`` is the official
argument: r = 0 is DDIM (one point), r = 1, 2, 3 use 2, 3, 4 points, so the nominal order of tAB-r is r + 1. (The
``diffusers`` ``DEISMultistepScheduler`` counts points instead: its ``solver_order=1`` is DDIM.)

**rhoRK-DEIS** (``get_sampler_rho_rk``): :math:`v = x/\alpha`, :math:`\mathrm{d}v/\mathrm{d}\rho = \hat\varepsilon`,
a classical explicit RK step in :math:`\rho`, stages evaluated at :math:`t(\rho)`. This is exactly
:class:`~.runge_kutta.ExplicitRungeKutta` with ``variable="sigma"`` (:mod:`.variables`), so the variants below only
choose the official tableaus of ``rk.py``: ``1euler``, ``2heun``, ``3kutta`` (official default), ``3ral``, ``3heun``,
``3vdh``, ``3ssprk``, ``4rk``. ``1euler``, ``2heun``, ``3kutta`` and ``4rk`` are the same methods as ``euler-sigma``,
``heun-sigma``, ``rk3-sigma`` and ``rk4-sigma`` (tested equal).

Not implemented: rhoAB-DEIS (``get_sampler_rho_ab``) and the iPNDM variant.
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ..symbolic import ops
from ..symbolic.lagrange import GAUSS_NODES, GAUSS_PIECE, TAIL, lagrange_basis
from ..symbolic.lagrange import gauss_weights as gauss_coefficients
from ..symbolic.lagrange import riemann_weights as riemann_coefficients
from .base import Claim, Param, Solver, integer
from .runge_kutta import TABLEAUS, ButcherTableau, ExplicitRungeKutta

R = sp.Rational

__all__ = ["GAUSS_NODES", "GAUSS_PIECE", "RK_METHODS", "TAIL", "RhoRKDEIS", "TimeABDEIS", "gauss_coefficients",
           "lagrange_basis", "riemann_coefficients"]

SOURCE = "Zhang & Chen 2023 (DEIS, arXiv 2204.13902), Sec. 4; official code qsh-zh/deis th_deis/"
TAB_CLAIM = (SOURCE + "multistep.py: degree-r extrapolation of eps in t inside the exponential integrator, an "
             "exponential Adams-Bashforth method with r + 1 points (order r + 1); r = 0 is DDIM")

RK_METHODS = {
    "1euler": TABLEAUS["euler"],
    "2heun": TABLEAUS["heun"],
    "3kutta": TABLEAUS["rk3"],
    "3ral": ButcherTableau(((0, 0, 0), (R(1, 2), 0, 0), (0, R(3, 4), 0)), (R(2, 9), R(1, 3), R(4, 9)),
                           (0, R(1, 2), R(3, 4)), 3),
    "3heun": ButcherTableau(((0, 0, 0), (R(1, 3), 0, 0), (0, R(2, 3), 0)), (R(1, 4), 0, R(3, 4)),
                            (0, R(1, 3), R(2, 3)), 3),
    "3vdh": ButcherTableau(((0, 0, 0), (R(8, 15), 0, 0), (R(1, 4), R(5, 12), 0)), (R(1, 4), 0, R(3, 4)),
                           (0, R(8, 15), R(2, 3)), 3),
    "3ssprk": ButcherTableau(((0, 0, 0), (1, 0, 0), (R(1, 4), R(1, 4), 0)), (R(1, 6), R(1, 6), R(2, 3)),
                             (0, 1, R(1, 2)), 3),
    "4rk": TABLEAUS["rk4"],
}
"""The tableaus of the official ``rk.py::get_rk_fn``, validated against the order conditions on import."""


class TimeABDEIS(Solver):
    """tAB-DEIS: exponential Adams-Bashforth with eps extrapolated by a degree-r polynomial in t, noise prediction."""

    name = "deis-tab"
    family = "deis"
    parameterisation = "eps"
    history = 3
    citation = SOURCE + "sampler.py::get_sampler_t_ab, multistep.py"
    params = {
        "ab_order": Param(3, "official ab_order r: degree of the extrapolation of eps in t (r + 1 points)",
                          choices=(0, 1, 2, 3)),
        "quadrature": Param("riemann", "coefficient integrals: the official left Riemann sum, or Gauss-Legendre",
                            choices=("riemann", "gauss")),
        "num_item": Param(10000, "points of the official Riemann sum",
                          check=integer(1)),
    }
    variants = {
        **{f"deis-tab{r}": dict(ab_order=r) for r in range(4)},
        **{f"deis-tab{r}-exact": dict(ab_order=r, quadrature="gauss") for r in range(1, 4)},
    }

    @property
    def order(self) -> int:
        return self.ab_order + 1

    def claimed(self) -> Claim:
        return Claim(self.order, "global", TAB_CLAIM)

    def coefficients(self, schedule, t_start: float, t_end: float, nodes) -> np.ndarray:
        """C_{i0}, ..., C_{ik} for the nodes t_i, t_{i-1}, ..., t_{i-k} (most recent first)."""
        if self.quadrature == "riemann":
            return riemann_coefficients(schedule, t_start, t_end, nodes, self.num_item)
        return gauss_coefficients(schedule, t_start, t_end, nodes)

    def step(self, state):
        past = [state.history[j] for j in range(state.order - 1)]
        nodes = [state.t] + [e.t for e in past]
        coef = self.coefficients(state.schedule, state.t, state.t_next, nodes)
        x = (state.alpha(state.t_next) / state.alpha(state.t)) * state.x + ops.real(coef[0]) * state.current()
        for c, e in zip(coef[1:], past, strict=True):
            x = x + ops.real(c) * e.output
        return x


class RhoRKDEIS(ExplicitRungeKutta):
    """rhoRK-DEIS: the official RK tableaus on dv/drho = eps, v = x/alpha (ExplicitRungeKutta in sigma/alpha)."""

    name = "deis-rhork"
    family = "deis"
    citation = SOURCE + "sampler.py::get_sampler_rho_rk, rk.py"
    variable = "sigma"
    params = {"rk_method": Param("3kutta", "official rk_method of rk.py", choices=tuple(RK_METHODS))}
    variants = {f"deis-rhork-{method}": dict(rk_method=method) for method in RK_METHODS}

    def __init__(self, **params):
        Solver.__init__(self, **params)
        tableau = RK_METHODS[self.rk_method]
        self._A = [[float(a) for a in row] for row in tableau.A]
        self._b = [float(v) for v in tableau.b]
        self._c = [float(v) for v in tableau.c]

    @property
    def order(self) -> int:
        return RK_METHODS[self.rk_method].order

    def claimed(self) -> Claim:
        return Claim(self.order, "global", "classical order of the official tableau (rk.py; Butcher 2016, Sec. 31) "
                     "applied to dv/drho = eps, " + SOURCE + "sampler.py")
