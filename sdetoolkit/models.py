r"""The analytic model: exact predictions in every parameterisation, with an NFE counter and optional error.

With :math:`x_t = \alpha x_0 + \sigma\varepsilon`, one evaluation gives the denoiser :math:`\hat x_0` and the score
:math:`s`, and from them :math:`\hat\varepsilon = -\sigma s` and :math:`\hat v = \alpha\hat\varepsilon - \sigma\hat x_0`
(Salimans & Ho 2022). Tweedie's identity :math:`\hat x_0 = (x + \sigma^2 s)/\alpha` links them.

A :class:`ScoreError` turns the exact model into a controlled imperfect one: the score becomes
:math:`s + b(t)\,u + n(t)\,\xi` with a fixed unit direction :math:`u` (deterministic bias) and a fresh
:math:`\xi \sim \mathcal N(0, I)` per evaluation from a seeded generator. The other parameterisations follow from
the perturbed score, so the model stays self-consistent. A magnitude :math:`c/\sigma(t)` in the score is a constant
magnitude :math:`c` in :math:`\varepsilon`. Where α = 0 (the flow schedule at t = 1) Tweedie's identity does not
hold and the error is carried by the score and ε alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._checks import check_scalar_time
from .distributions import GaussianMixture
from .schedules import NoiseSchedule

Magnitude = float | Callable[[float], float]


@dataclass(frozen=True)
class Prediction:
    """All parameterisations of one model evaluation at time ``t``."""

    x0: torch.Tensor
    eps: torch.Tensor
    v: torch.Tensor
    score: torch.Tensor

    def __getitem__(self, parameterisation: str) -> torch.Tensor:
        if parameterisation not in ("x0", "eps", "v", "score"):
            raise ValueError(f"parameterisation: unknown {parameterisation!r}; expected x0, eps, v or score")
        return getattr(self, parameterisation)


@dataclass(frozen=True)
class ScoreError:
    """A controlled model error: deterministic bias ``bias(t) * direction`` plus noise of std ``noise(t)``.

    ``bias`` and ``noise`` are numbers or functions of t; ``direction`` defaults to a seeded random unit vector.
    """

    bias: Magnitude = 0.0
    noise: Magnitude = 0.0
    direction: torch.Tensor | None = None
    seed: int = 0

    @staticmethod
    def _at(magnitude: Magnitude, t: float, name: str) -> float:
        value = float(magnitude(t) if callable(magnitude) else magnitude)
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"{name}: magnitude must be finite and non-negative, got {value} at t={t}")
        return value


class AnalyticModel:
    """Exact model of ``distribution`` noised by ``schedule``; ``model(x, t)`` returns a :class:`Prediction`.

    Each call counts as one function evaluation (``nfe``), whatever the batch size.
    """

    def __init__(self, distribution: GaussianMixture, schedule: NoiseSchedule, error: ScoreError | None = None):
        if not isinstance(distribution, GaussianMixture):
            raise TypeError(f"distribution: expected a Gaussian or GaussianMixture, got {type(distribution).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule: expected a NoiseSchedule, got {type(schedule).__name__}")
        self.distribution = distribution
        self.schedule = schedule
        self.error = error
        self.nfe = 0
        self._direction = None if error is None else self._unit_direction(error, distribution.dim)
        self._noise_generator = None
        self.reset()

    @staticmethod
    def _unit_direction(error: ScoreError, dim: int) -> torch.Tensor:
        if error.direction is None:
            generator = torch.Generator().manual_seed(error.seed)
            u = torch.randn(dim, dtype=torch.float64, generator=generator)
        else:
            u = torch.as_tensor(error.direction, dtype=torch.float64)
            if u.shape != (dim,) or not bool(torch.isfinite(u).all()) or float(u.norm()) == 0.0:
                raise ValueError(f"direction: expected a finite non-zero vector of shape ({dim},)")
        return u / u.norm()

    @property
    def error_direction(self) -> torch.Tensor | None:
        """The unit direction u of the bias (float64), None without an error."""
        return self._direction

    def reset(self) -> None:
        """Zero the NFE counter and restart the error noise stream from its seed."""
        self.nfe = 0
        if self.error is not None:
            self._noise_generator = torch.Generator().manual_seed(self.error.seed + 1)

    def __call__(self, x: torch.Tensor, t) -> Prediction:
        t = check_scalar_time(t, "t")
        x0, score = self.distribution.x0_and_score(x, self.schedule, t)
        alpha, sigma = self.schedule.at(t)[:2]
        if self.error is not None:
            delta = self._score_error(x, t)
            score = score + delta
            x0 = x0 + (sigma**2 / alpha) * delta if alpha > 0 else x0
        self.nfe += 1
        eps = -sigma * score
        return Prediction(x0=x0, eps=eps, v=alpha * eps - sigma * x0, score=score)

    def pf_ode_drift(self, x: torch.Tensor, t) -> torch.Tensor:
        r"""Probability-flow ODE velocity :math:`f x - \tfrac12 g^2 s` (Song et al. 2021, eq. 13); one evaluation.

        Computed as the identical :math:`\dot\alpha\,\hat x_0 + \dot\sigma\,\hat\varepsilon`, which stays finite
        where :math:`f` and :math:`g^2` do not (the flow schedule at t = 1, where α = 0).
        """
        prediction = self(x, t)
        values = self.schedule.at(t)
        return values.dalpha_dt * prediction.x0 + values.dsigma_dt * prediction.eps

    def _score_error(self, x: torch.Tensor, t: float) -> torch.Tensor:
        bias = ScoreError._at(self.error.bias, t, "bias")
        noise = ScoreError._at(self.error.noise, t, "noise")
        delta = bias * self._direction.to(dtype=x.dtype, device=x.device).expand_as(x)
        if noise > 0.0:
            delta = delta + noise * self._error_noise(x)
        return delta

    def _error_noise(self, x: torch.Tensor) -> torch.Tensor:
        """The standard normal draw xi of this evaluation, shaped like x (exact propagation replaces it by probes)."""
        xi = torch.randn(x.shape, dtype=torch.float64, generator=self._noise_generator)
        return xi.to(dtype=x.dtype, device=x.device)
