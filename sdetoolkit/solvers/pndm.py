r"""PNDM and PLMS (Liu et al. 2022, arXiv 2202.09778): pseudo numerical methods with the DDIM step as the transfer.

Faithful to ``luping-liu/PNDM`` ``runner/method.py`` (``gen_order_4``, ``gen_order_2``, ``runge_kutta``,
``improved_eular``, ``transfer``) and, for PLMS, to ``diffusers`` ``PNDMScheduler.step_plms`` with
``skip_prk_steps=True``. Each step moves x from s to t with the DDIM *transfer*
:math:`\phi(x, \varepsilon', s, t) = \alpha_t (x - \sigma_s\varepsilon')/\alpha_s + \sigma_t\varepsilon'`
(the official ``transfer`` is the same map written as :math:`x + (\bar\alpha_t - \bar\alpha_s)(\dots)` in
:math:`\bar\alpha = \alpha^2`) applied with a combined noise :math:`\varepsilon'`:

* F-PNDM (``pndm-f``): the first 3 steps are pseudo-RK4, 4 evaluations each: :math:`e_1` at (x, s),
  :math:`e_2` at :math:`(\phi(x, e_1, s, m), m)`, :math:`e_3` at :math:`(\phi(x, e_2, s, m), m)`, :math:`e_4` at
  :math:`(\phi(x, e_3, s, t), t)` with :math:`m = (s + t)/2` *in time*, and
  :math:`\varepsilon' = (e_1 + 2e_2 + 2e_3 + e_4)/6`; only :math:`e_1` enters the history. Then the pseudo linear
  multistep step :math:`\varepsilon' = (55e_i - 59e_{i-1} + 37e_{i-2} - 9e_{i-3})/24`, one evaluation.
* S-PNDM (``pndm-s``): a pseudo-Heun first step, :math:`\varepsilon' = (e_1 + e_2)/2` with :math:`e_2` at
  :math:`(\phi(x, e_1, s, t), t)`, then :math:`\varepsilon' = (3e_i - e_{i-1})/2`.
* PLMS (``plms``, diffusers with ``skip_prk_steps=True``): the same pseudo-Heun first step (its predictor is a
  separate call at a repeated timestep there: ``plms_timesteps`` repeats the second time), then
  :math:`(3e_i - e_{i-1})/2`, :math:`(23e_i - 16e_{i-1} + 5e_{i-2})/12` and the 4-term formula from the fourth step
  on. With one step there is no repeated timestep, so PLMS is then a single DDIM step (one evaluation).

The coefficients are the equal-step Adams-Bashforth ones whatever the steps: since
:math:`\tilde x = x/\alpha` obeys :math:`\mathrm d\tilde x/\mathrm d\tilde\sigma = \varepsilon` with
:math:`\tilde\sigma = \sigma/\alpha`, and the transfer is exactly
:math:`\tilde x_t = \tilde x_s + (\tilde\sigma_t - \tilde\sigma_s)\varepsilon'`, these are fixed-coefficient
Adams-Bashforth methods in :math:`\tilde\sigma`, of their nominal order only on grids uniform in
:math:`\tilde\sigma`. The pseudo-RK4 stages sit at the midpoint in t, not in :math:`\tilde\sigma`. The official code
indexes a discrete :math:`\bar\alpha` table (``alphas_cump[t.long() + 1]``, truncating a fractional midpoint);
here t is continuous and the schedule is evaluated at the exact midpoint.
"""

from __future__ import annotations

from ..symbolic.lagrange import equal_step_adams_bashforth
from .base import Claim, Param, Solver

SOURCE = "Liu et al. 2022 (PNDM, ICLR 2022, arXiv 2202.09778)"
CLAIM = Claim(2, "global", f"{SOURCE}, Sec. 3 (convergence of the pseudo numerical methods: second order, "
                           f"DDIM first order)")

#: Equal-step Adams-Bashforth coefficients, most recent evaluation first (used by PNDM, PLMS and iPNDM): [1],
#: [3, -1]/2, [23, -16, 5]/12, [55, -59, 37, -9]/24, integrated exactly in :mod:`sdetoolkit.symbolic.lagrange`.
ADAMS_BASHFORTH = {order: tuple(float(w) for w in equal_step_adams_bashforth(order)) for order in range(1, 5)}


