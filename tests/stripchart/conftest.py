from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    RelayProcess,
    ServeProcess,
    relay_settings,
    start_relay,
    start_serve,
)


@dataclass
class Stack:
    relay: RelayProcess
    serve: ServeProcess
    tmp: Path

    @property
    def ws_url(self) -> str:
        return self.serve.url.replace("http://", "ws://") + "ws"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A real relay and a real stripchart server sharing fresh multicast groups."""
    relay = start_relay(tmp_path, relay_settings(tmp_path))
    serve = start_serve(tmp_path, relay.config_path)
    running = Stack(relay, serve, tmp_path)
    yield running
    running.serve.stop()  # a test may have replaced it (a server restart)
    running.relay.stop()
