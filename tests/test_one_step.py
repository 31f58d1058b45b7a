"""One-step prediction error study: local orders by the interval rule, known mismatches, the SDE law, validation."""

import math

import pytest
import torch

from sdetoolkit.catalogue import get_problem
from sdetoolkit.exact import NonlinearSolverError
from sdetoolkit.findings import findings_for
from sdetoolkit.solvers.base import Claim, Solver, get_solver
from sdetoolkit.studies.one_step import _decay, noise_level, one_step_error

STEPS = [0.05 * 2.0**-k for k in range(6)]
T = 0.3        # lambda = -0.21 on gauss-1d: inside the window, away from both ends

COLUMNS = ["problem", "solver", "steps", "nfe", "seed", "dtype", "metric", "value", "stderr", "t", "s", "h", "lambda_t"]


@pytest.fixture(scope="module")
def gauss():
    return get_problem("gauss-1d")


def study(problem, name, **params):
    return one_step_error(get_solver(name, **params), problem, h=STEPS, t=[T])


def fitted(result, metric):
    return result.fits[(T, metric)]


@pytest.mark.parametrize("name, local", [("ddim", 2), ("euler-t", 2), ("heun-lambda", 3), ("dpmpp-2m", 3),
                                         ("rk3-lambda", 4), ("dpm-solver-3", 4), ("unipc", 4)])
def test_local_order_is_global_order_plus_one(gauss, name, local):
    """A global order p (the claim) shows as local order p + 1, and the neighbours p and p + 2 are excluded."""
    result = study(gauss, name)
    fit = result.fit
    assert result.summary.expected.iloc[0] == local
    assert fit.contains(local), str(fit)
    assert not fit.contains(local - 1) and not fit.contains(local + 1), str(fit)


@pytest.mark.parametrize("name", ["dpmpp-3m", "ipndm"])
def test_known_mismatch_is_visible(gauss, name):
    """dpmpp-3m (D2 missing a factor 2) and iPNDM (equal-step coefficients on a uniform-lambda grid) claim global
    order 3 and 4 but have local order 3, as their findings record (global 2)."""
    finding = next(f for f in findings_for(name) if f.problem == "gauss-1d")
    fit = study(gauss, name).fit
    assert fit.contains(finding.measured + 1), str(fit)
    assert not fit.contains(finding.claimed + 1), str(fit)


def test_table_is_tidy_and_exact(gauss):
    result = study(gauss, "dpmpp-2m")
    assert list(result.table.columns) == COLUMNS
    assert set(result.table.metric) == {"rms"}
    assert result.table.stderr.isna().all()                   # closed form: no sampling error
    assert (result.table.nfe == 1).all() and (result.table.steps == 1).all()
    assert sorted(result.table.h) == sorted(STEPS)
    lam_s = gauss.schedule.lam(torch.tensor(result.table.s.to_numpy()))
    assert torch.allclose(lam_s - result.table.lambda_t.to_numpy()[0], torch.tensor(result.table.h.to_numpy()))
    summary = result.summary.iloc[0]
    h_min = min(STEPS)
    value = result.table.set_index("h").value[h_min]
    assert summary.power == 3 and summary.constant == pytest.approx(value / h_min**3)


def test_amortised_nfe(gauss):
    """UniPC's corrector evaluation is offered to the next step, so its steady step costs one evaluation."""
    assert set(study(gauss, "unipc").table.nfe) == {1}
    assert set(study(gauss, "heun-lambda").table.nfe) == {2}


def test_closed_form_matches_monte_carlo(gauss):
    """The probe computation (exact RMS over p_t) agrees with seeded exact samples within their standard error."""
    exact = study(gauss, "dpmpp-2m").table
    sampled = one_step_error(get_solver("dpmpp-2m"), gauss, h=STEPS, t=[T], method="monte-carlo", n_samples=2000)
    rms = sampled.table[sampled.table.metric == "rms"]
    assert set(sampled.table.metric) == {"rms", "max"}
    z = (exact.value.to_numpy() - rms.value.to_numpy()) / rms.stderr.to_numpy()
    assert abs(z).max() < 3


def test_mixture_against_dop853():
    """On a mixture the reference is DOP853; heun-lambda still shows local order 3."""
    problem = get_problem("gmm-1d-bimodal")
    result = one_step_error(get_solver("heun-lambda"), problem, h=[0.2 * 2.0**-k for k in range(5)], t=[T],
                            n_samples=64)
    fit = result.fit
    assert fit.contains(3) and not fit.contains(2) and not fit.contains(4), str(fit)
    assert (result.table[result.table.metric == "rms"].stderr > 0).all()


