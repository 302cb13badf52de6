"""The notebook widgets' Python side (speeddata.notebook): what their state holds (never
the token), the times a Range takes, the example notebook saved without outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.helpers import PROJECT

notebook = pytest.importorskip("speeddata.notebook",
                               reason="the notebook extra is missing: ./install --dev")


def test_the_widget_state_holds_the_address_but_never_the_token() -> None:
    chart = notebook.Stripchart(url="http://10.0.0.2:8050/?token=secret-token-1",
                                signals="motor.speed motor.torque", seconds=10)
    state = json.dumps(chart.get_state(), default=str)
    assert "secret-token-1" not in state
    assert chart.url == "http://10.0.0.2:8050/" and chart.signals == ["motor.speed",
                                                                     "motor.torque"]
    assert chart._server.token == "secret-token-1" and chart.seconds == 10
    given = notebook.Range(url="http://h:1/", signals=["a.b"], start=10**18,
                           end=10**18 + 5 * 10**9, token="secret-token-2")
    assert "secret-token-2" not in json.dumps(given.get_state(), default=str)
    assert given.view == [1e12, 1e12 + 5000] and given.seconds == 5
    chart.close()
    given.close()


def test_a_range_takes_the_clis_times_datetimes_and_ns() -> None:
    now = 1_800_000_000 * 10**9
    assert notebook.moment("-10m", now, "start") == now - 600 * 10**9
    assert notebook.moment("2027-01-15T08:00:00Z", now, "start") == notebook.moment(
        datetime(2027, 1, 15, 8, tzinfo=UTC), now, "start")
    assert notebook.moment(datetime(2027, 1, 15, 8), now, "x") == notebook.moment(
        "2027-01-15T08:00:00", now, "x")  # naive: UTC, as the CLI reads it
    with pytest.raises(notebook.kb.BridgeError, match="write a time"):
        notebook.moment(1.5, now, "start")
    with pytest.raises(notebook.kb.BridgeError, match="not after start"):
        notebook.Range(url="http://h:1/", signals=["a.b"], start="-1m", end="-2m", token="t")
    with pytest.raises(notebook.kb.BridgeError, match="signals"):
        notebook.Stripchart(url="http://h:1/", signals=[], token="t")


def test_the_example_notebook_uses_both_widgets_and_saves_no_outputs() -> None:
    saved = json.loads((PROJECT / "examples" / "stripchart.ipynb").read_text())
    code = [c for c in saved["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    text = "".join("".join(c["source"]) for c in code)
    assert "Stripchart(" in text and "Range(" in text
    assert "widgets" not in saved["metadata"]  # no widget state either
