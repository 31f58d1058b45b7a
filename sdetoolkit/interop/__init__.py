"""Adapters to independent sampler code, used to cross-check sdetoolkit's solvers.

* :mod:`.diffusers_driver`: drive a ``diffusers`` scheduler with an sdetoolkit model.

Nothing here imports an optional dependency at import time: the adapters receive the foreign objects (a scheduler
instance) from the caller, so ``import sdetoolkit.interop`` works without the ``interop`` extra installed.
"""
