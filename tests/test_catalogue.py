import math

import pytest
import torch

from sdetoolkit import Gaussian, get_problem, list_problems, reference_facts
from sdetoolkit.catalogue import _distribution

REQUIRED = ["gauss-1d", "gauss-aniso-d64", "gauss-full-d16", "gauss-diag-d1024", "gmm-1d-bimodal", "gmm-ring8-2d",
            "gmm-grid25-2d", "gmm-d16-k10", "gmm-d64-k16", "gauss-near-point-d4"]


def test_catalogue_has_the_required_problems():
    assert set(REQUIRED) <= set(list_problems())


@pytest.mark.parametrize("name", list_problems())
def test_documented_facts_match_the_data(name):
    problem = get_problem(name)
    assert problem.description
    computed = reference_facts(problem.distribution)
    assert set(problem.facts) == set(computed)
    for key, value in computed.items():
        assert problem.facts[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("name, facts", [
    ("gauss-aniso-d64", dict(dimension=64, condition_number=1e4)),
    ("gauss-full-d16", dict(dimension=16, condition_number=100.0)),
    ("gauss-diag-d1024", dict(dimension=1024)),
    ("gmm-ring8-2d", dict(n_components=8)),
    ("gmm-grid25-2d", dict(n_components=25, mode_separation=10.0)),
    ("gmm-d16-k10", dict(dimension=16, n_components=10)),
    ("gmm-d64-k16", dict(dimension=64, n_components=16)),
    ("gauss-near-point-d4", dict(smallest_variance=1e-8)),
])
def test_problems_are_what_their_names_say(name, facts):
    computed = reference_facts(get_problem(name).distribution)
    for key, value in facts.items():
        assert computed[key] == pytest.approx(value, rel=1e-9)


def test_full_covariance_is_diagonal_free():
    basis = get_problem("gauss-full-d16").distribution.basis
    assert basis is not None and (basis[0].abs() > 1e-3).sum() > 100


def test_prior_and_target_are_the_exact_marginals():
    problem = get_problem("gmm-ring8-2d")
    x = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for marginal, t in [(problem.prior(), problem.t_max), (problem.target(), problem.t_min)]:
        torch.testing.assert_close(marginal.log_prob(x), problem.distribution.noised(problem.schedule, t).log_prob(x))


def test_explicit_full_covariance_is_kept_whole():
    """A (d, d) matrix written out in a file is a covariance, not a stack of one."""
    gaussian = _distribution(dict(kind="gaussian", mean=[0.0, 0.0], cov=[[1.0, 0.5], [0.5, 2.0]]))
    assert isinstance(gaussian, Gaussian)
    torch.testing.assert_close(gaussian.cov, torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=torch.float64))


def test_unknown_problem():
    with pytest.raises(ValueError, match="name: unknown problem 'gmm-ring9'"):
        get_problem("gmm-ring9")


def test_ring_geometry():
    means = get_problem("gmm-ring8-2d").distribution.means
    torch.testing.assert_close(means.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    angles = torch.atan2(means[:, 1], means[:, 0]).remainder(2 * math.pi)
    torch.testing.assert_close(torch.diff(angles), torch.full((7,), math.pi / 4, dtype=torch.float64))
