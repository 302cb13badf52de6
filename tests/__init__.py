"""speeddata's tests. Hypothesis runs without its per-example deadline: these machines
are shared and noisy, and speed is measured by the benchmarks, never by a test."""

from hypothesis import settings

settings.register_profile("speeddata", deadline=None)
settings.load_profile("speeddata")
