"""speeddata codegen c: the generator's model and refusals (fast), the header compiled
by real compilers for x86-64 and ARM (e2e), and its bytes against fastavro's for random
schemas and records (e2e, hypothesis: one compile per batch of schemas)."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speeddata import loss, wire
from speeddata.codegen import c
from speeddata.codegen.model import Node, channel_model, varint_size
from speeddata.errors import SchemaError
from speeddata.schemas import load_file
from tests.avro_strategies import record_schemas
from tests.helpers import SCHEMAS, TIMEOUT

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
MOTOR = load_file(SCHEMAS / "motor.avsc")


def one_field(avro_type: Any, **attrs: Any) -> dict[str, Any]:
    return {"type": "record", "name": "one", "fields": [
        {"name": "time", "type": "long"}, {"name": "x", "type": avro_type, **attrs}]}


# -- the model: sizes and refusals, no compiler -------------------------------------------

def test_a_seven_field_channel_has_its_largest_datagram_computed() -> None:
    model = channel_model(MOTOR.schema)
    assert model.root.max_size == 10 + 6 * 8  # time (a long's ten bytes) and six doubles
    text = c.header(MOTOR.schema)
    assert "#define MOTOR_MAX_SIZE 68 " in text
    assert f"{{{c._bytes_list(wire.header(MOTOR.fingerprint))}}}" in text  # the relay's
    assert c._bytes_list(loss.SENDER_REPORT_HEADER) in text


@pytest.mark.parametrize(("avro_type", "attrs", "size"), [
    ("boolean", {}, 1), ("int", {}, 5), ("float", {}, 4), ("null", {}, 0),
    ("string", {"maxLength": 63}, 1 + 63), ("string", {"maxLength": 64}, 2 + 64),
    ({"type": "bytes", "maxLength": 200}, {}, 2 + 200),  # on the type
    ({"type": "enum", "name": "E", "symbols": ["A"] * 64}, {}, 1),
    ({"type": "enum", "name": "E", "symbols": ["A"] * 65}, {}, 2),
    ({"type": "fixed", "name": "F", "size": 16}, {}, 16),
    (["null", "double"], {}, 1 + 8), (["null", "string"], {"maxLength": 10}, 1 + 11),
    ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"},
                                                {"name": "b", "type": "double"}]}, {}, 13),
])
def test_each_kind_has_its_largest_size(avro_type: Any, attrs: dict, size: int) -> None:
    x = channel_model(one_field(avro_type, **attrs)).root.fields[1].node
    assert x.max_size == size


def test_the_max_length_option_is_the_default_and_an_attribute_wins() -> None:
    schema = {"type": "record", "name": "s", "fields": [
        {"name": "time", "type": "long"}, {"name": "a", "type": "string"},
        {"name": "b", "type": "string", "maxLength": 3}]}
    a, b = channel_model(schema, max_length=100).root.fields[1:]
    assert (a.node.length, b.node.length) == (100, 3)


@pytest.mark.parametrize(("avro_type", "attrs", "said"), [
    ("string", {}, "field 'x': a string needs its most bytes: add \"maxLength\""),
    ({"type": "array", "items": "long"}, {}, "field 'x': arrays are not supported"),
    ({"type": "map", "values": "long"}, {}, "field 'x': maps are not supported"),
    ("bytes", {"maxLength": -1}, "field 'x': maxLength -1 is not a whole number"),
    ({"type": "record", "name": "R", "fields": [{"name": "y", "type": "R"}]}, {},
     "field 'x.y': type 'R' refers to itself"),
    ({"type": "record", "name": "R", "fields": [{"name": "y", "type": ["null", "R"]}]}, {},
     "field 'x.y': type 'R' refers to itself"),
])
def test_what_the_generator_refuses_names_the_field(avro_type: Any, attrs: dict,
                                                    said: str) -> None:
    with pytest.raises(SchemaError, match=r"^schema <schema>: ") as caught:
        c.header(one_field(avro_type, **attrs))
    assert said in str(caught.value)


def test_c_keywords_and_names_become_identifiers() -> None:
    schema = {"type": "record", "name": "rig.motor", "fields": [
        {"name": "time", "type": "long"}, {"name": "int", "type": "double"},
        {"name": "u", "type": ["null", {"type": "enum", "name": "State", "symbols": ["ON"]}]},
        {"name": "v", "type": "State"}, {"name": "w", "type": "rig.State"}]}  # by name
    text = c.header(schema)
    assert "double int_;" in text and "enum motor_rig_State as_State;" in text
    assert "enum { motor_u_is_null = 0, motor_u_is_State = 1 };" in text
    assert "enum motor_rig_State v;" in text and "enum motor_rig_State w;" in text
    with pytest.raises(SchemaError, match=r"rig\.Other"):  # (fastavro's word, first)
        c.header({**schema, "fields": [*schema["fields"][:3], {"name": "v", "type": "Other"}]})


def test_the_cli_writes_the_header_and_refuses_with_the_field(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "speeddata", "codegen", "c", "--channels-dir", str(SCHEMAS)]
    done = subprocess.run([*run, str(SCHEMAS / "env.avsc"), "-o", str(tmp_path / "env.h")],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2 and "field 'message': a string needs its most bytes" in (
        done.stderr), done.stderr
    done = subprocess.run([*run, str(SCHEMAS / "env.avsc"), "--max-length", "32", "-o",
                           str(tmp_path / "env.h"), "--example", str(tmp_path / "ex")],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env.h").read_text() == (tmp_path / "ex" / "env.h").read_text()
    assert "int main(int argc, char **argv)" in (tmp_path / "ex" / "example.c").read_text()
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert "--max-length" in helped.stdout and "--example" in helped.stdout


# -- compilers -----------------------------------------------------------------------------

def compiler(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (./install --dev installs it)")
    return found


def build(cc: str, source: str, out: Path, *flags: str) -> Path:
    out.with_suffix(".c").write_text(source)
    done = subprocess.run([cc, *CFLAGS, *flags, "-I", str(out.parent), "-o", str(out),
                           str(out.with_suffix(".c"))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


ENCODER_ONLY = """#include "{name}.h"
uint8_t buf[{macro}_MAX_SIZE];
size_t encode(const struct {name} *r) {{ return {name}_encode(r, buf); }}
int send_on(struct sd_link *l, const struct {name} *r, int64_t now) {{
    return {name}_send(l, r, now);
}}
"""


@pytest.mark.e2e
@pytest.mark.parametrize("cc", ["gcc", "arm-linux-gnueabihf-gcc", "arm-none-eabi-gcc"])
@pytest.mark.parametrize("buffers", ["stack", "static", "no-probe"])
def test_the_encoder_needs_nothing_of_libc_but_memcpy(cc: str, buffers: str,
                                                      tmp_path: Path) -> None:
    """The header without SPEEDDATA_POSIX compiles warning-free for x86-64, 32-bit ARM
    Linux and bare-metal Cortex-M, and its object calls memcpy at most; with
    SPEEDDATA_STATIC_BUFFER its buffers are in .bss, not on the stack; with
    SPEEDDATA_NO_PROBE (no time probes) it compiles too."""
    path = compiler(cc)
    text = c.header(load_file(SCHEMAS / "env.avsc").schema, 64)
    (tmp_path / "env.h").write_text(text)
    flags = ["-c", "-ffreestanding"] + (["-mcpu=cortex-m4", "-mthumb"] if "none" in cc else [])
    flags += {"static": ["-DSPEEDDATA_STATIC_BUFFER"], "no-probe": ["-DSPEEDDATA_NO_PROBE"]
              }.get(buffers, [])
    obj = build(path, ENCODER_ONLY.format(name="env", macro="ENV"), tmp_path / "enc.o", *flags)
    nm = path.replace("gcc", "nm") if "arm" in cc else "nm"
    undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True,
                               check=True).stdout.split()
    assert set(undefined) - {"U"} <= {"memcpy"}, undefined
    size = path.replace("gcc", "size") if "arm" in cc else "size"
    bss = int(subprocess.run([size, str(obj)], capture_output=True, text=True,
                             check=True).stdout.splitlines()[1].split()[2])
    # the caller's buffer of ENCODER_ONLY; the send's and the report's too when static
    # (aligned: more than their bytes added up)
    assert bss >= 99 + 99 + 58 if buffers == "static" else bss == 99, bss


# -- bytes against fastavro's, random schemas (one compile a batch) ------------------------

HARNESS_HEAD = r"""#include <stdio.h>
#include <stdlib.h>
static uint8_t pool[1 << 16];
static size_t used;
static inline long long next_ll(void) {
    long long v; if (scanf("%lld", &v) != 1) exit(3); return v; }
