"""The order estimator on synthetic error sequences: known slopes, noise, floors, plateaus and any step ratios."""

import numpy as np
import pytest

from sdetoolkit.studies.order import fit_order

NON_DYADIC = 1.0 / np.array([30, 37, 45, 58, 71, 90, 113])


@pytest.mark.parametrize("p", [1.0, 2.0, 3.5, 4.0])
def test_recovers_the_order_of_an_expansion_with_a_correction_term(p):
    """e = C h^p (1 + D h) on non-dyadic steps: the interval contains p and not p +- 0.1, and the correction term
    removes most of the bias that a pure power law fit has."""
    errors = 0.7 * NON_DYADIC**p * (1 + 3.0 * NON_DYADIC)
    fit = fit_order(NON_DYADIC, errors)
    assert fit.contains(p) and not fit.contains(p + 0.1) and not fit.contains(p - 0.1)
    assert abs(fit.order - p) < 0.2 * abs(fit_order(NON_DYADIC, errors, corrections=0).order - p)
    assert fit.dropped == ()


def test_signed_slope_of_a_growing_error():
    """An error that grows under refinement has a negative fitted order (not an absolute value)."""
    fit = fit_order(NON_DYADIC, 1e-3 * NON_DYADIC**-0.5, corrections=0)
    assert fit.order == pytest.approx(-0.5, abs=1e-9)


def test_regression_interval_covers_at_its_nominal_rate_under_lognormal_noise():
    """e = C h^p exp(0.2 Z): with no correction term the model is exact and the 95% t-interval covers p in about 95%
    of 300 seeded repetitions (Binomial(300, 0.95): mean 285, sd 3.8; bounds at 4 sd below and 15/300 above is
    impossible for a correct interval only with probability 0.4%)."""
    p, covered, wider = 2.0, 0, 0
    for seed in range(300):
        noise = np.exp(0.2 * np.random.default_rng(seed).standard_normal(len(NON_DYADIC)))
        fit = fit_order(NON_DYADIC, NON_DYADIC**p * noise, corrections=0)
        covered += fit.ci_low <= p <= fit.ci_high
        wider += fit.contains(p)
    assert 270 <= covered <= 299
    assert wider >= covered  # the reported interval contains the t-interval


def test_round_off_plateau_is_dropped_and_named():
    """Errors 1e-9 h^2 that stall near 2e-13 (float64 round-off after many steps) on the finest steps: exactly
    those points are dropped as a round-off plateau, and the fit on the rest contains 2."""
    steps = 1.0 / np.array([4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128])
    errors = np.maximum(steps**2 * 1e-9, 2e-13 * np.array([1, 1.3, 0.8, 1.1, 0.9, 1.2, 1.0, 1.05, 0.95, 1.1, 0.9]))
    fit = fit_order(steps, errors)
    assert fit.contains(2.0)
    assert fit.dropped == (1 / 128, 1 / 96) and set(fit.drop_reasons) == {"round-off plateau"}
    assert "round-off plateau" in str(fit)


def test_a_stall_far_above_round_off_is_truncation_error_and_kept():
    """Two error terms of opposite sign crossing make the finest error stall at 1e-7; that is not round-off."""
    steps = 1.0 / np.array([32, 48, 64, 96, 128, 192, 256])
    errors = np.abs(steps**3 - 0.02 * steps**2) + 1e-7
    assert fit_order(steps, errors).dropped == ()


def test_an_order_reduction_is_not_mistaken_for_round_off():
    """Third order on coarse steps and second order on fine ones (local slopes 3 -> 2): nothing is dropped."""
    steps = 1.0 / np.array([8, 16, 32, 64, 128, 256, 512])
    errors = steps**3 + 1e-2 * steps**2
    fit = fit_order(steps, errors, resolution=1.0)
    assert fit.dropped == ()
    assert fit.local_slopes[0] < 2.3 and fit.local_slopes[-1] > 2.7


def test_floor_and_noise_floor_are_dropped_with_their_reasons():
    steps = 1.0 / np.array([16, 32, 64, 128, 256, 512])
    errors = 1e-2 * steps
    stderr = np.array([0, 0, 0, 0, 0, 1e-4])  # the finest error, 2e-5, lies within 2 stderr of zero
    fit = fit_order(steps, errors, stderr=stderr)
    assert dict(zip(fit.dropped, fit.drop_reasons, strict=True)) == {1 / 512: "noise floor"}
    fit = fit_order(steps, errors, floor=float(errors[-2]) * 1.0001)
    assert fit.drop_reasons == ("floor", "floor")
    assert fit.contains(1.0)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="steps, errors"):
        fit_order([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="steps: must be finite and positive"):
        fit_order([0.1, -0.2, 0.3, 0.4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="errors: contain NaN"):
        fit_order([0.1, 0.2, 0.3, 0.4], [1, np.nan, 3, 4])
    with pytest.raises(ValueError, match="stderr: expected the shape"):
        fit_order([0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4], stderr=[1, 2])
    with pytest.raises(ValueError, match=r"need at least 4 points above the floors.*h=0.1 \(floor\)"):
        fit_order([0.1, 0.2, 0.3, 0.4], [1e-9, 2, 3, 4], floor=1e-8)
