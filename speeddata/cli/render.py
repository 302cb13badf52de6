"""What ``speeddata status``, ``captures``, ``tags`` and ``query`` print: pure functions
from the snapshots, the captures view, the tag rows (as ``--json`` gives them) and a
query's result cells to lines of text, the time passed in."""

from __future__ import annotations

from typing import Any

from speeddata.snapshots import (
    ArchiveSnapshot,
    BlockSnapshot,
    LossRow,
    RelaySnapshot,
    ServeSnapshot,
    Stalls,
)
from speeddata.status import Seen

MIB = 2**20


def format_rate(value: float) -> str:
    return f"{value / 1000:.1f} k/s" if value >= 1000 else f"{value:.1f} /s"


def format_clock(offset_ns: int, uncertainty_ns: int) -> str:
    """A sender's measured clock as the page shows it too: "clock +3.2 s (± 0.1 ms)"; the
    uncertainty rounded up (a bound stays a bound), the offset in its largest unit."""
    size = abs(offset_ns)
    offset = (f"{offset_ns / 1e9:+.1f} s" if size >= 10**9 else
              f"{offset_ns / 1e6:+.1f} ms" if size >= 10**5 else f"{offset_ns / 1e3:+.0f} µs")
    bound = (f"{-(-uncertainty_ns // 10**8) / 10:.1f} s" if uncertainty_ns >= 10**9
             else f"{-(-uncertainty_ns // 10**5) / 10:.1f} ms")
    return f"clock {offset} (± {bound})"


def format_loss(row: LossRow) -> str:
    """One hop's figures for one source and channel, as ``speeddata status`` prints them."""
    recent = (f"; last 10 s: {row.recent_lost} of {row.recent_sent}"
              if row.recent_sent else "")
    failed = f", {row.failed} sends failed at the sender" if row.failed else ""
    doubts = [text for flag, text in (
        (row.report_only, "reports only, no data arrived from it"),
        (row.unverified, f"{row.unverified} more claimed sent than plausible, not counted"),
    ) if flag]
    if row.trust == "outside allow":
        doubts.append("reported from outside [relay] allow: cannot be trusted")
    clock = ("" if row.clock_offset_ns is None else
             ", " + format_clock(row.clock_offset_ns, row.clock_uncertainty_ns or 0))
    return (f"{row.source} {row.channel}: sent {row.sent}, lost {row.lost} "
            f"({row.lost_percent:.1f} %){recent}{failed}{clock}"
            + (f" [{'; '.join(doubts)}]" if doubts else ""))


def format_stalls(stalls: Stalls) -> str:
    """The relay loop's stall histogram on one line: iterations per bucket, up to the
    longest stall, so a slow job on the loop shows as a count in a far bucket."""
    bounds, counts = stalls.bounds_ms, stalls.counts
    labels = [f"<={b:g}" for b in bounds] + [f">{bounds[-1]:g}"]
    last = max((i for i, c in enumerate(counts) if c), default=0)
    buckets = " ".join(f"{label}:{count}" for label, count in
                       zip(labels[: last + 1], counts[: last + 1], strict=True))
    return f"loop stalls (ms): {buckets}; longest {stalls.longest_ms:.1f} ms"


def status_lines(services: dict[str, Seen], now_ns: int) -> list[str]:
    """Each service's snapshot (``status.read``) as ``speeddata status`` shows it."""
    lines: list[str] = []
    for name, seen in services.items():
        snap = seen.snapshot
        state = "running" if seen.running else (
            f"NOT running (last seen {seen.age_seconds} s ago)")
        listen = getattr(snap, "listen", "")
        url = getattr(snap, "url", "")
        lines.append(f"{name}: {state}, pid {snap.pid}, up {now_ns / 1e9 - snap.started:.0f} s"
                     + (f", listening {listen}" if listen else "")
                     + (f", url {url}" if url else ""))
        if isinstance(snap, RelaySnapshot):
            lines += _relay(snap, now_ns)
        elif isinstance(snap, ArchiveSnapshot):
            lines.append(
                f"  to {snap.endpoint} bucket {snap.bucket} as {snap.host}: store "
                f"{snap.store}, {snap.archived_files} files "
                f"({snap.archived_bytes / MIB:.1f} MiB) archived, backlog "
                f"{snap.backlog_files} files ({snap.backlog_bytes / MIB:.1f} MiB), "
                f"{snap.errors} errors"
                + (f", last: {snap.last_error}" if snap.last_error else ""))
        elif isinstance(snap, ServeSnapshot):
            lines += _serve(snap)
        elif isinstance(snap, BlockSnapshot):
            lines += _block(snap)
    return lines


