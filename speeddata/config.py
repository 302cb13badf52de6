"""The one typed configuration: embedded defaults, then one TOML file, then CLI flags.

Every setting is declared once below, as a dataclass field with its default and help
text. The TOML loader, the CLI flags (``--section-key``), ``speeddata config`` and
the README table are all derived from these declarations.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeddata.errors import ConfigError

PROJECT_DIR = Path(__file__).resolve().parents[1]
ENV_CONFIG = "SPEEDDATA_CONFIG"


def setting(default: Any, help: str, kind: str | None = None) -> Any:
    """Declare one setting. ``kind`` refines the Python type: size, group, path, list."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, "kind": kind})
    return field(default=default, metadata={"help": help, "kind": kind})


@dataclass(frozen=True)
class Group:
    """A multicast group and port, written ``"239.1.1.1:6000"``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ChannelsConfig:
    dir: Path = setting(PROJECT_DIR / "schemas", "Directory of channel schemas (*.avsc).", "path")
    legacy: list = setting(
        ["example"],
        "Channels whose prototype senders send bare Avro bodies: 'name' (on the relay "
        "port) or 'name:port' (on a port of its own).",
        "list",
    )


@dataclass(frozen=True)
class CacheConfig:
    dir: Path = setting(PROJECT_DIR / "cache", "Directory of the rolling Avro cache.", "path")
    rotate_bytes: int = setting(64 * 2**20, "Start a new cache file past this size.", "size")
    rotate_seconds: float = setting(600.0, "Start a new cache file past this age (s).")
    max_bytes: int = setting(
        0, "Cache quota; 0 means the smaller of 10 GiB and half the free disk at start.", "size"
    )
    fsync_seconds: float = setting(5.0, "Fsync open cache files at least this often (s).")


@dataclass(frozen=True)
class RelayConfig:
    host: str = setting("0.0.0.0", "Address the relay receives UDP on.")
    port: int = setting(26000, "UDP port the relay receives on (the prototype's port).")
    max_datagram: int = setting(
        16384, "Largest datagram accepted, in bytes; longer ones are dropped and counted."
    )
    batch: int = setting(256, "Most datagrams handled per wakeup.")
    rcvbuf: int = setting(32 * 2**20, "Socket receive buffer asked of the kernel.", "size")
    io: str = setting("auto", "Batch I/O: mmsg (Linux recvmmsg/sendmmsg), portable, or auto.")
    workers: int = setting(
        1, "Relay processes sharing the port (SO_REUSEPORT), each with its own cache files.")
    linger_ms: float = setting(
        10.0, "Longest wait after a small batch so the next wakeup takes more datagrams: less "
        "CPU at low rates, at most this much added multicast latency; 0 turns it off.")


@dataclass(frozen=True)
class MulticastConfig:
    full: Group | None = setting(
        Group("239.255.26.1", 26001), "Full-rate group ('' turns it off).", "group"
    )
    decimated: Group | None = setting(
        Group("239.255.26.2", 26002), "Decimated group ('' turns it off).", "group"
    )
    ttl: int = setting(1, "Multicast TTL (1: stays on the local network).")
    interface: str = setting(
        "127.0.0.1",
        "Address of the interface multicast goes out of and is joined on; 127.0.0.1 keeps "
        "it on this host, set the LAN address to reach other hosts.",
    )
    decimated_rate_hz: float = setting(50.0, "Most datagrams per second per channel, decimated.")


@dataclass(frozen=True)
class WebConfig:
    host: str = setting("127.0.0.1", "Address the stripchart server listens on.")
    port: int = setting(8080, "TCP port of the stripchart server.")
    frame_hz: float = setting(30.0, "Frames per second pushed to each page.")
    history_seconds: float = setting(600.0, "History kept per signal (250 ms buckets).")
    detail_seconds: float = setting(60.0, "Fine history kept per signal (10 ms buckets).")


@dataclass(frozen=True)
class ExportsConfig:
    dir: Path = setting(PROJECT_DIR / "exports", "Directory pivot writes HDF5 files to.", "path")
    compression: str = setting("gzip", "HDF5 compression: gzip, lzf or none.")


@dataclass(frozen=True)
class Config:
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    multicast: MulticastConfig = field(default_factory=MulticastConfig)
    web: WebConfig = field(default_factory=WebConfig)
    exports: ExportsConfig = field(default_factory=ExportsConfig)

    def cache_quota(self) -> int:
        """The cache quota in bytes, resolving 0 to its documented automatic value."""
        if self.cache.max_bytes:
            return self.cache.max_bytes
        self.cache.dir.mkdir(parents=True, exist_ok=True)
        return min(10 * 2**30, shutil.disk_usage(self.cache.dir).free // 2)

    def legacy_ports(self) -> dict[str, int]:
        """Legacy channel name to the UDP port its bare bodies arrive on."""
        ports = {}
        for item in self.channels.legacy:
            name, _, port = item.partition(":")
            ports[name] = int(port) if port else self.relay.port
        return ports


_SECTION_TYPES = {
    "channels": ChannelsConfig,
    "cache": CacheConfig,
    "relay": RelayConfig,
    "multicast": MulticastConfig,
    "web": WebConfig,
    "exports": ExportsConfig,
}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(value: Any) -> int:
    """Bytes from ``4096``, ``"64MiB"``, ``"10 GB"``, ``"512k"``."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '64MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (write 4096, '64MiB' or '10GB')")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    power = "bkmgt".index(unit[0]) if unit else 0
    return int(number * (base**power if unit and unit[0] != "b" else 1))


