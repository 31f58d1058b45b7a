"""Monte Carlo order fits: the bootstrap interval's coverage, and the strong-order study on one Brownian path."""

import numpy as np
import pytest

from sdetoolkit import get_problem
from sdetoolkit.solvers import get_solver
from sdetoolkit.studies.order import bootstrap_fit
from sdetoolkit.studies.strong import strong_order


def test_bootstrap_interval_covers_the_true_order_at_its_nominal_rate():
    """Synthetic squared errors (C h^p Z)^2 with independent Z per step: the 95% interval covers p in about 95% of
    120 seeded repetitions (binomial bounds on both sides), and a wrong order is rarely covered."""
    steps = np.array([1 / 16, 1 / 32, 1 / 64, 1 / 128])
    p, covered, wrong = 1.5, 0, 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        samples = (2.0 * steps[:, None] ** p * rng.standard_normal((4, 400))) ** 2
        fit = bootstrap_fit(steps, samples, resamples=400, corrections=0, seed=seed)
        covered += fit.contains(p)
        wrong += fit.contains(p + 0.25)
    # Binomial(120, 0.95): mean 114, sd 2.4. Below 104 the interval is too narrow (4.2 sd); 120 of 120 (probability
    # 0.2%) would mean it is too wide.
    assert 104 <= covered <= 119
    assert wrong <= 12


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="samples: expected shape"):
        bootstrap_fit([0.1, 0.2], np.ones((3, 5)))
    with pytest.raises(ValueError, match="samples: contain NaN"):
        bootstrap_fit([0.1, 0.2, 0.3], np.full((3, 5), np.nan))


def test_euler_maruyama_has_strong_order_one_for_additive_noise():
    """The reverse SDE's noise is additive (g depends on t only), where Euler-Maruyama coincides with Milstein and
    converges strongly at order 1 (Kloeden & Platen 1992, Sec. 10.2), above its general order 1/2."""
    study = strong_order(get_solver("euler-maruyama"), get_problem("gauss-1d"), [16, 32, 64, 128], levels=4,
                         n_samples=300)
    assert study.fit.contains(1.0) and not study.fit.contains(0.5), study.fit
    assert list(study.table.steps) == [16, 32, 64, 128] and (study.table.reference_steps == 2048).all()


def test_strong_order_needs_nested_grids():
    with pytest.raises(ValueError, match="steps: each must divide"):
        strong_order(get_solver("euler-maruyama"), get_problem("gauss-1d"), [3, 16], levels=1)
    with pytest.raises(ValueError, match="levels"):
        strong_order(get_solver("euler-maruyama"), get_problem("gauss-1d"), [16], levels=0)
