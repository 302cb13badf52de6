"""Every sample of one signal over a source-time range, read from the cache, bounded.

Spectra and XY need the samples themselves, not the envelopes the server keeps in
memory nor the summaries scroll-back draws from, so they come from the cache files.
Blocks are chosen by their receive time (the index), widened by ``margin_ns`` since a
source's clock may be that far from the relay's, then the samples are kept by their
own time. Damaged blocks are skipped and listed, never raised.

Cost is bounded twice: the blocks received inside the range are counted from the index
before anything is decoded, and the samples kept are counted after; past ``limit``
either way the request is refused (TooLargeError, 413) with the count and the limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speeddata.cache import index
from speeddata.cache.catalogue import Catalogue
from speeddata.cache.check import BlockReader, Skipped
from speeddata.columns import ColumnDecoder
from speeddata.errors import NotFoundError, SpeeddataError, TooLargeError
from speeddata.schemas import Registry

MAX_SAMPLES = 2**22  # 4 M samples: 32 MB of float64 and a second of decoding at most
CHUNK = 65_536  # records decoded at once: every field of them is decoded, one is kept


@dataclass
class Samples:
    """One signal's samples in time order (source time, ns) and what was left out."""

    signal: str
    unit: str
    times: np.ndarray
    values: np.ndarray
    skipped: list[dict] = field(default_factory=list)


def numeric_signal(registry: Registry, name: str) -> tuple[str, str, str]:
    """``channel.signal`` checked against the registry: (channel, signal, unit);
    NotFoundError naming what is missing."""
    channel_name, _, signal = name.partition(".")
    channel = registry.get(channel_name)
    if channel is None:
        raise NotFoundError(f"no channel {channel_name[:128]!r}: /api/channels lists them")
    for known in channel.signals:
        if known.name == signal and known.kind == "number":
            return channel_name, signal, known.unit
    raise NotFoundError(f"{name[:257]!r} is not a numeric signal of channel {channel_name!r}")


def _chunks(entries: list[index.Entry]) -> Iterator[list[index.Entry]]:
    """Consecutive runs of blocks of about CHUNK records."""
    part: list[index.Entry] = []
    held = 0
    for entry in entries:
        part.append(entry)
        held += entry.count
        if held >= CHUNK:
            yield part
            part, held = [], 0
    if part:
        yield part


def _floats(column: np.ndarray) -> np.ndarray:
    """A numeric column as float64; a nullable one's nulls (None) as NaN."""
    if column.dtype == object:
        return np.array([np.nan if v is None else v for v in column], dtype=np.float64)
    return np.asarray(column, dtype=np.float64)


def read(cache_dir: Path, registry: Registry, name: str, start_ns: int, end_ns: int,
         margin_ns: int, limit: int = MAX_SAMPLES, offset_ns: int = 0) -> Samples:
    """The samples of ``name`` (``channel.signal``) whose own time is in
    ``[start_ns, end_ns)``. ``offset_ns``: how far the source's clock is ahead of the
    relay's, when known (the blocks are found by receive time). SpeeddataError for an
    empty or reversed range."""
    if end_ns <= start_ns:
        raise SpeeddataError("the range must end after it starts")
    channel, signal, unit = numeric_signal(registry, name)
    catalogue = Catalogue(cache_dir)
    first, last = start_ns - offset_ns, end_ns - offset_ns  # as received
    per_file = catalogue.blocks(channel, first - margin_ns, last + margin_ns)
    inside = sum(e.count for _, entries in per_file for e in entries
                 if first <= e.recv_ns <= last)
    if inside > limit:
        raise TooLargeError(f"{name} has about {inside} samples in the range; at most "
                            f"{limit} are read: choose a shorter range")
    skipped = Skipped()
    times, values = [], []
    with BlockReader(skipped, registry) as reader:
        for cached, entries in per_file:
            written = reader.channel(cached.path)  # the schema the file was written with
            if written is None:
                reader.skip_file(cached.path, entries)
                continue
            if signal not in {s.name for s in written.signals if s.kind == "number"}:
                continue  # written before the signal was added to the schema
            decoder = ColumnDecoder(written)
            for part in _chunks(entries):
                good = [(e, d) for _, e, d in reader.bodies([(cached, e) for e in part])]
                decoded, _ = reader.decode(decoder, cached.path, good)
                t = np.asarray(decoded[written.time_field], dtype=np.int64)
                keep = (t >= start_ns) & (t < end_ns)
                times.append(t[keep])
                values.append(_floats(decoded[signal])[keep])
                if sum(len(p) for p in times) > limit:
                    raise TooLargeError(f"{name} has over {limit} samples in the range, "
                                        "the most that are read: choose a shorter range")
    t = np.concatenate(times) if times else np.zeros(0, dtype=np.int64)
    v = np.concatenate(values) if values else np.zeros(0)
    order = np.argsort(t, kind="stable")  # files of several relay workers interleave
    return Samples(name, unit, t[order], v[order], skipped.as_list(cache_dir))
