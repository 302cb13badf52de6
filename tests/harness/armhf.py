"""32-bit ARM run, not inferred: the relay on a Debian bookworm armhf interpreter.

The rest of the suite checks the 32-bit layouts (``recvmmsg``'s structures at ILP32
widths) by building them with ctypes on x86. Here the relay itself runs on a 32-bit ARM
CPython (Debian bookworm, the base of Raspberry Pi OS), emulated by ``qemu-user-static``
through binfmt, in a chroot:

- the root: ``debootstrap --arch=armhf --variant=minbase bookworm`` with Debian's
  python3, numpy, h5py and a compiler; fastavro built in it from the sdist of the
  version this host runs (so its C extension is compiled for armhf, no wheel); a venv,
  ``/opt/speeddata``, over Debian's packages. Built in ``<root>.partial`` and renamed
  when complete, so a half-built root is never used; kept between runs (outside the
  checkout) with a stamp saying what it holds and how long it took to build.
- each check installs the wheel built from the checkout into that venv, starts
  ``speeddata relay`` in the chroot on its own port and cache directory, with multicast
  off (qemu-user does not implement ``IP_MULTICAST_IF``: bookworm's qemu 7.2 answers
  ENOPROTOOPT, and the relay's multicast sockets set it; the cache path is what runs
  here, forwarding is left to the x86 tests), checks from
  the status file that it took the batch path (``io: mmsg``, ``recvmmsg``), sends it
  numbered datagrams from this host's (x86) sender at a fixed rate, stops it with
  SIGTERM, and reads the cache back here with fastavro: every record, exactly once,
  equal to what was sent.

The relay's CPU is measured on the qemu process: it is the cost under emulation, for
the record, and says nothing about a Pi. ``benchmarks/armhf.py`` prints the figures;
``tests/test_armhf.py`` asserts on them.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speeddata import status
from speeddata.bench import services
from speeddata.config import write_file

DEFAULT_ROOT = Path("/var/cache/speeddata/armhf-root")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-dev", "python3-venv", "python3-pip", "python3-setuptools",
            "python3-wheel", "python3-numpy", "python3-h5py", "gcc", "libc6-dev",
            "python3-pytest", "python3-hypothesis")  # the last two: run_tests
# The fast tests of the code that does arithmetic on numpy arrays (index types, int64
# times), run in the root as they are: none needs multicast, a fixture of tests/conftest.py
# or a package the root lacks (apache avro, fastapi)
ARM_TESTS = ("tests/relay/test_core.py", "tests/relay/test_engine.py",
             "tests/relay/test_accounting.py", "tests/test_bodycheck.py",
             "tests/test_columns.py", "tests/test_loss.py", "tests/cache/test_summary.py",
             "tests/cache/test_check.py", "tests/stripchart/test_history.py")
VENV = "/opt/speeddata"
STAMP = ".speeddata-armhf.json"  # in the root: what it holds, written when complete
FASTAVRO_CFLAGS = "-O1 -g0"  # after Debian's own flags, so these win
BUILD_TIMEOUT = 3600.0  # debootstrap's second stage runs every maintainer script emulated
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Two channels, datagram i on channel i % 2: one with each numeric type and a string,
# values beyond 32 bits and records of varying sizes (the relay gathers such bodies one
# by one), and one whose records all have one size (cut from the batch as a 2-D slice)
VARIED, FIXED = "armvaried", "armfixed"
SCHEMAS = {
    VARIED: {"type": "record", "name": VARIED, "fields": [
        {"name": "time", "type": "long"}, {"name": "counter", "type": "long"},
        {"name": "big", "type": "long"}, {"name": "level", "type": "int"},
        {"name": "value", "type": "double"}, {"name": "ratio", "type": "float"},
        {"name": "flag", "type": "boolean"}, {"name": "note", "type": "string"}]},
    FIXED: {"type": "record", "name": FIXED, "fields": [
        {"name": "time", "type": "long"}, {"name": "counter", "type": "long"},
        *({"name": f"v{k}", "type": "double"} for k in range(4))]},
}
T0 = 1_790_000_000_000_000_000  # 2026-09: the time of datagram 0 (1 µs apart)
FIXED_BASE = 1_000_000  # armfixed's counters: 3-byte varints up to FIXED_BASE + 48,575
MOST_DATAGRAMS = 48_000


Log = Callable[[str], None]


class Unavailable(Exception):
    """The check cannot run here; the message says why (and what would make it run)."""


# -- the root ---------------------------------------------------------------------------

def binfmt_ready() -> str:
    """Make sure the kernel runs 32-bit ARM binaries through qemu-arm, mounting
    binfmt_misc and enabling the entry where needed (root); returns the entry's flags."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-arm")
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc",
                        "/proc/sys/fs/binfmt_misc"], capture_output=True)
    if entry.exists() and not entry.read_text().startswith("enabled") and shutil.which(
            "update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-arm"], capture_output=True)
    if not entry.exists():
        raise Unavailable("no qemu-arm binfmt entry (apt-get install qemu-user-static "
                          "binfmt-support; `update-binfmts --display qemu-arm` shows it)")
    text = entry.read_text()
    if not text.startswith("enabled"):
        raise Unavailable("the qemu-arm binfmt entry is disabled (update-binfmts --enable "
                          "qemu-arm)")
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("flags:")), "")
    interpreter = next((line.split(None, 1)[1] for line in text.splitlines()
                        if line.startswith("interpreter")), "")
    if "F" not in flags and not Path(interpreter).exists():
        raise Unavailable(f"the qemu-arm interpreter {interpreter} is missing")
    return flags


