r"""Black-box references: ``scipy.integrate.solve_ivp`` (RK45, DOP853) on the probability-flow ODE in t.

Each grid interval is integrated adaptively to ``rtol``/``atol`` with
:math:`\mathrm{d}x/\mathrm{d}t = \dot\alpha\hat x_0 + \dot\sigma\hat\varepsilon` (Dormand & Prince 1980; Hairer,
Norsett & Wanner 1993, Sec. II.10). Used by studies as high-accuracy references; the NFE is adaptive. It always
integrates in float64 (a float32 velocity would stall the error control at tight tolerances) and returns the
input's dtype.
"""

from __future__ import annotations

import torch
from scipy.integrate import solve_ivp

from .base import Claim, Param, Solver, real


class ScipyReference(Solver):
    """Adaptive Runge-Kutta from scipy, batch flattened into one system."""

    name = "scipy"
    reaches_sigma_zero = "the PF-ODE velocity alpha' x0 + sigma' eps is 0/0 there (eps = (x - alpha x0)/sigma)"
    family = "reference"
    parameterisation = "x0"
    nfe_per_step = None
    citation = "scipy.integrate.solve_ivp; Dormand & Prince 1980; Hairer, Norsett & Wanner 1993"
    claim = Claim(None, "none", "adaptive reference: accuracy set by rtol/atol, not by the grid")
    params = {
        "method": Param("DOP853", "solve_ivp method", choices=("RK45", "DOP853")),
        "rtol": Param(1e-10, "relative tolerance", check=real(0.0, 1.0, open_low=True, open_high=True)),
        "atol": Param(1e-10, "absolute tolerance", check=real(0.0, open_low=True)),
    }
    variants = {"scipy-rk45": dict(method="RK45"), "scipy-dop853": dict(method="DOP853")}

    def step(self, state):
        shape, dtype, device = state.x.shape, state.x.dtype, state.x.device
        schedule = state.schedule

        def velocity(t, flat):
            x = torch.from_numpy(flat.reshape(shape)).to(device=device)
            x0 = state.evaluate(x, t)
            eps = (x - float(schedule.alpha(t)) * x0) / float(schedule.sigma(t))
            v = float(schedule.dalpha_dt(t)) * x0 + float(schedule.dsigma_dt(t)) * eps
            return v.detach().cpu().double().numpy().ravel()

        solution = solve_ivp(velocity, (state.t, state.t_next), state.x.detach().cpu().double().numpy().ravel(),
                             method=self.method, rtol=self.rtol, atol=self.atol)
        if not solution.success:
            raise RuntimeError(f"{self.name}: solve_ivp failed on [{state.t}, {state.t_next}]: {solution.message}")
        return torch.from_numpy(solution.y[:, -1].reshape(shape)).to(dtype=dtype, device=device)
