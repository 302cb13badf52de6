#!/usr/bin/env python3
"""The relay on a real 32-bit ARM interpreter: Debian bookworm armhf under qemu-user.

Builds (once, kept in --root) a Debian bookworm armhf root with debootstrap, Debian's
python3, numpy and h5py, and fastavro compiled in it from its sdist; installs the wheel
built from this checkout; runs ``speeddata relay`` in it (multicast off: qemu-user does
not translate IP_MULTICAST_IF), checks it took the recvmmsg path, sends numbered
datagrams from this host's sender and reads the cache back here with fastavro: every
datagram must be cached exactly. Needs root, qemu-user-static with binfmt, debootstrap
and the Debian mirror (for the first build only). The relay's CPU is under emulation:
for the record, not a figure for a Pi. See tests/harness/armhf.py.

    sudo .venv/bin/python benchmarks/armhf.py [--root /var/cache/speeddata/armhf-root]
        [--rate 2000] [--seconds 5] [--tests] [--rebuild] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tests.harness import armhf

PROJECT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=armhf.DEFAULT_ROOT,
                        help="the armhf root, built there when missing (default %(default)s)")
    parser.add_argument("--rate", type=float, default=2000.0, help="datagrams/s")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rebuild", action="store_true", help="build the root afresh")
    parser.add_argument("--tests", action="store_true",
                        help="also run the fast tests of the numpy code in the root (~3 min)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    started = time.monotonic()
    try:
        with armhf.locked(args.root):
            if args.rebuild:  # a root without its stamp is built afresh
                (args.root / armhf.STAMP).unlink(missing_ok=True)
            armhf.prerequisites(args.root)
            held = armhf.ensure_root(args.root, log)
            installed = time.monotonic()
            wheel = armhf.install_wheel(args.root, PROJECT)
            installed = time.monotonic() - installed
            result = armhf.check(args.root, args.rate, args.seconds, log)
            tests = armhf.run_tests(args.root, PROJECT) if args.tests else None
    except armhf.Unavailable as exc:
        print(f"armhf: cannot run here: {exc}", file=sys.stderr)
        return 2
    total = time.monotonic() - started
    if args.json:
        print(json.dumps({"root": held, "wheel": wheel, "install_seconds": installed,
                          "check": result.as_dict(), "total_seconds": total,
                          "tests": tests and {"returncode": tests.returncode,
                                              "summary": tests.summary,
                                              "seconds": tests.seconds}}, indent=1))
        return 0 if ok(result, tests) else 1
    p = result.probe
    print(f"root {args.root}: Debian {held['suite']} armhf, built {held['built']} in "
          f"{held['build_seconds']:.0f} s (debootstrap {held['debootstrap_seconds']:.0f} s, "
          f"fastavro {held['fastavro']} from its sdist {held['fastavro_seconds']:.0f} s)")
    print(f"interpreter: {p['machine']} CPython {p['python']}, {p['pointer_bytes']}-byte "
          f"pointers, {p['size_t_bytes']}-byte size_t, mmsghdr {p['mmsghdr_bytes']} bytes, "
          f"glibc {p['libc']}; numpy {p['numpy']}, h5py {p['h5py']}, fastavro {p['fastavro']}"
          f" ({'compiled' if p['fastavro_compiled'] else 'pure Python'})")
    print(f"relay: io {result.io} on {result.listen}, multicast off; exit {result.relay_exit}"
          f" after SIGTERM")
    print(f"sent {result.sent} datagrams in {result.send_seconds:.2f} s "
          f"({result.rate:.0f}/s, x86 sender); cached {result.cached}: missing "
          f"{result.missing}, duplicated {result.duplicated}, unequal {result.unequal}; "
          f"kernel drops {result.kernel_drops}, rejected {result.rejected}")
    print(f"relay CPU under emulation (qemu, not a Pi): {result.cpu_percent:.1f} % of a core "
          f"while busy ({result.us_per_datagram:.0f} µs/datagram), idle "
          f"{result.idle_cpu_percent:.1f} %")
    if tests is not None:
        print(f"fast tests in the root ({len(armhf.ARM_TESTS)} modules): {tests.summary}")
        if tests.returncode:
            print(tests.output[-4000:])
    print(f"{wheel} installed in {installed:.0f} s; check {result.check_seconds:.0f} s; "
          f"whole run {total:.0f} s")
    exact = result.exact and result.io == "mmsg" and result.relay_exit == 0
    print("every datagram cached exactly: " + ("yes" if exact else "NO"))
    return 0 if ok(result, tests) else 1


def ok(result: armhf.Result, tests: armhf.UnitRun | None) -> bool:
    return (result.exact and result.io == "mmsg" and result.relay_exit == 0
            and (tests is None or tests.returncode == 0))


if __name__ == "__main__":
    sys.exit(main())