def _block(snap: BlockSnapshot) -> list[str]:
    """A processing block's lines: what it reads and writes, its counts, its trouble."""
    waiting = (f"; waiting for channel(s) {', '.join(snap.missing_inputs)}"
               if snap.missing_inputs else "")
    latency = snap.latency_ms
    errors = ", ".join(f"{k} {v}" for k, v in sorted(snap.errors.items()))
    refused = ", ".join(f"{k} {v}" for k, v in sorted(snap.refused.items()))
    return [f"  {snap.block} ({', '.join(snap.inputs)} -> {snap.output}): "
            f"{snap.records_in} records in, {snap.records_out} out, "
            f"{snap.batches} batches, latency mean {latency.get('mean', 0):.1f} ms max "
            f"{latency.get('max', 0):.1f} ms, CPU {snap.cpu_seconds:.1f} s{waiting}",
            f"  errors: {errors or 'none'}; refused: {refused or 'none'}; NaN records "
            f"{snap.nan_records} ({snap.dropped_nan} dropped); kernel "
            f"drops {snap.kernel_drops}; sends failed {snap.sender.get('failed', 0)}"]


def _relay(snap: RelaySnapshot, now_ns: int) -> list[str]:
    cache = snap.cache
    lines = [f"  {snap.datagrams} datagrams in {snap.batches} batches, kernel drops "
             f"{snap.kernel_drops}, multicast send errors {snap.multicast_send_errors},"
             f" not cached {snap.cache_dropped}"]
    if snap.io:
        lines.append(f"  io {snap.io}, receive buffer {snap.rcvbuf / MIB:.1f} MiB,"
                     f" retention deleted {cache.deleted_files} files"
                     f" ({cache.deleted_bytes / MIB:.1f} MiB)")
    if snap.loop_stalls.counts:
        lines.append("  " + format_stalls(snap.loop_stalls))
    if control := snap.control:
        refused = {k: v for k, v in control.refused.items() if v}
        lines.append(f"  control group {control.group}"
                     f"{'' if control.joined else ' (not joined)'}: "
                     f"{control.received} received, refused "
                     f"{refused or 'none'}, {control.sent} sent")
    lines += [f"  schema error (channel skipped): {error}" for error in snap.schema_errors]
    rejected = {k: v for k, v in snap.rejected.items() if v}
    lines.append(f"  rejected: {rejected or 'none'}")
    for fp, unknown in snap.unknown_fingerprints.items():
        ago = (now_ns - unknown.last_seen_ns) / 1e9
        lines.append(f"  unknown schema {fp}: {unknown.count} datagrams from "
                     f"{unknown.source or 'an unrecorded sender'}, last {ago:.0f} s ago "
                     "(add its .avsc to the channels dir)")
    lines.append(f"  {'channel':<16}{'datagrams':>12}{'rate':>12}{'bytes':>14}{'decimated':>11}")
    for channel, c in sorted(snap.channels.items()):
        lines.append(f"  {channel:<16}{c.datagrams:>12}{format_rate(c.rate_hz):>12}"
                     f"{c.bytes:>14}{c.decimated:>11}")
    lines += ["  sender " + format_loss(row) for row in snap.senders]
    refused = {k: v for k, v in snap.sender_reports.refused.items() if v}
    if refused:
        lines.append(f"  sender reports refused: {refused}")
    if cache.damaged_files or cache.moved_aside:
        lines.append(f"  cache damage found at start: {cache.damaged_files} files "
                     f"with damaged blocks (skipped by readers), {cache.moved_aside} "
                     "unreadable files moved into <channel>/damaged/")
    probes = snap.time_probes
    if probes.answered or any(probes.refused.values()):
        refused = {k: v for k, v in probes.refused.items() if v}
        lines.append(f"  time probes: {probes.answered} answered, refused "
                     f"{refused or 'none'}")
    return lines


