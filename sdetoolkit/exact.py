r"""Exact output law of a linear solver on Gaussian data: no sampling.

On Gaussian data the denoiser is affine in x, so a solver whose step is affine in x, the model outputs and the noise
(``Solver.linear``) maps the exact Gaussian prior :math:`x_T \sim \mathcal N(m_T, V_T)` to
:math:`x = A x_T + \sum_k B_k z_k + c` with standard normal draws :math:`z_k`: an exact Gaussian,
:math:`\mathcal N(A m_T + c,\; A V_T A^\top + \sum_k B_k B_k^\top)`.

The noise is isotropic, so in the eigenbasis of the data covariance every coordinate is an independent scalar
recursion and :math:`A, B_k` are diagonal. :func:`propagate` reads them off the solver's own code on probe inputs, in
one batched run per part:

* the mean: the solver run on the real model from :math:`m_T` with zero noise;
* the linear part: the solver run on the centred model (same covariance, zero mean: the homogeneous part of the
  affine denoiser) from :math:`\sqrt{V_T}` (row 0) and from zero with a unit value of the k-th scalar normal draw
  (row 1 + k), so no difference of large numbers is ever formed.

A model with a controlled error (:class:`~sdetoolkit.models.ScoreError`) keeps this structure: its bias
:math:`b(t)u` is a constant of the affine denoiser (it goes to the mean run), and its random part :math:`n(t)\xi_j`, a
fresh :math:`\xi_j \sim \mathcal N(0, I)` at evaluation j, is one more set of standard normal draws, isotropic and
so independent per coordinate in the eigenbasis too; each gets a probe row like the solver's noise.

A superposition check on random inputs and noise then refuses any solver that is not affine after all, with the size
of the residual, rather than return a wrong "exact" law. Distances to the truth are closed forms: the 2-Wasserstein
(Bures) distance and the KL divergence between Gaussians with a common eigenbasis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd
import torch

from .distributions import Gaussian, eigen_covariance
from .grids import make_grid
from .models import AnalyticModel, ScoreError
from .noise import NoiseSource, step_factor
from .solvers.base import Solver, sample

SUPERPOSITION_TOLERANCE = 1e-9
"""Largest relative superposition residual accepted as round-off."""


class NonlinearSolverError(ValueError):
    """The solver's output is not affine in its input and noise: its output law is not exactly Gaussian."""


@dataclass(frozen=True)
class GaussianLaw:
    """A Gaussian given in an orthonormal eigenbasis: mean and per-direction variances (float64)."""

    mean: torch.Tensor
    variances: torch.Tensor
    basis: torch.Tensor | None

    @property
    def cov(self) -> torch.Tensor:
        return eigen_covariance(self.variances, self.basis)

    def _rotated_mean(self) -> torch.Tensor:
        return self.mean if self.basis is None else self.basis.T @ self.mean

    def w2(self, other: GaussianLaw) -> float:
        r"""Bures–Wasserstein distance, :math:`W_2^2 = \|m - m'\|^2 + \sum_i (\sqrt{v_i} - \sqrt{v'_i})^2`.

        The square-root difference is :math:`(v - v')/(\sqrt v + \sqrt{v'})`, free of cancellation.
        """
        _same_basis(self, other)
        root_sum = self.variances.sqrt() + other.variances.sqrt()
        spread = torch.where(root_sum > 0, (self.variances - other.variances) / root_sum, torch.zeros_like(root_sum))
        return float(((self.mean - other.mean).square().sum() + spread.square().sum()).sqrt())

    def kl(self, other: GaussianLaw) -> float:
        r""":math:`\mathrm{KL}(\mathcal N(m, V)\,\|\,\mathcal N(m', V'))
        = \tfrac12\sum_i [r_i - \log(1 + r_i) + (m_i - m'_i)^2/v'_i]`, :math:`r_i = (v_i - v'_i)/v'_i`."""
        _same_basis(self, other)
        if bool((other.variances <= 0).any()):
            return float("inf")
        ratio = (self.variances - other.variances) / other.variances
        shift = (self._rotated_mean() - other._rotated_mean()).square() / other.variances
        return float(0.5 * (ratio - torch.log1p(ratio) + shift).sum())


def _same_basis(a: GaussianLaw, b: GaussianLaw) -> None:
    if (a.basis is None) != (b.basis is None) or (a.basis is not None and not torch.equal(a.basis, b.basis)):
        raise ValueError("other: the two laws must share their eigenbasis")


def gaussian_law(distribution: Gaussian) -> GaussianLaw:
    """The :class:`GaussianLaw` of a (single-component) Gaussian."""
    if distribution.n_components != 1:
        raise ValueError(f"distribution: exact moments need a Gaussian, got {distribution.n_components} components")
    basis = None if distribution.basis is None else distribution.basis[0]
    return GaussianLaw(distribution.means[0], distribution.eigvals[0], basis)


