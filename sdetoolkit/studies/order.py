r"""Empirical order estimation: least squares of log error on log step, with an interval.

For errors :math:`e_i \approx C h_i^p (1 + D_1 h_i + \dots)` the coefficient of :math:`\log h` in a least-squares
fit of :math:`\log e` on :math:`(1, \log h, h, \dots, h^k)` estimates p (``corrections = k`` terms of the error
expansion, so a drift of the local slopes does not bias it). Exact (noise-free) errors have no sampling error:
what remains is the truncation of that expansion, which the regression's t-interval alone does not cover (it
measures only the lack of fit of the chosen model). Its size is estimated a posteriori, as embedded Runge-Kutta
pairs estimate their error, by the change :math:`\tau` of the estimate when the last correction term is dropped.
The reported interval is :math:`\hat p \pm (t\,\mathrm{SE} + \tau)`, widened to contain the local pairwise
slopes of the window: p is claimed only to the precision to which the rate has visibly set in.

Points that measure something other than the truncation error are dropped and named, with the reason:

* ``floor``: at or below a known floor (the reference's own accuracy);
* ``noise floor``: a Monte Carlo error within two of its standard errors of zero;
* ``round-off plateau``: the finest points, while their error is within 1e3 of the arithmetic's ``resolution``
  (machine epsilon times the size of the solution; float64 and unit size by default) and their local slope is
  below max(1, p_coarse/2), p_coarse being the median local slope of the coarser half: the error has stopped
  falling at the round-off level, which no smooth truncation model describes. Both conditions are needed: a
  genuine order reduction (3 to 2) stays above the slope threshold, and an error that stalls far above round-off
  (two error terms of opposite sign crossing) is truncation error and is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class OrderFit:
    """Fitted order p with its confidence interval, the points used, and the local slopes."""

    order: float
    low: float
    high: float
    ci_low: float
    ci_high: float
    stderr: float
    truncation: float
    confidence: float
    steps: np.ndarray
    errors: np.ndarray
    local_slopes: np.ndarray
    dropped: tuple
    interval: str = "t-interval"
    drop_reasons: tuple = ()

    def contains(self, p: float) -> bool:
        return self.low <= p <= self.high

    def __str__(self) -> str:
        local = ", ".join(f"{v:.2f}" for v in self.local_slopes)
        dropped = "; dropped " + ", ".join(f"h={h:.4g} ({why})" for h, why in zip(self.dropped, self.drop_reasons,
                                                                                  strict=True)) if self.dropped else ""
        return (f"p = {self.order:.3f} [{self.low:.3f}, {self.high:.3f}] ({self.interval} {self.confidence:.0%} "
                f"[{self.ci_low:.3f}, {self.ci_high:.3f}], truncation {self.truncation:.3f}; local slopes {local})"
                f"{dropped}")


def fit_order(steps, errors, *, floor: float = 0.0, stderr=None, confidence: float = 0.95,
              corrections: int = 1, resolution: float = float(np.finfo(float).eps)) -> OrderFit:
    r"""Fit ``errors ~ C steps^p`` over the points that measure truncation error.

    ``steps`` are step sizes (any ratios, any order); ``errors`` are positive. With ``corrections = k`` the model is
    :math:`\log e = \log C + p\log h + \sum_{j=1}^{k} D_j h^j`, the leading terms of the error expansion
    :math:`e = C h^p (1 + D_1 h + \dots)`, so a pre-asymptotic drift of the local slopes does not bias p. Points at
    or below ``floor``, within two ``stderr`` of zero, or on a round-off plateau (above ``resolution``) are dropped and
    named (see the module docstring). At least k + 3 points must remain, so that the interval exists.
    """
    h = np.asarray(steps, dtype=float)
    e = np.asarray(errors, dtype=float)
    if h.shape != e.shape or h.ndim != 1:
        raise ValueError("steps, errors: expected two 1-D arrays of the same length")
    if not (np.all(np.isfinite(h)) and np.all(h > 0)):
        raise ValueError("steps: must be finite and positive")
    if not np.all(np.isfinite(e)):
        raise ValueError("errors: contain NaN or inf (a diverged run?)")
    sd = np.zeros_like(e) if stderr is None else np.nan_to_num(np.asarray(stderr, dtype=float), nan=0.0)
    if sd.shape != e.shape:
        raise ValueError("stderr: expected the shape of errors")
    order = np.argsort(h)
    h, e, sd = h[order], e[order], sd[order]
    reasons = np.where(e <= floor, "floor", np.where(e <= 2 * sd, "noise floor", "")).astype(object)
    candidates = np.flatnonzero(reasons == "")
    reasons[candidates[:_round_off_plateau(h[candidates], e[candidates], resolution)]] = "round-off plateau"
    keep = reasons == ""
    needed = corrections + 3
    if keep.sum() < needed:
        raise ValueError(f"errors: need at least {needed} points above the floors, got {keep.sum()} "
                         f"(dropped: {', '.join(f'h={v:.3g} ({r})' for v, r in zip(h, reasons, strict=True) if r)})")
    dropped, drop_reasons = tuple(float(v) for v in h[~keep]), tuple(str(r) for r in reasons[~keep])
    h, e = h[keep], e[keep]
    slope, stderr_p, dof = _regression(h, e, corrections)
    truncation = abs(slope - _regression(h, e, corrections - 1)[0]) if corrections > 0 else 0.0
    half = stats.t.ppf(0.5 + confidence / 2, dof) * stderr_p
    local = np.diff(np.log(e)) / np.diff(np.log(h))
    ci_low, ci_high = slope - half, slope + half
    return OrderFit(order=slope, low=min(ci_low - truncation, float(local.min())),
                    high=max(ci_high + truncation, float(local.max())), ci_low=ci_low, ci_high=ci_high,
                    stderr=stderr_p, truncation=truncation, confidence=confidence, steps=h, errors=e,
                    local_slopes=local, dropped=dropped, drop_reasons=drop_reasons)


def _round_off_plateau(h: np.ndarray, e: np.ndarray, resolution: float) -> int:
    """How many of the finest points (h ascending) lie on a round-off plateau (see the module docstring)."""
    if len(h) < 4:
        return 0
    local = np.diff(np.log(e)) / np.diff(np.log(h))
    coarse = float(np.median(local[len(local) // 2:]))
    if coarse <= 0:
        return 0
    threshold = max(1.0, coarse / 2)
    count = 0
    while count < len(local) - 2 and local[count] < threshold and e[count] < 1e3 * resolution:
        count += 1
    return count


def _design(h: np.ndarray, corrections: int) -> np.ndarray:
    """The regressors (1, log h, h, ..., h^corrections) of the error model, one row per step size."""
    return np.stack([np.ones_like(h), np.log(h)] + [h**j for j in range(1, corrections + 1)], axis=1)


def _regression(h: np.ndarray, e: np.ndarray, corrections: int) -> tuple[float, float, int]:
    """(slope, its standard error, residual degrees of freedom) of log e on (1, log h, h, ..., h^corrections)."""
    design = _design(h, corrections)
    coef, *_ = np.linalg.lstsq(design, np.log(e), rcond=None)
    dof = len(h) - design.shape[1]
    residual = np.log(e) - design @ coef
    scale = float(residual @ residual) / dof
    return float(coef[1]), float(np.sqrt(scale * np.linalg.inv(design.T @ design)[1, 1])), dof


def bootstrap_fit(steps, samples, *, statistic=None, confidence: float = 0.95, resamples: int = 2000,
                  corrections: int = 1, seed: int = 0) -> OrderFit:
    r"""Order of a Monte Carlo error, with a bootstrap interval over trajectories.

    ``samples`` is (len(steps), N): one value per step size and trajectory, the trajectories shared across step
    sizes (coupled runs), e.g. squared strong errors. ``statistic`` maps the per-step means of a resample to errors
    (default: the square root, the RMS of squared errors). The model is that of :func:`fit_order` (``corrections``
    terms of the error expansion); the sampling part of the interval is the percentile interval of the slopes over
    ``resamples`` resamples of whole trajectories, which keeps the correlation that coupling creates between step
    sizes, and the truncation part is the change of the estimate when the last correction term is dropped. Unlike
    :func:`fit_order`, the interval is not widened to the local slopes: with Monte Carlo errors they carry sampling
    noise, which the bootstrap already measures.
    """
    h = np.asarray(steps, dtype=float)
    values = np.asarray(samples, dtype=float)
    if h.ndim != 1 or not (np.all(np.isfinite(h)) and np.all(h > 0)):
        raise ValueError("steps: must be a 1-D array of finite positive step sizes")
    if values.ndim != 2 or values.shape[0] != h.shape[0]:
        raise ValueError(f"samples: expected shape ({h.shape[0]}, N), got {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("samples: contain NaN or inf (a diverged run?)")
    if len(h) < corrections + 3:
        raise ValueError(f"steps: need at least {corrections + 3} step sizes for {corrections} correction terms")
    statistic = np.sqrt if statistic is None else statistic
    order = np.argsort(h)
    h, values = h[order], values[order]

    def slope(means: np.ndarray, k: int = corrections) -> float:
        coef, *_ = np.linalg.lstsq(_design(h, k), np.log(statistic(means)), rcond=None)
        return float(coef[1])

    means = values.mean(axis=1)
    errors = statistic(means)
    estimate = slope(means)
    truncation = abs(estimate - slope(means, corrections - 1)) if corrections > 0 else 0.0
    rng = np.random.default_rng(seed)
    n = values.shape[1]
    boot = np.array([slope(values[:, rng.integers(0, n, n)].mean(axis=1)) for _ in range(resamples)])
    ci_low, ci_high = (float(v) for v in np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2]))
    local = np.diff(np.log(errors)) / np.diff(np.log(h))
    return OrderFit(order=estimate, low=ci_low - truncation, high=ci_high + truncation, ci_low=ci_low,
                    ci_high=ci_high, stderr=float(boot.std(ddof=1)), truncation=truncation, confidence=confidence,
                    steps=h, errors=errors, local_slopes=local, dropped=(), interval="bootstrap interval")
