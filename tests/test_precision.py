"""Precision study: round-off floors per dtype, schedule break points derived from each dtype's epsilon, and the
float16 overflow of the mixture's quadratic forms."""

import math

import pytest
import torch

from sdetoolkit import get_problem, get_schedule
from sdetoolkit.solvers.base import Claim, Solver, get_solver
from sdetoolkit.studies.precision import catalogue_limits, precision_study, schedule_limits


def _break(table, dtype, issue):
    row = table[(table.dtype == dtype) & (table.issue == issue)]
    assert len(row) == 1
    return float(row.t_break.iloc[0])


def test_float32_floor_is_well_above_float64_and_below_1e_4():
    """DPM-Solver++(3M, Taylor) on gauss-1d: float64 keeps falling to 1e-10, float32 stalls near 1e-6 (a few
    epsilons); the float32 floor is reached inside the range and its round-off points are named."""
    steps = [8, 16, 32, 64, 128, 256, 512, 1024]
    study = precision_study(get_solver("dpmpp-3m-taylor"), get_problem("gauss-1d"), steps,
                            dtypes=("float64", "float32"), n_samples=16)
    floors = study.floors.set_index("dtype")
    assert floors.loc["float32", "reached"]
    assert floors.loc["float32", "floor_steps"] < 1024
    assert "round-off plateau" in study.fits["float32"].drop_reasons
    assert floors.loc["float32", "floor"] < 1e-4
    assert floors.loc["float32", "floor"] > 100 * floors.loc["float64", "floor"]
    assert floors.loc["float32", "floor"] > torch.finfo(torch.float32).eps
    rms = study.table[study.table.metric == "rms"].pivot(index="steps", columns="dtype", values="value")
    assert rms.loc[8, "float32"] == pytest.approx(rms.loc[8, "float64"], rel=1e-4)  # truncation dominates there
    roundoff = study.table[study.table.metric == "w2-roundoff"]
    assert set(roundoff.dtype) == {"float32"}
    assert (roundoff.value < 1e-5).all() and (roundoff.value > 0).all()
    assert set(study.table.metric) == {"rms", "max", "w2", "w2-roundoff", "w2-bound"}


def _root(b0, b1, c):
    """The positive root of (b1 - b0) t^2 / 2 + b0 t = c."""
    return 2 * c / (b0 + math.sqrt(b0**2 + 2 * (b1 - b0) * c))


def test_vp_linear_alpha_bar_rounds_to_one_where_the_epsilon_says():
    r"""Just below 1 the spacing is eps/2, so alpha_bar rounds to 1 iff 1 - alpha_bar <= q = eps/4 (the midpoint
    rounds to even, 1). torch rounds float64 through float32, whose spacing below 1 is eps_32/2: values up to half of
    it beyond the midpoint become the midpoint first, so q = eps/4 + eps_32/4. With
    :math:`1 - \bar\alpha = -\mathrm{expm1}(-(b_1-b_0)t^2/2 - b_0 t)` the break is the positive root of
    :math:`(b_1-b_0)t^2/2 + b_0 t = -\log(1 - q)`."""
    b0, b1 = 0.1, 20.0
    table = schedule_limits(get_schedule("vp-linear", beta_min=b0, beta_max=b1), ("float16", "bfloat16", "float64"))
    for dtype in (torch.float16, torch.bfloat16):
        q = torch.finfo(dtype).eps / 4 + torch.finfo(torch.float32).eps / 4
        expected = _root(b0, b1, -math.log1p(-q))
        assert _break(table, str(dtype)[6:], "alpha-bar-rounds-to-1") == pytest.approx(expected, rel=1e-9)
    assert not table[table.dtype == "float64"].breaks.any()


