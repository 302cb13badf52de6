"""The relay benchmark's harness measures what it says: every datagram it offers at a
rate the relay and the C baseline hold is counted, in the cache and on the group."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from speeddata.bench.relay import build_baseline, trial


def test_a_trial_counts_every_datagram_of_the_relay() -> None:
    t = trial(90, 5_000, 1.0, multicast_on=True)
    assert t.sent == 5_000
    assert (t.cached, t.heard, t.loss) == (5_000, 5_000, 0.0)
    assert t.relay_cpu_s > 0 and 0 < t.rss_mb < 200


@pytest.mark.skipif(shutil.which("cc") is None, reason="the C baseline needs a C compiler")
def test_the_c_baseline_builds_and_receives_every_datagram(tmp_path: Path) -> None:
    binary = build_baseline(tmp_path)
    t = trial(1000, 5_000, 1.0, multicast_on=True, baseline=binary)
    assert (t.sent, t.cached, t.heard, t.loss) == (5_000, 5_000, 5_000, 0.0)
