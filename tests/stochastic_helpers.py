"""Shared helpers of the classical stochastic solvers' tests: preset noise, problems on other schedules, and a
statistically bounded check of output moments against the exact marginal."""

from __future__ import annotations

import dataclasses
import math

import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import IIDNoise, NoiseSource, gram_factor
from sdetoolkit.schedules import get_schedule
from sdetoolkit.solvers import get_solver, sample

WINDOWS = {"vp-linear": (1e-3, 1.0), "vp-cosine": (1e-3, 0.99), "ve": (1e-3, 1.0), "edm": (0.002, 80.0),
           "flow": (1e-3, 0.99)}


def gauss_1d_on(schedule: str):
    """gauss-1d (N(1, 0.25)) noised by another schedule family, on a window away from its singular ends."""
    t_min, t_max = WINDOWS[schedule]
    return dataclasses.replace(get_problem("gauss-1d"), schedule=get_schedule(schedule), t_min=t_min, t_max=t_max)


def start(problem, n=8, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed))


class FixedNoise(NoiseSource):
    """Preset standard normals handed out in call order, with every request recorded.

    ``normal`` returns the next draw; ``integrals`` over m kernels returns the exact Gram factor of the interval times
    the next m draws (for one kernel: sqrt of the integral of K^2 times the draw), like :class:`IIDNoise`.
    """

    def __init__(self, draws):
        super().__init__(0)
        self.draws = list(draws)
        self.calls: list[tuple] = []
        self.k = 0

    def reset(self):
        self.k = 0
        self.calls = []

    def _next(self, m):
        out = self.draws[self.k:self.k + m]
        if len(out) < m:
            raise IndexError("FixedNoise: ran out of preset draws")
        self.k += m
        return out

    def normal(self, t_hi, t_lo, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        self.calls.append(("normal", t_hi, t_lo))
        return self._next(1)[0].to(like)

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        t_hi, t_lo = self._check_interval(t_hi, t_lo)
        kernels = list(kernels)
        self.calls.append(("integrals", t_hi, t_lo, tuple(None if k is None else k.name for k in kernels)))
        factor = gram_factor(kernels, torch.tensor([t_lo], dtype=torch.float64),
                             torch.tensor([t_hi], dtype=torch.float64))[0].to(like)
        return tuple(torch.tensordot(factor, torch.stack(self._next(len(kernels))).to(like), dims=1))


class CallOrderNoise(NoiseSource):
    """The k-th request gets the k-th seeded normal (kernel integrals: the exact Gram factor of the interval times it,
    as IIDNoise), so runs on different time grids, or a reference implementation that draws in the same order, see
    the same noise."""

    def __init__(self, seed):
        super().__init__(seed)
        self.k = 0

    def reset(self):
        self.k = 0

    def _next(self, like):
        self.k += 1
        return self._normals((7, self.k), 1, like)[0]

    def normal(self, t_hi, t_lo, like, copy=0):
        return self._next(like)

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        factor = gram_factor(list(kernels), torch.tensor([float(t_lo)], dtype=torch.float64),
                             torch.tensor([float(t_hi)], dtype=torch.float64))[0, :, 0].to(like)
        z = self._next(like)
        return tuple(f * z for f in factor)


def karras(sigma_max, sigma_min, n, rho=7.0):
    """n sigmas uniform in sigma^(1/rho) from sigma_max to sigma_min (Karras et al. 2022, eq. 5), written here."""
    return [(sigma_max ** (1 / rho) + k / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
            for k in range(n)]


def gauss_1d_edm():
    """gauss-1d's data on the edm schedule (alpha = 1, sigma = t), the official VE setting."""
    return gauss_1d_on("edm")


def draws(count, shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(count)]


def moment_z_scores(name, problem, steps, n_samples, seed=0, grid="uniform-lambda", **params):
    """z-scores of the sample mean and sample variance of a run from the exact prior, against the exact marginal at
    t_min: (mean - m)/sqrt(v/N) and (var - v)/(v sqrt(2/(N - 1))), the standard errors of a Gaussian sample of size
    N. Each is N(0, 1) up to the discretisation bias, which the callers keep small by their choice of steps."""
    x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed))
    times = make_grid(grid, problem.schedule, steps, problem.t_min, problem.t_max)
    y = sample(get_solver(name, **params), problem.model(), times, x_T, IIDNoise(seed + 1))[:, 0]
    target = problem.target()
    m, v = float(target.mean()[0]), float(target.covariance()[0, 0])
    return (float(y.mean()) - m) / math.sqrt(v / n_samples), (float(y.var()) - v) / (v * math.sqrt(2 / (n_samples - 1)))