def test_default_steps_stop_at_round_off(gauss):
    """Default h: halved from 0.4 until the error reaches the round-off floor; the finest window is fitted."""
    result = one_step_error(get_solver("heun-lambda"), gauss, t=[T])
    errors = result.table.sort_values("h").value.to_numpy()
    marginal = gauss.distribution.noised(gauss.schedule, T)
    floor = 100 * torch.finfo(torch.float64).eps * math.sqrt(float(marginal.covariance().trace()
                                                                   + marginal.mean().square().sum()))
    assert errors[0] <= floor < errors[1]
    fit = result.fit
    assert len(fit.steps) == 6 and fit.contains(3)
    assert result.summary.h_min.iloc[0] == fit.steps[0] > result.table.h.min()


# -- SDE solvers: the law of one step ------------------------------------------------------------------------------
def test_reverse_sde_posterior_mean_is_exact(gauss):
    """SDE-DPM-Solver++1 (eta = 1) is the DDPM posterior with E[x0 | x_t]: its conditional mean is the exact one
    (tower property), so the 'mean' error is round-off; its variance misses the posterior spread of x0, O(h^2)."""
    result = study(gauss, "sde-dpmpp-1")
    assert result.table[result.table.metric == "mean"].value.max() < 1e-14
    assert fitted(result, "var").contains(2) and not fitted(result, "var").contains(3)
    w2 = fitted(result, "w2")
    assert w2.contains(1.5) and not w2.contains(1) and not w2.contains(2), str(w2)


@pytest.mark.parametrize("name, params, weak", [("seeds-2-data", {}, 2), ("ddim-eta", dict(eta=0.5), 1),
                                                ("sde-dpmpp-1", dict(eta=0.3), 1)])
def test_sde_local_orders(gauss, name, params, weak):
    """Variance error p + 1 and W2 p + 1/2 for weak order p; DDIM(eta) is compared with the eta^2-SDE."""
    result = study(gauss, name, **params)
    assert fitted(result, "var").contains(weak + 1), str(fitted(result, "var"))
    w2 = fitted(result, "w2")
    assert w2.contains(weak + 0.5) and not w2.contains(weak) and not w2.contains(weak + 1), str(w2)


def test_wrong_sde_is_inconsistent(gauss):
    """Compared with the wrong SDE (eta = 0.5 for the eta = 1 solver) the variance error is O(h): order 1."""
    result = one_step_error(get_solver("sde-dpmpp-1"), gauss, h=STEPS, t=[T], eta=0.5)
    var = fitted(result, "var")
    assert var.contains(1) and not var.contains(2), str(var)


def test_diffusers_3m_sde_mismatch_is_visible(gauss):
    """diffusers' SDE 3M weight (-phi_3 - 1, finding SDE_3M_DIFFUSERS) puts O(1) weight on the history's noisy second
    difference: its conditional mean error is O(h^1/2); k-diffusion's 3M SDE has O(h^3/2) there."""
    diffusers, kdiffusion = fitted(study(gauss, "sde-dpmpp-3m"), "w2"), fitted(study(gauss, "dpmpp-3m-sde"), "w2")
    assert diffusers.contains(0.5) and not diffusers.contains(1.5), str(diffusers)
    assert kdiffusion.contains(1.5) and not kdiffusion.contains(0.5), str(kdiffusion)


def test_constant_eta_transition_closed_form(gauss):
    r"""For constant eta the decay integral gives the closed form A = (v_s/v_t)^{(1+eta)/2} (alpha_t/alpha_s)^eta."""
    schedule, s_data = gauss.schedule, torch.tensor([0.25, 1.0, 4.0], dtype=torch.float64)
    t, s, eta = 0.6, 0.4, 0.7
    at, as_ = schedule.at(t), schedule.at(s)
    v_t, v_s = at.alpha**2 * s_data + at.sigma**2, as_.alpha**2 * s_data + as_.sigma**2
    decay = _decay(schedule, lambda u: torch.full_like(u, eta), at.lam, as_.lam, s_data)
    coefficient = (v_s / v_t).sqrt() * torch.exp(-decay / 2)
    closed = (v_s / v_t) ** ((1 + eta) / 2) * (at.alpha / as_.alpha) ** eta
    assert torch.allclose(coefficient, closed, rtol=1e-13)


