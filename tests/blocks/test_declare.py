"""Declaring blocks: the output schema derived, bad declarations refused with what to do,
block files loaded by path."""

from __future__ import annotations

import pytest

from speeddata.blocks import BlockError, block, load_file
from speeddata.schemas import channel_from_schema


def test_the_output_schema_is_time_and_a_double_per_signal_with_units() -> None:
    @block(inputs=["motor", "env"], output="power", doc="electric power",
           signals={"p": {"unit": "W", "doc": "current times voltage",
                          "limits": {"warn": [None, 500]}}, "q": "var"})
    def power(batch):
        return {}

    spec = power.__block__
    assert spec.inputs == ("motor", "env") and spec.name == "power"
    channel = channel_from_schema(spec.schema(), limits=True)
    assert channel.name == "power" and channel.time_field == "time"
    assert [(s.name, s.avro_type, s.unit) for s in channel.signals] == [
        ("p", "double", "W"), ("q", "double", "var")]
    assert channel.signal("p").doc == "current times voltage"
    assert channel.signal("p").limits.warn == (float("-inf"), 500.0)
    assert spec.schema()["doc"] == "electric power"
    assert power({"time": []}) == {}  # still a plain function, testable by a call


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"inputs": [], "output": "x", "signals": {"a": ""}}, "one or more channel"),
    ({"inputs": ["m", "m"], "output": "x", "signals": {"a": ""}}, "each channel once"),
    ({"inputs": ["time"], "output": "x", "signals": {"a": ""}}, "each channel once"),
    ({"inputs": ["m"], "output": "m", "signals": {"a": ""}}, "one of its inputs"),
    ({"inputs": ["m"], "output": "9x", "signals": {"a": ""}}, "a channel name"),
    ({"inputs": ["m"], "output": "x", "signals": {}}, "at least one output signal"),
    ({"inputs": ["m"], "output": "x", "signals": {"time": ""}}, "not 'time'"),
    ({"inputs": ["m"], "output": "x", "signals": {"a": 3}}, "unit as a string"),
    ({"inputs": ["m"], "output": "x", "signals": {"a": ""}, "nan": "zero"}, "nan='zero'"),
    ({"inputs": ["m"], "output": "x", "signals": {"receive_time": ""}}, "reserved name"),
    ({"inputs": ["m"], "output": "x", "signals": {"a": {"limits": {"warn": [2, 1]}}}},
     "low 2.0 above its high"),
])
def test_bad_declarations_are_refused_naming_the_block(kwargs, says) -> None:
    def f(batch):
        return None

    with pytest.raises(BlockError, match=r"^block f: ") as caught:
        block(**kwargs)(f)
    assert says in str(caught.value), str(caught.value)


def test_block_files_load_by_path(tmp_path) -> None:
    path = tmp_path / "two.py"
    path.write_text("from speeddata.blocks import block\n"
                    "@block(inputs='motor', output='a', signals=['x'])\n"
                    "def first(batch): return {'x': batch['time'] * 0}\n"
                    "@block(inputs=['a'], output='b', signals=['y'])\n"
                    "def second(batch): return {'y': batch['a']['x'] + 1}\n")
    assert [b.name for b in load_file(path)] == ["first", "second"]
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(BlockError, match="declares no block"):
        load_file(tmp_path / "none.py")
    (tmp_path / "broken.py").write_text("import nothing_of_that_name\n")
    with pytest.raises(BlockError, match="cannot be loaded: ModuleNotFoundError"):
        load_file(tmp_path / "broken.py")
    with pytest.raises(BlockError, match="no such file"):
        load_file(tmp_path / "absent.py")


def test_the_readme_block_file_loads_and_computes(tmp_path) -> None:
    import numpy as np

    from tests.helpers import PROJECT

    readme = (PROJECT / "README.md").read_text()
    section = readme[readme.index("## Processing blocks"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "myblock.py").write_text(code)
    double, motor_env = load_file(tmp_path / "myblock.py")
    motor = {"current": np.array([1.0, 2.0]), "voltage": np.array([48.0, 50.0])}
    batch = {"time": np.array([1, 2]), "motor": motor,
             "env": {"humidity": np.array([np.nan, 40.0])}}
    assert double.function(batch)["current2"].tolist() == [2.0, 4.0]
    assert motor_env.function(batch)["power"].tolist() == [48.0, 100.0]
    assert motor_env.nan == "drop" and motor_env.schema()["fields"][1]["unit"] == "W"
