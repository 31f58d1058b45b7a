r"""Restart sampling (Xu et al. 2023, arXiv 2306.14878; official
``Newbeeer/diffusion_restart_sampling/benchmarks/generate_restart.py::restart_sampler``).

The main process is EDM's Heun sampler in :math:`\tilde\sigma = \sigma/\alpha` on :math:`\tilde x = x/\alpha`
(Karras et al. 2022, Alg. 1; the Heun correction is skipped on a final step to :math:`\tilde\sigma = 0`). Each
restart interval ``(n_restart, K, t_min, t_max)`` is given in the schedule's time t, which is the EDM sigma of the
official code on the ``edm`` schedule (alpha = 1, sigma = t); it is attached to the grid time nearest to ``t_min``
(the official ``argmin |t_steps - t_min|``); after the main step that lands there, K times:

1. forward noise jump :math:`\tilde x \leftarrow \tilde x + S_{noise}\sqrt{t_{max}^2 - t_{min}^2}\,\varepsilon`,
   with :math:`t_{min}` the grid point's sigma;
2. ``n_restart - 1`` Heun steps on the Karras :math:`\rho = 7` grid (in :math:`\tilde\sigma`) of ``n_restart``
   points from :math:`t_{max}` down to :math:`t_{min}`, each with the official churn: if ``s_min <= t <= s_max``
   the step starts from
   :math:`\hat\sigma = (1 + \gamma)\sigma` after adding :math:`S_{noise}\sqrt{\hat\sigma^2 - \sigma^2}\,z`
   (``restart_gamma``).

The jump is drawn as the exact forward-process integral :math:`\int_{t_{min}}^{t_{max}} (g/\alpha)\,dW` over the
restart interval (:func:`~sdetoolkit.noise.noise_prediction_kernel`, variance :math:`\tilde\sigma_{max}^2 -
\tilde\sigma_{min}^2`), so with :class:`~sdetoolkit.noise.IIDNoise` it is the official draw scaled exactly; churn
noise is a single-time draw. Repetition k of the K draws its jump from copy k of the noise over the interval (on a
:class:`~sdetoolkit.noise.BrownianPath`, the same interval of the k-th of a family of independent paths), so the K
jumps are independent. Grids share a jump only above the higher of their attachment points (the interval starts
at the grid point nearest ``t_min``), and churn draws only where their times coincide: in a strong study the
restart noise of a coarse run and of its reference are partly independent (see the finding on ``restart``).

Defaults follow the README's command (``S_noise = 1.003``, ``S_min = 0.01``, ``S_max = 1``, ``restart_gamma =
0.05``) and its example configuration ``{"0": [3, 2, 0.06, 0.30]}``; the command-line defaults (``S_noise = 0``,
``S_max = 0``, no restart) would make Restart the plain Heun sampler. The official inner grid is built in float32;
here it is float64. The main loop's optional EDM churn (``S_churn``, 0 in every published configuration) is omitted.

No convergence order is claimed: Theorem 3 of the paper bounds the W1 distance of Restart's output at t_min to the
true marginal by a contracting term, (1 - lambda)^K times the accumulated error, plus discretisation terms.
"""

from __future__ import annotations

import math

import torch

from ..noise import noise_prediction_kernel
from .base import Claim, Param, Solver, real
from .edm import edm_step


def _valid_restarts(value) -> bool:
    try:
        return all(len(v) == 4 and int(v[0]) == v[0] and v[0] >= 2 and int(v[1]) == v[1] and v[1] >= 0
                   and 0 <= v[2] < v[3] for v in value)
    except TypeError:
        return False


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0) -> list[float]:
    """n points uniform in sigma^(1/rho) from sigma_max to sigma_min (the official ``get_steps``)."""
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(hi + k / (n - 1) * (lo - hi)) ** rho for k in range(n)]