static inline unsigned long long next_hex(void) {
    unsigned long long v; if (scanf("%llx", &v) != 1) exit(3); return v; }
static inline uint8_t *next_blob(uint32_t len) {
    uint8_t *at = pool + used; uint32_t k; unsigned v; char dash[2];
    if (len == 0) { if (scanf("%1s", dash) != 1) exit(3); return at; }
    for (k = 0; k < len; k++) { if (scanf("%2x", &v) != 1) exit(3); at[k] = (uint8_t)v; }
    used += len; return at; }
"""


def _read(node: Node, x: str, out: list[str]) -> None:
    """C statements filling ``x`` from the harness's tokens (``_tokens`` writes them)."""
    k = node.kind
    if k == "boolean":
        out.append(f"{x} = next_ll() != 0;")
    elif k in ("int", "long"):
        out.append(f"{x} = ({c.SCALARS[k]})next_ll();")
    elif k in ("float", "double"):
        width = "uint32_t" if k == "float" else "uint64_t"
        out.append(f"{{ {width} u = ({width})next_hex(); memcpy(&{x}, &u, sizeof u); }}")
    elif k in ("string", "bytes"):
        cast = "const char *" if k == "string" else "const uint8_t *"
        out.append(f"{x}.len = (uint32_t)next_ll(); {x}.data = ({cast})next_blob({x}.len);")
    elif k == "fixed" and node.length:
        out.append(f"memcpy({x}, next_blob({node.length}), {node.length});")
    elif k == "fixed":
        out.append("(void)next_blob(0);")
    elif k == "enum":
        out.append(f"{x} = (enum {node.cname})next_ll();")
    elif k == "record":
        for f in node.fields:
            _read(f.node, f"{x}.{f.member}", out)
    elif k == "union":
        out.append(f"{x}.branch = (int32_t)next_ll(); switch ({x}.branch) {{")
        for i, (tag, child) in enumerate(node.branches):
            out.append(f"case {i}:")
            _read(child, f"{x}.u.as_{tag}", out)
            out.append("break;")
        out.append("default: break; }")


