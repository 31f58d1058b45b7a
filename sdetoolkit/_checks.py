"""Argument checks shared by the package: every failure names the argument and the reason."""

from __future__ import annotations

import math

import torch


def as_tensor(value, name: str, dtype=torch.float64, device=None) -> torch.Tensor:
    """Convert ``value`` to a tensor; a tensor keeps its dtype and device unless they are given."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=dtype if dtype is not None else value.dtype, device=device or value.device)
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: cannot be converted to a tensor ({err})") from err


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``x`` holds NaN or inf.

    A finite sum proves every element finite (NaN and inf propagate into it); only a sum that is not finite, which
    finite values can also give by overflowing it, pays for the elementwise test (25 times slower on large x).
    """
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        kind = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise ValueError(f"{name}: contains {kind}")
    return x


def check_scalar_time(t, name: str = "t") -> float:
    """A single finite time, as a Python float."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"{name}: expected a single time, got a tensor of shape {tuple(t.shape)}")
        t = t.item()
    try:
        value = float(t)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected a number, got {type(t).__name__}") from err
    if math.isnan(value):
        raise ValueError(f"{name}: is NaN")
    return value


def check_batch(x: torch.Tensor, dim: int, name: str = "x") -> torch.Tensor:
    """A finite floating-point batch of shape (N, dim)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (N, {dim}), got {tuple(x.shape)}")
    return check_finite(x, name)
