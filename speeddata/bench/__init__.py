"""``speeddata bench relay``: a user measures the relay on their own machine against a
minimal C receiver. The harness of the tests and benchmarks is ``tests/harness/``."""
