from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speeddata.errors import ConflictError, SchemaError, UnknownChannelError
from speeddata.schemacheck import (
    MAX_DEPTH,
    MAX_ENUM_SYMBOLS,
    MAX_FIELDS,
    MAX_FIXED_BYTES,
    MAX_NAME_CHARS,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_FILE_BYTES,
    MAX_UNION_BRANCHES,
)
from speeddata.schemas import (
    Registry,
    channel_from_schema,
    load_file,
    registration,
    store_schema,
)
from tests.avro_strategies import record_schemas
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


# -- registration limits ---------------------------------------------------------------

def rig(*fields: dict, **attrs: object) -> dict:
    return {"type": "record", "name": "rig", **attrs,
            "fields": [{"name": "time", "type": "long"}, *fields]}


def nested(kind: str, levels: int) -> object:
    """A type ``levels`` deep below the field that holds it: arrays, maps, unions or
    records inside each other around a long."""
    t: object = "long"
    for i in range(levels):  # (a union may not hold a union: arrays between them)
        t = {"array": {"type": "array", "items": t}, "map": {"type": "map", "values": t},
             "union": ["null", t] if i % 2 else {"type": "array", "items": t},
             "record": {"type": "record", "name": f"R{i}", "fields": [{"name": "v", "type": t}]},
             }[kind]
    return t


def doubling(levels: int) -> dict:
    """Each named record used twice by the next: a few lines that expand to 2**levels."""
    fields: list[dict] = [{"name": "r0", "type": {"type": "record", "name": "T0", "fields": [
        {"name": "x", "type": "int"}]}}]
    for i in range(1, levels):
        fields.append({"name": f"r{i}", "type": {"type": "record", "name": f"T{i}", "fields": [
            {"name": "a", "type": f"T{i - 1}"}, {"name": "b", "type": f"T{i - 1}"}]}})
    return rig(*fields)


def limits_of(schema: dict) -> str:
    with pytest.raises(SchemaError) as info:
        channel_from_schema(schema, "<test>", limits=True)
    return str(info.value)


@pytest.mark.parametrize("kind", ["array", "map", "union", "record"])
def test_nesting_up_to_the_limit_is_taken_and_one_more_is_refused(kind: str) -> None:
    # the channel's record is level 1, and the union's nesting needs a record around it
    deepest = MAX_DEPTH - 1
    assert channel_from_schema(rig({"name": "x", "type": nested(kind, deepest)}),
                               limits=True).check.valid_bodies([b"\x00"]) is not None
    message = limits_of(rig({"name": "x", "type": nested(kind, deepest + 1)}))
    assert message.startswith("schema <test>: field 'x") and "nesting depth" in message