def test_float16_sigma_squared_overflows_and_sigma_underflows_where_the_format_says():
    """EDM sigma = t: sigma^2 rounds to inf from the midpoint max + ulp(max)/2 on, ulp(max) = eps * 2^emax, less half
    a float32 spacing there (2^-9: torch rounds through float32); sigma rounds to 0 up to half the smallest subnormal,
    tiny * eps / 2. bfloat16 has float32's range: no overflow below 1000."""
    table = schedule_limits(get_schedule("edm", sigma_max=1000.0), ("float16", "bfloat16"))
    info = torch.finfo(torch.float16)
    emax = 2.0 ** math.floor(math.log2(info.max))
    threshold = info.max + info.eps * emax / 2 - emax * torch.finfo(torch.float32).eps / 2
    assert _break(table, "float16", "sigma-squared-overflow") == pytest.approx(math.sqrt(threshold), rel=1e-12)
    assert _break(table, "float16", "sigma-underflow") == pytest.approx(info.tiny * info.eps / 2, rel=1e-12)
    assert _break(table, "float16", "sigma-subnormal") == pytest.approx(info.tiny, rel=1e-3)
    bf16 = table[table.dtype == "bfloat16"].set_index("issue").breaks
    assert not bf16["sigma-squared-overflow"] and not bf16["alpha-bar-rounds-to-1"]


def test_catalogue_windows_reached_by_a_break():
    table = catalogue_limits(("float32", "float16"), problems=["gauss-1d", "gauss-diag-d1024"])
    hit = set(zip(table.problem, table.dtype, table.issue, strict=True))
    assert ("gauss-1d", "float16", "alpha-bar-rounds-to-1") in hit       # t_min = 1e-3 < 2.03e-3
    assert ("gauss-1d", "float16", "alpha-bar-subnormal") in hit         # alpha(1)^2 = 4.3e-5 < 6.1e-5
    assert not (table.dtype == "float32").any()
    assert not (table.problem == "gauss-diag-d1024").any()               # EDM, sigma in [0.002, 80]


def test_float16_mixture_score_survives_a_far_prior_draw():
    """|x| = 269 at sigma = 80 (a 3.4-sigma prior draw): x^2 overflows float16, the score does not. x0 is a sum of
    terms of the size of the means (|mu| <= 2): it is good to float16's resolution there, 2 eps |mu|."""
    problem = get_problem("gmm-grid25-2d")
    x = torch.tensor([[52.5, 269.0]], dtype=torch.float64)
    x0, score = problem.distribution.x0_and_score(x.half(), problem.schedule, 80.0)
    x0_ref, score_ref = problem.distribution.x0_and_score(x, problem.schedule, 80.0)
    assert x0.dtype == torch.float16
    assert torch.allclose(score.double(), score_ref, rtol=1e-2, atol=1e-6)
    assert torch.allclose(x0.double(), x0_ref, rtol=0, atol=4 * torch.finfo(torch.float16).eps)


def test_grid_that_does_not_survive_rounding_is_recorded_not_run():
    """bfloat16 has 8 significant bits: a 512-step grid has neighbours that round to one time."""
    study = precision_study(get_solver("ddim"), get_problem("gauss-1d"), [4, 512], dtypes=("bfloat16",), n_samples=4)
    assert list(study.issues.steps) == [512] and list(study.issues.issue) == ["grid"]
    assert "strictly decreasing" in study.issues.detail.iloc[0]
    assert set(study.table.steps) == {4}


class _Amplifying(Solver):
    """DDIM's evaluation, then x * 1e5 / 1e5: the identity in float64, inf in float16."""

    name = "amplifying-test"
    family = "test"
    parameterisation = "x0"
    register = False
    claim = Claim(None, "none", "test")

    def step(self, state):
        state.current()
        return state.x * 1e5 / 1e5


def test_low_precision_divergence_is_recorded_and_float64_divergence_raises():
    study = precision_study(_Amplifying(), get_problem("gauss-1d"), [2, 3], dtypes=("float64", "float16"),
                            n_samples=4)
    assert set(study.issues.issue) == {"diverged"} and set(study.issues.dtype) == {"float16"}
    assert set(study.table.dtype) == {"float64"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=[8]), "steps"),
    (dict(dtypes=("float8",)), "dtypes"),
    (dict(dtypes=("float32", "float32")), "dtypes"),
    (dict(n_samples=1), "n_samples"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments_are_named(kwargs, match):
    args = dict(steps=[4, 8]) | kwargs
    with pytest.raises(ValueError, match=match):
        precision_study(get_solver("ddim"), get_problem("gauss-1d"), args.pop("steps"), **args)


def test_schedule_limits_needs_a_schedule():
    with pytest.raises(TypeError, match="schedule"):
        schedule_limits("vp-linear")
