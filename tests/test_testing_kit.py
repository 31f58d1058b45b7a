"""The testing kit: the strategies make valid objects with the properties asked for; each assertion passes on correct
solvers and fails, with the evidence in its message, on a planted bug; the pytest plugin loads through its entry
point and imports nothing heavy; the tutorial's solver and tests pass as a user would run them, and its planted bug
gives the message the tutorial shows."""

import contextlib
import importlib.util
import math
import pathlib
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from sdetoolkit import reference_facts
from sdetoolkit.noise import IIDNoise
from sdetoolkit.schedules import NoiseSchedule, get_schedule
from sdetoolkit.solvers import Solver, base
from sdetoolkit.solvers.base import Claim, Param
from sdetoolkit.testing import (
    SCHEDULE_PARAMETERS,
    assert_converges_to_truth,
    assert_deterministic,
    assert_order,
    assert_reduces_to,
    catalogue_problem,
    gaussians,
    grids,
    make_solver,
    mixtures,
    schedules,
    seeds,
    spd_matrices,
    spectra,
)

pytest_plugins = ["pytester"]

ROOT = pathlib.Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "tutorial-new-solver.md"
ENTRY_POINTS = "[pytest11]\nsdetoolkit = sdetoolkit.pytest_plugin\n"
"""What ``[project.entry-points.pytest11] sdetoolkit = "sdetoolkit.pytest_plugin"`` in pyproject.toml installs."""


def test_pyproject_declares_the_entry_point_the_tests_install():
    with open(ROOT / "pyproject.toml", "rb") as handle:
        declared = tomllib.load(handle)["project"]["entry-points"]["pytest11"]
    assert ENTRY_POINTS == "[pytest11]\n" + "".join(f"{k} = {v}\n" for k, v in declared.items())


# -- solvers with planted bugs (register = False: they stay out of the registry) ---------------------------------
class TwoStep(Solver):
    """DPM-Solver++(2M) without final-step lowering; ``weight`` is the first difference's (1/2 is correct)."""

    name = "kit-two-step"
    family = "test"
    parameterisation = "x0"
    history = 1
    register = False
    claim = Claim(2, "global", "Lu et al. 2022b, DPM-Solver++(2M)")
    params = {"weight": Param(0.5, "weight of the first difference")}

    def step(self, state):
        x0 = state.current()
        lam = state.lam(state.t)
        h = state.lam(state.t_next) - lam
        if state.history:
            prev = state.history[0]
            x0 = x0 + self.weight * h / (lam - prev.lam) * (x0 - prev.output)
        return (state.sigma(state.t_next) / state.sigma(state.t)) * state.x - state.alpha(state.t_next) * math.expm1(
            -h) * x0


class Ancestral(Solver):
    """DDIM(eta = 1) with a plain normal draw; ``noise_scale`` multiplies the noise (1 is correct) and ``source``
    says where the draw comes from ('state' is correct)."""

    name = "kit-ancestral"
    family = "test"
    parameterisation = "eps"
    stochastic = True
    register = False
    claim = Claim(None, "none", "DDIM with eta = 1")
    params = {"noise_scale": Param(1.0, "factor on the noise"),
              "source": Param("state", "the noise: the run's source, torch's global RNG, or a fixed generator",
                              choices=("state", "global", "fixed"))}

    def step(self, state):
        eps = state.current()
        x0 = (state.x - state.sigma(state.t) * eps) / state.alpha(state.t)
        sigma_next = state.sigma(state.t_next)
        fraction = -math.expm1(-2.0 * (state.lam(state.t_next) - state.lam(state.t)))
        if self.source == "state":
            z = state.normal()
        elif self.source == "global":
            z = torch.randn_like(state.x)
        else:
            z = torch.randn(state.x.shape, generator=torch.Generator().manual_seed(state.i), dtype=state.x.dtype)
        return (state.alpha(state.t_next) * x0 + sigma_next * math.sqrt(1.0 - fraction) * eps
                + self.noise_scale * sigma_next * math.sqrt(fraction) * z)


