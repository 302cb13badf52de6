from __future__ import annotations

import io
import socket

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from speeddata import Sender, loss
from speeddata.encoding import compile_encoder
from speeddata.errors import RecordError, SchemaError, SpeeddataError
from speeddata.schemas import load_file
from tests.helpers import SCHEMAS, wait_until

ENV = load_file(SCHEMAS / "env.avsc")
EXAMPLE = load_file(SCHEMAS / "example.avsc")

longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
doubles = st.floats(allow_nan=False)


@given(time=longs, counter=longs, message=st.text(), values=st.lists(doubles, min_size=4,
                                                                        max_size=4))
def test_generated_encoder_is_byte_identical_to_fastavro(time, counter, message, values) -> None:
    record = {"time": time, "message": message, "counter": counter,
              **dict(zip(["sine_wave", "ramp", "square_wave", "noise"], values, strict=True))}
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, EXAMPLE.parsed, record)
    assert compile_encoder(EXAMPLE.schema)(record) == expected.getvalue()


def test_enum_and_float_encode_like_fastavro() -> None:
    record = {"time": 5, "humidity": 40.5, "pressure": 1013.25, "state": "FAULT", "message": "x"}
    expected = io.BytesIO()
    fastavro.schemaless_writer(expected, ENV.parsed, record)
    assert compile_encoder(ENV.schema)(record) == expected.getvalue()


def test_schemas_with_unions_fall_back_to_fastavro() -> None:
    schema = {"type": "record", "name": "u", "fields": [
        {"name": "time", "type": "long"}, {"name": "x", "type": ["null", "double"]}]}
    assert compile_encoder(schema) is None
    with Sender(schema, port=9) as sender:
        assert sender.encoder.encode({"time": 1, "x": None})[10:] == b"\x02\x00"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"humidity": "wet"}, "field 'humidity'"),
        ({"state": "EXPLODED"}, "field 'state'"),
        ({"humdity": 1.0}, "field(s) ['humdity']"),
        ({"time": 2**70}, "field 'time'"),
    ],
)
def test_a_record_that_does_not_fit_names_the_field(change: dict, message: str) -> None:
    record = {"time": 5, "humidity": 40.5, "pressure": 1013.25, "state": "IDLE", "message": "x",
              **change}
    with Sender(ENV, port=9) as sender, pytest.raises(RecordError) as info:
        sender.send(record)
    assert message in str(info.value)


def test_a_missing_field_is_named() -> None:
    with Sender(ENV, port=9) as sender, pytest.raises(RecordError, match=r"lacks .*'message'"):
        sender.send(time=1, humidity=1.0, pressure=1.0, state="IDLE")


def test_send_by_keywords_fills_in_time_and_reaches_a_socket(udp: socket.socket) -> None:
    udp.bind(("127.0.0.1", 0))
    with Sender("env", port=udp.getsockname()[1], probe=0) as sender:
        assert sender.send(humidity=1.0, pressure=2.0, state="RUNNING", message="hi")
    first, datagram, last = udp.recv(2048), udp.recv(2048), udp.recv(2048)
    record = fastavro.schemaless_reader(io.BytesIO(datagram[10:]), ENV.parsed, None)
    assert record["state"] == "RUNNING" and record["time"] > 1_700_000_000 * 10**9
    # the loss reports around it: none sent before, one after (the relay compares)
    before, after = loss.read_sender_report(first), loss.read_sender_report(last)
    assert (before.sent, after.sent, after.failed) == (0, 1, 0)
    assert before.channel == after.channel == ENV.fingerprint
    assert before.sender == after.sender


def test_reports_can_be_turned_off(udp: socket.socket) -> None:
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    with Sender("env", port=udp.getsockname()[1], report=False, probe=0) as sender:
        sender.send(humidity=1.0, pressure=2.0, state="RUNNING", message="hi")
    assert udp.recv(2048)[2:10] == ENV.fingerprint
    with pytest.raises(TimeoutError):
        udp.recv(2048)


def test_network_errors_are_counted_never_raised() -> None:
    # Sending to the broadcast address without SO_BROADCAST is refused by the kernel.
    with Sender(ENV, host="255.255.255.255", port=9) as sender:
        ok = sender.send(humidity=1.0, pressure=2.0, state="IDLE", message="x")
        assert ok is False
        assert sender.statistics()["failed"] == 1
        assert sender.statistics()["last_error"]


def test_a_host_that_cannot_be_resolved_is_named_at_once() -> None:
    with pytest.raises(SpeeddataError, match=r"relay address 'no-such-host\.invalid':26000"):
        Sender(ENV, host="no-such-host.invalid")


def test_a_bare_name_is_found_without_the_app_config(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPEEDDATA_CONFIG", str(tmp_path / "missing.toml"))  # never read
    monkeypatch.setenv("SPEEDDATA_HOME", str(tmp_path))
    # port 9 (discard): the default, 26000, is a running ./start's (its reports would reach it)
    with Sender("motor", port=9) as sender:  # no schemas/ here: the demo channel
        assert sender.channel.name == "motor"
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "motor.avsc").write_text(
        (SCHEMAS / "env.avsc").read_text().replace('"env"', '"motor"'))
    with Sender("motor", port=9) as sender:  # the data directory's own comes first
        assert "humidity" in {s.name for s in sender.channel.signals}
    with pytest.raises(SchemaError, match="no schema for channel 'nope'"):
        Sender("nope", port=9)


def test_send_to_a_closed_port_keeps_working() -> None:
    with Sender(ENV, port=9) as sender:
        results = [sender.send(humidity=1.0, pressure=2.0, state="IDLE", message="x")
                   for _ in range(5)]
    wait_until(lambda: len(results) == 5)
    assert sender.sent + sender.failed == 5


def test_the_sender_imports_without_numpy_or_h5py() -> None:
    """It runs inside other people's programs on small machines: the standard library and
    fastavro only. (A fresh interpreter: this test process has numpy loaded already.)"""
    import subprocess
    import sys

    code = ("import sys; from speeddata import Sender; "
            "print(sorted(m for m in ('numpy', 'h5py', 'fastapi', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "[]"
