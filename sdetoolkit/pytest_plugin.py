"""pytest fixtures for testing samplers with sdetoolkit, loaded through the ``pytest11`` entry point ``sdetoolkit``.

Importing this module imports nothing but pytest: sdetoolkit's modules (and torch, sympy) load when a fixture is
first used, so the plugin costs nothing in test runs that do not use it.

* ``sdetoolkit_problem``: a catalogue :class:`~sdetoolkit.catalogue.Problem`, ``gauss-1d`` unless parametrised
  indirectly by name: ``@pytest.mark.parametrize("sdetoolkit_problem", ["gauss-1d", "gmm-1d-bimodal"],
  indirect=True)``;
* ``gauss_1d``, ``gmm_1d_bimodal``: those two problems;
* ``solver_factory``: :func:`sdetoolkit.testing.make_solver`, which builds a solver from a registered name, a
  Solver subclass or an instance, with parameters: ``solver_factory("ddim-eta", eta=0.5)``.

The fixtures are session-scoped (so hypothesis tests can use them), and each problem is built once per session
(its DOP853 reference too). The assertions are in :mod:`sdetoolkit.testing`.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sdetoolkit_problem(request):
    """A catalogue problem: ``request.param`` (indirect parametrisation by name), else ``gauss-1d``."""
    from .testing import catalogue_problem

    return catalogue_problem(getattr(request, "param", "gauss-1d"))


@pytest.fixture(scope="session")
def gauss_1d():
    """The catalogue problem ``gauss-1d`` (a 1-d Gaussian on vp-linear: exact flow and exact output laws)."""
    from .testing import catalogue_problem

    return catalogue_problem("gauss-1d")


@pytest.fixture(scope="session")
def gmm_1d_bimodal():
    """The catalogue problem ``gmm-1d-bimodal`` (a two-mode mixture: DOP853 references, Monte Carlo weak errors)."""
    from .testing import catalogue_problem

    return catalogue_problem("gmm-1d-bimodal")


@pytest.fixture(scope="session")
def solver_factory():
    """:func:`sdetoolkit.testing.make_solver`: ``solver_factory(name_or_class_or_instance, **params)``."""
    from .testing import make_solver

    return make_solver