def transfer(state, x, t: float, t_next: float, eps):
    """The DDIM step from t to t_next with noise prediction eps (PNDM's transfer part)."""
    x0 = (x - state.sigma(t) * eps) / state.alpha(t)
    return state.alpha(t_next) * x0 + state.sigma(t_next) * eps


def linear_combination(coefficients, values):
    """sum_j coefficients[j] * values[j] (the lengths must agree)."""
    pairs = list(zip(coefficients, values, strict=True))
    combined = pairs[0][0] * pairs[0][1]
    for coefficient, value in pairs[1:]:
        combined = combined + coefficient * value
    return combined


def adams_bashforth(state, order: int):
    """The fixed-coefficient combination of the current output and the last order - 1 ones."""
    outputs = [state.current()] + [state.history[k].output for k in range(order - 1)]
    return linear_combination(ADAMS_BASHFORTH[order], outputs)


def pseudo_heun(state):
    """Pseudo improved Euler (``improved_eular``): the mean of the noise at the start and at the DDIM predictor."""
    t, t_next = state.t, state.t_next
    e_1 = state.current()
    e_2 = state.evaluate(transfer(state, state.x, t, t_next, e_1), t_next)
    return (e_1 + e_2) / 2


def pseudo_runge_kutta(state):
    """Pseudo RK4 (``runge_kutta``): stages at the midpoint in t, moved there by the transfer from x."""
    t, t_next = state.t, state.t_next
    t_mid = (t + t_next) / 2
    e_1 = state.current()
    e_2 = state.evaluate(transfer(state, state.x, t, t_mid, e_1), t_mid)
    e_3 = state.evaluate(transfer(state, state.x, t, t_mid, e_2), t_mid)
    e_4 = state.evaluate(transfer(state, state.x, t, t_next, e_3), t_next)
    return (e_1 + 2 * e_2 + 2 * e_3 + e_4) / 6


class PNDM(Solver):
    """F-PNDM (order 4: pseudo-RK4 warm-up, 4-step PLMS) and S-PNDM (order 2: pseudo-Heun warm-up, 2-step)."""

    name = "pndm"
    family = "pndm"
    parameterisation = "eps"
    history = 3
    citation = SOURCE
    claim = CLAIM
    params = {"order": Param(4, "4: F-PNDM (the official default method), 2: S-PNDM", choices=(2, 4))}
    variants = {"pndm-f": dict(order=4), "pndm-s": dict(order=2)}

    @property
    def warm_up(self) -> int:
        """Steps taken by the one-step pseudo method before the multistep formula has its history."""
        return self.order - 1

    @property
    def nfe_per_step(self) -> None:
        return None

    def step_order(self, i: int, n: int) -> int:
        """The nominal order on every step: the warm-up steps are pseudo-RK4 / pseudo-Heun, not lower-order."""
        return self.order

    def expected_nfe(self, times) -> int:
        """One per step, plus 3 (pseudo-RK4) or 1 (pseudo-Heun) per warm-up step."""
        steps = len(times) - 1
        extra = 3 if self.order == 4 else 1
        return steps + extra * min(steps, self.warm_up)

    def step(self, state):
        if state.i < self.warm_up:
            eps = pseudo_runge_kutta(state) if self.order == 4 else pseudo_heun(state)
        else:
            eps = adams_bashforth(state, self.order)
        return transfer(state, state.x, state.t, state.t_next, eps)


class PLMS(Solver):
    """PLMS as in diffusers' PNDMScheduler with skip_prk_steps=True: pseudo-Heun, then 2-, 3- and 4-step formulas."""

    name = "plms"
    family = "pndm"
    parameterisation = "eps"
    history = 3
    citation = f"{SOURCE}; diffusers PNDMScheduler.step_plms (skip_prk_steps=True)"
    claim = CLAIM

    @property
    def order(self) -> int:
        return 4

    @property
    def nfe_per_step(self) -> None:
        return None

    def expected_nfe(self, times) -> int:
        """One per step, plus the pseudo-Heun predictor on the first step when there are at least two steps."""
        steps = len(times) - 1
        return steps + 1 if steps >= 2 else steps

    def step(self, state):
        if state.order == 1:
            eps = pseudo_heun(state) if state.n_steps >= 2 else state.current()
        else:
            eps = adams_bashforth(state, state.order)
        return transfer(state, state.x, state.t, state.t_next, eps)