def exact_reverse_kernel(problem):
    r"""The kernel :math:`\Phi(t_{min}, u)\,g(u)` of the exact reverse-SDE solution of a 1-d Gaussian problem.

    With the exact score the reverse SDE is linear with additive noise; its solution from t_max to t_min is
    :math:`\alpha_{min}\mu + \Phi(t_{min}, t_{max})(x_T - \alpha_{max}\mu) + \int_{t_{min}}^{t_{max}}
    \Phi(t_{min}, u)\,g(u)\,\mathrm{d}\bar W(u)`, with :math:`\Phi(s, u) = \alpha_u v_s/(\alpha_s v_u)` and
    :math:`v = \alpha^2 c + \sigma^2` (the mean coefficient of ``Gaussian.reverse_sde_transition``).
    """
    from sdetoolkit.noise import Kernel

    s = problem.schedule
    mu, c = float(problem.distribution.mean()[0]), float(problem.distribution.covariance()[0, 0])
    a_min = float(s.alpha(problem.t_min))
    v_min = float(s.alpha(problem.t_min)) ** 2 * c + float(s.sigma(problem.t_min)) ** 2
    return Kernel(f"exact-reverse-solution[{s!r}, mu={mu}, c={c}, t_min={problem.t_min}]",
                  lambda u: s.alpha(u) * v_min / (a_min * (s.alpha(u) ** 2 * c + s.sigma(u) ** 2)) * s.g2(u).sqrt(), s)


def exact_reverse_solution(problem, x_T, path):
    """The exact reverse-SDE solution at t_min from x_T at t_max on ``path`` (which declares exact_reverse_kernel)."""
    s = problem.schedule
    mu, c = float(problem.distribution.mean()[0]), float(problem.distribution.covariance()[0, 0])
    a_min, a_max = float(s.alpha(problem.t_min)), float(s.alpha(problem.t_max))
    v_min, v_max = (float(s.alpha(u)) ** 2 * c + float(s.sigma(u)) ** 2 for u in (problem.t_min, problem.t_max))
    (integral,) = path.integrals(problem.t_max, problem.t_min, (exact_reverse_kernel(problem),), x_T)
    return a_min * mu + (a_max * v_min) / (a_min * v_max) * (x_T - a_max * mu) + integral


def strong_squared_errors(name, problem, steps, n_samples, seed=0, **params):
    """Squared strong errors (len(steps), N) of runs of a 1-d Gaussian problem on nested uniform-lambda grids, all
    driven by one Brownian path, against :func:`exact_reverse_solution` on that path (its integral is drawn jointly
    exactly with every increment the solver uses)."""
    from sdetoolkit.noise import BrownianPath

    solver = get_solver(name, **params)
    grids = [make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max) for n in steps]
    covering = BrownianPath.covering(solver, problem.model(), grids, seed=seed)
    path = BrownianPath(covering.times, seed, kernels=[*covering.kernels[1:], exact_reverse_kernel(problem)])
    x_T = problem.prior().sample(n_samples, torch.Generator().manual_seed(seed))
    exact = exact_reverse_solution(problem, x_T, path)
    return torch.stack([((sample(solver, problem.model(), grid, x_T, path) - exact)[:, 0] ** 2)
                        for grid in grids]).numpy()
