"""Solvers: :mod:`.base` holds the protocol, the registry and the sampling loop; every other module is one family.

Importing this package imports every module in it, so defining a solver class in a new file registers it.
"""

import importlib
import pkgutil

from .base import Claim, DivergenceError, Param, SampleResult, Solver, StepState, get_solver, list_solvers, sample

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Claim", "DivergenceError", "Param", "SampleResult", "Solver", "StepState", "get_solver", "list_solvers",
           "sample"]
