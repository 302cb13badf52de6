"""The stop flag every long-running command polls: set by SIGTERM and by SIGINT."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from speeddata.shutdown import SIGNALS, StopFlag, on_stop_signal, stop_flag


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_either_signal_sets_the_flag(handlers: None, sig: signal.Signals) -> None:
    stopping = stop_flag()
    assert not stopping()
    os.kill(os.getpid(), sig)  # handled before kill returns, in this (the main) thread
    assert stopping()


def test_a_stop_function_is_called_on_the_signal(handlers: None) -> None:
    called = []
    on_stop_signal(lambda: called.append(True))
    os.kill(os.getpid(), signal.SIGTERM)
    assert called == [True]
    flag = StopFlag()
    flag.set()
    assert flag()
