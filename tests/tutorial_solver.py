r"""The exponential leapfrog: a two-step explicit solver of the probability-flow ODE (docs/tutorial-new-solver.md).

In y = x/sigma and lambda = log(alpha/sigma) the PF-ODE is dy/dlambda = e^lambda x0(x, lambda), x0 the data
prediction (the exact-solution formula of DPM-Solver++, Lu et al. 2022, arXiv 2211.01095). Integrating it over two
steps, [lambda_{n-1}, lambda_{n+1}], with x0 frozen at the middle point lambda_n (the leapfrog rule):

    x_{n+1} = (sigma_{n+1}/sigma_{n-1}) x_{n-1} + alpha_{n+1} (1 - exp(-(lambda_{n+1} - lambda_{n-1}))) x0_n.

The first step, with no x_{n-1}, is the exponential Euler step (DDIM). Global order 2 (see the tutorial).
"""

import math

from sdetoolkit.solvers.base import Claim, Solver


class ExpLeapfrog(Solver):
    """Exponential leapfrog in lambda, data prediction, one model evaluation per step."""

    name = "exp-leapfrog"
    family = "tutorial"
    parameterisation = "x0"
    history = 1  # keep the previous step's evaluation: its point x_{n-1} and time
    claim = Claim(2, "global", "docs/tutorial-new-solver.md: local error O(h^3)")
    citation = "sdetoolkit tutorial; the exact-solution formula of Lu et al. 2022 (DPM-Solver++)"

    def step(self, state):
        x0 = state.current()  # the model at (x_n, t_n): one evaluation
        t_next = state.t_next
        alpha_next, sigma_next, lam_next = state.alpha(t_next), state.sigma(t_next), state.lam(t_next)
        if not state.history:  # first step: exponential Euler (DDIM)
            h = lam_next - state.lam(state.t)
            return (sigma_next / state.sigma(state.t)) * state.x - alpha_next * math.expm1(-h) * x0
        prev = state.history[0]  # the evaluation at (x_{n-1}, t_{n-1})
        h2 = lam_next - prev.lam
        return (sigma_next / state.sigma(prev.t)) * prev.x - alpha_next * math.expm1(-h2) * x0
