"""k-diffusion samplers and diffusers schedulers on our problems: measured orders, agreement with our solvers, and
the name map.

Writes docs/interop.md and the tidy rows to analysis/results/interop.csv (appended as each row finishes; rerun with
``--resume`` to keep finished rows, ``--markdown-only`` to rewrite the page from the CSV).

* **ODE orders** (k-diffusion samplers without noise, and those with ``eta`` at ``eta = 0``, their probability-flow
  limit): :func:`sdetoolkit.studies.ode_order` on uniform-lambda grids, 32..256 steps against the exact Gaussian
  flow (gauss-1d) and 64..1024 against a DOP853 reference (gmm-1d-bimodal, errors below 1e-10 dropped), as for our
  solvers (tests/test_solver_orders.py). ``sample_dpm_fast`` against NFE (3k evaluations); ``sample_dpm_adaptive``:
  its error and NFE at each tolerance.
* **Strong orders** (stochastic k-diffusion samplers, their default eta): gauss-1d moved to k-diffusion's variables
  (the ``edm`` schedule, same sigma~ window, :func:`~sdetoolkit.interop.kdiffusion.on_sigma_schedule`), so that
  the noise is a Brownian motion in sigma as k-diffusion's ``BrownianTreeNoiseSampler`` draws it;
  :func:`~sdetoolkit.studies.strong_order` on 16..128 steps against 16 times finer, 1000 trajectories.
* **diffusers orders**: each scheduler configuration of the name map run with its own update rules on the
  uniform-lambda levels of the problem (:func:`~sdetoolkit.interop.names.set_levels`), 16..128 steps, against the
  same references; DDIM and PNDM (integer-timestep tables) on 10..200 steps dividing 1000, IPNDM on its own grid
  (gauss-1d only, against the exact flow between the run's end levels). Schedulers that cast the sample to
  float32 in ``step`` get the floor 4 n 2^-24 relative.
* **diffusers strong orders** (configurations that add noise in ``step``, gauss-1d): the scheduler's update rules
  on nested uniform-lambda levels, 16..128 steps against 16 times finer, 1000 trajectories, every run fed the
  normalised increments of one Brownian path in the model's time (the driver's noise convention). DDIM(eta) and
  DDPM step through integer-timestep grids, which are not nested: the note gives our equivalent's strong order on
  uniform-lambda grids, on which it agrees with them step for step.
* **Agreement**: every row of :data:`sdetoolkit.interop.names.NAME_MAP` on both problems (12 steps; stochastic rows,
  k-diffusion and diffusers, with the same IIDNoise normals): the largest relative state difference, the row's
  tolerance, and the first state above it.

Run: ``OMP_NUM_THREADS=1 python analysis/interop_table.py [--resume] [--markdown-only]`` (needs the ``interop`` and
``kdiffusion`` extras; see docs/interop.md for the k-diffusion install).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import pathlib

import numpy as np
import pandas as pd
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.interop import kdiffusion, names
from sdetoolkit.interop.diffusers_driver import times_for_sigmas
from sdetoolkit.noise import BrownianPath
from sdetoolkit.studies import fit_order, ode_order, strong_order
from sdetoolkit.studies.convergence import reference
from sdetoolkit.studies.order import bootstrap_fit

ROOT = pathlib.Path(__file__).resolve().parents[1]
CSV = ROOT / "analysis" / "results" / "interop.csv"
OUT = ROOT / "docs" / "interop.md"
PROBLEMS = {"gauss-1d": ([32, 48, 64, 96, 128, 192, 256], 64, 0.0),
            "gmm-1d-bimodal": ([64, 96, 128, 192, 256, 384, 512, 768, 1024], 32, 1e-10)}
AGREEMENT_PROBLEMS = ("gauss-1d", "gmm-1d-bimodal", "gmm-1d-bimodal@edm")
"""Problems of the k-diffusion agreement rows; '@edm': the problem moved to the edm schedule (on_sigma_schedule)."""
STRONG_STEPS = [16, 32, 64, 128]
FAST_K = [96, 128, 192, 256, 384, 512, 768]
"""sample_dpm_fast runs with NFE = 3k + r: r = 0 ends with orders 2, 1; r = 2 with a second-order step."""
ADAPTIVE_RTOL = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
DIFFUSERS_STEPS = [16, 24, 32, 48, 64, 96, 128]
TABLE_STEPS = [10, 20, 25, 40, 50, 100, 125, 200]
TABLE_BASED = ("DDIMScheduler", "PNDMScheduler", "IPNDMScheduler", "DDPMScheduler")
"""Schedulers that step through their own integer-timestep tables (no set_levels)."""
COLUMNS = ["kind", "subject", "ours", "problem", "order", "low", "high", "local_slopes", "finest_error",
           "max_difference", "tolerance", "first_divergence", "divergence", "nfe", "note"]


def configurations() -> list[tuple[str, dict]]:
    """Every k-diffusion sampler with its default options, and, where it has a non-zero eta, with eta = 0."""
    runs = []
    for name in kdiffusion.sampler_names():
        runs.append((name, {}))
        if kdiffusion.sampler_options(name).get("eta"):
            runs.append((name, {"eta": 0.0}))
    return runs


def problem_named(name: str):
    base = get_problem(name.removesuffix("@edm"))
    return kdiffusion.on_sigma_schedule(base) if name.endswith("@edm") else base


def label(name: str, options: dict) -> str:
    return f"sample_{name}(" + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"


def fit_columns(fit, finest_error: float) -> dict:
    return dict(order=fit.order, low=fit.low, high=fit.high, finest_error=finest_error,
                local_slopes=" ".join(f"{v:.2f}" for v in fit.local_slopes))


# -- k-diffusion orders ----------------------------------------------------------------------------------------------
def fast_label(remainder: int) -> str:
    return f"sample_dpm_fast() [NFE = 3k{' + ' + str(remainder) if remainder else ''}]"


def k_ode_row(name: str, options: dict, problem_name: str, remainder: int = 0) -> dict:
    problem = get_problem(problem_name)
    steps, n_samples, floor = PROBLEMS[problem_name]
    row = dict(kind="k-order", subject=label(name, options), problem=problem_name)
    if name == "dpm_fast":
        row["subject"] = fast_label(remainder)
        ref = reference(problem, n_samples, 0)
        nfes = [3 * k + remainder for k in FAST_K]
        errors = [float((kdiffusion.run_dpm_fast(problem.model(), problem.t_max, problem.t_min, n, ref.x_T).x
                         - ref.x_min).pow(2).mean().sqrt()) for n in nfes]
        fit = fit_order(1.0 / np.asarray(nfes), np.asarray(errors), floor=max(floor, ref.floor))
        return {**row, **fit_columns(fit, errors[-1]), "note": f"against NFE {nfes[0]}..{nfes[-1]}"}
    study = ode_order(kdiffusion.KDiffusionSampler(name, **options), problem, steps, n_samples=n_samples)
    table = study.table[study.table.metric == "rms"]
    return {**row, **fit_columns(study.fits["rms"], float(table.value.iloc[-1])),
            "nfe": int(table.nfe.iloc[-1]) / int(table.steps.iloc[-1]), "note": f"steps {steps[0]}..{steps[-1]}"}


def adaptive_label(rtol: float) -> str:
    return f"sample_dpm_adaptive() [rtol = atol = {rtol:g}]"


def k_adaptive_row(rtol: float, problem_name: str) -> dict:
    """RMS error of sample_dpm_adaptive at t_min and its NFE (rejected steps included)."""
    problem = get_problem(problem_name)
    ref = reference(problem, PROBLEMS[problem_name][1], 0)
    run = kdiffusion.run_dpm_adaptive(problem.model(), problem.t_max, problem.t_min, ref.x_T, rtol=rtol, atol=rtol)
    return dict(kind="k-adaptive", subject=adaptive_label(rtol), problem=problem_name,
                finest_error=float((run.x - ref.x_min).pow(2).mean().sqrt()), nfe=run.nfe)


def k_strong_row(name: str, options: dict, problem_name: str) -> dict:
    problem = kdiffusion.on_sigma_schedule(get_problem(problem_name))
    study = strong_order(kdiffusion.KDiffusionSampler(name, **options), problem, STRONG_STEPS, levels=4,
                         n_samples=1000)
    return dict(kind="k-strong", subject=label(name, options), problem=problem.name,
                **fit_columns(study.fit, float(study.table.strong_error.iloc[-1])),
                note=f"steps {STRONG_STEPS[0]}..{STRONG_STEPS[-1]}")


# -- diffusers orders ------------------------------------------------------------------------------------------------
def _convert(x: torch.Tensor, schedule_from, t_from: float, schedule_to, t_to: float) -> torch.Tensor:
    """x at time t_from of one schedule as the state at the same sigma~ of another (x/alpha is shared)."""
    return x * (float(schedule_to.alpha(t_to)) / float(schedule_from.alpha(t_from)))


def diffusers_order_row(diffusers, entry, config, problem_name: str) -> dict:
    problem = get_problem(problem_name)
    row = dict(kind="d-order", subject=str(config), ours=entry.label, problem=problem_name)
    table_based = config.cls in TABLE_BASED
    if table_based and problem_name != "gauss-1d":
        return {**row, "note": "integer-timestep grids: gauss-1d only"}
    _, n_samples, floor = PROBLEMS[problem_name]
    steps = TABLE_STEPS if config.cls in ("DDIMScheduler", "PNDMScheduler") else DIFFUSERS_STEPS
    schedule = names.schedule_for(entry, problem, config.cls)
    errors = []
    if table_based:
        for n in steps:
            run, _, x_T = names.run_diffusers(diffusers, entry, config, problem, n, n_samples=n_samples)
            exact = problem.distribution.pf_ode_map(x_T, schedule, float(run.times[0]), float(run.times[-1]))
            errors.append(float((run.x - exact).pow(2).mean().sqrt()))
        ours = ode_order(entry.solver(), problem, DIFFUSERS_STEPS, n_samples=n_samples).fits["rms"]
        note = (f"its own grids; {entry.label} on uniform-lambda grids of {DIFFUSERS_STEPS[0]}.."
                f"{DIFFUSERS_STEPS[-1]} steps: {ours.order:.2f} [{ours.low:.2f}, {ours.high:.2f}]")
    else:
        ref = reference(problem, n_samples, 0)
        floor = max(floor, ref.floor)
        t_hi = names.problem_window(problem, schedule)[1]
        for n in steps:
            grid = make_grid("uniform-lambda", problem.schedule, n, problem.t_min, problem.t_max)
            levels = problem.schedule.sigma_over_alpha(grid)
            x_T = _convert(ref.x_T, problem.schedule, problem.t_max, schedule, t_hi)
            run, _, _ = names.run_diffusers(diffusers, entry, config, problem, n, levels=levels, x_T=x_T)
            x = _convert(run.x, schedule, float(run.times[-1]), problem.schedule, problem.t_min)
            errors.append(float((x - ref.x_min).pow(2).mean().sqrt()))
        note = "uniform-lambda levels"
    scale = max(errors)
    floor = max(floor, config.tolerance(steps[-1]) * scale if config.float32 else 0.0)
    try:
        fit = fit_order(1.0 / np.asarray(steps, dtype=float), np.asarray(errors), floor=floor)
    except ValueError as err:
        return {**row, "note": f"{note}; no fit: {err}"}
    return {**row, **fit_columns(fit, errors[-1]), "note": f"{note}, steps {steps[0]}..{steps[-1]}"}


def diffusers_strong_row(diffusers, entry, config, problem_name: str) -> dict:
    """Strong order of a scheduler that adds noise (see the module doc); 1000 trajectories, seed 0."""
    problem = get_problem(problem_name)
    row = dict(kind="d-strong", subject=str(config), ours=entry.label, problem=problem_name)
    steps = f"{STRONG_STEPS[0]}..{STRONG_STEPS[-1]} steps"
    if config.cls in TABLE_BASED:
        fit = strong_order(entry.solver(), problem, STRONG_STEPS, levels=4, n_samples=1000).fit
        return {**row, "note": f"integer-timestep grids, not nested; {entry.label} on uniform-lambda grids of "
                               f"{steps}: strong {fit.order:.2f} [{fit.low:.2f}, {fit.high:.2f}]"}
    n_ref = STRONG_STEPS[-1] * 16
    levels = problem.schedule.sigma_over_alpha(make_grid("uniform-lambda", problem.schedule, n_ref, problem.t_min,
                                                         problem.t_max))
    schedule = names.schedule_for(entry, problem, config.cls)
    path = BrownianPath(times_for_sigmas(schedule, levels).tolist(), seed=0)
    prior = problem.prior().sample(1000, torch.Generator().manual_seed(0))
    x_T = _convert(prior, problem.schedule, problem.t_max, schedule, names.problem_window(problem, schedule)[1])

    # from its first level: with more steps than training steps its integer timesteps repeat, and the lookup of the
    # first one would start at its second occurrence
    config = dataclasses.replace(config, begin_index=0)

    def final(n: int) -> torch.Tensor:
        return names.run_diffusers(diffusers, entry, config, problem, n, levels=levels[::n_ref // n], x_T=x_T,
                                   noise=path)[0].x

    finest = final(n_ref)
    squared = torch.stack([(final(n) - finest).square().sum(1) for n in STRONG_STEPS])
    fit = bootstrap_fit([1.0 / n for n in STRONG_STEPS], squared.numpy(), seed=0)
    return {**row, **fit_columns(fit, float(squared[-1].mean().sqrt())),
            "note": f"uniform-lambda levels, {steps} against {n_ref}, one Brownian path"}


# -- agreement -------------------------------------------------------------------------------------------------------
def agreement_row(kind: str, subject: str, entry, check) -> dict:
    agreement = check.agreement
    first = agreement.first_divergence
    return dict(kind=kind, subject=subject, ours=entry.label, problem=check.problem,
                max_difference=agreement.max_difference, tolerance=agreement.tolerance,
                first_divergence=-1 if first is None else first,
                divergence=math.nan if first is None else float(agreement.differences[first]), nfe=check.nfe)


def jobs(diffusers):
    """(key, thunk) for every row of the page."""
    for name, options in configurations():
        for problem_name in PROBLEMS:
            if kdiffusion.is_stochastic(name, options):
                if problem_name == "gauss-1d":
                    yield (("k-strong", label(name, options), problem_name),
                           lambda n=name, o=options, p=problem_name: k_strong_row(n, o, p))
            elif name == "dpm_adaptive":
                for rtol in ADAPTIVE_RTOL:
                    yield (("k-adaptive", adaptive_label(rtol), problem_name),
                           lambda r=rtol, p=problem_name: k_adaptive_row(r, p))
            elif name == "dpm_fast":
                for r in (0, 2):
                    yield (("k-order", fast_label(r), problem_name),
                           lambda o=options, p=problem_name, r=r: k_ode_row("dpm_fast", o, p, r))
            else:
                yield (("k-order", label(name, options), problem_name),
                       lambda n=name, o=options, p=problem_name: k_ode_row(n, o, p))
    for entry in names.NAME_MAP:
        for problem_name in AGREEMENT_PROBLEMS if entry.kdiffusion is not None else ():
            yield (("k-agree", f"{entry.k_label}|{entry.label}", problem_name),
                   lambda e=entry, p=problem_name: agreement_row(
                       "k-agree", e.k_label, e, names.check_kdiffusion(e, problem_named(p))))
        for problem_name in PROBLEMS:
            for config in entry.diffusers:
                if config.unverified:
                    continue
                yield (("d-agree", f"{config}|{entry.label}", problem_name),
                       lambda e=entry, c=config, p=problem_name: agreement_row(
                           "d-agree", str(c), e, names.check_diffusers(diffusers, e, c, get_problem(p))))
                if not entry.solver().stochastic:
                    yield (("d-order", f"{config}|{entry.label}", problem_name),
                           lambda e=entry, c=config, p=problem_name: diffusers_order_row(diffusers, e, c, p))
                elif problem_name == "gauss-1d":
                    yield (("d-strong", f"{config}|{entry.label}", problem_name),
                           lambda e=entry, c=config, p=problem_name: diffusers_strong_row(diffusers, e, c, p))


    for entry in names.NEAR_MISSES:
        for problem_name in PROBLEMS:
            yield (("k-near", f"{entry.k_label}|{entry.label}", problem_name),
                   lambda e=entry, p=problem_name: agreement_row(
                       "k-near", e.k_label, e, names.check_kdiffusion(e, get_problem(p))))


def key_of(row) -> tuple:
    subject = (row["subject"] if row["kind"] in ("k-order", "k-strong", "k-adaptive")
               else f"{row['subject']}|{row['ours']}")
    problem = str(row["problem"])
    return row["kind"], subject, problem.removesuffix("@edm") if row["kind"] == "k-strong" else problem


# -- markdown --------------------------------------------------------------------------------------------------------
def _order(row) -> str:
    family = row["subject"].split("[")[1].rstrip("]") + ": " if "[" in str(row["subject"]) else ""
    if pd.isna(row.get("order")):
        return row["note"] if isinstance(row.get("note"), str) else ""
    return f"{family}{row['order']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def _agreement(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    worst = rows.max_difference.max()
    diverged = rows[rows.first_divergence >= 0]
    if diverged.empty:
        return f"{worst:.1e} (≤ {rows.tolerance.max():.1e})"
    first = diverged.iloc[0]
    return (f"**diverges** at state {int(first.first_divergence)} on {first.problem} (max {worst:.1e} > "
            f"{first.tolerance:.1e})")


def _k_section(frame: pd.DataFrame) -> list[str]:
    lines = ["## k-diffusion samplers", "",
             f"k-diffusion {kdiffusion.version()}, every `sample_*` function; samplers with `eta` also at `eta = 0`. "
             "Orders: the fitted global order with its interval (ODE), or for a stochastic sampler its strong order "
             "on gauss-1d moved to the `edm` schedule, on one Brownian path in sigma (k-diffusion's noise "
             "convention), 16..128 steps against 16 times finer. Agreement: the largest relative state difference "
             "with our solver over both problems and gmm-1d-bimodal moved to the `edm` schedule (12 steps, same x_T "
             "and normals), and its tolerance.",
             "",
             "| sampler | ComfyUI | order gauss-1d | order gmm-1d-bimodal | our solver | agreement |",
             "|---|---|---|---|---|---|"]
    orders = frame[frame.kind.isin(["k-order", "k-strong"])]
    agree = frame[frame.kind == "k-agree"]
    for name, options in configurations():
        subject = label(name, options)
        subjects = [fast_label(0), fast_label(2)] if name == "dpm_fast" else [subject]
        mine = orders[orders.subject.isin(subjects)]
        stochastic = kdiffusion.is_stochastic(name, options)
        gauss = mine[mine.problem.str.startswith("gauss-1d")]
        gmm = mine[mine.problem == "gmm-1d-bimodal"]
        order_gauss = "<br>".join(("strong " if stochastic else "") + _order(row) for _, row in gauss.iterrows())
        order_gmm = "<br>".join(_order(row) for _, row in gmm.iterrows()) or ("—" if stochastic else "")
        rows = [e for e in names.NAME_MAP if e.kdiffusion == name and dict(e.k_options) == options]
        comfy = ", ".join(sorted({c for e in rows for c in e.comfyui})) or name
        ours = "; ".join(f"`{e.label}`" + (f" ({e.schedule} schedule only)" if e.schedule != "any" else "")
                         for e in rows) or "none"
        agreement = "; ".join(_agreement(agree[(agree.subject == e.k_label) & (agree.ours == e.label)])
                              for e in rows) or "—"
        if name == "dpm_adaptive":
            order_gauss = order_gmm = "adaptive: [below](#dpm_adaptive)"
        lines.append(f"| `{subject}` | {comfy} | {order_gauss} | {order_gmm} | {ours} | {agreement} |")
    extra = [e for e in names.NAME_MAP if e.kdiffusion is not None and not any(
        e.kdiffusion == n and dict(e.k_options) == o for n, o in configurations())]
    if extra:
        lines += ["", "Further options checked against our solvers:", "",
                  "| sampler | our solver | agreement |", "|---|---|---|"]
        for e in extra:
            lines.append(f"| `{e.k_label}` | `{e.label}` | "
                         f"{_agreement(agree[(agree.subject == e.k_label) & (agree.ours == e.label)])} |")
    adaptive = frame[frame.kind == "k-adaptive"]
    lines += ["", "### dpm_adaptive", "",
              "`sample_dpm_adaptive` (DPM-Solver-23, PID step control) with rtol = atol: RMS error at t_min against "
              "the exact flow (gauss-1d) and DOP853 (gmm-1d-bimodal), and its NFE (rejected steps included).", "",
              "| rtol | error gauss-1d | NFE gauss-1d | error gmm-1d-bimodal | NFE gmm-1d-bimodal |",
              "|---|---|---|---|---|"]
    for rtol in ADAPTIVE_RTOL:
        cells = []
        for problem_name in PROBLEMS:
            mine = adaptive[(adaptive.subject == adaptive_label(rtol)) & (adaptive.problem == problem_name)]
            cells += [f"{mine.finest_error.iloc[0]:.1e}", f"{int(mine.nfe.iloc[0])}"] if len(mine) else ["", ""]
        lines.append(f"| {rtol:g} | " + " | ".join(cells) + " |")
    lines += ["", "`s_churn > 0` (euler, heun, dpm_2) draws `torch.randn_like` inside the sampler, which no noise "
              "source can feed: refused by the adapter, not run. Without an equivalent of ours (ancestral 2S and "
              "DPM-2, DPM++ SDE with noise) the sampler is only measured."]
    return lines


def _near_section(frame: pd.DataFrame) -> list[str]:
    lines = ["## Near misses", "",
             "Pairs that look alike and are not the same method (`sdetoolkit.interop.names.NEAR_MISSES`, tested to "
             "differ first at the state shown): the first state whose relative difference exceeds 1e-12, that "
             "difference, and the largest over the run (12 steps; states before the first agree to 1e-12).", "",
             "| k-diffusion | our solver | problem | first diverging state | difference there | max | why |",
             "|---|---|---|---|---|---|---|"]
    near = frame[frame.kind == "k-near"]
    for entry in names.NEAR_MISSES:
        for _, row in near[(near.subject == entry.k_label) & (near.ours == entry.label)].iterrows():
            lines.append(f"| `{entry.k_label}` | `{entry.label}` | {row.problem} | {int(row.first_divergence)} | "
                         f"{row.divergence:.1e} | {row.max_difference:.1e} | {entry.note} |")
    return lines


def _d_section(frame: pd.DataFrame, diffusers) -> list[str]:
    lines = ["## diffusers schedulers", "",
             f"diffusers {diffusers.__version__}. Each configuration is driven by "
             "`sdetoolkit.interop.diffusers_driver` over its own levels (tables upcast to float64) and compared with "
             "our solver on those levels (12 steps, both problems). Orders: its update rules on the uniform-lambda "
             "levels of the problem (see the top of analysis/interop_table.py). DDIM, PNDM and IPNDM step through "
             "their own integer-timestep tables, uniform in t, whose last steps are long in lambda: there the fits "
             "are pre-asymptotic (ours on the same grids gives the same numbers, since they agree); the note gives "
             "our equivalent's order on uniform-lambda grids. Configurations that add noise in `step` are fed the "
             "normals our solver draws for the same step (`IIDNoise`; as `variance_noise` where `step` takes it, "
             "otherwise in place of the scheduler's `randn_tensor` draw); their order is the strong order on "
             "gauss-1d (uniform-lambda levels, 16..128 steps against 2048, one Brownian path in the model's time, "
             "1000 trajectories). `DPMSolverMultistepScheduler` rounds the sample and, in its `sde-*` algorithms, "
             "the noise to float32 in `step` (tolerance 4 n 2^-24 per rounding).", "",
             "| scheduler (config) | our solver | agreement | order gauss-1d | order gmm-1d-bimodal |",
             "|---|---|---|---|---|"]
    agree = frame[frame.kind == "d-agree"]
    orders = frame[frame.kind.isin(["d-order", "d-strong"])]
    covered = set()
    for entry in names.NAME_MAP:
        for config in entry.diffusers:
            covered.add(config.cls)
            if config.unverified:
                lines.append(f"| `{config}` | `{entry.label}` | not run: {config.unverified} | | |")
                continue
            mine = orders[(orders.subject == str(config)) & (orders.ours == entry.label)]
            cells = [_order(mine[mine.problem == p].iloc[0]) if len(mine[mine.problem == p]) else "" for p in PROBLEMS]
            agreement = _agreement(agree[(agree.subject == str(config)) & (agree.ours == entry.label)])
            notes = [mine[mine.problem == p].iloc[0].note for p in PROBLEMS if len(mine[mine.problem == p])]
            if entry.solver().stochastic:
                strong = mine[mine.problem == "gauss-1d"]
                cells = [("strong " + _order(strong.iloc[0]) if len(strong) else ""), "—"]
                if config.cls in TABLE_BASED:
                    cells[0] = notes[0] if notes else ""
            elif config.cls in TABLE_BASED and notes:
                cells = [f"{cells[0]} ({notes[0]})", "—"]
            lines.append(f"| `{config}` | `{entry.label}` | {agreement} | {cells[0]} | {cells[1]} |")
    others = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("Flax")
                    and inspect.isclass(getattr(diffusers, n)) and n not in covered)
    lines += ["", "Not in the map (no equivalent of ours is checked here): flow-matching, consistency and distilled, "
              "inverse, discrete and model-specific schedulers, the diffusers ports of k-diffusion samplers that have "
              "no equivalent of ours (DPM++ SDE, ancestral DPM-2), and schedulers not examined: "
              + ", ".join(f"`{n}`" for n in others) + ".",
              "", "Stochastic schedulers that do not agree (tests/test_diffusers_stochastic.py, strict xfails):", "",
              "* `EulerDiscreteScheduler` and `EDMEulerScheduler` with `s_churn > 0` against `edm-stochastic-euler` "
              "(same `S_churn`, `S_tmin`, `S_tmax`, `S_noise`, same normals): Karras et al. 2022, Alg. 2, line 7, "
              "evaluates the denoiser at the churned point (x^, sigma^) (NVlabs/edm `edm_sampler`: "
              "`net(x_hat, t_hat)`), and so does ours; diffusers adds the churn inside `step`, after the model was "
              "called at (x, sigma), and reuses that output at (x^, sigma^) (Euler: x0 = x^ - sigma^ eps(x, sigma); "
              "EDM Euler: D = c_skip(sigma^) x^ + c_out(sigma^) F(x, sigma)). With `S_churn = 4` on 12 steps the "
              "first churned step differs: 0.62 relative for Euler (gauss-1d), 1.6e-4 for EDM Euler "
              "(gmm-1d-bimodal).",
              "* `EDMDPMSolverMultistepScheduler(solver_order=3, algorithm_type='sde-dpmsolver++')` raises "
              "`UnboundLocalError` at its first third-order step (its third-order update has no SDE branch)."]
    return lines


def _map_section() -> list[str]:
    lines = ["## Name map", "",
             "`sdetoolkit.interop.names.NAME_MAP`: each row is tested (tests/test_names.py, "
             "tests/test_kdiffusion_crosscheck.py). Condition: `sigma`: only where the model's time is sigma~ (the "
             "`edm` schedule); `log-sigma`: only where it is log sigma~.", "",
             "| our solver | k-diffusion | ComfyUI | diffusers | condition | note |", "|---|---|---|---|---|---|"]
    for e in names.NAME_MAP:
        diffusers = "<br>".join(f"`{c}`" + (" (not run)" if c.unverified else "") for c in e.diffusers)
        lines.append(f"| `{e.label}` | {f'`{e.k_label}`' if e.k_label else ''} | {', '.join(e.comfyui)} | "
                     f"{diffusers} | {e.schedule} | {e.note} |")
    return lines


INTRO = """# Interop: k-diffusion, diffusers and ComfyUI

