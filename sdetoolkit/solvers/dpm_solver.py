r"""DPM-Solver-1/2/3, singlestep, noise prediction (Lu et al. 2022, arXiv 2206.00927, Alg. 1-2).

Faithful to ``LuChengTHU/dpm-solver`` ``dpm_solver_pytorch.py`` (``algorithm_type="dpmsolver"``,
``dpm_solver_first_update``, ``singlestep_dpm_solver_second_update`` with r1 = 1/2,
``singlestep_dpm_solver_third_update`` with r1 = 1/3, r2 = 2/3). With :math:`h = \lambda_t - \lambda_s` and
:math:`E = e^h - 1 = h\varphi_1(h)` (:mod:`sdetoolkit.symbolic.phi`; also :math:`E/h - 1 = h\varphi_2(h)`):

* 1: :math:`x_t = (\alpha_t/\alpha_s)x_s - \sigma_t E\hat\varepsilon_s`;
* 2: :math:`u = (\alpha_{s_1}/\alpha_s)x_s - \sigma_{s_1}(e^{r_1h}-1)\hat\varepsilon_s`, then
  :math:`x_t = (\alpha_t/\alpha_s)x_s - \sigma_tE\hat\varepsilon_s - \tfrac{\sigma_tE}{2r_1}(\hat\varepsilon(u) -
  \hat\varepsilon_s)`;
* 3: two intermediate points, the second built from :math:`D_1 = \hat\varepsilon(u_1) - \hat\varepsilon_s`.
"""

from __future__ import annotations

from ..symbolic import ops
from ..symbolic.phi import phi
from .base import Claim, Param, Solver

SOURCE = "Lu et al. 2022 (DPM-Solver, arXiv 2206.00927), Thm. 3.2"


class DPMSolverSinglestep(Solver):
    """DPM-Solver-k: k evaluations per step, local order k + 1, global order k."""

    name = "dpm-solver"
    reaches_sigma_zero = "in noise form its factors e^h are infinite there (h = inf)"
    family = "dpm-solver"
    parameterisation = "eps"
    citation = SOURCE
    params = {"order": Param(2, "order (= evaluations per step)", choices=(1, 2, 3))}
    variants = {"dpm-solver-1": dict(order=1), "dpm-solver-2": dict(order=2), "dpm-solver-3": dict(order=3)}

    @property
    def nfe_per_step(self) -> int:
        return self.order

    def claimed(self) -> Claim:
        return Claim(self.order, "global", SOURCE)

    def _point(self, state, lam_s: float, h: float, r: float):
        """(t, alpha, sigma, e^{r h} - 1) at lambda_s + r h."""
        t_r = state.t_next if r == 1 else state.t_of_lam(lam_s + r * h)
        return t_r, state.alpha(t_r), state.sigma(t_r), ops.expm1(r * h)

    def step(self, state):
        lam = state.lam(state.t)
        h = state.lam(state.t_next) - lam
        alpha = state.alpha(state.t)
        eps = state.current()
        _, alpha_t, sigma_t, big_e = self._point(state, lam, h, 1.0)
        base = (alpha_t / alpha) * state.x - sigma_t * big_e * eps
        if self.order == 1:
            return base
        if self.order == 2:
            r1 = 0.5
            t1, alpha1, sigma1, e1 = self._point(state, lam, h, r1)
            u = (alpha1 / alpha) * state.x - sigma1 * e1 * eps
            return base - (sigma_t * big_e / (2 * r1)) * (state.evaluate(u, t1) - eps)
        r1, r2 = 1 / 3, 2 / 3
        t1, alpha1, sigma1, e1 = self._point(state, lam, h, r1)
        t2, alpha2, sigma2, e2 = self._point(state, lam, h, r2)
        u1 = (alpha1 / alpha) * state.x - sigma1 * e1 * eps
        d1 = state.evaluate(u1, t1) - eps
        u2 = ((alpha2 / alpha) * state.x - sigma2 * e2 * eps
              - sigma2 * (r2 / r1) * (r2 * h * phi(2, r2 * h)) * d1)          # (e2 / (r2 h) - 1)
        d2 = state.evaluate(u2, t2) - eps
        return base - (sigma_t / r2) * (h * phi(2, h)) * d2                    # (E / h - 1)
