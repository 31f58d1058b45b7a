"""k-diffusion's samplers on our analytic problems: the loader, the name map's k-diffusion rows, and their orders.

k-diffusion is optional: without its sampling module (``pip install --no-deps k-diffusion==0.1.1.post1`` and
``pip install torchsde torchdiffeq``) the module is skipped. Agreement is checked state by state on uniform-lambda
grids from the same exact x_T, stochastic samplers with the same IIDNoise normals (see sdetoolkit.interop.kdiffusion);
both sides are float64 throughout, so the limit is 1e-12 relative. Orders are fitted as in tests/test_solver_orders.py
(32..128 steps against the exact Gaussian flow), and each expected order is that of the equivalent solver of ours,
including the recorded findings.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.interop import kdiffusion, names
from sdetoolkit.noise import BrownianPath, IIDNoise
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.studies import fit_order, ode_order
from sdetoolkit.studies.convergence import reference

if not kdiffusion.available():
    pytest.skip(f"k-diffusion's sampling module is not installed ({kdiffusion.INSTALL})", allow_module_level=True)

STEPS = [32, 48, 64, 96, 128]
K_ROWS = [entry for entry in names.NAME_MAP if entry.kdiffusion is not None]


def row_id(entry) -> str:
    return f"{entry.k_label}-vs-{entry.label}"


def test_loader_does_not_run_the_package():
    """sampling.py runs in the synthetic package; k_diffusion/__init__ (clip, wandb, torchvision) never runs."""
    module = kdiffusion.load_sampling()
    assert module.__name__ == f"{kdiffusion.PACKAGE}.sampling"
    assert "k_diffusion" not in sys.modules
    assert set(kdiffusion.sampler_names()) >= {"euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms",
                                               "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde",
                                               "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde"}


@pytest.mark.parametrize("source", ["from . import utils\nutils.append_dims\nutils.load_safetensors\n",
                                    "from . import layers\n"])
def test_loader_refuses_what_it_does_not_provide(source, tmp_path):
    path = tmp_path / "sampling.py"
    path.write_text(source)
    with pytest.raises(ImportError, match="does not provide"):
        kdiffusion.check_sampling_source(path)


def test_append_dims():
    x = torch.arange(3.0)
    assert kdiffusion.append_dims(x, 3).shape == (3, 1, 1)
    with pytest.raises(ValueError, match="target_dims"):
        kdiffusion.append_dims(torch.zeros(2, 2), 1)


@pytest.mark.parametrize("problem_name", ["gauss-1d", "gmm-1d-bimodal"])
@pytest.mark.parametrize("entry", K_ROWS, ids=row_id)
def test_name_map_row_agrees_with_k_diffusion(entry, problem_name):
    """Every state of the k-diffusion run equals ours (same grid, x_T and normals) to 1e-12 relative."""
    check = names.check_kdiffusion(entry, get_problem(problem_name))
    first = check.agreement.first_divergence
    where = None if first is None else float(check.times[first])
    assert check.agreement.agrees, f"{row_id(entry)} on {problem_name}: {check.agreement} (time {where})"


@pytest.mark.parametrize("problem_name", ["gauss-1d", "gmm-1d-bimodal"])
@pytest.mark.parametrize("entry", names.NEAR_MISSES, ids=row_id)
def test_near_miss_diverges_where_recorded(entry, problem_name):
    """Look-alike pairs differ, and first at the recorded state: everything before it agrees to 1e-12."""
    check = names.check_kdiffusion(entry, get_problem(problem_name))
    first = check.agreement.first_divergence
    assert first == entry.diverges_at, f"{row_id(entry)} on {problem_name}: {check.agreement}"
    assert f"diverges at state {first}" in str(check.agreement)


def test_stochastic_samplers_need_a_noise_source_and_churn_is_refused():
    problem = get_problem("gauss-1d")
    grid = make_grid("uniform-lambda", problem.schedule, 4, problem.t_min, problem.t_max)
    x_T = problem.prior().sample(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="noise"):
        kdiffusion.run_kdiffusion("dpmpp_2m_sde", problem.model(), grid, x_T)
    with pytest.raises(ValueError, match="s_churn"):
        kdiffusion.run_kdiffusion("euler", problem.model(), grid, x_T, s_churn=1.0)
    with pytest.raises(ValueError, match="not options"):
        kdiffusion.run_kdiffusion("euler", problem.model(), grid, x_T, eta=1.0)


def test_as_a_solver_inside_sample():
    """KDiffusionSampler runs through sample() with the run's noise source: sample_euler_ancestral with IIDNoise
    is our ddim-eta with the same source."""
    problem = get_problem("gmm-1d-bimodal")
    grid = make_grid("uniform-lambda", problem.schedule, 10, problem.t_min, problem.t_max)
    x_T = problem.prior().sample(8, torch.Generator().manual_seed(1))
    solver = kdiffusion.KDiffusionSampler("euler_ancestral")
    assert solver.stochastic and not solver.linear
    theirs = sample(solver, problem.model(), grid, x_T, IIDNoise(5), return_trajectory=True).trajectory
    ours = sample(get_solver("ddim-eta"), problem.model(), grid, x_T, IIDNoise(5), return_trajectory=True).trajectory
    assert kdiffusion.agreement(ours, theirs, names.EXACT).agrees


def test_brownian_noise_is_consistent_across_grids():
    """On one BrownianPath (covering both grids, dpmpp_sde's stage times included) a run on the coarse grid is
    coupled to the run on its refinement: their difference is far below that of independent noise."""
    problem = kdiffusion.on_sigma_schedule(get_problem("gauss-1d"))
    solver = kdiffusion.KDiffusionSampler("dpmpp_sde")
    fine = make_grid("uniform-lambda", problem.schedule, 64, problem.t_min, problem.t_max)
    coarse = fine[::2]
    path = BrownianPath.covering(solver, problem.model(), [fine, coarse], seed=3)
    x_T = problem.prior().sample(400, torch.Generator().manual_seed(2))
    coupled = sample(solver, problem.model(), coarse, x_T, path) - sample(solver, problem.model(), fine, x_T, path)
    other = BrownianPath(path.times, seed=4)
    independent = sample(solver, problem.model(), coarse, x_T, other) - sample(solver, problem.model(), fine, x_T, path)
    assert float(coupled.pow(2).mean()) < 0.05 * float(independent.pow(2).mean())


# -- orders ----------------------------------------------------------------------------------------------------------
ODE_ORDERS = [
    ("euler", {}, 1), ("heun", {}, 2), ("dpm_2", {}, 2), ("lms", {}, 4), ("dpmpp_2m", {}, 2),
    ("euler_ancestral", dict(eta=0.0), 1), ("dpm_2_ancestral", dict(eta=0.0), 2),
    ("dpmpp_2s_ancestral", dict(eta=0.0), 2), ("dpmpp_sde", dict(eta=0.0), 2), ("dpmpp_2m_sde", dict(eta=0.0), 2),
    # dpmpp_3m_sde with eta = 0 is our dpmpp-3m (official 3M): order 2, not 3 (sdetoolkit.findings.DPMPP_3M).
    ("dpmpp_3m_sde", dict(eta=0.0), 2),
]


@pytest.mark.parametrize(("sampler", "options", "expected"), ODE_ORDERS,
                         ids=[f"{s}{o or ''}" for s, o, _ in ODE_ORDERS])
def test_ode_order_on_gauss_1d(sampler, options, expected):
    study = ode_order(kdiffusion.KDiffusionSampler(sampler, **options), get_problem("gauss-1d"), STEPS, n_samples=32)
    fit = study.fits["rms"]
    assert fit.contains(expected), f"sample_{sampler}({options}): expected {expected}, {fit}"
    if sampler == "dpmpp_3m_sde":
        assert not fit.contains(3), f"the 3M's missing factor 2 should cost an order: {fit}"


def dpm_fast_fit(nfes):
    problem = get_problem("gauss-1d")
    ref = reference(problem, 32, 0)
    errors = [float((kdiffusion.run_dpm_fast(problem.model(), problem.t_max, problem.t_min, nfe, ref.x_T).x
                     - ref.x_min).pow(2).mean().sqrt()) for nfe in nfes]
    return fit_order(1.0 / np.asarray(nfes, dtype=float), np.asarray(errors))


def test_dpm_fast_is_third_order_when_its_last_step_is_second_order():
    """DPM-Solver-fast with NFE = 3k + 2: k third-order steps and a second-order one; error O(NFE^-3)."""
    fit = dpm_fast_fit([3 * k + 2 for k in (32, 48, 64, 96, 128)])
    assert fit.contains(3), str(fit)


@pytest.mark.slow
def test_dpm_fast_is_second_order_when_its_last_step_is_first_order():
    """With NFE = 3k the last two steps have orders 2 and 1: the first-order step's local O(h^2) error makes the
    method second order. Below about 150 NFE on gauss-1d the O(h^3) error of the third-order steps, of the other
    sign, still cancels part of it (the error changes sign between 96 and 192 NFE), so the window starts above."""
    fit = dpm_fast_fit([3 * k for k in (128, 192, 256, 384, 512)])
    assert fit.contains(2) and not fit.contains(3), str(fit)


def test_dpm_adaptive_converges_to_the_flow():
    """The adaptive solver's error follows its tolerance: within 10x rtol of the exact flow, and smaller at tighter
    tolerances (its agreement with our dpm-solver-3 on the accepted steps is a name-map row)."""
    problem = get_problem("gmm-1d-bimodal")
    ref = reference(problem, 16, 0)
    errors = []
    for rtol in (1e-2, 1e-4, 1e-6):
        run = kdiffusion.run_dpm_adaptive(problem.model(), problem.t_max, problem.t_min, ref.x_T, rtol=rtol, atol=rtol)
        errors.append(float((run.x - ref.x_min).abs().max()))
        assert errors[-1] < 10 * rtol, f"rtol {rtol}: error {errors[-1]:.3g}"
        assert run.info["n_accept"] == len(run.times) - 1
    assert errors[0] > errors[1] > errors[2]