Generated by `python analysis/interop_table.py` from analysis/results/interop.csv.

## Using k-diffusion's samplers

`import k_diffusion` runs its `__init__`, which imports clip, wandb, torchvision, kornia and scikit-image (and fails
on recent setuptools). The samplers need none of them. Install the wheel without dependencies, plus the two the
sampling module imports:

```
pip install --no-deps k-diffusion==0.1.1.post1
pip install torchsde torchdiffeq
```

`sdetoolkit.interop.kdiffusion.load_sampling()` finds `k_diffusion/sampling.py` without executing the package and
executes that file alone in a synthetic package whose `utils` provides the one function it uses (`append_dims`);
it refuses, before running anything, a `sampling.py` that needs more. No k-diffusion code is copied.

```python
from sdetoolkit import get_problem
from sdetoolkit.interop.kdiffusion import KDiffusionSampler, run_kdiffusion
from sdetoolkit.studies import ode_order

study = ode_order(KDiffusionSampler("dpmpp_2m"), get_problem("gmm-1d-bimodal"), [64, 128, 256, 512])
```

k-diffusion's convention is `model(x, sigma)` returning the denoised x, with sigmas descending. On the `edm`
schedule (alpha = 1, sigma = t) that is our data prediction as it is; on any other schedule the adapter hands
k-diffusion x/alpha and sigma/alpha, and calls our model at the time t with sigma(t)/alpha(t) = sigma~ on
alpha(t) times its state. Stochastic samplers get a `noise_sampler` made from an sdetoolkit noise source: with
`IIDNoise` it returns the normals our solvers draw for the same step, so a k-diffusion run and ours see the same
noise; with a `BrownianPath` it returns normalised Brownian increments in the model's time (on the `edm` schedule,
k-diffusion's own `BrownianTreeNoiseSampler` convention).

