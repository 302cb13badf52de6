"""A channel's schema as the C generator sees it: a tree of typed nodes, each with its
C name and its largest encoded size, or a SchemaError naming the field it cannot take.

No I/O: the generator, the example writer and the tests walk the same tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from speeddata.errors import SchemaError

# C's keywords, and the macros of the headers the sender and its example include
C_KEYWORDS = frozenset({
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "void", "volatile", "while", "_Bool", "_Complex", "_Imaginary",
    "bool", "true", "false", "NULL", "errno", "stdin", "stdout", "stderr", "EOF", "assert",
    "offsetof", "linux", "unix",
})
FIXED_KINDS = {"boolean": 1, "int": 5, "long": 10, "float": 4, "double": 8, "null": 0}
LENGTH_KINDS = ("string", "bytes")
MAX_LENGTH = 65_507  # the most a UDP datagram carries (IPv4); a longer string never fits


def varint_size(n: int) -> int:
    """Bytes of Avro's zig-zag varint of ``n``."""
    u = (n << 1) ^ (n >> 63)
    size = 1
    while u > 0x7F:
        u >>= 7
        size += 1
    return size


def c_ident(name: str) -> str:
    """An Avro name as a C identifier (dots of a full name as underscores, keywords
    with a trailing underscore)."""
    ident = name.replace(".", "_")
    return ident + "_" if ident in C_KEYWORDS else ident


@dataclass
class Node:
    """One Avro type. ``kind``: an Avro primitive, or enum, fixed, record, union.
    ``cname``: the C type name of a named type; ``length``: a fixed's size or a string's
    or bytes' most bytes; ``branches``: (tag, node) of a union."""

    kind: str
    max_size: int = 0
    cname: str = ""
    name: str = ""  # a named type's full Avro name
    length: int = 0
    symbols: tuple[str, ...] = ()
    fields: list[Field] = field(default_factory=list)
    branches: list[tuple[str, Node]] = field(default_factory=list)
    logical: str = ""


@dataclass
class Field:
    name: str  # the Avro field name
    member: str  # its C member name
    node: Node


@dataclass
class Channel:
    """The channel record and its named types, in the order C must declare them."""

    root: Node
    named: list[Node]
    time_field: str