@pytest.mark.parametrize(("schema", "rule", "path"), [
    (rig({"name": "x", "type": nested("array", 700)}), "nesting depth", "x"),  # the crash
    (rig({"name": "x", "type": nested("record", 200)}), "nesting depth", "x.v.v.v"),
    (rig({"name": "next", "type": ["null", "rig"]}), "nesting depth", "next(branch 1)"),
    (rig({"name": "u", "type": ["null", ["int", "long"]]}), "union in a union", "u(branch 1)"),
    (doubling(12), "fields in all", "r8.a.b"),  # 4,095 fields once expanded
    (rig(*({"name": f"f{i}", "type": "int"} for i in range(MAX_FIELDS))), "fields in all",
     f"f{MAX_FIELDS - 1}"),  # with time, one too many
    (rig({"name": "u0", "type": ["null", *({"type": "fixed", "name": f"F{i}", "size": 1}
                                           for i in range(60))]},
         *({"name": f"u{j}", "type": ["null", *(f"F{i}" for i in range(60))]}
           for j in range(1, 200))), "types in all", "u82(branch 27)"),  # 62 a field
    (rig({"name": "u", "type": ["null", *({"type": "fixed", "name": f"F{i}", "size": 1}
                                          for i in range(MAX_UNION_BRANCHES))]}),
     "union size", "u"),
    (rig({"name": "e", "type": {"type": "enum", "name": "E",
                                "symbols": [f"S{i}" for i in range(MAX_ENUM_SYMBOLS + 1)]}}),
     "enum size", "e"),
    (rig({"name": "b", "type": {"type": "fixed", "name": "B", "size": -3}}), "fixed size", "b"),
    (rig({"name": "b", "type": {"type": "array", "items": {
        "type": "fixed", "name": "B", "size": MAX_FIXED_BYTES + 1}}}), "fixed size", "b[]"),
    (rig({"name": "", "type": "int"}), "field name", ""),
    (rig({"name": ".", "type": "int"}), "field name", "."),
    (rig({"name": "..", "type": "int"}), "field name", ".."),
    (rig({"name": "a/b", "type": "int"}), "field name", "a/b"),
    (rig({"name": "a\x00b", "type": "int"}), "field name", "a\x00b"),
    (rig({"name": "line\nbreak", "type": "int"}), "field name", "line\nbreak"),
    (rig({"name": "half\ud800", "type": "int"}), "field name", "half\ud800"),
    (rig({"name": "x" * (MAX_NAME_CHARS + 1), "type": "int"}), "field name",
     "x" * (MAX_NAME_CHARS + 1)),
    (rig({"name": "inner", "type": {"type": "record", "name": "In", "fields": [
        {"name": "m", "type": {"type": "map", "values": {"type": "record", "name": "V",
                                                          "fields": [{"name": "a/b",
                                                                      "type": "int"}]}}}]}}),
     "field name", "inner.m{}.a/b"),
    (rig({"name": "receive_time", "type": "long"}), "reserved name", "receive_time"),
    (rig({"name": "receive_time_ns", "type": "long"}), "reserved name", "receive_time_ns"),
    (rig({"name": "time_iso", "type": "string"}), "reserved name", "time_iso"),
    (rig({"name": "t", "type": "long"}, {"name": "t_ns", "type": "long"}, abscissa="t"),
     "reserved name", "t_ns"),
    (rig({"name": "doc", "type": "string", "doc": "x" * MAX_SCHEMA_BYTES}), "schema size", ""),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_each_limit_is_refused_with_its_rule_and_field(schema: dict, rule: str, path: str
                                                       ) -> None:
    message = limits_of(schema)
    where = f"field {path!r}"[:-1] if path else "the record"  # the path, or how it starts
    assert message.startswith(f"schema <test>: {where}") and f": {rule}: " in message, message


def test_names_the_exports_own_are_free_inside_records_and_beside_another_abscissa() -> None:
    channel = channel_from_schema(rig(
        {"name": "t", "type": "long"}, {"name": "time_ns", "type": "long"},
        {"name": "inner", "type": {"type": "record", "name": "In", "fields": [
            {"name": "receive_time", "type": "long"}]}},
        {"name": "température", "type": "double"}, abscissa="t"), limits=True)
    assert [s.name for s in channel.signals] == ["time", "time_ns", "inner", "température"]


def test_a_schema_of_a_mebibyte_registers(tmp_path: Path) -> None:
    fields = [{"name": f"s{i}", "type": "double", "doc": "d" * 1000} for i in range(999)]
    schema = rig(*fields)
    size = len(json.dumps(schema, separators=(",", ":")))
    assert MAX_SCHEMA_BYTES - 30_000 < size <= MAX_SCHEMA_BYTES
    channel = store_schema(tmp_path, schema, Registry())
    assert len(channel.signals) == 999 and load_file(tmp_path / "rig.avsc").name == "rig"


def test_the_limits_hold_for_the_channels_directory_too(tmp_path: Path) -> None:
    """A file that breaks a limit is skipped and listed, the others load; a huge file is
    not even read."""
    (tmp_path / "motor.avsc").write_text((SCHEMAS / "motor.avsc").read_text())
    _write(tmp_path, "deep", json.dumps(rig({"name": "x", "type": nested("array", 700)})
                                        | {"name": "deep"}))
    _write(tmp_path, "brackets", "[" * 100_000 + "]" * 100_000)
    _write(tmp_path, "reserved", json.dumps(rig({"name": "receive_time", "type": "long"})
                                            | {"name": "reserved"}))
    with (tmp_path / "huge.avsc").open("wb") as f:
        f.truncate(MAX_SCHEMA_FILE_BYTES + 1)  # sparse: nothing to read if it were read
    registry, errors = Registry.load_dir(tmp_path)
    assert registry.names() == ["motor"]
    found = {str(e).split(":")[0].split("/")[-1]: str(e) for e in errors}
    assert sorted(found) == ["brackets.avsc", "deep.avsc", "huge.avsc", "reserved.avsc"]
    assert "nesting depth" in found["deep.avsc"] and "nesting depth" in found["brackets.avsc"]
    assert "schema size: the file has" in found["huge.avsc"]
    assert "reserved name" in found["reserved.avsc"]


def test_a_cache_file_schema_is_read_without_the_limits() -> None:
    """Data cached before a limit existed stays readable (issue 20 renames on export)."""
    old = rig({"name": "receive_time", "type": "long"})
    assert channel_from_schema(old).signals[0].name == "receive_time"


# -- registering: the same, another, replace -------------------------------------------

def test_registering_another_schema_under_a_name_needs_replace(tmp_path: Path) -> None:
    first = rig({"name": "p", "type": "double"})
    second = rig({"name": "p", "type": "double", "unit": "bar"})  # same fingerprint, edited
    store_schema(tmp_path, first, Registry())
    registry, _ = Registry.load_dir(tmp_path)
    with pytest.raises(ConflictError) as info:
        store_schema(tmp_path, second, registry)
    assert info.value.http_status == 409 and str(tmp_path) not in str(info.value)
    assert store_schema(tmp_path, second, registry, replace=True).signal("p").unit == "bar"
    (tmp_path / "rig.avsc").write_text("{broken")  # a file of that name, unreadable
    with pytest.raises(ConflictError):
        store_schema(tmp_path, first, Registry.load_dir(tmp_path)[0])
    with pytest.raises(SchemaError, match="reserved name"):  # limits before conflicts
        store_schema(tmp_path, rig({"name": "receive_time", "type": "long"}), registry,
                     replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rig.avsc"]  # no temporary left


@pytest.mark.parametrize(("body", "expected"), [
    ({"type": "record", "name": "rig"}, ({"type": "record", "name": "rig"}, False)),
    ({"schema": {"type": "record"}, "replace": True}, ({"type": "record"}, True)),
    ({"schema": {"type": "record"}}, ({"type": "record"}, False)),
    ([1], ([1], False)),  # not a registration: the schema check says what is wrong
])
def test_a_registration_body_is_the_schema_or_schema_and_replace(body: object,
                                                                 expected: object) -> None:
    assert registration(body) == expected


@pytest.mark.parametrize(("body", "message"), [
    ({"schema": {}, "replace": "yes"}, "replace must be true or false"),
    ({"schema": {}, "force": True}, "unknown key(s) ['force']"),
])
def test_a_bad_registration_body_is_refused(body: object, message: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)):
        registration(body)


def test_channels_add_replaces_only_when_told(tmp_path: Path, capsys: pytest.CaptureFixture
                                             ) -> None:
    from speeddata import cli

    folder = tmp_path / "schemas"
    folder.mkdir()
    avsc = tmp_path / "rig.avsc"
    avsc.write_text(json.dumps(rig({"name": "p", "type": "double"})))
    add = ["channels", "add", str(avsc), "--channels-dir", str(folder)]
    assert cli.main(add) == 0 and cli.main(add) == 0  # the same again: fine
    avsc.write_text(json.dumps(rig({"name": "p", "type": "float"})))
    assert cli.main(add) != 0
    assert "exists with another schema" in capsys.readouterr().err
    assert load_file(folder / "rig.avsc").schema["fields"][1]["type"] == "double"
    assert cli.main([*add, "--replace"]) == 0
    assert load_file(folder / "rig.avsc").schema["fields"][1]["type"] == "float"


def test_the_reserved_names_are_the_columns_the_exports_add(tmp_path: Path) -> None:
    """If the pivot adds a column, this says RESERVED_NAMES must learn it."""
    import csv

    import h5py
    import pyarrow.parquet as pq

    from speeddata.pivot import pivot
    from speeddata.schemacheck import RESERVED_NAMES, RESERVED_TIME_SUFFIXES
    from tests.test_pivot import REGISTRY, T0, S, fill

    fill(tmp_path / "cache", seconds=2)
    motor = REGISTRY["motor"]
    own = {motor.time_field, *(s.name for s in motor.signals)}
    reserved = {*RESERVED_NAMES, *(motor.time_field + s for s in RESERVED_TIME_SUFFIXES)}
    added = set()
    for kind, out in (("hdf5", tmp_path / "x.h5"), ("csv", tmp_path / "c"),
                      ("parquet", tmp_path / "p")):
        pivot(tmp_path / "cache", out, T0, T0 + 3 * S, registry=REGISTRY, export_format=kind,
              channels=["motor"])
        if kind == "hdf5":
            with h5py.File(out) as h5:
                columns = set(h5["motor"])
        elif kind == "csv":
            with (out / "motor.csv").open() as f:
                columns = set(next(csv.reader(f)))
        else:
            columns = set(pq.read_schema(out / "motor.parquet").names)
        assert own - {motor.time_field} <= columns, kind
        added |= columns - own
    assert added <= reserved and added >= set(RESERVED_NAMES)


@settings(max_examples=60, deadline=None)
@given(schema=record_schemas(max_depth=3), wrap=st.integers(0, 3))
def test_random_schemas_within_the_limits_register_and_deeper_ones_do_not(
        schema: dict, wrap: int) -> None:
    """Any record schema of records, arrays, maps, unions, enums, fixed and primitives
    nested a few levels is taken; put under MAX_DEPTH arrays more, it is refused."""
    channel = channel_from_schema(schema, limits=True)
    assert [s.name for s in channel.signals] == [f["name"] for f in schema["fields"][1:]]
    deep: object = schema["fields"][1]["type"]
    for _ in range(MAX_DEPTH + wrap):
        deep = {"type": "array", "items": deep}
    fields = [*schema["fields"][:1], {**schema["fields"][1], "type": deep},
              *schema["fields"][2:]]
    assert "nesting depth" in limits_of({**schema, "fields": fields})


@pytest.mark.parametrize("name", ['a"b', "a\\b"])
def test_a_name_the_canonical_form_cannot_hold_is_a_schema_error(name: str) -> None:
    schema = {"type": "record", "name": "t",
              "fields": [{"name": "time", "type": "long"}, {"name": name, "type": "double"}]}
    with pytest.raises(SchemaError, match="canonical form"):
        channel_from_schema(schema, "t.avsc", limits=True)
