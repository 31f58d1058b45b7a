r"""SA-Solver (Xue et al. 2023, arXiv 2309.05019): stochastic Adams predictor-corrector, data prediction.

Faithful to ``scxue/SA-Solver`` ``sa_solver.py`` (``SASolver.sample_few_steps``, the recommended mode, with
``adams_bashforth_update_few_steps`` / ``adams_moulton_update_few_steps``, ``predict_x0=True``).

**SDE.** :math:`\mathrm{d}x = [f x - \tfrac{1+\tau^2}{2}g^2\nabla\log p]\,\mathrm{d}t + \tau g\,\mathrm{d}\bar W`,
the eta-SDE of :mod:`.sde_dpm_solver_pp` with :math:`\eta = \tau^2`. :math:`\tau` is held at its value at the end
of the step, :math:`\tau(t_{next})`, as officially (diffusers evaluates it at the start); the official
:math:`\tau(t) = \eta\,\mathbb 1[0.2 \le t \le 0.8]` (times of the schedule; diffusers uses 200..800 of 1000).

**Step** from s to t, :math:`h = \lambda_t - \lambda_s`, :math:`\kappa = 1 + \tau^2`, outputs :math:`m_j` at
:math:`\lambda_j`:

.. math:: x_t = e^{-\tau^2 h}\frac{\sigma_t}{\sigma_s}x_s + \alpha_t\sum_j b_j m_j + \sigma_t e^{-\tau^2\lambda_t}
          \int K_{\tau^2}\,\mathrm{d}\bar W,
   \qquad b_j = \kappa\int_{\lambda_s}^{\lambda_t} e^{-\kappa(\lambda_t-\lambda)}\ell_j(\lambda)\,\mathrm{d}\lambda,

:math:`\ell_j` the Lagrange basis in :math:`\lambda` on the nodes (official: ``(1+tau^2) sigma_t exp(-tau^2
lambda_t) * get_coefficients_fn(...)``, which is the same, written in absolute :math:`\lambda`). The predictor
(stochastic Adams-Bashforth, order p) uses the current and p - 1 past outputs; the corrector (Adams-Moulton, order
c) uses the output at the predicted point and c - 1 others, **with the same noise**. ``rescale`` adds the
official few-step O(h^3) modification of the order-2 weights. PEC re-uses the evaluation at the predicted point
as the next step's current output (one NFE per step); PECE evaluates at the corrected point too.

Orders as in ``sample_few_steps``: warm-up step k (1-based) uses p_k = min(p, k), c_k = min(c, k + 1); afterwards,
with ``lower_order_final``, p_k = min(p, N - k + 1), c_k = min(c, N - k + 2). The final step is a predictor step
with :math:`\tau = 0` and no corrector. A final step to :math:`\sigma = 0` is the official
``denoise_to_zero_fn``, :math:`x = \alpha_t\hat x_0` (no extra evaluation).

:math:`b_j` are computed in float64 by 64-point Gauss-Legendre quadrature of the exact integrand (a polynomial of
degree <= 3 times an exponential: exact to round-off for :math:`\kappa h \lesssim 40`), which avoids the
cancellation of the official closed form in absolute :math:`\lambda`.
"""

from __future__ import annotations

import math

import numpy as np

from ..symbolic.lagrange import lagrange_basis
from .base import Claim, Param, Solver, real
from .sde_dpm_solver_pp import eta_noise

CITATION = ("Xue, Yi, Luo, Zhang, Sun, Li & Ma 2023, SA-Solver: Stochastic Adams Solver for Fast Sampling of "
            "Diffusion Models (NeurIPS 2023, arXiv 2309.05019); scxue/SA-Solver sa_solver.py; diffusers "
            "SASolverScheduler")
SOURCE = "Xue et al. 2023 (SA-Solver, arXiv 2309.05019), Sec. 5 (convergence of SA-Predictor / SA-Corrector)"
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(64)


def adams_weights(nodes, h: float, kappa: float) -> list[float]:
    r""":math:`b_j = \kappa\int_{-h}^{0} e^{\kappa u}\ell_j(u)\,\mathrm{d}u` for nodes u_j = lambda_j - lambda_t.

    ``nodes``: the interpolation nodes relative to :math:`\lambda_t` (the step's end), any order. The weights
    multiply :math:`\alpha_t m_j`; they sum to :math:`1 - e^{-\kappa h}`.
    """
    u = -0.5 * h * (1.0 - _NODES)               # Gauss-Legendre nodes mapped to [-h, 0]
    weight = 0.5 * h * _WEIGHTS * kappa * np.exp(kappa * u)
    return [float(v) for v in (lagrange_basis(u, nodes) * weight).sum(axis=1)]


def rescale_terms(h: float, kappa: float, h_prev: float) -> tuple[float, float]:
    """The official few-step O(h^3) additions to the order-2 weights (per alpha_t): (predictor, corrector).

    Predictor: ``+a`` on the current output and ``-a`` on the previous one, a = kappa (h^2/2 - (kappa h - 1 +
    e^{-kappa h})/kappa^2)/h_prev; corrector: ``+c`` on the new output, ``-c`` on the current one, with
    c = kappa (h/2 - (kappa h - 1 + e^{-kappa h})/(kappa^2 h)).
    """
    q = kappa * h + math.expm1(-kappa * h)
    return kappa * (0.5 * h * h - q / kappa**2) / h_prev, kappa * (0.5 * h - q / (kappa**2 * h))


