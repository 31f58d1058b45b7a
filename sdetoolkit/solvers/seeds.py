r"""SEEDS-1/2/3 (Gonzalez et al. 2023, arXiv 2305.14267), data and noise prediction.

Faithful to ``nfsrules/SEEDS`` ``seeds_lib/methods/etd_serk.py`` (``ETD_SERK_SOLVER``: ``first_update``,
``second_update`` with ``butcher_type='2a'``, ``c2 = 1/2``, ``third_update`` with ``'3a'``, ``c2 = 1/3``,
``c3 = 2/3``), and for the data form also ComfyUI's ``sample_seeds_2`` / ``sample_seeds_3`` (which add k-diffusion's
eta and s_noise). One step from s to t, :math:`h = \lambda_t - \lambda_s`, stages at :math:`\lambda_s + c_k h`.

**Data form** (the eta-SDE of :mod:`.sde_dpm_solver_pp`, :math:`\kappa = 1 + \eta`, official :math:`\eta = 1`). With
:math:`B(a) = (\sigma_a/\sigma_s)e^{-\eta a h}x_s - \alpha_a(e^{-\kappa a h} - 1)m_s` the exponential Euler step
to the point at fraction a, :math:`\phi(z) = (e^{-z} - 1)/z + 1`:

* SEEDS-1: :math:`x_t = B(1) + \xi_t` (= SDE-DPM-Solver++1);
* SEEDS-2: :math:`x_2 = B(c_2) + \xi_2`,
  :math:`x_t = B(1) - \alpha_t(e^{-\kappa h} - 1)\tfrac{1}{2c_2}(m_2 - m_s) + \xi_t`;
* SEEDS-3: :math:`x_2 = B(c_2) + \xi_2`,
  :math:`x_3 = B(c_3) + \alpha_{3}\tfrac{c_3}{c_2}\phi(\kappa c_3 h)(m_2 - m_s) + \xi_3`,
  :math:`x_t = B(1) + \alpha_t\tfrac{1}{c_3}\phi(\kappa h)(m_3 - m_s) + \xi_t`. The stage-3 weight is the exact
  integral of the linear interpolant (ComfyUI ``a3_2``); the SEEDS repository codes
  :math:`\tfrac{c_3}{c_2}((e^{-2c_2h} - 1)/(c_2 h) + 1)`, which tends to -2 instead of 0 as h -> 0 (its comment
  doubts it); ``stage3="seeds-repo"`` reproduces that.

**Noise form** (:math:`\nabla\log p = -\hat\varepsilon/\sigma`, linear part f x, :math:`E(a) = e^{ah} - 1`):
:math:`B(a) = (\alpha_a/\alpha_s)x_s - 2\sigma_a E(a)\varepsilon_s`; SEEDS-2:
:math:`x_t = B(1) - \tfrac{1}{c_2}\sigma_t E(1)(\varepsilon_2 - \varepsilon_s) + \xi_t`; SEEDS-3:
:math:`x_3 = B(c_3) - 2\tfrac{c_3}{c_2}\sigma_3(E(c_3)/(c_3h) - 1)(\varepsilon_2 - \varepsilon_s) + \xi_3`,
:math:`x_t = B(1) - \tfrac{2}{c_3}\sigma_t(E(1)/h - 1)(\varepsilon_3 - \varepsilon_s) + \xi_t`.

**Stage noises.** :math:`\xi_a` is the exact noise of the SDE from s to the point a: with the pieces
:math:`J_k = \int K\,\mathrm{d}\bar W` over the sub-intervals between consecutive stage times (asked of the noise
source, so all stages see one Brownian path), :math:`\xi_a = c(a)\sum_{k \le a} J_k` with
:math:`c = \sigma_a e^{-\eta\lambda_a}` and :math:`K = K_\eta` (data form) or :math:`c = \alpha_a` and
:math:`K = g/\alpha` (noise form). This is the decomposition the paper's exact solution gives. The official data
form draws the same law at its default c's; its noise form pairs :math:`z_1, z_2` with swapped weights in
:math:`\xi_t` and scales :math:`\xi_3` by :math:`\sigma_t` instead of :math:`\sigma_{3}` (third order), which is not
the noise of one path; we use the path's. The official sign :math:`-\xi` is immaterial (z is symmetric).

A final step to :math:`\sigma = 0` leaves x unchanged with no evaluation, as the official loop does on its last
step (to t = 0); ComfyUI denoises instead.
"""

