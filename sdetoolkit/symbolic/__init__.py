"""Symbolic derivations (sympy), compiled for the solvers: one source of truth for their coefficients.

* :mod:`.ops`: scalar functions on floats and sympy expressions alike, so solver steps run on both;
* :mod:`.phi`: the exponential-integrator functions phi_k with series fallbacks;
* :mod:`.lagrange`: Lagrange / Adams-Bashforth weights, integrated exactly (and the official quadratures);
* :mod:`.unipc`: UniPC's B(h) and the solutions of its linear systems;
* :mod:`.local_order`: a solver's one-step map on the scalar Gaussian, expanded in h against the exact flow.

Submodules are imported on demand (``local_order`` imports the solvers, which import the others).
"""
