r"""Classical explicit Runge-Kutta methods on the probability-flow ODE, in a chosen integration variable.

A method is a Butcher tableau kept as exact data (sympy Rationals) and validated on import: strictly lower
triangular A, :math:`c_i = \sum_j a_{ij}`, and the order conditions up to the stated order (Butcher 2016,
*Numerical Methods for ODEs*, Sec. 31; Hairer, Norsett & Wanner, *Solving ODEs I*, Sec. II.2). Each tableau runs in
t, sigma or lambda (:mod:`.variables`), registered as ``<tableau>-<variable>``, e.g. ``rk4-lambda``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .base import Claim, Param, Solver
from .variables import VARIABLES, IntegrationVariable

R = sp.Rational


@dataclass(frozen=True)
class ButcherTableau:
    """Explicit tableau (A, b, c) with the classical order it attains."""

    A: tuple
    b: tuple
    c: tuple
    order: int

    def __post_init__(self):
        s = len(self.b)
        if len(self.c) != s or len(self.A) != s or any(len(row) != s for row in self.A):
            raise ValueError("tableau: A must be s x s, b and c of length s")
        if any(self.A[i][j] != 0 for i in range(s) for j in range(i, s)):
            raise ValueError("tableau: A must be strictly lower triangular (explicit method)")
        if any(sum(self.A[i]) != self.c[i] for i in range(s)):
            raise ValueError("tableau: c_i must equal the row sums of A")
        failed = [name for name, lhs, rhs in self.order_conditions() if sp.nsimplify(lhs - rhs) != 0]
        if failed:
            raise ValueError(f"tableau: order conditions fail: {failed}")

    def order_conditions(self):
        """(name, sum, required value) for every rooted tree up to ``order`` (at most 4)."""
        A, b, c, s = sp.Matrix(self.A), sp.Matrix(self.b), sp.Matrix(self.c), len(self.b)
        def power(k):
            return sp.Matrix([ci**k for ci in c])
        conditions = [("sum b = 1", sum(b), 1)]
        if self.order >= 2:
            conditions.append(("b.c = 1/2", (b.T * c)[0], R(1, 2)))
        if self.order >= 3:
            conditions += [("b.c^2 = 1/3", (b.T * power(2))[0], R(1, 3)),
                           ("b.Ac = 1/6", (b.T * A * c)[0], R(1, 6))]
        if self.order >= 4:
            conditions += [("b.c^3 = 1/4", (b.T * power(3))[0], R(1, 4)),
                           ("b.(c*Ac) = 1/8", sum(b[i] * c[i] * (A * c)[i] for i in range(s)), R(1, 8)),
                           ("b.Ac^2 = 1/12", (b.T * A * power(2))[0], R(1, 12)),
                           ("b.AAc = 1/24", (b.T * A * A * c)[0], R(1, 24))]
        return conditions


TABLEAUS = {
    "euler": ButcherTableau(((0,),), (1,), (0,), 1),
    "heun": ButcherTableau(((0, 0), (1, 0)), (R(1, 2), R(1, 2)), (0, 1), 2),
    "midpoint": ButcherTableau(((0, 0), (R(1, 2), 0)), (0, 1), (0, R(1, 2)), 2),
    "ralston": ButcherTableau(((0, 0), (R(2, 3), 0)), (R(1, 4), R(3, 4)), (0, R(2, 3)), 2),
    "rk3": ButcherTableau(((0, 0, 0), (R(1, 2), 0, 0), (-1, 2, 0)), (R(1, 6), R(2, 3), R(1, 6)), (0, R(1, 2), 1), 3),
    "rk4": ButcherTableau(((0, 0, 0, 0), (R(1, 2), 0, 0, 0), (0, R(1, 2), 0, 0), (0, 0, 1, 0)),
                          (R(1, 6), R(1, 3), R(1, 3), R(1, 6)), (0, R(1, 2), R(1, 2), 1), 4),
}


class ExplicitRungeKutta(Solver):
    """s-stage explicit Runge-Kutta on the PF-ODE in t, sigma or lambda; one model evaluation per stage."""

    name = "runge-kutta"
    family = "runge-kutta"
    parameterisation = "eps"
    citation = "Butcher 2016, Numerical Methods for Ordinary Differential Equations, Ch. 3"
    params = {
        "tableau": Param("euler", "Butcher tableau", choices=tuple(TABLEAUS)),
        "variable": Param("t", "integration variable", choices=VARIABLES),
    }
    variants = {f"{tableau}-{variable}": dict(tableau=tableau, variable=variable)
                for tableau in TABLEAUS for variable in VARIABLES}

    def __init__(self, **params):
        super().__init__(**params)
        tableau = TABLEAUS[self.tableau]
        if self.variable == "lambda":
            self.reaches_sigma_zero = "lambda is infinite there"
        self._A = [[float(a) for a in row] for row in tableau.A]
        self._b = [float(v) for v in tableau.b]
        self._c = [float(v) for v in tableau.c]

    @property
    def nfe_per_step(self) -> int:
        return len(self._b)

    @property
    def order(self) -> int:
        return TABLEAUS[self.tableau].order

    def claimed(self) -> Claim:
        return Claim(self.order, "global", "classical order of the tableau (Butcher 2016, Sec. 31)")

    def step(self, state):
        variable = IntegrationVariable.of(self.variable, state.schedule)
        u0, u1 = variable.u(state.t), variable.u(state.t_next)
        h = u1 - u0
        X0 = variable.state(state.x, state.t)
        slopes = []
        for i, c_i in enumerate(self._c):
            if i == 0:
                t_i, x_i, eps = state.t, state.x, state.current()
            else:
                t_i = variable.t(u0 + c_i * h)
                X_i = X0 + h * sum(a * k for a, k in zip(self._A[i][:i], slopes, strict=True) if a != 0)
                x_i = variable.x(X_i, t_i)
                eps = state.evaluate(x_i, t_i)
            slopes.append(variable.velocity(x_i, t_i, eps))
        X1 = X0 + h * sum(b * k for b, k in zip(self._b, slopes, strict=True) if b != 0)
        return variable.x(X1, state.t_next)
