"""The relay's loop in process (sockets on port 0, groups of 239.255.104.0/24): slow
jobs go to the worker, a new registry is taken between two batches, a control group
that cannot be joined is logged and the relay goes on, the exit code follows the type."""

from __future__ import annotations

import json
import logging
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from speeddata import cli, multicast
from speeddata.config import build, write_file
from speeddata.errors import (
    CacheError,
    ConfigError,
    NetworkError,
    NotFoundError,
    RuntimeFailure,
    SchemaError,
    SpeeddataError,
)
from speeddata.relay import server
from speeddata.relay.server import Relay
from speeddata.supervisor import Child, Supervisor
from tests.helpers import SCHEMAS, wait_until
from tests.relay.test_core import motor


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp: Path, channels: Path = SCHEMAS, **multicast_settings: str):
    settings = {
        "channels": {"dir": str(channels), "legacy": []},
        "cache": {"dir": str(tmp / "cache")},
        "relay": {"host": "127.0.0.1", "port": 0},
        "multicast": {"full": f"239.255.104.21:{free_udp_port()}", "decimated": "",
                      "control": f"239.255.104.22:{free_udp_port()}",
                      "interface": "127.0.0.1", **multicast_settings},
    }
    return build(write_file(tmp / "relay.toml", settings))


def test_the_loop_queues_retention_and_status_for_the_worker(tmp_path: Path) -> None:
    relay = Relay(config(tmp_path))
    try:
        scans = []
        relay.enforce_retention = lambda *a: scans.append(a)  # type: ignore[method-assign]
        relay.on_timer("retention", 0.0)
        relay.on_timer("status", 0.0)
        relay.on_timer("retention", 0.0)  # one waits already: skipped, not queued twice
        assert scans == []  # nothing slow ran on the loop
        assert relay.jobs.pending() == ["retention", "status"]
        assert relay.jobs.statistics()["skipped"] == {"retention": 1}
        while relay.jobs.run_one():
            pass
        assert len(scans) == 1
        assert relay.statistics().jobs.submitted == {"retention": 1, "status": 1}
    finally:
        for io, _ in relay.receivers:
            io.sock.close()


def test_retention_scans_only_when_the_running_total_nears_the_quota(tmp_path: Path) -> None:
    relay = Relay(config(tmp_path))
    try:
        relay.quota = 10_000
        relay.enforce_retention(set(), 0)
        relay._write_status(relay.statistics())  # its own status file is no change
        relay.enforce_retention(set(), 1_000)  # under quota and nothing else changed
        assert relay.retention_gate.statistics() == {
            "estimated_bytes": 1_000, "scans": 1, "scans_skipped": 1}
        relay.enforce_retention(set(), 9_500)  # near it: scanned
        assert relay.retention_gate.scans == 2
    finally:
        for io, _ in relay.receivers:
            io.sock.close()


def test_a_schema_is_parsed_on_the_worker_and_taken_between_two_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    channels = tmp_path / "channels"
    channels.mkdir()
    (channels / "motor.avsc").write_text((SCHEMAS / "motor.avsc").read_text())
    relay = Relay(config(tmp_path, channels))
    try:
        rig = {"type": "record", "name": "rig", "fields": [  # about 1 MiB, within the limits
            {"name": "time", "type": "long"},
            *({"name": f"s{i}", "type": "double", "doc": "x" * 1000} for i in range(990))]}
        (channels / "rig.avsc").write_text(json.dumps(rig))
        relay.load_channels()  # the worker's part: the loop still routes by the old one
        assert "rig" not in relay.registry and relay.core.counts["registry_swaps"] == 0
        relay.take_registry()  # the loop's part: one reference
        assert "rig" in relay.registry and relay.router.registry is relay.registry
        relay.load_channels()  # nothing changed since: nothing parsed
        assert relay._new_registry is None
        parsed = []
        real = server.load_file
        monkeypatch.setattr(server, "load_file",
                            lambda path: parsed.append(path.name) or real(path))
        # another channel's registration parses that one only, not the 1 MiB one again
        (channels / "env.avsc").write_text((SCHEMAS / "env.avsc").read_text())
        relay.load_channels()
        assert parsed == ["env.avsc"]
        relay.take_registry()
        assert {c.name for c in relay.registry} == {"motor", "rig", "env"}
    finally:
        for io, _ in relay.receivers:
            io.sock.close()


def test_a_control_group_that_cannot_be_joined_is_logged_and_the_relay_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_group(*args: object, **kwargs: object) -> socket.socket:
        raise NetworkError("cannot join multicast group 239.255.104.22 on 127.0.0.1: "
                           "No such device")

    monkeypatch.setattr(multicast, "listener", no_group)
    with caplog.at_level(logging.WARNING, "speeddata.relay"):
        relay = Relay(config(tmp_path))
    try:
        assert relay.control is not None and relay.control.sock is None  # no thread to run
        assert "cannot join the control group" in caplog.text
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(bytes(motor(1)), ("127.0.0.1", relay.port))
        io, port = relay.receivers[0]
        wait_until(lambda: relay.handle(io, port), what="the datagram")
        assert relay.router.counters["motor"].datagrams == 1
    finally:
        for io, _ in relay.receivers:
            io.sock.close()


def test_joining_a_group_on_an_address_not_of_this_host_is_a_network_error() -> None:
    from speeddata.config import Group

    with pytest.raises(NetworkError, match="cannot join multicast group") as caught:
        multicast.listener(Group("239.255.104.23", free_udp_port()), "192.0.2.1")
    assert isinstance(caught.value, OSError) and caught.value.exit_code == 1


@pytest.mark.parametrize(("error", "code"), [
    (ConfigError("[relay] port: not a number"), 2),
    (SchemaError("schema x.avsc: field 'a' has unknown type"), 2),
    (NotFoundError("no tag named 'nope'"), 2),
    (SpeeddataError("--count must be 1 or more"), 2),
    (RuntimeFailure("the store went away"), 1),
    (CacheError("cache file x.avro cannot be written"), 1),
    (NetworkError("cannot join multicast group"), 1),
])
def test_the_exit_code_comes_from_the_error_type(monkeypatch: pytest.MonkeyPatch,
                                                 error: SpeeddataError, code: int) -> None:
    def fails(args: object) -> int:
        raise error

    monkeypatch.setitem(cli.COMMANDS, "config", replace(cli.COMMANDS["config"], run=fails))
    assert cli.main(["config"]) == code


def test_the_supervisor_restarts_a_runtime_failure_and_stops_on_a_usage_error(
        tmp_path: Path) -> None:
    import threading

    flag = tmp_path / "failed-once"
    # exit 1 the first time (a runtime failure), then 2 (a configuration error)
    script = (f"import pathlib, sys; p = pathlib.Path({str(flag)!r}); "
              "sys.exit(2) if p.exists() else (p.touch(), sys.exit(1))")
    child = Child("flaky", [sys.executable, "-c", script])
    supervisor = Supervisor([child])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))
    thread.start()
    thread.join(60)
    assert result == [2] and child.restarts == 1
