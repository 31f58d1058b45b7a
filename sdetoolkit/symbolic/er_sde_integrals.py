r"""ER-SDE (Cui et al., arXiv 2309.06169): noise scale functions :math:`\varphi`, their step integrals, and the noise
kernel, derived in sympy.

In the VE variables (:math:`\tilde x = x/\alpha`, :math:`s = \sigma/\alpha`, the EDM sigma) the exact ER-SDE step
from :math:`s` to :math:`t` with data prediction :math:`x_\theta` is (paper, exact solution of the VE ER SDE)

.. math:: \tilde x_t = r\,\tilde x_s + \varphi(s_t)\int_{s_t}^{s_s}\frac{\varphi'(u)}{\varphi(u)^2}x_\theta(u)\,du
          + \sqrt{s_t^2 - s_s^2 r^2}\,z, \qquad r = \varphi(s_t)/\varphi(s_s).

Expanding :math:`x_\theta(u) = \sum_k (u - s_s)^k x_\theta^{(k)}/k!` and integrating by parts gives the
coefficients of ER-SDE-Solver-1/2/3 (:func:`taylor_coefficients`):

* :math:`k = 0`: :math:`1 - r`;
* :math:`k = 1`: :math:`(s_t - s_s) + \varphi(s_t)\,I_1`, :math:`I_1 = \int_{s_t}^{s_s} du/\varphi(u)`;
* :math:`k = 2`: :math:`(s_t - s_s)^2/2 + \varphi(s_t)\,I_2`, :math:`I_2 = \int_{s_t}^{s_s}(u - s_s)/\varphi(u)\,du`,

which are the official ``ve_3_order_taylor`` update (``QinpengCui/ER-SDE-Solver/er_sde_solver.py``). The official
code computes :math:`I_1, I_2` with a 100-point left Riemann sum (:func:`official_integrals`); here they are also
exact (:func:`exact_integrals`): closed forms from sympy for the power laws :math:`\varphi = s^p`, scipy's adaptive
quadrature (``quad``, relative tolerance 1e-13) otherwise.

The noise term is an exact stochastic integral of the ER SDE's own Brownian motion. The ER SDE in the VE variables is
:math:`d\tilde x = -\tfrac12(\tilde g^2 + \tilde h^2)\nabla\log p\,dt + \tilde h\,d\bar W`; its linear part has the
transition :math:`\varphi(s_t)/\varphi(s_u)`, so the step's noise is
:math:`\varphi(s_t)\int_t^s K\,dW` with :math:`K = \tilde h/\varphi`. Requiring the official variance,
:math:`\varphi(s_t)^2\int_t^s K^2\,du = s_t^2 - s_s^2 r^2` for every step, fixes

.. math:: K(u)^2 = -\frac{d}{du}\Big(\frac{s(u)}{\varphi(s(u))}\Big)^2
          = \frac{2 s^2\,(s\varphi'(s) - \varphi(s))}{\varphi(s)^3}\,\Big(-\frac{d\lambda}{du}\Big),

(:func:`kernel_squared_expr`; :math:`ds/du = -s\,d\lambda/du` with :math:`\lambda` the log-SNR). It is
non-negative exactly when :math:`s/\varphi(s)` does not increase, the paper's constraint on :math:`\varphi`.
:math:`\varphi = s` gives :math:`K = 0` (the probability-flow ODE); :math:`\varphi = s^2` gives
:math:`K^2 = 2(-\lambda')/s^2`, the data-prediction kernel :math:`g\alpha/\sigma^2` (the reverse SDE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import sympy as sp
import torch
from scipy import integrate

from ..schedules import compile_expression

S = sp.Symbol("s", positive=True)
"""The noise level the noise scale functions are written in (sigma/alpha)."""

ETA = sp.Symbol("eta", real=True)
SIGMA_T, SIGMA_S = sp.symbols("sigma_t sigma_s", positive=True)

OFFICIAL_POINTS = 100
"""Points of the official left Riemann sum (``nums_intergrate = 100.0``)."""


def official_expr(func_type: int, eta=0) -> sp.Expr:
    r"""The official ``customized_func(x, func_type, eta)`` as a sympy expression in :data:`S`.

    1: :math:`s` (ODE); 2: :math:`s^2` (reverse SDE); 3: :math:`s(e^{s^{\eta-1}/(\eta-1)} + 10)`; 4: :math:`s^{3/2}`;
    5: :math:`s^{5/2}`; 6: :math:`s^{0.9}\log_{10}(1 + 100 s^{1.5})`; 7: :math:`s(e^{s^{0.3}} + 10)` (the default).
    """
    eta = sp.nsimplify(eta)
    exprs = {
        1: S,
        2: S**2,
        3: S * (sp.exp(S ** (eta - 1) / (eta - 1)) + 10) if eta != 1 else None,
        4: S ** sp.Rational(3, 2),
        5: S ** sp.Rational(5, 2),
        6: S ** sp.Rational(9, 10) * sp.log(1 + 100 * S ** sp.Rational(3, 2), 10),
        7: S * (sp.exp(S ** sp.Rational(3, 10)) + 10),
    }
    if func_type not in exprs:
        raise ValueError(f"func_type: expected one of 1..7, got {func_type!r}")
    if exprs[func_type] is None:
        raise ValueError("eta: the official type-3 function divides by eta - 1; eta = 1 is not allowed")
    return exprs[func_type]


OFFICIAL_NAMES = {1: "ode", 2: "sde", 3: "sde-1", 4: "sde-2", 5: "sde-3", 6: "sde-4", 7: "sde-5"}
"""The official comments' names for func_type 1..7 (ODE, original SDE, SDE_1 .. SDE_5)."""


