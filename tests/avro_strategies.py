"""Hypothesis strategies for Avro record schemas of every kind of type, for the property
tests of the body check and the schema limits."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "string", "bytes"]
LOGICAL = [{"type": "long", "logicalType": "timestamp-nanos"},
           {"type": "int", "logicalType": "date"},
           {"type": "string", "logicalType": "uuid"}]


class _Names:
    """Unique type names for one schema, and the named types finished so far (which a
    later field may use by name; an unfinished one would make the type recursive)."""

    def __init__(self) -> None:
        self.count = 0
        self.done: list[str] = []

    def new(self) -> str:
        self.count += 1
        return f"T{self.count}"


def _key(t: Any) -> str:
    """What tells union branches apart: a named type's name, else the type."""
    return t if isinstance(t, str) else t.get("name", t["type"])


@st.composite
def _type(draw: st.DrawFn, names: _Names, depth: int, in_union: bool = False,
          containers: bool = True) -> Any:
    kinds = ["primitive", "enum", "fixed"] + ([] if in_union else ["logical"])  # (fastavro's
    # writer takes a logical type's value for another branch's)
    if names.done:
        kinds.append("reference")
    if depth > 0:
        kinds += ["array", "map"] * containers + ["record"] + ([] if in_union else ["union"])
    kind = draw(st.sampled_from(kinds))
    if kind == "primitive":
        return draw(st.sampled_from(PRIMITIVES))
    if kind == "logical":
        return draw(st.sampled_from(LOGICAL))
    if kind == "reference":
        return draw(st.sampled_from(names.done))
    if kind == "enum":
        name = names.new()
        count = draw(st.integers(1, 5))
        names.done.append(name)
        return {"type": "enum", "name": name, "symbols": [f"S{i}" for i in range(count)]}
    if kind == "fixed":
        name = names.new()
        names.done.append(name)
        return {"type": "fixed", "name": name, "size": draw(st.integers(0, 9))}
    if kind == "array":
        return {"type": "array", "items": draw(_type(names, depth - 1))}
    if kind == "map":
        return {"type": "map", "values": draw(_type(names, depth - 1))}
    if kind == "union":  # the Avro rules: no union in a union, one of each unnamed type
        branches: list[Any] = []
        for _ in range(draw(st.integers(1, 3))):
            known = len(names.done)
            branch = draw(_type(names, depth - 1, in_union=True, containers=containers))
            if _key(branch) not in map(_key, branches):
                branches.append(branch)
            else:  # left out: the types it defined are not there to refer to
                del names.done[known:]
        return branches
    name = names.new()
    fields = [{"name": f"f{i}", "type": draw(_type(names, depth - 1, containers=containers))}
              for i in range(draw(st.integers(0, 4)))]
    names.done.append(name)
    return {"type": "record", "name": name, "fields": fields}


@st.composite
def record_schemas(draw: st.DrawFn, max_depth: int = 3, containers: bool = True
                   ) -> dict[str, Any]:
    """A channel's record schema: ``time`` and up to five fields of any type, records,
    arrays, maps and unions nested up to ``max_depth`` below it (``containers``: False
    leaves out arrays and maps, which the C generator refuses)."""
    names = _Names()
    fields = [{"name": f"x{i}", "type": draw(_type(names, max_depth, containers=containers))}
              for i in range(draw(st.integers(1, 5)))]
    return {"type": "record", "name": "channel", "fields": [
        {"name": "time", "type": "long"}, *fields]}
