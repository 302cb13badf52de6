"""Channels: Avro record schemas in ``<dir>/<channel>.avsc``, found by name or fingerprint."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro

from speeddata import packaged, wire
from speeddata.errors import ConflictError, SchemaError, UnknownChannelError
from speeddata.schemacheck import (
    MAX_JSON_DEPTH,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_FILE_BYTES,
    check_json,
    check_types,
    refuse,
)

if TYPE_CHECKING:
    from speeddata.bodycheck import BodyCheck

log = logging.getLogger("speeddata.schemas")

DEMO_DIR = packaged.demo_dir()
"""The demo channels' schemas: ``schemas/`` of a checkout, shipped in the wheel."""
DEMO_CHANNELS = ("env", "example", "motor")
"""The demo channels, by name: in a checkout, DEMO_DIR holds the user's channels too."""
DEMO_DERIVED = ("power",)
"""The demo derived channels (``<name>.derived.toml``, speeddata/derived), by name."""


def demo_files() -> list[Path]:
    """The demo channels' schema and derived files (and none of a user's beside them)."""
    return [*(DEMO_DIR / f"{name}.avsc" for name in DEMO_CHANNELS),
            *(DEMO_DIR / f"{name}.derived.toml" for name in DEMO_DERIVED)]


def copy_demo_channels(folder: Path) -> Path:
    """Copy the demo channels' schemas into ``folder`` (made if missing)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for path in demo_files():
        shutil.copy(path, folder / path.name)
    return folder

NUMERIC_TYPES = {"int", "long", "float", "double", "boolean"}
TEXT_TYPES = {"string", "enum"}

Range = tuple[float, float]  # (low, high); -inf or inf where a side has no limit


@dataclass(frozen=True)
class Limits:
    """A signal's limits, from the schema field's ``"limits": {"warn": [lo, hi],
    "alarm": [lo, hi]}`` (either may be left out, ``null`` leaves a side open)."""

    warn: Range | None = None
    alarm: Range | None = None

    def level(self, value: float) -> str:
        """"alarm", "warn" or "" (within limits, or not a number)."""
        for name, bounds in (("alarm", self.alarm), ("warn", self.warn)):
            if bounds is not None and not bounds[0] <= value <= bounds[1] and value == value:
                return name
        return ""

    def as_json(self) -> dict[str, list[float | None]]:
        return {name: [None if math.isinf(v) else v for v in bounds]
                for name, bounds in (("warn", self.warn), ("alarm", self.alarm)) if bounds}


def parse_limits(value: Any, where: str) -> Limits:
    """Limits from a field's ``limits`` attribute; SchemaError names the field."""
    if not isinstance(value, dict) or not value or set(value) - {"warn", "alarm"}:
        raise SchemaError(f"{where}: limits must be {{\"warn\": [lo, hi], \"alarm\": [lo, hi]}}")
    ranges: dict[str, Range] = {}
    for name, pair in value.items():
        if not (isinstance(pair, list) and len(pair) == 2 and all(
                v is None or (isinstance(v, int | float) and not isinstance(v, bool)
                              and math.isfinite(v)) for v in pair)):
            raise SchemaError(f"{where}: limits {name} must be [lo, hi] of numbers or null")
        low = -math.inf if pair[0] is None else float(pair[0])
        high = math.inf if pair[1] is None else float(pair[1])
        if low > high:
            raise SchemaError(f"{where}: limits {name} has its low {low} above its high {high}")
        ranges[name] = (low, high)
    return Limits(ranges.get("warn"), ranges.get("alarm"))