def power_of(expr: sp.Expr) -> sp.Rational | None:
    """The exponent p when ``expr`` is :math:`s^p`, else None."""
    expr = sp.sympify(expr)
    if expr == S:
        return sp.Integer(1)
    if expr.is_Pow and expr.base == S and expr.exp.is_Rational:
        return expr.exp
    return None


@cache
def power_law_integrals(p: sp.Rational) -> tuple[sp.Expr, sp.Expr]:
    r""":math:`I_1 = \int_{\sigma_t}^{\sigma_s} u^{-p}du` and
    :math:`I_2 = \int_{\sigma_t}^{\sigma_s}(u - \sigma_s)u^{-p}du`, integrated by sympy."""
    u = sp.Symbol("u", positive=True)
    i1 = sp.integrate(u ** (-p), (u, SIGMA_T, SIGMA_S))
    i2 = sp.integrate((u - SIGMA_S) * u ** (-p), (u, SIGMA_T, SIGMA_S))
    # expand_log keeps log(sigma_s/sigma_t) apart (simplify would write sigma_t**sigma_s, which overflows)
    return tuple(sp.expand_log(sp.expand(sp.piecewise_fold(v)), force=True) for v in (i1, i2))


@cache
def _compiled_power_law(p: sp.Rational):
    i1, i2 = power_law_integrals(p)
    return sp.lambdify((SIGMA_T, SIGMA_S), i1, "math"), sp.lambdify((SIGMA_T, SIGMA_S), i2, "math")


def kernel_squared_expr(phi: sp.Expr) -> sp.Expr:
    r""":math:`K^2 / (-d\lambda/du) = -\frac{d}{ds}(s/\varphi)^2\cdot s` (see the module docstring)."""
    return sp.simplify(-sp.diff((S / phi) ** 2, S) * S)


