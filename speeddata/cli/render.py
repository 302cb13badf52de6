"""What ``speeddata status``, ``captures``, ``tags`` and ``query`` print: pure functions
from the snapshots, the captures view, the tag rows (as ``--json`` gives them) and a
query's result cells to lines of text, the time passed in."""

from __future__ import annotations

from typing import Any

MIB = 2**20


def format_rate(value: float) -> str:
    return f"{value / 1000:.1f} k/s" if value >= 1000 else f"{value:.1f} /s"


def format_loss(row: dict) -> str:
    """One hop's figures for one source and channel, as ``speeddata status`` prints them."""
    recent = (f"; last 10 s: {row['recent_lost']} of {row['recent_sent']}"
              if row["recent_sent"] else "")
    failed = f", {row['failed']} sends failed at the sender" if row.get("failed") else ""
    doubts = [text for key, text in (
        ("report_only", "reports only, no data arrived from it"),
        ("unverified", f"{row.get('unverified')} more claimed sent than plausible, not counted"),
    ) if row.get(key)]
    if row.get("trust") == "outside allow":
        doubts.append("reported from outside [relay] allow: cannot be trusted")
    return (f"{row['source']} {row['channel']}: sent {row['sent']}, lost {row['lost']} "
            f"({row['lost_percent']:.1f} %){recent}{failed}"
            + (f" [{'; '.join(doubts)}]" if doubts else ""))


def format_stalls(stalls: dict) -> str:
    """The relay loop's stall histogram on one line: iterations per bucket, up to the
    longest stall, so a slow job on the loop shows as a count in a far bucket."""
    bounds, counts = stalls["bounds_ms"], stalls["counts"]
    labels = [f"<={b:g}" for b in bounds] + [f">{bounds[-1]:g}"]
    last = max((i for i, c in enumerate(counts) if c), default=0)
    buckets = " ".join(f"{label}:{count}" for label, count in
                       zip(labels[: last + 1], counts[: last + 1], strict=True))
    return f"loop stalls (ms): {buckets}; longest {stalls['longest_ms']:.1f} ms"


def status_lines(snapshots: dict[str, dict[str, Any]], now_ns: int) -> list[str]:
    """Each service's snapshot (``status.read_all``) as ``speeddata status`` shows it."""
    lines: list[str] = []
    for name, snap in snapshots.items():
        state = "running" if snap["running"] else (
            f"NOT running (last seen {snap['age_seconds']} s ago)")
        uptime = now_ns / 1e9 - snap.get("started", now_ns / 1e9)
        lines.append(f"{name}: {state}, pid {snap.get('pid')}, up {uptime:.0f} s"
                     + (f", listening {snap['listen']}" if "listen" in snap else "")
                     + (f", url {snap['url']}" if "url" in snap else ""))
        if snap.get("service") == "relay":
            lines += _relay(snap, now_ns)
        if snap.get("service") == "archive":
            lines.append(
                f"  to {snap['endpoint']} bucket {snap['bucket']} as {snap['host']}: store "
                f"{snap['store']}, {snap['archived_files']} files "
                f"({snap['archived_bytes'] / MIB:.1f} MiB) archived, backlog "
                f"{snap['backlog_files']} files ({snap['backlog_bytes'] / MIB:.1f} MiB), "
                f"{snap['errors']} errors"
                + (f", last: {snap['last_error']}" if snap['last_error'] else ""))
        lines += _damage_and_loss(snap)
    return lines


def _relay(snap: dict[str, Any], now_ns: int) -> list[str]:
    lines = [f"  {snap['datagrams']} datagrams in {snap['batches']} batches, kernel drops "
             f"{snap['kernel_drops']}, multicast send errors {snap['multicast_send_errors']},"
             f" not cached {snap['cache_dropped']}"]
    if "io" in snap:
        cache = snap.get("cache", {})
        lines.append(f"  io {snap['io']}, receive buffer {snap.get('rcvbuf', 0) / MIB:.1f} MiB,"
                     f" retention deleted {cache.get('deleted_files', 0)} files"
                     f" ({cache.get('deleted_bytes', 0) / MIB:.1f} MiB)")
    if "loop_stalls" in snap:
        lines.append("  " + format_stalls(snap["loop_stalls"]))
    if control := snap.get("control"):
        refused = {k: v for k, v in control.get("refused", {}).items() if v}
        lines.append(f"  control group {control['group']}"
                     f"{'' if control.get('joined') else ' (not joined)'}: "
                     f"{control.get('received', 0)} received, refused "
                     f"{refused or 'none'}, {control.get('sent', 0)} sent")
    lines += [f"  schema error (channel skipped): {error}"
              for error in snap.get("schema_errors", [])]
    rejected = {k: v for k, v in snap["rejected"].items() if v}
    lines.append(f"  rejected: {rejected or 'none'}")
    for fp, seen in snap.get("unknown_fingerprints", {}).items():
        ago = (now_ns - seen["last_seen_ns"]) / 1e9
        lines.append(f"  unknown schema {fp}: {seen['count']} datagrams from "
                     f"{seen.get('source', 'an unrecorded sender')}, last {ago:.0f} s ago "
                     "(add its .avsc to the channels dir)")
    lines.append(f"  {'channel':<16}{'datagrams':>12}{'rate':>12}{'bytes':>14}{'decimated':>11}")
    for channel, c in sorted(snap["channels"].items()):
        lines.append(f"  {channel:<16}{c['datagrams']:>12}{format_rate(c['rate_hz']):>12}"
                     f"{c['bytes']:>14}{c['decimated']:>11}")
    lines += ["  sender " + format_loss(row) for row in snap.get("senders", [])]
    refused = {k: v for k, v in snap.get("sender_reports", {}).get("refused", {}).items() if v}
    if refused:
        lines.append(f"  sender reports refused: {refused}")
    return lines


def _damage_and_loss(snap: dict[str, Any]) -> list[str]:
    """What any service says of the cache damage it met and the multicast loss it saw."""
    lines = []
    damage = snap.get("cache_damage") or {}
    cache = snap.get("cache") or {}
    if damage.get("blocks"):
        lines.append(f"  cache damage skipped by scroll-back: {damage['blocks']} blocks "
                     f"({damage['records']} records) in {damage['files']} files; last: "
                     f"{damage['last']} ('speeddata verify' lists all)")
    if cache.get("damaged_files") or cache.get("moved_aside"):
        lines.append(f"  cache damage found at start: {cache.get('damaged_files', 0)} files "
                     f"with damaged blocks (skipped by readers), {cache.get('moved_aside', 0)} "
                     "unreadable files moved into <channel>/damaged/")
    refused = {f"{kind} {reason}": n for kind, counts in snap.get("refused", {}).items()
               for reason, n in counts.items()}
    if refused or snap.get("feed_errors"):
        lines.append(f"  refused: {refused}, batches that failed: {snap.get('feed_errors', 0)}")
    for group, rows in (snap.get("multicast_loss") or {}).items():
        lines += [f"  {group} group from {row['name'] or 'relay'} at " + format_loss(row)
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
