"""A channel's single-header C99 sender, and an example program that sends it.

The header holds the channel's struct, its encoder to Avro single-object encoding (the
fingerprint computed here, by speeddata.wire as the relay computes it), the sizes known
at generation (the largest datagram, so the buffer is fixed) and a send function over
a pluggable network hook (``sd_send_fn``; a POSIX one with ``SPEEDDATA_POSIX``). Pure:
text in, text out.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePath
from typing import Any

from speeddata import __version__, clocks, loss, wire
from speeddata.codegen.model import Channel, Field, Node, channel_model
from speeddata.errors import SchemaError
from speeddata.schemas import channel_from_schema

SCALARS = {"boolean": "bool", "int": "int32_t", "long": "int64_t", "float": "float",
           "double": "double"}
PUT = {"int": "sd_put_long(p, (int64_t){x})", "long": "sd_put_long(p, {x})",
       "float": "sd_put_float(p, {x})", "double": "sd_put_double(p, {x})"}


def _bytes_list(data: bytes) -> str:
    return ", ".join(f"0x{b:02x}" for b in data)


def _common() -> str:
    """common.h with probe.h's two parts in their places (one header, in order)."""
    folder = resources.files("speeddata.codegen")
    types, functions = folder.joinpath("probe.h").read_text().split("/* @@functions@@ */\n")
    text = (folder.joinpath("common.h").read_text().replace("@PROBE_TYPES@\n", types)
            .replace("@PROBE_FUNCTIONS@\n", functions))
    report_max = wire.HEADER_SIZE + 6 * 10 + 8  # six longs (v2) and the fingerprint
    return (text.replace("@REPORT_HEADER@", _bytes_list(loss.SENDER_REPORT_HEADER))
            .replace("@REPORT2_HEADER@", _bytes_list(loss.SENDER_REPORT_V2_HEADER))
            .replace("@PROBE_HEADER@", _bytes_list(clocks.PROBE_HEADER))
            .replace("@REPORT_MAX_SIZE@", str(report_max)))


def _member(node: Node, member: str, indent: str) -> list[str]:
    """The struct member(s) holding ``node`` as ``member``."""
    if node.kind == "null":
        return []
    if node.kind in SCALARS:
        return [f"{indent}{SCALARS[node.kind]} {member};"]
    if node.kind in ("string", "bytes"):
        kind = "text" if node.kind == "string" else "bytes"
        return [f"{indent}struct sd_{kind} {member}; /* at most {node.length} bytes */"]
    if node.kind == "fixed":
        if node.length == 0:
            return [f"{indent}uint8_t {member}[1]; /* a fixed of 0 bytes: not sent */"]
        return [f"{indent}uint8_t {member}[{node.length}];"]
    if node.kind == "enum":
        return [f"{indent}enum {node.cname} {member};"]
    if node.kind == "record":
        return [f"{indent}struct {node.cname} {member};"]
    branches = ", ".join(f"{i}: {tag}" for i, (tag, _) in enumerate(node.branches))
    inner = [line for tag, child in node.branches
             for line in _member(child, f"as_{tag}", indent + "        ")]
    lines = [f"{indent}struct {{", f"{indent}    int32_t branch; /* {branches} */"]
    if inner:
        lines += [f"{indent}    union {{", *inner, f"{indent}    }} u;"]
    return [*lines, f"{indent}}} {member};"]


def _branch_names(owner: str, f: Field) -> list[str]:
    """``enum { <owner>_<field>_is_<tag> = i }`` for a union field's branches."""
    if f.node.kind != "union":
        return []
    names = ", ".join(f"{owner}_{f.member}_is_{tag} = {i}"
                      for i, (tag, _) in enumerate(f.node.branches))
    return [f"enum {{ {names} }};"]


def _declare(node: Node, time: str = "") -> list[str]:
    if node.kind == "enum":
        symbols = ", ".join(f"{node.cname}_{s} = {i}" for i, s in enumerate(node.symbols))
        return [f"enum {node.cname} {{ {symbols} }};", ""]
    lines = [line for f in node.fields for line in _branch_names(node.cname, f)]
    members = [line + (" /* the time axis: ns since the Unix epoch */" if f.name == time
                       else "") for f in node.fields for line in _member(f.node, f.member, "    ")]
    body = members or ["    char sd_empty_; /* a record of no fields sends no bytes */"]
    return [*lines, f"struct {node.cname} {{", *body, "};", ""]


