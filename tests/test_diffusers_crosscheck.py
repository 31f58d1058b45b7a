"""Cross-checks of the deterministic solvers against diffusers' schedulers (independent code).

Each case drives a diffusers scheduler over its own noise levels with an exact model
(:func:`sdetoolkit.interop.diffusers_driver.run_diffusers_scheduler`), runs our solver on the grid those levels define
(our time t where sigma(t)/alpha(t) = the scheduler's sigma~), and compares every state along the way: the
relative difference of step j is max|ours_j - theirs_j| / max|theirs_j| over the batch.

How the schedules are matched:

* EDM schedulers: the model is on our ``edm`` schedule (alpha = 1, sigma = t), so t = sigma exactly.
* VP schedulers: diffusers builds alphas_cumprod from ``trained_betas``; we pass the betas of our vp-linear schedule at
  t_n = (n + 1)/(N_train + 1), so the scheduler's table *is* the problem's schedule (up to its float32 cumprod, which
  does not matter: our grid is built from the scheduler's own table values). Its sigma~ = sqrt((1 - abar)/abar) maps
  to t by inverting lambda = -log sigma~. The index-affine time keeps PNDM's pseudo-RK4 midpoints (t - 50 in
  timesteps) at the midpoints in t; for PNDM the exact float64 table alpha(t_n)^2 is installed (diffusers would
  round it to float32), so those midpoints agree to rounding.
* DEIS: diffusers' ``logrho`` DEIS interpolates eps by a polynomial in log(sigma~) and integrates it exactly against
  d(sigma~); that is our tAB-DEIS with exact (Gauss) quadrature on a schedule whose time is log(sigma~) (shifted),
  built here.

The scheduler's float tables are cast to float64 (``dtype=torch.float64`` in the driver) after ``set_timesteps``:
their values stay those diffusers computed, and the grid is built from the same values, so only float32 arithmetic
*inside* ``step`` limits the agreement. Each case states its limit and why.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import pytest
import sympy as sp
import torch

diffusers = pytest.importorskip("diffusers")

from sdetoolkit import AnalyticModel, get_problem, get_schedule  # noqa: E402
from sdetoolkit.grids import edm as edm_grid  # noqa: E402
from sdetoolkit.interop.diffusers_driver import (  # noqa: E402
    run_diffusers_scheduler,
    times_for_sigmas,
    vp_trained_betas,
)
from sdetoolkit.schedules import LAMBDA, NoiseSchedule, T  # noqa: E402
from sdetoolkit.solvers import get_solver, sample  # noqa: E402

N_TRAIN = 1000
BATCH = 16
F32 = 2.0**-24
"""Unit roundoff of float32."""

EXACT = 1e-12
"""float64 throughout (tables upcast, no float32 cast in step): the issue's 1e-12, about 1e4 ulps."""


def float32_state_limit(n_steps: int) -> float:
    """DPMSolverMultistep, EulerDiscrete and EDMEuler cast the sample to float32 inside ``step`` ("upcast", a no-op
    for float16 models but a downcast of our float64 state). Each step then rounds the state once (2^-24 relative)
    and the flow carries earlier roundings along without growing them much: 4 n 2^-24 leaves a margin of 4."""
    return 4 * n_steps * F32


LOG_SIGMA_SHIFT = 13.0


def vp_log_sigma_schedule() -> NoiseSchedule:
    r"""VP schedule in the time t = log(sigma~) + 13: alpha = 1/sqrt(1 + e^{2u}), sigma = e^u alpha, u = t - 13,
    lambda = 13 - t; sigma~ from e^-12 to e^8. Polynomials in t are diffusers DEIS's polynomials in log(rho)."""
    u = T - LOG_SIGMA_SHIFT
    alpha = 1 / sp.sqrt(1 + sp.exp(2 * u))
    return NoiseSchedule("vp-log-sigma", alpha, sp.exp(u) * alpha, (1.0, 21.0), t_of_lambda=LOG_SIGMA_SHIFT - LAMBDA)


