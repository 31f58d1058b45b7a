"""sdetoolkit: verify diffusion-model samplers against exact answers.

Ground truth: :mod:`~sdetoolkit.schedules` (noise schedules from sympy expressions),
:mod:`~sdetoolkit.distributions` (Gaussians and mixtures with closed-form noised marginals),
:mod:`~sdetoolkit.models` (the exact model in every parameterisation), :mod:`~sdetoolkit.grids` (time grids) and
:mod:`~sdetoolkit.catalogue` (named test problems).
"""

from .catalogue import Problem, get_problem, list_problems, reference_facts
from .distributions import Gaussian, GaussianMixture, GaussianTransition
from .grids import make_grid, validate_grid
from .models import AnalyticModel, Prediction, ScoreError
from .schedules import NoiseSchedule, get_schedule, list_schedules

__version__ = "0.1.0"

__all__ = [
    "AnalyticModel", "Gaussian", "GaussianMixture", "GaussianTransition", "NoiseSchedule", "Prediction",
    "Problem", "ScoreError", "get_problem", "get_schedule", "list_problems", "list_schedules", "make_grid",
    "reference_facts", "validate_grid",
]
