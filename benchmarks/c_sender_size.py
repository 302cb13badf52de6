#!/usr/bin/env python3
"""What the generated C sender costs in flash and RAM, measured from object files.

For a channel (default: the demo ``motor``, 7 fields: time and six doubles) it compiles,
with each compiler found (gcc for x86-64, arm-linux-gnueabihf-gcc, arm-none-eabi-gcc for
a Cortex-M4), three translation units at -Os and reads them with ``size``, ``nm -S`` and
``-fstack-usage``:

- ``encode``: the encoder alone (``<channel>_encode`` into a caller's buffer);
- ``send``: the encoder, the link and its loss reports (``<channel>_send``), the network
  hook left to the caller (lwIP or anything else), without time probes
  (``-DSPEEDDATA_NO_PROBE``): the baseline of the next;
- ``probe``: ``send`` with the time probes (the prober in the link, ``sd_link_probe``,
  ``sd_poll``, v2 reports), the receive hook left to the caller; its ratio to ``send``;
- ``posix``: ``probe`` and the POSIX UDP transport, its receive hook too (Linux only).

Flash is ``text + data`` of the object; RAM is the struct, the link and the stack of
the send path, at most (every frame of the unit added up, -fstack-usage): its datagram
buffer is on the stack, sized from the schema. The network hook's own use is not in it.

    PYTHONPATH=. .venv/bin/python benchmarks/c_sender_size.py [SCHEMA.avsc] [--max-length N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from speeddata.codegen import c
from speeddata.schemas import load_file

TARGETS = [  # name, compiler, flags; bare-metal has no sockets
    ("x86-64", "gcc", []),
    ("armhf", "arm-linux-gnueabihf-gcc", []),
    ("cortex-m4", "arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb", "-ffreestanding"]),
]
SEND = ("int snd(struct sd_link *l, const struct {n} *r, int64_t t) "
        "{{ return {n}_send(l, r, t); }}\n")
PROBING = ("void prb(struct sd_link *l, sd_recv_fn f, void *c, sd_clock_fn k) "
           "{{ sd_link_probe(l, f, c, k, NULL, SD_PROBE_EVERY_NS, 1u); }}\n"
           "int pol(struct sd_link *l) {{ return sd_poll(l); }}\n")
UNITS = {  # name: source, flags
    "encode": ("size_t enc(const struct {n} *r, uint8_t *buf) {{ return {n}_encode(r, buf); }}\n",
               []),
    "send": (SEND, ["-DSPEEDDATA_NO_PROBE"]),
    "probe": (SEND + PROBING, []),
    "posix": (SEND + "void prb(struct sd_link *l, struct sd_posix *p) "
              "{{ sd_link_probe(l, sd_posix_recv, p, sd_posix_clock, NULL, "
              "SD_PROBE_EVERY_NS, 1u); }}\n"
              "int pol(struct sd_link *l) {{ return sd_poll(l); }}\n"
              "int opn(struct sd_posix *p, const char *h, const char *s) "
              "{{ return sd_posix_open(p, h, s); }}\n"
              "int64_t now(void) {{ return sd_posix_now_ns(); }}\n", []),
}
PROBE = "struct {n} probe_record;\nstruct sd_link probe_link;\n"


def run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def compile_unit(cc: str, flags: list[str], folder: Path, name: str, body: str,
                 posix: bool) -> Path:
    src = folder / f"{name}.c"
    head = "#define _POSIX_C_SOURCE 200112L\n#define SPEEDDATA_POSIX\n" if posix else ""
    src.write_text(f'{head}#include "channel.h"\n{body}')
    obj = folder / f"{name}.o"
    run(cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-Os", "-fstack-usage",
        *flags, "-c", "-o", str(obj), str(src))
    return obj


def flash(tool: str, obj: Path) -> int:
    text, data, _bss = run(tool, str(obj)).splitlines()[1].split()[:3]
    return int(text) + int(data)


def stack(obj: Path) -> int:
    """The frames of every function of the unit added up: at most what a call takes
    (the entry point and what it calls, as -Os left them; the hook's own stack aside)."""
    lines = obj.with_suffix(".su").read_text().splitlines()
    return sum(int(line.split("\t")[1]) for line in lines)


def sizes(nm: str, obj: Path) -> dict[str, int]:
    out = {}
    for line in run(nm, "-S", str(obj)).splitlines():
        parts = line.split()
        if len(parts) == 4:
            out[parts[3]] = int(parts[1], 16)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("schema", nargs="?", default="schemas/motor.avsc")
    p.add_argument("--max-length", type=int)
    args = p.parse_args()
    channel = load_file(Path(args.schema))
    model, text = c.generate(channel.schema, args.max_length, args.schema)
    n = model.root.cname
    fields = len(model.root.fields)
    print(f"channel {channel.name}: {fields} fields, datagrams of at most "
          f"{10 + model.root.max_size} bytes")
    print(f"{'target':<10} {'unit':<7} {'flash B':>8} {'stack B':>8} {'struct B':>9} "
          f"{'link B':>7} {'RAM B':>6}")
    with tempfile.TemporaryDirectory(prefix="c-sender-size-") as tmp:
        folder = Path(tmp)
        (folder / "channel.h").write_text(text)
        for target, cc, flags in TARGETS:
            if shutil.which(cc) is None:
                print(f"{target:<10} ({cc} is not installed)")
                continue
            prefix = cc[: -len("gcc")]
            size_tool, nm = f"{prefix}size", f"{prefix}nm"
            links = {}
            for extra in ([], ["-DSPEEDDATA_NO_PROBE"]):
                probe = sizes(nm, compile_unit(cc, flags + extra, folder, f"{target}-probe",
                                               PROBE.format(n=n), False))
                record, links[bool(extra)] = probe["probe_record"], probe["probe_link"]
            seen: dict[str, tuple[int, int]] = {}
            for unit, (body, extra) in UNITS.items():
                if unit == "posix" and "none" in cc:
                    continue
                obj = compile_unit(cc, flags + extra, folder, f"{target}-{unit}",
                                   body.format(n=n), unit == "posix")
                frame, link = stack(obj), links[bool(extra)]
                ram = record + (link + frame if unit != "encode" else frame)
                seen[unit] = (flash(size_tool, obj), ram)
                ratio = ""
                if unit == "probe":
                    ratio = (f"  probes: flash x{seen['probe'][0] / seen['send'][0]:.2f}, "
                             f"RAM x{seen['probe'][1] / seen['send'][1]:.2f} of send")
                print(f"{target:<10} {unit:<7} {seen[unit][0]:>8} {frame:>8} "
                      f"{record:>9} {link if unit != 'encode' else '-':>7} {ram:>6}{ratio}")


if __name__ == "__main__":
    main()
