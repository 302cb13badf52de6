"""Spectra of sampled signals, numpy only: no sockets, no clock, no files.

Welch's power spectral density (``welch``), the amplitude spectrum (``amplitude``), a
spectrogram (``spectrogram``) and the sample rate read off the sample times
(``sampling``). The stripchart's ``/api/spectrum`` and ``/api/spectrogram`` call these on
full-rate samples from the cache; tests check them against Parseval and, when it is
installed, ``scipy.signal.welch``.

Conventions (those of ``scipy.signal.welch`` with its defaults but the window):
segments of ``segment`` samples overlapping by half, the mean removed from each,
periodic windows, one-sided, density in unit²/Hz (``sum(psd) * df`` is the variance).
The amplitude spectrum is window-corrected so that a sine of amplitude A on a bin
reads A there (off a bin the window's scalloping loss lowers it: up to 15 % with hann).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speeddata.errors import SpeeddataError

WINDOWS = ("hann", "hamming", "blackman", "rect")
MIN_SAMPLES = 16  # fewer make no spectrum worth drawing
GAP_FACTOR = 1.5  # a spacing this many times the median is a gap
JITTER = 0.05  # 5th-95th percentile spread of the spacing, as a share of the median
MAX_BINS = 16_384  # most frequencies an answer holds (more: the largest of each group)
MAX_COLUMNS = 512  # most time columns of a spectrogram
MAX_SPECTROGRAM_SEGMENT = 4096


class SpectrumError(SpeeddataError):
    """Samples that make no spectrum: too few, no time between them, a bad window."""


@dataclass(frozen=True)
class Sampling:
    """The sample rate a spectrum assumes, and whether the times bear it out."""

    rate_hz: float
    irregular: bool
    reason: str | None  # why it is irregular, in words; None when regular

    def as_json(self) -> dict:
        return {"rate_hz": self.rate_hz, "irregular": self.irregular, "reason": self.reason}


@dataclass(frozen=True)
class Spectrum:
    """Frequencies (Hz) and a value per frequency; ``segments`` averaged."""

    frequency: np.ndarray
    value: np.ndarray
    resolution_hz: float  # the spacing of the bins before any grouping
    segment: int  # samples per transform
    segments: int


def sampling(times_ns: np.ndarray) -> Sampling:
    """The rate from the median spacing of sorted sample times (int ns), and whether
    gaps or jitter make it a poor description of them. SpectrumError when there is
    no spacing to read (fewer than MIN_SAMPLES samples, or all at one time)."""
    times = np.asarray(times_ns, dtype=np.int64)
    if len(times) < MIN_SAMPLES:
        raise SpectrumError(f"{len(times)} samples in the range: a spectrum needs at least "
                            f"{MIN_SAMPLES}")
    spacing = np.diff(times)
    median = float(np.median(spacing))
    if median <= 0:
        raise SpectrumError("most samples share their time with the one before: no sample "
                            "rate can be read off the times")
    rate = 1e9 / median
    gaps = spacing > GAP_FACTOR * median
    if gaps.any():
        return Sampling(rate, True, f"{int(gaps.sum())} gaps over {GAP_FACTOR:g}x the median "
                        f"spacing of {median / 1e6:.4g} ms, the longest "
                        f"{spacing.max() / 1e9:.4g} s: the spectrum treats the samples as "
                        "evenly spaced")
    low, high = np.percentile(spacing, [5, 95])
    spread = (high - low) / median
    if spread > JITTER:
        return Sampling(rate, True, f"the spacing jitters by {spread:.1%} of its median "
                        f"({median / 1e6:.4g} ms, 5th to 95th percentile): frequencies are "
                        "smeared")
    return Sampling(rate, False, None)


def window(name: str, size: int) -> np.ndarray:
    """A periodic window (what spectral analysis uses; scipy's ``get_window``)."""
    if name not in WINDOWS:
        raise SpectrumError(f"window {name[:32]!r}: one of {', '.join(WINDOWS)}")
    if name == "rect":
        return np.ones(size)
    phase = 2 * np.pi * np.arange(size) / size
    if name == "hann":
        return 0.5 - 0.5 * np.cos(phase)
    if name == "hamming":
        return 0.54 - 0.46 * np.cos(phase)
    return 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase)


def _one_sided(power: np.ndarray, size: int) -> np.ndarray:
    """Power of an rfft doubled but at DC and, for an even size, Nyquist: the negative
    frequencies' share."""
    power = power.copy()
    last = None if size % 2 else -1
    power[..., 1:last] *= 2
    return power


def _segments(values: np.ndarray, segment: int) -> np.ndarray:
    """The half-overlapping segments of ``values`` as rows (a view, then a copy)."""
    step = segment - segment // 2  # what overlaps is segment // 2, as scipy has it
    count = (len(values) - segment) // step + 1
    starts = np.arange(count) * step
    return values[starts[:, None] + np.arange(segment)]


def _psd_rows(rows: np.ndarray, rate_hz: float, taper: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(rows * taper, axis=1)) ** 2 / (rate_hz * np.sum(taper**2))
    return _one_sided(power, rows.shape[1])


def welch(values: np.ndarray, rate_hz: float, segment: int = 1024,
          window_name: str = "hann", bins: int = MAX_BINS) -> Spectrum:
    """Welch's PSD in unit²/Hz: the mean over half-overlapping segments (``segment``
    samples, fewer when the range has fewer) of each one's windowed periodogram."""
    values = _finite(values)
    segment = min(segment, len(values))
    taper = window(window_name, segment)
    rows = _segments(values, segment)
    psd = _psd_rows(rows, rate_hz, taper).mean(axis=0)
    return _grouped(np.fft.rfftfreq(segment, 1 / rate_hz), psd, rate_hz / segment, segment,
                    len(rows), bins)