def mirror_reachable(timeout: float = 10.0) -> None:
    url = f"{MIRROR}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                    timeout=timeout) as response:
            if response.status == 200:
                return
    except OSError as exc:
        raise Unavailable(f"no network to the Debian mirror ({url}: {exc})") from None
    raise Unavailable(f"the Debian mirror answered {response.status} for {url}")


def prerequisites(root: Path) -> None:
    """Raise ``Unavailable`` unless the check can run here, building the root if needed."""
    if not sys.platform.startswith("linux"):
        raise Unavailable("needs Linux (binfmt_misc, chroot)")
    if os.geteuid() != 0:
        raise Unavailable("needs root (binfmt_misc, chroot, debootstrap)")
    for tool in ("chroot", "unshare"):
        if not shutil.which(tool):
            raise Unavailable(f"no {tool} here")
    binfmt_ready()
    if stamp(root) is None:
        if not shutil.which("debootstrap"):
            raise Unavailable(f"no armhf root at {root} and no debootstrap to build one "
                              "(apt-get install debootstrap)")
        mirror_reachable()


def stamp(root: Path) -> dict[str, Any] | None:
    """What a complete root holds, or None where there is none (or an older kind)."""
    try:
        held = json.loads((root / STAMP).read_text())
    except (OSError, ValueError):
        return None
    return held if held.get("packages") == list(PACKAGES) else None


def in_root(root: Path, *argv: str, nice: bool = False) -> list[str]:
    """A command line running ``argv`` in the chroot, with /proc mounted in a mount
    namespace of its own (gone with the process: nothing is left mounted in the root).
    The process keeps its pid through every exec: the pid the caller gets is the ARM
    program's (the qemu process's)."""
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', str(root), *argv]
    return ["nice", "-n", "15", *command] if nice else command


ROOT_ENV = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


def run_in_root(root: Path, *argv: str, log_file: Path, timeout: float = 1800.0,
                nice: bool = True) -> str:
    """Run a command in the root; its output goes to ``log_file`` and, on failure, into
    the error."""
    done = subprocess.run(in_root(root, *argv, nice=nice), env=ROOT_ENV, capture_output=True,
                          text=True, timeout=timeout)
    with log_file.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    if done.returncode:
        raise Unavailable(f"`{' '.join(argv)}` failed in the armhf root (exit "
                          f"{done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}")
    return done.stdout


def _unmount_under(path: Path) -> None:
    """Unmount whatever an interrupted debootstrap left mounted in ``path``."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """One builder or check at a time per root (two test runs on one machine)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def fastavro_version() -> str:
    return importlib.metadata.version("fastavro")