@dataclass(frozen=True)
class Signal:
    """One field of a channel: a plottable number, a text value, or something else."""

    name: str
    avro_type: str  # int, long, float, double, boolean, string, enum, or the Avro type name
    kind: str  # "number", "text" or "other"
    unit: str = ""
    doc: str = ""
    nullable: bool = False
    symbols: tuple[str, ...] = ()
    limits: Limits | None = None


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per schema
class Channel:
    """A record schema and what speeddata derives from it once, at load time."""

    name: str
    schema: dict[str, Any]
    parsed: Any = field(repr=False, compare=False)
    fingerprint: bytes
    aliases: tuple[bytes, ...]  # other fingerprints senders compute (wire.alias_fingerprints)
    time_field: str
    signals: tuple[Signal, ...]
    source: str = ""  # the file it came from, for messages

    @functools.cached_property
    def check(self) -> BodyCheck:
        """Which bodies are exactly one record of this schema (made on first use: the
        sender never needs it, and it needs numpy)."""
        from speeddata.bodycheck import BodyCheck

        return BodyCheck(self.parsed)

    def signal(self, name: str) -> Signal:
        for signal in self.signals:
            if signal.name == name:
                return signal
        raise UnknownChannelError(f"channel {self.name!r} has no signal {name!r}")


def _signal(f: dict[str, Any], where: str = "") -> Signal:
    avro_type = f["type"]
    nullable = False
    if isinstance(avro_type, list):  # a union: ["null", X] is a nullable X
        branches = [t for t in avro_type if t != "null"]
        nullable = len(branches) < len(avro_type)
        avro_type = branches[0] if len(branches) == 1 and not isinstance(
            branches[0], list) else "union"
    symbols: tuple[str, ...] = ()
    if isinstance(avro_type, dict):  # enum, or a primitive with a logicalType
        symbols = tuple(avro_type.get("symbols", ()))
        avro_type = avro_type["type"]
    kind = (
        "number" if avro_type in NUMERIC_TYPES else "text" if avro_type in TEXT_TYPES else "other"
    )
    limits = None
    if "limits" in f:
        limits = parse_limits(f["limits"], f"{where} field {f['name']!r}")
        if kind != "number":
            raise SchemaError(f"{where} field {f['name']!r}: limits are for numeric fields")
    return Signal(
        limits=limits,
        name=f["name"],
        avro_type=str(avro_type),
        kind=kind,
        unit=str(f.get("unit", "")),
        doc=str(f.get("doc", "")),
        nullable=nullable,
        symbols=symbols,
    )


