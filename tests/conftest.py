"""Test configuration: hypothesis runs derandomized (seeded), with no deadline on a shared machine."""

from hypothesis import settings

settings.register_profile("sdetoolkit", derandomize=True, deadline=None, max_examples=40, print_blob=True)
settings.load_profile("sdetoolkit")
