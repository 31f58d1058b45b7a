r"""UniPC (Zhao et al. 2023, arXiv 2302.04867): the unified predictor UniP-p and corrector UniC-p, data prediction.

Faithful to ``wl-zhao/UniPC`` ``uni_pc.py``, ``UniPC.multistep_uni_pc_bh_update`` with
``algorithm_type="data_prediction"`` (variants ``bh1`` and ``bh2``) and the multistep loop of ``UniPC.sample``.

With :math:`h = \lambda_t - \lambda_s`, :math:`hh = -h` (data form), the current output :math:`m_0 = \hat x_0(x_s, s)`
and past outputs :math:`m_k` at :math:`\lambda_{s_k}`:

* ratios :math:`r_k = (\lambda_{s_k} - \lambda_s)/h` (negative for past points), differences
  :math:`D_k = (m_k - m_0)/r_k`, for k = 1 .. p-1;
* base step :math:`\tilde x = (\sigma_t/\sigma_s) x_s - \alpha_t (e^{hh} - 1) m_0` (DPM-Solver++1 / DDIM);
* :math:`B(h) = hh` (bh1) or :math:`e^{hh} - 1` (bh2);
* :math:`R_{jk} = r_k^{j-1}` (j = 1 .. p, with :math:`r_p = 1` for the new point) and
  :math:`b_j = j!\,hh\,\varphi_{j+1}(hh)/B(h)`, :math:`\varphi_{j+1}(z) = (e^z - \sum_{m=0}^{j} z^m/m!)/z^{j+1}`,
  the official recurrence :math:`g_1 = (e^{hh} - 1)/hh - 1`, :math:`g_{j+1} = g_j/hh - 1/(j+1)!`,
  :math:`b_j = j!\,g_j/B(h)`; all coefficients come from :mod:`sdetoolkit.symbolic.unipc`;
* **UniP-p:** :math:`\rho^p` solves :math:`R_{1:p-1,1:p-1}\rho^p = b_{1:p-1}` (the official code fixes
  :math:`\rho^p = [\tfrac12]` for p = 2), :math:`x^p = \tilde x - \alpha_t B(h) \sum_k \rho^p_k D_k`;
* **UniC-p:** :math:`\rho^c` solves :math:`R\rho^c = b` (fixed :math:`[\tfrac12]` for p = 1); with
  :math:`m_t = \hat x_0(x^p, t)`,
  :math:`x^c = \tilde x - \alpha_t B(h) (\sum_{k<p} \rho^c_k D_k + \rho^c_p (m_t - m_0))`.
  :math:`m_t` (at the *predicted* point) is the next step's :math:`m_0`, so the corrector costs no evaluation; the
  official loop skips it on the last step, so a run of N steps uses exactly N evaluations.

Orders as in the official ``sample``: warm-up steps i = 0 .. p-2 use order i + 1 (with the corrector), and
``lower_order_final`` (official default True) uses min(p, N - i) at *every* N (no step threshold, unlike
DPM-Solver++), so the last step is always a first-order predictor step without corrector.

Claims (Zhao et al. 2023, Sec. 3): UniC-p raises the order of accuracy of a p-th order predictor to p + 1
(Theorem 3.1), UniP-p has order p (Corollary 3.2), and UniPC-p converges with order p + 1 (Sec. 3.3 and App.).
"""

from __future__ import annotations

from ..symbolic import ops
from ..symbolic.unipc import unipc_coefficients
from .base import Claim, Param, Solver

SOURCE = "Zhao et al. 2023 (UniPC, arXiv 2302.04867), Sec. 3: Thm 3.1 (UniC-p), Cor. 3.2 (UniP-p)"
CITATION = ("Zhao, Bai, Rao, Zhou & Lu 2023, UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of "
            "Diffusion Models (NeurIPS 2023, arXiv 2302.04867); wl-zhao/UniPC uni_pc.py, multistep_uni_pc_bh_update")


class UniPC(Solver):
    """UniPC multistep (UniP-p predictor, optional UniC-p corrector), data prediction, one evaluation per step."""

    name = "unipc"
    family = "unipc"
    parameterisation = "x0"
    history = 2
    citation = CITATION
    params = {
        "order": Param(2, "predictor order p (official sample() default 2)", choices=(1, 2, 3)),
        "variant": Param("bh1", "B(h): 'bh1' = hh, 'bh2' = expm1(hh) (official UniPC() default 'bh1')",
                         choices=("bh1", "bh2")),
        "use_corrector": Param(True, "apply UniC after UniP (skipped on the last step, as officially)",
                               choices=(True, False)),
        "lower_order_final": Param(True, "order min(p, N - i) on the final steps, at every N (official)",
                                   choices=(True, False)),
    }
    variants = {
        **{f"unipc-{bh}-p{p}": dict(variant=bh, order=p) for bh in ("bh1", "bh2") for p in (1, 2, 3)},
        **{f"unip-{bh}-p{p}": dict(variant=bh, order=p, use_corrector=False) for bh in ("bh1", "bh2")
           for p in (1, 2, 3)},
    }

    def claimed(self) -> Claim:
        if self.use_corrector:
            return Claim(self.order + 1, "global", SOURCE + ": UniPC-p has order p + 1")
        return Claim(self.order, "global", SOURCE + ": UniP-p has order p")

    def step(self, state):
        t, t_next = state.t, state.t_next
        lam = state.lam(t)
        h = state.lam(t_next) - lam
        order = state.order
        m0 = state.current()
        past = [state.history[k] for k in range(order - 1)]
        rks = [(e.lam - lam) / h for e in past]
        correct = self.use_corrector and not state.is_last
        b_h, rho_p, rho_c = unipc_coefficients(h, rks, self.variant, corrector=correct)
        diffs = [(e.output - m0) / r for e, r in zip(past, rks, strict=True)]
        alpha_next = state.alpha(t_next)
        x_base = (state.sigma(t_next) / state.sigma(t)) * state.x - (alpha_next * ops.expm1(-h)) * m0
        x_pred = x_base
        for rho, d in zip(rho_p, diffs, strict=True):
            x_pred = x_pred - (alpha_next * b_h * rho) * d
        if not correct:
            return x_pred
        m_new = state.evaluate(x_pred, t_next)
        x_corr = x_base - (alpha_next * b_h * rho_c[-1]) * (m_new - m0)
        for rho, d in zip(rho_c[:-1], diffs, strict=True):
            x_corr = x_corr - (alpha_next * b_h * rho) * d
        state.offer_next(x_corr, m_new)
        return x_corr
