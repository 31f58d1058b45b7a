import pytest
import torch

from sdetoolkit import get_schedule, list_schedules, make_grid, validate_grid
from sdetoolkit.grids import explicit, list_grids

WINDOWS = {"vp-linear": (1e-3, 1.0), "vp-cosine": (1e-3, 0.9946), "ve": (0.0, 1.0), "edm": (0.002, 80.0),
           "flow": (1e-3, 0.999)}


@pytest.mark.parametrize("schedule_name", list_schedules())
@pytest.mark.parametrize("grid", list_grids())
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_grids_are_valid(schedule_name, grid, n):
    schedule = get_schedule(schedule_name)
    t_min, t_max = WINDOWS[schedule_name]
    times = make_grid(grid, schedule, n, t_min, t_max)
    assert times.dtype == torch.float64 and times.shape == (n + 1,)
    assert times[0].item() == t_max and times[-1].item() == t_min
    assert bool((times[1:] < times[:-1]).all())


def test_uniform_lambda_is_uniform_in_lambda():
    schedule = get_schedule("vp-linear")
    steps = torch.diff(schedule.lam(make_grid("uniform-lambda", schedule, 20, 1e-3, 1.0)))
    torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-10, atol=0)


@pytest.mark.parametrize("schedule_name", ["edm", "vp-linear"])
def test_edm_grid_is_uniform_in_sigma_to_the_one_over_rho(schedule_name):
    schedule = get_schedule(schedule_name)
    t_min, t_max = WINDOWS[schedule_name]
    times = make_grid("edm", schedule, 18, t_min, t_max, rho=7.0)
    root = schedule.sigma_over_alpha(times) ** (1 / 7)
    torch.testing.assert_close(torch.diff(root), torch.diff(root).mean().expand(18), rtol=1e-9, atol=0)


def test_edm_grid_matches_karras_formula():
    """sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, Karras et al. 2022, eq. 5."""
    times = make_grid("edm", get_schedule("edm"), 17, 0.002, 80.0)
    i = torch.arange(18, dtype=torch.float64)
    expected = (80.0 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(times, expected, rtol=1e-13, atol=0)


def test_edm_grid_can_end_at_sigma_zero():
    times = make_grid("edm", get_schedule("edm"), 10, 0.0, 80.0)
    assert times[-1].item() == 0.0 and bool((times[:-1] > 0).all())


def test_time_quadratic_is_uniform_in_sqrt_t():
    times = make_grid("time-quadratic", get_schedule("vp-linear"), 12, 1e-3, 1.0)
    torch.testing.assert_close(torch.diff(times.sqrt()), torch.diff(times.sqrt()).mean().expand(12), rtol=1e-10,
                               atol=0)


def test_explicit_grid_is_validated_and_copied():
    schedule = get_schedule("vp-linear")
    given = torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64)
    grid = explicit(schedule, given)
    assert torch.equal(grid, given) and grid.data_ptr() != given.data_ptr()


@pytest.mark.parametrize("times, message", [
    ([1.0, 0.5, 0.6], r"times: must be strictly decreasing; times\[1\]=0.5 is followed by times\[2\]=0.6"),
    ([1.0, 1.0], "times: must be strictly decreasing"),
    ([1.0], "times: expected a 1-D array of at least 2 times"),
    ([1.5, 0.5], "times: times must lie in the schedule's range"),
    ([1.0, float("nan")], "times: contains NaN or inf"),
])
def test_bad_grids_are_rejected(times, message):
    with pytest.raises(ValueError, match=message):
        validate_grid(times, get_schedule("vp-linear"))


def test_bad_builder_arguments_are_rejected():
    schedule = get_schedule("vp-linear")
    with pytest.raises(ValueError, match="n: expected a positive integer"):
        make_grid("uniform-t", schedule, 0, 1e-3, 1.0)
    with pytest.raises(ValueError, match="name: unknown grid 'logsnr'"):
        make_grid("logsnr", schedule, 10, 1e-3, 1.0)
    with pytest.raises(ValueError, match="t_min: must be below t_max"):
        make_grid("uniform-t", schedule, 10, 0.5, 0.1)
    with pytest.raises(ValueError, match="t_min/t_max: lambda is infinite"):
        make_grid("uniform-lambda", schedule, 10, 0.0, 1.0)
    with pytest.raises(ValueError, match="rho: must be positive"):
        make_grid("edm", schedule, 10, 1e-3, 1.0, rho=0.0)
    with pytest.raises(ValueError, match="t_min/t_max: times must lie in"):
        make_grid("uniform-t", schedule, 10, 1e-3, 2.0)
