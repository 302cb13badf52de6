"""Expressions of derived signals: user text parsed by ``ast.parse(mode="eval")`` and
walked with a strict whitelist into a tree of small nodes. Nothing of the user's text is
ever given to ``eval`` or ``compile``; the only attribute form is ``channel.signal``.

Each node has a type ("b" boolean, "i" integer, "f" float), fixed when compiled from the
channels' schemas, and ``run(batch)`` that returns a numpy array (or a 0-d one for a
constant). Stateful operators (speeddata/derived/ops.py) keep state across batches.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speeddata.derived import ops, windows
from speeddata.errors import DerivedError

MAX_CHARS = 2000  # an expression's length; checked before anything parses it
MAX_DEPTH = 64  # nodes nested (a + b + c + ... nests one level per term)
MAX_NODES = 400
MAX_WINDOW_SAMPLES = ops.MAX_WINDOW_SAMPLES
MAX_WINDOW_SECONDS = 60.0
MAX_TAU_SECONDS = 86400.0
CONSTANTS = {"pi": math.pi, "e": math.e, "nan": math.nan, "inf": math.inf}


@dataclass
class Batch:
    """What one evaluation sees: the driving channel's sample times (int64 ns) and
    columns, and the other channels' signals aligned to those times (``joined``)."""

    times: np.ndarray
    columns: dict[str, np.ndarray]
    joined: dict[str, np.ndarray] = field(default_factory=dict)


class Node:
    kind = "f"

    def run(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError


class Const(Node):
    def __init__(self, value: Any, kind: str) -> None:
        self.kind = kind
        self.value = np.asarray(value, dtype={"b": np.bool_, "i": np.int64, "f": np.float64}[kind])

    def run(self, batch: Batch) -> np.ndarray:
        return self.value


class Ref(Node):
    """``channel.signal``: a column of the driving channel, or another channel's signal
    as its last value at or before each sample (see ops.Hold)."""

    def __init__(self, key: str, signal: str, kind: str, driver: bool) -> None:
        self.key, self.signal, self.kind, self.driver = key, signal, kind, driver

    def run(self, batch: Batch) -> np.ndarray:
        if self.driver:
            return batch.columns[self.signal]
        return batch.joined[self.key]


def _num(value: np.ndarray) -> np.ndarray:
    """Booleans as integers for arithmetic (numpy adds booleans as 'or')."""
    return value.astype(np.int64) if value.dtype == np.bool_ else value


class Apply(Node):
    """A stateless numpy function of its arguments' values."""

    def __init__(self, fn: Callable[..., np.ndarray], args: list[Node], kind: str) -> None:
        self.fn, self.args, self.kind = fn, args, kind

    def run(self, batch: Batch) -> np.ndarray:
        return self.fn(*(a.run(batch) for a in self.args))


class Stateful(Node):
    """A stateful operator over its argument, on the batch's sample times."""

    def __init__(self, op: ops.Operator, arg: Node) -> None:
        self.op, self.arg = op, arg

    def run(self, batch: Batch) -> np.ndarray:
        values = np.broadcast_to(self.arg.run(batch), batch.times.shape)
        return self.op.run(batch.times, values.astype(np.float64))


def _float(*args: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in args]


def _shift(fn: Callable) -> Callable:
    return lambda a, b: fn(_num(a), np.clip(_num(b), 0, 63))


BINARY: dict[type, tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str]] = {
    ast.Add: (lambda a, b: np.add(_num(a), _num(b)), "num"),
    ast.Sub: (lambda a, b: np.subtract(_num(a), _num(b)), "num"),
    ast.Mult: (lambda a, b: np.multiply(_num(a), _num(b)), "num"),
    ast.Div: (lambda a, b: np.true_divide(*_float(a, b)), "f"),
    ast.FloorDiv: (lambda a, b: np.floor_divide(_num(a), _num(b)), "num"),
    ast.Mod: (lambda a, b: np.remainder(_num(a), _num(b)), "num"),
    ast.Pow: (lambda a, b: np.power(*_float(a, b)), "f"),  # no integer powers: no raising
    ast.BitAnd: (lambda a, b: np.bitwise_and(_num(a), _num(b)), "int"),
    ast.BitOr: (lambda a, b: np.bitwise_or(_num(a), _num(b)), "int"),
    ast.BitXor: (lambda a, b: np.bitwise_xor(_num(a), _num(b)), "int"),
    ast.LShift: (_shift(np.left_shift), "int"),
    ast.RShift: (_shift(np.right_shift), "int"),
}
COMPARE: dict[type, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
    ast.Eq: np.equal, ast.NotEq: np.not_equal,
}
UNARY_F = {"sqrt": np.sqrt, "log": np.log, "log10": np.log10, "exp": np.exp, "sin": np.sin,
           "cos": np.cos, "tan": np.tan, "floor": np.floor, "ceil": np.ceil,
           "round": np.round}  # round: half to even, as numpy
