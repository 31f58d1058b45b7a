r"""iPNDM and iPNDM-v in the EDM form (``zju-pi/diff-sampler`` ``diff-solvers-main/solvers.py``).

Both integrate :math:`\mathrm d\tilde x/\mathrm d\tilde\sigma = d = (\tilde x - D(\tilde x;\tilde\sigma))/\tilde\sigma`
for :math:`\tilde x = x/\alpha`, :math:`\tilde\sigma = \sigma/\alpha` (as :mod:`.edm` does), D being the denoiser
(x0 prediction), with the explicit multistep update
:math:`\tilde x_{i+1} = \tilde x_i + h_i\sum_j c_j d_{i-j}`, :math:`h_i = \tilde\sigma_{i+1} - \tilde\sigma_i`, one
evaluation per step, of order min(max_order, i + 1) on step i (the official lower-order warm-up):

* ``ipndm`` (``ipndm_sampler``; iPNDM of Zhang & Chen 2023): the equal-step Adams-Bashforth coefficients
  [1], [3, -1]/2, [23, -16, 5]/12, [55, -59, 37, -9]/24 whatever the steps;
* ``ipndm-v`` (``ipndm_v_sampler``): coefficients that depend on the ratios of the last steps, as coded there
  (:func:`ipndm_v_coefficients`). Order 2 is the exact variable-step Adams-Bashforth 2; the order-3 and order-4
  formulas reduce on equal steps to [23, -16, 5]/12 and to (57, -65, 43, -11)/24 respectively; the latter is not
  the Adams-Bashforth 4 combination (it is exact only for quadratics), so iPNDM-v with max_order 4 differs from
  iPNDM even on equal steps.

Since :math:`d = \hat\varepsilon`, iPNDM is the fixed-coefficient multistep method of PLMS in :math:`\tilde\sigma`
with an Euler (DDIM) first step. The official options ``afs`` (analytical first step) and ``denoise_to_zero`` are
off by default there and are not implemented here.
"""

from __future__ import annotations

import itertools

from ..symbolic import ops
from .base import Claim, Param, Solver
from .pndm import ADAMS_BASHFORTH, linear_combination

SOURCE_IPNDM = ("Zhang & Chen 2023 (DEIS, ICLR 2023, arXiv 2204.13902), iPNDM; EDM form: zju-pi/diff-sampler "
                "diff-solvers-main/solvers.py::ipndm_sampler")
SOURCE_IPNDM_V = ("Zhou et al. 2024 (diff-sampler, arXiv 2312.00094), zju-pi/diff-sampler "
                  "diff-solvers-main/solvers.py::ipndm_v_sampler")


def ipndm_v_coefficients(steps: tuple[float, ...]) -> tuple[float, ...]:
    r"""iPNDM-v's coefficients of (d_i, d_{i-1}, ...) from the steps (h_i, h_{i-1}, ...), as ``ipndm_v_sampler``
    codes them; the order is len(steps) (1 to 4). Only ratios of steps enter, so their sign does not matter."""
    order = len(steps)
    if order == 1:
        return (1.0,)
    h0, h1 = steps[0], steps[1]
    ratio = h0 / h1
    c1, c2 = 1 + ratio / 2, -ratio / 2
    if order == 2:
        return c1, c2
    h2 = steps[2]
    temp1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return c1 + temp1, c2 - (1 + h1 / h2) * temp1, temp1 * h1 / h2
    h3 = steps[3]
    temp2 = (((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2)))
             * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    return (c1 + temp1 + temp2,
            c2 - (1 + h1 / h2) * temp1 - (1 + h1 / h2 + q) * temp2,
            temp1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * temp2,
            -temp2 * q * h1 / h2)


class IPNDM(Solver):
    """iPNDM (fixed Adams-Bashforth coefficients) and iPNDM-v (variable-step coefficients) in sigma, x0 model."""

    name = "ipndm"
    family = "ipndm"
    parameterisation = "x0"
    history = 3
    citation = SOURCE_IPNDM
    params = {
        "max_order": Param(4, "maximum multistep order (official default 4)", choices=(1, 2, 3, 4)),
        "variable_step": Param(False, "iPNDM-v's step-ratio-dependent coefficients", choices=(True, False)),
    }
    variants = {"ipndm-v": dict(variable_step=True)}

    @property
    def order(self) -> int:
        return self.max_order

    def claimed(self) -> Claim:
        if self.variable_step:
            return Claim(self.max_order, "global", f"{SOURCE_IPNDM_V}: 'the variable-step version of the "
                                                   f"Adams-Bashforth methods', max order 4 (README)")
        return Claim(self.max_order, "global", f"{SOURCE_IPNDM}: Adams-Bashforth of order max_order with "
                                               f"lower-order warm-up (max order 4, diff-sampler README)")

    def describe(self) -> dict:
        info = super().describe()
        info["citation"] = SOURCE_IPNDM_V if self.variable_step else SOURCE_IPNDM
        return info

    def step(self, state):
        sched = state.schedule
        t, t_next = state.t, state.t_next
        s, s_next = ops.real(sched.sigma_over_alpha(t)), ops.real(sched.sigma_over_alpha(t_next))
        x_tilde = state.x / state.alpha(t)
        past = [state.history[k] for k in range(state.order - 1)]
        slopes = [(x_tilde - state.current()) / s]
        slopes += [(e.x / state.alpha(e.t) - e.output) / ops.real(sched.sigma_over_alpha(e.t)) for e in past]
        if self.variable_step:
            sigmas = [s_next, s] + [ops.real(sched.sigma_over_alpha(e.t)) for e in past]
            coefficients = ipndm_v_coefficients(tuple(a - b for a, b in itertools.pairwise(sigmas)))
        else:
            coefficients = ADAMS_BASHFORTH[state.order]
        return state.alpha(t_next) * (x_tilde + (s_next - s) * linear_combination(coefficients, slopes))
