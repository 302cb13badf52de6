"""A block as its user declares it: ``@block(inputs=..., output=..., signals=...)`` on a
function over column batches, the output channel's schema derived from that, and block
files (plain Python modules) loaded by path."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeddata.errors import SchemaError, SpeeddataError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")  # a channel name: it becomes a file name
NAN_RULES = ("keep", "drop")

BlockFunction = Callable[[dict[str, Any]], Any]


class BlockError(SpeeddataError):
    """A block file or declaration that cannot run; the message names the block and the
    problem (exit 2: the user must change the file)."""


@dataclass(frozen=True)
class OutSignal:
    """One signal of a block's output channel: a double with its unit, doc and limits."""

    name: str
    unit: str = ""
    doc: str = ""
    limits: dict[str, Any] | None = None


@dataclass(frozen=True)
class Block:
    """A declared block: what it reads, what it writes and the function between.

    ``inputs[0]`` is the primary input: the function is called on its samples, and each
    other input is joined onto them (the last value at or before each sample, NaN before
    there is one). ``nan``: ``keep`` sends output records holding NaN as they are,
    ``drop`` leaves them out (counted)."""

    function: BlockFunction = field(repr=False)
    inputs: tuple[str, ...]
    output: str
    signals: tuple[OutSignal, ...]
    doc: str = ""
    nan: str = "keep"
    max_records: int = 4096  # records of the primary input per call at most
    max_delay: float = 0.05  # seconds a received record waits for its batch at most

    @property
    def name(self) -> str:
        return getattr(self.function, "__name__", self.output)

    def schema(self) -> dict[str, Any]:
        """The output channel's Avro schema: ``time`` (ns) and a double per signal, with
        its unit, doc and limits; registered like any channel's."""
        fields: list[dict[str, Any]] = [
            {"name": "time", "type": {"type": "long", "logicalType": "timestamp-nanos"},
             "doc": "time of the input sample it was computed from, ns since the Unix epoch"}]
        for signal in self.signals:
            entry: dict[str, Any] = {"name": signal.name, "type": "double"}
            if signal.unit:
                entry["unit"] = signal.unit
            if signal.doc:
                entry["doc"] = signal.doc
            if signal.limits is not None:
                entry["limits"] = signal.limits
            fields.append(entry)
        doc = self.doc or f"computed by block {self.name} from {', '.join(self.inputs)}"
        return {"type": "record", "name": self.output, "doc": doc, "fields": fields}


def _signals(signals: Any, where: str) -> tuple[OutSignal, ...]:
    """``{"name": "unit"}`` or ``{"name": {"unit": ..., "doc": ..., "limits": ...}}``, or a
    list of names."""
    if isinstance(signals, list | tuple):
        signals = {name: "" for name in signals}
    if not isinstance(signals, Mapping) or not signals:
        raise BlockError(f"{where}: signals must name at least one output signal, like "
                         "signals={\"current2\": \"A\"}")
    out = []
    for name, spec in signals.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name == "time":
            raise BlockError(f"{where}: signal name {name!r}: use letters, digits and '_', "
                             "not 'time' (the output's time is the input sample's)")
        if isinstance(spec, str):
            spec = {"unit": spec}
        if not isinstance(spec, Mapping) or set(spec) - {"unit", "doc", "limits"}:
            raise BlockError(f"{where}: signal {name!r}: give its unit as a string, or a "
                             "dict of unit, doc and limits")
        unit, doc = spec.get("unit", ""), spec.get("doc", "")
        if not isinstance(unit, str) or not isinstance(doc, str):
            raise BlockError(f"{where}: signal {name!r}: unit and doc must be strings")
        out.append(OutSignal(name, unit, doc, spec.get("limits")))
    return tuple(out)


def block(inputs: list[str] | tuple[str, ...] | str, output: str,
          signals: Mapping[str, Any] | list[str], *, doc: str = "", nan: str = "keep",
          max_records: int = 4096, max_delay: float = 0.05
          ) -> Callable[[BlockFunction], BlockFunction]:
    """Declare the decorated function a block: called with ``batch`` (``batch["time"]``
    the primary input's times, ``batch[channel][signal]`` each input's column as a numpy
    array, one entry per primary sample), it returns ``{signal: array}`` of that length,
    sent as channel ``output``. The function is left as it is (testable by a direct call);
    the declaration is kept on it as ``__block__``."""

    def declare(function: BlockFunction) -> BlockFunction:
        where = f"block {getattr(function, '__name__', '?')}"
        names = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        if not names or not all(isinstance(n, str) and _NAME.fullmatch(n) for n in names):
            raise BlockError(f"{where}: inputs must be one or more channel names")
        if len(set(names)) != len(names) or "time" in names:
            raise BlockError(f"{where}: inputs {list(names)}: each channel once, and none "
                             "named 'time' (batch['time'] holds the times)")
        if not isinstance(output, str) or not _NAME.fullmatch(output):
            raise BlockError(f"{where}: output {output!r}: a channel name (letters, digits, "
                             "'_', not starting with a digit)")
        if output in names:
            raise BlockError(f"{where}: output {output!r} is one of its inputs")
        if nan not in NAN_RULES:
            raise BlockError(f"{where}: nan={nan!r}: use one of {', '.join(NAN_RULES)}")
        if not (isinstance(max_records, int) and 1 <= max_records <= 1_000_000):
            raise BlockError(f"{where}: max_records must be from 1 to 1000000")
        if not (isinstance(max_delay, int | float) and 0 < max_delay <= 10):
            raise BlockError(f"{where}: max_delay must be from 0 to 10 seconds")
        spec = Block(function, names, output, _signals(signals, where), doc, nan,
                     max_records, float(max_delay))
        try:  # a schema the relay would refuse is refused here, before anything runs
            from speeddata.schemas import channel_from_schema

            channel_from_schema(spec.schema(), f"<block {spec.name}>", limits=True)
        except SchemaError as exc:
            raise BlockError(f"{where}: {exc}") from None
        function.__block__ = spec  # type: ignore[attr-defined]
        return function

    return declare


def load_file(path: Path) -> list[Block]:
    """The blocks a block file declares, in the order it declares them. The file runs as
    a module (it is the user's own program); what it raises is a BlockError naming it."""
    path = Path(path)
    if not path.is_file():
        raise BlockError(f"block file {path}: no such file")
    module_name = f"speeddata_block_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BlockError(f"block file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BlockError:
        raise
    except Exception as exc:
        import traceback

        raise BlockError(f"block file {path} cannot be loaded: {type(exc).__name__}: {exc}\n"
                         + "".join(traceback.format_exc(limit=-3))) from None
    found = [value.__block__ for value in vars(module).values()
             if callable(value) and isinstance(getattr(value, "__block__", None), Block)]
    if not found:
        raise BlockError(f"block file {path}: declares no block (decorate a function "
                         "with @block(inputs=[...], output=..., signals={...}))")
    outputs = [b.output for b in found]
    if len(set(outputs)) != len(outputs):
        raise BlockError(f"block file {path}: two blocks write the same output channel")
    return found
