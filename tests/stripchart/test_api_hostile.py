"""The REST API in process (Starlette's TestClient, the app's lifespan on its own
groups and data directory): every hostile input of the table gets a 4xx that says why,
and the tag store survives it."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from speeddata import config as configuration
from speeddata.config import write_file
from speeddata.stripchart.app import create_app
from tests.helpers import SCHEMAS, relay_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note on httpx versions
    from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp: Path = tmp_path_factory.mktemp("hostile")
    schemas = tmp / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    settings = relay_settings(tmp, channels={"dir": str(schemas)})
    cfg = configuration.build(write_file(tmp / "serve.toml", settings))
    with TestClient(create_app(cfg), base_url=f"http://127.0.0.1:{cfg.web.port}") as client:
        assert client.post("/api/tags", json={"name": "kept", "start": "-1m"}).status_code == 201
        yield client


@pytest.mark.parametrize(("method", "path", "body", "expected"), [
    ("POST", "/api/tags", {"name": "x", "start": "-999999999d"}, 400),
    ("POST", "/api/tags", {"name": "x", "start": "0001-01-01T00:00:00Z"}, 400),
    ("POST", "/api/tags", {"name": "x", "start": "9999-12-31T00:00:00Z"}, 400),
    ("POST", "/api/tags", {"name": "evil\n"}, 400),
    ("POST", "/api/tags", {"name": "x" * 10_000}, 422),
    ("POST", "/api/tags", {"name": "x", "note": "n" * 5_000}, 422),  # notes: 4096 at most
    ("POST", "/api/tags", {"name": "x", "start": "-1m", "end": "-2m"}, 400),
    ("POST", "/api/tags/nosuch/stop", None, 404),
    ("DELETE", "/api/tags/nosuch", None, 404),
    ("DELETE", "/api/tags/" + "y" * 300, None, 400),
    ("POST", "/api/pivot", {"start": "+999999999d"}, 400),
    ("POST", "/api/pivot", {"start": "0001-01-01T00:00:00Z"}, 400),
    ("POST", "/api/pivot", {"start": "-1m", "end": "-2m"}, 400),
    ("POST", "/api/pivot", {"start": "-1m", "compression": "zstd"}, 422),
    ("POST", "/api/pivot", {"start": "-1m", "decimate": 10**30}, 422),
    ("POST", "/api/pivot", {"tag": "nosuch"}, 404),
    ("POST", "/api/pivot", {}, 400),
    ("GET", "/api/pivot/nosuch", None, 404),
    ("DELETE", "/api/pivot/nosuch", None, 404),
    ("GET", "/api/exports/" + "z" * 300 + ".h5", None, 404),
    ("DELETE", "/api/exports/" + "z" * 300 + ".h5", None, 404),
    ("GET", "/api/exports/run.h5.zip", None, 404),  # .zip names a directory export only
    ("DELETE", "/api/exports/.hidden.zip", None, 404),
    ("POST", "/api/channels", {"type": "record", "name": "x", "fields": "abc"}, 400),
    ("POST", "/api/channels", {"type": "record", "name": "../x",
                               "fields": [{"name": "time", "type": "long"}]}, 400),
    ("DELETE", "/api/channels/nosuch", None, 404),
    ("GET", "/api/range?signal=motor.speed&start_ms=0&end_ms=1e300", None, 400),
    # decoded into path segments, these match no API route: the static files say 404/405
    ("DELETE", "/api/exports/..%2Fcache%2Ftags.sqlite", None, (404, 405)),
    ("GET", "/api/exports/%2Fetc%2Fpasswd", None, (404, 405)),
])
def test_hostile_input_gets_a_clear_4xx(api: TestClient, method: str, path: str,
                                        body: object, expected: int | tuple[int, ...]) -> None:
    answer = api.request(method, path, json=body)
    assert answer.status_code in (expected if isinstance(expected, tuple) else (expected,)), (
        answer.text)
    assert answer.json().get("detail")
    cfg = api.app.state.server.config  # type: ignore[attr-defined]
    assert (cfg.cache.dir / "tags.sqlite").exists()
    assert answer.status_code < 500


