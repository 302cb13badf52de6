"""Derived channels in the stripchart's hub, in process: computed from every sample
before folding, so their envelopes are exact; listed like channels; their windows go on
across a schema edit of their input."""

from __future__ import annotations

import numpy as np

from speeddata.schemas import Registry, channel_from_schema
from speeddata.sender import Encoder
from speeddata.stripchart import frames
from speeddata.stripchart.history import MS, Level
from speeddata.stripchart.hub import Client, Hub
from tests.derived.common import PAIR, REGISTRY, derived, sines, toml

TEXT = toml("calc", diff="pair.a - pair.b", m="mean(pair.a, 25)") + (
    '[signals.diff.limits]\nwarn = [-3.5, 3.5]\n')


def datagrams(columns: dict[str, np.ndarray], registry: Registry = REGISTRY) -> list[bytes]:
    encoder = Encoder(registry["pair"])
    names = [f["name"] for f in registry["pair"].schema["fields"]]
    return [encoder.encode({k: (columns[k][i].item() if k in columns else 0.0) for k in names})
            for i in range(len(columns["time"]))]


def feed(hub: Hub, columns: dict[str, np.ndarray], batch: int = 37,
         registry: Registry = REGISTRY) -> None:
    sent = datagrams(columns, registry)
    times = columns["time"]
    for lo in range(0, len(sent), batch):
        hub.ingest(sent[lo: lo + batch], now_ns=int(times[min(lo + batch, len(sent)) - 1]))


def level0(hub: Hub, signal: str, now_ns: int) -> dict[str, np.ndarray]:
    client = Client()
    hub.subscribe(client, {"signals": [signal], "window": 60})
    _header, series = frames.decode(hub.frame(client, now_ns))
    return series[(signal, 0)]


def test_a_minus_b_of_two_sines_is_the_formula_to_the_last_bit_in_the_frame() -> None:
    columns = sines(3000)  # 1 kHz, one sample per 1 ms bucket
    hub = Hub(derived(TEXT).view(REGISTRY), levels=[Level(MS, 10_000)])
    feed(hub, columns)
    got = level0(hub, "calc.diff", int(columns["time"][-1]))
    expected = columns["a"] - columns["b"]
    for field in ("low", "high", "last"):
        assert got[field].tobytes() == expected.tobytes()
    means = level0(hub, "calc.m", int(columns["time"][-1]))["last"]
    whole = derived(TEXT).compute(REGISTRY["pair"], columns)[0][1]["m"]
    assert np.isnan(means[:24]).all() and means[24:].tobytes() == whole[24:].tobytes()


def test_a_one_sample_spike_in_an_input_shows_in_the_derived_envelope() -> None:
    columns = sines(2000)
    columns["a"][1234] += 100.0
    hub = Hub(derived(TEXT).view(REGISTRY))  # the default 10 ms buckets: 10 samples each
    feed(hub, columns, batch=50)
    got = level0(hub, "calc.diff", int(columns["time"][-1]))
    spike = columns["a"][1234] - columns["b"][1234]
    assert got["high"].max() == spike and np.count_nonzero(got["high"] > 50) == 1
    assert hub.alarms.states["calc.diff"].level == ""  # back within its limits now
    columns["a"][-1] += 100.0
    hub.ingest(datagrams({k: v[-1:] for k, v in columns.items()}),
               now_ns=int(columns["time"][-1]))
    assert hub.alarms.states["calc.diff"].level == "warn"  # its limits, as a channel's


def test_derived_channels_are_listed_with_expression_unit_and_limits() -> None:
    hub = Hub(derived(TEXT).view(REGISTRY))
    (calc,) = [c for c in hub.describe(0) if c["name"] == "calc"]
    diff = calc["signals"][0]
    assert diff["id"] == "calc.diff" and diff["expression"] == "pair.a - pair.b"
    assert diff["unit"] == "bar" and diff["limits"] == {"warn": [-3.5, 3.5]}
    assert "expression" not in next(c for c in hub.describe(0)
                                    if c["name"] == "pair")["signals"][0]


def test_a_moving_mean_goes_on_across_a_schema_edit_of_its_input() -> None:
    columns = sines(1000)
    first = derived(TEXT)
    hub = Hub(first.view(REGISTRY), levels=[Level(MS, 10_000)])
    half = {k: v[:500] for k, v in columns.items()}
    feed(hub, half)
    edited = {**PAIR, "fields": [*PAIR["fields"], {"name": "c", "type": "float"}]}
    registry = Registry([channel_from_schema(edited, limits=True), REGISTRY["slow"]])
    again = derived(TEXT, registry)
    again.take_state(hub.derived)  # as StripchartServer.apply_channels does
    hub.set_registry(again.view(registry))
    feed(hub, {k: v[500:] for k, v in columns.items()}, registry=registry)
    means = level0(hub, "calc.m", int(columns["time"][-1]))["last"]
    whole = derived(TEXT).compute(REGISTRY["pair"], columns)[0][1]["m"]
    assert means[24:].tobytes() == whole[24:].tobytes()
    assert not np.isnan(means[500:]).any()  # no restart at the edit: full all along
    assert hub.statistics()["derived"] == {"calc": {"failures": 0, "held_dropped": 0}}
    fields = [*PAIR["fields"][:2], {"name": "b", "type": "string"}]
    gone = Registry([channel_from_schema({**PAIR, "fields": fields}, limits=True),
                     REGISTRY["slow"]])
    hub.set_registry(again.view(gone))  # an edit that makes b text: NaN, counted
    text = {**columns, "b": np.array([str(v) for v in columns["b"]], dtype=object)}
    hub._fold(gone["pair"], {k: v[:10] for k, v in text.items()}, 0.0,
              int(columns["time"][-1]), None)
    assert hub.statistics()["derived"]["calc"]["failures"] == 1


def test_tail_prints_a_derived_channel_computed_from_its_inputs_datagrams() -> None:
    from speeddata import tail

    columns = sines(40)
    computed = derived(TEXT)
    noise = [b"\xc3\x01" + b"\x00" * 8 + b"junk", b"not even a header"]
    lines = list(tail.derived_records(iter(noise + datagrams(columns)), computed.compiled[0],
                                      REGISTRY))
    assert [r["diff"] for r in lines] == (columns["a"] - columns["b"]).tolist()
    assert lines[-1]["m"] == computed.compute(REGISTRY["pair"], columns)[0][1]["m"][-1]
    text = tail.text_line(lines[0], "time", ["diff", "m"])
    assert f"{lines[0]['diff']:.6g}" in text
