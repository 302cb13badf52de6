"""The C sender's time probes against speeddata.clocks, byte for byte and decision for
decision: its probe datagrams, v1 and v2 reports, its estimator (the lowest round trip
of the last 8) and its answer checks, driven through a generated program that takes
commands on stdin (one compile per target, x86-64 and armhf under qemu-user; one process
per hypothesis example; the clock injected through the clock hook)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speeddata import clocks, loss
from speeddata.codegen import c
from speeddata.errors import WireError
from speeddata.schemas import load_file
from tests.helpers import SCHEMAS, TIMEOUT
from tests.test_codegen import QEMU_ENV, build, compiler

pytestmark = pytest.mark.e2e
MOTOR = load_file(SCHEMAS / "motor.avsc")
MS = 1_000_000
STEP = 7 * MS  # a scenario's times are multiples of 7 ms: never on a 20 ms or 1 s edge

HARNESS = r"""#include "motor.h"
#include <stdio.h>
#include <stdlib.h>
static int64_t now_ns;
static uint8_t inbox[64];
static int inbox_len = -1;
static int64_t fake_clock(void *ctx) { (void)ctx; return now_ns; }
static int fake_recv(void *ctx, uint8_t *buf, size_t cap) {
    int n = inbox_len;
    (void)ctx;
    if (n < 0) return -1;
    if ((size_t)n > cap) n = (int)cap;
    memcpy(buf, inbox, (size_t)n);
    inbox_len = -1;
    return n;
}
static void hex(const uint8_t *d, size_t len) {
    size_t k;
    for (k = 0; k < len; k++) printf("%02x", d[k]);
}
static int fake_send(void *ctx, const uint8_t *d, size_t len) {
    (void)ctx;
    printf("S ");
    hex(d, len);
    printf("\n");
    return 0;
}
static int read_hex(uint8_t *out, int most) {
    char text[2 * 64 + 2];
    int n, k;
    unsigned v;
    if (scanf("%130s", text) != 1) exit(3);
    if (text[0] == '-') return 0;
    n = (int)(strlen(text) / 2);
    for (k = 0; k < n && k < most; k++) {
        if (sscanf(text + 2 * k, "%2x", &v) != 1) exit(3);
        out[k] = (uint8_t)v;
    }
    return n < most ? n : most;
}
static long long ll(void) { long long v; if (scanf("%lld", &v) != 1) exit(3); return v; }
static void best(const struct sd_estimator *e) {
    struct sd_estimate s;
    if (sd_estimator_best(e, &s))
        printf(" %lld %lld %lld %lld", (long long)s.offset_ns, (long long)s.uncertainty_ns,
               (long long)s.round_trip_ns, (long long)s.at_ns);
    else printf(" none");
}
int main(void) {
    struct sd_link l;
    struct sd_estimator alone;
    char cmd[4];
    uint8_t buf[SD_REPORT_MAX_SIZE > 64 ? SD_REPORT_MAX_SIZE : 64], nonce[8], fp[8];
    int k;
    alone.count = 0; alone.next = 0;
    sd_link_init(&l, fake_send, NULL, 77, 0);
    while (scanf("%3s", cmd) == 1) {
        if (cmd[0] == 'L') { /* seed every_ns: probing on */
            long long seed = ll(), every = ll();
            sd_link_probe(&l, fake_recv, NULL, fake_clock, NULL, every, (uint64_t)seed);
            printf("=\n");
        } else if (cmd[0] == 'T') { /* now: a poll */
            now_ns = ll();
            printf("= %d\n", sd_poll(&l));
        } else if (cmd[0] == 'A') { /* now datagram: it arrives, then a poll */
            now_ns = ll();
            inbox_len = read_hex(inbox, (int)sizeof inbox);
            k = sd_poll(&l);
            inbox_len = -1;
            printf("= %d\n", k);
        } else if (cmd[0] == 'Q') {
            printf("= %lld %lld", (long long)l.probe.sent, (long long)l.probe.answered);
            for (k = 0; k < SD_PROBE_REASONS; k++) printf(" %lld", (long long)l.probe.refused[k]);
            best(&l.probe.estimator);
            printf("\n");
        } else if (cmd[0] == 'P') { /* nonce t0 t1 t2: the probe's bytes */
            long long t0, t1, t2;
            read_hex(nonce, 8); t0 = ll(); t1 = ll(); t2 = ll();
            printf("= ");
            hex(buf, sd_probe_encode(buf, nonce, t0, t1, t2));
            printf("\n");
        } else if (cmd[0] == 'R') { /* now epoch fp sent failed measured offset unc */
            long long now = ll(), epoch = ll(), sent, failed, measured;
            struct sd_estimate s;
            read_hex(fp, 8); sent = ll(); failed = ll(); measured = ll();
            s.offset_ns = ll(); s.uncertainty_ns = ll(); s.round_trip_ns = 0; s.at_ns = 0;
            printf("= ");
            hex(buf, sd_report2_encode(buf, now, epoch, fp, sent, failed,
                                       measured ? &s : NULL));
            printf("\n");
        } else if (cmd[0] == 'D') { /* datagram: decoded, or bad */
            int64_t t0, t1, t2;
            int n = read_hex(inbox, (int)sizeof inbox);
            if (sd_probe_decode(inbox, (size_t)n, nonce, &t0, &t1, &t2) != 0) {
                printf("= bad\n");
            } else {
                printf("= ");
                hex(nonce, 8);
                printf(" %lld %lld %lld\n", (long long)t0, (long long)t1, (long long)t2);
            }
        } else if (cmd[0] == 'E') { /* t0 t1 t2 t3: one measure into an estimator */
            long long t0 = ll(), t1 = ll(), t2 = ll(), t3 = ll();
            struct sd_estimate s = sd_measure(t0, t1, t2, t3);
            sd_estimator_add(&alone, &s);
            printf("=");
            best(&alone);
            printf("\n");
        } else {
            return 4;
        }
        fflush(stdout);
    }
    return 0;
}
"""


Built = tuple[list[str], Path]  # what runs the harness, and the program
TARGETS = {"x86-64": ("gcc", []), "armhf": ("arm-linux-gnueabihf-gcc", ["qemu-arm-static"])}


@pytest.fixture(scope="module", params=list(TARGETS))
def harness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Built:
    """The harness built for x86-64, and for 32-bit ARM (run under qemu-user): what runs
    it and the program."""
    cc, runner = TARGETS[request.param]
    for tool in runner:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (./install --dev installs it)")
    folder = tmp_path_factory.mktemp(f"probes-{request.param}")
    (folder / "motor.h").write_text(c.header(MOTOR.schema))
    return runner, build(compiler(cc), HARNESS, folder / "harness")


class Harness:
    """The C program, one command at a time: what it sent, then its ``=`` line."""

    def __init__(self, built: Built) -> None:
        runner, exe = built
        self.process = subprocess.Popen([*runner, str(exe)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1,
                                        env={**os.environ, **QEMU_ENV})

    def ask(self, line: str) -> tuple[list[bytes], list[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        sent = []
        while True:
            out = self.process.stdout.readline()
            assert out, f"the harness stopped at {line!r}"
            if out.startswith("S "):
                sent.append(bytes.fromhex(out[2:].strip()))
            else:
                return sent, out[1:].split()

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(TIMEOUT) == 0


def _hex(data: bytes) -> str:
    return data.hex() or "-"


def _best(e: clocks.Estimate | None) -> list[str]:
    if e is None:
        return ["none"]
    return [str(e.offset_ns), str(e.uncertainty_ns), str(e.round_trip_ns), str(e.at_ns)]


int64 = st.integers(-(2**63), 2**63 - 1)
stamps = st.integers(0, 2**62)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(probes=st.lists(st.tuples(st.binary(min_size=8, max_size=8), int64, int64, int64),
                       max_size=20),
       reports=st.lists(st.tuples(stamps, st.integers(1, 2**63 - 1),
                                  st.binary(min_size=8, max_size=8), stamps, stamps,
                                  st.none() | st.tuples(
                                      st.integers(-loss.MAX_OFFSET_NS, loss.MAX_OFFSET_NS),
                                      st.integers(0, loss.MAX_UNCERTAINTY_NS))),
                        max_size=20))
def test_probe_and_report_bytes_are_pythons(harness: Built, probes: list, reports: list
                                            ) -> None:
    h = Harness(harness)
    try:
        for nonce, t0, t1, t2 in probes:
            _, (got,) = h.ask(f"P {nonce.hex()} {t0} {t1} {t2}")
            assert bytes.fromhex(got) == clocks.encode(nonce, t0, t1, t2)
        for now, epoch, fp, sent, failed, clock in reports:
            measured = "0 0 0" if clock is None else f"1 {clock[0]} {clock[1]}"
            _, (got,) = h.ask(f"R {now} {epoch} {fp.hex()} {sent} {failed} {measured}")
            want = loss.sender_report(now, epoch, fp, sent, failed, clock)
            assert bytes.fromhex(got) == want
            report = loss.parse_sender_report(bytes.fromhex(got))  # and the relay takes it
            assert (report.offset_ns, report.uncertainty_ns) == (clock or (None, None))
    finally:
        h.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.tuples(st.binary(min_size=8, max_size=8), int64, int64, int64).map(
        lambda p: clocks.encode(*p)),
    st.binary(max_size=60),
    st.builds(lambda p, k, b: p[:k] + bytes([b]) + p[k + 1:],
              st.tuples(st.binary(min_size=8, max_size=8), int64, int64, int64).map(
                  lambda p: clocks.encode(*p)), st.integers(0, 41), st.integers(0, 255))),
    max_size=30))
def test_what_c_decodes_as_a_probe_is_what_python_parses(harness: Built,
                                                         datagrams: list[bytes]) -> None:
    """Probes (negative stamps too), random bytes and probes with one byte changed:
    C decodes exactly what ``clocks.parse`` takes, to the same fields."""
    h = Harness(harness)
    try:
        for data in datagrams:
            _, got = h.ask(f"D {_hex(data)}")
            try:
                probe = clocks.parse(data)
            except WireError:
                assert got == ["bad"], data.hex()
                continue
            assert got == [probe.nonce.hex(), str(probe.t0), str(probe.t1), str(probe.t2)]
    finally:
        h.close()


exchange = st.builds(  # t0, the relay's delay to t1, its turnaround, the way back
    lambda t0, out, turn, back, skew: (t0, t0 - skew + out, t0 - skew + out + turn,
                                       t0 + out + turn + back),
    st.integers(10**15, 2 * 10**18), st.integers(0, 10**9), st.integers(0, 10**9),
    st.integers(0, 10**9), st.integers(-(10**17), 10**17))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.lists(exchange, min_size=1, max_size=40))
def test_the_estimate_is_pythons_the_lowest_round_trip_of_the_last_8(
        harness: Built, exchanges: list) -> None:
    h = Harness(harness)
    python = clocks.Estimator()
    try:
        for t0, t1, t2, t3 in exchanges:
            python.add(t0, t1, t2, t3)
            _, got = h.ask(f"E {t0} {t1} {t2} {t3}")
            assert got == _best(python.estimate()), (t0, t1, t2, t3)
    finally:
        h.close()


ANSWERS = ("right", "right", "right", "request", "nonce", "t0", "short", "long", "header",
           "t1_zero", "backwards", "turnaround", "negative")


def answer(kind: str, probe: clocks.Probe, t3: int, turn: int, skew: int) -> bytes:
    """An answer to ``probe`` arriving at ``t3``: right, or wrong in one way."""
    t1 = max(probe.t0 - skew + (t3 - probe.t0 - turn) // 2, 1)
    t2 = t1 + turn
    wrong = {"request": (probe.nonce, probe.t0, 0, 0),
             "nonce": (bytes(8) if probe.nonce != bytes(8) else b"\1" * 8, probe.t0, t1, t2),
             "t0": (probe.nonce, probe.t0 + 1, t1, t2), "t1_zero": (probe.nonce, probe.t0, 0, t2),
             "backwards": (probe.nonce, probe.t0, t2 + 1, t2),
             "turnaround": (probe.nonce, probe.t0, t1, t1 + clocks.MAX_TURNAROUND_NS + 1),
             "negative": (probe.nonce, probe.t0, t1, t1 + (t3 - probe.t0) + 1)}
    data = clocks.encode(*wrong.get(kind, (probe.nonce, probe.t0, t1, t2)))
    return {"short": data[:-1], "long": data + b"\0",
            "header": b"\xc3\x02" + data[2:]}.get(kind, data)


step = st.one_of(st.tuples(st.just("tick"), st.integers(1, 400)),
                 st.tuples(st.just("answer"), st.integers(1, 200), st.sampled_from(ANSWERS),
                           st.integers(0, 10**6), st.integers(-(10**12), 10**12)
                           | st.just(-2 * 10**18)))  # an offset no report could carry


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(seed=st.integers(1, 2**63 - 1), steps=st.lists(step, max_size=60))
def test_the_probers_requests_and_answer_checks_are_pythons(harness: Built, seed: int,
                                                             steps: list) -> None:
    """C and Python's Prober in lockstep, on one clock (in 7 ms steps): the same probes
    at the same times (C's nonces given to Python), the same answers taken and refused
    by reason (an answer again, of a probe answered: ``unknown_nonce``), the same
    estimate. (``slow`` cannot happen on one clock: a probe is forgotten after 1 s.)"""
    h = Harness(harness)
    python = clocks.Prober(seconds=10.0)
    now = 10**15 + 3 * STEP
    sent: list[clocks.Probe] = []

    def mirror(datagrams: list[bytes], taken: int, answered: bytes | None) -> None:
        took = 0
        if answered is not None and python.waiting(now / 1e9):
            took = python.take(answered, now) is not None
        assert taken == took, (answered, now)
        probes = [d for d in datagrams if d[:10] == clocks.PROBE_HEADER]
        assert len(probes) == len(datagrams)  # nothing else goes out: no data, no report
        assert len(probes) == int(python.due(now / 1e9)), now
        for data in probes:
            probe = clocks.parse(data)
            nonce = int.from_bytes(probe.nonce, "little")
            with mock.patch.object(clocks.random, "getrandbits", lambda _, n=nonce: n):
                assert python.request(now, now / 1e9) == data
            sent.append(probe)

    try:
        h.ask(f"L {seed} {10**10}")
        datagrams, (taken,) = h.ask(f"T {now}")
        mirror(datagrams, int(taken), None)
        for s in steps:
            if s[0] == "tick":
                now += s[1] * STEP
                datagrams, (taken,) = h.ask(f"T {now}")
                mirror(datagrams, int(taken), None)
                continue
            _, back, kind, turn, skew = s
            now += back * STEP
            probe = sent[-1 - (back % len(sent))]
            data = answer(kind, probe, now, turn, skew)
            datagrams, (taken,) = h.ask(f"A {now} {_hex(data)}")
            mirror(datagrams, int(taken), data)
        _, got = h.ask("Q")
        want: list[Any] = [python.sent, python.answered,
                           *(python.refused[r] for r in ("unknown_nonce", "not_an_answer",
                                                         "bad_stamps", "slow", "garbled"))]
        assert got == [str(w) for w in want] + _best(python.estimate())
    finally:
        h.close()


def test_a_burst_of_four_20_ms_apart_then_every_10_s(harness: Built) -> None:
    """The schedule on literal times, and the clock going back: a probe at once."""
    h = Harness(harness)
    try:
        h.ask(f"L 5 {10**10}")
        base = 10**15
        at = []
        for ms in (0, 10, 20, 30, 40, 61, 70, 5000, 10_060, 10_070, 10_080, 10_100, 5):
            datagrams, _ = h.ask(f"T {base + ms * MS}")
            at += [ms] * len(datagrams)
        assert at == [0, 20, 40, 61, 10_070, 10_100, 5]
    finally:
        h.close()
