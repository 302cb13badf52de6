"""Limits from schemas, and which signals are out of them now, since when."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speeddata.errors import SchemaError
from speeddata.schemas import Limits, Registry, channel_from_schema, load_file, parse_limits
from speeddata.stripchart.alarms import Alarms
from tests.helpers import SCHEMAS


def channel_with(limits: object, field_type: str = "double"):
    return channel_from_schema({"type": "record", "name": "rig", "fields": [
        {"name": "time", "type": "long"},
        {"name": "pressure", "type": field_type, "limits": limits}]})


def test_limits_are_read_from_the_schema() -> None:
    signal = channel_with({"warn": [1, 9], "alarm": [None, 10]}).signal("pressure")
    assert signal.limits == Limits(warn=(1.0, 9.0), alarm=(-math.inf, 10.0))
    assert signal.limits.as_json() == {"warn": [1.0, 9.0], "alarm": [None, 10.0]}
    assert [signal.limits.level(v) for v in (5, 0.5, 9.5, 10.5, -100, float("nan"))] == [
        "", "warn", "warn", "alarm", "warn", ""]
    demo = load_file(SCHEMAS / "motor.avsc").signal("temperature")
    assert demo.limits is not None and demo.limits.level(64.0) == "warn"


@pytest.mark.parametrize(("limits", "message"), [
    ({"warn": [5, 1]}, "low 5.0 above its high 1.0"),
    ({"warn": [1]}, "must be \\[lo, hi\\]"),
    ({"warn": ["a", 2]}, "must be \\[lo, hi\\]"),
    ({"warn": [float("nan"), 2]}, "must be \\[lo, hi\\]"),
    ({"danger": [1, 2]}, "limits must be"),
    ([1, 2], "limits must be"),
])
def test_bad_limits_name_the_field(limits: object, message: str) -> None:
    with pytest.raises(SchemaError, match=f"field 'pressure'.*{message}"):
        channel_with(limits)


def test_limits_on_a_text_field_are_refused() -> None:
    with pytest.raises(SchemaError, match="limits are for numeric fields"):
        channel_with({"warn": [1, 2]}, "string")
    assert parse_limits({"alarm": [0, None]}, "x").alarm == (0.0, math.inf)


def test_alarms_track_the_newest_level_and_since_when() -> None:
    registry = Registry()
    registry.add(channel_with({"warn": [None, 5], "alarm": [None, 8]}))
    alarms = Alarms(registry)
    ms = 10**6
    alarms.update("rig.pressure", np.array([1, 2, 3]) * ms, np.array([1.0, 2.0, 3.0]))
    assert alarms.active() == []
    alarms.update("rig.pressure", np.array([5, 4, 6]) * ms, np.array([9.0, 6.0, 9.5]))
    (now,) = alarms.active()  # sorted by time: 4 ms warn, 5 and 6 ms alarm
    assert (now["level"], now["since_ms"], now["value"]) == ("alarm", 5.0, 9.5)
    alarms.update("rig.pressure", np.array([7]) * ms, np.array([8.5]))
    assert alarms.active()[0]["since_ms"] == 5.0  # the same run goes on
    alarms.update("rig.pressure", np.array([8, 9]) * ms, np.array([6.0, 7.0]))
    assert [(a["level"], a["since_ms"]) for a in alarms.active()] == [("warn", 8.0)]
    alarms.update("rig.pressure", np.array([10]) * ms, np.array([1.0]))
    assert alarms.active() == []
    alarms.update("rig.other", np.array([1]), np.array([100.0]))  # no limits: ignored