class Undeclared(Ancestral):
    """Draws noise but declares itself deterministic."""

    stochastic = False


# -- strategies ---------------------------------------------------------------------------------------------------
def raises_on_draw(strategy, match):
    @settings(max_examples=1, database=None, phases=[Phase.generate])
    @given(strategy)
    def draw(_):
        pass

    with pytest.raises(ValueError, match=match):
        draw()


@settings(max_examples=15)
@given(st.data())
def test_spectra_and_spd_matrices_have_the_condition_number_asked(data):
    dim, condition = data.draw(st.integers(2, 5)), data.draw(st.floats(1.0, 1e4))
    eig = data.draw(spectra(dim, condition=condition))
    assert eig.shape == (dim,) and eig.min() >= 1e-3 * (1 - 1e-12) and eig.max() <= 10 * (1 + 1e-12)
    assert eig.max() / eig.min() == pytest.approx(condition, rel=1e-9)
    matrix = data.draw(spd_matrices(dim, condition=condition))
    np.testing.assert_allclose(matrix, matrix.T, rtol=0, atol=1e-12)
    values = np.linalg.eigvalsh(matrix)
    assert values.min() > 0 and values.max() / values.min() == pytest.approx(condition, rel=1e-6)


@settings(max_examples=15)
@given(st.data())
def test_gaussians_have_the_condition_number_asked(data):
    condition = data.draw(st.floats(1.0, 100.0))
    gaussian = data.draw(gaussians(dims=st.integers(2, 4), kinds=st.sampled_from(["diagonal", "full"]),
                                   condition=condition))
    assert reference_facts(gaussian)["condition_number"] == pytest.approx(condition, rel=1e-6)


@settings(max_examples=20)
@given(st.data())
def test_mixtures_have_the_components_separation_and_weights_asked(data):
    count, separation = data.draw(st.integers(2, 5)), data.draw(st.floats(0.5, 6.0))
    ratio = data.draw(st.sampled_from([1.0, 4.0]))
    mixture = data.draw(mixtures(components=st.just(count), separation=separation, weight_ratio=ratio))
    facts = reference_facts(mixture)
    assert mixture.n_components == count
    assert facts["mode_separation"] == pytest.approx(separation, rel=1e-9)
    weights = mixture.weights.numpy()
    assert weights.sum() == pytest.approx(1.0) and weights.max() / weights.min() <= ratio * (1 + 1e-12)


@settings(max_examples=10)
@given(schedules(parameters=True))
def test_schedules_draw_their_parameters_in_range(schedule):
    assert isinstance(schedule, NoiseSchedule) and schedule.t_lo < schedule.t_hi
    for key, value in schedule.params.items():
        assert key in SCHEDULE_PARAMETERS[schedule.name] and value > 0


@settings(max_examples=20)
@given(st.data())
def test_grids_are_decreasing_inside_the_range_with_bounded_step_ratios(data):
    schedule = data.draw(schedules(parameters=True))
    spacing = data.draw(st.sampled_from(["t", "lambda"]))
    n = data.draw(st.integers(1, 12))
    grid = data.draw(grids(schedule, steps=st.just(n), spacing=spacing, step_ratio=50.0))
    width = schedule.t_hi - schedule.t_lo
    assert grid.dtype == torch.float64 and len(grid) == n + 1 and bool((grid[1:] < grid[:-1]).all())
    assert float(grid[0]) == schedule.t_hi - 1e-3 * width and float(grid[-1]) == schedule.t_lo + 1e-3 * width
    sizes = (-torch.diff(grid)) if spacing == "t" else torch.diff(schedule.lam(grid))
    assert float(sizes.max() / sizes.min()) <= 50.0 * (1 + 1e-6)