def build_fastavro(root: Path, version: str, log_file: Path) -> float:
    """Download fastavro's sdist here and build it in the root (no wheel: its C
    extension compiled by Debian's armhf gcc). Returns the seconds it took."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                               "--no-deps", "-q", "-d", tmp, f"fastavro=={version}"],
                              capture_output=True, text=True, timeout=600)
        sdists = list(Path(tmp).glob("fastavro-*.tar.gz"))
        if done.returncode or not sdists:
            raise Unavailable(f"pip could not download fastavro {version}'s sdist:\n"
                              f"{done.stderr[-1500:]}")
        shutil.copy(sdists[0], root / "tmp" / sdists[0].name)
    inside = f"/tmp/{sdists[0].name}"
    try:  # -O1 without debug info: half the time of Debian's -O2 -g under emulation (the
        # relay's hot path is numpy; fastavro parses its schemas)
        run_in_root(root, "env", f"CFLAGS={FASTAVRO_CFLAGS}", f"{VENV}/bin/pip", "install",
                    "--no-cache-dir", "--no-build-isolation", "--no-deps", "--no-index",
                    "--force-reinstall", inside, log_file=log_file)
    finally:
        (root / inside.lstrip("/")).unlink(missing_ok=True)
    # the compiled reader, not the pure-Python fallback fastavro has
    run_in_root(root, f"{VENV}/bin/python", "-c",
                "import fastavro._read, fastavro._write, numpy, h5py", log_file=log_file)
    return time.monotonic() - started


def ensure_root(root: Path = DEFAULT_ROOT, log: Log = print) -> dict[str, Any]:
    """The root's stamp, building the root first where there is none (the caller holds
    ``locked(root)``). A root with another fastavro gets this host's version built in."""
    log_file = root.parent / f"{root.name}.log"
    held = stamp(root)
    version = fastavro_version()
    if held is not None:
        if held.get("fastavro") != version:
            log(f"armhf root: building fastavro {version} (it had {held.get('fastavro')})")
            held["fastavro_seconds"] = build_fastavro(root, version, log_file)
            held["fastavro"] = version
            (root / STAMP).write_text(json.dumps(held, indent=1))
        return held
    partial = root.with_name(root.name + ".partial")
    if partial.exists():
        _unmount_under(partial)
        shutil.rmtree(partial)
    if root.exists():  # a root without a stamp: unfinished or of an older kind
        _unmount_under(root)
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    log(f"armhf root: debootstrap {SUITE} into {partial} (several minutes; log {log_file})")
    started = time.monotonic()
    command = ["nice", "-n", "15", "debootstrap", "--arch=armhf", "--variant=minbase",
               f"--include={','.join(PACKAGES)}", SUITE, str(partial), MIRROR]
    with log_file.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        try:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=BUILD_TIMEOUT).returncode
        except subprocess.TimeoutExpired:
            code = -1
    if code:
        _unmount_under(partial)
        tail = log_file.read_text()[-2000:]
        raise Unavailable(f"debootstrap failed (exit {code}); the end of {log_file}:\n{tail}")
    debootstrap_seconds = time.monotonic() - started
    log(f"armhf root: debootstrap took {debootstrap_seconds:.0f} s; venv and fastavro {version}")
    run_in_root(partial, "python3", "-m", "venv", "--system-site-packages", VENV,
                log_file=log_file)
    fastavro_seconds = build_fastavro(partial, version, log_file)
    held = {"suite": SUITE, "mirror": MIRROR, "packages": list(PACKAGES), "fastavro": version,
            "debootstrap_seconds": round(debootstrap_seconds, 1),
            "fastavro_seconds": round(fastavro_seconds, 1),
            "build_seconds": round(time.monotonic() - started, 1),
            "built": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    (partial / STAMP).write_text(json.dumps(held, indent=1))
    partial.rename(root)
    log(f"armhf root: ready in {held['build_seconds']:.0f} s")
    return held


# -- the check --------------------------------------------------------------------------

PROBE = """
import ctypes, json, platform, sys, numpy, h5py, fastavro, fastavro._read
from speeddata.relay import netio
io, msghdr, mmsghdr = netio.mmsg_structures()
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
    "pointer_bytes": ctypes.sizeof(ctypes.c_void_p),
    "size_t_bytes": ctypes.sizeof(ctypes.c_size_t),
    "mmsghdr_bytes": ctypes.sizeof(mmsghdr), "mmsg_available": netio.MmsgIO.available(),
    "numpy": numpy.__version__, "h5py": h5py.__version__, "fastavro": fastavro.__version__,
    "fastavro_compiled": fastavro._read.__file__.endswith(".so"),
    "libc": platform.libc_ver()[1]}))
"""


def install_wheel(root: Path, project: Path) -> str:
    """Build the checkout's wheel here (as tests/test_wheel.py does) and install it into
    the root's venv, replacing the last one; returns the wheel's name."""
    log_file = root.parent / f"{root.name}.log"
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                               "-w", tmp, str(project)], capture_output=True, text=True,
                              timeout=600)
        wheels = list(Path(tmp).glob("speeddata-*.whl"))
        if done.returncode or len(wheels) != 1:
            raise RuntimeError(f"building the wheel failed:\n{done.stdout}\n{done.stderr}")
        shutil.copy(wheels[0], root / "tmp" / wheels[0].name)
    inside = f"/tmp/{wheels[0].name}"
    try:
        run_in_root(root, f"{VENV}/bin/pip", "install", "--no-deps", "--no-index",
                    "--force-reinstall", "-q", inside, log_file=log_file, nice=False)
    finally:
        (root / inside.lstrip("/")).unlink(missing_ok=True)
    return wheels[0].name


