"""POST /api/channels in process (no sockets, no relay): the limits answer 400 naming
the rule, another schema under a registered name 409 unless replace, the same schema
again 201 with nothing written."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from speeddata import config
from speeddata.config import write_file
from tests.helpers import SCHEMAS

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note on httpx versions
    from starlette.testclient import TestClient

RIG = {"type": "record", "name": "rig", "fields": [
    {"name": "time", "type": "long"}, {"name": "pressure", "type": "double"}]}
PORT = 40_102  # never bound: the client calls the app in process


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    from speeddata.stripchart.app import create_app

    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    settings = {  # groups of this helper's own range, never joined (no lifespan)
        "channels": {"dir": str(schemas), "legacy": []}, "cache": {"dir": str(tmp_path / "c")},
        "relay": {"host": "127.0.0.1", "port": 0},
        "multicast": {"full": "239.255.102.11:40111", "decimated": "239.255.102.12:40112",
                      "control": "239.255.102.13:40113", "interface": "127.0.0.1"},
        "web": {"host": "127.0.0.1", "port": PORT}, "exports": {"dir": str(tmp_path / "e")}}
    app = create_app(config.build(write_file(tmp_path / "serve.toml", settings)))
    yield TestClient(app, base_url=f"http://127.0.0.1:{PORT}"), schemas


def test_register_again_replace_and_refuse(client: tuple[TestClient, Path]) -> None:
    http, schemas = client
    assert http.post("/api/channels", json=RIG).status_code == 201
    written = (schemas / "rig.avsc").stat().st_mtime_ns
    assert http.post("/api/channels", json=RIG).status_code == 201  # the same: idempotent
    assert (schemas / "rig.avsc").stat().st_mtime_ns == written
    edited = {**RIG, "fields": [*RIG["fields"], {"name": "flow", "type": "float"}]}
    answer = http.post("/api/channels", json=edited)
    assert answer.status_code == 409 and "say replace" in answer.json()["detail"]
    assert str(schemas) not in answer.json()["detail"]
    names = [c["name"] for c in http.get("/api/channels").json()["channels"]]
    assert "rig" in names  # the running channel is kept
    answer = http.post("/api/channels", json={"schema": edited, "replace": True})
    assert answer.status_code == 201
    assert [s["name"] for s in answer.json()["signals"]] == ["pressure", "flow"]
    answer = http.post("/api/channels", json={"schema": edited, "replace": "yes"})
    assert answer.status_code == 400 and "replace must be true or false" in answer.text


@pytest.mark.parametrize(("schema", "detail"), [
    ({**RIG, "fields": [*RIG["fields"], {"name": "receive_time", "type": "long"}]},
     "field 'receive_time': reserved name"),
    ({**RIG, "fields": [*RIG["fields"], {"name": ".", "type": "long"}]},
     "field '.': field name"),
    ({**RIG, "fields": [*RIG["fields"], {"name": "x", "type": {"type": "array", "items": {
        "type": "array", "items": {"type": "array", "items": "long"}}}}]}, None),
])
def test_limits_answer_400_naming_rule_and_field(client: tuple[TestClient, Path],
                                                 schema: dict, detail: str | None) -> None:
    http, schemas = client
    answer = http.post("/api/channels", json=schema)
    if detail is None:  # within the limits
        assert answer.status_code == 201
        return
    assert answer.status_code == 400 and detail in answer.json()["detail"]
    assert not (schemas / "rig.avsc").exists()


def test_the_crash_switch_of_issue_19_is_refused(client: tuple[TestClient, Path]) -> None:
    http, schemas = client
    deep: object = "long"
    for _ in range(700):
        deep = {"type": "array", "items": deep}
    answer = http.post("/api/channels", json={**RIG, "fields": [
        *RIG["fields"], {"name": "x", "type": deep}]})
    assert answer.status_code == 400 and "field 'x': nesting depth" in answer.json()["detail"]
    text = '{"type": "record", "name": "rig", "fields": ' + "[" * 100_000 + "]" * 100_000 + "}"
    answer = http.post("/api/channels", content=text,
                       headers={"content-type": "application/json"})
    assert answer.status_code == 400  # a body nested too deep to parse: no 500
    assert not (schemas / "rig.avsc").exists()


def test_a_schema_of_about_a_mebibyte_registers_over_the_api(client: tuple[TestClient, Path]
                                                             ) -> None:
    http, schemas = client
    fields = [{"name": f"s{i}", "type": "double", "doc": "d" * 950} for i in range(999)]
    text = json.dumps({**RIG, "fields": [RIG["fields"][0], *fields]}, separators=(",", ":"))
    assert 950_000 < len(text) < 2**20  # the API takes bodies of 1 MiB
    answer = http.post("/api/channels", content=text,
                       headers={"content-type": "application/json"})
    assert answer.status_code == 201 and len(answer.json()["signals"]) == 999
    assert (schemas / "rig.avsc").exists()