def channel_from_schema(schema: dict[str, Any], source: str = "<schema>",
                        limits: bool = False) -> Channel:
    """Check a record schema and build its Channel; SchemaError says what is wrong where.

    ``limits``: also hold it to the registration limits (MAX_..., names the exports can
    hold), as registering and loading the channels directory do. Schemas accepted before
    (a cache file's header) are read without them, so cached data stays readable."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"schema {source}: the top level must be an Avro record")
    name = schema.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"schema {source}: the record has no name")
    if limits:
        check_json(schema, source)
    try:
        parsed = fastavro.parse_schema(schema, _write_hint=False)
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise SchemaError(f"schema {source}: {exc}") from None
    fields = schema.get("fields", [])
    names = [f.get("name") for f in fields]
    seen: set = set()  # one pass: list.count per field took 19 s for 20,000 fields
    doubled = sorted({n for n in names if n in seen or seen.add(n)})
    if doubled:
        raise SchemaError(f"schema {source}: field(s) {', '.join(map(str, doubled))} appear "
                          "more than once")
    time_field = schema.get("abscissa", "time")
    times = [f for f in fields if f.get("name") == time_field]
    if not times:
        raise SchemaError(
            f"schema {source}: no field {time_field!r} for the time axis "
            "(add a long field 'time' in ns since the epoch, or name another with 'abscissa')"
        )
    time_type = times[0]["type"]
    if (time_type.get("type") if isinstance(time_type, dict) else time_type) != "long":
        raise SchemaError(f"schema {source}: time field {time_field!r} must be a long (ns)")
    if limits:
        check_types(parsed, source, time_field)
    try:  # fastavro writes the canonical form without escaping: a '"' in a name breaks it
        fingerprint = wire.fingerprint(schema)
        aliases = tuple(wire.alias_fingerprints(schema))
    except ValueError as exc:
        raise SchemaError(f"schema {source}: no canonical form, so no fingerprint ({exc}); "
                          "a name with '\"' or '\\' cannot be used") from None
    return Channel(
        name=name,
        schema=schema,
        parsed=parsed,
        fingerprint=fingerprint,
        aliases=aliases,
        time_field=time_field,
        signals=tuple(_signal(f, f"schema {source}") for f in fields
                      if f.get("name") != time_field),
        source=source,
    )


def load_file(path: Path) -> Channel:
    """Load one ``.avsc`` file under the registration limits; the record name must equal
    the file name."""
    try:
        size = path.stat().st_size
        if size > MAX_SCHEMA_FILE_BYTES:
            raise refuse(str(path), "", "schema size", f"the file has {size} bytes, at most "
                          f"{MAX_SCHEMA_FILE_BYTES} are read (a schema is at most "
                          f"{MAX_SCHEMA_BYTES} bytes of JSON)")
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaError(f"schema {path}: cannot read: {exc.strerror}") from None
    except RecursionError:
        raise refuse(str(path), "", "nesting depth", f"JSON nested over {MAX_JSON_DEPTH} "
                      "levels") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"schema {path}: not UTF-8 text (byte {exc.start} is "
                          f"{exc.object[exc.start]:#04x}); save it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"schema {path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    channel = channel_from_schema(schema, str(path), limits=True)
    if channel.name != path.stem:
        raise SchemaError(
            f"schema {path}: record name {channel.name!r} differs from the file name "
            f"{path.stem!r} (they must be equal: the file name is the channel name)"
        )
    return channel


class DirWatch:
    """Tells when a channels directory changed (a schema or a derived channel file added,
    edited or removed), by its files' names, sizes and modification times: a few stat
    calls, no reading."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen = self._signature()

    def _signature(self) -> tuple:
        try:
            return tuple(sorted((p.name, st.st_mtime_ns, st.st_size)
                                for pattern in ("*.avsc", "*.derived.toml")  # derived too
                                for p in self.directory.glob(pattern) for st in [p.stat()]))
        except OSError:  # the directory or a file went away meanwhile: look again later
            return ()

    def changed(self) -> bool:
        now = self._signature()
        if now == self._seen:
            return False
        self._seen = now
        return True