def _serve(snap: ServeSnapshot) -> list[str]:
    """What the stripchart server says of the cache damage it met and the loss it saw."""
    lines = []
    damage = snap.cache_damage
    if damage.blocks:
        lines.append(f"  cache damage skipped by scroll-back: {damage.blocks} blocks "
                     f"({damage.records} records) in {damage.files} files; last: "
                     f"{damage.last} ('speeddata verify' lists all)")
    refused = {f"{kind} {reason}": n for kind, counts in snap.refused.items()
               for reason, n in counts.items()}
    if refused or snap.feed_errors:
        lines.append(f"  refused: {refused}, batches that failed: {snap.feed_errors}")
    for group, rows in snap.multicast_loss.items():
        lines += [f"  {group} group from {row.name or 'relay'} at " + format_loss(row)
                  for row in rows]
    return lines


def captures_lines(view: dict[str, Any]) -> list[str]:
    """The captures view (``captures.captures``) as ``speeddata captures`` shows it."""
    from speeddata.captures import outlook, tag_state
    from speeddata.times import format_time

    lines = [f"{'channel':<16}{'MiB':>10}{'files':>7}  {'from':<21}{'to':<21}{'grows':>12}"]
    for name, c in view["channels"].items():
        lines.append(f"{name:<16}{c['bytes'] / MIB:>10.1f}{c['files']:>7}  "
                     f"{format_time(c['first_ns'])[:19]:<21}"
                     f"{format_time(c['last_ns'])[:19]:<21}"
                     f"{c['growth_bytes_per_s'] / 1000:>8.1f} kB/s")
    quota = view["quota"]
    of = f"{quota / 2**30:.2f} GiB" if quota else "an unknown quota (no relay ran yet)"
    lines.append(f"cache {int(view['bytes']) / MIB:.1f} MiB of {of}"
                 f", growing {view['growth_bytes_per_s'] / 1000:.1f} kB/s; {outlook(view)}")
    lines += [f"tag {t['name']}: {t['start']} to {t['end']}, {t['bytes'] / MIB:.1f} MiB, "
              f"{tag_state(t)}" for t in view["tags"]]
    return lines


def tags_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The tags (each ``Tag.as_dict()`` with its ``bytes``) as ``speeddata tags`` shows them."""
    if not rows:
        return ["no tags yet: 'speeddata tag start NAME' marks from now on"]
    lines = [f"{'name':<20}{'start':<26}{'end':<26}{'MiB':>8}  {'channels':<14}"
             f"{'exported':<26}{'made on':<16}note"]
    lines += [f"{r['name']:<20}{r['start']:<26}{r['end']:<26}{r['bytes'] / MIB:>8.1f}  "
              f"{','.join(r['channels']) or 'all':<14}{r['exported'] or 'no':<26}"
              f"{r['origin'] or 'this host':<16}{r['note']}" for r in rows]
    return lines


def result_lines(header: list[str], columns: list[list[str | None]]) -> list[str]:
    """A query's result as aligned text: a header, a rule, a row per record (a null is
    empty; numbers right-aligned when ``columns`` come as their text)."""
    cells = [["" if v is None else v for v in column] for column in columns]
    widths = [max([len(h), *(len(v) for v in column)]) for h, column in zip(
        header, cells, strict=True)]
    numeric = [all(_looks_numeric(v) for v in column if v) for column in cells]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in zip(*cells, strict=True):
        lines.append("  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(
            row, widths, numeric, strict=True)).rstrip())
    return lines


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
