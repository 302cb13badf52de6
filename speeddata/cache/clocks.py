"""Each sender's clock offset series, kept beside the cache, and the pivot's time axis.

The relay takes a sender's offset from its v2 reports (``loss.SenderReport``) and keeps
the points in ``<cache>/.clocks/YYYY-MM-DD.csv`` (the UTC day of the receive time; a
hidden folder, so no cache scan takes it for a channel), a line per point::

    receive_ns,source,channel,offset_ns,uncertainty_ns

``receive_ns`` is the relay's clock when the report came, ``source`` the address the
report (and the channel's data) came from, ``offset_ns`` the sender's clock minus the
relay's. Reports come once a second; ``Thinner`` keeps a point when the offset moved by
more than its uncertainty, the uncertainty halved, or a minute passed: about 1,440
lines (100 kB) a day per sender and channel. Lines are appended with one ``write`` on
an ``O_APPEND`` descriptor, so relay workers share a file. A line that does not parse
(a torn end after a crash, an edit) is skipped and counted when read. Retention deletes
a day's file once no cached data needs it (``stale_days``); the archive uploads the files
(``archive.upload``) and a pivot from the archive fetches them.

``ClockAxis`` is what ``pivot --clock`` does to a channel's time axis: ``source`` (the
samples' own times, as before), ``receive`` (the relay's receive time of each record's
batch) or ``corrected`` (the source time minus the offset interpolated at the record's
receive time). A channel can have several senders at once (two boards, a restarted one on
another port): each ``source`` is a series of its own, interpolated on its own. The cache
does not keep which sender a record came from, so each record is corrected by the series
whose offset puts it nearest its receive time (a record arrives a few ms after it was
sent, whatever its sender's clock); where two series' offsets differ by less than
``AMBIGUOUS_NS`` the record could be either's, and is counted as such: its error is at
most that difference.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speeddata.logs import Throttle
from speeddata.loss import MAX_OFFSET_NS, MAX_UNCERTAINTY_NS

log = logging.getLogger("speeddata.relay")
LOG_SECONDS = 10.0

DIR = ".clocks"
EVERY_NS = 60 * 10**9  # a point at least this often while a sender reports
DAY_NS = 86_400 * 10**9
MODES = ("source", "receive", "corrected")
MAX_LINE = 200
MAX_SERIES = 10_000  # (source, channel) series the thinner remembers
AMBIGUOUS_NS = 100 * 10**6  # two senders' offsets closer than this: a record could be either's
Point = tuple[int, str, str, int, int]  # receive_ns, source, channel, offset, uncertainty


def day_path(cache_dir: Path, receive_ns: int) -> Path:
    day = dt.datetime.fromtimestamp(receive_ns // 10**9, dt.UTC).strftime("%Y-%m-%d")
    return cache_dir / DIR / f"{day}.csv"


def day_of(name: str) -> int | None:
    """The start (ns) of the UTC day a series file is named for, or None: not one."""
    try:
        day = dt.datetime.strptime(name, "%Y-%m-%d.csv").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    start = int(day.timestamp()) * 10**9
    return start if day_path(Path(), start).name == name else None  # no 2026-1-5.csv


def day_files(cache_dir: Path) -> tuple[list[tuple[int, Path]], int]:
    """The series' day files (day start ns, path), oldest first, and how many other
    entries ``.clocks/`` holds (a stray name, a folder, a link: counted, never read)."""
    try:
        entries = list(os.scandir(cache_dir / DIR))
    except OSError as exc:  # none yet, or unreadable: nothing to delete or upload
        if not isinstance(exc, FileNotFoundError | NotADirectoryError):
            log.warning("cannot list %s (%s): its clock offsets are left as they are",
                        cache_dir / DIR, exc)
        return [], 0
    found, other = [], 0
    for entry in entries:
        day = day_of(entry.name)
        try:
            plain = entry.is_file(follow_symlinks=False)
        except OSError:
            plain = False
        if day is None or not plain:
            other += 1
        else:
            found.append((day, Path(entry.path)))
    return sorted(found), other


def stale_days(days: list[int], oldest_data_ns: int) -> list[int]:
    """The days (start ns) whose offsets no cached data needs: all before the day before
    the oldest data's (``read_series`` reads a day either side of a range)."""
    first_needed = (oldest_data_ns // DAY_NS - 1) * DAY_NS
    return [day for day in days if day < first_needed]


def prune(cache_dir: Path, oldest_data_ns: int,
          archived: Callable[[Path], bool] | None = None) -> tuple[int, int]:
    """Retention's part: delete the day files ``stale_days`` names (with ``archived``
    (``[archive] required``), only those it says are archived). (deleted, other entries
    of ``.clocks/`` left alone)."""
    found, other = day_files(cache_dir)
    by_day = dict(found)
    deleted = 0
    for day in stale_days(list(by_day), oldest_data_ns):
        path = by_day[day]
        if archived is not None and not archived(path):
            continue
        try:
            path.unlink()
        except OSError as exc:  # gone meanwhile (another worker), or not ours to delete
            log.debug("retention: cannot delete %s (%s)", path, exc)
            continue
        deleted += 1
        log.info("retention: deleted %s (no cached data is that old)", path)
    return deleted, other


class Thinner:
    """Which points of a (source, channel) series are worth a line (no I/O)."""

    def __init__(self, every_ns: int = EVERY_NS) -> None:
        self.every_ns = every_ns
        self.last: OrderedDict[tuple[str, str], Point] = OrderedDict()  # LRU, MAX_SERIES

    def keep(self, point: Point) -> bool:
        key = (point[1], point[2])
        last = self.last.get(key)
        if last is not None and not (
                abs(point[3] - last[3]) > max(point[4], last[4])
                or point[4] < last[4] // 2 or point[0] - last[0] >= self.every_ns):
            return False
        self.last[key] = point
        self.last.move_to_end(key)
        if len(self.last) > MAX_SERIES:  # restarted senders' old ports: forgotten first
            self.last.popitem(last=False)
        return True


class OffsetLog:
    """The relay's writer of the series (on its worker thread)."""

    def __init__(self, cache_dir: Path, every_ns: int = EVERY_NS) -> None:
        self.cache_dir = cache_dir
        self.thinner = Thinner(every_ns)
        self.written = 0
        self.thinned = 0
        self.failed = 0
        self._log = Throttle(LOG_SECONDS)

    def write(self, points: list[Point]) -> int:
        """Append the points worth keeping; how many were written."""
        by_day: dict[Path, list[str]] = {}
        for point in points:
            if not self.thinner.keep(point):
                self.thinned += 1
                continue
            by_day.setdefault(day_path(self.cache_dir, point[0]), []).append(
                ",".join(map(str, point)) + "\n")
        for path, lines in by_day.items():
            path.parent.mkdir(exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, "".join(lines).encode())
            finally:
                os.close(fd)
            self.written += len(lines)
        return sum(map(len, by_day.values()))

    def drain(self, queue: deque[Point]) -> None:
        """Write what ``queue`` holds (filled by the relay's loop); a failed write is
        counted and logged at a bounded rate, and relaying goes on."""
        points = []
        while queue:
            points.append(queue.popleft())
        try:
            self.write(points)
        except OSError as exc:
            self.failed += 1
            if self._log.ready(time.monotonic()):
                log.error("cannot write the clock offset series in %s (%s); %d writes "
                          "failed so far; relaying goes on", self.cache_dir / DIR, exc,
                          self.failed)

    def statistics(self) -> dict[str, int]:
        return {"written": self.written, "thinned": self.thinned, "failed": self.failed}


def _parse(line: str) -> Point | None:
    parts = line.rstrip("\n").split(",")
    if len(line) > MAX_LINE or len(parts) != 5:
        return None
    try:
        receive, offset, uncertainty = int(parts[0]), int(parts[3]), int(parts[4])
    except ValueError:
        return None
    if not (0 <= receive < 2**63 and abs(offset) <= MAX_OFFSET_NS
            and 0 <= uncertainty <= MAX_UNCERTAINTY_NS and parts[2].isidentifier()):
        return None
    return receive, parts[1], parts[2], offset, uncertainty


@dataclass
class Series:
    """One channel's points, by receive time: the ones in a range and one each side."""

    receive_ns: np.ndarray
    offset_ns: np.ndarray
    uncertainty_ns: np.ndarray
    source: list[str]
    bad_lines: int = 0


def read_series(cache_dir: Path, channel: str, start_ns: int, end_ns: int) -> Series:
    """``channel``'s points over ``[start_ns, end_ns]``, with each source's last one before
    and first one after (what interpolation at the range's ends needs), by receive time."""
    by_source: dict[str, list[Point]] = {}
    bad = 0
    for day in range(start_ns // DAY_NS - 1, end_ns // DAY_NS + 2):
        path = day_path(cache_dir, day * DAY_NS)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            continue
        for line in lines:
            point = _parse(line)
            if point is None:
                bad += 1
            elif point[2] == channel:
                by_source.setdefault(point[1], []).append(point)
    chosen: list[Point] = []
    for points in by_source.values():
        points.sort()
        times = [p[0] for p in points]
        first = max(int(np.searchsorted(times, start_ns, "right")) - 1, 0)
        last = int(np.searchsorted(times, end_ns, "left")) + 1
        chosen += points[first:last]
    chosen.sort()
    return Series(np.array([p[0] for p in chosen], dtype=np.int64),
                  np.array([p[3] for p in chosen], dtype=np.int64),
                  np.array([p[4] for p in chosen], dtype=np.int64),
                  [p[1] for p in chosen], bad)


@dataclass
class ClockAxis:
    """What ``pivot --clock MODE`` writes as a channel's time axis."""

    mode: str
    series: Series | None = None
    notes: list[str] = field(default_factory=list)
    by_source: dict[str, int] = field(default_factory=dict)  # records corrected by each
    ambiguous: int = 0  # records two senders' offsets could each have been

    @classmethod
    def load(cls, cache_dir: Path, channel: str, start_ns: int, end_ns: int, mode: str
             ) -> ClockAxis:
        series = read_series(cache_dir, channel, start_ns, end_ns)
        axis = cls(mode, series)
        if mode == "corrected" and not len(series.receive_ns):
            axis.notes.append("no clock offset was measured for this channel in the range: "
                              "its times are the source's")
        return axis

    def sources(self) -> list[str]:
        """The series' senders (their address and port), in order of first point."""
        return list(dict.fromkeys(self.series.source)) if self.series is not None else []

    def apply(self, times: np.ndarray, receive_ns: np.ndarray) -> np.ndarray:
        """The time axis of records with source ``times`` received at ``receive_ns``."""
        if self.mode == "receive":
            return receive_ns
        series = self.series
        if self.mode == "source" or series is None or not len(series.receive_ns):
            return times
        names = self.sources()
        at = receive_ns.astype(np.float64)
        tags = np.array(series.source, dtype=object)
        candidates = np.stack([np.interp(at, series.receive_ns[tags == name].astype(np.float64),
                                         series.offset_ns[tags == name].astype(np.float64))
                               for name in names])  # (senders, records)
        if len(names) == 1:
            best = np.zeros(len(times), dtype=np.intp)
        else:  # the sender whose offset puts the record nearest its receive time
            lag = (times - receive_ns).astype(np.float64)
            nearest = np.argsort(np.abs(lag - candidates), axis=0)
            best, second = nearest[0], nearest[1]
            column = np.arange(len(times))
            self.ambiguous += int(np.count_nonzero(
                np.abs(candidates[best, column] - candidates[second, column]) < AMBIGUOUS_NS))
        for k, count in enumerate(np.bincount(best, minlength=len(names)).tolist()):
            self.by_source[names[k]] = self.by_source.get(names[k], 0) + count
        offsets = candidates[best, np.arange(len(times))]
        return times - np.rint(offsets).astype(np.int64)

    def uncertainty_ns(self) -> int | None:
        """The largest uncertainty of the points the correction used."""
        if self.series is None or not len(self.series.uncertainty_ns):
            return None
        return int(self.series.uncertainty_ns.max())

    def annotate(self, writer: Any) -> None:
        """Say in an HDF5 channel group which clock its time axis is on, and write the
        offset series there (a ``clock`` subgroup); other formats have no groups."""
        group = getattr(writer, "group", None)
        if group is None:
            return
        group.attrs["clock"] = self.mode
        docs = {"source": "sample time from the source (ns since the Unix epoch)",
                "receive": "when the relay received the record's batch (ns since the Unix "
                           "epoch): the relay's clock",
                "corrected": "sample time from the source minus its clock's offset from the "
                             "relay's, as measured by its time probes (ns since the Unix "
                             "epoch): the relay's clock"}
        writer.time.attrs["doc"] = docs[self.mode]
        notes = list(self.notes)
        if len(self.by_source) > 1:
            counts = ", ".join(f"{n} records by {s}" for s, n in self.by_source.items())
            notes.append(f"{len(self.by_source)} senders' clocks in the range: the cache does "
                         "not keep a record's sender, so each record is corrected by the "
                         f"sender whose offset puts it nearest its receive time ({counts})")
            if self.ambiguous:
                notes.append(f"{self.ambiguous} records could be either of two senders' "
                             f"whose offsets differ by less than {AMBIGUOUS_NS // 10**6} ms: "
                             "corrected by the nearer, off by at most that difference")
            group.attrs["clock_senders"] = len(self.by_source)
            group.attrs["clock_ambiguous_records"] = self.ambiguous
        if notes:
            group.attrs["clock_note"] = "; ".join(notes)
        if (unc := self.uncertainty_ns()) is not None:
            group.attrs["clock_uncertainty_ns"] = unc
        series = self.series
        if series is None or not len(series.receive_ns):
            return
        sub = group.create_group("clock")
        sub.attrs["doc"] = ("the source's clock offset from the relay's (source minus relay), "
                            "as its reports said; corrected time = source time - offset")
        for name, values in (("receive_time", series.receive_ns), ("offset", series.offset_ns),
                             ("uncertainty", series.uncertainty_ns)):
            sub.create_dataset(name, data=values).attrs["units"] = "ns"
        sub.create_dataset("source", data=np.array(series.source, dtype=object),
                           dtype=_string_dtype())


def _string_dtype() -> Any:
    import h5py

    return h5py.string_dtype()