def parse_group(value: Any) -> Group | None:
    if value in ("", None):
        return None
    host, sep, port = str(value).rpartition(":")
    try:
        address = ipaddress.IPv4Address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"{value!r} is not a group like '239.1.1.1:6000'") from None
    if not sep or not address.is_multicast or not 0 < number < 65536:
        raise ValueError(f"{value!r} is not a multicast group and port like '239.1.1.1:6000'")
    return Group(host, number)


def _convert(spec: dataclasses.Field, value: Any, base: Path) -> Any:
    kind = spec.metadata["kind"]
    if kind == "size":
        return parse_size(value)
    if kind == "group":
        return parse_group(value)
    if kind == "path":
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else (base / path)
    if kind == "list":
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a list of strings")
        return value
    python_type = {"str": str, "int": int, "float": float, "bool": bool}[spec.type]
    if python_type is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if python_type is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if python_type is int and isinstance(value, str):
        return int(value)
    if python_type is float and isinstance(value, str):
        return float(value)
    if not isinstance(value, python_type) or isinstance(value, bool):
        raise ValueError(f"expected {python_type.__name__}, got {type(value).__name__}")
    return value


def _check(config: Config) -> None:
    """Cross-field checks that no single value can make."""
    for item in config.channels.legacy:
        name, _, port = item.partition(":")
        if not name or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ConfigError(f"[channels] legacy: {item!r} is not 'channel' or 'channel:port'")
    for key in ("rotate_seconds", "fsync_seconds"):
        if getattr(config.cache, key) <= 0:
            raise ConfigError(f"[cache] {key}: must be more than 0")
    if config.relay.io not in ("auto", "mmsg", "portable"):
        raise ConfigError("[relay] io: must be auto, mmsg or portable")
    if not 0 <= config.relay.linger_ms <= 50:
        raise ConfigError("[relay] linger_ms: must be 0 to 50")
    if config.relay.workers < 1:
        raise ConfigError("[relay] workers: must be at least 1")
    if config.relay.workers > 1 and config.relay.port == 0:
        raise ConfigError("[relay] workers: several workers need a fixed [relay] port")
    if config.relay.batch < 1:
        raise ConfigError("[relay] batch: must be at least 1")
    if not 0 <= config.relay.port < 65536 or not 0 <= config.web.port < 65536:
        raise ConfigError("[relay] port / [web] port: must be 0 to 65535")
    for key in ("frame_hz", "history_seconds", "detail_seconds"):
        if getattr(config.web, key) <= 0:
            raise ConfigError(f"[web] {key}: must be more than 0")
    if config.exports.compression not in ("gzip", "lzf", "none"):
        raise ConfigError("[exports] compression: must be gzip, lzf or none")
    if config.multicast.decimated_rate_hz <= 0:
        raise ConfigError("[multicast] decimated_rate_hz: must be more than 0")


