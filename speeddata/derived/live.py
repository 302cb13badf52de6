"""Derived channels compiled against the channels, and computed batch by batch.

``DerivedSet.compute(channel, columns)`` is what the stripchart's hub calls for each
decoded batch before folding it, and what the pivot calls for each cached block in
receive order: the same code, the same batches' samples, the same results. Each derived
channel is also a ``Channel`` (a record schema made from its file, with a fingerprint no
datagram can carry), so the hub draws it, lists it and checks its limits as any other.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speeddata.derived import files
from speeddata.derived.expr import MAX_CHARS, Batch, Program, compile_expression
from speeddata.derived.ops import Hold
from speeddata.errors import DerivedError, SchemaError
from speeddata.logs import Throttle
from speeddata.schemas import Channel, Registry, Signal, channel_from_schema

log = logging.getLogger("speeddata.derived")
KINDS = {"boolean": "b", "int": "i", "long": "i", "float": "f", "double": "f"}


@dataclass(frozen=True)
class ComputedSignal(Signal):
    """A derived channel's signal as the hub and the exports see it."""

    expression: str = ""


@dataclass(eq=False)
class Compiled:
    """One derived channel compiled: its programs, the other channels' values it holds."""

    definition: files.DerivedChannel
    channel: Channel
    driver: str
    programs: list[tuple[str, Program]]
    holds: dict[str, Hold] = field(default_factory=dict)  # "channel.signal" of others
    failures: int = 0

    def inputs(self) -> set[str]:
        return {i.channel for _, p in self.programs for i in p.inputs}

    def signature(self) -> tuple:
        """What its state depends on: the text and the types of what it reads."""
        return (self.definition.text, self.driver,
                tuple((n, tuple(p.inputs)) for n, p in self.programs))


def _kinds(registry: Registry, channel: str) -> dict[str, str] | None:
    found = registry.get(channel)
    if found is None:
        return None
    return {s.name: KINDS.get(s.avro_type, "f") for s in found.signals if s.kind == "number"}


def compile_channel(definition: files.DerivedChannel, registry: Registry,
                    derived: dict[str, dict[str, str]] | None = None) -> Compiled:
    """Compile every expression of ``definition``; DerivedError names signal and position.
    ``derived``: the signals (and kinds) of derived channels compiled before, which it
    may name as it names channels."""
    if definition.name in registry:
        raise DerivedError(f"derived {definition.source}: channel {definition.name!r} "
                           "exists as a schema; rename the derived channel")
    others = derived or {}
    driver = definition.on
    if driver is not None and registry.get(driver) is None and driver not in others:
        raise DerivedError(f"derived {definition.source}: 'on' names channel {driver!r}, "
                           "which does not exist")
    programs = []
    for signal in definition.signals:
        program = compile_expression(
            signal.expression, f"derived {definition.source} signal {signal.name!r}",
            lambda name: others[name] if name in others else _kinds(registry, name), driver)
        driver = program.driver
        programs.append((signal.name, program))
    assert driver is not None
    holds = {f"{i.channel}.{i.signal}": Hold() for _, p in programs for i in p.inputs
             if i.channel != driver}
    fields: list[dict[str, Any]] = [{"name": "time", "type": "long"}]
    for signal in definition.signals:
        fields.append({"name": signal.name, "type": "double", "unit": signal.unit,
                       "doc": signal.doc, "expression": signal.expression,
                       **({"limits": signal.limits.as_json()} if signal.limits else {})})
    schema = {"type": "record", "name": definition.name, "doc": definition.doc,
              "derived": driver, "fields": fields}
    try:
        made = channel_from_schema(schema, definition.source)
    except SchemaError as exc:
        raise DerivedError(str(exc)) from None
    signals = tuple(ComputedSignal(**{f.name: getattr(s, f.name)
                                      for f in dataclasses.fields(Signal)},
                                   expression=d.expression)
                    for s, d in zip(made.signals, definition.signals, strict=True))
    channel = dataclasses.replace(made, fingerprint=b"derived:" + definition.name.encode(),
                                  aliases=(), signals=signals)
    return Compiled(definition, channel, driver, programs, holds)


class DerivedView(Registry):
    """The channels and the derived channels, for the hub: ``base`` is the schemas'."""

    def __init__(self, base: Registry, derived: DerivedSet) -> None:
        super().__init__([*base, *(c.channel for c in derived.compiled)])
        self.base = base
        self.derived = derived


