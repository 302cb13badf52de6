"""PageSession, driven directly: messages in, replies and frames out, time passed in."""

from __future__ import annotations

import json

import pytest

from speeddata.schemas import Registry, channel_from_schema, load_file
from speeddata.sender import Encoder
from speeddata.stripchart import frames
from speeddata.stripchart.hub import Hub
from speeddata.stripchart.session import MAX_MESSAGE, PageSession, TokenBucket
from tests.helpers import SCHEMAS

MOTOR = load_file(SCHEMAS / "motor.avsc")
S = 10**9
T0 = 1_700_000_000 * S
PERIOD = 1 / 30

RIG = {"type": "record", "name": "rig", "fields": [
    {"name": "time", "type": "long"}, {"name": "pressure", "type": "double"},
    {"name": "flow", "type": "double"}, {"name": "note", "type": "string"}]}


def motor(i: int, start: int = T0) -> bytes:
    return Encoder(MOTOR).encode({"time": start + i * 10**7, "speed": float(i), "torque": 2.0,
                                  "current": 3.0, "voltage": 4.0, "position": 5.0,
                                  "temperature": 6.0})


def session(hub: Hub, **kw: float) -> PageSession:
    return PageSession(hub, source="full", frame_hz=30, now=0.0, **kw)


def say(page: PageSession, now: float = 0.0, **message: object) -> list[dict]:
    """Send a message (a subscribe unless ``type`` says)."""
    return page.receive(json.dumps({"type": "subscribe", **message}), now, T0)


def frame_of(out: list) -> tuple[dict, dict]:
    (frame,) = [o for o in out if isinstance(o, bytes)]
    return frames.decode(frame)


def test_subscribe_then_history_then_only_what_changed() -> None:
    hub = Hub(Registry([MOTOR]))
    hub.ingest([motor(i) for i in range(10)], now_ns=T0 + 10 * 10**7)
    page = session(hub)
    hello = page.hello(T0)
    assert hello["type"] == "hello" and hello["frame_hz"] == 30
    assert [c["name"] for c in hello["channels"]] == ["motor"]
    assert page.tick(PERIOD, T0) == []  # nothing subscribed: nothing sent
    replies = say(page, signals=["motor.speed", "nope.x"], window=10)
    assert replies[0] == {"type": "subscribed", "signals": ["motor.speed"], "source": "full"}
    assert replies[1]["unknown"] == ["nope.x"]
    header, series = frame_of(page.tick(2 * PERIOD, T0 + 10 * 10**7))
    assert header["type"] == "history" and series[("motor.speed", 0)]["last"].tolist() == [
        float(i) for i in range(10)]
    assert page.tick(3 * PERIOD, T0 + 10 * 10**7) == []  # nothing new
    hub.ingest([motor(10)], now_ns=T0 + 11 * 10**7)
    header, series = frame_of(page.tick(4 * PERIOD, T0 + 11 * 10**7))
    assert header["type"] == "data" and series[("motor.speed", 0)]["last"].tolist() == [10.0]


def test_unsubscribe_some_or_all() -> None:
    page = session(Hub(Registry([MOTOR])))
    say(page, signals=["motor.speed", "motor.torque", "motor.current"])
    assert say(page, type="unsubscribe", signals=["motor.torque", "x.y"]) == [
        {"type": "unsubscribed", "signals": ["motor.speed", "motor.current"]}]
    assert say(page, type="unsubscribe") == [{"type": "unsubscribed", "signals": []}]
    assert "'signals' must be a list" in say(page, type="unsubscribe",
                                              signals="motor.speed")[0]["message"]


def test_pause_sends_nothing_and_resume_sends_the_history() -> None:
    hub = Hub(Registry([MOTOR]))
    page = session(hub)
    say(page, type="subscribe", signals=["motor.speed"], window=10)
    hub.ingest([motor(0)], now_ns=T0)
    assert frame_of(page.tick(PERIOD, T0))[0]["type"] == "history"
    assert say(page, type="pause") == [{"type": "paused"}]
    hub.ingest([motor(i) for i in range(1, 5)], now_ns=T0 + 5 * 10**7)
    assert page.tick(2 * PERIOD, T0 + 5 * 10**7) == []
    assert say(page, type="resume") == [{"type": "resumed"}]
    header, series = frame_of(page.tick(3 * PERIOD, T0 + 5 * 10**7))
    assert header["type"] == "history"
    assert series[("motor.speed", 0)]["last"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert say(page, type="resume") == [{"type": "resumed"}]  # not paused: no rebuild
    assert page.tick(4 * PERIOD, T0 + 5 * 10**7) == []


def test_subscribes_over_the_rate_are_refused_counted_and_rebuild_nothing() -> None:
    hub = Hub(Registry([MOTOR]))
    page = session(hub, subscribe_rate=2.0, subscribe_burst=3)
    for _ in range(3):
        assert say(page, signals=["motor.speed"])[0]["type"] == "subscribed"
    page.tick(PERIOD, T0)  # the history, built once for the three
    refused = say(page, signals=["motor.torque"])
    assert refused[0]["type"] == "error" and refused[0]["limit"] == "subscribe"
    assert "at most 3 at once and 2 a second" in refused[0]["message"]
    assert page.client.signals == ["motor.speed"] and not page.client.needs_history
    assert page.tick(2 * PERIOD, T0) == []  # no history rebuilt
    assert say(page, now=0.4, signals=["motor.torque"])[0]["type"] == "error"  # 0.8 token
    assert say(page, now=0.5, signals=["motor.torque"])[0]["type"] == "subscribed"
    assert page.statistics()["subscribes_limited"] == 2
    assert page.statistics()["subscribes"] == 4 and page.statistics()["bad_messages"] == 0
    page.receive(json.dumps({"type": "pause"}), 0.5, T0)
    assert say(page, now=0.5, type="resume")[0]["limit"] == "subscribe"  # a rebuild too
    assert page.paused


def test_a_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=100.0)
    assert bucket.take(100.0) and bucket.take(100.0) and not bucket.take(100.0)
    assert not bucket.take(99.0)  # a clock that goes back refills nothing
    assert bucket.take(101.0) and not bucket.take(101.0)
    assert bucket.take(1000.0) and bucket.take(1000.0) and not bucket.take(1000.0)


