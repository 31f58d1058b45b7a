r"""Noise schedules: :math:`x_t = \alpha(t) x_0 + \sigma(t)\varepsilon`.

A schedule is given by :math:`\alpha(t)` and :math:`\sigma(t)` as sympy expressions in the symbol :data:`T`.
Everything else is derived symbolically and compiled for torch:

* forward drift :math:`f(t) = \mathrm{d}\log\alpha/\mathrm{d}t`, and :math:`\dot\alpha, \dot\sigma`,
* diffusion :math:`g^2(t) = \mathrm{d}\sigma^2/\mathrm{d}t - 2 f(t)\sigma^2(t)`,
* log signal-to-noise ratio :math:`\lambda(t) = \log(\alpha/\sigma)` and :math:`\mathrm{d}\lambda/\mathrm{d}t`,
* the inverse :math:`t(\lambda)`: a closed form where the family supplies one (checked on construction),
  otherwise a bracketed bisection refined by Newton steps.

The built-in families are written in forms without cancellation (``expm1``/``log1p`` from
``sympy.codegen.cfunctions``, product forms of :math:`1-\alpha^2`), so every derived quantity keeps full relative
precision at small t.

References: Song et al. 2021 (Score-SDE, arXiv 2011.13456) for the VP/VE SDEs; Kingma et al. 2021 (Variational
Diffusion Models) for the :math:`f, g^2` in terms of :math:`\alpha, \sigma`; Lu et al. 2022 (DPM-Solver, arXiv
2206.00927, App. D) for :math:`t(\lambda)` of the VP families.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import sympy as sp
import torch
from sympy.codegen.cfunctions import expm1, log1p

from ._checks import as_tensor

T = sp.Symbol("t", positive=True)
"""The time symbol every schedule is written in."""

LAMBDA = sp.Symbol("lambda_", real=True)
"""The log-SNR symbol of a closed-form inverse ``t(lambda_)``."""

def _accepting_numbers(fn):
    """A torch function that also accepts the Python numbers lambdify leaves in constant sub-expressions."""
    def call(*args):
        like = next((a for a in args if isinstance(a, torch.Tensor)), None)
        return fn(*(a if isinstance(a, torch.Tensor) else torch.as_tensor(
            a, dtype=torch.float64 if like is None else like.dtype, device=None if like is None else like.device)
            for a in args))
    return call


_TORCH_FUNCTIONS = {
    name: _accepting_numbers(getattr(torch, name))
    for name in ("exp", "log", "sqrt", "expm1", "log1p", "sin", "cos", "tan", "atan", "atan2", "acos", "asin")
}
_TORCH_FUNCTIONS.update(pi=math.pi, E=math.e)


def compile_expression(expr: sp.Expr, symbol: sp.Symbol) -> Callable[[torch.Tensor], torch.Tensor]:
    """Compile a sympy expression in ``symbol`` to a torch function.

    The result has the dtype, device and shape of its argument, also when the expression is constant.
    """
    fn = sp.lambdify(symbol, expr, modules=[_TORCH_FUNCTIONS])

    def evaluate(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)
        if isinstance(out, torch.Tensor) and out.shape == x.shape:
            return out
        return torch.as_tensor(out, dtype=x.dtype, device=x.device).expand_as(x).clone()

    return evaluate


class ScheduleValues(NamedTuple):
    """Every coefficient of a schedule at one time, as Python floats."""

    alpha: float
    sigma: float
    lam: float
    f: float
    g2: float
    dalpha_dt: float
    dsigma_dt: float
    dlambda_dt: float


class NoiseSchedule:
    r"""A noise schedule defined by sympy expressions :math:`\alpha(t), \sigma(t)` on ``t_range``.

    Parameters
    ----------
    name:
        Family name, e.g. ``"vp-linear"``.
    alpha, sigma:
        sympy expressions in :data:`T`.
    t_range:
        Closed interval ``(t_lo, t_hi)`` on which the formulas are valid and :math:`\lambda` is strictly
        decreasing. Times outside it are rejected.
    t_of_lambda:
        Optional closed-form inverse, a sympy expression in :data:`LAMBDA`. It is checked against
        :math:`\lambda(t)` on construction.
    params:
        The family parameters, kept for display.
    """

    def __init__(self, name: str, alpha: sp.Expr, sigma: sp.Expr, t_range: tuple[float, float], *,
                 t_of_lambda: sp.Expr | None = None, params: dict | None = None):
        t_lo, t_hi = (float(v) for v in t_range)
        if not (math.isfinite(t_lo) and math.isfinite(t_hi) and t_lo < t_hi):
            raise ValueError(f"t_range: expected finite t_lo < t_hi, got {t_range}")
        self.name = name
        self.params = dict(params or {})
        self.t_lo, self.t_hi = t_lo, t_hi
        self.alpha_expr = sp.sympify(alpha)
        self.sigma_expr = sp.sympify(sigma)
        self.f_expr = sp.diff(sp.log(self.alpha_expr), T)
        self.g2_expr = sp.diff(self.sigma_expr**2, T) - 2 * self.f_expr * self.sigma_expr**2
        self.dalpha_dt_expr = sp.diff(self.alpha_expr, T)
        self.dsigma_dt_expr = sp.diff(self.sigma_expr, T)
        self.lambda_expr = sp.log(self.alpha_expr) - sp.log(self.sigma_expr)
        self.dlambda_dt_expr = sp.diff(self.lambda_expr, T)
        self.t_of_lambda_expr = None if t_of_lambda is None else sp.sympify(t_of_lambda)

        self._alpha = compile_expression(self.alpha_expr, T)
        self._sigma = compile_expression(self.sigma_expr, T)
        self._f = compile_expression(self.f_expr, T)
        self._g2 = compile_expression(self.g2_expr, T)
        self._dalpha_dt = compile_expression(self.dalpha_dt_expr, T)
        self._dsigma_dt = compile_expression(self.dsigma_dt_expr, T)
        self._lambda = compile_expression(self.lambda_expr, T)
        self._dlambda_dt = compile_expression(self.dlambda_dt_expr, T)
        self._closed_inverse = (None if self.t_of_lambda_expr is None
                                else compile_expression(self.t_of_lambda_expr, LAMBDA))
        self._check_definition()
        self._values: dict[float, ScheduleValues] = {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"NoiseSchedule({self.name!r}{', ' if params else ''}{params}, t in [{self.t_lo}, {self.t_hi}])"

    def _check_definition(self) -> None:
        probe = torch.linspace(self.t_lo, self.t_hi, 257, dtype=torch.float64)[1:-1]
        alpha, sigma = self._alpha(probe), self._sigma(probe)
        if not bool(torch.isfinite(alpha).all() and torch.isfinite(sigma).all()):
            raise ValueError(f"schedule {self.name!r}: alpha or sigma is not finite inside t_range")
        if bool((alpha <= 0).any() or (sigma <= 0).any()):
            raise ValueError(f"schedule {self.name!r}: alpha and sigma must be positive inside t_range")
        if not bool((self._dlambda_dt(probe) < 0).all()):
            raise ValueError(f"schedule {self.name!r}: lambda = log(alpha/sigma) must decrease strictly in t")
        if self._closed_inverse is not None:
            lam = self._lambda(probe)
            error = (self._closed_inverse(lam) - probe).abs().max().item()
            if not error <= 1e-9 * max(1.0, abs(self.t_hi)):
                raise ValueError(f"t_of_lambda: does not invert lambda(t) (max error {error:.3g})")

    # -- times -------------------------------------------------------------------------------------------------
    def check_time(self, t, name: str = "t") -> torch.Tensor:
        """Return ``t`` as a tensor (float64 unless it is a floating tensor), or raise if outside ``t_range``."""
        t = as_tensor(t, name, dtype=t.dtype if isinstance(t, torch.Tensor) and t.is_floating_point()
                      else torch.float64)
        if bool(torch.isnan(t).any()):
            raise ValueError(f"{name}: contains NaN")
        if t.numel() == 0:
            return t
        lo, hi = t.min().item(), t.max().item()
        if lo < self.t_lo or hi > self.t_hi:
            raise ValueError(f"{name}: times must lie in the schedule's range [{self.t_lo}, {self.t_hi}] "
                             f"of {self.name!r}, got values in [{lo}, {hi}]")
        return t

    def at(self, t) -> ScheduleValues:
        """All coefficients at one time as floats, memoised (the scalar path of the sampling loop and the model)."""
        key = float(t)
        values = self._values.get(key)
        if values is None:
            tt = self.check_time(torch.tensor(key, dtype=torch.float64))
            values = ScheduleValues(*(float(fn(tt)) for fn in (
                self._alpha, self._sigma, self._lambda, self._f, self._g2, self._dalpha_dt, self._dsigma_dt,
                self._dlambda_dt)))
            if len(self._values) >= 65536:
                self._values.clear()
            self._values[key] = values
        return values

    # -- coefficients --------------------------------------------------------------------------------------------
    def alpha(self, t) -> torch.Tensor:
        r""":math:`\alpha(t)`."""
        return self._alpha(self.check_time(t))

    def sigma(self, t) -> torch.Tensor:
        r""":math:`\sigma(t)`."""
        return self._sigma(self.check_time(t))

    def f(self, t) -> torch.Tensor:
        r"""Forward drift coefficient :math:`f(t) = \mathrm{d}\log\alpha/\mathrm{d}t`."""
        return self._f(self.check_time(t))

    def g2(self, t) -> torch.Tensor:
        r"""Squared diffusion :math:`g^2(t) = \mathrm{d}\sigma^2/\mathrm{d}t - 2f\sigma^2`."""
        return self._g2(self.check_time(t))

    def dalpha_dt(self, t) -> torch.Tensor:
        r""":math:`\mathrm{d}\alpha/\mathrm{d}t`."""
        return self._dalpha_dt(self.check_time(t))

    def dsigma_dt(self, t) -> torch.Tensor:
        r""":math:`\mathrm{d}\sigma/\mathrm{d}t`."""
        return self._dsigma_dt(self.check_time(t))

    def lam(self, t) -> torch.Tensor:
        r"""Log-SNR :math:`\lambda(t) = \log\alpha(t) - \log\sigma(t)`."""
        return self._lambda(self.check_time(t))

    def dlambda_dt(self, t) -> torch.Tensor:
        r""":math:`\mathrm{d}\lambda/\mathrm{d}t` (negative)."""
        return self._dlambda_dt(self.check_time(t))

    def sigma_over_alpha(self, t) -> torch.Tensor:
        r"""The variance-exploding noise level :math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda}` (EDM's sigma)."""
        t = self.check_time(t)
        return self._sigma(t) / self._alpha(t)

    def lambda_range(self) -> tuple[float, float]:
        r"""``(lambda(t_hi), lambda(t_lo))``, the values of :math:`\lambda` the schedule covers."""
        ends = self._lambda(torch.tensor([self.t_hi, self.t_lo], dtype=torch.float64))
        return ends[0].item(), ends[1].item()

    def t_of_lambda(self, lam) -> torch.Tensor:
        r"""The inverse :math:`t(\lambda)`; closed form where the family has one, numerical otherwise."""
        lam = as_tensor(lam, "lam", dtype=lam.dtype if isinstance(lam, torch.Tensor) and lam.is_floating_point()
                        else torch.float64)
        if bool(torch.isnan(lam).any()):
            raise ValueError("lam: contains NaN")
        if lam.numel() == 0:
            return lam.clone()
        lam_lo, lam_hi = self.lambda_range()
        relative = max(1e-12, 8 * torch.finfo(lam.dtype).eps)
        slack = relative * max([1.0] + [abs(v) for v in (lam_lo, lam_hi) if math.isfinite(v)])
        if lam.min().item() < lam_lo - slack or lam.max().item() > lam_hi + slack:
            raise ValueError(f"lam: log-SNR must lie in [{lam_lo}, {lam_hi}] for schedule {self.name!r}, "
                             f"got values in [{lam.min().item()}, {lam.max().item()}]")
        if self._closed_inverse is not None:
            return self._closed_inverse(lam).clamp(self.t_lo, self.t_hi)
        return self._numerical_inverse(lam)

    def _numerical_inverse(self, lam: torch.Tensor) -> torch.Tensor:
        """Bisection on the bracket t_range (lambda decreases), then two Newton steps in float64."""
        target = lam.to(torch.float64)
        lo = torch.full_like(target, self.t_lo)
        hi = torch.full_like(target, self.t_hi)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self._lambda(mid) > target
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        t = 0.5 * (lo + hi)
        for _ in range(2):
            step = (self._lambda(t) - target) / self._dlambda_dt(t)
            t = torch.where(torch.isfinite(step), t - step, t).clamp(self.t_lo, self.t_hi)
        return t.to(lam.dtype)


# -- families ------------------------------------------------------------------------------------------------------
def _softplus_half(lam: sp.Expr) -> sp.Expr:
    r""":math:`-\log\alpha = \tfrac12\log(1 + e^{-2\lambda})` for a variance-preserving schedule."""
    return log1p(sp.exp(-2 * lam)) / 2


def vp_linear(beta_min: float = 0.1, beta_max: float = 20.0, t_max: float = 1.0) -> NoiseSchedule:
    r"""VP SDE with linear :math:`\beta(t)` (Score-SDE; DDPM in continuous time).

    :math:`\log\alpha = -\tfrac14 (\beta_{max}-\beta_{min}) t^2 - \tfrac12\beta_{min} t`,
    :math:`\sigma = \sqrt{1-\alpha^2}`. Inverse (DPM-Solver App. D, written without cancellation):
    :math:`t = 2c / (\beta_{min}/2 + \sqrt{\beta_{min}^2/4 + (\beta_{max}-\beta_{min}) c})`,
    :math:`c = -\log\alpha(\lambda)`.
    """
    b0, b1 = sp.nsimplify(beta_min), sp.nsimplify(beta_max)
    log_alpha = -(b1 - b0) * T**2 / 4 - b0 * T / 2
    c = _softplus_half(LAMBDA)
    inverse = 2 * c / (b0 / 2 + sp.sqrt(b0**2 / 4 + (b1 - b0) * c))
    return NoiseSchedule("vp-linear", sp.exp(log_alpha), sp.sqrt(-expm1(2 * log_alpha)), (0.0, t_max),
                         t_of_lambda=inverse, params=dict(beta_min=beta_min, beta_max=beta_max))


def vp_cosine(s: float = 0.008, t_max: float = 0.9946) -> NoiseSchedule:
    r"""VP cosine schedule (Nichol & Dhariwal 2021): :math:`\alpha = \cos\theta/\cos\theta_0`,
    :math:`\theta = \tfrac{\pi}{2}\tfrac{t+s}{1+s}`. ``t_max`` defaults to DPM-Solver's 0.9946 (α vanishes at t = 1).

    Written without cancellation: :math:`\cos\theta = \sin(\tfrac{\pi}{2}\tfrac{1-t}{1+s})` near t = 1, and
    :math:`\sigma^2 = 1-\alpha^2 = \sin(\theta-\theta_0)\sin(\theta+\theta_0)/\cos^2\theta_0` near t = 0. Inverse: with
    :math:`\alpha^2 = 1/(1+e^{-2\lambda})`, :math:`\sigma^2 = 1/(1+e^{2\lambda})`,
    :math:`\sin\theta = \sqrt{\sin^2\theta_0 + \sigma^2\cos^2\theta_0}`,
    :math:`\theta - \theta_0 = \operatorname{atan2}(\cos\theta_0\,\sigma^2,\ (\sin\theta + \alpha\sin\theta_0)
    (\alpha\cos^2\theta_0 + \sin\theta_0\sin\theta))`, the tangent-difference formula with the cancelling
    numerator :math:`\sin^2\theta - \alpha^2\sin^2\theta_0 = \sigma^2` taken in closed form.
    """
    s_ = sp.nsimplify(s)
    theta0 = sp.pi * s_ / (2 * (1 + s_))
    alpha = sp.sin(sp.pi * (1 - T) / (2 * (1 + s_))) / sp.cos(theta0)
    sigma = sp.sqrt(sp.sin(sp.pi * T / (2 * (1 + s_))) * sp.sin(sp.pi * (T + 2 * s_) / (2 * (1 + s_)))) / sp.cos(theta0)
    alpha_l = 1 / sp.sqrt(1 + sp.exp(-2 * LAMBDA))
    sigma2_l = 1 / (1 + sp.exp(2 * LAMBDA))
    c0, s0 = sp.cos(theta0), sp.sin(theta0)
    sin_theta = sp.sqrt(s0**2 + sigma2_l * c0**2)
    angle = sp.atan2(c0 * sigma2_l, (sin_theta + alpha_l * s0) * (alpha_l * c0**2 + s0 * sin_theta))
    return NoiseSchedule("vp-cosine", alpha, sigma, (0.0, t_max), t_of_lambda=angle * 2 * (1 + s_) / sp.pi,
                         params=dict(s=s))


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0) -> NoiseSchedule:
    r"""VE SDE (Score-SDE/NCSN++): :math:`\alpha = 1`, :math:`\sigma = \sigma_{min}(\sigma_{max}/\sigma_{min})^t`
    on [0, 1]. Inverse: :math:`t = (-\lambda - \log\sigma_{min})/\log(\sigma_{max}/\sigma_{min})`."""
    lo, hi = sp.nsimplify(sigma_min), sp.nsimplify(sigma_max)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min, sigma_max: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    sigma = lo * sp.exp(T * sp.log(hi / lo))
    inverse = (-LAMBDA - sp.log(lo)) / sp.log(hi / lo)
    return NoiseSchedule("ve", sp.Integer(1), sigma, (0.0, 1.0), t_of_lambda=inverse,
                         params=dict(sigma_min=sigma_min, sigma_max=sigma_max))


def edm(sigma_max: float = 80.0) -> NoiseSchedule:
    r"""EDM (Karras et al. 2022): :math:`\alpha = 1`, :math:`\sigma = t` on [0, sigma_max]; :math:`t = e^{-\lambda}`."""
    return NoiseSchedule("edm", sp.Integer(1), T, (0.0, sigma_max), t_of_lambda=sp.exp(-LAMBDA),
                         params=dict(sigma_max=sigma_max))


def flow() -> NoiseSchedule:
    r"""Rectified flow / linear interpolant: :math:`\alpha = 1-t`, :math:`\sigma = t` on [0, 1];
    :math:`t = 1/(1+e^{\lambda})`."""
    return NoiseSchedule("flow", 1 - T, T, (0.0, 1.0), t_of_lambda=1 / (1 + sp.exp(LAMBDA)))


_FAMILIES: dict[str, Callable[..., NoiseSchedule]] = {
    "vp-linear": vp_linear, "vp-cosine": vp_cosine, "ve": ve, "edm": edm, "flow": flow,
}


def list_schedules() -> list[str]:
    """Names of the built-in schedule families."""
    return sorted(_FAMILIES)


def get_schedule(name: str, **params) -> NoiseSchedule:
    """Build a schedule family by name, e.g. ``get_schedule("ve", sigma_max=80)``."""
    try:
        family = _FAMILIES[name]
    except KeyError:
        raise ValueError(f"name: unknown schedule {name!r}; known: {', '.join(list_schedules())}") from None
    return family(**params)
