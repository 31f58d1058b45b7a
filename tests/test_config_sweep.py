"""The configuration sweep: every solver on a grid ending at sigma = 0, and every choice-valued parameter of every
solver family, which must change the output wherever the mathematics says it should."""

import pytest
import torch

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import IIDNoise
from sdetoolkit.solvers import get_solver, list_solvers, sample
from sdetoolkit.solvers.base import _REGISTRY

FAMILIES = sorted(name for name, (cls, _) in _REGISTRY.items() if name == cls.name)

NO_EFFECT = {
    ("er-sde", "form", "vp"): "the VP and VE forms are one update in two sets of variables (an identity under test)",
}
"""(solver, parameter, value) whose change is expected to leave this test's output unchanged, with the reason."""

CONTEXT = {
    ("dpmpp-multistep", "third_order_term"): dict(order=3),
    ("sde-dpmpp-multistep", "third_order"): dict(order=3),
    ("seeds-data", "stage3"): dict(order=3),
}
"""Parameters that act only in another parameter's setting (a third-order term needs order 3)."""


def choices():
    for name in FAMILIES:
        cls = _REGISTRY[name][0]
        default = get_solver(name)
        for key, spec in cls.params.items():
            for value in spec.choices or ():
                if value != default.config[key]:
                    yield pytest.param(name, key, value, id=f"{name}-{key}={value}")


def run(solver, problem, grid, x):
    return sample(solver, problem.model(), grid, x, IIDNoise(0) if solver.stochastic else None)


@pytest.fixture(scope="module")
def setting():
    """A VP problem, 7 uniform-lambda steps (fewer than every lower_order_final threshold; 7 mod 2, 3 != 0)."""
    problem = get_problem("gauss-full-d16")
    grid = make_grid("uniform-lambda", problem.schedule, 7, problem.t_min, problem.t_max)
    return problem, grid, problem.prior().sample(6, torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("name", "key", "value"), list(choices()))
def test_every_choice_changes_the_output(setting, name, key, value):
    problem, grid, x = setting
    context = CONTEXT.get((name, key), {})
    base = run(get_solver(name, **context), problem, grid, x)
    try:
        changed_solver = get_solver(name, **context, **{key: value})
    except ValueError as err:
        pytest.fail(f"{name}: choice {key}={value!r} is offered but rejected: {err}")
    changed = run(changed_solver, problem, grid, x)
    assert torch.isfinite(changed).all()
    identical = torch.allclose(base, changed, rtol=1e-9, atol=0)
    assert identical == ((name, key, value) in NO_EFFECT), f"{name}: {key}={value!r} identical={identical}"


@pytest.mark.parametrize("name", list_solvers())
def test_grid_ending_at_sigma_zero(name):
    """The final denoising step of an EDM grid: finite output with the declared NFE, or a clear refusal."""
    problem = get_problem("gmm-grid25-2d")
    grid = make_grid("edm", problem.schedule, 7, 0.0, problem.t_max)
    solver = get_solver(name)
    x = problem.prior().sample(4, torch.Generator().manual_seed(0))
    if solver.reaches_sigma_zero is not None:
        with pytest.raises(ValueError, match="grid: ends at sigma = 0"):
            run(solver, problem, grid, x)
        return
    model = problem.model()
    out = sample(solver, model, grid, x, IIDNoise(0) if solver.stochastic else None)
    assert torch.isfinite(out).all()
    expected = solver.expected_nfe(grid)
    assert expected is None or model.nfe == expected


def checked_parameters():
    for name in FAMILIES:
        for key, spec in _REGISTRY[name][0].params.items():
            if spec.check is not None and spec.choices is None and not callable(spec.default):
                yield pytest.param(name, key, id=f"{name}-{key}")


@pytest.mark.parametrize(("name", "key"), list(checked_parameters()))
def test_bad_parameter_values_get_a_clear_error(name, key):
    """A string, NaN or a bool where a number belongs: a ValueError naming the parameter, never a TypeError."""
    for bad in ("fast", float("nan"), True):
        if bad is True and isinstance(_REGISTRY[name][0].params[key].default, bool):
            continue
        with pytest.raises(ValueError, match=f"^{key}: invalid value"):
            get_solver(name, **{key: bad})