def _put(node: Node, x: str, indent: str) -> list[str]:
    """Statements appending ``node``'s value ``x`` at ``p`` (NULL: it does not fit)."""
    if node.kind == "null" or (node.kind == "fixed" and node.length == 0):
        return []
    if node.kind == "boolean":
        return [f"{indent}*p++ = (uint8_t)({x} ? 1 : 0);"]
    if node.kind in PUT:
        return [f"{indent}p = {PUT[node.kind].format(x=x)};"]
    if node.kind in ("string", "bytes"):
        return [f"{indent}if ({x}.len > {node.length}u) return NULL;",
                f"{indent}p = sd_put_bytes(p, {x}.data, {x}.len);"]
    if node.kind == "fixed":
        return [f"{indent}memcpy(p, {x}, {node.length});", f"{indent}p += {node.length};"]
    if node.kind == "enum":
        return [f"{indent}if ((uint32_t){x} >= {len(node.symbols)}u) return NULL;",
                f"{indent}p = sd_put_long(p, (int64_t){x});"]
    if node.kind == "record":
        return [f"{indent}p = {node.cname}_put(p, &{x});", f"{indent}if (p == NULL) return NULL;"]
    lines = [f"{indent}switch ({x}.branch) {{"]
    for i, (tag, child) in enumerate(node.branches):
        lines += [f"{indent}case {i}:", f"{indent}    p = sd_put_long(p, {i});",
                  *_put(child, f"{x}.u.as_{tag}", indent + "    "), f"{indent}    break;"]
    return [*lines, f"{indent}default:", f"{indent}    return NULL;", f"{indent}}}"]


def _put_function(node: Node) -> list[str]:
    body = [line for f in node.fields for line in _put(f.node, f"r->{f.member}", "    ")]
    return [f"static inline uint8_t *{node.cname}_put(uint8_t *p, const struct {node.cname} *r)",
            "{", "    (void)r;", *body, "    return p;", "}", ""]


def _escape_comment(text: str) -> str:
    return text.replace("*/", "*\\/")


def header(schema: dict[str, Any], max_length: int | None = None,
           source: str = "<schema>") -> str:
    """The single-header C99 sender of the channel ``schema``; SchemaError names a field
    it cannot take (arrays, maps, recursive types, strings with no maximum length)."""
    return generate(schema, max_length, source)[1]


def generate(schema: dict[str, Any], max_length: int | None = None,
             source: str = "<schema>") -> tuple[Channel, str]:
    """The generator's model of the channel and its header (the model is what the
    example and the tests walk)."""
    channel = channel_from_schema(schema, source)
    model = channel_model(schema, channel.time_field, max_length, source)
    return model, render(model, channel.fingerprint, wire.canonical_form(schema), source)


def render(model: Channel, fp: bytes, canonical: str, source: str) -> str:
    """The header's text for ``model``, whose fingerprint is ``fp``."""
    root = model.root
    name, macro = root.cname, root.cname.upper()
    size = wire.HEADER_SIZE + root.max_size
    lines = [
        f"/* {name}.h: the speeddata C sender of channel {root.name!r}.",
        f" * Generated by `speeddata codegen c {_escape_comment(PurePath(source).name)}`"
        f" (speeddata {__version__}): generate it again, do not edit.",
        f" * Fingerprint (CRC-64-AVRO of the Parsing Canonical Form): {fp.hex()}",
        f" * Canonical form: {_escape_comment(canonical)}",
        " *",
        f" * Fill a struct {name}, then {name}_send(&link, &record, now_ns) (or",
        f" * {name}_encode() into a buffer of {macro}_MAX_SIZE bytes and send it yourself).",
        " * Define SPEEDDATA_POSIX for the POSIX UDP transport (sd_posix_open,",
        " * sd_posix_send, sd_posix_recv); any other stack plugs in as an sd_send_fn (and an",
        " * sd_recv_fn for the time probes: sd_link_probe, then sd_poll from the loop). */",
        f"#ifndef SPEEDDATA_CHANNEL_{macro}_H",
        f"#define SPEEDDATA_CHANNEL_{macro}_H",
        "",
        _common(),
        f"/* ---- channel {root.name!r} ---- */",
        f"#define {macro}_MAX_SIZE {size} /* the largest datagram: header and body */",
        f"static const uint8_t {macro}_HEADER[10] = {{{_bytes_list(wire.header(fp))}}};",
        f"static const uint8_t *const {macro}_FINGERPRINT = {macro}_HEADER + 2;",
        "",
    ]
    for node in model.named:
        lines += _declare(node, model.time_field if node is root else "")
    for node in model.named:
        if node.kind == "record":
            lines += _put_function(node)
    time = next(f for f in root.fields if f.name == model.time_field)
    lines += [
        f"/* Encode r as one datagram into buf ({macro}_MAX_SIZE bytes): its length, or 0",
        " * when r does not fit the schema (a string too long, an enum or union branch",
        f" * out of range). r->{time.member} is the sample time, ns since the Unix epoch. */",
        f"static inline size_t {name}_encode(const struct {name} *r, uint8_t *buf)",
        "{",
        f"    uint8_t *p = {name}_put(buf + 10, r);",
        "    if (p == NULL) return 0;",
        f"    memcpy(buf, {macro}_HEADER, 10);",
        "    return (size_t)(p - buf);",
        "}",
        "",
        "/* Encode and send r on l (its loss report first when one is due): 0 sent, 1 the",
        " * network refused it (counted in l->failed), -1 r does not fit (l->refused). */",
        f"static inline int {name}_send(struct sd_link *l, const struct {name} *r, "
        "int64_t now_ns)",
        "{",
        "#ifdef SPEEDDATA_STATIC_BUFFER",
        f"    static uint8_t buf[{macro}_MAX_SIZE]; /* off the stack: one sending thread */",
        "#else",
        f"    uint8_t buf[{macro}_MAX_SIZE];",
        "#endif",
        f"    return sd_link_send(l, {macro}_FINGERPRINT, buf, {name}_encode(r, buf), now_ns);",
        "}",
        "",
        "/* Send l's loss report of this channel now: as the sender stops. */",
        f"static inline void {name}_report(struct sd_link *l, int64_t now_ns)",
        "{",
        f"    sd_report(l, {macro}_FINGERPRINT, now_ns);",
        "}",
        f"#endif /* SPEEDDATA_CHANNEL_{macro}_H */",
        "",
    ]
    return "\n".join(lines)


