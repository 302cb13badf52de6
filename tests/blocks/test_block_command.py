"""``speeddata block``: choosing a block of a file, the schema it prints, errors that
say what to do (exit 2), without starting anything."""

from __future__ import annotations

import json

from speeddata import cli

TWO = ("from speeddata.blocks import block\n"
       "@block(inputs='motor', output='a', signals={'x': 'V'})\n"
       "def first(batch): return {'x': batch['motor']['current']}\n"
       "@block(inputs=['a'], output='b', signals=['y'])\n"
       "def second(batch): return {'y': batch['a']['x'] + 1}\n")


def test_schema_prints_the_chosen_blocks_output_schema(tmp_path, capsys) -> None:
    (tmp_path / "two.py").write_text(TWO)
    assert cli.main(["block", "schema", str(tmp_path / "two.py"), "--block", "first"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["name"] == "a" and schema["fields"][1] == {"name": "x", "type": "double",
                                                            "unit": "V"}


def test_a_file_of_several_blocks_needs_block_and_a_wrong_name_is_named(tmp_path,
                                                                       capsys) -> None:
    (tmp_path / "two.py").write_text(TWO)
    assert cli.main(["block", "run", str(tmp_path / "two.py")]) == 2
    assert "declares 2 blocks (first, second): choose one with --block" in (
        capsys.readouterr().err)
    assert cli.main(["block", "run", str(tmp_path / "two.py"), "--block", "third"]) == 2
    assert "no block 'third' (it has first, second)" in capsys.readouterr().err
    (tmp_path / "bad.py").write_text("from speeddata.blocks import block\n"
                                     "@block(inputs=['motor'], output='motor', signals=['x'])\n"
                                     "def f(batch): pass\n")
    assert cli.main(["block", "run", str(tmp_path / "bad.py")]) == 2
    assert "block f: output 'motor' is one of its inputs" in capsys.readouterr().err
