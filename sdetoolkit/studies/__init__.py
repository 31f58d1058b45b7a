"""Verification studies: order estimation and convergence sweeps."""

from .order import OrderFit, fit_order

__all__ = ["OrderFit", "fit_order"]
