"""Derived channel files: ``<channels dir>/<name>.derived.toml``, beside the schemas.

```toml
name = "power"
doc = "what the motor draws"
on = "motor"                      # optional: the channel whose samples drive
[signals.power]
expression = "motor.current * motor.voltage"
unit = "W"
doc = "electrical power"
limits = { warn = [0, 500] }      # optional, as a schema field's
```
Read with tomllib into frozen dataclasses; anything else is a DerivedError naming the
file, the signal and the position. Expressions are compiled against the channels in
speeddata/derived/live.py, where the schemas are known."""

from __future__ import annotations

import os
import re
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speeddata.errors import DerivedError, SchemaError, UnknownChannelError
from speeddata.schemas import Limits, parse_limits

SUFFIX = ".derived.toml"
MAX_FILE_BYTES = 65_536
MAX_SIGNALS = 100
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
CHANNEL_KEYS = {"name", "doc", "on", "signals"}
SIGNAL_KEYS = {"expression", "unit", "doc", "limits"}


@dataclass(frozen=True)
class DerivedSignal:
    name: str
    expression: str
    unit: str = ""
    doc: str = ""
    limits: Limits | None = None


@dataclass(frozen=True)
class DerivedChannel:
    """A derived channel as its file declares it (expressions not yet compiled)."""

    name: str
    signals: tuple[DerivedSignal, ...]
    doc: str = ""
    on: str | None = None  # the driving channel; None: the first one the first names
    source: str = ""  # the file, for messages
    text: str = ""  # the file's TOML, as stored


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DerivedError(f"{where} must be text, not {type(value).__name__}")
    return value


def parse(text: str, source: str) -> DerivedChannel:
    """A derived channel from its TOML text; DerivedError says what is wrong where."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise DerivedError(f"derived {source}: over {MAX_FILE_BYTES} bytes")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DerivedError(f"derived {source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - CHANNEL_KEYS)
    if unknown:
        raise DerivedError(f"derived {source}: unknown key(s) {unknown} (keys: "
                           f"{', '.join(sorted(CHANNEL_KEYS))})")
    name = _text(data.get("name"), f"derived {source}: 'name'")
    if not NAME.fullmatch(name):
        raise DerivedError(f"derived {source}: name {name[:140]!r}: use letters, digits and "
                           "'_', not starting with a digit (it is a file and group name)")
    on = data.get("on")
    if on is not None and not NAME.fullmatch(_text(on, f"derived {source}: 'on'")):
        raise DerivedError(f"derived {source}: 'on' {on[:140]!r} is not a channel name")
    signals = data.get("signals")
    if not isinstance(signals, dict) or not signals:
        raise DerivedError(f"derived {source}: no signals: add [signals.NAME] tables with "
                           "an expression each")
    if len(signals) > MAX_SIGNALS:
        raise DerivedError(f"derived {source}: {len(signals)} signals, at most {MAX_SIGNALS}")
    out = []
    for key, table in signals.items():
        where = f"derived {source} signal {key[:140]!r}"
        if not NAME.fullmatch(key) or key == "time":
            raise DerivedError(f"{where}: a signal name is letters, digits and '_', not "
                               "starting with a digit, and not 'time'")
        if not isinstance(table, dict):
            raise DerivedError(f"{where}: must be a table with an expression")
        if bad := sorted(set(table) - SIGNAL_KEYS):
            raise DerivedError(f"{where}: unknown key(s) {bad} (keys: "
                               f"{', '.join(sorted(SIGNAL_KEYS))})")
        if "expression" not in table:
            raise DerivedError(f"{where}: no expression")
        limits = None
        if "limits" in table:
            try:
                limits = parse_limits(table["limits"], where)
            except SchemaError as exc:
                raise DerivedError(str(exc)) from None
        out.append(DerivedSignal(key, _text(table["expression"], f"{where}: expression"),
                                 _text(table.get("unit", ""), f"{where}: unit"),
                                 _text(table.get("doc", ""), f"{where}: doc"), limits))
    return DerivedChannel(name, tuple(out), _text(data.get("doc", ""), f"derived {source}: "
                          "'doc'"), on, source, text)


def load_file(path: Path) -> DerivedChannel:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DerivedError(f"derived {path}: over {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DerivedError(f"derived {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DerivedError(f"derived {path}: not UTF-8 text; save it as UTF-8") from None
    channel = parse(text, str(path))
    if path.name != channel.name + SUFFIX:
        raise DerivedError(f"derived {path}: name {channel.name!r} differs from the file name "
                           f"(they must be equal: {channel.name}{SUFFIX})")
    return channel


def load_dir(directory: Path) -> tuple[list[DerivedChannel], list[DerivedError]]:
    """Every ``*.derived.toml`` of ``directory``; bad files returned as errors."""
    found, errors = [], []
    for path in sorted(directory.glob("*" + SUFFIX)) if directory.is_dir() else []:
        try:
            found.append(load_file(path))
        except DerivedError as exc:
            errors.append(exc)
    return found, errors


def store(directory: Path, channel: DerivedChannel, replace: bool = False) -> Path:
    """Write ``channel``'s text to ``<directory>/<name>.derived.toml`` whole or not at all
    (checked by the caller against the channels: see live.check)."""
    from speeddata.errors import ConflictError

    path = directory / f"{channel.name}{SUFFIX}"
    if path.exists() and not replace:
        if path.read_text(encoding="utf-8") == channel.text:
            return path
        raise ConflictError(f"derived channel {channel.name!r} exists: say replace (REST: "
                            "{\"derived\": ..., \"replace\": true}; CLI: --replace)")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{channel.name}{SUFFIX}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(channel.text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def retire(directory: Path, name: str, now_ns: int) -> Path | None:
    """Move ``<name>.derived.toml`` to ``retired/`` (None when there is none)."""
    path = directory / f"{name}{SUFFIX}"
    if not NAME.fullmatch(name) or not path.exists():
        return None
    (directory / "retired").mkdir(exist_ok=True)
    target = directory / "retired" / f"{name}.{now_ns}{SUFFIX}"
    os.replace(path, target)
    return target


def registration(body: Any) -> tuple[DerivedChannel, bool] | None:
    """A ``POST /api/channels`` body ``{"derived": TOML text, "replace": bool}`` parsed
    (None: the body is a schema registration)."""
    if not (isinstance(body, dict) and "derived" in body):
        return None
    if unknown := sorted(set(body) - {"derived", "replace"}):
        raise DerivedError(f"registration: unknown key(s) {unknown}; send "
                           "{\"derived\": TOML text, \"replace\": true|false}")
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise DerivedError("registration: replace must be true or false")
    return parse(_text(body["derived"], "registration: derived"), "<registered>"), replace


def unknown(name: str) -> UnknownChannelError:
    return UnknownChannelError(f"no derived channel {name[:140]!r}")
