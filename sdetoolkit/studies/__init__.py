"""Verification studies: order estimation, convergence, weak/strong orders, one-step error, distances, likelihood,
precision and robustness, and the sweeps that run them (see docs/studies.md)."""

from .convergence import ConvergenceStudy, ode_order
from .order import OrderFit, bootstrap_fit, fit_order
from .strong import StrongStudy, strong_order
from .study import Study
from .sweep import Cell, Executor, LocalExecutor, ResultStore, run_sweep
from .weak import WeakStudy, weak_order

__all__ = ["Cell", "ConvergenceStudy", "Executor", "LocalExecutor", "OrderFit", "ResultStore", "StrongStudy", "Study",
           "WeakStudy", "bootstrap_fit", "fit_order", "ode_order", "run_sweep", "strong_order", "weak_order"]
