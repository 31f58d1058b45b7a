r"""Restart's strong error is set by where its restart interval meets the grid.

The official rule (``Newbeeer/diffusion_restart_sampling``, ``benchmarks/generate_restart.py``,
``restart_sampler``) attaches a restart to the grid point nearest its t_min and builds the inner Karras grid from
that point up to t_max, so a coarse run and its fine reference restart from different t_min:

* their forward jumps integrate the path over [t_min, t_max] for different t_min, and the stretch between the two
  t_min drives one run only: variance :math:`|\tilde\sigma_c^2 - \tilde\sigma_r^2|`, of order h (strong order 1/2,
  piecewise constant, zero once the grid holds the reference's point);
* their inner churn draws :math:`S_{noise}\sqrt{\hat\sigma^2 - \sigma^2}\,z` are single-time draws keyed by the
  inner times, and the Karras middle point moves with t_min, so those draws are independent between the runs: an
  error that no refinement removes.

On gauss-1d every map is affine. In :math:`\tilde x = x/\alpha` the data is :math:`N(m, s^2)`, the marginal at
:math:`\tilde\sigma` has variance :math:`v = s^2 + \tilde\sigma^2`, the exact PF-ODE scales :math:`\tilde x - m` by
:math:`\sqrt{v_b/v_a}`, and an EDM Heun step scales it by
:math:`1 + \tfrac{\Delta}{2}\big(\sigma_a/v_a + (\sigma_b/v_b)(1 + \Delta\,\sigma_a/v_a)\big)`, :math:`\Delta =
\sigma_b - \sigma_a`. Tracking the coefficient of every standard normal through both runs gives the RMS difference.
"""

import itertools
import math

import torch

from sdetoolkit import get_problem
from sdetoolkit.grids import make_grid
from sdetoolkit.solvers import get_solver
from sdetoolkit.solvers.restart import karras_sigmas
from sdetoolkit.studies.strong import strong_order

PROBLEM = get_problem("gauss-1d")
DATA_VARIANCE = float(PROBLEM.distribution.cov)
STEPS = [16, 32, 64, 128]


def sigma(t: float) -> float:
    """sigma/alpha at schedule time t."""
    return float(PROBLEM.schedule.sigma_over_alpha(torch.tensor(t, dtype=torch.float64)))


def var(s: float) -> float:
    return DATA_VARIANCE + s * s


def heun(a: float, b: float) -> float:
    """Factor by which one EDM Heun step from sigma a to b > 0 scales x - m on a Gaussian."""
    euler = 1 + (b - a) * a / var(a)
    return 1 + (b - a) / 2 * (a / var(a) + b / var(b) * euler)


def coefficients(solver, t_own: float, t_other: float) -> dict:
    """Output x - mean of a run attached at t_own, as {normal's name: coefficient}; the other run attaches at t_other.
    Jump normals over the shared stretch and the churn at t_max are shared; the rest is this run's own."""
    ((n, k, _, t_max),) = solver.restarts
    assert solver.s_min <= min(t_own, t_other) and t_max <= solver.s_max  # every inner point churns
    low, high, top = *sorted([sigma(t_own), sigma(t_other)]), sigma(t_max)
    points = karras_sigmas(top, sigma(t_own), n, solver.rho)
    churn = math.sqrt((1 + solver.restart_gamma) ** 2 - 1)
    out = {"prior": math.sqrt(var(points[-1]))}
    for repeat in range(k):
        out[("jump", repeat)] = solver.s_noise * math.sqrt(top**2 - high**2)
        if points[-1] < high:
            out[("stretch", repeat)] = solver.s_noise * math.sqrt(high**2 - low**2)
        for j, (a, b) in enumerate(itertools.pairwise(points)):
            out[("churn", repeat, j, t_own if j else None)] = solver.s_noise * churn * a
            out = {name: c * heun(a * (1 + solver.restart_gamma), b) for name, c in out.items()}
    alpha = float(PROBLEM.schedule.alpha(torch.tensor(PROBLEM.t_min, dtype=torch.float64)))
    main = alpha * math.sqrt(var(sigma(PROBLEM.t_min)) / var(points[-1]))
    return {name: main * c for name, c in out.items()}


def predicted_error(solver, t_coarse: float, t_reference: float) -> float:
    coarse, reference = coefficients(solver, t_coarse, t_reference), coefficients(solver, t_reference, t_coarse)
    return math.sqrt(sum((coarse.get(k, 0.0) - reference.get(k, 0.0)) ** 2 for k in coarse.keys() | reference.keys()))


def attached_time(solver, grid) -> float:
    (index,) = solver.attachments(grid)
    return float(grid[index])


def check_prediction(solver, levels: int):
    """Measured strong errors against the prediction, at each step count; returns the study."""
    study = strong_order(solver, PROBLEM, STEPS, levels=levels, n_samples=200, seed=0)
    n_ref = STEPS[-1] * 2**levels
    reference = make_grid("uniform-lambda", PROBLEM.schedule, n_ref, PROBLEM.t_min, PROBLEM.t_max)
    t_ref = attached_time(solver, reference)
    error, stderr = study.table.strong_error.to_numpy(), study.table.standard_error.to_numpy()
    for n, e, se in zip(STEPS, error, stderr, strict=True):
        t_coarse = attached_time(solver, reference[:: n_ref // n])
        assert t_coarse != t_ref
        # 5 standard errors cover the Monte Carlo spread; the prediction leaves out the main Heun process's O(h^2)
        # error (5e-3 at 16 steps), small in quadrature.
        predicted = predicted_error(solver, t_coarse, t_ref)
        assert abs(e - predicted) < 5 * se, (n, e, predicted)
    return study


def test_flat_error_is_the_unshared_inner_churn():
    """Default Restart: every tested grid attaches at t = 0.0609, the reference at 0.0597; the unshared churn at the
    inner Karras midpoint predicts the flat error (0.18), and the fitted order is 0."""
    solver = get_solver("restart")
    study = check_prediction(solver, levels=2)
    assert study.fit.contains(0.0) and not study.fit.contains(0.5), study.fit


def test_without_churn_only_the_jump_stretch_is_left():
    """restart_gamma = 0: the error falls tenfold, to the jump's unshared stretch alone (0.018), flat while the
    tested grids all attach at the same point."""
    solver = get_solver("restart", restart_gamma=0.0)
    check_prediction(solver, levels=2)


def test_interval_on_the_coarsest_grid_converges_at_order_two():
    """t_min on a point of the coarsest grid: every nested grid attaches there, so the jumps and the inner churn
    are shared and only the main Heun process's error is left: strong order 2 (a reference 16 times finer, so that
    its own error does not steepen the fit)."""
    coarse = make_grid("uniform-lambda", PROBLEM.schedule, STEPS[0], PROBLEM.t_min, PROBLEM.t_max)
    default = get_solver("restart")
    ((n, k, _, t_max),) = default.restarts
    solver = get_solver("restart", restarts=((n, k, attached_time(default, coarse), t_max),))
    study = strong_order(solver, PROBLEM, STEPS, levels=4, n_samples=200, seed=0)
    assert study.fit.contains(2.0) and not study.fit.contains(1.0), study.fit
