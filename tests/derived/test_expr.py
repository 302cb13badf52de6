"""The expression compiler: known truth for each operator; hostile text refused with the
character position, before any cost grows with it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from speeddata.derived.expr import MAX_CHARS, Batch, compile_expression
from speeddata.errors import DerivedError
from tests.derived.common import REGISTRY, sines


def kinds(name: str) -> dict[str, str] | None:
    from speeddata.derived.live import _kinds

    return _kinds(REGISTRY, name)


def run(text: str, n: int = 50) -> np.ndarray:
    columns = sines(n)
    program = compile_expression(text, "test", kinds)
    return program.run(Batch(columns["time"], columns))


def test_arithmetic_and_functions_equal_the_numpy_formula_to_the_last_bit() -> None:
    c = sines(50)
    a, b, w = c["a"], c["b"], c["word"]
    cases = {
        "pair.a - pair.b": a - b,
        "pair.a * pair.b / 2 + 1": a * b / 2 + 1,
        "pair.a ** 2": a ** 2.0,
        "pair.a // 0.5 + pair.a % 0.5": a // 0.5 + a % 0.5,
        "sqrt(abs(pair.a)) + log10(2 + pair.b) + exp(pair.b) - log(3 + pair.a)":
            np.sqrt(np.abs(a)) + np.log10(2 + b) + np.exp(b) - np.log(3 + a),
        "sin(pair.a) + cos(pair.b) + tan(pair.b) + arctan2(pair.a, pair.b)":
            np.sin(a) + np.cos(b) + np.tan(b) + np.arctan2(a, b),
        "minimum(pair.a, pair.b) + maximum(pair.a, 0)": np.minimum(a, b) + np.maximum(a, 0),
        "where(pair.a > pair.b, pair.a, pair.b)": np.where(a > b, a, b),
        "clip(pair.a, -1, 1)": np.clip(a, -1, 1),
        "floor(pair.a) + ceil(pair.b) + round(pair.a)": np.floor(a) + np.ceil(b) + np.round(a),
        "isnan(pair.a / 0 * 0)": np.ones(50),  # +-inf * 0 and 0 / 0: NaN, no warning raised
        "(pair.a > 0) and not (pair.b > 0) or pair.flag":
            ((a > 0) & ~(b > 0) | c["flag"]).astype(float),
        "-1 < pair.a <= 1": ((a > -1) & (a <= 1)).astype(float),
        "bit(pair.word, 2) + bits(pair.word, 1, 3) * 10": ((w >> 2) & 1) + ((w >> 1) & 7) * 10,
        "(pair.word & 6) | (pair.word >> 4) ^ (1 << 3)": (w & 6) | (w >> 4) ^ 8,
        "pair.a * pi + e": a * np.pi + np.e,
    }
    with np.errstate(all="ignore"):
        for text, expected in cases.items():
            got = run(text)
            assert got.dtype == np.float64
            assert got.tobytes() == np.asarray(expected, dtype=np.float64).tobytes(), text


HOSTILE = [  # (expression, what the message says, the position it names)
    ("(" * 70 + "pair.a" + ")" * 70, "nested over 64", 65),
    ("abs(" * 70 + "pair.a" + ")" * 70, "brackets nested over 64", 65 * 4),
    ("+".join(["pair.a"] * 200), "nested over 64", 1),
    ("-" * 100 + "pair.a", "nested over 64", 65),
    ("mean(pair.a, 1000000000)", "a window of samples must be a whole number from 1", 14),
    ('max(pair.a, "2min")', "at most 60 s", 13),
    ('min(pair.a, "forever")', "use a number of samples or a duration", 13),
    ("lowpass(pair.a, 0)", "tau must be a number of seconds", 17),
    ('integral(pair.a, "7min")', "reset period must be a duration from", 18),
    ('integral(pair.a, "2d")', "that divides a day", 18),
    ('lowpass(pair.a, 1, "0.5s")', "reset period", 20),
    ("integral(pair.a, 3600)", "reset period", 18),
    ('integral(pair.a, "1h", 1)', "takes 1 or 2 argument(s), not 3", 1),
    ("nosuch.x + 1", "unknown channel 'nosuch'", 1),
    ("pair.a + pair.nosuch", "channel 'pair' has no numeric signal 'nosuch'", 10),
    ("__import__('os')", "unknown function '__import__'", 1),
    ("__import__('os').system('true')", "no attribute access", 1),
    ("pair.a.__class__.__bases__", "no attribute access", 1),
    ("pair.__class__", "no attribute access", 1),
    ("x.__class__", "no attribute access", 1),
    ("pair.a.real", "no attribute access", 1),
    ("pair.a[0]", "Subscript is not allowed", 1),
    ("(lambda: 1)()", "unknown function 'that'", 1),
    ("[x for x in pair.a]", "ListComp is not allowed", 1),
    ("pair.a if pair.b else 1", "IfExp is not allowed", 1),
    ("bit(pair.a, 2)", "takes an integer signal", 1),
    ("pair.a & 1", "bit operators take integers", 1),
    ("bits(pair.word, 5, 64)", "bits()'s high bit must be a whole number from 5 to 63", 20),
    ("eval('1')", "unknown function 'eval'", 1),
    ("sqrt(pair.a, x=1)", "takes no keyword arguments", 1),
    ("pair.a +", "not an expression", 8),
    ("'text' + pair.a", "a str constant is not a value", 1),
    ("2 ** 99999999999999999999999 + pair.a", "an integer beyond 64 bits", 6),
    ("pi", "names no channel.signal", 1),
    ("a" * 10**6, f"at most {MAX_CHARS}", MAX_CHARS + 1),
]


@pytest.mark.parametrize(("text", "says", "position"), HOSTILE,
                         ids=[h[0][:30] for h in HOSTILE])
def test_hostile_expressions_are_refused_with_the_position(text: str, says: str,
                                                           position: int) -> None:
    started = time.perf_counter()
    with pytest.raises(DerivedError) as refused:
        compile_expression(text, "derived x signal 'y'", kinds)
    assert time.perf_counter() - started < 1.0 or len(text) > 10**5  # no parse grows wild
    assert says in str(refused.value), str(refused.value)
    assert refused.value.position == position, str(refused.value)
    assert f"at position {position}" in str(refused.value) or position == 0
    assert str(refused.value).startswith("derived x signal 'y'")


def test_the_first_channel_named_drives_and_others_are_held() -> None:
    program = compile_expression("pair.a + slow.x", "t", kinds)
    assert program.driver == "pair"
    assert [(i.channel, i.signal) for i in program.inputs] == [("pair", "a"), ("slow", "x")]
    program = compile_expression("pair.a + slow.x", "t", kinds, driver="slow")
    assert program.driver == "slow"


def test_no_user_text_reaches_eval_exec_or_compile() -> None:
    import ast
    from pathlib import Path

    import speeddata.derived

    for path in Path(speeddata.derived.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "compile", "__import__"), path
