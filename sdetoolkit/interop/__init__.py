"""Adapters to independent sampler code, used to cross-check sdetoolkit's solvers.

* :mod:`.diffusers_driver`: drive a ``diffusers`` scheduler with an sdetoolkit model.
* :mod:`.kdiffusion`: load k-diffusion's ``sampling.py`` without its package and run its samplers (as a
  :class:`~sdetoolkit.solvers.base.Solver` for the studies) on an sdetoolkit model, with our noise sources.
* :mod:`.names`: the tested name map (diffusers class and configuration, k-diffusion / ComfyUI sampler, our solver
  and parameters) and the checks behind it.

Nothing here imports an optional dependency at import time: the adapters receive the foreign objects (a scheduler
instance) from the caller, and k-diffusion's sampling module is loaded on first use, so ``import sdetoolkit.interop``
works without the ``interop`` or ``kdiffusion`` extras installed.
"""