@dataclass(frozen=True)
class NoiseScale:
    r"""A noise scale function :math:`\varphi(s)` with its derivative, on torch tensors (float64).

    ``name`` identifies the function (it names the noise kernel); ``power`` is p for :math:`\varphi = s^p` (closed
    form integrals), else None; ``expr`` the sympy expression when there is one.
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor]
    power: sp.Rational | None = None
    expr: sp.Expr | None = None

    def __call__(self, s):
        return self.fn(torch.as_tensor(s, dtype=torch.float64))

    def value(self, s: float) -> float:
        return float(self.fn(torch.tensor(float(s), dtype=torch.float64)))

    def kernel_factor(self, s: torch.Tensor) -> torch.Tensor:
        r""":math:`2s^2(s\varphi' - \varphi)/\varphi^3`, so that :math:`K^2 = ` this :math:`\times(-d\lambda/du)`.

        Raises if :math:`s\varphi' < \varphi` anywhere beyond round-off (the paper's constraint on :math:`\varphi`:
        the step variance would be negative).
        """
        phi, dphi = self.fn(s), self.derivative(s)
        slope = s * dphi - phi
        if bool((slope < -1e-12 * phi.abs()).any()):
            bad = float(s[slope < -1e-12 * phi.abs()].flatten()[0])
            raise ValueError(f"noise_scale {self.name!r}: s*phi'(s) < phi(s) at s = {bad:.6g}, so s/phi(s) increases "
                             f"and the ER-SDE noise variance would be negative (the paper's constraint on phi)")
        return 2 * s**2 * slope.clamp_min(0.0) / phi**3


@cache
def official_noise_scale(func_type: int, eta: float = 0.0) -> NoiseScale:
    """The official func_type 1..7 as a :class:`NoiseScale` (derivative by sympy)."""
    expr = official_expr(func_type, eta)
    name = f"official-{func_type}" + (f"(eta={eta!r})" if func_type == 3 else "")
    return NoiseScale(name, compile_expression(expr, S), compile_expression(sp.diff(expr, S), S), power_of(expr),
                      expr)


def user_noise_scale(fn: Callable[[torch.Tensor], torch.Tensor]) -> NoiseScale:
    """A user-supplied torch callable; its derivative comes from autograd, its integrals from quadrature."""

    def derivative(s: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            u = s.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(fn(u).sum(), u)
        return grad.detach()

    label = getattr(fn, "__qualname__", type(fn).__name__)
    return NoiseScale(f"user:{getattr(fn, '__module__', '?')}.{label}@{id(fn):x}", fn, derivative)


def official_integrals(phi: NoiseScale, sigma_t: float, sigma_s: float) -> tuple[float, float]:
    r"""The official 100-point left Riemann sums for :math:`I_1, I_2` in float64: nodes
    :math:`\sigma_t + k(\sigma_s - \sigma_t)/100`, k = 0..99, weight :math:`(\sigma_s - \sigma_t)/100`."""
    nodes = sigma_t + torch.arange(OFFICIAL_POINTS, dtype=torch.float64) / OFFICIAL_POINTS * (sigma_s - sigma_t)
    width = (sigma_s - sigma_t) / OFFICIAL_POINTS
    inverse = 1.0 / phi(nodes)
    return float(torch.sum(inverse * width)), float(torch.sum((nodes - sigma_s) * inverse * width))


def exact_integrals(phi: NoiseScale, sigma_t: float, sigma_s: float) -> tuple[float, float]:
    r""":math:`I_1, I_2` exactly: sympy's closed form for a power law, else adaptive quadrature in
    :math:`\log u` (relative tolerance 1e-13)."""
    if phi.power is not None:
        i1, i2 = _compiled_power_law(phi.power)
        return float(i1(sigma_t, sigma_s)), float(i2(sigma_t, sigma_s))
    if not 0 < sigma_t <= sigma_s:
        raise ValueError(f"sigma_t, sigma_s: need 0 < sigma_t <= sigma_s, got {sigma_t}, {sigma_s}")

    def inv(v: float) -> float:
        u = math.exp(v)
        return u / phi.value(u)

    lo, hi = math.log(sigma_t), math.log(sigma_s)
    opts = dict(epsabs=0.0, epsrel=1e-13, limit=200)
    i1 = integrate.quad(inv, lo, hi, **opts)[0]
    i2 = integrate.quad(lambda v: (math.exp(v) - sigma_s) * inv(v), lo, hi, **opts)[0]
    return i1, i2


def taylor_coefficients(phi: NoiseScale, sigma_t: float, sigma_s: float, integration: str = "official"
                        ) -> tuple[float, float, float]:
    """The coefficients of :math:`x_\\theta, x_\\theta', x_\\theta''/1` in the VE step (module docstring).

    The third is the coefficient of the official ``dd_x0`` (an estimate of the second derivative).
    """
    r = phi.value(sigma_t) / phi.value(sigma_s)
    i1, i2 = (official_integrals if integration == "official" else exact_integrals)(phi, sigma_t, sigma_s)
    phi_t = phi.value(sigma_t)
    return 1.0 - r, (sigma_t - sigma_s) + i1 * phi_t, 0.5 * (sigma_t - sigma_s) ** 2 + i2 * phi_t


def step_variance(phi: NoiseScale, sigma_t: float, sigma_s: float) -> float:
    r"""The official closed-form noise variance :math:`\sigma_t^2 - \sigma_s^2 r^2` (VE variables)."""
    r = phi.value(sigma_t) / phi.value(sigma_s)
    return sigma_t**2 - sigma_s**2 * r**2


def variance_by_quadrature(phi: NoiseScale, sigma_t: float, sigma_s: float) -> float:
    r""":math:`\varphi(\sigma_t)^2\int K^2` with :math:`K^2 = -d(s/\varphi)^2`, integrated in :math:`\log s` by quad
    (checks the kernel against :func:`step_variance`)."""

    def integrand(v: float) -> float:
        s = torch.tensor(math.exp(v), dtype=torch.float64)
        return float(phi.kernel_factor(s))

    value = integrate.quad(integrand, math.log(sigma_t), math.log(sigma_s), epsabs=0.0, epsrel=1e-13, limit=200)[0]
    return phi.value(sigma_t) ** 2 * value


__all__ = [
    "OFFICIAL_NAMES",
    "OFFICIAL_POINTS",
    "NoiseScale",
    "S",
    "exact_integrals",
    "kernel_squared_expr",
    "official_expr",
    "official_integrals",
    "official_noise_scale",
    "power_law_integrals",
    "step_variance",
    "taylor_coefficients",
    "user_noise_scale",
    "variance_by_quadrature",
]
