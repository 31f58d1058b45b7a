"""Exact output laws of linear solvers: agreement with an independent affine reconstruction and with Monte Carlo,
closed-form distances against their general formulas, the weak order from exact W2, refusal of nonlinear solvers."""

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from sdetoolkit import get_problem, make_grid
from sdetoolkit.exact import GaussianLaw, NonlinearSolverError, gaussian_law, propagate, weak_errors
from sdetoolkit.noise import IIDNoise
from sdetoolkit.solvers import get_solver, list_solvers, sample
from sdetoolkit.solvers.base import Claim, Solver
from sdetoolkit.studies.order import fit_order

STOCHASTIC_LINEAR = [n for n in list_solvers() if get_solver(n).stochastic and get_solver(n).linear]


@pytest.mark.parametrize("name", ["ddim", "dpmpp-2m", "unipc-bh2-p3", "edm-heun", "rk4-lambda"])
def test_law_matches_an_affine_reconstruction_in_the_original_basis(name):
    """Run the solver on the real model from m_T and m_T + columns of a square root of V_T: A V_T A^T exactly."""
    problem = get_problem("gauss-full-d16")
    grid = make_grid("uniform-lambda", problem.schedule, 7, problem.t_min, problem.t_max)
    solver = get_solver(name)
    law = propagate(solver, problem.distribution, problem.schedule, grid)
    prior = problem.prior()
    root = torch.linalg.cholesky(prior.cov)
    starts = torch.cat([prior.loc[None], prior.loc[None] + root.T])
    out = sample(solver, problem.model(), grid, starts)
    columns = out[1:] - out[0]
    cov = columns.T @ columns
    assert torch.allclose(law.mean, out[0], rtol=0, atol=1e-11 * float(out[0].abs().max()))
    assert torch.allclose(law.cov, cov, rtol=0, atol=1e-10 * float(cov.abs().max()))


@pytest.mark.parametrize("name", STOCHASTIC_LINEAR)
def test_stochastic_law_matches_monte_carlo(name):
    """Sample mean and variance of 20000 seeded runs against the exact law, by z-scores per coordinate."""
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 6, problem.t_min, problem.t_max)
    solver = get_solver(name)
    law = propagate(solver, problem.distribution, problem.schedule, grid)
    n = 20000
    x = sample(solver, problem.model(), grid, problem.prior().sample(n, torch.Generator().manual_seed(1)),
               IIDNoise(1))
    mean, var = x.mean(0), x.var(0)
    assert float(((mean - law.mean) / (law.variances / n).sqrt()).abs().max()) < 4.5
    assert float(((var - law.variances) / (law.variances * math.sqrt(2 / n))).abs().max()) < 4.5


def test_w2_and_kl_match_the_general_formulas():
    generator = np.random.default_rng(0)
    basis = torch.as_tensor(linalg.qr(generator.standard_normal((5, 5)))[0])
    a = GaussianLaw(torch.as_tensor(generator.standard_normal(5)), torch.as_tensor(generator.uniform(0.1, 2, 5)), basis)
    b = GaussianLaw(torch.as_tensor(generator.standard_normal(5)), torch.as_tensor(generator.uniform(0.1, 2, 5)), basis)
    ca, cb = a.cov.numpy(), b.cov.numpy()
    root = linalg.sqrtm(ca)
    bures = np.trace(ca + cb - 2 * linalg.sqrtm(root @ cb @ root)).real
    w2 = math.sqrt(float(((a.mean - b.mean) ** 2).sum()) + bures)
    assert a.w2(b) == pytest.approx(w2, rel=1e-10)
    kl = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(a.mean, a.cov),
                                           torch.distributions.MultivariateNormal(b.mean, b.cov))
    assert a.kl(b) == pytest.approx(float(kl), rel=1e-10)
    assert a.w2(a) == 0.0 and a.kl(a) == 0.0


@pytest.mark.parametrize(("name", "order"), [("ddim", 1), ("dpmpp-2m", 2)])
def test_weak_order_from_exact_w2(name, order):
    """W2 to the exact marginal at t_min decays at the solver's order on gauss-aniso-d64 (CI rule)."""
    problem = get_problem("gauss-aniso-d64")
    table = weak_errors(get_solver(name), problem, [16, 24, 32, 48, 64, 96, 128, 192])
    fit = fit_order(1.0 / table.steps.to_numpy(), table.w2_marginal.to_numpy())
    assert fit.contains(order), fit


def test_exact_moments_are_fast_on_d1024():
    """The reduction to scalar recursions: gauss-diag-d1024, 8 step counts, one batched run per part."""
    problem = get_problem("gauss-diag-d1024")
    table = weak_errors(get_solver("dpmpp-2m"), problem, [8, 12, 16, 24, 32, 48, 64, 96], grid="edm")
    assert len(table) == 8 and bool(np.isfinite(table.w2_marginal).all())


class _NormScaled(Solver):
    """A test-only step whose size depends on the norm of x (like the Langevin corrector): not affine."""

    name = "test-norm-scaled"
    family = "test"
    parameterisation = "x0"
    claim = Claim(None, "none", "test")
    register = False

    def step(self, state):
        x0 = state.current()
        scale = state.x.norm(dim=1, keepdim=True) / (1 + state.x.norm(dim=1, keepdim=True))
        return state.x + scale * (x0 - state.x) * 0.1


def test_nonlinear_solvers_are_refused():
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 4, problem.t_min, problem.t_max)
    with pytest.raises(NonlinearSolverError, match="superposition"):
        propagate(_NormScaled(), problem.distribution, problem.schedule, grid)

    class Declared(_NormScaled):
        linear = False

    with pytest.raises(NonlinearSolverError, match="not affine"):
        propagate(Declared(), problem.distribution, problem.schedule, grid)


def test_mixtures_are_refused():
    with pytest.raises(ValueError, match="distribution: exact moments need a Gaussian"):
        gaussian_law(get_problem("gmm-1d-bimodal").distribution)