What the tables below found:

* Every k-diffusion sampler with an equivalent of ours agrees with it to about 1e-15 relative at every state, on
  both problems and on the VP schedule as well as on `edm`, stochastic ones on the same normals.
* `sample_lms` is tAB-DEIS with exact weights only where the model's time is sigma~: on the VP schedule the two
  interpolate in different variables and first differ at the first step that uses past points.
* `sample_dpmpp_3m_sde` at `eta = 0` is the official DPM-Solver++(3M) and measures order 2, not 3 (the missing
  factor 2 in D2 recorded in [findings](findings.md)).
* `sample_dpm_fast` with NFE = 3k ends with a first-order step and is second order in NFE; with NFE = 3k + 2 its
  last step is second order and it is third order. (ComfyUI passes the number of steps as NFE.)
* diffusers: every configuration that can be driven agrees with our solver to 1e-12 (float64 throughout) or to
  its float32 `step` (4 n 2^-24 per float32 rounding), the stochastic ones (DDIM with `eta`, DDPM, Euler ancestral,
  SDE-DPM-Solver(++) 1/2M/3M) on the same normals. diffusers' churn (`s_churn` of the Euler schedulers) is not
  EDM's: it reuses the model output of the point before the churn (below).
"""


def write_markdown(frame: pd.DataFrame) -> None:
    import diffusers

    lines = (INTRO.split("\n") + _k_section(frame) + [""] + _near_section(frame) + [""] + _d_section(frame, diffusers)
             + [""] + _map_section())
    OUT.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resume", action="store_true", help="keep finished rows of a previous run")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the markdown from the CSV")
    args = parser.parse_args()
    if not kdiffusion.available():
        raise SystemExit(f"k-diffusion's sampling module is not installed: {kdiffusion.INSTALL}")
    import diffusers

    if args.markdown_only:
        write_markdown(pd.read_csv(CSV))
        return
    CSV.parent.mkdir(parents=True, exist_ok=True)
    if not args.resume and CSV.exists():
        CSV.unlink()
    done = {key_of(row) for _, row in pd.read_csv(CSV).iterrows()} if CSV.exists() else set()
    for key, job in jobs(diffusers):
        if key in done:
            continue
        try:
            row = job()
        except Exception as err:  # a failing configuration is a row of the table, not the end of the sweep
            row = dict(kind=key[0], subject=key[1].split("|")[0], ours=[*key[1].split("|"), ""][1],
                       problem=key[2], note=f"failed: {type(err).__name__}: {err}")
        print({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}, flush=True)
        pd.DataFrame([row]).reindex(columns=COLUMNS).to_csv(CSV, mode="a", header=not CSV.exists(), index=False)
    write_markdown(pd.read_csv(CSV))


if __name__ == "__main__":
    main()
