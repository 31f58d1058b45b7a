r"""Time grids: strictly decreasing float64 arrays :math:`t_0 = t_{max} > t_1 > \dots > t_n = t_{min}`.

Every builder returns an explicit array; solvers only ever see arrays.

* ``uniform_t``: uniform in t.
* ``uniform_lambda``: uniform in log-SNR :math:`\lambda` (DPM-Solver's ``logSNR``).
* ``edm``: uniform in :math:`\tilde\sigma^{1/\rho}`, :math:`\tilde\sigma = \sigma/\alpha = e^{-\lambda}` (Karras et
  al. 2022, eq. 5; on the ``edm`` schedule :math:`\tilde\sigma = t`).
* ``time_quadratic``: uniform in :math:`\sqrt t` (DPM-Solver's ``time_quadratic`` for VP models).
* ``explicit``: a user array, validated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._checks import as_tensor
from .schedules import NoiseSchedule


def validate_grid(times, schedule: NoiseSchedule, name: str = "times") -> torch.Tensor:
    """Return ``times`` as float64, or raise: at least 2 points, finite, strictly decreasing, inside the schedule."""
    times = as_tensor(times, name)
    if times.ndim != 1 or times.numel() < 2:
        raise ValueError(f"{name}: expected a 1-D array of at least 2 times (1 step), got shape {tuple(times.shape)}")
    if not bool(torch.isfinite(times).all()):
        raise ValueError(f"{name}: contains NaN or inf")
    steps = times[1:] - times[:-1]
    if not bool((steps < 0).all()):
        i = int((steps >= 0).nonzero()[0])
        raise ValueError(f"{name}: must be strictly decreasing; times[{i}]={times[i].item()!r} is followed by "
                         f"times[{i + 1}]={times[i + 1].item()!r}")
    schedule.check_time(times, name)
    return times


def _window(schedule: NoiseSchedule, t_min, t_max) -> tuple[float, float]:
    t_min = schedule.t_lo if t_min is None else float(t_min)
    t_max = schedule.t_hi if t_max is None else float(t_max)
    schedule.check_time(torch.tensor([t_min, t_max], dtype=torch.float64), "t_min/t_max")
    if not t_min < t_max:
        raise ValueError(f"t_min: must be below t_max, got t_min={t_min}, t_max={t_max}")
    return t_min, t_max


def _check_steps(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive integer number of steps, got {n!r}")
    return n


def _pinned(times: torch.Tensor, t_min: float, t_max: float) -> torch.Tensor:
    """Set the ends exactly (inverse maps may be off in the last ulp)."""
    times[0], times[-1] = t_max, t_min
    return times


def uniform_t(schedule: NoiseSchedule, n: int, t_min=None, t_max=None) -> torch.Tensor:
    """n steps uniform in t."""
    t_min, t_max = _window(schedule, t_min, t_max)
    return torch.linspace(t_max, t_min, _check_steps(n) + 1, dtype=torch.float64)


def uniform_lambda(schedule: NoiseSchedule, n: int, t_min=None, t_max=None) -> torch.Tensor:
    r"""n steps uniform in :math:`\lambda = \log(\alpha/\sigma)`."""
    t_min, t_max = _window(schedule, t_min, t_max)
    lam = schedule.lam(torch.tensor([t_max, t_min], dtype=torch.float64))
    if not bool(torch.isfinite(lam).all()):
        raise ValueError(f"t_min/t_max: lambda is infinite at an end of [{t_min}, {t_max}]; choose a window inside "
                         f"the schedule's range")
    lams = torch.linspace(lam[0].item(), lam[1].item(), _check_steps(n) + 1, dtype=torch.float64)
    return _pinned(schedule.t_of_lambda(lams), t_min, t_max)


def edm(schedule: NoiseSchedule, n: int, t_min=None, t_max=None, rho: float = 7.0) -> torch.Tensor:
    r"""n steps uniform in :math:`\tilde\sigma^{1/\rho}`, :math:`\tilde\sigma = e^{-\lambda}` (Karras et al. 2022,
    eq. 5)."""
    if not rho > 0:
        raise ValueError(f"rho: must be positive, got {rho}")
    t_min, t_max = _window(schedule, t_min, t_max)
    ends = schedule.sigma_over_alpha(torch.tensor([t_max, t_min], dtype=torch.float64))
    if not bool(torch.isfinite(ends).all()):
        raise ValueError(f"t_max: sigma/alpha is infinite at t_max={t_max}")
    ramp = torch.linspace(0.0, 1.0, _check_steps(n) + 1, dtype=torch.float64)
    hi, lo = ends[0] ** (1.0 / rho), ends[1] ** (1.0 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    inner = schedule.t_of_lambda(-torch.log(sigmas[1:-1]))
    return torch.cat([torch.tensor([t_max], dtype=torch.float64), inner, torch.tensor([t_min], dtype=torch.float64)])


def time_quadratic(schedule: NoiseSchedule, n: int, t_min=None, t_max=None) -> torch.Tensor:
    r"""n steps uniform in :math:`\sqrt t` (DPM-Solver's ``time_quadratic``)."""
    t_min, t_max = _window(schedule, t_min, t_max)
    if t_min < 0:
        raise ValueError(f"t_min: time_quadratic needs t_min >= 0, got {t_min}")
    roots = torch.linspace(t_max**0.5, t_min**0.5, _check_steps(n) + 1, dtype=torch.float64)
    return _pinned(roots**2, t_min, t_max)


def explicit(schedule: NoiseSchedule, times) -> torch.Tensor:
    """A user-given array, validated."""
    return validate_grid(times, schedule).clone()


_BUILDERS: dict[str, Callable[..., torch.Tensor]] = {
    "uniform-t": uniform_t, "uniform-lambda": uniform_lambda, "edm": edm, "time-quadratic": time_quadratic,
}


def list_grids() -> list[str]:
    """Names of the grid builders usable with :func:`make_grid`."""
    return sorted(_BUILDERS)


def make_grid(name: str, schedule: NoiseSchedule, n: int, t_min=None, t_max=None, **params) -> torch.Tensor:
    """Build a grid by name: ``make_grid("edm", schedule, 18, 0.002, 80.0, rho=7)``."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"name: unknown grid {name!r}; known: {', '.join(list_grids())}") from None
    return validate_grid(builder(schedule, n, t_min, t_max, **params), schedule)