def test_frames_a_slow_send_overran_are_counted_as_skipped() -> None:
    hub = Hub(Registry([MOTOR]))
    page = session(hub)
    say(page, signals=["motor.speed"])
    assert page.wake_at == pytest.approx(PERIOD)
    page.tick(PERIOD, T0)
    page.sent(PERIOD + 3.5 * PERIOD)  # the send took three and a half ticks
    assert page.client.frames_dropped == 3 and page.client.frames_sent == 1
    assert page.wake_at == pytest.approx(5 * PERIOD)  # the next tick after the skipped ones
    hub.ingest([motor(1)], now_ns=T0)
    header, _ = frame_of(page.tick(5 * PERIOD, T0))
    assert header["dropped"] == 3  # told to the page
    page.sent(5 * PERIOD + 0.5 * PERIOD)  # in time: nothing skipped
    assert page.client.frames_dropped == 3


@pytest.mark.parametrize(("text", "says"), [
    ("not json", "not a JSON object"), ("[1, 2]", "not a JSON object"),
    ("[" * 5000, "nested too deeply"), (None, "JSON text messages"),
    ("x" * (MAX_MESSAGE + 1), "at most 64 KiB"),
    ('{"type": "dance"}', "unknown message type 'dance'"),
    ('{"type": "subscribe", "signals": "motor.speed"}', "'signals' must be a list"),
    ('{"type": "subscribe", "signals": [], "window": NaN}', "'window' must be")])
def test_bad_messages_get_an_error_and_are_counted(text: str | None, says: str) -> None:
    page = session(Hub(Registry([MOTOR])))
    (reply,) = page.receive(text, 0.0, T0)
    assert reply["type"] == "error" and says in reply["message"], reply
    assert page.statistics()["bad_messages"] == 1


def test_ping() -> None:
    assert session(Hub(Registry([MOTOR]))).receive('{"type": "ping"}', 0.0, 5 * 10**6) == [
        {"type": "pong", "server_ms": 5.0}]


def test_a_schema_edit_prunes_the_signals_it_removed_and_frames_go_on() -> None:
    """Before, Hub.frame raised KeyError for a subscribed signal an edit removed: the
    push task died, the socket stayed open and the page got no frame again."""
    rig = channel_from_schema(RIG)
    hub = Hub(Registry([MOTOR, rig]))
    page = session(hub)
    say(page, signals=["rig.pressure", "rig.flow", "rig.note", "motor.speed"])
    encode = Encoder(rig).encode
    hub.ingest([encode({"time": T0, "pressure": 1.0, "flow": 2.0, "note": "a"})], now_ns=T0)
    _, series = frame_of(page.tick(PERIOD, T0))
    assert {k[0] for k in series} == {"rig.pressure", "rig.flow"}
    edited = channel_from_schema({**RIG, "fields": RIG["fields"][:2]})  # no flow, note
    hub.set_registry(Registry([MOTOR, edited]))
    assert page.prune() == ["rig.flow", "rig.note"]
    assert page.client.signals == ["rig.pressure", "motor.speed"]
    hub.ingest([Encoder(edited).encode({"time": T0 + S, "pressure": 3.0})], now_ns=T0 + S)
    out = page.tick(2 * PERIOD, T0 + S)
    assert out[0]["type"] == "pruned" and out[0]["signals"] == ["rig.flow", "rig.note"]
    _, series = frame_of(out)
    assert series[("rig.pressure", 0)]["last"].tolist() == [3.0]
    assert page.tick(3 * PERIOD, T0 + S) == []  # told once
    assert page.prune() == [] and page.statistics()["pruned_signals"] == 2
    # subscribing to a removed signal again: unknown, as any
    assert say(page, signals=["rig.flow"])[1]["unknown"] == ["rig.flow"]


def test_a_retired_channel_stays_drawn() -> None:
    hub = Hub(Registry([MOTOR]))
    page = session(hub)
    say(page, signals=["motor.speed"])
    hub.ingest([motor(0)], now_ns=T0)
    hub.set_registry(Registry([]))
    assert page.prune() == []  # its history stays: the page can still show it
    _, series = frame_of(page.tick(PERIOD, T0))
    assert series[("motor.speed", 0)]["last"].tolist() == [0.0]
