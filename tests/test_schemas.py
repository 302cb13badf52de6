from __future__ import annotations

import json
from pathlib import Path

import pytest

from speeddata.errors import ConflictError, SchemaError, UnknownChannelError
from speeddata.schemas import Registry, load_file
from tests.helpers import SCHEMAS


def test_demo_schemas_load_with_signals_units_and_kinds() -> None:
    registry, errors = Registry.load_dir(SCHEMAS)
    assert errors == []
    assert registry.names() == ["env", "example", "motor"]
    motor = registry["motor"]
    assert motor.time_field == "time"
    assert motor.signal("speed").unit == "rpm"
    assert motor.signal("speed").kind == "number"
    env = registry["env"]
    assert env.signal("state").kind == "text"
    assert env.signal("state").symbols == ("IDLE", "RUNNING", "FAULT")
    assert env.signal("message").kind == "text"
    assert registry.by_fingerprint(motor.fingerprint) is motor


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.avsc"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("broken", "{not json", "not valid JSON at line 1"),
        ("typo", json.dumps({"type": "record", "name": "typo", "fields": [
            {"name": "time", "type": "long"}, {"name": "speed", "type": "dobule"}]}), "dobule"),
        ("named", json.dumps({"type": "record", "name": "other", "fields": [
            {"name": "time", "type": "long"}]}), "differs from the file name"),
        ("notime", json.dumps({"type": "record", "name": "notime", "fields": [
            {"name": "x", "type": "double"}]}), "no field 'time'"),
        ("strtime", json.dumps({"type": "record", "name": "strtime", "fields": [
            {"name": "time", "type": "string"}]}), "must be a long"),
        ("enumonly", json.dumps({"type": "enum", "name": "enumonly", "symbols": ["A"]}),
         "must be an Avro record"),
        ("twice", json.dumps({"type": "record", "name": "twice", "fields": [
            {"name": "time", "type": "long"}, {"name": "x", "type": "double"},
            {"name": "x", "type": "float"}]}), "field(s) x appear more than once"),
    ],
)
def test_bad_schema_files_give_errors_naming_file_and_problem(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(SchemaError) as info:
        load_file(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_registry_keeps_valid_channels_beside_bad_files(tmp_path: Path) -> None:
    (tmp_path / "motor.avsc").write_text((SCHEMAS / "motor.avsc").read_text())
    _write(tmp_path, "bad", "[")
    (tmp_path / "latin1.avsc").write_bytes('{"doc": "caf\u00e9"}'.encode("latin-1"))
    registry, errors = Registry.load_dir(tmp_path)
    assert registry.names() == ["motor"]
    assert sorted(str(e).split(":")[0] for e in errors) == [
        f"schema {tmp_path / 'bad.avsc'}", f"schema {tmp_path / 'latin1.avsc'}"]
    assert "not UTF-8 text (byte 12 is 0xe9)" in str(errors[1])


def test_unknown_channel_lists_the_known_ones() -> None:
    registry, _ = Registry.load_dir(SCHEMAS)
    with pytest.raises(UnknownChannelError, match="known: env, example, motor"):
        registry["nope"]


def test_registering_and_retiring_channels_in_a_directory(tmp_path) -> None:
    import time

    from speeddata.errors import SchemaError, UnknownChannelError
    from speeddata.schemas import DirWatch, Registry, retire_schema, store_schema

    watch = DirWatch(tmp_path)
    assert not watch.changed()
    schema = {"type": "record", "name": "rig", "fields": [
        {"name": "time", "type": "long"}, {"name": "pressure", "type": "double"}]}
    channel = store_schema(tmp_path, schema, Registry())
    assert channel.name == "rig" and (tmp_path / "rig.avsc").exists()
    assert watch.changed() and not watch.changed()
    registry, errors = Registry.load_dir(tmp_path)
    assert errors == [] and registry["rig"].fingerprint == channel.fingerprint
    assert store_schema(tmp_path, schema, registry).fingerprint == channel.fingerprint
    assert not watch.changed()  # the same schema again: nothing written
    edited = {**schema, "fields": [*schema["fields"], {"name": "flow", "type": "float"}]}
    with pytest.raises(ConflictError, match="'rig' exists with another schema: say replace"):
        store_schema(tmp_path, edited, registry)
    assert not watch.changed() and load_file(tmp_path / "rig.avsc").schema == schema
    time.sleep(0.01)
    assert store_schema(tmp_path, edited, registry, replace=True).fingerprint != (
        channel.fingerprint)
    assert watch.changed()
    for bad in ({"type": "record", "name": "x"}, {**schema, "name": "1rig"}, [1, 2]):
        with pytest.raises(SchemaError):
            store_schema(tmp_path, bad, registry)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rig.avsc"]  # nothing half-made
    moved = retire_schema(tmp_path, "rig", 42)
    assert moved == tmp_path / "retired" / "rig.42.avsc" and watch.changed()
    assert len(Registry.load_dir(tmp_path)[0]) == 0  # retired ones are not loaded
    with pytest.raises(UnknownChannelError):
        retire_schema(tmp_path, "rig", 43)
    with pytest.raises(UnknownChannelError):
        retire_schema(tmp_path, "../etc", 43)


def test_the_hub_and_the_router_take_a_new_registry() -> None:
    from speeddata.relay.core import BatchRouter, Router
    from speeddata.schemas import Registry, channel_from_schema
    from speeddata.sender import Encoder
    from speeddata.stripchart.hub import Hub

    motor = load_file(SCHEMAS / "motor.avsc")
    rig = channel_from_schema({"type": "record", "name": "rig", "fields": [
        {"name": "time", "type": "long"}, {"name": "pressure", "type": "double"}]})
    datagram = Encoder(rig).encode({"time": 5, "pressure": 2.5})
    router = Router(Registry([motor]))
    assert not router.route([memoryview(datagram)], 1, 0).bodies
    batch_router = BatchRouter(router)
    router.set_registry(Registry([motor, rig]))
    assert batch_router.router.registry is router.registry
    assert list(router.route([memoryview(datagram)], 1, 0).bodies) == [rig]
    hub = Hub(Registry([motor]))
    hub.set_registry(Registry([motor, rig]))
    hub.ingest([datagram], now=1.0, now_ns=5)
    assert hub.known("rig.pressure") and hub.rates["rig"].datagrams == 1