class DerivedSet:
    """The derived channels computed from the batches of their input channels."""

    def __init__(self, compiled: list[Compiled] | None = None,
                 errors: list[DerivedError] | None = None) -> None:
        self.compiled = _by_depth(compiled or [])  # each after those it names
        self.errors = errors or []
        self.driven: dict[str, list[Compiled]] = {}
        self.feeding: dict[str, list[tuple[str, Hold]]] = {}  # channel -> (signal, hold)
        for c in self.compiled:
            self.driven.setdefault(c.driver, []).append(c)
            for key, hold in c.holds.items():
                owner, _, signal = key.partition(".")
                self.feeding.setdefault(owner, []).append((signal, hold))
        self._log = Throttle(10.0)

    @classmethod
    def build(cls, definitions: list[files.DerivedChannel], registry: Registry,
              errors: list[DerivedError] | None = None) -> DerivedSet:
        """Compile what compiles, a derived channel after those it names (a cycle is
        refused, named); the others are kept as errors (and logged)."""
        compiled, errors = [], list(errors or [])
        ordered, refused = in_order(definitions, registry)
        errors += refused
        known: dict[str, dict[str, str]] = {}
        for definition in ordered:
            try:
                made = compile_channel(definition, registry, known)
            except DerivedError as exc:
                errors.append(exc)
                continue
            compiled.append(made)
            known[definition.name] = {s.name: "f" for s in definition.signals}
        for error in errors:
            log.error("%s (derived channel skipped)", error)
        return cls(compiled, errors)

    def take_state(self, old: DerivedSet) -> None:
        """Keep the state of each derived channel whose file and inputs did not change
        (a schema edit of an input channel does not restart its windows)."""
        before = {c.signature(): c for c in old.compiled}
        for i, c in enumerate(self.compiled):
            same = before.get(c.signature())
            if same is not None:
                same.definition, same.channel = c.definition, c.channel
                self.compiled[i] = same
        self.__init__(self.compiled, self.errors)  # type: ignore[misc]

    def view(self, base: Registry) -> DerivedView:
        return DerivedView(base, self)

    def compute(self, channel: Channel, columns: dict[str, np.ndarray]
                ) -> list[tuple[Channel, dict[str, np.ndarray]]]:
        """The derived channels' columns for a decoded batch of ``channel`` ("time" and
        one float64 column per signal, a row per sample of the batch); a batch of a
        channel another derived one holds is kept for it. Never raises: a failing
        expression gives NaN, counted and logged at a bounded rate."""
        times = columns.get(channel.time_field)
        if times is None:
            return []
        self._feed(channel.name, times, columns)
        out: list[tuple[Channel, dict[str, np.ndarray]]] = []
        made = {channel.name}  # the batch's channels: its own, then those derived from it
        for c in self.compiled:  # in order: a derived channel after those it names
            if c.driver not in made:
                continue
            batch = Batch(times, out[[o.name for o, _ in out].index(c.driver)][1]
                          if c.driver != channel.name else columns,
                          {k: h.at(times) for k, h in c.holds.items()})
            result = {"time": times}
            for name, program in c.programs:
                try:
                    result[name] = program.run(batch)
                except Exception as exc:  # a column an edit took away, a type it changed
                    c.failures += 1
                    result[name] = np.full(len(times), np.nan)
                    if self._log.ready(float(times[-1]) / 1e9 if len(times) else 0.0):
                        log.warning("derived %s.%s: %s: %s (NaN; %d failed batches)",
                                    c.channel.name, name, type(exc).__name__, exc, c.failures)
            out.append((c.channel, result))
            made.add(c.channel.name)
            self._feed(c.channel.name, times, result)
        return out

    def _feed(self, name: str, times: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """A batch of channel ``name`` into the holds of the derived channels that take
        its signals as another channel's."""
        for signal, hold in self.feeding.get(name, ()):
            values = columns.get(signal)
            if values is not None and values.dtype != object:
                hold.feed(times, values)

    def root(self, name: str) -> str:
        """The schema channel whose samples drive derived channel ``name`` (through the
        derived channels it is driven by), or ``name`` itself."""
        by_name = {c.channel.name: c for c in self.compiled}
        seen = set()
        while name in by_name and name not in seen:
            seen.add(name)
            name = by_name[name].driver
        return name

    def warmup_ns(self) -> int:
        return max((p.warmup_ns() for c in self.compiled for _, p in c.programs), default=0)

    def max_count(self) -> int:
        return max((p.max_count() for c in self.compiled for _, p in c.programs), default=0)

    def statistics(self) -> dict[str, Any]:
        return {c.channel.name: {"failures": c.failures,
                                 "held_dropped": sum(h.dropped for h in c.holds.values())}
                for c in self.compiled}


def _by_depth(compiled: list[Compiled]) -> list[Compiled]:
    """Derived channels ordered by how many derived channels deep their inputs are (a
    stable order where each comes after those it names; ``in_order`` refused cycles)."""
    by_name = {c.channel.name: c for c in compiled}
    depth: dict[str, int] = {}

    def of(made: Compiled, seen: frozenset[str]) -> int:
        name = made.channel.name
        if name not in depth:
            names = (n for n in {*made.inputs(), made.driver} if n in by_name and n not in seen)
            depth[name] = 1 + max((of(by_name[n], seen | {name}) for n in names), default=-1)
        return depth[name]

    return sorted(compiled, key=lambda c: of(c, frozenset()))


NO_DERIVED = DerivedSet()


def derived_of(registry: Registry) -> DerivedSet:
    """The derived set a registry carries (a DerivedView's), else none."""
    return registry.derived if isinstance(registry, DerivedView) else NO_DERIVED


def load(directory: Path, registry: Registry) -> DerivedSet:
    """The derived channels of ``directory`` compiled against ``registry`` (disk only: a
    worker thread's work); bad files and expressions logged and skipped."""
    definitions, errors = files.load_dir(directory)
    return DerivedSet.build(definitions, registry, errors)


def check(definition: files.DerivedChannel, registry: Registry,
          directory: Path | None = None) -> Compiled:
    """A registration checked against the channels and the derived channels of
    ``directory`` (DerivedError: a 400 naming the position, or the cycle it would make)."""
    others = [d for d in files.load_dir(directory)[0] if d.name != definition.name] \
        if directory is not None else []
    ordered, refused = in_order([definition, *others], registry)  # a cycle from it
    for error in refused:
        if getattr(error, "channel", None) == definition.name:
            raise error
    known: dict[str, dict[str, str]] = {}
    for other in ordered:
        if other is definition:
            return compile_channel(definition, registry, known)
        try:
            compile_channel(other, registry, known)
        except DerivedError:
            continue  # a broken one it names: its name stays unknown, said as such
        known[other.name] = {s.name: "f" for s in other.signals}
    raise AssertionError("unreachable")


def references(definition: files.DerivedChannel) -> set[str]:
    """The channel names ``definition`` names (``on`` and each ``channel.signal``): a
    parse only, what does not parse names nothing (its compile says why)."""
    names = {definition.on} if definition.on else set()
    for signal in definition.signals:
        text = signal.expression
        if not isinstance(text, str) or len(text) > MAX_CHARS:
            continue
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except (SyntaxError, RecursionError, MemoryError, ValueError):
            continue
        names |= {n.value.id for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    return names


def in_order(definitions: list[files.DerivedChannel], registry: Registry
             ) -> tuple[list[files.DerivedChannel], list[DerivedError]]:
    """``definitions`` ordered so that each comes after the derived channels it names;
    those in a cycle (or naming one) refused, the cycle named."""
    by_name = {d.name: d for d in definitions if d.name not in registry}
    needs = {d.name: sorted(n for n in references(d) if n in by_name)
             for d in by_name.values()}
    ordered: list[files.DerivedChannel] = []
    state: dict[str, str] = {}  # "open" while its dependencies are visited, then "done"
    refused: dict[str, DerivedError] = {}

    def visit(name: str, path: list[str]) -> bool:
        if state.get(name) == "done":
            return name not in refused
        if state.get(name) == "open":
            cycle = [*path[path.index(name):], name]
            for member in cycle[:-1]:
                refused.setdefault(member, _cycle_error(by_name[member], cycle))
            return False
        state[name] = "open"
        fine = all([visit(n, [*path, name]) for n in needs[name]])
        state[name] = "done"
        if not fine:
            refused.setdefault(name, _cycle_error(by_name[name], None))
        elif name not in refused:
            ordered.append(by_name[name])
        return fine and name not in refused

    for definition in definitions:
        if definition.name in by_name and by_name[definition.name] is definition:
            visit(definition.name, [])
        elif definition.name not in by_name:
            ordered.append(definition)  # a schema's name: its compile refuses it
    return ordered, list(refused.values())


def _cycle_error(definition: files.DerivedChannel, cycle: list[str] | None) -> DerivedError:
    if cycle is None:
        message = (f"derived {definition.source}: it names a derived channel in a cycle "
                   "(see that one's error); not computed")
    else:
        message = (f"derived {definition.source}: derived channels name each other in a "
                   f"cycle: {' -> '.join(cycle)}; none of them is computed")
    error = DerivedError(message, 0)
    error.channel = definition.name  # type: ignore[attr-defined]
    return error


def with_derived(directory: Path, registry: Registry) -> DerivedView:
    """``registry`` and the derived channels of ``directory``, as the hub draws them."""
    return load(directory, registry).view(registry)