def test_noise_levels(gauss):
    schedule = gauss.schedule
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.equal(noise_level(get_solver("heun-lambda"), schedule)(t), torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(noise_level(get_solver("ddim-eta", eta=0.5), schedule)(t), torch.full((3,), 0.25,
                                                                                                 dtype=torch.float64))
    assert torch.equal(noise_level(get_solver("sa-solver"), schedule)(t), torch.tensor([0.0, 1.0, 0.0],
                                                                                       dtype=torch.float64))
    # ER-SDE phi = s^2 is the reverse SDE (eta = 1), phi = s the ODE (eta = 0)
    assert torch.allclose(noise_level(get_solver("er-sde", noise_scale=2), schedule)(t), torch.ones(3,
                                                                                                     dtype=torch.float64))
    assert torch.allclose(noise_level(get_solver("er-sde", noise_scale=1), schedule)(t), torch.zeros(3,
                                                                                                      dtype=torch.float64),
                          atol=1e-12)


# -- validation ------------------------------------------------------------------------------------------------------
class _Squaring(Solver):
    """Declares itself linear but is not: the superposition check must refuse it."""

    name = "squaring"
    register = False
    family = "test"
    parameterisation = "x0"
    claim = Claim(None, "none", "test")

    def step(self, state):
        return state.x + 0.1 * state.x**2


@pytest.mark.parametrize("call, message", [
    (lambda p: one_step_error("ddim", p), "solver"),
    (lambda p: one_step_error(get_solver("scipy"), p), "solver"),
    (lambda p: one_step_error(get_solver("ddim"), p, h=[]), "h"),
    (lambda p: one_step_error(get_solver("ddim"), p, h=[0.1, -0.1]), "h"),
    (lambda p: one_step_error(get_solver("ddim"), p, h=["a"]), "h"),
    (lambda p: one_step_error(get_solver("ddim"), p, t=[2.0]), "t"),
    (lambda p: one_step_error(get_solver("ipndm"), p, h=[1.0], t=[0.99]), "h"),
    (lambda p: one_step_error(get_solver("ddim"), p, n_samples=1), "n_samples"),
    (lambda p: one_step_error(get_solver("ddim"), p, window=3), "window"),
    (lambda p: one_step_error(get_solver("ddim"), p, dtype=torch.int64), "dtype"),
    (lambda p: one_step_error(get_solver("ddim"), p, reference_rtol=1e-3), "reference_rtol"),
    (lambda p: one_step_error(get_solver("ddim"), p, method="euler"), "method"),
    (lambda p: one_step_error(get_solver("ddpm"), p, method="monte-carlo"), "method"),
    (lambda p: one_step_error(get_solver("ddpm"), p, eta=-1.0), "eta"),
    (lambda p: one_step_error(get_solver("ddpm"), p, eta=lambda t: -torch.ones_like(t), h=STEPS, t=[T]), "eta"),
    (lambda p: one_step_error(get_solver("edm-stochastic"), p), "solver"),
    (lambda p: one_step_error(get_solver("restart"), p), "solver"),
    (lambda p: one_step_error(get_solver("score-sde-pc"), p), "solver"),
    (lambda p: one_step_error(_Squaring(), p, h=STEPS, t=[T]), "solver"),
    (lambda p: one_step_error(get_solver("ddpm"), get_problem("gmm-1d-bimodal")), "problem"),
    (lambda p: one_step_error(get_solver("ddim"), get_problem("gmm-1d-bimodal"), method="exact"), "method"),
])
def test_validation(gauss, call, message):
    with pytest.raises(ValueError, match=f"^{message}:"):
        call(gauss)


def test_nonlinear_solvers_are_refused_with_the_specific_error(gauss):
    with pytest.raises(NonlinearSolverError):
        one_step_error(_Squaring(), gauss, h=STEPS, t=[T])
    with pytest.raises(NonlinearSolverError):
        one_step_error(get_solver("score-sde-pc"), gauss)


def test_too_few_points_are_reported_not_fitted(gauss):
    """A fit that cannot be made (every error at round-off) is a row with NaN and the reason, not an exception."""
    result = one_step_error(get_solver("sde-dpmpp-1"), gauss, h=STEPS, t=[T])
    row = result.summary[result.summary.metric == "mean"].iloc[0]
    assert math.isnan(row.local_order) and "floor" in row.note
