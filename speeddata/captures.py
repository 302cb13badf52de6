"""What is captured: the cache per channel (size, reach, growth), the hours before
retention starts deleting, and the tags with their sizes. ``speeddata captures`` and
``GET /api/captures`` (the exports page) both show this."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from speeddata import status
from speeddata.cache import catalogue
from speeddata.config import Config
from speeddata.snapshots import RelaySnapshot
from speeddata.tags import TagStore


def tag_size(cache_dir: Path, start_ns: int, end_ns: int, channels: tuple[str, ...]) -> int:
    """Bytes of cached blocks in a tag's range, from the index alone."""
    found = catalogue.Catalogue(cache_dir)
    names = list(channels) or found.channels()
    return sum(e.length for name in names
               for _, entries in found.blocks(name, start_ns, end_ns) for e in entries)


def tag_rows(cache_dir: Path, now_ns: int) -> list[dict]:
    """Every tag (``Tag.as_dict()``) with the ``bytes`` cached in its range (an open tag's
    up to now)."""
    return [{**t.as_dict(), "bytes": tag_size(
        cache_dir, t.start_ns, t.end_ns if t.end_ns is not None else now_ns, t.channels)}
        for t in TagStore(cache_dir).list()]


def captures(cfg: Config) -> dict[str, object]:
    """The cache overview and the tags with their sizes."""
    now = time.time_ns()
    files = catalogue.Catalogue(cfg.cache.dir).files()
    cache = cfg.cache.dir if cfg.cache.dir.exists() else cfg.cache.dir.parent
    view = catalogue.overview(files, catalogue.known_quota(cfg.cache.dir, cfg.cache.max_bytes),
                              now, shutil.disk_usage(cache).free)
    relays = [seen.snapshot for seen in status.read(cfg.cache.dir).values()
              if isinstance(seen.snapshot, RelaySnapshot) and seen.running]
    if relays:  # the running relays' rates (every worker's) say how fast it grows now
        growth: dict[str, float] = {}
        for relay in relays:
            for name, c in relay.channels.items():
                if c.datagrams:
                    growth[name] = growth.get(name, 0.0) + c.rate_hz * c.bytes / c.datagrams
        for name, channel in view["channels"].items():  # type: ignore[union-attr]
            channel["growth_bytes_per_s"] = growth.get(name, 0.0)
        view["relay_workers"] = len(relays)
        view.update(catalogue.project(view))
    view["tags"] = [{**row,  # an exported tag is no longer kept: when retention reaches it
                     "retention_reaches_hours": catalogue.hours_until_retention_reaches(
                         files, view, row["start_ns"]) if row["exported"] else None}
                    for row in tag_rows(cfg.cache.dir, now)]
    for row in view["tags"]:  # type: ignore[union-attr]
        row["retention_warning"] = retention_warning(row)
    view["outlook"] = outlook(view)  # the words, made here once for the CLI and the page
    return view


WARN_HOURS = 48.0  # an exported tag whose cached data goes sooner than this is flagged


def outlook(view: dict) -> str:
    """The cache's outlook in words: when retention starts deleting, or the disk fills."""
    hours = view["hours_left"]
    if hours is None:
        return "retention is not in sight"
    if view["limit"] == "retention":
        return f"retention starts deleting the oldest in about {hours:.1f} h"
    return (f"the disk is full in about {hours:.1f} h, before the quota is reached: free "
            "space or lower [cache] max_bytes")


def retention_warning(tag: dict) -> bool:
    """Whether retention reaches an exported tag's cached data within WARN_HOURS."""
    reach = tag.get("retention_reaches_hours")
    return bool(tag["exported"]) and reach is not None and reach < WARN_HOURS


def tag_state(tag: dict) -> str:
    """A tag's export state, with the warning when retention is about to reach it."""
    if not tag["exported"]:
        return "not exported (kept by retention)"
    warning = (f"; retention reaches its cached data in about "
               f"{tag['retention_reaches_hours']:.1f} h" if retention_warning(tag) else "")
    return f"exported {tag['exported']}{warning}"
