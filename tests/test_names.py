"""The name map (sdetoolkit.interop.names): its rows are well formed, and every diffusers configuration it names
computes what our solver computes, state by state (its k-diffusion rows: tests/test_kdiffusion_crosscheck.py).

A configuration that cannot be run here is skipped with the reason the map records. Limits: 1e-12 relative where both
sides are float64 throughout; 4 n 2^-24 where the scheduler casts the sample to float32 inside ``step`` (the
scheduler's tables are cast to float64 after ``set_timesteps``, see sdetoolkit.interop.diffusers_driver).
"""

from __future__ import annotations

import pytest

from sdetoolkit import get_problem
from sdetoolkit.interop import names
from sdetoolkit.interop.diffusers_driver import draws_noise

DIFFUSERS_ROWS = [(entry, config) for entry in names.NAME_MAP for config in entry.diffusers]


def config_id(pair) -> str:
    entry, config = pair
    return f"{config}-vs-{entry.label}"


@pytest.mark.parametrize("entry", names.NAME_MAP, ids=lambda entry: entry.label)
def test_row_names_a_registered_solver_and_a_counterpart(entry):
    entry.solver()
    assert entry.kdiffusion or entry.diffusers, f"{entry.label}: a row needs a k-diffusion or diffusers counterpart"
    assert all(name == name.lower() and " " not in name for name in entry.comfyui)
    assert entry.comfyui == () or entry.kdiffusion is not None, "ComfyUI names are verified through k-diffusion"


@pytest.mark.parametrize("pair", DIFFUSERS_ROWS, ids=[config_id(pair) for pair in DIFFUSERS_ROWS])
def test_stochastic_solvers_pair_with_schedulers_that_add_noise(pair):
    """A row pairs a stochastic solver of ours with a scheduler configuration that adds noise in ``step`` (fed our
    normals by the driver), and a deterministic one with one that does not."""
    diffusers = pytest.importorskip("diffusers")
    entry, config = pair
    if config.unverified:
        pytest.skip(f"{config}: {config.unverified}")
    scheduler = names.make_scheduler(diffusers, entry, config, get_problem("gauss-1d"), 12)
    assert draws_noise(scheduler, config.step_options) == entry.solver().stochastic


def test_row_conditions_are_checked():
    with pytest.raises(ValueError, match="schedule"):
        names.Equivalent("ddim", kdiffusion="euler", schedule="vp")


@pytest.mark.parametrize("problem_name", ["gauss-1d", "gmm-1d-bimodal"])
@pytest.mark.parametrize("pair", DIFFUSERS_ROWS, ids=[config_id(pair) for pair in DIFFUSERS_ROWS])
def test_name_map_row_agrees_with_diffusers(pair, problem_name):
    diffusers = pytest.importorskip("diffusers")
    entry, config = pair
    if config.unverified:
        pytest.skip(f"{config}: {config.unverified}")
    check = names.check_diffusers(diffusers, entry, config, get_problem(problem_name))
    first = check.agreement.first_divergence
    where = None if first is None else float(check.times[first])
    assert check.agreement.agrees, f"{config_id(pair)} on {problem_name}: {check.agreement} (time {where})"