WINDOWS = ("mean", "min", "max")
STATEFUL = (*WINDOWS, "deriv", "integral", "lowpass")
FUNCTIONS = sorted({"abs", "arctan2", "minimum", "maximum", "where", "clip", "isnan", "bit",
                    "bits", *UNARY_F, *STATEFUL})
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*(ns|us|ms|s|min|h|d)\s*")
_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "min": 60 * 10**9,
            "h": 3600 * 10**9, "d": 86400 * 10**9}
DAY_NS = 86400 * 10**9


def _promote(*kinds: str) -> str:
    return "f" if "f" in kinds else "i"


@dataclass(frozen=True)
class Input:
    """A signal an expression reads: its channel, name and type ("b", "i", "f")."""

    channel: str
    signal: str
    kind: str


class Compiler:
    """Turns one expression into a Node tree. ``signals(channel)`` gives a channel's
    numeric signals and their kinds, or None for a channel that does not exist;
    ``driver`` is the channel whose samples drive (None: the first channel named)."""

    def __init__(self, text: str, where: str,
                 signals: Callable[[str], dict[str, str] | None], driver: str | None) -> None:
        self.text, self.where, self.signals, self.driver = text, where, signals, driver
        self.nodes = 0
        self.inputs: list[Input] = []
        self.operators: list[ops.Operator] = []
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def fail(self, position: int, message: str) -> DerivedError:
        shown = self.text if len(self.text) <= 80 else self.text[: 77] + "..."
        return DerivedError(f"{self.where}: at position {position}: {message} (in {shown!r})",
                            position)

    def _at(self, node: ast.AST) -> int:
        """The 1-based character position of ``node`` in the text."""
        line = self._line_starts[node.lineno - 1]  # type: ignore[attr-defined]
        raw = self.text[line:].encode("utf-8")[: node.col_offset]  # type: ignore[attr-defined]
        return line + len(raw.decode("utf-8", "ignore")) + 1

    def compile(self) -> Node:
        text = self.text
        if not isinstance(text, str) or not text.strip():
            raise DerivedError(f"{self.where}: the expression is empty", 0)
        if len(text) > MAX_CHARS:
            raise DerivedError(f"{self.where}: at position {MAX_CHARS + 1}: the expression "
                               f"has {len(text)} characters, at most {MAX_CHARS}", MAX_CHARS + 1)
        depth = 0
        for i, c in enumerate(text):  # before the parser: its own limits are not ours
            depth += (c in "([{") - (c in ")]}")
            if depth > MAX_DEPTH:
                raise self.fail(i + 1, f"brackets nested over {MAX_DEPTH} deep")
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            where = exc.offset if exc.lineno in (None, 1) and exc.offset else len(text)
            raise self.fail(min(max(where, 1), len(text)), f"not an expression: {exc.msg}"
                            ) from None
        except (RecursionError, MemoryError, ValueError):
            raise self.fail(1, "the expression cannot be parsed (too deep)") from None
        self._strip = len(text) - len(text.lstrip())
        return self._walk(tree.body, 1)

    def _walk(self, node: ast.AST, depth: int) -> Node:
        self.nodes += 1
        if depth > MAX_DEPTH:
            raise self.fail(self._pos(node), f"nested over {MAX_DEPTH} deep")
        if self.nodes > MAX_NODES:
            raise self.fail(self._pos(node), f"over {MAX_NODES} names, numbers and operators")
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(self._pos(node), f"{type(node).__name__} is not allowed (only "
                            "numbers, channel.signal, operators and the listed functions)")
        return method(node, depth)

    def _pos(self, node: ast.AST) -> int:
        return self._at(node) + self._strip

    # -- leaves --------------------------------------------------------------------------
    def _Constant(self, node: ast.Constant, depth: int) -> Node:
        value = node.value
        if isinstance(value, bool):
            return Const(value, "b")
        if isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise self.fail(self._pos(node), "an integer beyond 64 bits")
            return Const(value, "i")
        if isinstance(value, float):
            return Const(value, "f")
        raise self.fail(self._pos(node), f"a {type(value).__name__} constant is not a "
                        "value (text only as a window, such as \"100ms\")")

    def _Name(self, node: ast.Name, depth: int) -> Node:
        if node.id in CONSTANTS:
            return Const(CONSTANTS[node.id], "f")
        hint = " (a function: call it)" if node.id in FUNCTIONS else (
            "; name signals as channel.signal")
        raise self.fail(self._pos(node), f"unknown name {node.id!r}{hint}")

    def _Attribute(self, node: ast.Attribute, depth: int) -> Node:
        if not isinstance(node.value, ast.Name) or node.attr.startswith("_") or (
                node.value.id.startswith("_")):
            raise self.fail(self._pos(node), "no attribute access: only channel.signal")
        channel, signal = node.value.id, node.attr
        known = self.signals(channel)
        if known is None:
            raise self.fail(self._pos(node), f"unknown channel {channel!r}")
        if signal not in known:
            raise self.fail(self._pos(node), f"channel {channel!r} has no numeric signal "
                            f"{signal!r} (it has {', '.join(sorted(known)) or 'none'})")
        if self.driver is None:
            self.driver = channel
        driver = channel == self.driver  # another channel's values are held as floats
        kind = known[signal] if driver else "f"
        self.inputs.append(Input(channel, signal, kind))
        return Ref(f"{channel}.{signal}", signal, kind, driver)

    # -- operators -----------------------------------------------------------------------
    def _BinOp(self, node: ast.BinOp, depth: int) -> Node:
        found = BINARY.get(type(node.op))
        if found is None:
            raise self.fail(self._pos(node), f"operator {type(node.op).__name__} is not allowed")
        left, right = self._walk(node.left, depth + 1), self._walk(node.right, depth + 1)
        fn, rule = found
        if rule == "int":
            for side in (left, right):
                if side.kind == "f":
                    raise self.fail(self._pos(node), "bit operators take integers (a float "
                                    "signal is not a bit field)")
            kind = "i"
        else:
            kind = "f" if rule == "f" else _promote(left.kind, right.kind)
        return Apply(fn, [left, right], kind)

    def _UnaryOp(self, node: ast.UnaryOp, depth: int) -> Node:
        operand = self._walk(node.operand, depth + 1)
        if isinstance(node.op, ast.Not):
            return Apply(np.logical_not, [operand], "b")
        if isinstance(node.op, ast.USub):
            return Apply(lambda a: np.negative(_num(a)), [operand], _promote(operand.kind))
        if isinstance(node.op, ast.UAdd):
            return operand
        raise self.fail(self._pos(node), f"operator {type(node.op).__name__} is not allowed")

    def _BoolOp(self, node: ast.BoolOp, depth: int) -> Node:
        fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        values = [self._walk(v, depth + 1) for v in node.values]
        out = values[0]
        for v in values[1:]:
            out = Apply(fn, [out, v], "b")
        return out

    def _Compare(self, node: ast.Compare, depth: int) -> Node:
        items = [self._walk(node.left, depth + 1),
                 *(self._walk(c, depth + 1) for c in node.comparators)]
        out: Node | None = None
        for op, a, b in zip(node.ops, items, items[1:], strict=False):
            fn = COMPARE.get(type(op))
            if fn is None:
                raise self.fail(self._pos(node), f"comparison {type(op).__name__} is not "
                                "allowed")
            one = Apply(fn, [a, b], "b")
            out = one if out is None else Apply(np.logical_and, [out, one], "b")
        assert out is not None
        return out

    # -- functions -----------------------------------------------------------------------
    def _Call(self, node: ast.Call, depth: int) -> Node:
        if isinstance(node.func, ast.Attribute):
            raise self.fail(self._pos(node), "no attribute access (nor methods): only "
                            "channel.signal")
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else "that"
            raise self.fail(self._pos(node), f"unknown function {name!r} (functions: "
                            f"{', '.join(FUNCTIONS)})")
        name = node.func.id
        if node.keywords:
            raise self.fail(self._pos(node), f"{name}() takes no keyword arguments")
        arity = {"arctan2": 2, "minimum": 2, "maximum": 2, "where": 3, "clip": 3, "bit": 2,
                 "bits": 3, "mean": 2, "min": 2, "max": 2, "lowpass": 2}.get(name, 1)
        said = str(arity)
        if name in ("integral", "lowpass"):  # and the reset period, optional
            said = f"{arity} or {arity + 1}"
            arity += len(node.args) == arity + 1
        if len(node.args) != arity:
            raise self.fail(self._pos(node), f"{name}() takes {said} argument(s), "
                            f"not {len(node.args)}")
        if name in STATEFUL:
            return self._stateful(name, node, depth)
        if name in ("bit", "bits"):
            return self._bits(name, node, depth)
        args = [self._walk(a, depth + 1) for a in node.args]
        kinds = [a.kind for a in args]
        if name in UNARY_F:
            fn = UNARY_F[name]
            return Apply(lambda a, fn=fn: fn(np.asarray(a, dtype=np.float64)), args, "f")
        if name == "abs":
            return Apply(lambda a: np.abs(_num(a)), args, _promote(*kinds))
        if name == "isnan":
            return Apply(lambda a: np.isnan(np.asarray(a, dtype=np.float64)), args, "b")
        if name == "arctan2":
            return Apply(lambda a, b: np.arctan2(*_float(a, b)), args, "f")
        if name in ("minimum", "maximum"):
            fn2 = np.minimum if name == "minimum" else np.maximum
            return Apply(lambda a, b, fn=fn2: fn(_num(a), _num(b)), args, _promote(*kinds))
        if name == "where":
            return Apply(lambda c, a, b: np.where(np.asarray(c, dtype=np.bool_), _num(a),
                                                  _num(b)), args, _promote(*kinds[1:]))
        # clip
        return Apply(lambda a, lo, hi: np.minimum(np.maximum(_num(a), _num(lo)), _num(hi)),
                     args, _promote(*kinds))

    def _literal_int(self, node: ast.AST, low: int, high: int, what: str) -> int:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, int)
                and not isinstance(node.value, bool) and low <= node.value <= high):
            raise self.fail(self._pos(node), f"{what} must be a whole number from {low} to "
                            f"{high}")
        return node.value

    def _bits(self, name: str, node: ast.Call, depth: int) -> Node:
        value = self._walk(node.args[0], depth + 1)
        if value.kind == "f":
            raise self.fail(self._pos(node), f"{name}() takes an integer signal (a float "
                            "signal is not a bit field)")
        low = self._literal_int(node.args[1], 0, 63, f"{name}()'s bit")
        high = low if name == "bit" else self._literal_int(node.args[2], low, 63,
                                                            "bits()'s high bit")
        mask = np.int64(-1) if high - low == 63 else np.int64((1 << (high - low + 1)) - 1)
        return Apply(lambda a: np.bitwise_and(np.right_shift(_num(a), low), mask),
                     [value], "i")

    def _stateful(self, name: str, node: ast.Call, depth: int) -> Node:
        arg = self._walk(node.args[0], depth + 1)
        op: ops.Operator
        if name in WINDOWS:
            count, span_ns = self._window(node.args[1])
            op = windows.Window(name, count, span_ns)
        elif name == "lowpass":
            tau = node.args[1]
            if not (isinstance(tau, ast.Constant) and isinstance(tau.value, int | float)
                    and not isinstance(tau.value, bool)
                    and 0 < tau.value <= MAX_TAU_SECONDS):
                raise self.fail(self._pos(tau), "lowpass()'s tau must be a number of seconds, "
                                f"more than 0 and at most {MAX_TAU_SECONDS:g}")
            op = ops.Lowpass(float(tau.value), self._reset(node.args[2:]))
        elif name == "integral":
            op = ops.Integral(self._reset(node.args[1:]))
        else:
            op = ops.Deriv()
        self.operators.append(op)
        return Stateful(op, arg)

    def _reset(self, given: list[ast.expr]) -> int:
        """A reset period in ns: a duration from 1 s to 1 d that divides a day (so its
        boundaries are UTC clock times), "1h" when not given."""
        if not given:
            return ops.DEFAULT_RESET_NS
        node = given[0]
        match = _DURATION.fullmatch(node.value) if isinstance(node, ast.Constant) and (
            isinstance(node.value, str)) else None
        ns = round(float(match.group(1)) * _UNIT_NS[match.group(2)]) if match else 0
        if not (10**9 <= ns <= DAY_NS and DAY_NS % ns == 0):
            raise self.fail(self._pos(node), "the reset period must be a duration from "
                            "\"1s\" to \"1d\" that divides a day, such as \"1min\", "
                            "\"1h\" or \"1d\"")
        return ns

    def _window(self, node: ast.AST) -> tuple[int, int]:
        """(samples, 0) or (0, ns) from a window argument: N, or a duration "100ms"."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _DURATION.fullmatch(node.value)
            if not match:
                raise self.fail(self._pos(node), f"window {node.value[:40]!r}: use a number "
                                "of samples or a duration such as \"100ms\" (ns, us, ms, s, "
                                "min)")
            ns = round(float(match.group(1)) * _UNIT_NS[match.group(2)])
            if not 0 < ns <= MAX_WINDOW_SECONDS * 1e9:
                raise self.fail(self._pos(node), f"window {node.value!r}: more than 0 and at "
                                f"most {MAX_WINDOW_SECONDS:g} s")
            return 0, ns
        return self._literal_int(node, 1, MAX_WINDOW_SAMPLES, "a window of samples"), 0


@dataclass
class Program:
    """One compiled expression: its tree, what it reads, its stateful operators."""

    text: str
    root: Node
    driver: str
    inputs: list[Input]
    operators: list[ops.Operator]

    def run(self, batch: Batch) -> np.ndarray:
        """The values for the batch's samples, as float64 (booleans 0 and 1)."""
        with np.errstate(all="ignore"):
            out = self.root.run(batch)
            return np.broadcast_to(out, batch.times.shape).astype(np.float64)

    def warmup_ns(self) -> int:
        """How far before a range an export starts reading, so windows have the samples
        they hold live."""
        return max((op.warmup_ns() for op in self.operators), default=0)

    def warm_from(self, start_ns: int) -> int:
        """Where an export reads from so that every operator is full at ``start_ns``
        (a span back; the boundary before it for integral and lowpass)."""
        return min((op.warm_from(start_ns) for op in self.operators), default=start_ns)

    def max_count(self) -> int:
        return max((op.count for op in self.operators if isinstance(op, windows.Window)), default=0)


def compile_expression(text: str, where: str,
                       signals: Callable[[str], dict[str, str] | None],
                       driver: str | None = None) -> Program:
    """Compile ``text``; DerivedError names ``where`` and the character position."""
    compiler = Compiler(text, where, signals, driver)
    root = compiler.compile()
    if compiler.driver is None:
        raise DerivedError(f"{where}: at position 1: the expression names no channel.signal "
                           "(a constant has no samples)", 1)
    return Program(text, root, compiler.driver, compiler.inputs, compiler.operators)
