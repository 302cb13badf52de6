"""The spectra maths against known truth: Parseval, a sine's amplitude and bin, scipy's
Welch when it is installed, irregular sample times said, XY joins and decimation."""

from __future__ import annotations

import numpy as np
import pytest

from speeddata import spectra
from speeddata.spectra import SpectrumError

RATE = 1000.0


def sine(hz: float, amplitude: float = 1.0, seconds: float = 8.0, noise: float = 0.0
         ) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(7)
    return amplitude * np.sin(2 * np.pi * hz * t) + noise * rng.normal(size=len(t))


@pytest.mark.parametrize("window", spectra.WINDOWS)
def test_welch_keeps_the_variance_parseval(window: str) -> None:
    # white noise: each segment's periodogram sums to its windowed energy, so the mean
    # over segments times df is the variance, to the statistics of 30 segments
    x = np.random.default_rng(3).normal(0, 2.0, 16_384)
    made = spectra.welch(x, RATE, 1024, window)
    assert made.segments == 31 and made.segment == 1024
    assert np.sum(made.value) * made.resolution_hz == pytest.approx(x.var(), rel=0.05)


def test_a_rect_periodogram_of_one_segment_is_exactly_parseval() -> None:
    x = np.random.default_rng(4).normal(size=1024)
    made = spectra.welch(x, RATE, 1024, "rect")
    assert made.segments == 1
    assert np.sum(made.value) * made.resolution_hz == pytest.approx(x.var(), rel=1e-12)


def test_welch_matches_hand_computed_periodograms_of_the_halves() -> None:
    x = np.random.default_rng(5).normal(size=96)
    made = spectra.welch(x, 48.0, 64, "hann")
    w = spectra.window("hann", 64)
    expected = []
    for seg in (x[0:64], x[32:96]):
        p = np.abs(np.fft.rfft((seg - seg.mean()) * w)) ** 2 / (48.0 * np.sum(w**2))
        p[1:-1] *= 2
        expected.append(p)
    assert made.segments == 2
    np.testing.assert_allclose(made.value, np.mean(expected, axis=0), rtol=1e-12)


@pytest.mark.parametrize(("window", "segment"), [
    ("hann", 512), ("hamming", 512), ("blackman", 512), ("rect", 512), ("hann", 1001)])
def test_welch_agrees_with_scipy(window: str, segment: int) -> None:
    signal = pytest.importorskip("scipy.signal")
    x = sine(37, 2.0, noise=0.5)
    f, p = signal.welch(x, RATE, window="boxcar" if window == "rect" else window,
                        nperseg=segment)
    made = spectra.welch(x, RATE, segment, window)
    np.testing.assert_allclose(made.frequency, f)
    # the DC bin of a mean-removed segment is rounding noise (1e-34) in both
    np.testing.assert_allclose(made.value, p, rtol=1e-10, atol=1e-12 * p.max())


def test_the_psd_of_a_37_hz_sine_peaks_at_37_hz_within_one_bin() -> None:
    made = spectra.welch(sine(37, noise=0.1), RATE, 1024)
    assert abs(made.frequency[np.argmax(made.value)] - 37) <= made.resolution_hz


@pytest.mark.parametrize("window", spectra.WINDOWS)
def test_a_sine_of_amplitude_2_5_reads_2_5_in_the_fft(window: str) -> None:
    made = spectra.amplitude(sine(37, 2.5, noise=0.05) + 4.0, RATE, window)
    peak = np.argmax(made.value)
    assert made.frequency[peak] == pytest.approx(37.0)
    assert made.value[peak] == pytest.approx(2.5, rel=0.01)
    assert made.value[0] < 0.01  # the mean removed


def test_grouped_bins_keep_every_peak_where_it_is() -> None:
    x = sine(37, 1.0, seconds=64) + sine(401, 0.5, seconds=64)
    made = spectra.amplitude(x, RATE, "hann", bins=500)
    assert len(made.value) <= 500
    top = sorted(made.frequency[np.argsort(made.value)[-2:]])
    assert top == pytest.approx([37.0, 401.0])
    assert made.value.max() == pytest.approx(1.0, rel=0.01)


def test_a_spectrogram_stays_in_its_bounds_and_follows_a_step_in_frequency() -> None:
    x = np.concatenate([sine(50, seconds=30), sine(200, seconds=30)])
    times = np.arange(len(x), dtype=np.int64) * 1_000_000
    made = spectra.spectrogram(times, x, RATE, 256, "hann", columns=100)
    assert made.psd.shape[0] <= 100 and made.psd.shape[1] == 129
    peaks = made.frequency[np.argmax(made.psd, axis=1)]
    assert abs(peaks[0] - 50) < 4 and abs(peaks[-1] - 200) < 4
    assert np.all(np.diff(made.start_ns) > 0)


def test_regular_times_give_the_rate() -> None:
    times = np.arange(5000, dtype=np.int64) * 1_000_000
    got = spectra.sampling(times)
    assert got == spectra.Sampling(1000.0, False, None)


def test_a_gap_is_said_not_hidden() -> None:
    times = np.arange(5000, dtype=np.int64) * 1_000_000
    times[2500:] += 3 * 10**9
    got = spectra.sampling(times)
    assert got.irregular and got.rate_hz == 1000.0 and "1 gaps" in got.reason


def test_jitter_is_said_not_hidden() -> None:
    rng = np.random.default_rng(1)
    times = (np.arange(5000) * 1e6 + rng.uniform(-2e5, 2e5, 5000)).astype(np.int64)
    got = spectra.sampling(times)
    assert got.irregular and "jitters" in got.reason


@pytest.mark.parametrize(("times", "message"), [
    (np.arange(5, dtype=np.int64), "at least"),
    (np.zeros(100, dtype=np.int64), "no sample rate"),
])
def test_times_that_give_no_rate_are_refused(times: np.ndarray, message: str) -> None:
    with pytest.raises(SpectrumError, match=message):
        spectra.sampling(times)


def test_nan_samples_and_unknown_windows_are_refused() -> None:
    x = sine(10)
    x[100] = np.nan
    with pytest.raises(SpectrumError, match="NaN"):
        spectra.welch(x, RATE)
    with pytest.raises(SpectrumError, match="window"):
        spectra.amplitude(sine(10), RATE, "kaiser")


def test_xy_takes_the_last_y_at_or_before_each_x() -> None:
    tx = np.array([10, 20, 30, 40, 50])
    ty = np.array([15, 30, 45])
    t, x, y = spectra.xy_pairs(tx, np.arange(5.0), ty, np.array([1.0, 2.0, 3.0]))
    assert t.tolist() == [20, 30, 40, 50]  # no y before x's first sample
    assert x.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert y.tolist() == [1.0, 2.0, 2.0, 3.0]


def test_xy_decimation_keeps_a_one_sample_spike_and_the_bound() -> None:
    n = 1_000_000
    x = np.sin(np.arange(n) / 1000.0)
    y = np.cos(np.arange(n) / 1000.0)
    y[123_457] = 50.0
    x[654_321] = -40.0
    kept = spectra.extremes(x, y, 5000)
    assert len(kept) <= 5000
    assert 123_457 in kept and 654_321 in kept
    assert np.all(np.diff(kept) > 0)
    assert len(spectra.extremes(x[:300], y[:300], 5000)) == 300