def _hex(data: bytes) -> str:
    return data.hex() or "-"


@st.composite
def value(draw: st.DrawFn, node: Node) -> tuple[Any, list[str]]:
    """A random value of ``node``: (what fastavro writes, the tokens the harness reads)."""
    k = node.kind
    if k == "null":
        return None, []
    if k == "boolean":
        b = draw(st.booleans())
        return b, [str(int(b))]
    if k in ("int", "long"):
        bits = 31 if k == "int" else 63
        n = draw(st.integers(-(2**bits), 2**bits - 1))
        return n, [str(n)]
    if k in ("float", "double"):
        fmt, width = ("<f", 32) if k == "float" else ("<d", 64)
        f = draw(st.floats(width=width))
        return f, [struct.pack(fmt, f)[::-1].hex()]
    if k == "string":
        text = draw(st.text(st.characters(codec="utf-8"), max_size=node.length).filter(
            lambda t: len(t.encode()) <= node.length))
        return text, [str(len(text.encode())), _hex(text.encode())]
    if k in ("bytes", "fixed"):
        low = node.length if k == "fixed" else 0
        data = draw(st.binary(min_size=low, max_size=node.length))
        return data, ([] if k == "fixed" else [str(len(data))]) + [_hex(data)]
    if k == "enum":
        i = draw(st.integers(0, len(node.symbols) - 1))
        return node.symbols[i], [str(i)]
    if k == "record":
        record, tokens = {}, []
        for f in node.fields:
            record[f.name], more = draw(value(f.node))
            tokens += more
        return record, tokens
    i = draw(st.integers(0, len(node.branches) - 1))
    child = node.branches[i][1]
    v, tokens = draw(value(child))
    return (child.name or child.kind, v), [str(i), *tokens]


def harness(models: list) -> str:
    """A program reading records as tokens from stdin, writing each datagram in hex."""
    lines = [f'#include "{m.root.cname}.h"' for m in models] + [HARNESS_HEAD]
    for m in models:
        body: list[str] = []
        _read(m.root, "r", body)
        lines += [f"static void read_{m.root.cname}(void) {{",
                  f"    struct {m.root.cname} r; uint8_t buf[{m.root.cname.upper()}_MAX_SIZE];",
                  "    size_t n, k;", "    memset(&r, 0, sizeof r);", *body,
                  f"    n = {m.root.cname}_encode(&r, buf);",
                  '    for (k = 0; k < n; k++) printf("%02x", buf[k]);',
                  '    printf("\\n");', "}"]
    lines += ["int main(void) {", "    long long which;",
              '    while (scanf("%lld", &which) == 1) {', "        used = 0;",
              "        switch (which) {"]
    lines += [f"        case {i}: read_{m.root.cname}(); break;" for i, m in enumerate(models)]
    lines += ["        default: return 4;", "        }", "    }", "    return 0;", "}"]
    return "\n".join(lines)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[dict, int, list[tuple[Any, list[str]]]]]:
    """Schemas (their names made distinct), each with its maxLength and its records."""
    out = []
    for k in range(draw(st.integers(1, 6))):
        schema = copy.deepcopy(draw(record_schemas(max_depth=2, containers=False)))
        schema["name"] = f"c{k}"
        most = draw(st.integers(0, 40))
        model = channel_model(schema, max_length=most)
        records = draw(st.lists(value(model.root), min_size=1, max_size=8))
        out.append((schema, most, records))
    return out