def amplitude(values: np.ndarray, rate_hz: float, window_name: str = "hann",
              bins: int = MAX_BINS) -> Spectrum:
    """The amplitude spectrum of the whole range, mean removed, in the signal's unit: a
    sine of amplitude A on a bin reads A (the window's coherent gain divided out)."""
    values = _finite(values)
    taper = window(window_name, len(values))
    spectrum = np.abs(np.fft.rfft((values - values.mean()) * taper)) / np.sum(taper)
    last = None if len(values) % 2 else -1
    spectrum[1:last] *= 2
    return _grouped(np.fft.rfftfreq(len(values), 1 / rate_hz), spectrum,
                    rate_hz / len(values), len(values), 1, bins)


@dataclass(frozen=True)
class Spectrogram:
    """PSD (unit²/Hz) per time column (rows) and frequency (columns)."""

    start_ns: np.ndarray  # each column's first sample
    frequency: np.ndarray
    psd: np.ndarray  # shape (len(start_ns), len(frequency))
    segment: int
    segments_per_column: int


def spectrogram(times_ns: np.ndarray, values: np.ndarray, rate_hz: float,
                segment: int = 256, window_name: str = "hann",
                columns: int = MAX_COLUMNS) -> Spectrogram:
    """Half-overlapping segments' PSDs, as ``welch``; when there are more segments than
    ``columns``, neighbours are averaged so that the matrix stays within
    ``columns`` x (MAX_SPECTROGRAM_SEGMENT / 2 + 1)."""
    values = _finite(values)
    if not 0 < columns <= MAX_COLUMNS:
        raise SpectrumError(f"columns must be 1 to {MAX_COLUMNS}")
    segment = min(segment, len(values), MAX_SPECTROGRAM_SEGMENT)
    taper = window(window_name, segment)
    rows = _segments(values, segment)
    per = -(-len(rows) // columns)  # segments averaged into one column
    used = len(rows) // per * per or len(rows)
    per = min(per, used)
    psd = _psd_rows(rows[:used], rate_hz, taper).reshape(-1, per, segment // 2 + 1).mean(axis=1)
    step = segment - segment // 2  # what overlaps is segment // 2, as scipy has it
    starts = np.asarray(times_ns, dtype=np.int64)[np.arange(0, used, per) * step]
    return Spectrogram(starts, np.fft.rfftfreq(segment, 1 / rate_hz), psd, segment, per)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < MIN_SAMPLES:
        raise SpectrumError(f"{len(values)} samples in the range: a spectrum needs at least "
                            f"{MIN_SAMPLES}")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise SpectrumError(f"{bad} of the {len(values)} samples are NaN or infinite: no "
                            "spectrum of them (choose a range without them)")
    return values


def _grouped(frequency: np.ndarray, value: np.ndarray, resolution: float, segment: int,
             segments: int, bins: int) -> Spectrum:
    """At most ``bins`` frequencies: past that, each group of neighbours is its largest
    value at that value's frequency, so every peak stays where it is and as high."""
    if not 0 < bins <= MAX_BINS:
        raise SpectrumError(f"bins must be 1 to {MAX_BINS}")
    if len(value) > bins:
        size = -(-len(value) // bins)
        padded = np.full(-(-len(value) // size) * size, -np.inf)
        padded[: len(value)] = value
        best = padded.reshape(-1, size).argmax(axis=1) + np.arange(0, len(padded), size)
        frequency, value = frequency[best], value[best]
    return Spectrum(frequency, value, resolution, segment, segments)


def xy_pairs(x_times: np.ndarray, x: np.ndarray, y_times: np.ndarray, y: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, x, y) at each x sample, y the last value of y at or before it (the join
    rule of derived signals); x samples before y's first are left out. Times sorted."""
    tx, xv = _by_time(np.asarray(x_times), np.asarray(x, dtype=np.float64))
    ty, yv = _by_time(np.asarray(y_times), np.asarray(y, dtype=np.float64))
    if len(tx) == len(ty) and np.array_equal(tx, ty):  # one channel: the same samples
        return tx, xv, yv
    at = np.searchsorted(ty, tx, side="right") - 1
    kept = at >= 0
    return tx[kept], xv[kept], yv[at[kept]]


def _by_time(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by time (stable); as they are when they already are, the usual case."""
    if len(times) < 2 or bool(np.all(times[1:] >= times[:-1])):
        return times, values
    order = np.argsort(times, kind="stable")
    return times[order], values[order]


def decimate_pairs(count: int, points: int) -> np.ndarray:
    """Which of ``count`` pairs to keep for at most ``points``: all when they fit, else
    the first of each bucket of k; ``extremes`` adds each bucket's min and max."""
    if count <= points:
        return np.arange(count)
    return np.arange(0, count, -(-count // max(points // 5, 1)))


def extremes(x: np.ndarray, y: np.ndarray, points: int) -> np.ndarray:
    """Indices of the pairs an XY of at most ``points`` draws, in time order: every k-th,
    and in each bucket of k the pairs where x and y are lowest and highest, so a spike
    in either shows. NaN pairs are never drawn."""
    good = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(good) <= points:
        return good
    starts = decimate_pairs(len(good), points)
    size = int(starts[1] - starts[0])
    padded = len(starts) * size
    chosen = [starts]
    for column in (x[good], y[good]):
        low = np.full(padded, np.inf)
        high = np.full(padded, -np.inf)
        low[: len(good)] = column
        high[: len(good)] = column
        chosen.append(low.reshape(-1, size).argmin(axis=1) + starts)
        chosen.append(high.reshape(-1, size).argmax(axis=1) + starts)
    return good[np.unique(np.concatenate(chosen))]