class _Builder:
    def __init__(self, prefix: str, max_length: int | None, source: str) -> None:
        self.prefix = prefix
        self.max_length = max_length
        self.source = source
        self.names: dict[str, Node | None] = {}  # None: a record being defined
        self.order: list[Node] = []

    def refuse(self, where: str, what: str) -> SchemaError:
        return SchemaError(f"schema {self.source}: field {where!r}: {what}")

    def full_name(self, t: dict[str, Any], namespace: str) -> str:
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise SchemaError(f"schema {self.source}: a {t.get('type')} has no name")
        if "." in name:
            return name
        ns = t.get("namespace", namespace)
        return f"{ns}.{name}" if ns else name

    def node(self, t: Any, where: str, namespace: str, attrs: dict[str, Any]) -> Node:
        if isinstance(t, list):
            return self.union(t, where, namespace, attrs)
        if isinstance(t, str):
            if t in FIXED_KINDS:
                return Node(t, FIXED_KINDS[t])
            if t in LENGTH_KINDS:
                return self.length_node(t, where, attrs, {})
            return self.reference(t, where, namespace)
        if not isinstance(t, dict):
            raise self.refuse(where, f"type {t!r} is not an Avro type")
        kind = t.get("type")
        if kind in ("array", "map"):
            raise self.refuse(where, f"{kind}s are not supported by the C generator (their "
                              "size has no bound); use fixed fields or separate channels")
        if kind in FIXED_KINDS:
            return Node(kind, FIXED_KINDS[kind], logical=str(t.get("logicalType", "")))
        if kind in LENGTH_KINDS:
            return self.length_node(kind, where, attrs, t)
        if kind in ("enum", "fixed", "record"):
            return self.named(t, kind, where, namespace, attrs)
        if isinstance(kind, dict | list | str):
            return self.node(kind, where, namespace, attrs)
        raise self.refuse(where, f"type {t!r} is not an Avro type")

    def length_node(self, kind: str, where: str, attrs: dict[str, Any],
                    t: dict[str, Any]) -> Node:
        most = t.get("maxLength", attrs.get("maxLength", self.max_length))
        if most is None:
            raise self.refuse(where, f"a {kind} needs its most bytes: add \"maxLength\": N "
                              "to the field (or its type), or pass --max-length N")
        if type(most) is not int or not 0 <= most <= MAX_LENGTH:
            raise self.refuse(where, f"maxLength {most!r} is not a whole number of bytes "
                              f"in 0..{MAX_LENGTH}")
        return Node(kind, varint_size(most) + most, length=most,
                    logical=str(t.get("logicalType", "")))

    def reference(self, name: str, where: str, namespace: str) -> Node:
        candidates = [name] if "." in name else [f"{namespace}.{name}"] * bool(namespace) + [
            name]
        full = next((c for c in candidates if c in self.names), None)
        if full is None:
            raise self.refuse(where, f"type {name!r} is not defined before it is used")
        found = self.names[full]
        if found is None:
            raise self.refuse(where, f"type {name!r} refers to itself (a recursive type has "
                              "no largest size)")
        return found

    def named(self, t: dict[str, Any], kind: str, where: str, namespace: str,
              attrs: dict[str, Any]) -> Node:
        full = self.full_name(t, namespace)
        if full in self.names:
            raise self.refuse(where, f"type {full!r} is defined twice")
        cname = f"{self.prefix}_{c_ident(full)}"
        if kind == "enum":
            symbols = tuple(t.get("symbols", ()))
            if not symbols:
                raise self.refuse(where, f"enum {full!r} has no symbols")
            node = Node("enum", varint_size(len(symbols) - 1), cname, full, symbols=symbols)
        elif kind == "fixed":
            size = t.get("size")
            if type(size) is not int or not 0 <= size <= MAX_LENGTH:
                raise self.refuse(where, f"fixed {full!r} has size {size!r}")
            node = Node("fixed", size, cname, full, length=size)
        else:
            self.names[full] = None
            inner = full.rpartition(".")[0]
            node = self.record(t, cname, full, where, inner)
        self.names[full] = node
        if kind != "fixed":  # a fixed is declared in place, as a byte array
            self.order.append(node)
        return node

    def record(self, t: dict[str, Any], cname: str, full: str, where: str,
               namespace: str) -> Node:
        fields = t.get("fields")
        if not isinstance(fields, list):
            raise self.refuse(where, f"record {full!r} has no list of fields")
        node = Node("record", 0, cname, full)
        members: set[str] = set()
        for f in fields:
            name = f.get("name") if isinstance(f, dict) else None
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise SchemaError(f"schema {self.source}: record {full!r} has a field "
                                  f"named {name!r}")
            path = f"{where}.{name}" if where else name
            child = self.node(f.get("type"), path, namespace, f)
            member = c_ident(name)
            if member in members:
                raise self.refuse(path, "its C name is taken by another field")
            members.add(member)
            node.fields.append(Field(name, member, child))
        node.max_size = sum(f.node.max_size for f in node.fields)
        return node

    def union(self, branches: list[Any], where: str, namespace: str,
              attrs: dict[str, Any]) -> Node:
        if not branches:
            raise self.refuse(where, "a union needs at least one branch")
        node = Node("union")
        tags: set[str] = set()
        for i, b in enumerate(branches):
            if isinstance(b, list):
                raise self.refuse(where, "a union inside a union is not Avro")
            child = self.node(b, where, namespace, attrs)
            tag = c_ident(child.name.rpartition(".")[2] if child.name else child.kind)
            if tag in tags:
                tag = f"{tag}{i}"
            tags.add(tag)
            node.branches.append((tag, child))
        node.max_size = varint_size(len(branches) - 1) + max(
            c.max_size for _, c in node.branches)
        return node


def channel_model(schema: dict[str, Any], time_field: str = "time",
                  max_length: int | None = None, source: str = "<schema>") -> Channel:
    """The C generator's view of a channel's record schema (already checked as a
    channel); ``max_length``: the most bytes of a string or bytes with no ``maxLength``."""
    name = schema["name"]
    builder = _Builder(c_ident(name.rpartition(".")[2]), max_length, source)
    full = builder.full_name(schema, "")
    builder.names[full] = None
    root = builder.record(schema, builder.prefix, full, "", full.rpartition(".")[0])
    builder.names[full] = root
    builder.order.append(root)
    return Channel(root, builder.order, time_field)