class Registry:
    """The known channels, by name and by wire fingerprint."""

    def __init__(self, channels: list[Channel] | None = None) -> None:
        self._by_name: dict[str, Channel] = {}
        self._by_fingerprint: dict[bytes, Channel] = {}
        for channel in channels or []:
            self.add(channel)

    @classmethod
    def load_dir(cls, directory: Path) -> tuple[Registry, list[SchemaError]]:
        """Load every ``*.avsc`` file; bad files are returned as errors, not raised."""
        registry = cls()
        errors: list[SchemaError] = []
        if not directory.is_dir():
            errors.append(SchemaError(f"schema directory {directory} does not exist"))
            return registry, errors
        for path in sorted(directory.glob("*.avsc")):
            try:
                registry.add(load_file(path))
            except SchemaError as exc:
                errors.append(exc)
        return registry, errors

    def add(self, channel: Channel) -> None:
        old = self._by_name.get(channel.name)
        if old is not None:
            for fp in (old.fingerprint, *old.aliases):
                self._by_fingerprint.pop(fp, None)
        clash = self._by_fingerprint.get(channel.fingerprint)
        if clash is not None:
            raise SchemaError(
                f"schema {channel.source}: same fingerprint as channel {clash.name!r}"
            )
        self._by_name[channel.name] = channel
        for fp in (channel.fingerprint, *channel.aliases):
            self._by_fingerprint.setdefault(fp, channel)

    def __getitem__(self, name: str) -> Channel:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownChannelError(f"unknown channel {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Channel | None:
        return self._by_name.get(name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def by_fingerprint(self, fp: bytes) -> Channel | None:
        return self._by_fingerprint.get(fp)

    @property
    def fingerprints(self) -> dict[bytes, Channel]:
        """The routing table: fingerprint bytes to channel (read-only use)."""
        return self._by_fingerprint


_CHANNEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def log_schema_errors(errors: list[SchemaError], logger: logging.Logger) -> None:
    """Each schema file that could not be loaded, as the relay, the server and the CLI
    log it: the channel is skipped, the others run."""
    for error in errors:
        logger.error("%s (channel skipped)", error)


def load_channels(directory: Path, logger: logging.Logger) -> Registry:
    """The channels of ``directory`` as it is now, the bad schemas logged and skipped."""
    registry, errors = Registry.load_dir(directory)
    log_schema_errors(errors, logger)
    return registry


def store_schema(directory: Path, schema: Any, registry: Registry,
                 replace: bool = False) -> Channel:
    """Register a channel: check ``schema`` as a schema file is checked, then write it to
    ``<directory>/<name>.avsc`` whole or not at all (a running relay takes it within a
    second). The same schema again changes nothing. A channel of that name with another
    schema is kept (ConflictError) unless ``replace``; a new fingerprint starts a new
    cache file, so cached data keeps the schema it was written with."""
    channel = channel_from_schema(schema, "<registered schema>", limits=True)
    if not _CHANNEL_NAME.fullmatch(channel.name):
        raise SchemaError(f"channel name {channel.name[:140]!r}: use letters, digits and '_', "
                          "not starting with a digit (it becomes a file name)")
    clash = registry.by_fingerprint(channel.fingerprint)
    if clash is not None and clash.name != channel.name:
        raise ConflictError(f"channel {clash.name!r} has the same schema (fingerprint); "
                            "rename the record to make it another channel")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{channel.name}.avsc"
    if path.exists():
        if _stored(path) == schema:
            return channel_from_schema(schema, str(path), limits=True)
        if not replace:
            raise _exists(channel.name)
    tmp = directory / f".{channel.name}.avsc.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps(schema, indent=1) + "\n", encoding="utf-8")
    if replace:
        os.replace(tmp, path)
    else:  # made only if still absent: a registration racing this one is not overwritten
        try:
            os.link(tmp, path)
        except FileExistsError:
            tmp.unlink()
            raise _exists(channel.name) from None
        except OSError:  # no hard links on this file system: absent a moment ago will do
            os.replace(tmp, path)
        else:
            tmp.unlink()
    return channel_from_schema(schema, str(path), limits=True)


def _stored(path: Path) -> Any:
    """The JSON of a schema file, None if it cannot be read as JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _exists(name: str) -> ConflictError:
    return ConflictError(f"channel {name!r} exists with another schema: say replace "
                         "(REST: {\"schema\": ..., \"replace\": true}; CLI: --replace) to "
                         "replace it; its cached data keeps the schema it was written with")


def registration(body: Any) -> tuple[Any, bool]:
    """The schema and the replace flag of a ``POST /api/channels`` body: the schema
    itself, or ``{"schema": {...}, "replace": true}``."""
    if not (isinstance(body, dict) and "schema" in body and "type" not in body):
        return body, False
    if unknown := sorted(set(body) - {"schema", "replace"}):
        raise SchemaError(f"registration: unknown key(s) {unknown}; send the schema, or "
                          "{\"schema\": ..., \"replace\": true}")
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise SchemaError("registration: replace must be true or false")
    return body["schema"], replace


def retire_schema(directory: Path, name: str, now_ns: int) -> Path:
    """Retire a channel: its schema moves to ``<directory>/retired/`` (kept, stamped), so
    no new data of it is accepted; what the cache holds stays readable (each cache file
    carries its schema)."""
    path = directory / f"{name}.avsc"
    if not _CHANNEL_NAME.fullmatch(name) or not path.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.avsc"))) or "none"
        raise UnknownChannelError(f"no channel {name[:140]!r} to retire (channels: {known})")
    retired = directory / "retired"
    retired.mkdir(exist_ok=True)
    target = retired / f"{name}.{now_ns}.avsc"
    os.replace(path, target)
    return target