@settings(max_examples=5)
@given(seeds())
def test_seeds_drive_the_noise_sources(seed):
    like = torch.zeros(3, 2, dtype=torch.float64)
    assert torch.equal(IIDNoise(seed).normal(1.0, 0.5, like), IIDNoise(seed).normal(1.0, 0.5, like))


def test_strategies_reject_impossible_requests():
    raises_on_draw(spectra(3, condition=0.5), "condition: expected a finite number >= 1")
    raises_on_draw(spectra(1, condition=10.0), "condition: a 1-d covariance")
    raises_on_draw(spectra(3, condition=1e6), "exceeds max_eig/min_eig")
    raises_on_draw(gaussians(dims=st.just(2), kinds=st.just("isotropic"), condition=10.0), "isotropic")
    raises_on_draw(mixtures(components=st.just(2), separation=-1.0), "separation")
    raises_on_draw(mixtures(weight_ratio=0.5), "weight_ratio")
    raises_on_draw(grids(get_schedule("edm"), spacing="sigma"), "spacing")


# -- make_solver --------------------------------------------------------------------------------------------------
def test_make_solver_takes_names_classes_and_instances():
    assert make_solver("ddim-eta", eta=0.5).eta == 0.5
    assert make_solver(TwoStep, weight=0.6).weight == 0.6
    solver = make_solver("sde-dpmpp-2m")
    rebuilt = make_solver(solver, eta=0.0)
    assert rebuilt.name == "sde-dpmpp-2m" and rebuilt.eta == 0.0 and solver.eta == 1.0 and not rebuilt.stochastic
    assert make_solver(solver) is solver
    with pytest.raises(ValueError, match="solver: expected a registered name"):
        make_solver(3)
    with pytest.raises(ValueError, match="kind: expected one of"):
        assert_order("ddim", 1, kind="global")


# -- assert_order -------------------------------------------------------------------------------------------------
def test_assert_order_passes_on_correct_solvers():
    assert set(assert_order("ddim", 1)) == {("gauss-1d", "rms")}
    fits = assert_order(TwoStep, 2)
    assert fits["gauss-1d", "rms"].contains(2)


def test_assert_order_fails_on_a_perturbed_coefficient():
    with pytest.raises(AssertionError) as failure:
        assert_order(TwoStep(weight=0.6), 2)
    message = str(failure.value)
    assert "kit-two-step[weight=0.6], ode order of rms on gauss-1d" in message
    assert re.search(r"expected 2 lies outside the fitted interval \[0\.\d+, 1\.\d+\]", message)
    assert "local slope" in message and "claim: global order 2" in message and "recorded finding: none" in message


def test_assert_order_shows_the_recorded_finding():
    with pytest.raises(AssertionError, match="recorded finding: global order measured 2 vs claimed 3 on gauss-1d"):
        assert_order("dpmpp-3m", 3)
    assert_order("dpmpp-3m", 2)


def test_assert_order_refuses_an_interval_that_cannot_tell_the_orders_apart():
    with pytest.raises(AssertionError, match=r"inconclusive: the interval \[0\.970, 1\.015\] also holds 0\.99"):
        assert_order("ddim", 1, resolve=0.01)


def test_assert_order_weak_exact_passes_and_catches_a_wrong_noise_scale():
    assert_order(Ancestral, 1, kind="weak")
    with pytest.raises(AssertionError, match=r"kit-ancestral\[noise_scale=1.05\], weak order of w2 on gauss-1d"):
        assert_order(Ancestral(noise_scale=1.05), 1, kind="weak")


def test_assert_order_strong_shows_the_euler_maruyama_finding():
    with pytest.raises(AssertionError, match=r"(?s)expected 0.5 lies outside.*bootstrap interval.*recorded finding: "
                                             "strong order measured 1 vs claimed 0.5"):
        assert_order("euler-maruyama", 0.5, kind="strong", n_samples=100)


