"""sdetoolkit: verify diffusion-model samplers against exact answers.

Ground truth: :mod:`~sdetoolkit.schedules` (noise schedules from sympy expressions),
:mod:`~sdetoolkit.distributions` (Gaussians and mixtures with closed-form noised marginals),
:mod:`~sdetoolkit.models` (the exact model in every parameterisation), :mod:`~sdetoolkit.grids` (time grids) and
:mod:`~sdetoolkit.catalogue` (named test problems).

The names below load on first use (PEP 562), so that importing a light submodule such as the pytest plugin
(:mod:`sdetoolkit.pytest_plugin`) does not import torch and sympy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Problem": "catalogue", "get_problem": "catalogue", "list_problems": "catalogue", "reference_facts": "catalogue",
    "Gaussian": "distributions", "GaussianMixture": "distributions", "GaussianTransition": "distributions",
    "make_grid": "grids", "validate_grid": "grids",
    "AnalyticModel": "models", "Prediction": "models", "ScoreError": "models",
    "NoiseSchedule": "schedules", "get_schedule": "schedules", "list_schedules": "schedules",
}

__all__ = [
    "AnalyticModel", "Gaussian", "GaussianMixture", "GaussianTransition", "NoiseSchedule", "Prediction",
    "Problem", "ScoreError", "get_problem", "get_schedule", "list_problems", "list_schedules", "make_grid",
    "reference_facts", "validate_grid",
]

if TYPE_CHECKING:
    from .catalogue import Problem, get_problem, list_problems, reference_facts
    from .distributions import Gaussian, GaussianMixture, GaussianTransition
    from .grids import make_grid, validate_grid
    from .models import AnalyticModel, Prediction, ScoreError
    from .schedules import NoiseSchedule, get_schedule, list_schedules


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'sdetoolkit' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