def table_times() -> torch.Tensor:
    """t_n = (n + 1)/(N_train + 1): the times of our schedule the scheduler's alphas_cumprod[n] stands for."""
    return torch.arange(1, N_TRAIN + 1, dtype=torch.float64) / (N_TRAIN + 1)


@dataclass(frozen=True)
class Case:
    """One comparison: a scheduler configuration and the solver that should reproduce it."""

    scheduler: str
    config: dict
    steps: int
    solver: str
    params: dict = field(default_factory=dict)
    schedule: str = "vp"
    limit: float = EXACT
    why: str = "float64 throughout"
    stride: int = 1
    tail: int = 0
    exact_table: bool = False
    begin_index: int | None = None
    grid_f64: bool = False

    @property
    def id(self) -> str:
        config = ",".join(f"{k}={v}" for k, v in self.config.items())
        return f"{self.scheduler}[{config}]-N{self.steps}-vs-{self.solver}"


@functools.cache
def problem_named(name: str):
    return get_problem(name)


@functools.cache
def schedule_for(kind: str, problem_name: str) -> NoiseSchedule:
    if kind == "edm":
        return get_schedule("edm", sigma_max=80.0)
    if kind == "log-sigma":
        return vp_log_sigma_schedule()
    return problem_named(problem_name).schedule


@functools.cache
def trained_betas(problem_name: str):
    return vp_trained_betas(problem_named(problem_name).schedule, table_times()).numpy()


def make_scheduler(case: Case, problem):
    cls = getattr(diffusers, case.scheduler)
    config = dict(case.config)
    if case.schedule != "edm" and case.scheduler != "IPNDMScheduler":
        config["trained_betas"] = trained_betas(problem.name)
        config["num_train_timesteps"] = N_TRAIN
    scheduler = cls(**config)
    if case.exact_table:
        scheduler.alphas_cumprod = problem.schedule.alpha(table_times()) ** 2
    scheduler.set_timesteps(case.steps)
    if case.grid_f64:
        # The scheduler's exponential (lambda-uniform) levels, recomputed in float64 by its own formula
        # (_convert_to_exponential), so that singlestep intermediate points sit at exact fractions of a step in
        # lambda, as ours do. With final_sigmas_type="sigma_min" the final level joins the geometric sequence:
        # diffusers appends it after a sequence that already ends there, a step of zero length.
        top, last = float(scheduler.sigmas[0]), float(scheduler.sigmas[-1])
        bottom, count = (float(scheduler.sigmas[-2]), case.steps) if last == 0 else (last, case.steps + 1)
        levels = torch.exp(torch.linspace(math.log(top), math.log(bottom), count, dtype=torch.float64))
        scheduler.sigmas = torch.cat([levels, torch.zeros(1, dtype=torch.float64)]) if last == 0 else levels
    if case.begin_index is not None:
        scheduler.set_begin_index(case.begin_index)
    return scheduler


def compared_states(case: Case, n_steps: int) -> list[int]:
    """Indices of the scheduler's states that are states of ours: every ``stride``-th, then the first-order tail."""
    head_end = n_steps - case.tail
    return [*range(0, head_end + 1, case.stride), *range(head_end + 1, n_steps + 1)]


def ours(case: Case, model: AnalyticModel, times: torch.Tensor, x_T: torch.Tensor) -> torch.Tensor:
    """Our trajectory on the scheduler's grid at :func:`compared_states`.

    diffusers' final_sigmas_type="zero" ends with ``tail`` first-order steps at any N (DPM-Solver++ multistep: the
    last one; singlestep: the last pair), which ours (lower_order_final only below 15 steps) would take at full
    order: those steps are run here by DPM-Solver++(1) (see test_dpmpp_2m_into_sigma_zero).
    """
    grid = times[compared_states(case, len(times) - 1)]
    head = len(grid) - case.tail
    solver = get_solver(case.solver, **case.params)
    trajectory = sample(solver, model, grid[:head], x_T, return_trajectory=True).trajectory
    if case.tail:
        tail = sample(get_solver("dpmpp-1"), model, grid[head - 1:], trajectory[-1], return_trajectory=True)
        trajectory = torch.cat([trajectory, tail.trajectory[1:]])
    return trajectory