def record(i: int) -> tuple[str, dict[str, Any]]:
    """Datagram ``i``'s channel and record: every value derived from ``i`` and exactly
    representable (``ratio`` is a float32)."""
    if i % 2:
        return FIXED, {"time": T0 + 1000 * i, "counter": FIXED_BASE + i,
                       **{f"v{k}": math.cos(i + k) * 10.0 ** k for k in range(4)}}
    return VARIED, {"time": T0 + 1000 * i, "counter": i, "big": (1 << 40) + 7 * i - 3,
                    "level": -i if i % 4 else i, "value": math.sin(i) * 1e3 + i,
                    "ratio": (i % 4096) / 16.0, "flag": i % 3 == 0, "note": f"n{i}"}


def number(channel: str, cached: dict[str, Any]) -> int:
    """The datagram number of a cached record."""
    return cached["counter"] - FIXED_BASE if channel == FIXED else cached["counter"]


@dataclass
class Result:
    """One check's figures and verdict."""

    sent: int = 0
    send_seconds: float = 0.0
    cached: int = 0
    exact: bool = False  # every datagram cached once, every value equal
    missing: int = 0
    duplicated: int = 0
    unequal: int = 0
    io: str = ""
    listen: str = ""
    relay_exit: int | None = None
    relay_cpu_seconds: float = 0.0
    busy_seconds: float = 0.0  # from the first datagram sent to the last one cached
    idle_cpu_percent: float = 0.0
    kernel_drops: int = 0
    rejected: int = 0
    probe: dict[str, Any] = field(default_factory=dict)
    check_seconds: float = 0.0
    log_tail: str = ""

    @property
    def rate(self) -> float:
        return self.sent / max(self.send_seconds, 1e-9)

    @property
    def cpu_percent(self) -> float:
        return 100 * self.relay_cpu_seconds / max(self.busy_seconds, 1e-9)

    @property
    def us_per_datagram(self) -> float:
        return 1e6 * self.relay_cpu_seconds / max(self.sent, 1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate, "cpu_percent": self.cpu_percent,
                "us_per_datagram": self.us_per_datagram}


def send_numbered(port: int, rate: float, seconds: float) -> tuple[int, float]:
    """Send ``rate * seconds`` numbered datagrams with this host's sender (one per
    channel), paced in 1 ms steps; returns (sent, seconds it took)."""
    from speeddata.sender import Sender

    total = int(rate * seconds)
    if total > MOST_DATAGRAMS:  # past it, armfixed's records would not all be one size
        raise ValueError(f"at most {MOST_DATAGRAMS} datagrams (rate x seconds) per check")
    sent = 0
    senders = {name: Sender(dict(schema), host="127.0.0.1", port=port)
               for name, schema in SCHEMAS.items()}
    try:
        started = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            while sent < due:
                channel, values = record(sent)
                sender = senders[channel]
                if not sender.send(values):
                    raise RuntimeError(f"sending datagram {sent} failed: {sender.last_error}")
                sent += 1
            time.sleep(0.001)
        elapsed = time.monotonic() - started
    finally:
        for sender in senders.values():
            sender.close()
    return sent, elapsed


def read_cache(cache: Path) -> list[tuple[str, dict[str, Any]]]:
    """Every cached record of the check's channels, read with fastavro."""
    import fastavro

    records = []
    for channel in SCHEMAS:
        for path in sorted((cache / channel).glob("*.avro")):
            with path.open("rb") as f:
                records.extend((channel, r) for r in fastavro.reader(f))
    return records


def _cached_count(cache: Path) -> int:
    channels = status.read_all(cache).get("relay", {}).get("channels", {})
    return sum(int(channels.get(name, {}).get("datagrams", 0)) for name in SCHEMAS)