RUNNERS = {"gcc": [], "arm-linux-gnueabihf-gcc": ["qemu-arm-static"]}  # 32-bit ARM too
QEMU_ENV = {"QEMU_LD_PREFIX": "/usr/arm-linux-gnueabihf"}  # armhf's libc, for qemu-user


@pytest.mark.e2e
@pytest.mark.parametrize("cc", list(RUNNERS))
@settings(max_examples=15, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_random_records_of_random_schemas_encode_as_fastavro_does(
        cc: str, batch: list, tmp_path_factory: Any) -> None:
    """Up to six schemas a batch in one program (their headers side by side), each
    record's datagram from C compared with fastavro's, byte for byte."""
    path = compiler(cc)
    runner = [compiler(tool) for tool in RUNNERS[cc]]
    folder = tmp_path_factory.mktemp("batch")
    models, lines, expected = [], [], []
    for k, (schema, most, records) in enumerate(batch):
        model, text = c.generate(schema, most)
        (folder / f"{model.root.cname}.h").write_text(text)
        models.append(model)
        parsed = fastavro.parse_schema(schema)
        for record, tokens in records:
            body = io.BytesIO()
            fastavro.schemaless_writer(body, parsed, record)
            expected.append((wire.header(wire.fingerprint(schema)) + body.getvalue()).hex())
            lines.append(" ".join([str(k), *tokens]))
    exe = build(path, harness(models), folder / "harness")
    done = subprocess.run([*runner, str(exe)], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, **QEMU_ENV})
    assert done.returncode == 0, done.stderr
    got = done.stdout.split()
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert have == want, (json.dumps(batch[int(lines[i].split()[0])][0]), lines[i])
        assert len(have) // 2 <= wire.HEADER_SIZE + models[int(lines[i].split()[0])].root.max_size


def test_the_example_stamps_the_schemas_abscissa_with_the_sending_time() -> None:
    schema = {"type": "record", "name": "probe", "abscissa": "t", "fields": [
        {"name": "t", "type": "long"}, {"name": "time", "type": "double"}]}
    model, _ = c.generate(schema)
    text = c.example(model)
    assert "r.t = now;" in text and "r.time = (double)i;" in text


LINK = """#include "env.h"
#include <stdio.h>
static int refuse; /* the hook refuses what it is given while set */
static int hook(void *ctx, const uint8_t *data, size_t len) {
    size_t k;
    (void)ctx;
    for (k = 0; k < len; k++) printf("%02x", data[k]);
    printf("\\n");
    return refuse;
}
int main(void) {
    struct sd_link l;
    struct env r;
    int a, b, d, e, f, g;
    memset(&r, 0, sizeof r);
    sd_link_init(&l, hook, NULL, 77, 1000);
    r.message.data = "0123456789"; r.message.len = 10;
    a = env_send(&l, &r, 5000);  /* the report of zero first, then the record */
    r.message.len = 11;
    b = env_send(&l, &r, 5100);  /* too long: refused, nothing sent */
    r.message.len = 3; r.state = (enum env_RigState)3;
    d = env_send(&l, &r, 5200);  /* an enum out of range: refused */
    r.state = env_RigState_FAULT; refuse = 1;
    e = env_send(&l, &r, 6000);  /* a report due (sent 1), then the stack refuses it */
    refuse = 0;
    f = env_send(&l, &r, 100);   /* the clock went back: a report at once */
    g = env_send(&l, &r, 200);
    env_report(&l, 300);
    fprintf(stderr, "%d %d %d %d %d %d %lld %lld %lld\\n", a, b, d, e, f, g,
            (long long)l.sent, (long long)l.failed, (long long)l.refused);
    return 0;
}
"""


