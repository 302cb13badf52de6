"""What is captured: the cache per channel (size, reach, growth), the hours before
retention starts deleting, and the tags with their sizes. ``speeddata captures`` and
``GET /api/captures`` (the exports page) both show this."""

from __future__ import annotations

import time
from pathlib import Path

from speeddata import status
from speeddata.cache import catalogue
from speeddata.config import Config
from speeddata.tags import TagStore


def tag_size(cache_dir: Path, start_ns: int, end_ns: int, channels: tuple[str, ...]) -> int:
    """Bytes of cached blocks in a tag's range, from the index alone."""
    found = catalogue.Catalogue(cache_dir)
    names = list(channels) or found.channels()
    return sum(e.length for name in names
               for _, entries in found.blocks(name, start_ns, end_ns) for e in entries)


def captures(cfg: Config) -> dict[str, object]:
    """The cache overview and the tags with their sizes."""
    now = time.time_ns()
    files = catalogue.Catalogue(cfg.cache.dir).files()
    view = catalogue.overview(files, catalogue.known_quota(cfg.cache.dir, cfg.cache.max_bytes),
                              now)
    relay = status.read_all(cfg.cache.dir).get("relay", {})
    if relay.get("running"):  # a running relay's rates say how fast it grows now
        for name, c in relay.get("channels", {}).items():
            if name in view["channels"] and c.get("datagrams"):
                view["channels"][name]["growth_bytes_per_s"] = (  # type: ignore[index]
                    c["rate_hz"] * c["bytes"] / c["datagrams"])
        view.update(catalogue.project(view))
    view["tags"] = [{**t.as_dict(), "bytes": tag_size(
        cfg.cache.dir, t.start_ns, t.end_ns if t.end_ns is not None else now, t.channels)}
        for t in TagStore(cfg.cache.dir).list()]
    return view