class SASolver(Solver):
    """SA-Solver: SA-Predictor (order p) and SA-Corrector (order c), PEC or PECE, data prediction."""

    name = "sa-solver"
    family = "sa-solver"
    parameterisation = "x0"
    stochastic = True
    history = 3
    citation = CITATION
    params = {
        "predictor_order": Param(3, "SA-Predictor order p (official sample() default 3)", choices=(1, 2, 3, 4)),
        "corrector_order": Param(4, "SA-Corrector order c, 0 = no corrector (official default 4)",
                                 choices=(0, 1, 2, 3, 4)),
        "pc_mode": Param("PEC", "PEC (one NFE per step) or PECE (two)", choices=("PEC", "PECE")),
        "tau": Param(1.0, "tau inside the window (the official eta of tau_t)", check=real(0.0)),
        "tau_t_min": Param(0.2, "tau(t) = tau for tau_t_min <= t <= tau_t_max, else 0 (official: 0.2 .. 0.8)",
                           check=real(finite=False)),
        "tau_t_max": Param(0.8, "upper end of the tau window", check=real(finite=False)),
        "rescale": Param(True, "the few-step rescaling of the order-2 weights (official sample_few_steps)",
                         choices=(True, False)),
        "lower_order_final": Param(True, "official lower_order_final", choices=(True, False)),
    }
    variants = {"sa-solver-pece": dict(pc_mode="PECE"), "sa-solver-ode": dict(tau=0.0),
                "sa-solver-sde": dict(tau_t_min=-math.inf, tau_t_max=math.inf),
                "sa-solver-p2c2": dict(predictor_order=2, corrector_order=2)}

    def __init__(self, **params):
        super().__init__(**params)
        if self.tau == 0 or self.tau_t_min > self.tau_t_max:
            self.stochastic = False          # tau = 0 everywhere: the deterministic exponential Adams PC method

    def claimed(self) -> Claim:
        p, c = self.predictor_order, self.corrector_order
        if not self.stochastic:
            order = p if c == 0 else min(c, p + 1)
            return Claim(order, "global", SOURCE + ": with tau = 0 a deterministic exponential Adams PC method")
        return Claim(1, "strong", SOURCE + ": order 1 recorded, the theorem's stated order was NOT verified "
                     "from the paper text")

    def tau_at(self, t: float) -> float:
        """The official piecewise-constant tau(t)."""
        return self.tau if self.tau_t_min <= t <= self.tau_t_max else 0.0

    def orders(self, i: int, n: int) -> tuple[int, int]:
        """(predictor, corrector) order of step i (0-based) of n, as in ``sample_few_steps``."""
        p, c = self.predictor_order, self.corrector_order
        k = i + 1
        warm = max(p, c - 1)
        if k < warm or n < warm:
            p_k, c_k = min(p, k), min(c, k + 1)
            if n < warm and self.lower_order_final:        # the official code refuses n < warm; stay sensible
                p_k, c_k = min(p_k, n - k + 1), min(c_k, n - k + 2)
        elif self.lower_order_final:
            p_k, c_k = min(p, n - k + 1), min(c, n - k + 2)
        else:
            p_k, c_k = p, c
        return p_k, c_k

    def step_order(self, i: int, n: int) -> int:
        return self.orders(i, n)[0]

    def expected_nfe(self, times) -> int:
        """PEC: one per step; PECE: two per step but the last (no corrector on the last step)."""
        steps = len(times) - 1
        if self.pc_mode == "PECE" and self.corrector_order > 0:
            return 2 * steps - 1
        return steps

    def step(self, state):
        t, t_next = state.t, state.t_next
        m0 = state.current()
        alpha_next, sigma_next = state.alpha(t_next), state.sigma(t_next)
        if sigma_next == 0.0:
            return alpha_next * m0
        lam, lam_next = state.lam(t), state.lam(t_next)
        h = lam_next - lam
        p_k, c_k = self.orders(state.i, state.n_steps)
        last = state.is_last
        tau = 0.0 if last else self.tau_at(t_next)
        kappa = 1.0 + tau * tau
        past = [state.history[j] for j in range(max(p_k - 1, c_k - 2, 0))]
        linear = (sigma_next / state.sigma(t) * math.exp(-tau * tau * h)) * state.x
        noise = 0.0
        if tau > 0:
            noise = sigma_next * eta_noise(state, tau * tau, t, t_next)
        # predictor: current and p_k - 1 past outputs
        outputs = [m0, *(e.output for e in past[:p_k - 1])]
        b = adams_weights([lam - lam_next, *(e.lam - lam_next for e in past[:p_k - 1])], h, kappa)
        if self.rescale and p_k == 2:
            a, _ = rescale_terms(h, kappa, lam - past[0].lam)
            b[0], b[1] = b[0] + a, b[1] - a
        x_pred = linear + noise
        for weight, m in zip(b, outputs, strict=True):
            x_pred = x_pred + (alpha_next * weight) * m
        if last or self.corrector_order == 0:
            return x_pred
        m_new = state.evaluate(x_pred, t_next)
        # corrector: the new output, the current one and c_k - 2 past outputs
        outputs = [m_new, m0, *(e.output for e in past[:c_k - 2])][:c_k]
        b = adams_weights([0.0, lam - lam_next, *(e.lam - lam_next for e in past[:c_k - 2])][:c_k], h, kappa)
        if self.rescale and c_k == 2:
            _, c = rescale_terms(h, kappa, 1.0)
            b[0], b[1] = b[0] + c, b[1] - c
        x_corr = linear + noise
        for weight, m in zip(b, outputs, strict=True):
            x_corr = x_corr + (alpha_next * weight) * m
        if self.pc_mode == "PECE":
            state.offer_next(x_corr, state.evaluate(x_corr, t_next))
        else:
            state.offer_next(x_corr, m_new)
        return x_corr