from __future__ import annotations

import math

from ..noise import noise_prediction_kernel
from ..symbolic.phi import z_phi
from .base import Claim, Param, Solver, real
from .sde_dpm_solver_pp import eta_data_kernel

CITATION = ("Gonzalez, Fernandez, Tran, Gherbi, Hajri & Masmoudi 2023, SEEDS: Exponential SDE Solvers for Fast "
            "High-Quality Sampling from Diffusion Models (NeurIPS 2023, arXiv 2305.14267); nfsrules/SEEDS "
            "seeds_lib/methods/etd_serk.py ETD_SERK_SOLVER; ComfyUI k_diffusion/sampling.py sample_seeds_2/3")
CLAIM = Claim(1, "strong", "Gonzalez et al. 2023 (arXiv 2305.14267): the abstract states proven strong convergence "
              "guarantees; order 1 recorded, the theorem's stated order was NOT verified from the paper text")
NODES = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


def _phi(z: float) -> float:
    """(e^-z - 1)/z + 1 = -(-z) phi_2(-z), the weight of the linear-interpolant term (no cancellation at small z)."""
    return -z_phi(2, -z)


class _SEEDS(Solver):
    """Shared step skeleton: stage times, NFE, the final step to sigma = 0, and the path pieces of the noise."""

    stochastic = True
    citation = CITATION
    claim = CLAIM

    @property
    def nfe_per_step(self) -> int:
        return self.order

    def expected_nfe(self, times) -> int:
        """order evaluations per step; none on a final step to t = 0 (sigma = 0), as officially."""
        steps = len(times) - 1
        return self.order * (steps - (1 if float(times[-1]) == 0.0 else 0))

    def _kernel(self, state):
        raise NotImplementedError

    def _scale(self, state, t: float) -> float:
        raise NotImplementedError

    def _noises(self, state, times: list[float]) -> list:
        """Exact noise from s to each of ``times`` (decreasing, ending at t_next), from pieces of one path."""
        if not self._noisy():
            return [0.0] * len(times)
        kernel = self._kernel(state)
        noises, total, t_hi = [], 0.0, state.t
        for t_lo in times:
            (piece,) = state.integrals((kernel,), t_hi, t_lo)
            total = total + piece
            noises.append((self._scale(state, t_lo) * self.config.get("s_noise", 1.0)) * total)
            t_hi = t_lo
        return noises

    def _noisy(self) -> bool:
        return True

    def step(self, state):
        if state.sigma(state.t_next) == 0.0:
            return state.x
        lam = state.lam(state.t)
        h = state.lam(state.t_next) - lam
        fractions = NODES[self.order]
        stage_times = [state.t_of_lam(lam + c * h) for c in fractions]
        noises = self._noises(state, [*stage_times, state.t_next])
        return self._update(state, h, fractions, stage_times, noises)


