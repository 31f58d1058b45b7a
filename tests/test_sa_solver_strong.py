r"""SA-Solver's strong error is set by where its tau(t) window meets the grid.

The official :math:`\tau(t) = \mathbb 1[0.2 \le t \le 0.8]` (``scxue/SA-Solver``, ``sa_solver.py``,
``sample_few_steps``) is read at each step's end, so a run is noisy exactly on the steps that end inside the window:
the edges snap to grid points. A coarse run and its fine reference then solve SDEs whose windows differ by up to a
step, and the reference's Brownian increments over the difference are missing from the coarse path.

On gauss-1d the reverse SDE with :math:`\tau = 1` is the exact time reversal, so in standardised coordinates
:math:`y = (x - m_t)/\sqrt{v_t}` it maps :math:`y_b \mapsto \rho\,y_b + \sqrt{1 - \rho^2}\,z` from b down to a,
with :math:`\rho = (\alpha_b/\alpha_a)\sqrt{v_a/v_b}` the forward correlation of :math:`x_a, x_b`, while the PF-ODE
keeps y fixed. A stretch [a, b] noisy in one run and not in the other therefore leaves the RMS difference
:math:`\sqrt{v_{t_{min}}\,2(1 - \rho)}` at :math:`t_{min}`, of order :math:`\sqrt{b - a}` (strong order 1/2), and
nothing once the grid holds the reference's edge.
"""

import math

import pytest
import torch

from sdetoolkit import get_problem
from sdetoolkit.grids import make_grid
from sdetoolkit.solvers import get_solver
from sdetoolkit.studies.strong import strong_order

PROBLEM = get_problem("gauss-1d")


def variance(t: float) -> float:
    """Marginal variance of gauss-1d at time t."""
    return float(PROBLEM.distribution.noised(PROBLEM.schedule, t).covariance())


def correlation(a: float, b: float) -> float:
    """Corr(x_a, x_b) under the forward process, a < b: the reverse SDE's rho in standardised coordinates."""
    alpha = PROBLEM.schedule.alpha(torch.tensor([a, b], dtype=torch.float64)).tolist()
    return alpha[1] / alpha[0] * math.sqrt(variance(a) / variance(b))


def noisy_stretch(solver, grid) -> tuple[float, float]:
    """(top, bottom) times of the steps that carry noise: those ending inside the window, the final step excepted."""
    t = grid.tolist()
    noisy = [i for i in range(len(t) - 2) if solver.tau_at(t[i + 1]) > 0]
    return t[noisy[0]], t[noisy[-1] + 1]


def mismatch_error(solver, grid, reference) -> float:
    """RMS error at t_min from the windows' disagreement alone (edges only ever move down as the grid refines)."""
    (top, bottom), (top_ref, bottom_ref) = noisy_stretch(solver, grid), noisy_stretch(solver, reference)
    lower = 2 * (1 - correlation(bottom_ref, bottom))
    upper = 2 * (1 - correlation(top_ref, top)) * correlation(bottom_ref, top_ref) ** 2
    return math.sqrt(variance(PROBLEM.t_min) * (lower + upper))


def test_error_jumps_where_the_grid_first_holds_the_reference_window():
    """Default sa-solver, 32..256 steps against 1024: the errors follow the window mismatch, and at 256 steps, whose
    grid holds the reference's lower edge (t = 0.20002, 0.4% of a step above 0.2), the mismatch and the error vanish.
    """
    solver = get_solver("sa-solver")
    steps = [32, 64, 128, 256]
    study = strong_order(solver, PROBLEM, steps, levels=2, n_samples=200, seed=0)
    reference = make_grid("uniform-lambda", PROBLEM.schedule, 1024, PROBLEM.t_min, PROBLEM.t_max)
    predicted = [mismatch_error(solver, reference[:: 1024 // n], reference) for n in steps]
    error, stderr = study.table.strong_error.to_numpy(), study.table.standard_error.to_numpy()
    assert min(predicted[:3]) > 0 and predicted[3] == 0, predicted
    # 5 standard errors (about 25% here) cover the Monte Carlo spread; the prediction leaves out the solver's own
    # O(h) error, under 1% of these errors in quadrature.
    for n, e, se, p in zip(steps[:3], error, stderr, predicted, strict=False):
        assert abs(e - p) < 5 * se, (n, e, p)
    # The jump: once the window matches, only the solver's own O(h) error is left (about 2e-3), far below 128's.
    assert error[3] < 0.1 * error[2], error


def test_window_on_the_coarsest_grid_restores_strong_order_one():
    """Edges placed just inside points of the coarsest grid snap to those points on every nested grid: no
    mismatch, and the strong order is 1 (as sa-solver-sde, which has no window)."""
    steps = [16, 32, 64, 128]
    coarse = make_grid("uniform-lambda", PROBLEM.schedule, steps[0], PROBLEM.t_min, PROBLEM.t_max).tolist()
    top = min(t for t in coarse if t > 0.8)
    bottom = min(t for t in coarse if t > 0.2)
    solver = get_solver("sa-solver", tau_t_min=math.nextafter(bottom, 0.0), tau_t_max=math.nextafter(top, 0.0))
    study = strong_order(solver, PROBLEM, steps, levels=2, n_samples=200, seed=0)
    reference = make_grid("uniform-lambda", PROBLEM.schedule, 512, PROBLEM.t_min, PROBLEM.t_max)
    assert all(mismatch_error(solver, reference[:: 512 // n], reference) == 0 for n in steps)
    assert study.fit.contains(1.0) and not study.fit.contains(0.5), study.fit


@pytest.mark.parametrize("name", ["sa-solver-p2c2", "sa-solver-pece"])
def test_variants_share_the_window_mismatch(name):
    """The window, not the predictor/corrector orders or PC mode, sets the error: other variants with the default
    window follow the same prediction at 64 steps (5 standard errors, as above)."""
    solver = get_solver(name)
    study = strong_order(solver, PROBLEM, [64, 128, 256, 512], levels=1, n_samples=200, seed=1)
    reference = make_grid("uniform-lambda", PROBLEM.schedule, 1024, PROBLEM.t_min, PROBLEM.t_max)
    predicted = mismatch_error(solver, reference[:: 1024 // 64], reference)
    error, stderr = study.table.strong_error.iloc[0], study.table.standard_error.iloc[0]
    assert abs(error - predicted) < 5 * stderr, (error, predicted)
