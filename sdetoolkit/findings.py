"""Where a solver's measured order differs from its claim: what was measured, on what, and why.

Each entry is a reproducible fact checked by the test suite (``tests/test_solver_orders.py``) and shown by
``sdetoolkit solvers``. A finding is not a bug report against the project's implementation: every solver here is
written faithfully to its official code, and the explanation says which side (the code or the claim) accounts for
the difference.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """A claimed versus measured order on one problem, with its explanation.

    ``measured`` is the asymptotic order. Where the test window (32..256 steps on gauss-1d, 64..1024 on
    gmm-1d-bimodal; for weak and strong orders the windows of ``sdetoolkit report``) has not reached it yet,
    ``window`` is the order fitted there, which the tests and the report check instead.
    ``kind`` is what was measured: 'global' (ODE error against the exact flow), 'weak' (exact W2 of the output
    law) or 'strong' (pathwise, on one Brownian path).
    """

    solver: str
    problem: str
    claimed: float | None
    measured: float
    explanation: str
    window: float | None = None
    kind: str = "global"

    def summary(self) -> str:
        """One line: what was measured against what was claimed, where, and why."""
        claimed = "no claim" if self.claimed is None else f"claimed {self.claimed:g}"
        return f"{self.kind} order measured {self.measured:g} vs {claimed} on {self.problem}: {self.explanation}"


DPMPP_3M = (
    "The official 3M update (dpm_solver_pytorch.py, multistep_dpm_solver_third_update; the same in diffusers) uses "
    "D2 = (D1_0 - D1_1)/(r0 + r1), which is h^2 x0''/2 to leading order, with the coefficient -alpha_t phi_3. The "
    "exact exponential integral's second-derivative term is -alpha_t h^2 phi_3 x0'' (phi_3 = phi_2/h - 1/2), so the "
    "update misses a factor 2: its local error is O(h^3) and the global order 2. The variant dpmpp-3m-taylor "
    "doubles D2 and measures order 3 on gmm-1d-bimodal. The first-order warm-up step is not the cause: its local "
    "error on gauss-1d at N = 256 is 7e-9 against a total error of 1.3e-5.")

UNIPC_FINAL = (
    "The official sampler (uni_pc.py, sample with lower_order_final=True) lowers the order to min(p, steps + 1 - "
    "step) at every step count, with no threshold, so the last step is a plain DDIM step without corrector. Its "
    "local error O(h^2) stays in the global error: the difference between the official run and the same run with "
    "lower_order_final=False falls at slope 2.00 up to N = 2048, and without it the claims hold (p = 2: 3.00; "
    "p = 3: 3.98 to 4.00). The constant is tiny (x0 barely changes in lambda near t_min), so the test window still "
    "shows the transition. The predictor alone (UniP, unip-bh1-p3 and unip-bh2-p3) ends the same way: on gauss-1d "
    "its local slopes are 1.39, 1.86, 1.96 over 256..2048 steps; with lower_order_final=False it is order 4 there "
    "(4.01, 3.98, 3.98, 4.08 over 32..512 steps, then the 2.7e-11 round-off floor). On gmm-1d-bimodal its slopes "
    "fall from 3.42 to 2.36 by 4096 steps, not yet settled, so no finding is recorded there: the report calls that "
    "row inconclusive.")

IPNDM = (
    "iPNDM applies the equal-step Adams-Bashforth coefficients [55, -59, 37, -9]/24 whatever the steps. On a grid "
    "that is not uniform in sigma (uniform-lambda is geometric in sigma) each step carries an O(h^3) term from the "
    "grid's curvature, so the global order is 2; started from exact points the same formula measures 2.00 on "
    "uniform lambda and about 4 on uniform sigma. The first-order Euler first step caps the rate at 2 as well.")

IPNDM_V = (
    "As coded (zju-pi/diff-sampler, ipndm_v_sampler), the order-4 variable-step coefficients reduce on equal steps "
    "to (57, -65, 43, -11)/24, not (55, -59, 37, -9)/24: they are exact only for quadratics, so the method is third "
    "order. On geometric (uniform-lambda) steps orders 3 and 4 are exact only for linear functions up to an "
    "O(r - 1) defect, again order 3. On non-geometric grids such as EDM's rho = 7 the order-4 coefficients do not "
    "even sum to one, and the order drops to 2.")

DEIS_RIEMANN = (
    "The official tAB-DEIS coefficients (qsh-zh/deis, th_deis/multistep.py) integrate the Lagrange basis by a "
    "10,000-point left Riemann sum. For r >= 1 the basis changes by O(1) across a step, so every coefficient carries "
    "a relative error of about 1.2e-4 whatever the step size; summed over the run this is an O(h) error with a small "
    "constant, which overtakes the method's own error at fine grids (gauss-1d, tAB3, N = 256: 6e-6 against 2.6e-7; "
    "the gap halves when the point count doubles). Asymptotically the official variants are first order. The "
    "'-exact' variants (Gauss-Legendre) measure their claimed orders.")

DEIS_WARMUP = (
    "The official warm-up uses polynomial degree min(i, r) at step i, so the first steps have local errors O(h^2) "
    "and O(h^3) that are never divided down: asymptotically the rate is 2. The constant is tiny (the flow is nearly "
    "linear near t_max), so it shows only at fine grids: on gauss-1d at N = 512..2048 the local slopes fall 3.92, "
    "3.79, 3.40, while replacing the first three steps by the exact flow gives 3.97, 3.99, 3.99.")

EULER_MARUYAMA_ADDITIVE = (
    "The reverse SDE's noise g(t) dW does not depend on x (additive noise). There the Milstein correction vanishes, "
    "Euler-Maruyama coincides with the Milstein scheme and converges strongly at order 1 (Kloeden & Platen 1992, "
    "Sec. 10.3), above the order 1/2 it has for general diffusions. Measured on one Brownian path against the same "
    "solver 16x finer: 1.06 [1.03, 1.09] on gauss-1d (tests/test_strong.py asserts 1 inside the interval and 0.5 "
    "outside). Every first-order sampler with exact or Euler noise measures 1 here: ddpm, ddpm-large, "
    "exp-euler-maruyama, reverse-diffusion.")

SDE_3M_DIFFUSERS = (
    "diffusers' DPMSolverMultistepScheduler with algorithm_type='sde-dpmsolver++' and solver_order=3 (added by a "
    "community pull request, #9104) codes the second-difference weight as (1 - e^{-2h} - 2h)/(2h)^2 - 1/2, which "
    "equals -phi_3 - 1 where k-diffusion's sample_dpmpp_3m_sde has -phi_3. The extra -alpha_t D2, about "
    "-h^2 x0''/2 per step, makes the method first order: the exact W2 of its output law falls at local slopes "
    "1.06 to 1.22 on gauss-1d and gauss-aniso-d64 (16..256 steps). sde-dpmpp-3m reproduces it as coded; "
    "dpmpp-3m-sde (k-diffusion) does not have it.")

SDE_3M_KDIFFUSION = (
    "k-diffusion's sample_dpmpp_3m_sde uses the official DPM-Solver++ 3M second difference D2 = (D1_0 - "
    "D1_1)/(r0 + r1) with -phi_3, which misses the factor 2 of the Taylor expansion (see dpmpp-3m): at eta = 0 it is "
    "dpmpp-3m (heun warm-up) exactly, and with noise its exact W2 falls at order 2 (local slopes 2.02 to 2.05 at "
    "the finest steps), not 3.")

SEEDS_3_REPO = (
    "The SEEDS repository's data-form SEEDS-3 (nfsrules/SEEDS, etd_serk.py) weights its third stage by "
    "(c3/c2)((e^{-2 c2 h} - 1)/(c2 h) + 1), which tends to -2 instead of 0 as h -> 0 (the code's own comment "
    "doubts it). seeds-3-data-repo keeps it and measures weak order 1 (exact W2, local slopes 0.95 to 0.68 from fine "
    "to coarse); seeds-3-data uses the exact interpolant weight (as ComfyUI and the repository's own noise form do) "
    "and measures 2 at the finest steps (1.87).")

ER_SDE_ORDER = (
    "The paper derives ER-SDE-Solver-k from a k-term Taylor expansion of x_theta in the exact solution, the ODE "
    "argument. Along a stochastic path x_theta carries the Brownian increments (it is Hoelder-1/2 in s), so the "
    "finite-difference derivatives that multistep orders 2 and 3 use are dominated by noise. Measured on gauss-1d: "
    "strong order about 1 for orders 2 and 3 (phi = s^2, exact integrals, clip 0, one Brownian path: 1.05 "
    "[0.91, 1.19] and 1.02 [0.87, 1.18]); weak order (exact W2) 2 for orders 2 and 3 once the official 100-point "
    "Riemann sum and the 1e-6 variance clip are replaced (local slopes 2.04, 2.02 on EDM grids of 160..640 steps; "
    "with them the slopes fall below 1 at fine grids, docs/er-sde.md). The claim's kind ('strong') is inferred: the "
    "seed holds only the abstract.")

ER_SDE_CLIP = (
    "The official sampler sets to zero every per-step noise variance below 1e-6 in s^2 units (er_sde_solver.py, "
    "numerical_clip), so on fine grids, where the exact per-step variance falls below it, those steps inject no "
    "noise at all, and the path no longer follows the Brownian increments it is given. On one Brownian path "
    "(gauss-1d, 16..128 steps against 2048) the pathwise error "
    "then stalls near 1e-2: er-sde-3 local slopes 1.07, 0.32, 0.11 (coarse to fine), er-sde-1 0.92, 0.89, 0.72. "
    "With clip = 0 (integration official or exact) the same runs measure strong order 1: er-sde-1 1.07 "
    "[0.97, 1.17], er-sde-3 local slopes 1.70, 1.29, 1.00, so orders 2 and 3 are not reached either (see "
    "ER_SDE_ORDER). The sdetoolkit report measures the official configuration; the window value is what it shows.")

ER_SDE_CLIP_WEAK = (
    "The official 1e-6 variance clip (see ER_SDE_CLIP) also stalls the law. On gauss-1d the exact W2 of er-sde-3's "
    "output falls with local slopes 1.73 (64 to 128 steps) and 1.41 (128 to 256), bottoms out near 6.4e-5 at 1024 "
    "steps and then grows (6.9e-5, 6.4e-5, 9.7e-5, 1.8e-4 at 512, 1024, 2048, 4096 steps): the official sampler's "
    "weak order is 0; the report's 16..256 window fits 1.48. With clip = 0 and the official 100-point Riemann sum it "
    "is 1 (4.7e-5, 2.1e-5, 9.6e-6 at 512, 1024, 2048 steps); with clip = 0 and exact integrals, 2 (4.7e-5, 1.2e-5, "
    "2.9e-6, 7.1e-7 at 256, 512, 1024, 2048 steps).")

SA_SOLVER_WINDOW = (
    "The official tau(t) = eta 1[0.2 <= t <= 0.8] is read on the grid (scxue/SA-Solver sa_solver.py, "
    "sample_few_steps: tau at t = timesteps[step], the step's end; diffusers' SASolverScheduler reads it at the "
    "start), so the noisy stretch begins and ends at grid points. A run and its finer reference then solve SDEs whose "
    "windows differ by up to one step, and the Brownian increments over the difference drive one of them only. On "
    "gauss-1d, where the tau = 1 reverse SDE is the exact time reversal and the PF-ODE keeps (x - m_t)/sqrt(v_t) "
    "fixed, a mismatch [a, b] leaves sqrt(2 v(t_min)(1 - rho)) at t_min (rho = (alpha_b/alpha_a) sqrt(v_a/v_b)), of "
    "order sqrt(h): strong order 1/2. Predicted 0.421, 0.295, 0.194, 0.112 at 16..128 steps against 8192, measured "
    "0.403, 0.288, 0.200, 0.119. The error is piecewise constant and drops where a grid first holds the reference's "
    "edge: the 256-step uniform-lambda grid has a point at t = 0.200025, kept by every finer grid up to 32768 steps, "
    "so against 8192 steps the error falls 40 times from 128 to 256 steps, while against 65536 it stays at 0.0070 "
    "from 256 to 2048 steps (predicted 0.0070). With the window's edges on points of the coarsest grid the same "
    "solver measures strong order 0.97 [0.86, 1.09], as sa-solver-sde (no window) does "
    "(tests/test_sa_solver_strong.py).")

LANGEVIN_BIAS = (
    "The Langevin corrector's step 2 alpha (snr |z|/|score|)^2 (score_sde LangevinCorrector, batch-mean norms) makes "
    "its resting law on a Gaussian marginal of variance v have variance v (1 + snr^2), whatever the step size: a bias "
    "that no number of steps removes (measured 1.0277 +- 0.01 against 1.0256 predicted at snr = 0.16). The full PC "
    "sampler at 1600 steps ends with variance ratio 1.026, against 1.009 for the predictor alone. The sampler is "
    "not affine (its step depends on norms), so the exact-moment engine refuses it.")

EDM_S_NOISE = (
    "With the recommended S_noise = 1.003 (Karras et al. 2022, ImageNet-64 setting) each churn adds 0.6% too much "
    "variance, a bias that does not shrink with the step count: the exact W2 stops falling near 2e-3 between 128 and "
    "2048 steps. With S_noise = 1 the sampler converges at weak order 1.995 [1.914, 2.039] (gauss-1d).")

RESTART_BIAS = (
    "Restart's inner Heun steps and its restart interval are fixed by restart_info, and S_noise = 1.003 (the "
    "README setting) over-injects noise at every restart, so refining the main grid does not reduce the error: the "
    "exact W2 stays flat (local slopes 0.00 to 0.02). The paper states a W1 contraction bound, not an order.")

RESTART_STRONG = (
    "The official rule attaches a restart interval to the grid point nearest t_min and builds the inner Karras grid "
    "from there (Newbeeer/diffusion_restart_sampling, restart_sampler: argmin |t_steps - t_min|), so a run and its "
    "finer reference restart from different t_min (0.0609 at 16..128 steps, 0.0600 at 2048 on gauss-1d). Two "
    "things then differ. The forward jumps share the Brownian path above the higher t_min but not the stretch "
    "between the two: an order-1/2, piecewise-constant error (0.0155 with restart_gamma = 0, predicted 0.0155). "
    "The inner churn draws are single-time draws, keyed by their time, and the Karras midpoint moves with t_min, so "
    "they are independent between the runs: an O(1) error that no refinement removes. That second part is a limit "
    "of how sdetoolkit's strong study couples noise (the official code draws all of it fresh), not of the sampler. "
    "On gauss-1d the affine maps predict 0.181 (measured 0.172 +- 0.008, order -0.00). With t_min on a point of the "
    "coarsest grid every draw is shared and the strong order is 2.00 [1.94, 2.07] (tests/test_restart_strong.py).")

SA_SOLVER_FINAL = (
    "With tau = 0, SA-Solver (p = 3 predictor, c = 4 corrector) is an exponential Adams predictor-corrector of "
    "order min(c, p + 1) = 4, but the official sample_few_steps lowers the orders of the final steps at every step "
    "count (no threshold, as UniPC's lower_order_final) and ends with a first-order predictor step without corrector. "
    "That step's local error O(h^2) stays in the global error: on gauss-1d the local slopes fall to 2.08 and 2.02 "
    "between 512 and 2048 steps; the test window (32..256) still shows 2.97 (2.77 on gmm-1d-bimodal, 64..1024).")

FINDINGS = (
    Finding("deis-tab1", "gmm-1d-bimodal", claimed=2, measured=1, window=1.94, explanation=DEIS_RIEMANN),
    Finding("deis-tab2", "gauss-1d", claimed=3, measured=1, window=2.35, explanation=DEIS_RIEMANN),
    Finding("deis-tab2", "gmm-1d-bimodal", claimed=3, measured=1, window=1.33, explanation=DEIS_RIEMANN),
    Finding("deis-tab3", "gauss-1d", claimed=4, measured=1, window=0.99, explanation=DEIS_RIEMANN),
    Finding("deis-tab3", "gmm-1d-bimodal", claimed=4, measured=1, window=0.57, explanation=DEIS_RIEMANN),
    Finding("deis-tab", "gauss-1d", claimed=4, measured=1, window=0.99, explanation=DEIS_RIEMANN),
    Finding("deis-tab", "gmm-1d-bimodal", claimed=4, measured=1, window=0.57, explanation=DEIS_RIEMANN),
    Finding("deis-tab3-exact", "gmm-1d-bimodal", claimed=4, measured=2, window=3.75, explanation=DEIS_WARMUP),
    Finding("dpmpp-3m", "gauss-1d", claimed=3, measured=2, explanation=DPMPP_3M),
    Finding("dpmpp-3m", "gmm-1d-bimodal", claimed=3, measured=2, explanation=DPMPP_3M),
    Finding("dpmpp-3m-taylor", "gauss-1d", claimed=3, measured=4, explanation=(
        "Superconvergence on the scalar Gaussian, not a defect: local slopes 3.98 to 4.01. On gmm-1d-bimodal the "
        "same method measures 2.97, its claimed order. The symbolic local order (docs/symbolic-order.md) shows its "
        "single step is genuinely third order on the scalar Gaussian with the EDM schedule (C h^4 non-zero on two "
        "problems), so the extra order comes from the vp-linear schedule of gauss-1d or from a cancellation of local "
        "errors across steps, not from a vanishing local term; which of the two is not yet derived.")),
    Finding("midpoint-sigma", "gauss-1d", claimed=2, measured=3, explanation=(
        "Superconvergence on this problem, not a defect: in the EDM variables the scalar Gaussian PF-ODE is "
        "d x~/d sigma~ = sigma~ (x~ - mu) / (s + sigma~^2), for which the explicit midpoint rule's leading local "
        "error term vanishes. The claim (order 2) is a lower bound; on gmm-1d-bimodal the measured order is 2.")),
    Finding("unipc", "gauss-1d", claimed=3, measured=2, window=3.04, explanation=UNIPC_FINAL),
    Finding("unipc", "gmm-1d-bimodal", claimed=3, measured=2, window=3.03, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p2", "gauss-1d", claimed=3, measured=2, window=3.04, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p2", "gmm-1d-bimodal", claimed=3, measured=2, window=3.03, explanation=UNIPC_FINAL),
    Finding("unipc-bh2-p2", "gmm-1d-bimodal", claimed=3, measured=2, window=3.18, explanation=UNIPC_FINAL),
    Finding("unip-bh1-p3", "gauss-1d", claimed=3, measured=2, explanation=UNIPC_FINAL),
    Finding("unip-bh2-p3", "gauss-1d", claimed=3, measured=2, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p3", "gauss-1d", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p3", "gmm-1d-bimodal", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("unipc-bh2-p3", "gauss-1d", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("unipc-bh2-p3", "gmm-1d-bimodal", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("ipndm", "gauss-1d", claimed=4, measured=2, explanation=IPNDM),
    Finding("ipndm", "gmm-1d-bimodal", claimed=4, measured=2, explanation=IPNDM),
    Finding("ipndm-v", "gauss-1d", claimed=4, measured=3, explanation=IPNDM_V),
    Finding("ipndm-v", "gmm-1d-bimodal", claimed=4, measured=3, explanation=IPNDM_V),
    Finding("sa-solver-ode", "gauss-1d", claimed=4, measured=2, window=2.97, explanation=SA_SOLVER_FINAL),
    Finding("sa-solver-ode", "gmm-1d-bimodal", claimed=4, measured=2, window=2.77, explanation=SA_SOLVER_FINAL),
    Finding("euler-maruyama", "gauss-1d", claimed=0.5, measured=1, kind="strong", explanation=EULER_MARUYAMA_ADDITIVE),
    Finding("sde-dpmpp-3m", "gauss-1d", claimed=None, measured=1, window=1.12, kind="weak",
            explanation=SDE_3M_DIFFUSERS),
    Finding("dpmpp-3m-sde", "gauss-1d", claimed=None, measured=2, kind="weak", explanation=SDE_3M_KDIFFUSION),
    Finding("seeds-3-data-repo", "gauss-1d", claimed=None, measured=1, kind="weak", explanation=SEEDS_3_REPO),
    Finding("er-sde-1", "gauss-1d", claimed=1, measured=0, window=0.7, kind="strong", explanation=ER_SDE_CLIP),
    Finding("er-sde-2", "gauss-1d", claimed=2, measured=0, window=0, kind="strong",
            explanation=ER_SDE_CLIP + " " + ER_SDE_ORDER),
    Finding("er-sde-3", "gauss-1d", claimed=3, measured=0, window=0, kind="strong",
            explanation=ER_SDE_CLIP + " " + ER_SDE_ORDER),
    Finding("er-sde-3", "gauss-1d", claimed=3, measured=0, window=1.48, kind="weak",
            explanation=ER_SDE_CLIP_WEAK + " " + ER_SDE_ORDER),
    Finding("sa-solver", "gauss-1d", claimed=1, measured=0.5, window=0.9, kind="strong",
            explanation=SA_SOLVER_WINDOW),
    Finding("sa-solver-pece", "gauss-1d", claimed=1, measured=0.5, window=0.9, kind="strong",
            explanation=SA_SOLVER_WINDOW),
    Finding("sa-solver-p2c2", "gauss-1d", claimed=1, measured=0.5, window=0.88, kind="strong",
            explanation=SA_SOLVER_WINDOW),
    Finding("score-sde-pc", "gauss-1d", claimed=None, measured=0, kind="weak", explanation=LANGEVIN_BIAS),
    Finding("edm-stochastic", "gauss-1d", claimed=None, measured=0, window=1, kind="weak", explanation=EDM_S_NOISE),
    Finding("restart", "gauss-1d", claimed=None, measured=0, kind="weak", explanation=RESTART_BIAS),
    Finding("restart", "gauss-1d", claimed=None, measured=0, kind="strong", explanation=RESTART_STRONG),
)


def findings_for(solver: str) -> list[Finding]:
    """The findings recorded for one solver name."""
    return [finding for finding in FINDINGS if finding.solver == solver]
