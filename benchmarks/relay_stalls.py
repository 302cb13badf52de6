"""The relay loop's stalls under slow jobs: 10,000 cache files (retention scans near
quota, so every round scans them), a 1 MiB schema written into the channels directory
and a flood of 300,000 tag messages sealed with the relay's own key (the worst case: each
one is valid and new) on the control group, while a sender offers 20 k/s and then 50 k/s.
Prints, per rate, what was sent, cached and dropped, what the control plane did with the
flood, and the loop's stall histogram from the status file.

    PYTHONPATH=. python benchmarks/relay_stalls.py [--seconds 14] [--tags 300000]

Run it with an older tree on PYTHONPATH to compare: where the status file has no stall
histogram, only the loss is shown.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

from speeddata.bench import services
from speeddata.bench.relay import cached_records, load_generator, record_schema, settle
from speeddata.cache.layout import file_name, index_path, summary_path
from speeddata.cache.store import CacheWriter
from speeddata.config import write_file
from speeddata.schemas import load_file
from tests.harness.reliability import snapshot

FILES = 10_000
SCHEMA_AT = 3.0  # seconds into the run


def fill_cache(cache: Path, schemas: Path, channel: str, files: int) -> int:
    """``files`` small valid cache files of ``channel`` from days ago (copies of one)."""
    from speeddata.sender import Encoder

    seed = cache / ".seed"
    writer = CacheWriter(seed, 2**30, 1e9)
    encoder = Encoder(load_file(schemas / f"{channel}.avsc"))
    fields = {s.name: 0.0 for s in encoder.channel.signals if s.name not in ("time", "counter")}
    body = encoder.encode({"time": 1, "counter": 1, **fields})[10:]
    writer.append_block(encoder.channel, body * 10, 10, time.time_ns())
    writer.close()
    (original,) = seed.glob("*/*.avro")
    folder = cache / "history"
    folder.mkdir(parents=True)
    start = time.time_ns() - 3 * 86400 * 10**9
    size = 0
    for i in range(files):
        path = folder / file_name(start + i * 10**9)
        shutil.copyfile(original, path)
        shutil.copyfile(index_path(original), index_path(path))
        if summary_path(original).exists():
            shutil.copyfile(summary_path(original), summary_path(path))
        size += sum(p.stat().st_size for p in (path, index_path(path)))
    shutil.rmtree(seed)
    return size


def big_schema(folder: Path, size: int = 2**20) -> Path:
    """A channel schema of just under ``size`` bytes (the registration limit is 1 MiB),
    written as a registration would: to a temporary name, then renamed into place."""
    field = {"name": "s0", "type": "double", "doc": "x" * 1000}
    count = (size - 200) // (len(json.dumps(field)) + 8)
    fields = [{"name": "time", "type": "long"},
              *({**field, "name": f"s{i}"} for i in range(count))]
    text = json.dumps({"type": "record", "name": "huge", "fields": fields},
                      separators=(",", ":"))
    tmp = folder / ".huge.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / "huge.avsc")
    return folder / "huge.avsc"


def tag_flood(cache: Path, group: str, count: int, seconds: float) -> None:
    """``count`` tag adds of distinct names, sealed with the relay's key, spread over
    ``seconds`` on the control group (a process of its own)."""
    from speeddata import control, multicast
    from speeddata.configvalues import parse_group
    from speeddata.tagrecord import TagRecord

    key = control.load_key("", cache)
    target = parse_group(group)
    sock = multicast.sender("127.0.0.1", 1)
    start = time.monotonic()
    for i in range(count):
        now = time.time_ns()
        record = TagRecord("add", f"flood-{i}", now, "bench", start_ns=now - 10**9,
                           end_ns=now, created_ns=now)
        with contextlib.suppress(OSError):  # a full buffer: that message is not sent
            sock.sendto(control.seal(key, record.as_message(), now, os.urandom(16)),
                        (target.host, target.port))
        if i % 500 == 499:
            ahead = start + (i + 1) * seconds / count - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def run(rate: float, seconds: float, rcvbuf: str, fill: float, tags: int
        ) -> dict[str, object]:
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        schemas = work / "schemas"
        channel, _ = record_schema(schemas, 90)
        cache = work / "cache"
        filled = fill_cache(cache, schemas, channel, FILES)
        settings = services.default_settings(work, schemas)
        settings["multicast"].update(full=f"239.255.104.41:{services.free_port()}",
                                     decimated=f"239.255.104.42:{services.free_port()}",
                                     control=f"239.255.104.43:{services.free_port()}")
        # by default the cache at 95 % of its quota: every retention round must scan it
        settings["cache"]["max_bytes"] = int(filled / fill)
        settings["relay"]["rcvbuf"] = rcvbuf
        config = write_file(work / "relay.toml", settings)
        relay = services.start("relay", config, work)
        port = settings["relay"]["port"]
        sent, elapsed = ctx.Value("q", 0), ctx.Value("d", 0.0)
        gen = ctx.Process(target=load_generator, args=(schemas, channel, rate, seconds, port,
                                                       sent, elapsed))
        flood = ctx.Process(target=tag_flood, args=(
            cache, settings["multicast"]["control"], tags, seconds - 2))
        gen.start()
        flood.start()
        time.sleep(SCHEMA_AT)
        big_schema(schemas)
        gen.join()
        flood.join()
        settle([port])
        snap = snapshot(cache, newer_than=time.time())  # of after the load, not before
        relay.stop()
        cached = cached_records(cache) - cached_records_of(cache, "history")
        return {"rate": rate, "sent": sent.value, "cached": cached,
                "kernel_drops": snap.get("kernel_drops"), "lost": sent.value - cached,
                "huge_channel_taken": "huge" in snap.get("channels", {}) or
                "huge" in json.dumps(snap.get("schema_errors", [])) or None,
                "loop_stalls": snap.get("loop_stalls"), "jobs": snap.get("jobs"),
                "control": snap.get("control"),
                "retention": snap.get("retention")}


def cached_records_of(cache: Path, channel: str) -> int:
    from speeddata.cache import index

    return sum(e.count for p in (cache / channel).glob("*.idx")
               for e in index.unpack(p.read_bytes()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=14.0,
                        help="load per rate (default 14: two retention rounds)")
    parser.add_argument("--rates", type=float, nargs="+", default=[20_000, 50_000])
    parser.add_argument("--rcvbuf", default="32MiB", help="[relay] rcvbuf (default 32MiB)")
    parser.add_argument("--fill", type=float, default=0.95,
                        help="the cache's share of its quota at start (default 0.95: near "
                             "it, so every retention round scans; 0.5: the rounds skip)")
    parser.add_argument("--tags", type=int, default=300_000,
                        help="tag messages in the flood (default 300000; 0: none)")
    args = parser.parse_args()
    for rate in args.rates:
        r = run(rate, args.seconds, args.rcvbuf, args.fill, args.tags)
        print(f"{rate / 1000:.0f} k/s for {args.seconds:g} s, {FILES} cache files, a 1 MiB "
              f"schema at {SCHEMA_AT:g} s, rcvbuf {args.rcvbuf}, cache at {args.fill:.0%} of "
              f"quota: sent {r['sent']}, cached {r['cached']}, kernel drops "
              f"{r['kernel_drops']}, lost {r['lost']} (not counted anywhere: "
              f"{r['lost'] - (r['kernel_drops'] or 0)})")
        ctl = r["control"] or {}
        print(f"  tag flood: {args.tags} sent; control plane received "
              f"{ctl.get('received', 0)}, added {ctl.get('added', 0)}, refused "
              f"{ctl.get('refused', {})}, kernel drops {ctl.get('kernel_drops', 0)}")
        stalls = r["loop_stalls"]
        if stalls:
            print("  loop stalls (ms): " + " ".join(
                f"<={b:g}:{c}" for b, c in zip(stalls["bounds_ms"], stalls["counts"],
                                               strict=False))
                  + f" >{stalls['bounds_ms'][-1]:g}:{stalls['counts'][-1]}; longest "
                  f"{stalls['longest_ms']:.1f} ms")
            print(f"  worker jobs, longest (ms): {r['jobs']['longest_ms']}; retention "
                  f"{r['retention']}")
        else:
            print("  (this relay has no stall histogram)")


if __name__ == "__main__":
    main()