# -- assert_converges_to_truth ------------------------------------------------------------------------------------
def test_rate_without_limit_a_wrong_noise_scale_converges_strongly_to_the_wrong_answer():
    """The strong order compares a solver with itself on a finer grid, so a 5% too loud noise keeps strong order 1;
    only the limit test sees that it samples the wrong distribution."""
    loud = Ancestral(noise_scale=1.05)
    assert_order(loud, 1, kind="strong", n_samples=100)
    with pytest.raises(AssertionError, match=r"w2/sqrt\(d\): the finest error 2\.256e-02 at 1024 steps exceeds"):
        assert_converges_to_truth(loud)
    table = assert_converges_to_truth(Ancestral())
    assert list(table.steps) == [16, 64, 256, 1024] and (table.error.diff().dropna() < 0).all()


def test_assert_converges_to_truth_on_a_mixture():
    table = assert_converges_to_truth(Ancestral(), "gmm-1d-bimodal", n_samples=2000)
    assert set(table.metric) == {"mean:u0", "second:u0", "ecf:u0:r1", "ecf:u0:r2"} and (table.stderr > 0).all()
    with pytest.raises(AssertionError, match=r"second:u0: the finest error .* \+ 2 SE = .* at 1024 steps exceeds"):
        assert_converges_to_truth(Ancestral(noise_scale=1.2), "gmm-1d-bimodal", n_samples=2000)


# -- assert_reduces_to --------------------------------------------------------------------------------------------
def test_zero_noise_gives_the_ode_solver():
    assert_reduces_to("ddim-eta", "ddim", when={"eta": 0})
    assert_reduces_to("sde-dpmpp-2m", "dpmpp-2m", when={"eta": 0, "lower_order_final_below": 10}, steps=(6, 12, 20))
    assert_reduces_to(TwoStep, "ddim", when={"weight": 0.0})
    assert_reduces_to(TwoStep, "dpmpp-2m", steps=(12, 20))


def test_assert_reduces_to_names_the_step_where_the_trajectories_part():
    with pytest.raises(AssertionError, match=r"kit-two-step\[weight=0.6\] is not dpmpp-2m .*\n  gauss-1d, 12 steps: "
                                             r"the trajectories part at step 1 \(t = 0.916701 -> 0.825125\)"):
        assert_reduces_to(TwoStep, "dpmpp-2m", when={"weight": 0.6}, steps=(12,))
    # diffusers lowers the final order below 15 steps in the SDE solver, below 10 in the ODE one
    with pytest.raises(AssertionError, match=r"12 steps: the trajectories part at step 11 \(t = 0.00390878 -> 0.001\)"):
        assert_reduces_to("sde-dpmpp-2m", "dpmpp-2m", when={"eta": 0}, steps=(12,), problems=["gauss-1d"])


# -- assert_deterministic -----------------------------------------------------------------------------------------
def test_assert_deterministic_passes_on_correct_solvers():
    assert_deterministic("ddim")
    assert_deterministic(Ancestral(), "gmm-1d-bimodal")
    assert_deterministic("ddpm")


def test_assert_deterministic_catches_the_global_rng_a_fixed_generator_and_an_undeclared_noise():
    with pytest.raises(AssertionError, match=r"two runs with noise seed 0 differ.*torch's global RNG"):
        assert_deterministic(Ancestral(source="global"))
    with pytest.raises(AssertionError, match="noise seeds 0 and 1 give identical outputs for 8 of 8 samples"):
        assert_deterministic(Ancestral(source="fixed"))
    with pytest.raises(AssertionError, match=r"declared deterministic \(stochastic = False\), but noise seeds"):
        assert_deterministic(Undeclared())


