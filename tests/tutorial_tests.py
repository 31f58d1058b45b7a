"""Rate, limit, an identity and reproducibility of the exponential leapfrog (docs/tutorial-new-solver.md)."""

import pytest
from my_solver import ExpLeapfrog

from sdetoolkit.testing import assert_converges_to_truth, assert_deterministic, assert_order, assert_reduces_to


@pytest.mark.parametrize("sdetoolkit_problem", ["gauss-1d", "gmm-1d-bimodal"], indirect=True)
def test_rate(sdetoolkit_problem):
    assert_order(ExpLeapfrog(), 2, problems=[sdetoolkit_problem])


def test_limit(gauss_1d):
    assert_converges_to_truth(ExpLeapfrog(), gauss_1d)


def test_one_step_is_ddim():
    assert_reduces_to(ExpLeapfrog(), "ddim", steps=(1,))


def test_reproducible(solver_factory):
    assert_deterministic(solver_factory("exp-leapfrog"))


def test_the_rate_needs_steps_that_vary_smoothly_in_lambda():
    with pytest.raises(AssertionError, match="expected 2 lies outside"):
        assert_order(ExpLeapfrog(), 2, grid="uniform-t")