def check(root: Path, rate: float = 2000.0, seconds: float = 5.0, log: Log = print,
          timeout: float = 120.0) -> Result:
    """Run the relay in the armhf root (built, the wheel installed) and send it numbered
    datagrams from here; the cache read back here is compared with what was sent."""
    result = Result()
    started = time.monotonic()
    log_file = root.parent / f"{root.name}.log"
    result.probe = json.loads(run_in_root(root, f"{VENV}/bin/python", "-c", PROBE,
                                          log_file=log_file, nice=False))
    work = Path(tempfile.mkdtemp(prefix="speeddata-check-", dir=root / "tmp"))
    inside = "/" + str(work.relative_to(root))
    relay_log = work / "relay.log"
    process: subprocess.Popen | None = None
    try:
        (work / "schemas").mkdir()
        for name, schema in SCHEMAS.items():
            (work / "schemas" / f"{name}.avsc").write_text(json.dumps(schema))
        port = services.free_port()
        # multicast off, the control group too: qemu-user has no IP_MULTICAST_IF
        # (ENOPROTOOPT), which every multicast socket of the relay sets
        write_file(work / "relay.toml", {
            "channels": {"dir": f"{inside}/schemas", "legacy": []},
            "cache": {"dir": f"{inside}/cache", "fsync_seconds": 0.2},
            "relay": {"host": "127.0.0.1", "port": port, "io": "auto"},
            "multicast": {"full": "", "decimated": "", "control": ""},
            "web": {"host": "127.0.0.1", "port": services.free_port(socket.SOCK_STREAM)}})
        cache = work / "cache"
        with relay_log.open("w") as out:
            process = subprocess.Popen(
                in_root(root, f"{VENV}/bin/speeddata", "relay", "--config",
                        f"{inside}/relay.toml"),
                env=ROOT_ENV, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            snap = status.read_all(cache).get("relay")
            if snap and snap["running"] and snap["pid"] == process.pid:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the armhf relay did not start (exit {process.poll()}):\n"
                                   f"{relay_log.read_text()[-3000:]}")
            time.sleep(0.1)
        result.io, result.listen = snap["io"], snap["listen"]
        log(f"armhf relay running (pid {process.pid}, io {result.io}, {result.listen})")
        idle0 = services.cpu_seconds(process.pid)
        time.sleep(2.0)
        result.idle_cpu_percent = 100 * (services.cpu_seconds(process.pid) - idle0) / 2.0
        cpu0 = services.cpu_seconds(process.pid)
        busy0 = time.monotonic()
        result.sent, result.send_seconds = send_numbered(port, rate, seconds)
        deadline = time.monotonic() + timeout
        while _cached_count(cache) < result.sent and time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the armhf relay exited with {process.returncode} while "
                                   f"receiving:\n{relay_log.read_text()[-3000:]}")
            time.sleep(0.05)
        result.busy_seconds = time.monotonic() - busy0
        result.relay_cpu_seconds = services.cpu_seconds(process.pid) - cpu0
        snap = status.read_all(cache).get("relay", {})
        result.kernel_drops = int(snap.get("kernel_drops", 0))
        result.rejected = sum(snap.get("rejected", {}).values())
        process.send_signal(signal.SIGTERM)
        result.relay_exit = process.wait(timeout)
        records = read_cache(cache)
        result.cached = len(records)
        seen: dict[int, tuple[str, dict[str, Any]]] = {}
        for channel, cached in records:
            i = number(channel, cached)
            if i in seen:
                result.duplicated += 1
            seen[i] = (channel, cached)
        result.missing = sum(1 for i in range(result.sent) if i not in seen)
        result.unequal = sum(1 for i, got in seen.items() if got != record(i))
        result.exact = (result.cached == result.sent and not result.missing
                        and not result.duplicated and not result.unequal)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(30)
        result.log_tail = relay_log.read_text()[-3000:] if relay_log.exists() else ""
        shutil.rmtree(work, ignore_errors=True)
        result.check_seconds = time.monotonic() - started
    return result


@dataclass
class UnitRun:
    """The fast tests run in the root: pytest's exit code and last lines."""

    returncode: int
    summary: str  # pytest's last line, like "163 passed in 160.06s"
    seconds: float
    output: str


def run_tests(root: Path, project: Path, tests: tuple[str, ...] = ARM_TESTS,
              timeout: float = 1800.0) -> UnitRun:
    """Run ``tests`` of the checkout with the root's pytest and hypothesis (Debian's)
    against the installed wheel, without tests/conftest.py: its session fixtures seal
    the default ports and need multicast on loopback, which qemu-user cannot set up."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="speeddata-tests-", dir=root / "tmp"))
    inside = "/" + str(work.relative_to(root))
    try:
        shutil.copytree(project / "tests", work / "tests",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        command = in_root(root, "sh", "-c", f'cd {inside} && exec "$@"', "sh",
                          f"{VENV}/bin/python", "-m", "pytest", "-p", "no:cacheprovider",
                          "--noconftest", "-q", "-m", "not e2e", *tests)
        done = subprocess.run(command, env={**ROOT_ENV, "PYTHONPATH": inside},
                              capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    output = done.stdout + done.stderr
    lines = [line.strip("= ") for line in output.splitlines() if line.strip("= ")]
    return UnitRun(done.returncode, lines[-1] if lines else "", time.monotonic() - started,
                   output)