class Restart(Solver):
    """Restart sampling around EDM Heun: main Heun steps plus K restart loops on each restart interval."""

    name = "restart"
    family = "restart"
    parameterisation = "x0"
    stochastic = True
    nfe_per_step = None
    citation = "Xu et al. 2023, Restart Sampling for Improving Generative Processes, arXiv 2306.14878, Alg. 1"
    claim = Claim(None, "none", "Xu et al. 2023, Thm 3: a W1 bound at t_min with a (1 - lambda)^K contraction of the "
                  "accumulated error; no order")
    params = {
        "restarts": Param(((3, 2, 0.06, 0.30),), "restart intervals (n_restart, K, t_min, t_max) in the schedule's "
                          "time (EDM sigma on the edm schedule)",
                          check=_valid_restarts),
        "s_noise": Param(1.003, "S_noise: scale of the restart jump and churn noise", check=real(0.0)),
        "restart_gamma": Param(0.05, "churn factor of the inner restart steps", check=real(0.0)),
        "s_min": Param(0.01, "inner churn applies for s_min <= t <= s_max", check=real(0.0)),
        "s_max": Param(1.0, "inner churn applies for s_min <= t <= s_max", check=real(0.0)),
        "rho": Param(7.0, "Karras exponent of the inner restart grids", check=real(0.0, open_low=True)),
    }

    # -- the grid interplay -----------------------------------------------------------------------------------------
    def attachments(self, times) -> dict[int, tuple]:
        """{grid index: (n_restart, K, t_max)} for each restart, at the grid time nearest its t_min (the official
        rule; a later interval on the same index replaces an earlier one, as in the official dict)."""
        times = torch.as_tensor(times, dtype=torch.float64)
        attached = {}
        for n_restart, k, t_min, t_max in self.restarts:
            attached[int(torch.argmin((times - t_min).abs()))] = (int(n_restart), int(k), float(t_max))
        return attached

    def expected_nfe(self, times) -> int:
        """2 per main step (1 on a final step to sigma = 0), plus K (n_restart - 1) Heun steps per attached restart
        (one fewer per loop when the loop ends at sigma = 0). A restart on index 0 never runs (official)."""
        times = torch.as_tensor(times, dtype=torch.float64)
        steps = len(times) - 1
        zero_end = float(times[-1]) == 0.0
        nfe = 2 * steps - (1 if zero_end else 0)
        for index, (n_restart, k, _) in self.attachments(times).items():
            if index == 0:
                continue
            nfe += k * (2 * (n_restart - 1) - (1 if index == steps and zero_end else 0))
        return nfe

    # -- steps ------------------------------------------------------------------------------------------------------
    def _time(self, schedule, sigma: float) -> float:
        return float(schedule.t_of_lambda(torch.tensor(-math.log(sigma), dtype=torch.float64)))

    def step(self, state):
        sched = state.schedule
        t, t_next = state.t, state.t_next
        s, s_next = float(sched.sigma_over_alpha(t)), float(sched.sigma_over_alpha(t_next))
        x_tilde = edm_step(state, state.x / state.alpha(t), t, s, t_next, s_next, denoised=state.current())
        attached = self.attachments(state.times).get(state.i + 1)
        if attached is not None:
            n_restart, k, t_top = attached
            if t_top <= t_next:
                raise ValueError(f"restarts: t_max = {t_top} must exceed the grid time t_min = {t_next} it is "
                                 f"attached to")
            kernel = noise_prediction_kernel(sched)
            sigmas = karras_sigmas(float(sched.sigma_over_alpha(t_top)), s_next, n_restart, self.rho)
            times = [t_top] + [self._time(sched, v) for v in sigmas[1:-1]] + [t_next]
            for repeat in range(k):
                if s_next > 0:
                    (jump,) = state.integrals((kernel,), t_hi=t_top, t_lo=t_next, copy=repeat)
                else:  # the integral has no finite log-SNR down to sigma = 0; same law, plain normal
                    jump = sigmas[0] * state.normal(t_top, t_next, copy=repeat)
                x_tilde = x_tilde + self.s_noise * jump
                for j in range(n_restart - 1):
                    t_cur, sigma_cur = times[j], sigmas[j]
                    if self.restart_gamma > 0 and self.s_min <= t_cur <= self.s_max:
                        sigma_hat = sigma_cur * (1 + self.restart_gamma)
                        x_tilde = x_tilde + (self.s_noise * math.sqrt(sigma_hat**2 - sigma_cur**2)
                                             * state.normal(t_cur, t_cur))
                        t_cur, sigma_cur = self._time(sched, sigma_hat), sigma_hat
                    x_tilde = edm_step(state, x_tilde, t_cur, sigma_cur, times[j + 1], sigmas[j + 1])
        return state.alpha(t_next) * x_tilde