def build(
    file: Path | None = None, overrides: dict[tuple[str, str], Any] | None = None
) -> Config:
    """The effective config: defaults, then ``file`` (or $SPEEDDATA_CONFIG), then overrides.

    Overrides are ``{(section, key): value}`` as given on the command line.
    """
    if file is None and os.environ.get(ENV_CONFIG):
        file = Path(os.environ[ENV_CONFIG])
    layers: list[tuple[dict[str, Any], Path, str]] = []
    if file is not None:
        try:
            data = tomllib.loads(Path(file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config file {file}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file}: not valid TOML: {exc}") from None
        layers.append((data, Path(file).resolve().parent, f"config file {file}"))
    if overrides:
        flags: dict[str, dict[str, Any]] = {}
        for (section, key), value in overrides.items():
            flags.setdefault(section, {})[key] = value
        layers.append((flags, Path.cwd(), "command line"))

    sections = {name: {} for name in _SECTION_TYPES}
    for data, base, origin in layers:
        for section, values in data.items():
            if section not in _SECTION_TYPES:
                raise ConfigError(
                    f"{origin}: unknown section [{section}] "
                    f"(known: {', '.join(_SECTION_TYPES)})"
                )
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: [{section}] must be a table of keys")
            specs = {f.name: f for f in dataclasses.fields(_SECTION_TYPES[section])}
            for key, value in values.items():
                if key not in specs:
                    raise ConfigError(
                        f"{origin}: unknown key [{section}] {key} "
                        f"(known: {', '.join(specs)})"
                    )
                try:
                    sections[section][key] = _convert(specs[key], value, base)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{origin}: [{section}] {key} = {value!r}: {exc}") from None
    config = Config(**{name: _SECTION_TYPES[name](**values) for name, values in sections.items()})
    _check(config)
    return config


def declarations() -> list[tuple[str, str, Any, str]]:
    """Every setting as ``(section, key, default, help)``, in declaration order."""
    rows = []
    defaults = Config()
    for section, cls in _SECTION_TYPES.items():
        for spec in dataclasses.fields(cls):
            rows.append(
                (section, spec.name, getattr(getattr(defaults, section), spec.name),
                 spec.metadata["help"])
            )
    return rows


def toml_value(value: Any) -> str:
    """A setting's value written as TOML."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_file(path: Path, settings: dict[str, dict[str, Any]]) -> Path:
    """Write ``{section: {key: value}}`` as a TOML file that ``--config`` accepts."""
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def dump(config: Config) -> str:
    """The effective configuration as a TOML document that ``--config`` accepts."""
    lines = []
    for section, cls in _SECTION_TYPES.items():
        lines.append(f"[{section}]")
        for spec in dataclasses.fields(cls):
            value = getattr(getattr(config, section), spec.name)
            lines.append(f"{spec.name} = {toml_value(value)}  # {spec.metadata['help']}")
        lines.append("")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's table of settings, generated from the declarations."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for section, key, default, help in declarations():
        shown = toml_value(default).replace(str(PROJECT_DIR), "<project>")
        rows.append(f"| `[{section}] {key}` | `{shown}` | {help} |")
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser, sections: list[str]) -> None:
    """Add ``--config`` and a ``--section-key`` flag for each setting of ``sections``."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML file overriding the defaults (or set ${ENV_CONFIG})",
    )
    for section in sections:
        group = parser.add_argument_group(f"[{section}] settings")
        for spec in dataclasses.fields(_SECTION_TYPES[section]):
            flag = f"--{section}-{spec.name}".replace("_", "-")
            group.add_argument(
                flag,
                dest=f"cfg__{section}__{spec.name}",
                metavar=spec.name.upper(),
                default=argparse.SUPPRESS,
                help=spec.metadata["help"],
            )


def from_args(args: argparse.Namespace) -> Config:
    """Build the config from parsed CLI arguments (``--config`` and setting flags)."""
    overrides = {}
    for name, value in vars(args).items():
        if name.startswith("cfg__"):
            _, section, key = name.split("__")
            overrides[(section, key)] = value
    return build(getattr(args, "config", None), overrides)
