"""The relay on a real 32-bit ARM interpreter (Debian bookworm armhf, CPython under
qemu-user), not only its layouts built at ILP32 widths on x86: see
tests/harness/armhf.py. Skipped, saying why, without root, qemu-arm (binfmt),
debootstrap or the Debian mirror while the root is not built yet, or where it cannot be
built. The root is kept in SPEEDDATA_ARMHF_ROOT (default /var/cache/speeddata/armhf-root,
outside the checkout): the first run builds it (about 12 minutes on the 2-core CI
machine), later runs take about 4 minutes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import armhf
from tests.helpers import PROJECT, TIMEOUT

pytestmark = [pytest.mark.e2e, pytest.mark.armhf, pytest.mark.skipif(
    os.environ.get("SPEEDDATA_ARMHF") != "1",
    reason="the armhf check takes 12 minutes to build its root the first time, then 4: "
           "run it with SPEEDDATA_ARMHF=1 .venv/bin/pytest tests/test_armhf.py (or "
           "PYTHONPATH=. .venv/bin/python benchmarks/armhf.py)")]

ROOT = Path(os.environ.get("SPEEDDATA_ARMHF_ROOT", str(armhf.DEFAULT_ROOT)))
# the build (once), then each test; pytest-timeout counts the module fixture's setup in
# the first test's time
LONGEST = armhf.BUILD_TIMEOUT + 1200


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    """The armhf root, built if needed, with this checkout's wheel installed; held
    locked (one run at a time per root on this machine)."""
    with armhf.locked(ROOT):
        try:
            armhf.prerequisites(ROOT)
            armhf.ensure_root(ROOT)
        except armhf.Unavailable as exc:
            pytest.skip(f"armhf: {exc}")
        armhf.install_wheel(ROOT, PROJECT)
        yield ROOT


@pytest.mark.timeout(LONGEST)
def test_the_relay_on_32_bit_arm_caches_every_datagram_exactly(root: Path) -> None:
    result = armhf.check(root, rate=2000, seconds=5, timeout=6 * TIMEOUT)
    probe = result.probe
    assert probe["machine"].startswith("armv7"), probe  # not this host's interpreter
    assert (probe["pointer_bytes"], probe["size_t_bytes"], probe["mmsghdr_bytes"]) == (4, 4, 32)
    assert probe["fastavro_compiled"], "fastavro's C extension was not built in the root"
    assert result.io == "mmsg", f"the relay did not take recvmmsg:\n{result.log_tail}"
    assert "portable path" not in result.log_tail
    assert result.relay_exit == 0, result.log_tail
    assert result.sent == 10_000
    assert (result.missing, result.duplicated, result.unequal) == (0, 0, 0), result
    assert result.cached == result.sent and result.exact
    assert result.rejected == 0 and result.kernel_drops == 0


@pytest.mark.timeout(LONGEST)
def test_the_fast_tests_of_the_numpy_code_pass_on_32_bit_arm(root: Path) -> None:
    run = armhf.run_tests(root, PROJECT)
    assert run.returncode == 0, run.output[-6000:]
    assert " passed" in run.summary and "failed" not in run.summary, run.summary