@pytest.mark.e2e
def test_the_link_reports_counts_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    """Through a hook that prints each datagram: the loss reports come when due, with
    the counts so far; a record that does not fit is refused, never sent; a send the
    stack refuses is counted as failed."""
    env = load_file(SCHEMAS / "env.avsc")
    (tmp_path / "env.h").write_text(c.header(env.schema, 10))
    exe = build(compiler("gcc"), LINK, tmp_path / "link")
    done = subprocess.run([str(exe)], capture_output=True, text=True, timeout=TIMEOUT)
    assert [int(n) for n in done.stderr.split()] == [0, -1, -1, 1, 0, 0, 3, 1, 2]
    kinds = []
    for line in done.stdout.split():
        datagram = bytes.fromhex(line)
        report = loss.read_sender_report(datagram)
        if report is None:
            fp, body = wire.split(datagram)
            assert fp == env.fingerprint
            record = fastavro.schemaless_reader(io.BytesIO(bytes(body)), env.parsed)
            kinds.append(("record", record["message"], record["state"]))
        else:
            assert (report.sender, report.channel) == (77, env.fingerprint)
            kinds.append(("report", report.time_ns, report.sent, report.failed))
    assert kinds == [("report", 5000, 0, 0), ("record", "0123456789", "IDLE"),
                     ("report", 6000, 1, 0), ("record", "012", "FAULT"),  # refused by the stack
                     ("report", 100, 1, 1), ("record", "012", "FAULT"),
                     ("record", "012", "FAULT"), ("report", 300, 3, 1)]


def test_the_cli_checks_the_fingerprint_against_the_relays_channels(tmp_path: Path) -> None:
    """The configured channels directory is the relay's: the header's channel is there
    with its fingerprint, or missing, or there with another schema (said, not fatal)."""
    edited = {**MOTOR.schema, "fields": MOTOR.schema["fields"][:-1]}
    (tmp_path / "motor.avsc").write_text(json.dumps(edited))
    run = [sys.executable, "-m", "speeddata", "codegen", "c", "-o", str(tmp_path / "m.h")]
    said = {}
    for case, schema, folder in [("same", SCHEMAS / "motor.avsc", SCHEMAS),
                                 ("other", tmp_path / "motor.avsc", SCHEMAS),
                                 ("missing", SCHEMAS / "motor.avsc", tmp_path / "none")]:
        done = subprocess.run([*run, str(schema), "--channels-dir", str(folder)],
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 0, done.stderr
        said[case] = done.stdout + done.stderr
    assert f"the relay's channels ({SCHEMAS}) have it" in said["same"]
    assert "unknown_schema" not in said["same"]
    assert (f"the relay's channel motor ({SCHEMAS / 'motor.avsc'}) has fingerprint "
            f"{MOTOR.fingerprint.hex()}, this header ") in said["other"]
    assert "have no channel motor: add it" in said["missing"]


def worst(node: Node) -> tuple[Any, bool]:
    """The record of ``node`` that encodes longest, and whether a union is in it (the
    size a union is given is a bound: its last index with its largest branch)."""
    k = node.kind
    if k == "record":
        parts = {f.name: worst(f.node) for f in node.fields}
        return {n: v for n, (v, _) in parts.items()}, any(u for _, u in parts.values())
    if k == "union":
        _, (_, child) = max(enumerate(node.branches),
                            key=lambda b: varint_size(b[0]) + b[1][1].max_size)
        return (child.name or child.kind, worst(child)[0]), True
    if k == "enum":
        return node.symbols[-1], False
    return {"null": None, "boolean": True, "int": -(2**31), "long": -(2**63), "float": 0.0,
            "double": 0.0, "string": "x" * node.length, "bytes": b"x" * node.length,
            "fixed": b"\0" * node.length}[k], False


@settings(max_examples=100, deadline=None)
@given(schema=record_schemas(max_depth=3, containers=False), most=st.integers(0, 300),
       data=st.data())
def test_no_record_is_longer_than_the_size_computed(schema: dict, most: int,
                                                    data: st.DataObject) -> None:
    """The buffer is sized right: the longest record fastavro writes fills it exactly
    (a union's size is a bound), and no random record is longer."""
    model = channel_model(schema, max_length=most)
    parsed = fastavro.parse_schema(schema)

    def size(record: Any) -> int:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, record)
        return len(body.getvalue())

    record, bounded = worst(model.root)
    assert size(record) <= model.root.max_size
    assert bounded or size(record) == model.root.max_size
    for record, _ in data.draw(st.lists(value(model.root), max_size=5)):
        assert size(record) <= model.root.max_size
