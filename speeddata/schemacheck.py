"""A channel's schema checked as hostile input before anything walks it: the limits a
schema meets to be registered or loaded (each consumer, the relay's body check, the
server's decoder and the pivot, walks a schema by recursion and keeps what it derives from
it, so none may be a crash switch), and the names the exports keep for themselves."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from speeddata.errors import SchemaError

# Limits a channel's schema meets to be registered or loaded from the channels directory:
# each consumer (the relay's body check, the server's decoder, the pivot) walks a schema
# by recursion and keeps what it derives from it, so none may be a crash switch.
MAX_SCHEMA_BYTES = 2**20  # the schema's JSON written compactly (UTF-8)
MAX_SCHEMA_FILE_BYTES = 4 * MAX_SCHEMA_BYTES  # a larger file is not read, however indented
MAX_DEPTH = 32  # records, arrays, maps and unions nested, the channel's record the first
MAX_JSON_DEPTH = 4 * MAX_DEPTH  # JSON objects and arrays nested (attributes included)
MAX_FIELDS = 1000  # record fields in all, a named type counted at each use
MAX_TYPES = 10_000  # types in all: fields', array items, map values, union branches
MAX_UNION_BRANCHES = 64
MAX_ENUM_SYMBOLS = 1000
MAX_FIXED_BYTES = 65_536  # more than a datagram holds
MAX_NAME_CHARS = 255
# Columns the exports add beside the signals (speeddata/pivot.py: HDF5 and Parquet
# "receive_time", CSV "receive_time_ns" and "<time>_iso", "<time>_ns"): no field may
# take one of these names.
RESERVED_NAMES = ("receive_time", "receive_time_ns")
RESERVED_TIME_SUFFIXES = ("_iso", "_ns")


def refuse(source: str, path: str, rule: str, detail: str) -> SchemaError:
    where = f"field {path!r}" if path else "the record"
    return SchemaError(f"schema {source}: {where}: {rule}: {detail}")


def check_json(schema: dict[str, Any], source: str) -> None:
    """Nesting and size of the JSON, without recursion (so that a schema nested 100,000
    deep is refused, not a RecursionError), before fastavro walks it."""
    stack: list[tuple[Any, int, str, bool]] = [(schema, 1, "", False)]
    while stack:
        value, depth, path, is_field = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise refuse(source, path, "nesting depth",
                          f"JSON nested over {MAX_JSON_DEPTH} levels (at most {MAX_DEPTH} "
                          "records, arrays, maps and unions)")
        if isinstance(value, dict):
            if is_field:
                path = f"{path}.{value.get('name')}" if path else str(value.get("name"))
            for key, v in value.items():
                if isinstance(v, dict):
                    stack.append((v, depth + 1, path, False))
                elif isinstance(v, list):
                    stack.extend((item, depth + 2, path, key == "fields") for item in v
                                 if isinstance(item, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, path, False) for v in value if isinstance(v, dict | list))
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
               .encode("utf-8", "surrogatepass"))
    if size > MAX_SCHEMA_BYTES:
        raise refuse(source, "", "schema size",
                      f"{size} bytes of JSON, at most {MAX_SCHEMA_BYTES} (written compactly)")


def bad_name(name: Any) -> str:
    """Why a field name cannot be an HDF5 dataset, CSV column or Parquet field ('' if it
    can): Avro takes any string, they do not."""
    if not isinstance(name, str) or not name:
        return "a name must be a non-empty string"
    if len(name) > MAX_NAME_CHARS:
        return f"{len(name)} characters, at most {MAX_NAME_CHARS}"
    if name in (".", ".."):
        return f"{name!r} is a path, not a name"
    if "/" in name:
        return "no '/' (HDF5 reads it as a group path)"
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
    if bad is not None:
        return f"no control characters (U+{ord(bad):04X})"
    if '"' in name or "\\" in name:
        return "no '\"' or '\\' (the schema's canonical form, its fingerprint, cannot hold them)"
    return ""


def check_types(parsed: Any, source: str, time_field: str) -> None:
    """Depth, sizes and names over the schema with each named type expanded where it is
    used (as every reader expands it). The walk stops at the first limit broken, so it
    costs at most MAX_TYPES steps whatever the schema."""
    named: dict[str, Any] = {}
    seen = {"fields": 0, "types": 0}
    reserved = {*RESERVED_NAMES, *(time_field + s for s in RESERVED_TIME_SUFFIXES)}

    def walk(t: Any, path: str, depth: int, open_names: frozenset[str]) -> None:
        seen["types"] += 1
        if seen["types"] > MAX_TYPES:
            raise refuse(source, path, "types in all", f"over {MAX_TYPES} (fields' types, "
                          "array items, map values, union branches; a named type at each use)")
        if isinstance(t, str):
            if t in open_names:
                raise refuse(source, path, "nesting depth",
                              f"type {t!r} contains itself (a recursive type has no depth "
                              "limit)")
            if t in named:
                walk(named[t], path, depth, open_names)
            return
        complex_type = isinstance(t, list) or t.get("type") in ("record", "error", "array",
                                                                  "map")
        if complex_type and depth + 1 > MAX_DEPTH:
            raise refuse(source, path, "nesting depth",
                          f"over {MAX_DEPTH} records, arrays, maps and unions nested")
        if isinstance(t, list):
            if len(t) > MAX_UNION_BRANCHES:
                raise refuse(source, path, "union size",
                              f"{len(t)} branches, at most {MAX_UNION_BRANCHES}")
            for i, branch in enumerate(t):
                if isinstance(branch, list):
                    raise refuse(source, f"{path}(branch {i})", "union in a union",
                                  "the Avro specification has a union hold no union; "
                                  "list its branches in one")
                walk(branch, f"{path}(branch {i})", depth + 1, open_names)
            return
        kind = t["type"]
        if kind in ("record", "error", "enum", "fixed"):
            named.setdefault(t["name"], t)
        if kind in ("record", "error"):
            inside = open_names | {t["name"]}
            for f in t["fields"]:
                name = f["name"]
                here = f"{path}.{name}" if path else str(name)
                seen["fields"] += 1
                if seen["fields"] > MAX_FIELDS:
                    raise refuse(source, here, "fields in all", f"over {MAX_FIELDS} (nested "
                                  "records' fields too, a named type counted at each use)")
                if why := bad_name(name):
                    raise refuse(source, here, "field name", why)
                if not path and name in reserved:
                    raise refuse(source, here, "reserved name",
                                  f"the exports name a column of their own {name!r}; "
                                  "rename the field")
                walk(f["type"], here, depth + 1, inside)
        elif kind == "enum" and len(t["symbols"]) > MAX_ENUM_SYMBOLS:
            raise refuse(source, path, "enum size",
                          f"{len(t['symbols'])} symbols, at most {MAX_ENUM_SYMBOLS}")
        elif kind == "fixed" and not (isinstance(t["size"], int) and
                                      0 <= t["size"] <= MAX_FIXED_BYTES):
            raise refuse(source, path, "fixed size",
                          f"{t['size']!r} bytes, from 0 to {MAX_FIXED_BYTES}")
        elif kind == "array":
            walk(t["items"], f"{path}[]", depth + 1, open_names)
        elif kind == "map":
            walk(t["values"], f"{path}{{}}", depth + 1, open_names)

    walk(parsed, "", 0, frozenset())
