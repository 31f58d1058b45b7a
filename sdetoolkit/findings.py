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
    gmm-1d-bimodal) has not reached it yet, ``window`` is the order fitted there, which the tests check instead.
    ``kind`` is what was measured: 'global' (ODE error against the exact flow), 'weak' (exact W2 of the output
    law) or 'strong' (pathwise, on one Brownian path).
    """

    solver: str
    problem: str
    claimed: float
    measured: float
    explanation: str
    window: float | None = None
    kind: str = "global"


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
    "shows the transition.")

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
        "same method measures 2.97, its claimed order. Why the leading error term vanishes on gauss-1d is not yet "
        "derived.")),
    Finding("midpoint-sigma", "gauss-1d", claimed=2, measured=3, explanation=(
        "Superconvergence on this problem, not a defect: in the EDM variables the scalar Gaussian PF-ODE is "
        "d x~/d sigma~ = sigma~ (x~ - mu) / (s + sigma~^2), for which the explicit midpoint rule's leading local "
        "error term vanishes. The claim (order 2) is a lower bound; on gmm-1d-bimodal the measured order is 2.")),
    Finding("unipc", "gauss-1d", claimed=3, measured=2, window=3.04, explanation=UNIPC_FINAL),
    Finding("unipc", "gmm-1d-bimodal", claimed=3, measured=2, window=3.03, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p2", "gauss-1d", claimed=3, measured=2, window=3.04, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p2", "gmm-1d-bimodal", claimed=3, measured=2, window=3.03, explanation=UNIPC_FINAL),
    Finding("unipc-bh2-p2", "gmm-1d-bimodal", claimed=3, measured=2, window=3.18, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p3", "gauss-1d", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("unipc-bh1-p3", "gmm-1d-bimodal", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("unipc-bh2-p3", "gauss-1d", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("unipc-bh2-p3", "gmm-1d-bimodal", claimed=4, measured=2, window=3, explanation=UNIPC_FINAL),
    Finding("ipndm", "gauss-1d", claimed=4, measured=2, explanation=IPNDM),
    Finding("ipndm", "gmm-1d-bimodal", claimed=4, measured=2, explanation=IPNDM),
    Finding("ipndm-v", "gauss-1d", claimed=4, measured=3, explanation=IPNDM_V),
    Finding("ipndm-v", "gmm-1d-bimodal", claimed=4, measured=3, explanation=IPNDM_V),
)


def findings_for(solver: str) -> list[Finding]:
    """The findings recorded for one solver name."""
    return [finding for finding in FINDINGS if finding.solver == solver]
