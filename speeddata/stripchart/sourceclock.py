"""Where a channel's samples go on the page's time axis, whatever its source's clock
says: the source's offset from the server's clock estimated from the samples, a source
off by more than the tolerance plotted on receive time (no sockets, the time passed in)."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from speeddata import wire

REPLAY_HOLD_NS = 2 * 10**9  # a replay's notice holds this long (sent every 0.25 s)


class SourceClock:
    """Where a channel's samples go on the time axis, whatever its source's clock says.

    The offset of the source's clock from the server's is the median, over the last
    batches, of each batch's median of (sample time - receive time): one bad stamp, or
    one bad batch, does not move it. A source within ``tolerance`` is plotted on its own
    time; one further off (a Pi without a real-time clock before NTP) is plotted on the
    server's receive time and flagged, so it stays on screen. A sample further than
    ``tolerance`` from the channel's offset (a clock jump, a corrupt stamp) never enters
    the history, where it would push every later sample out of the ring; it is counted.
    Nor does one more than ``tolerance`` ahead of now (``ahead``): the ring's newest
    bucket never goes back, so one such sample would hide the samples after it.

    A replay is told by its notices, and drawn at the time it sends its samples; only
    the batches from the address its notices came from are a replay: the live source
    of the same channel (another address) goes on being drawn on its own clock.
    """

    def __init__(self, tolerance_ns: int, batches: int = 31) -> None:
        self.tolerance_ns = tolerance_ns
        self._recent: deque[int] = deque(maxlen=batches)
        self.offset_ns = 0
        self.dropped = 0  # samples never drawn, for a time off its clock (ahead included)
        self.ahead = 0  # of them: more than ``tolerance`` ahead of now
        self.replay: wire.ReplayNotice | None = None  # the latest notice of a replay of it
        self.replay_source: str | None = None  # the address that notice came from
        self._replay_until_ns = 0
        self._replay_at_ns: int | None = None  # the latest replayed sample drawn

    @property
    def shifted(self) -> bool:
        return abs(self.offset_ns) > self.tolerance_ns

    def follow_replay(self, notice: wire.ReplayNotice, now_ns: int,
                      source: str | None = None) -> None:
        """A replay of this channel is on the group, sent from ``source``: for the next
        ``REPLAY_HOLD_NS`` the samples from there are drawn when their replay sends them,
        never taken for a bad clock."""
        self.replay = notice
        self.replay_source = source
        self._replay_until_ns = now_ns + REPLAY_HOLD_NS

    def replaying(self, now_ns: int) -> dict[str, Any] | None:
        """The replay being drawn now, if any: its speed and the replayed time reached."""
        if self.replay is None or now_ns > self._replay_until_ns:
            return None
        at = self._replay_at_ns or self.replay.first_ns
        return {"speed": self.replay.speed, "at_ms": at / 1e6}

    def place(self, times: np.ndarray, now_ns: int, source: str | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(the kept samples' times on the plot's axis, which samples are kept), for a
        batch from ``source`` (an address; None: as the replay's notice said)."""
        times = np.asarray(times, dtype=np.int64)
        if (self.replaying(now_ns) and self.replay is not None
                and source == self.replay_source):
            # each sample at the moment its replay sends it; in floats, so that no notice
            # overflows an int64, and within ``tolerance`` of now, as live samples are
            replay = self.replay
            self._replay_at_ns = int(times.max())
            placed = (np.full(len(times), float(now_ns)) if replay.speed is None else
                      replay.wall_ns + (times.astype(np.float64) - replay.first_ns)
                      / replay.speed)
            keep = np.abs(placed - now_ns) <= self.tolerance_ns
            self.dropped += int(len(keep) - keep.sum())
            return placed[keep].astype(np.int64), keep
        offsets = times - now_ns
        self._recent.append(int(np.sort(offsets)[len(offsets) // 2]))
        ordered = sorted(self._recent)
        middle = len(ordered) // 2
        if len(ordered) % 2:
            self.offset_ns = ordered[middle]
        else:  # of the two middle ones, the one nearer the estimate so far
            self.offset_ns = min(ordered[middle - 1 : middle + 1],
                                 key=lambda o: abs(o - self.offset_ns))
        # kept: within ``tolerance`` of the offset, and placed no further ahead of now
        shift = self.offset_ns if self.shifted else 0
        tolerance = self.tolerance_ns
        keep = (offsets >= self.offset_ns - tolerance) & (
            offsets <= min(self.offset_ns, shift) + tolerance)
        kept = int(np.count_nonzero(keep))
        if kept == len(times):  # the usual case
            return (times - shift if shift else times), keep
        self.ahead += int(np.count_nonzero(offsets > shift + tolerance))
        self.dropped += len(times) - kept
        return times[keep] - shift, keep