class _Probe(NoiseSource):
    """Noise that is zero except a unit value of the k-th scalar normal draw in row ``offset + k``.

    With ``weights`` the k-th draw is instead ``weights[k]`` in every row (the superposition check). With neither
    it only counts draws.
    """

    def __init__(self, offset: int | None = None, weights: torch.Tensor | None = None):
        super().__init__(0)
        self.offset, self.weights, self.count = offset, weights, 0

    def _units(self, m: int, like: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(m, *like.shape, dtype=like.dtype, device=like.device)
        for j in range(m):
            k = self.count + j
            if self.weights is not None:
                z[j] = self.weights[k]
            elif self.offset is not None:
                z[j, self.offset + k] = 1.0
        self.count += m
        return z

    def normal(self, t_hi, t_lo, like, copy=0):
        self._check_interval(t_hi, t_lo)
        return self._units(1, like)[0]

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        kernels = tuple(kernels)
        factor = step_factor(kernels, t_lo, t_hi).to(like)
        return tuple(torch.tensordot(factor, self._units(len(kernels), like), dims=1))

    def reset(self) -> None:
        self.count = 0


class _ProbeModel(AnalyticModel):
    """An analytic model whose random error draw at evaluation j is a probe, as :class:`_Probe` does for the solver's
    noise: a unit in row ``offset + j``, or ``weights[j]`` in every row; with neither, zero (the bias stays)."""

    def __init__(self, distribution, schedule, error, offset: int | None = None, weights: torch.Tensor | None = None):
        super().__init__(distribution, schedule, error)
        self.offset, self.weights = offset, weights

    def _error_noise(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(x)
        if self.weights is not None:
            z[:] = self.weights[self.nfe]
        elif self.offset is not None:
            z[self.offset + self.nfe] = 1.0
        return z


def propagate(solver: Solver, distribution: Gaussian, schedule, grid, *, check: bool = True,
              error: ScoreError | None = None) -> GaussianLaw:
    """The exact law of ``solver``'s output over ``grid`` (decreasing times) from the exact Gaussian prior, with the
    exact model or one with a controlled ``error`` (its bias direction and magnitudes; the random draws are
    integrated out exactly).

    Raises :class:`NonlinearSolverError` for a solver that declares itself nonlinear or fails the superposition check.
    """
    if not solver.linear:
        raise NonlinearSolverError(f"solver: {solver.name!r} is not affine in x and its noise (its step depends on "
                                   "x nonlinearly); use a Monte Carlo study")
    truth = gaussian_law(distribution)
    rotated = Gaussian(truth._rotated_mean(), truth.variances)
    centred = Gaussian(torch.zeros_like(truth.mean), truth.variances)
    times = torch.as_tensor(grid, dtype=torch.float64)
    if error is not None and solver.expected_nfe(times) is None:
        raise ValueError(f"error: exact propagation of a model error needs a fixed number of evaluations; "
                         f"{solver.name!r} is adaptive")
    t_max = float(times[0])
    prior = gaussian_law(rotated.noised(schedule, t_max))
    dim = distribution.dim
    in_basis = None
    if error is not None:
        u = AnalyticModel(distribution, schedule, error).error_direction
        in_basis = ScoreError(bias=error.bias, noise=error.noise, seed=error.seed,
                              direction=u if truth.basis is None else truth.basis.T @ u)

    counter = _Probe()
    mean_model = _ProbeModel(rotated, schedule, in_basis)
    mean = sample(solver, mean_model, times, prior.mean[None], counter)[0]
    draws, evaluations = counter.count, mean_model.nfe if error is not None else 0
    start = torch.zeros(1 + draws + evaluations, dim, dtype=torch.float64)
    start[0] = prior.variances.sqrt()
    homogeneous = None if error is None else ScoreError(noise=error.noise, direction=in_basis.direction)
    parts = sample(solver, _ProbeModel(centred, schedule, homogeneous, offset=1 + draws), times, start,
                   _Probe(offset=1))
    variances = parts.square().sum(0)

    if check:
        generator = torch.Generator().manual_seed(0)
        xi = torch.randn(dim, generator=generator, dtype=torch.float64)
        weights = torch.randn(draws + evaluations, generator=generator, dtype=torch.float64)
        x_T = prior.mean + prior.variances.sqrt() * xi
        direct = sample(solver, _ProbeModel(rotated, schedule, in_basis, weights=weights[draws:]), times, x_T[None],
                        _Probe(weights=weights[:draws]))[0]
        predicted = mean + xi * parts[0] + weights @ parts[1:]
        scale = mean.abs().max() + parts.abs().sum(0).max()
        residual = float((direct - predicted).abs().max() / scale)
        if residual > SUPERPOSITION_TOLERANCE:
            raise NonlinearSolverError(f"solver: {solver.name!r} failed the superposition check (relative residual "
                                       f"{residual:.2e} > {SUPERPOSITION_TOLERANCE:g}); its output law is not "
                                       "exactly Gaussian — use a Monte Carlo study")
    basis = truth.basis
    return GaussianLaw(mean if basis is None else basis @ mean, variances, basis)


def weak_errors(solver: Solver, problem, steps: Iterable[int], grid: str = "uniform-lambda", **grid_params
                ) -> pd.DataFrame:
    """Exact W2 and KL of the solver's output law, to the data and to the exact marginal at t_min, per step count.

    ``problem`` is a catalogue Problem with Gaussian data. One row per step count: steps, nfe, w2_data, kl_data,
    w2_marginal, kl_marginal.
    """
    data = gaussian_law(problem.distribution)
    marginal = gaussian_law(problem.target())
    rows = []
    for n in steps:
        times = make_grid(grid, problem.schedule, n, problem.t_min, problem.t_max, **grid_params)
        law = propagate(solver, problem.distribution, problem.schedule, times)
        rows.append(dict(solver=solver.name, problem=problem.name, steps=n, nfe=solver.expected_nfe(times),
                         w2_data=law.w2(data), kl_data=law.kl(data), w2_marginal=law.w2(marginal),
                         kl_marginal=law.kl(marginal)))
    return pd.DataFrame(rows)