class SEEDSData(_SEEDS):
    """SEEDS-1/2/3, data prediction (official ``noise_pred=False``; ComfyUI's samplers), with eta and s_noise."""

    name = "seeds-data"
    family = "seeds"
    parameterisation = "x0"
    params = {
        "order": Param(1, "number of stages (SEEDS-1, -2, -3)", choices=(1, 2, 3)),
        "eta": Param(1.0, "eta of the eta-SDE (ComfyUI; the SEEDS repository: 1)", check=real(0.0)),
        "s_noise": Param(1.0, "noise scale (ComfyUI)", check=real(0.0)),
        "stage3": Param("lagrange", "SEEDS-3 stage-3 weight: exact 'lagrange' (ComfyUI) or 'seeds-repo' as coded",
                        choices=("lagrange", "seeds-repo")),
    }
    variants = {"seeds-1-data": dict(order=1), "seeds-2-data": dict(order=2), "seeds-3-data": dict(order=3),
                "seeds-3-data-repo": dict(order=3, stage3="seeds-repo")}

    def __init__(self, **params):
        super().__init__(**params)
        if self.stage3 == "seeds-repo" and self.eta != 1.0:
            raise ValueError(f"eta: the SEEDS repository's stage-3 weight is coded for eta = 1 only, got {self.eta}")
        if not self._noisy():
            self.stochastic = False

    def _noisy(self) -> bool:
        return self.eta > 0 and self.s_noise > 0

    def _kernel(self, state):
        return eta_data_kernel(state.schedule, self.eta)

    def _scale(self, state, t: float) -> float:
        return state.sigma(t) * math.exp(-self.eta * state.lam(t))

    def stage3_weight(self, h: float) -> float:
        r"""SEEDS-3's stage-3 weight of :math:`m_2 - m_s`, per :math:`\alpha_3 c_3/c_2`: :math:`\phi(\kappa c_3 h)`
        (``"lagrange"``) or the SEEDS repository's :math:`(e^{-2c_2h} - 1)/(c_2h) + 1` (``"seeds-repo"``)."""
        c2, c3 = NODES[3]
        if self.stage3 == "lagrange":
            return _phi((1.0 + self.eta) * c3 * h)
        return math.expm1(-2.0 * c2 * h) / (c2 * h) + 1.0

    def _update(self, state, h, fractions, stage_times, noises):
        kappa = 1.0 + self.eta
        x_s, sigma_s = state.x, state.sigma(state.t)
        m_s = state.current()

        def base(a, t_a):
            return ((state.sigma(t_a) / sigma_s * math.exp(-self.eta * a * h)) * x_s
                    - (state.alpha(t_a) * math.expm1(-kappa * a * h)) * m_s)

        t_next, alpha_next = state.t_next, state.alpha(state.t_next)
        if self.order == 1:
            return base(1.0, t_next) + noises[0]
        c2, t2 = fractions[0], stage_times[0]
        x2 = base(c2, t2) + noises[0]
        m2 = state.evaluate(x2, t2)
        if self.order == 2:
            return (base(1.0, t_next) - (alpha_next * math.expm1(-kappa * h) / (2.0 * c2)) * (m2 - m_s)
                    + noises[1])
        c3, t3 = fractions[1], stage_times[1]
        x3 = base(c3, t3) + (state.alpha(t3) * (c3 / c2) * self.stage3_weight(h)) * (m2 - m_s) + noises[1]
        m3 = state.evaluate(x3, t3)
        return base(1.0, t_next) + (alpha_next / c3 * _phi(kappa * h)) * (m3 - m_s) + noises[2]


class SEEDSNoise(_SEEDS):
    """SEEDS-1/2/3, noise prediction (the official default ``noise_pred=True``)."""

    name = "seeds-noise"
    family = "seeds"
    parameterisation = "eps"
    params = {"order": Param(1, "number of stages (SEEDS-1, -2, -3)", choices=(1, 2, 3))}
    variants = {"seeds-1-noise": dict(order=1), "seeds-2-noise": dict(order=2), "seeds-3-noise": dict(order=3)}

    def _kernel(self, state):
        return noise_prediction_kernel(state.schedule)

    def _scale(self, state, t: float) -> float:
        return state.alpha(t)

    def _update(self, state, h, fractions, stage_times, noises):
        x_s, alpha_s = state.x, state.alpha(state.t)
        eps_s = state.current()

        def base(a, t_a):
            return (state.alpha(t_a) / alpha_s) * x_s - (2.0 * state.sigma(t_a) * math.expm1(a * h)) * eps_s

        t_next, sigma_next = state.t_next, state.sigma(state.t_next)
        if self.order == 1:
            return base(1.0, t_next) + noises[0]
        c2, t2 = fractions[0], stage_times[0]
        x2 = base(c2, t2) + noises[0]
        eps2 = state.evaluate(x2, t2)
        if self.order == 2:
            return base(1.0, t_next) - (sigma_next * math.expm1(h) / c2) * (eps2 - eps_s) + noises[1]
        c3, t3 = fractions[1], stage_times[1]
        weight = z_phi(2, c3 * h)  # (e^{c3 h} - 1)/(c3 h) - 1
        x3 = base(c3, t3) - (2.0 * (c3 / c2) * state.sigma(t3) * weight) * (eps2 - eps_s) + noises[1]
        eps3 = state.evaluate(x3, t3)
        weight = z_phi(2, h)  # (e^h - 1)/h - 1
        return base(1.0, t_next) - (2.0 / c3 * sigma_next * weight) * (eps3 - eps_s) + noises[2]
