"""SEEDS-1/2/3 (Gonzalez et al. 2023): official stage formulas, path pieces of the stage noises, identities, truth."""

import math

import pytest
import torch
from test_sde_dpm_solver_pp import moment_z_scores

from sdetoolkit import get_problem, make_grid
from sdetoolkit.noise import BrownianPath, IIDNoise, NoiseSource, gram_factor
from sdetoolkit.solvers import get_solver, sample
from sdetoolkit.solvers.seeds import NODES


@pytest.fixture(scope="module")
def problem():
    return get_problem("gauss-full-d16")


def start(problem, n=8, seed=0):
    return problem.prior().sample(n, torch.Generator().manual_seed(seed)).to(torch.float64)


class Pieces(NoiseSource):
    """One kernel per call: returns sqrt(int K^2) times the next preset normal, recording the intervals."""

    def __init__(self, z):
        super().__init__(0)
        self.z, self.calls = z, []

    def reset(self):
        self.calls = []

    def integrals(self, t_hi, t_lo, kernels, like, copy=0):
        (kernel,) = kernels
        self.calls.append((t_hi, t_lo, kernel.name))
        scale = gram_factor([kernel], torch.tensor([t_lo], dtype=torch.float64),
                            torch.tensor([t_hi], dtype=torch.float64))[0, 0, 0]
        return (scale * self.z[len(self.calls) - 1],)


def official_step(problem, x, t, t_next, order, noise_pred, z, repo_stage3=False):
    """One step of nfsrules/SEEDS etd_serk.py (2a / 3a), written out; z are the normalised path pieces (its noise
    enters with a minus sign, immaterial in law; here the pieces enter with +, as in the exact solution)."""
    sch, model = problem.schedule, problem.model()
    lam = lambda u: float(sch.lam(u))                                     # noqa: E731
    al, si = (lambda u: float(sch.alpha(u))), (lambda u: float(sch.sigma(u)))
    h = lam(t_next) - lam(t)
    c = {1: [], 2: [0.5], 3: [1 / 3, 2 / 3]}[order]
    ts = [float(sch.t_of_lambda(torch.tensor(lam(t) + ck * h, dtype=torch.float64))) for ck in c] + [t_next]
    if noise_pred:
        e = lambda y, u: (y - al(u) * model(y, u).x0) / si(u)             # noqa: E731
        psi = lambda a: math.sqrt(math.expm1(2 * h * a))                  # noqa: E731
        base = lambda u, a: al(u) / al(t) * x - 2 * si(u) * math.expm1(a * h) * e(x, t)  # noqa: E731
        if order == 1:
            return base(t_next, 1) + si(t_next) * psi(1) * z[0]
        if order == 2:   # path noise: exact weights (official differs only for c2 != 1/2)
            x2 = base(ts[0], 0.5) + si(ts[0]) * psi(0.5) * z[0]
            n2 = si(t_next) * (math.exp(h / 2) * psi(0.5) * z[0] + psi(0.5) * z[1])
            return base(t_next, 1) - 2 * si(t_next) * math.expm1(h) * (e(x2, ts[0]) - e(x, t)) + n2
        p = psi(1 / 3)
        x2 = base(ts[0], 1 / 3) + si(ts[0]) * p * z[0]
        x3 = (base(ts[1], 2 / 3) - 4 * si(ts[1]) * (math.expm1(2 * h / 3) / (2 * h / 3) - 1) * (e(x2, ts[0]) - e(x, t))
              + si(ts[1]) * (math.exp(h / 3) * p * z[0] + p * z[1]))
        n3 = si(t_next) * (math.exp(2 * h / 3) * p * z[0] + math.exp(h / 3) * p * z[1] + p * z[2])
        return base(t_next, 1) - 3 * si(t_next) * (math.expm1(h) / h - 1) * (e(x3, ts[1]) - e(x, t)) + n3
    d = lambda y, u: model(y, u).x0                                      # noqa: E731
    psi = lambda a: math.sqrt(-math.expm1(-2 * h * a))                   # noqa: E731
    gamma = lambda u: (si(u) ** 2 / si(t) ** 2) * (al(t) / al(u))        # noqa: E731
    base = lambda u, a: gamma(u) * x - al(u) * math.expm1(-2 * a * h) * d(x, t)  # noqa: E731
    if order == 1:
        return base(t_next, 1) + si(t_next) * psi(1) * z[0]
    if order == 2:
        x2 = base(ts[0], 0.5) + si(ts[0]) * psi(0.5) * z[0]
        n2 = si(t_next) * psi(0.5) * z[1] + si(t_next) * psi(0.5) * math.exp(-0.5 * h) * z[0]
        return base(t_next, 1) - (0.5 / 0.5) * al(t_next) * math.expm1(-2 * h) * (d(x2, ts[0]) - d(x, t)) + n2
    p = psi(1 / 3)
    x2 = base(ts[0], 1 / 3) + si(ts[0]) * p * z[0]
    weight = (math.expm1(-2 * h / 3) / (h / 3) + 1) if repo_stage3 else (math.expm1(-4 * h / 3) / (4 * h / 3) + 1)
    x3 = (base(ts[1], 2 / 3) + 2 * al(ts[1]) * weight * (d(x2, ts[0]) - d(x, t))
          + si(ts[1]) * p * z[1] + si(ts[1]) * p * math.exp(-h / 3) * z[0])
    n3 = si(t_next) * (p * z[2] + p * math.exp(-h / 3) * z[1] + p * math.exp(-2 * h / 3) * z[0])
    phi_2 = math.expm1(-2 * h) / (2 * h) + 1
    return base(t_next, 1) + 1.5 * al(t_next) * phi_2 * (d(x3, ts[1]) - d(x, t)) + n3