def relative_differences(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per step: max|a - b| / max|b| over the batch."""
    return (a - b).abs().flatten(1).amax(1) / b.abs().flatten(1).amax(1)


def compare(case: Case, problem_name: str, seed: int = 0, dtype: torch.dtype | None = torch.float64):
    problem = problem_named(problem_name)
    model = AnalyticModel(problem.distribution, schedule_for(case.schedule, problem_name))
    scheduler = make_scheduler(case, problem)
    first = getattr(scheduler, "begin_index", None) or 0
    sigma_T = float(scheduler.sigmas[first]) if hasattr(scheduler, "sigmas") else None
    if case.scheduler == "IPNDMScheduler":
        sigma_T = float(scheduler.betas[first] / scheduler.alphas[first])
    if sigma_T is None:
        t0 = int(scheduler.timesteps[0])
        abar = float(scheduler.alphas_cumprod[t0])
        sigma_T = math.sqrt((1 - abar) / abar)
    t_T = float(times_for_sigmas(model.schedule, [sigma_T])[0])
    x_T = problem.distribution.noised(model.schedule, t_T).sample(BATCH, torch.Generator().manual_seed(seed))
    run = run_diffusers_scheduler(scheduler, model, x_T.to(torch.float64), dtype=dtype)
    mine = ours(case, AnalyticModel(problem.distribution, model.schedule), run.times, x_T.to(torch.float64))
    return relative_differences(mine, run.xs[compared_states(case, len(run.times) - 1)]), run


DPM_SOLVER_3 = (
    "convention difference, not a bug: diffusers' singlestep order 3 builds its second intermediate point with its "
    "order-2 update, whose solver_type='midpoint' form is -sigma_2 (e^{h_2} - 1) D/2; official DPM-Solver-3 "
    "(dpm_solver_pytorch.py, singlestep_dpm_solver_third_update, solver_type='dpmsolver') and ours use "
    "-sigma_2 (r2/r1) ((e^{r2 h} - 1)/(r2 h) - 1) D, diffusers' 'heun' form, which diffusers pairs with a different "
    "final update. Both are third order; they differ by O(h^3) per step.")

VP_CONFIG = dict(timestep_spacing="linspace")
CASES = [
    # -- EDM DPM-Solver++ (the 1e-12 check of the issue) -------------------------------------------------------------
    *(Case("EDMDPMSolverMultistepScheduler", dict(solver_order=2), n, "dpmpp-2m", dict(lower_order_final_below=15),
           schedule="edm") for n in (6, 14)),
    Case("EDMDPMSolverMultistepScheduler", dict(solver_order=2), 25, "dpmpp-2m", dict(lower_order_final=False),
         schedule="edm", tail=1),
    Case("EDMDPMSolverMultistepScheduler", dict(solver_order=2, solver_type="heun"), 12, "dpmpp-2m-heun",
         dict(lower_order_final_below=15), schedule="edm"),
    Case("EDMDPMSolverMultistepScheduler", dict(solver_order=3), 12, "dpmpp-3m", dict(lower_order_final_below=15),
         schedule="edm"),
    # -- VP DPM-Solver++ multistep: the state is cast to float32 in step ----------------------------------------------
    *(Case("DPMSolverMultistepScheduler", dict(solver_order=order, solver_type=kind, final_sigmas_type="sigma_min",
                                               **VP_CONFIG), 12, name, dict(lower_order_final_below=15),
           limit=float32_state_limit(12), why="sample cast to float32 in step")
      for order, kind, name in ((1, "midpoint", "dpmpp-1"), (2, "midpoint", "dpmpp-2m"), (2, "heun", "dpmpp-2m-heun"),
                                (3, "midpoint", "dpmpp-3m"))),
    Case("DPMSolverMultistepScheduler", dict(solver_order=2, use_karras_sigmas=True, final_sigmas_type="zero"), 10,
         "dpmpp-2m", dict(lower_order_final_below=15), limit=float32_state_limit(10),
         why="sample cast to float32 in step"),
    Case("DPMSolverMultistepScheduler", dict(solver_order=3, use_karras_sigmas=True), 20, "dpmpp-3m",
         dict(lower_order_final=False), tail=1, limit=float32_state_limit(20),
         why="sample cast to float32 in step"),
    Case("DPMSolverMultistepScheduler", dict(solver_order=1, algorithm_type="dpmsolver", final_sigmas_type="sigma_min",
                                             **VP_CONFIG), 12, "ddim", limit=float32_state_limit(12),
         why="sample cast to float32 in step"),
    # -- singlestep: our grid is every other (third) point; the scheduler's inner points are our intermediate ones --
    Case("DPMSolverSinglestepScheduler", dict(solver_order=2, use_exponential_sigmas=True), 12, "dpmpp-2s", stride=2,
         tail=2, grid_f64=True),
    Case("DPMSolverSinglestepScheduler", dict(solver_order=2, final_sigmas_type="sigma_min",
                                              use_exponential_sigmas=True), 12, "dpmpp-2s", stride=2, grid_f64=True),
    Case("DPMSolverSinglestepScheduler", dict(solver_order=2, algorithm_type="dpmsolver", final_sigmas_type="sigma_min",
                                              use_exponential_sigmas=True), 12, "dpm-solver-2", stride=2,
         grid_f64=True),
    pytest.param(Case("DPMSolverSinglestepScheduler", dict(solver_order=3, algorithm_type="dpmsolver",
                                                           final_sigmas_type="sigma_min", use_exponential_sigmas=True),
                      12, "dpm-solver-3", stride=3, grid_f64=True),
                 marks=pytest.mark.xfail(strict=True, reason=DPM_SOLVER_3)),
    # -- UniPC ------------------------------------------------------------------------------------------------------
    # (final_sigmas_type="zero" with bh1 gives NaN in diffusers: B_h = -inf times a zero predictor residual.)
    *(Case("UniPCMultistepScheduler", dict(solver_order=p, solver_type=bh, final_sigmas_type="sigma_min",
                                           **VP_CONFIG), 12, f"unipc-{bh}-p{p}")
      for bh in ("bh1", "bh2") for p in (1, 2, 3)),
    Case("UniPCMultistepScheduler", dict(solver_order=3, solver_type="bh2", use_karras_sigmas=True,
                                         final_sigmas_type="zero"), 20, "unipc-bh2-p3"),
    # -- DEIS (logrho) = tAB-DEIS with exact quadrature in t = log sigma~ ---------------------------------------------
    *(Case("DEISMultistepScheduler", dict(solver_order=order, lower_order_final=False, **VP_CONFIG), 12, "deis-tab",
           dict(ab_order=order - 1, quadrature="gauss"), schedule="log-sigma") for order in (1, 2, 3)),
    # -- DDIM, PNDM ---------------------------------------------------------------------------------------------------
    *(Case("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=True, prediction_type=kind), 10, "ddim")
      for kind in ("epsilon", "v_prediction", "sample")),
    Case("PNDMScheduler", dict(skip_prk_steps=True, set_alpha_to_one=True), 10, "plms", exact_table=True),
    Case("PNDMScheduler", dict(skip_prk_steps=False, set_alpha_to_one=True), 10, "pndm-f", exact_table=True),
    # -- k-diffusion style (variance-exploding state) ---------------------------------------------------------------
    Case("HeunDiscreteScheduler", dict(use_karras_sigmas=True), 10, "edm-heun"),
    Case("HeunDiscreteScheduler", dict(prediction_type="v_prediction", **VP_CONFIG), 10, "edm-heun"),
    Case("EulerDiscreteScheduler", dict(use_karras_sigmas=True), 10, "edm-euler", limit=float32_state_limit(10),
         why="sample cast to float32 in step"),
    Case("EDMEulerScheduler", {}, 10, "edm-euler", schedule="edm", limit=float32_state_limit(10),
         why="sample cast to float32 in step"),
    # -- iPNDM: from its second level on (its first has alpha = 0, sigma~ = inf) -------------------------------------
    Case("IPNDMScheduler", {}, 10, "ipndm", begin_index=1),
]


def case_id(case) -> str:
    return case.id


@pytest.mark.parametrize("problem_name", ["gauss-1d", "gmm-1d-bimodal"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_agrees_with_diffusers(case, problem_name):
    """Every state of our run equals diffusers' within the case's limit (see the module docstring)."""
    diffs, run = compare(case, problem_name)
    worst = float(diffs.max())
    bad = (diffs > case.limit).nonzero()
    first = int(bad[0]) if len(bad) else None
    where = None if first is None else float(run.sigmas[compared_states(case, len(run.times) - 1)[first]])
    assert first is None, (f"{case.id} on {problem_name}: first divergence at state {first} (sigma~ {where:.6g}): "
                           f"{float(diffs[first]):.3g} > limit {case.limit:.3g} ({case.why}); worst {worst:.3g}")


FLOAT32_TABLES = 256 * F32
"""Tables as diffusers ships them (float32 tensors), so lambda, h and the coefficients are computed in float32:
each coefficient carries a few float32 roundings relative to h, and DEIS-3's divided differences of float32 logs
amplify them (measured up to 5e-6); 256 float32 ulps leaves a margin of about 3."""


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_agrees_with_diffusers_float32_tables(case):
    """The same cases with the scheduler's tables left in float32 (the driver's ``dtype=None``)."""
    diffs, _ = compare(case, "gauss-1d", seed=1, dtype=None)
    limit = max(FLOAT32_TABLES, case.limit)
    assert float(diffs.max()) <= limit, f"{case.id}: worst {float(diffs.max()):.3g} > {limit:.3g}"


def test_dpmpp_2m_into_sigma_zero():
    """A step into sigma = 0 (h = inf) is first order at any N, as diffusers' final_sigmas_type='zero' does: the
    result is the denoiser at the penultimate point (it used to divide by r0 = 0 from 10 steps on)."""
    problem = problem_named("gauss-1d")
    schedule = schedule_for("edm", "gauss-1d")
    grid = torch.cat([edm_grid(schedule, 12, 0.002, 80.0), torch.zeros(1, dtype=torch.float64)])
    x_T = problem.distribution.noised(schedule, 80.0).sample(4, torch.Generator().manual_seed(0))
    model = AnalyticModel(problem.distribution, schedule)
    x = sample(get_solver("dpmpp-2m"), model, grid, x_T)
    penultimate = sample(get_solver("dpmpp-2m"), model, grid[:-1], x_T)
    assert torch.allclose(x, model(penultimate, float(grid[-2])).x0, rtol=1e-14, atol=0)


def test_driver_rejects_inconsistent_ddim_spacing():
    """DDIM steps from t to t - N_train // N whatever timestep_spacing is; with 'linspace' the next model call is at
    another timestep (N = 10: the state lands on abar[899], the next call uses abar[888]), so there is no grid to
    compare on and the driver says so."""
    problem = problem_named("gauss-1d")
    scheduler = diffusers.DDIMScheduler(trained_betas=trained_betas("gauss-1d"), num_train_timesteps=N_TRAIN,
                                        clip_sample=False, set_alpha_to_one=True, timestep_spacing="linspace")
    scheduler.set_timesteps(10)
    with pytest.raises(ValueError, match="not spaced by 100"):
        run_diffusers_scheduler(scheduler, problem.model(), torch.zeros(2, 1, dtype=torch.float64))
