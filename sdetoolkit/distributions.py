r"""Gaussian and Gaussian-mixture data distributions with closed-form noised marginals.

Each component covariance is stored once in spectral form :math:`\Sigma_k = U_k\,\mathrm{diag}(s_k)\,U_k^\top`
(``eigh`` at construction; :math:`U_k` is omitted for diagonal and isotropic covariances). Noising keeps the
eigenbasis, so the marginal at time t under :math:`x_t = \alpha x_0 + \sigma\varepsilon` is again a mixture,

.. math:: p_t = \sum_k \pi_k\,\mathcal N(\alpha\mu_k,\ U_k\,\mathrm{diag}(\alpha^2 s_k + \sigma^2)\,U_k^\top),

and its score, its denoiser :math:`E[x_0\mid x_t]` (Tweedie) and its log-density follow with log-sum-exp
responsibilities; no matrix is inverted (the precisions :math:`U_k\,\mathrm{diag}(1/v_k)\,U_k^\top` of full
covariances are formed from the eigendecomposition, once per call). For a single Gaussian the probability-flow ODE
map and the reverse-SDE transition are exact, per eigen-direction (Song et al. 2021, Score-SDE, App. D; the ODE
map follows from :math:`\dot v = 2 f v + g^2` for the marginal variance :math:`v = \alpha^2 s + \sigma^2`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._checks import as_tensor, check_batch, check_finite, check_scalar_time
from .schedules import NoiseSchedule

_LOG_2PI = math.log(2 * math.pi)
_CHUNK_ELEMENTS = 1 << 18  # rows x components x dim per chunk on the centred path: its temporaries stay in cache
_EXPANDED_ROWS = 2048      # rows per chunk on the expanded path


@dataclass(frozen=True)
class _Parameters:
    """Mixture parameters in one dtype and device."""
    log_weights: torch.Tensor      # (K,)
    means: torch.Tensor            # (K, d)
    eigvals: torch.Tensor          # (K, d)
    basis: torch.Tensor | None     # (K, d, d), columns are eigenvectors; None when every covariance is diagonal
    centre: torch.Tensor           # (d,), mixture mean: the diagonal path expands quadratic forms about it


def _spectral_covariances(covs: torch.Tensor, n_components: int, dim: int, name: str):
    """Eigenvalues (K, d) and eigenvectors (K, d, d) or None from isotropic (K,), diagonal (K, d), full (K, d, d)."""
    check_finite(covs, name)
    if covs.ndim == 1 and covs.shape[0] == n_components:
        eigvals, basis = covs[:, None].expand(n_components, dim).clone(), None
    elif covs.ndim == 2 and covs.shape == (n_components, dim):
        eigvals, basis = covs.clone(), None
    elif covs.ndim == 3 and covs.shape == (n_components, dim, dim):
        scale = covs.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(covs.dtype).tiny)
        asymmetry = (covs - covs.transpose(1, 2)).abs().amax(dim=(1, 2)) / scale
        if bool((asymmetry > 1e-10).any()):
            k = int(asymmetry.argmax())
            raise ValueError(f"{name}: covariance {k} is not symmetric (relative asymmetry {asymmetry[k]:.2e})")
        eigvals, basis = torch.linalg.eigh(0.5 * (covs + covs.transpose(1, 2)))
    else:
        raise ValueError(f"{name}: expected shape ({n_components},) isotropic, ({n_components}, {dim}) diagonal "
                         f"or ({n_components}, {dim}, {dim}) full, got {tuple(covs.shape)}")
    scale = eigvals.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(eigvals.dtype).tiny)
    if bool((eigvals < -1e-12 * scale).any()):
        k = int((eigvals / scale).amin(dim=1).argmin())
        raise ValueError(f"{name}: covariance {k} is not positive semi-definite "
                         f"(smallest eigenvalue {eigvals[k].min().item():.3e})")
    return eigvals.clamp_min(0.0), basis


class GaussianMixture:
    r"""Mixture :math:`\sum_k \pi_k \mathcal N(\mu_k, \Sigma_k)` in dimension d.

    Parameters are kept in float64; every method computes in the dtype and on the device of its input.

    Parameters
    ----------
    weights:
        (K,) non-negative, summing to one (within 1e-9; then renormalised exactly).
    means:
        (K, d).
    covs:
        (K,) isotropic variances, (K, d) diagonal variances, or (K, d, d) full symmetric PSD matrices.
    """

    def __init__(self, weights, means, covs):
        weights = as_tensor(weights, "weights")
        means = as_tensor(means, "means")
        covs = as_tensor(covs, "covs")
        check_finite(weights, "weights")
        check_finite(means, "means")
        if weights.ndim != 1 or weights.numel() == 0:
            raise ValueError(f"weights: expected a non-empty vector, got shape {tuple(weights.shape)}")
        if means.ndim != 2 or means.shape[0] != weights.shape[0]:
            raise ValueError(f"means: expected shape ({weights.shape[0]}, d) to match weights, got "
                             f"{tuple(means.shape)}")
        if bool((weights < 0).any()):
            raise ValueError(f"weights: must be non-negative, got minimum {weights.min().item():.3g}")
        total = weights.sum().item()
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"weights: must sum to one, got {total!r}")
        eigvals, basis = _spectral_covariances(covs, weights.shape[0], means.shape[1], "covs")
        self._init_from_spectrum(weights / weights.sum(), means, eigvals, basis)

    def _init_from_spectrum(self, weights, means, eigvals, basis) -> None:
        self.weights, self.means, self.eigvals, self.basis = weights, means, eigvals, basis
        self._cache: dict = {}

    @classmethod
    def _from_spectrum(cls, weights, means, eigvals, basis):
        """A distribution of this class from already validated spectral parameters (no re-validation)."""
        obj = cls.__new__(cls)
        GaussianMixture._init_from_spectrum(obj, weights, means, eigvals, basis)
        return obj

    # -- shape and moments ----------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def component_covariances(self) -> torch.Tensor:
        """Dense (K, d, d) covariances."""
        if self.basis is None:
            return torch.diag_embed(self.eigvals)
        return (self.basis * self.eigvals[:, None, :]) @ self.basis.transpose(1, 2)

    def mean(self) -> torch.Tensor:
        r"""Mixture mean :math:`\sum_k \pi_k \mu_k`."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        r"""Mixture covariance :math:`\sum_k \pi_k(\Sigma_k + \mu_k\mu_k^\top) - m m^\top`, centred for accuracy."""
        centred = self.means - self.mean()
        between = (centred * self.weights[:, None]).T @ centred
        return between + torch.einsum("k,kij->ij", self.weights, self.component_covariances())

    def __repr__(self) -> str:
        kind = "diagonal" if self.basis is None else "full"
        return f"{type(self).__name__}(K={self.n_components}, d={self.dim}, {kind} covariances)"

    # -- parameters on the input's dtype/device -------------------------------------------------------------------
    def _parameters(self, like: torch.Tensor) -> _Parameters:
        key = (like.dtype, like.device)
        if key not in self._cache:
            def cast(v):
                return None if v is None else v.to(dtype=like.dtype, device=like.device)
            with torch.no_grad():
                log_w = torch.log(self.weights)
            self._cache[key] = _Parameters(cast(log_w), cast(self.means), cast(self.eigvals), cast(self.basis),
                                           cast(self.mean()))
        return self._cache[key]

    # -- the one kernel ----------------------------------------------------------------------------------------
    def _posterior(self, x: torch.Tensor, alpha: float, sigma: float, *, want: str):
        r"""Log-density, responsibilities, score and denoiser of the marginal at noise level (alpha, sigma).

        Returns ``(log_p, log_resp, score, x0)``: ``want`` "density" fills log_p and log_resp, "score" the score,
        "both" the score and x0 (the others are None). With :math:`v_k = \alpha^2 s_k + \sigma^2`,
        :math:`y_k = x - \alpha\mu_k`, the precision :math:`P_k = U_k\,\mathrm{diag}(1/v_k)\,U_k^\top` and the
        posterior weights :math:`r_k \propto \pi_k \mathcal N(x; \alpha\mu_k, U_k\,\mathrm{diag}(v_k)\,U_k^\top)`,
        :math:`\mathrm{score} = -\sum_k r_k P_k y_k` and
        :math:`x_0 = \sum_k r_k(\mu_k + \alpha U_k\,\mathrm{diag}(s_k/v_k)\,U_k^\top y_k)`.

        The per-component constants are formed in float64 on the CPU from the spectral factors (no matrix is
        inverted), then rounded to x's dtype and moved to its device. Rows go through in chunks whose temporaries
        stay in cache and live in buffers reused by every chunk (:class:`_Scratch`), so the outputs are the only
        tensors with N rows.
        """
        p = self._parameters(torch.empty(0, dtype=torch.float64))      # float64 on the CPU, read by the checks
        var = alpha**2 * p.eigvals + sigma**2                          # (K, d)
        if bool((var <= 0).any()):
            raise ValueError("x: the density is singular here (a zero-variance direction at sigma = 0)")
        log_norm = p.log_weights - 0.5 * (torch.log(var).sum(dim=1) + self.dim * _LOG_2PI)   # (K,)
        if p.basis is None and self._expansion_is_accurate(p, alpha, var, x.dtype):
            kernel, rows = self._expanded_kernel(p, alpha, var, log_norm, want, x), _EXPANDED_ROWS
        else:
            kernel = self._centred_kernel(p, alpha, var, log_norm, want, x)
            rows = max(1, _CHUNK_ELEMENTS // (self.n_components * self.dim))
        n = x.shape[0]
        density = want == "density"
        outputs = (x.new_empty(n) if density else None, x.new_empty(n, self.n_components) if density else None,
                   None if density else x.new_empty(n, self.dim), x.new_empty(n, self.dim) if want == "both" else None)
        scratch = _Scratch(x, enabled=not (torch.is_grad_enabled() and x.requires_grad))
        for start in range(0, n, rows):
            scratch.targets = [None if out is None else out[start:start + rows] for out in outputs]
            for target, value in zip(scratch.targets, kernel(x[start:start + rows], scratch), strict=True):
                if target is not None and value is not target:
                    target.copy_(value)
        return outputs

    @staticmethod
    def _expansion_is_accurate(p: _Parameters, alpha: float, var: torch.Tensor, dtype: torch.dtype) -> bool:
        r"""Whether expanding the quadratic forms about the mixture mean c loses at most about one digit.

        The expansion's rounding error is about :math:`\epsilon\,S`, :math:`S = \max_k \|\alpha(\mu_k - c)\|^2_{P_k}`,
        against :math:`\epsilon d` for the centred differences; it is catastrophic for narrow modes far from c. The
        expansion is used when :math:`S \le 16 d` (or, in float64, when :math:`\epsilon S \le 10^{-12}` nats). A
        single Gaussian (:math:`\mu = c`, S = 0) always qualifies.
        """
        spread = ((alpha * (p.means - p.centre)) ** 2 / var).sum(dim=1).max().item()
        eps = torch.finfo(dtype).eps
        return eps * spread <= max(1e-12, 16 * eps * p.means.shape[1])

    def _expanded_kernel(self, p, alpha, var, log_norm, want, like):
        """Diagonal covariances: per chunk, two GEMMs against (d, K) matrices give the quadratic forms and one
        against a (K, 2d) matrix ((K, 4d) with x0) the sums over components; no (N, K, d) tensor. (The constant
        matrices are stored transposed: MKL's skinny float64 GEMMs ran 1.4 times faster so on the development
        machine.)

        Quadratic forms are expanded about the mixture mean c, so a single Gaussian is computed fully centred. The
        squares are taken in units of the broadest component's standard deviation per coordinate: x is large only
        where that deviation is, so in float16 :math:`(x/s)^2` stays in range where :math:`x^2` overflows
        (:math:`|x| > 256`, a 3.2-sigma prior draw at sigma = 80).
        """
        d = self.dim
        precision = 1.0 / var                                           # (K, d)
        broadest = precision.amin(dim=0)                                # (d,)
        mc = alpha * (p.means - p.centre)                               # (K, d)
        shrink = alpha * p.eigvals * precision                          # alpha s / (alpha^2 s + sigma^2)
        sums = [mc * precision, precision] + ([p.means - shrink * mc, shrink] if want == "both" else [])

        def cast(v):
            return v.to(like)
        centre, root, log_norm = cast(alpha * p.centre), cast(broadest.sqrt()), cast(log_norm)
        squares, linear = cast(precision / broadest), cast(-2.0 * mc * precision)           # (K, d)
        offsets = cast((mc * mc * precision).sum(dim=1))                                     # (K,)
        sums = cast(torch.cat(sums, dim=1).T.contiguous())                                  # (2d or 4d, K)

        def kernel(x, scratch):
            rows = x.shape[0]
            xc = torch.sub(x, centre, out=scratch("xc", rows, d))
            xs = torch.mul(xc, root, out=scratch("xs", rows, d))
            xs = torch.mul(xs, xs, out=scratch.reuse(xs))
            quad = torch.addmm(torch.addmm(offsets, xc, linear.T), xs, squares.T)
            log_joint = torch.add(log_norm, quad.clamp_min(0.0), alpha=-0.5)                # (rows, K)
            if want == "density":
                return _log_posterior(log_joint, 1)
            sums_r = torch.mm(torch.softmax(log_joint, dim=1), sums.T, out=scratch("sums", rows, sums.shape[0]))
            score = torch.addcmul(sums_r[:, :d], xc, sums_r[:, d:2 * d], value=-1.0, out=scratch.target(2))
            if want == "score":
                return None, None, score, None
            return None, None, score, torch.addcmul(sums_r[:, 2 * d:3 * d], xc, sums_r[:, 3 * d:],
                                                    out=scratch.target(3))
        return kernel

    def _centred_kernel(self, p, alpha, var, log_norm, want, like):
        r"""Differences :math:`y_k = x - \alpha\mu_k` per component, (K, rows, d), times the symmetric
        :math:`\tau_k P_k` and, for x0, :math:`\tau_k\alpha U_k\,\mathrm{diag}(s_k/v_k)\,U_k^\top`: one batched GEMM
        (elementwise for diagonal covariances). For the score that is 2 K d^2 flops per row, as many as the forward
        and backward triangular solves of a score through Cholesky factors. The quadratic form is
        :math:`y_k\cdot(\tau_k P_k y_k)/\tau_k` and the score :math:`-\sum_k (r_k/\tau_k)\,\tau_k P_k y_k`.
        :math:`\tau_k = \min_i v_{ki}^{1/2}` keeps every factor and product within float16's range where
        :math:`P_k` itself would overflow (:math:`v < 1.5\cdot 10^{-5}`).

        Rounding: the score's error is that of the whitened form :math:`U_k(U_k^\top y_k / v_k)` (about
        :math:`\epsilon\,\kappa_k` relative, :math:`\kappa_k` the condition number of the noised covariance), the
        quadratic form's grows like :math:`\epsilon\,\kappa_k` instead of :math:`\epsilon\sqrt{\kappa_k}` (float32,
        d = 8, :math:`\kappa = 10^4`: 3e-4 nats instead of 7e-5 in log p).
        """
        tau = var.amin(dim=1, keepdim=True).sqrt()                      # (K, 1)
        gains = [tau / var] + ([tau * alpha * p.eigvals / var] if want == "both" else [])
        k, d, h = self.n_components, self.dim, len(gains)
        if p.basis is None:
            factors = torch.stack(gains, dim=1)[:, None].to(like)       # (K, 1, h, d)

            def apply(y, scratch):
                return torch.mul(y[:, :, None, :], factors, out=scratch("v", k, y.shape[1], h, d)).flatten(2)
        else:
            u = p.basis
            factors = torch.cat([(u * g[:, None, :]) @ u.transpose(1, 2) for g in gains], dim=1).to(like)

            def apply(y, scratch):  # the factors are symmetric; MKL's batched GEMM ran faster with them transposed
                return torch.bmm(y, factors.transpose(1, 2), out=scratch("v", k, y.shape[1], h * d))
        shifts = (alpha * p.means)[:, None, :].to(like)                  # (K, 1, d)
        inv_tau, means, log_norm = (1.0 / tau).to(like), p.means.to(like), log_norm[:, None].to(like)

        def kernel(x, scratch):
            rows = x.shape[0]
            y = torch.sub(x, shifts, out=scratch("y", k, rows, d))       # (K, rows, d)
            v = apply(y, scratch)                                       # (K, rows, h d)
            quad = torch.mul(y, v[:, :, :d], out=scratch.reuse(y)).sum(dim=2) * inv_tau
            log_joint = torch.add(log_norm, quad, alpha=-0.5)           # (K, rows)
            if want == "density":
                return _log_posterior(log_joint, 0)
            resp = torch.softmax(log_joint, dim=0)
            weighted = torch.mul(v, (resp * inv_tau)[:, :, None], out=scratch.reuse(v))
            sums_r = torch.sum(weighted, dim=0, out=scratch("sums", rows, h * d))
            score = torch.neg(sums_r[:, :d], out=scratch.target(2))
            if want == "score":
                return None, None, score, None
            return None, None, score, torch.addmm(sums_r[:, d:], resp.T, means, out=scratch.target(3))
        return kernel

    # -- the distribution itself ---------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False):
        """``n`` float64 samples (and their component labels); device and stream follow ``generator``."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n!r}")
        device = generator.device if generator is not None else torch.device("cpu")
        p = self._parameters(torch.empty(0, dtype=torch.float64, device=device))
        labels = torch.multinomial(p.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, device=device, generator=generator)
        z = z * p.eigvals[labels].sqrt()
        if p.basis is not None:
            z = torch.einsum("nij,nj->ni", p.basis[labels], z)
        samples = p.means[labels] + z
        return (samples, labels) if return_labels else samples

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density at each row of x (requires positive-definite covariances)."""
        return self._posterior(check_batch(x, self.dim), 1.0, 0.0, want="density")[0]

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities (N, K) of each row of x."""
        return self._posterior(check_batch(x, self.dim), 1.0, 0.0, want="density")[1].exp()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\nabla_x \log p(x)`."""
        return self._posterior(check_batch(x, self.dim), 1.0, 0.0, want="score")[2]

    # -- the noised marginals ------------------------------------------------------------------------------------
    def noised(self, schedule: NoiseSchedule, t):
        r"""The exact marginal :math:`p_t`: means :math:`\alpha\mu_k`, covariances
        :math:`\alpha^2\Sigma_k + \sigma^2 I`."""
        alpha, sigma = _coefficients(schedule, t)
        return type(self)._from_spectrum(self.weights, alpha * self.means, alpha**2 * self.eigvals + sigma**2,
                                         self.basis)

    def x0_and_score(self, x: torch.Tensor, schedule: NoiseSchedule, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The exact denoiser :math:`E[x_0\mid x_t = x]` and score :math:`\nabla\log p_t(x)` from one evaluation.

        ``t`` is one time for the whole batch.
        """
        alpha, sigma = _coefficients(schedule, t)
        _, _, score, x0 = self._posterior(check_batch(x, self.dim), alpha, sigma, want="both")
        return x0, score


class Gaussian(GaussianMixture):
    r""":math:`\mathcal N(\mu, \Sigma)`, with the exact probability-flow map and reverse-SDE transition.

    ``cov`` is a scalar (isotropic), a (d,) vector (diagonal) or a (d, d) matrix (full).
    """

    def __init__(self, mean, cov):
        mean = as_tensor(mean, "mean")
        cov = as_tensor(cov, "cov")
        if mean.ndim != 1:
            raise ValueError(f"mean: expected a vector, got shape {tuple(mean.shape)}")
        if cov.ndim == 0:
            cov = cov.reshape(1)
        elif cov.ndim in (1, 2) and cov.shape[0] == mean.shape[0]:
            cov = cov[None]
        else:
            raise ValueError(f"cov: expected a scalar, ({mean.shape[0]},) or ({mean.shape[0]}, {mean.shape[0]}), "
                             f"got shape {tuple(cov.shape)}")
        super().__init__(torch.ones(1, dtype=torch.float64), mean[None], cov)

    @property
    def loc(self) -> torch.Tensor:
        return self.means[0]

    @property
    def cov(self) -> torch.Tensor:
        """Dense (d, d) covariance."""
        return self.component_covariances()[0]

    def _to_eigenbasis(self, v: torch.Tensor) -> torch.Tensor:
        p = self._parameters(v)
        return v if p.basis is None else v @ p.basis[0]

    def _from_eigenbasis(self, v: torch.Tensor) -> torch.Tensor:
        p = self._parameters(v)
        return v if p.basis is None else v @ p.basis[0].T

    def _marginal_variances(self, like: torch.Tensor, schedule: NoiseSchedule, t) -> tuple[float, torch.Tensor]:
        alpha, sigma = _coefficients(schedule, t)
        return alpha, alpha**2 * self._parameters(like).eigvals[0] + sigma**2

    def x0_and_score(self, x: torch.Tensor, schedule: NoiseSchedule, t) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The affine posterior of one Gaussian, per eigen-direction with :math:`v_t = \alpha^2 s + \sigma^2`:
        :math:`\nabla\log p_t = -(x - \alpha\mu)/v_t` and :math:`\hat x_0 = \mu + (\alpha s/v_t)(x - \alpha\mu)`."""
        x = check_batch(x, self.dim)
        alpha, var = self._marginal_variances(x, schedule, t)
        p = self._parameters(x)
        centred = self._to_eigenbasis(x - alpha * p.means[0])
        score = self._from_eigenbasis(-centred / var)
        x0 = p.means[0] + self._from_eigenbasis((alpha * p.eigvals[0] / var) * centred)
        return x0, score

    def pf_ode_map(self, x: torch.Tensor, schedule: NoiseSchedule, t, s) -> torch.Tensor:
        r"""Exact probability-flow ODE map from time t to time s (either direction).

        Per eigen-direction, :math:`x_s - \alpha_s\mu = \sqrt{v_s/v_t}\,(x_t - \alpha_t\mu)` with
        :math:`v = \alpha^2 s + \sigma^2`.
        """
        x = check_batch(x, self.dim)
        alpha_t, v_t = self._marginal_variances(x, schedule, t)
        alpha_s, v_s = self._marginal_variances(x, schedule, s)
        mu = self._parameters(x).means[0]
        y = self._to_eigenbasis(x - alpha_t * mu) * torch.sqrt(v_s / v_t)
        return alpha_s * mu + self._from_eigenbasis(y)

    def reverse_sde_transition(self, x: torch.Tensor, schedule: NoiseSchedule, t, s) -> GaussianTransition:
        r"""Exact law of :math:`x_s` given :math:`x_t = x` along the reverse SDE, s < t.

        The reverse SDE has the forward process's joint law, so this is the forward posterior: with
        :math:`a = \alpha_t/\alpha_s` and :math:`\sigma_{t|s}^2 = \sigma_t^2 - a^2\sigma_s^2
        = -\sigma_t^2\,\mathrm{expm1}(-2(\lambda_s - \lambda_t))` (no cancellation at small steps), per eigen-direction
        mean :math:`\alpha_s\mu + a v_s/v_t\,(x - \alpha_t\mu)` and variance :math:`v_s\sigma_{t|s}^2/v_t`.
        """
        x = check_batch(x, self.dim)
        t_val, s_val = check_scalar_time(t, "t"), check_scalar_time(s, "s")
        if not s_val < t_val:
            raise ValueError(f"s: the reverse SDE runs backwards, need s < t, got s={s_val}, t={t_val}")
        alpha_t, v_t = self._marginal_variances(x, schedule, t_val)
        alpha_s, v_s = self._marginal_variances(x, schedule, s_val)
        a = alpha_t / alpha_s
        h = float(schedule.lam(s_val) - schedule.lam(t_val))
        cond_var = -float(schedule.sigma(t_val)) ** 2 * math.expm1(-2.0 * h)
        mu = self._parameters(x).means[0]
        mean = alpha_s * mu + self._from_eigenbasis(self._to_eigenbasis(x - alpha_t * mu) * (a * v_s / v_t))
        basis = self._parameters(x).basis
        return GaussianTransition(mean, v_s * cond_var / v_t, None if basis is None else basis[0])


def eigen_covariance(variances: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """The dense covariance ``basis @ diag(variances) @ basis.T`` (basis None: diagonal)."""
    if basis is None:
        return torch.diag(variances)
    return (basis * variances) @ basis.T


@dataclass(frozen=True)
class GaussianTransition:
    """A batch of Gaussians sharing one covariance ``basis @ diag(variances) @ basis.T`` (basis None: diagonal)."""

    mean: torch.Tensor
    variances: torch.Tensor
    basis: torch.Tensor | None

    @property
    def cov(self) -> torch.Tensor:
        return eigen_covariance(self.variances, self.basis)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(self.mean.shape, dtype=self.mean.dtype, device=self.mean.device, generator=generator)
        z = z * self.variances.sqrt()
        return self.mean + (z if self.basis is None else z @ self.basis.T)


class _Scratch:
    """Buffers for a chunk's large temporaries, reused by every chunk of one call: fresh allocations of a few MB per
    chunk let glibc's malloc return the memory to the system and fault it in again each time (in a fresh process,
    N = 1e5, d = 64, K = 16, float64, full covariances: 600 000 page faults and three times the time per call).
    Disabled, answering None so that every op allocates, while autograd records the computation: it may save
    tensors that a reused buffer would overwrite."""

    def __init__(self, like: torch.Tensor, enabled: bool):
        self.like, self.enabled, self.buffers = like, enabled, {}
        self.targets = []   # this chunk's rows of the outputs (log_p, log_resp, score, x0), set by the caller

    def __call__(self, name: str, *shape: int) -> torch.Tensor | None:
        """The buffer ``name`` of this shape (a new one when the shape changes, as for a short last chunk)."""
        if not self.enabled:
            return None
        if name not in self.buffers or self.buffers[name].shape != shape:
            self.buffers[name] = self.like.new_empty(shape)
        return self.buffers[name]

    def reuse(self, tensor: torch.Tensor) -> torch.Tensor | None:
        """``tensor`` as the output of an op that overwrites it, or None while disabled."""
        return tensor if self.enabled else None

    def target(self, index: int) -> torch.Tensor | None:
        """This chunk's rows of output ``index``, for the op that computes them, or None while disabled."""
        return self.targets[index] if self.enabled else None


def _log_posterior(log_joint: torch.Tensor, dim: int):
    """``(log p, log responsibilities as (rows, K), None, None)`` from log joint densities, components along ``dim``."""
    log_p = torch.logsumexp(log_joint, dim=dim, keepdim=True)
    log_resp = log_joint - log_p
    return log_p.squeeze(dim), log_resp if dim == 1 else log_resp.T, None, None

def _coefficients(schedule: NoiseSchedule, t) -> tuple[float, float]:
    """(alpha(t), sigma(t)) as Python floats for one validated time."""
    return schedule.at(check_scalar_time(t, "t"))[:2]