@pytest.mark.parametrize("name, order, noise_pred, repo", [
    ("seeds-1-data", 1, False, False), ("seeds-2-data", 2, False, False), ("seeds-3-data", 3, False, False),
    ("seeds-3-data-repo", 3, False, True), ("seeds-1-noise", 1, True, False), ("seeds-2-noise", 2, True, False),
    ("seeds-3-noise", 3, True, False)])
def test_one_step_matches_the_official_stages_with_path_pieces(problem, name, order, noise_pred, repo):
    t, t_next = 0.7, 0.35
    x = start(problem)
    z = [torch.randn(x.shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in range(3)]
    source = Pieces(z)
    y = sample(get_solver(name), problem.model(), torch.tensor([t, t_next], dtype=torch.float64), x, source)
    # the stage noises are asked as consecutive pieces [s_k, s_(k-1)] of the step, from t down to t_next
    assert len(source.calls) == order and source.calls[0][0] == t and source.calls[-1][1] == t_next
    assert all(a[1] == b[0] for a, b in zip(source.calls, source.calls[1:], strict=False))
    torch.testing.assert_close(y, official_step(problem, x, t, t_next, order, noise_pred, z, repo),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["seeds-2-data", "seeds-3-noise"])
def test_runs_on_one_brownian_path_through_the_stage_times(problem, name):
    """BrownianPath.covering finds the stage times by a dry run; the run is reproducible and really noisy."""
    grid = make_grid("uniform-lambda", problem.schedule, 5, problem.t_min, problem.t_max)
    path = BrownianPath.covering(get_solver(name), problem.model(), [grid], seed=3)
    order = get_solver(name).order
    assert len(path.times) == 5 * order + 1                  # grid times plus order - 1 stage times per step
    a = sample(get_solver(name), problem.model(), grid, start(problem), path)
    torch.testing.assert_close(a, sample(get_solver(name), problem.model(), grid, start(problem), path),
                               rtol=0, atol=0)
    other = sample(get_solver(name), problem.model(), grid, start(problem),
                   BrownianPath.covering(get_solver(name), problem.model(), [grid], seed=4))
    assert (a - other).abs().max() > 1e-3


def test_data_form_with_eta_zero_is_dpm_solver_pp_2s(problem):
    grid = make_grid("uniform-lambda", problem.schedule, 7, problem.t_min, problem.t_max)
    torch.testing.assert_close(sample(get_solver("seeds-2-data", eta=0.0), problem.model(), grid, start(problem)),
                               sample(get_solver("dpmpp-2s"), problem.model(), grid, start(problem)),
                               rtol=1e-12, atol=1e-12)


def test_repository_stage3_weight_does_not_vanish_with_h():
    """The SEEDS repository's data-form stage-3 weight tends to -2 (ours: 0) as h -> 0: a stage error of O(h)."""
    h = 1e-4
    c2, c3 = NODES[3]
    assert abs(c3 / c2 * get_solver("seeds-3-data").stage3_weight(h)) < 1e-3
    assert abs(c3 / c2 * get_solver("seeds-3-data-repo").stage3_weight(h) + 2.0) < 1e-3


def test_final_step_to_sigma_zero_is_skipped_as_officially():
    problem = get_problem("gauss-diag-d1024")
    grid = make_grid("edm", problem.schedule, 4, 0.0, problem.t_max)
    for name, nfe in (("seeds-3-data", 9), ("seeds-2-noise", 6)):
        model = problem.model()
        run = sample(get_solver(name), model, grid, start(problem, 2), IIDNoise(0), return_trajectory=True)
        assert model.nfe == nfe and torch.equal(run.x, run.trajectory[-2])


def test_bad_parameters():
    with pytest.raises(ValueError, match="eta = 1 only"):
        get_solver("seeds-3-data-repo", eta=0.5)
    assert not get_solver("seeds-2-data", eta=0.0).stochastic


@pytest.mark.parametrize("name, steps", [("seeds-2-data", 150), ("seeds-3-data", 100), ("seeds-2-noise", 60),
                                         ("seeds-3-noise", 80)])
def test_output_moments_converge_to_the_truth(name, steps):
    z_mean, z_var = moment_z_scores(name, steps)
    assert abs(z_mean) < 4.5 and abs(z_var) < 4.5