# -- the pytest plugin and the tutorial ---------------------------------------------------------------------------
def test_importing_the_plugin_imports_neither_torch_nor_sympy():
    probe = ("import sys, sdetoolkit.pytest_plugin; "
             "print(sorted(m for m in ('torch', 'sympy', 'numpy', 'pandas', 'hypothesis') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "[]\n"


def install_entry_point(pytester):
    """A distribution on the subprocess's path that declares the entry point pyproject.toml is to declare."""
    info = pytester.path / "sdetoolkit_plugin_probe-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sdetoolkit-plugin-probe\nVersion: 0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)


def test_the_entry_point_provides_the_fixtures_and_imports_nothing_heavy(pytester):
    install_entry_point(pytester)
    pytester.makeconftest("""
        import sys

        def pytest_unconfigure(config):
            print("heavy modules:", sorted(m for m in ("torch", "sympy") if m in sys.modules))
    """)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["heavy modules: []"])
    listing = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider").stdout.str()
    for fixture in ("sdetoolkit_problem", "gauss_1d", "gmm_1d_bimodal", "solver_factory"):
        assert re.search(rf"^{fixture} \[session scope\] -- .*sdetoolkit/pytest_plugin.py", listing, re.M), fixture


def tutorial_blocks() -> list[str]:
    return re.findall(r"```(?:python|text)\n(.*?)```", TUTORIAL.read_text(), re.S)


def test_the_tutorial_shows_the_tested_code():
    blocks = tutorial_blocks()
    assert (ROOT / "tests" / "tutorial_solver.py").read_text() in blocks
    assert (ROOT / "tests" / "tutorial_tests.py").read_text() in blocks


@contextlib.contextmanager
def tutorial_solver(source: str):
    """``source`` run as the module ``my_solver`` (the tutorial's name for the file). On exit the registry and
    ``sys.modules`` are restored, so the tutorial's solver stays out of this session's registry."""
    saved_registry, saved_module = dict(base._REGISTRY), sys.modules.get("my_solver")
    module = types.ModuleType("my_solver")
    sys.modules["my_solver"] = module
    try:
        exec(compile(source, "my_solver.py", "exec"), vars(module))
        yield module
    finally:
        base._REGISTRY.clear()
        base._REGISTRY.update(saved_registry)
        if saved_module is None:
            del sys.modules["my_solver"]
        else:
            sys.modules["my_solver"] = saved_module


def test_the_tutorial_tests_pass():
    """The tutorial's test functions, called here with the fixtures' values (the slow test below runs the two files
    as a user does, in a fresh process)."""
    with tutorial_solver((ROOT / "tests" / "tutorial_solver.py").read_text()):
        spec = importlib.util.spec_from_file_location("tutorial_tests", ROOT / "tests" / "tutorial_tests.py")
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
        for name in ("gauss-1d", "gmm-1d-bimodal"):
            tests.test_rate(catalogue_problem(name))
        tests.test_limit(catalogue_problem("gauss-1d"))
        tests.test_one_step_is_ddim()
        tests.test_reproducible(make_solver)
        tests.test_the_rate_needs_steps_that_vary_smoothly_in_lambda()


def test_the_tutorial_bug_fails_with_the_message_it_shows():
    source = (ROOT / "tests" / "tutorial_solver.py").read_text()
    line = "math.expm1(-h2) * x0\n"
    assert source.count(line) == 1
    with tutorial_solver(source.replace(line, "math.expm1(-h2) * prev.output\n")) as buggy:
        with pytest.raises(AssertionError) as failure:
            assert_order(buggy.ExpLeapfrog(), 2, problems=["gauss-1d"])
    shown = next(block for block in tutorial_blocks() if "AssertionError: assert_order" in block)
    expected = [line.removeprefix("E").strip() for line in shown.splitlines() if line.startswith("E ")]
    assert [line.strip() for line in str(failure.value).splitlines()] == [
        expected[0].removeprefix("AssertionError: "), *expected[1:]]


@pytest.mark.slow
def test_the_tutorial_passes_as_a_user_runs_it(pytester):
    """The tutorial's two files in a fresh directory and process, the fixtures through the entry point."""
    install_entry_point(pytester)
    pytester.makepyfile(my_solver=(ROOT / "tests" / "tutorial_solver.py").read_text(),
                        test_my_solver=(ROOT / "tests" / "tutorial_tests.py").read_text())
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=6)