def _fill(node: Node, x: str, indent: str, time: bool = False) -> list[str]:
    """Statements setting ``x`` from the index ``i`` (numbers) and ``text`` (strings)."""
    if time:
        return [f"{indent}{x} = now;"]
    if node.kind == "boolean":
        return [f"{indent}{x} = (i % 2) != 0;"]
    if node.kind in SCALARS:
        return [f"{indent}{x} = ({SCALARS[node.kind]})i;"]
    if node.kind in ("string", "bytes"):
        cast = "" if node.kind == "string" else "(const uint8_t *)"
        return [f"{indent}{x}.data = {cast}text;",
                f"{indent}{x}.len = length < {node.length}u ? length : {node.length}u;"]
    if node.kind == "enum":
        return [f"{indent}{x} = (enum {node.cname})(i % {len(node.symbols)});"]
    if node.kind == "record":
        return [line for f in node.fields for line in _fill(f.node, f"{x}.{f.member}", indent)]
    if node.kind == "union":
        k = next((k for k, (_, c) in enumerate(node.branches) if c.kind != "null"), 0)
        tag, child = node.branches[k]
        return [f"{indent}{x}.branch = {k};", *_fill(child, f"{x}.u.as_{tag}", indent)]
    return []  # null and fixed: zeros


EXAMPLE = """\
/* example.c: sends COUNT records of channel '{channel}' to a relay, the way a board
 * would: each record's time is its sending time and its numeric fields hold the
 * record's index (0, 1, 2...). It measures its clock against the relay's with time
 * probes (a burst before the first record, then every SPEEDDATA_PROBE_SECONDS, default
 * 10; 0: none), and its clock is the wall clock plus SPEEDDATA_CLOCK_OFFSET_NS (default
 * 0: a board whose clock is wrong, for a test). Generated by `speeddata codegen c
 * --example`.
 *   cc -std=c99 -O2 -o example example.c && ./example HOST PORT COUNT [RATE] */
#define _POSIX_C_SOURCE 200112L
#define SPEEDDATA_POSIX
#include "{name}.h"

#include <stdio.h>
#include <stdlib.h>

/* The board's clock (sd_clock_fn): the wall clock plus *ctx ns. */
static int64_t board_clock(void *ctx)
{{
    return sd_posix_now_ns() + *(const int64_t *)ctx;
}}

static long long env_number(const char *name, long long otherwise)
{{
    const char *text = getenv(name);
    return text != NULL && *text != '\\0' ? strtoll(text, NULL, 10) : otherwise;
}}

/* Sleep until next (CLOCK_MONOTONIC); while a probe awaits its answer, wait on the
 * socket instead, so that the answer is stamped as it arrives. */
static void wait_until(struct sd_link *link, const struct sd_posix *net,
                       const struct timespec *next)
{{
    struct timespec now;
    struct pollfd ready;
    long long left;
    for (;;) {{
        clock_gettime(CLOCK_MONOTONIC, &now);
        left = (long long)(next->tv_sec - now.tv_sec) * 1000000000LL
               + (long long)(next->tv_nsec - now.tv_nsec);
        if (left < 1000000 ||
            !sd_probe_waiting(&link->probe, link->probe.clock(link->probe.clock_ctx))) {{
            break;
        }}
        ready.fd = net->fd;
        ready.events = POLLIN;
        ready.revents = 0;
        if (poll(&ready, 1, (int)(left / 1000000)) > 0) {{
            (void)sd_poll(link);
        }}
    }}
    if (left > 0) {{
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, next, NULL);
    }}
}}

int main(int argc, char **argv)
{{
    struct sd_posix net;
    struct sd_link link;
    struct sd_estimate clock;
    struct {name} r;
    struct timespec next;
    long long i, count;
    double rate = 1000.0;
    int64_t start, now, offset, probe_s;
    char text[32];
    uint32_t length;

    if (argc < 4 || argc > 5) {{
        fprintf(stderr, "usage: %s HOST PORT COUNT [RATE]\\n"
                "  sends COUNT records of channel '{channel}' to the relay at HOST:PORT,\\n"
                "  RATE a second (default 1000; 0: as fast as it can)\\n", argv[0]);
        return 2;
    }}
    count = strtoll(argv[3], NULL, 10);
    if (argc == 5) {{
        rate = strtod(argv[4], NULL);
    }}
    offset = (int64_t)env_number("SPEEDDATA_CLOCK_OFFSET_NS", 0);
    probe_s = (int64_t)env_number("SPEEDDATA_PROBE_SECONDS", 10);
    if (sd_posix_open(&net, argv[1], argv[2]) != 0) {{
        fprintf(stderr, "example: cannot make a UDP socket to %s port %s\\n", argv[1], argv[2]);
        return 1;
    }}
    start = board_clock(&offset);
    sd_link_init(&link, sd_posix_send, &net, start ^ ((int64_t)getpid() << 40), 1000000000);
    clock_gettime(CLOCK_MONOTONIC, &next);
    if (probe_s > 0) {{
        sd_link_probe(&link, sd_posix_recv, &net, board_clock, &offset,
                      probe_s * 1000000000, (uint64_t)start ^ ((uint64_t)getpid() << 32));
        while (link.probe.answered < SD_PROBE_BURST && board_clock(&offset) - start < 1000000000) {{
            (void)sd_poll(&link); /* a burst before the first record, each answer awaited */
            next.tv_nsec += 5000000;
            if (next.tv_nsec >= 1000000000) {{
                next.tv_sec += 1;
                next.tv_nsec -= 1000000000;
            }}
            wait_until(&link, &net, &next);
        }}
    }}
    memset(&r, 0, sizeof r);
    for (i = 0; i < count; i++) {{
        if (rate > 0.0) {{
            long long at = (long long)next.tv_nsec + (long long)(1e9 / rate);
            next.tv_sec += (time_t)(at / 1000000000);
            next.tv_nsec = (long)(at % 1000000000);
            wait_until(&link, &net, &next);
        }}
        length = (uint32_t)snprintf(text, sizeof text, "%lld", i);
        (void)length;
        now = board_clock(&offset);
{fill}
        if ({name}_send(&link, &r, now) < 0) {{
            fprintf(stderr, "example: record %lld does not fit the schema\\n", i);
            return 1;
        }}
    }}
    {name}_report(&link, board_clock(&offset));
    printf("sent %lld, failed %lld\\n", (long long)link.sent, (long long)link.failed);
    if (sd_link_clock(&link, &clock)) {{
        printf("clock %lld ns, uncertainty %lld ns, %lld probes answered of %lld\\n",
               (long long)clock.offset_ns, (long long)clock.uncertainty_ns,
               (long long)link.probe.answered, (long long)link.probe.sent);
    }}
    sd_posix_close(&net);
    return 0;
}}
"""


def example(model: Channel) -> str:
    """example.c for the channel: ``main(argc, argv)`` taking HOST PORT COUNT [RATE]."""
    root = model.root
    fill = [line for f in root.fields for line in _fill(
        f.node, f"r.{f.member}", "        ", time=f.name == model.time_field)]
    return EXAMPLE.format(channel=root.name, name=root.cname, fill="\n".join(fill))


__all__ = ["SchemaError", "example", "generate", "header", "render"]
