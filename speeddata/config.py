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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speeddata.configvalues import Group, convert
from speeddata.errors import ConfigError

ENV_CONFIG = "SPEEDDATA_CONFIG"
ENV_HOME = "SPEEDDATA_HOME"
MIN_KEY = 32  # characters of a control key: shorter ones are refused, never "auth off"


def home() -> Path:
    """The data directory default paths are in: ``$SPEEDDATA_HOME``, else the current one.

    Never the package's own directory, so that an installed wheel works like a checkout.
    """
    return Path(os.path.expanduser(os.environ.get(ENV_HOME) or os.getcwd())).resolve()


def setting(default: Any, help: str, kind: str | None = None,
            bounds: tuple[float, float] | None = None) -> Any:
    """Declare one setting. ``kind`` refines the Python type: size, group, path, list,
    address; ``bounds`` are the lowest and highest values a number may take."""
    metadata = {"help": help, "kind": kind, "bounds": bounds}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ChannelsConfig:
    dir: Path = setting(
        Path("schemas"), "Directory of channel schemas (*.avsc); the default one is made "
        "with the demo channels when missing.", "path")
    legacy: list = setting(
        ["example"],
        "Channels whose prototype senders send bare Avro bodies: 'name' (on the relay "
        "port) or 'name:port' (on a port of its own).",
        "list",
    )


@dataclass(frozen=True)
class CacheConfig:
    dir: Path = setting(Path("cache"), "Directory of the rolling Avro cache.", "path")
    rotate_bytes: int = setting(64 * 2**20, "Start a new cache file past this size.", "size",
                                (1024, 2**40))
    rotate_seconds: float = setting(600.0, "Start a new cache file past this age (s).",
                                    bounds=(0.1, 7 * 86400))
    max_bytes: int = setting(
        0, "Cache quota; 0 means the smaller of 10 GiB and half of what the disk has for the "
        "cache (free space plus the cache), fixed the first time the relay starts and kept in "
        "<cache>/.quota.", "size", (0, 2**60))
    fsync_seconds: float = setting(5.0, "Fsync open cache files at least this often (s).",
                                   bounds=(0.01, 3600))


@dataclass(frozen=True)
class RelayConfig:
    host: str = setting("0.0.0.0", "Address the relay receives UDP on.", "address")
    port: int = setting(26000, "UDP port the relay receives on (the prototype's port).",
                        bounds=(0, 65535))
    max_datagram: int = setting(
        16384, "Largest datagram accepted, in bytes; longer ones are dropped and counted.",
        bounds=(16, 65507))
    batch: int = setting(256, "Most datagrams handled per wakeup.", bounds=(1, 4096))
    rcvbuf: int = setting(32 * 2**20, "Socket receive buffer asked of the kernel.", "size",
                          (4096, 2**31 - 1))
    io: str = setting("auto", "Batch I/O: mmsg (Linux recvmmsg/sendmmsg), portable, or auto.")
    workers: int = setting(
        1, "Relay processes sharing the port (SO_REUSEPORT), each with its own cache files.",
        bounds=(1, 256))
    linger_ms: float = setting(
        10.0, "Longest wait after a small batch so the next wakeup takes more datagrams: less "
        "CPU at low rates, at most this much added multicast latency; 0 turns it off.",
        bounds=(0, 50))
    allow: list = setting(
        [], "Networks datagrams are taken from, like [\"192.168.1.0/24\", \"127.0.0.1\"]; "
        "empty: any host. Others are dropped and counted (not_allowed).", "networks")


@dataclass(frozen=True)
class MulticastConfig:
    full: Group | None = setting(
        Group("239.255.26.1", 26001), "Full-rate group ('' turns it off).", "group"
    )
    decimated: Group | None = setting(
        Group("239.255.26.2", 26002), "Decimated group ('' turns it off).", "group"
    )
    ttl: int = setting(1, "Multicast TTL (1: stays on the local network).", bounds=(0, 255))
    interface: str = setting(
        "127.0.0.1",
        "IPv4 address of the interface multicast goes out of and is joined on; 127.0.0.1 "
        "keeps it on this host, set the LAN address to reach other hosts.", "address")
    decimated_rate_hz: float = setting(
        50.0, "Most datagrams per second per channel, decimated.", bounds=(0.01, 1e6))
    control: Group | None = setting(
        Group("239.255.26.3", 26003), "Control group: tags made on any host reach every "
        "relay of the deployment through it ('' turns it off).", "group")
    control_key: str = setting(
        "", "Shared key that authenticates control messages (HMAC-SHA256): empty = one made "
        "once and kept (owner-only) in <cache>/.control-key; otherwise at least 32 "
        "characters, the same on every host ('speeddata control key' prints it).")


@dataclass(frozen=True)
class WebConfig:
    host: str = setting(
        "0.0.0.0", "Address the stripchart server listens on: all interfaces, so a laptop "
        "reaches a headless Pi (with the token); 127.0.0.1 keeps it to this host.", "address")
    port: int = setting(8080, "TCP port of the stripchart server.", bounds=(0, 65535))
    frame_hz: float = setting(30.0, "Frames per second pushed to each page.", bounds=(1, 240))
    history_seconds: float = setting(600.0, "History kept per signal (250 ms buckets).",
                                     bounds=(1, 6 * 3600))
    detail_seconds: float = setting(60.0, "Fine history kept per signal (10 ms buckets).",
                                    bounds=(1, 3600))
    source: str = setting(
        "full", "The group the server draws from: full (every sample in the envelopes; on "
        "the relay's host it costs no network) or decimated (for a server on a thin link).")
    clock_tolerance_seconds: float = setting(
        10.0, "A source whose clock is further off than this is plotted on receive time (and "
        "flagged); a sample further than this from its channel's offset is left out of the "
        "live view (counted; the cache keeps it).", bounds=(0.1, 86400))
    token: str = setting(
        "", "What pages and API calls must present: empty = a token made once and kept in "
        "<cache>/.web-token when host is not loopback (none on 127.0.0.1); 'off' = none; "
        "anything else = that token.")
    open_writes: bool = setting(
        False, "With token = 'off' on a network address (a kiosk display), let pages make "
        "and delete tags and exports anyway; otherwise such a server is read-only.")
    allowed_hosts: list = setting(
        [], "Host names the page may be opened under besides IP addresses, localhost and "
        "this machine's name (a guard against DNS rebinding).", "list")
    compression: str = setting(
        "auto", "permessage-deflate on the pages' WebSockets: auto = for every page but those "
        "on this host (loopback: bytes are free there, the CPU is not); on = for every page; "
        "off = for none (a wired LAN, a server short of CPU). The benchmark's 100-signal frames "
        "deflate to a twentieth: a page on Wi-Fi wants it.")


@dataclass(frozen=True)
class ExportsConfig:
    dir: Path = setting(Path("exports"), "Directory pivot writes HDF5 files to.", "path")
    compression: str = setting("gzip", "Compression: gzip, lzf or none (HDF5; Parquet takes "
                               "gzip, or snappy for lzf).")
    format: str = setting("hdf5", "Export format: hdf5 (one file), csv or parquet (a directory "
                          "with a file per channel; parquet needs speeddata[parquet]).")


@dataclass(frozen=True)
class ArchiveConfig:
    endpoint: str = setting(
        "", "S3-compatible store closed cache files are uploaded to, like "
        "'http://store:8333'; empty: no archive.")
    bucket: str = setting("speeddata", "Bucket of the archive (made if missing).")
    prefix: str = setting("", "Key prefix: objects are <prefix>/<relay host>/<channel>/<file>.")
    host: str = setting("", "The name this relay files under in the archive; empty: the "
                        "host name.")
    streams: int = setting(4, "Files uploaded at once (one stream takes about 90 MB/s on a "
                           "local store; more for a faster store or a longer path).",
                           bounds=(1, 64))
    required: bool = setting(
        False, "Retention deletes a cache file only once it is archived (a store down for "
        "long then fills the cache: the quota is exceeded, never data lost).")
    exports: bool = setting(False, "Upload exports too (under <prefix>/<host>/exports/).")
    credentials_file: str = setting(
        "", "INI file with aws_access_key_id and aws_secret_access_key (as "
        "~/.aws/credentials); empty: the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
        "environment variables. Never printed or logged.")


@dataclass(frozen=True)
class QueryConfig:
    dask: str = setting(
        "", "Dask scheduler that pivot --archive and query of archived ranges run on, like "
        "'tcp://scheduler:8786' (a task per archived file; needs speeddata[dask]); empty: "
        "read on this machine.")


@dataclass(frozen=True)
class Config:
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    multicast: MulticastConfig = field(default_factory=MulticastConfig)
    web: WebConfig = field(default_factory=WebConfig)
    exports: ExportsConfig = field(default_factory=ExportsConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    query: QueryConfig = field(default_factory=QueryConfig)

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
    "archive": ArchiveConfig,
    "query": QueryConfig,
}

def _check(config: Config) -> None:
    """Cross-field checks that no single value can make."""
    for item in config.channels.legacy:
        name, _, port = item.partition(":")
        if not name or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise ConfigError(f"[channels] legacy: {item!r} is not 'channel' or 'channel:port'")
    if config.relay.io not in ("auto", "mmsg", "portable"):
        raise ConfigError("[relay] io: must be auto, mmsg or portable")
    if config.relay.workers > 1 and config.relay.port == 0:
        raise ConfigError("[relay] workers: several workers need a fixed [relay] port")
    if config.web.detail_seconds > config.web.history_seconds:
        raise ConfigError("[web] detail_seconds: must not be more than [web] history_seconds")
    if config.web.source not in ("full", "decimated"):
        raise ConfigError("[web] source: must be full or decimated")
    if config.web.compression not in ("auto", "on", "off"):
        raise ConfigError("[web] compression: must be auto, on or off")
    if config.exports.compression not in ("gzip", "lzf", "none"):
        raise ConfigError("[exports] compression: must be gzip, lzf or none")
    if config.exports.format not in ("hdf5", "csv", "parquet"):
        raise ConfigError("[exports] format: must be hdf5, csv or parquet")
    if config.multicast.control_key and len(config.multicast.control_key.strip()) < MIN_KEY:
        raise ConfigError(f"[multicast] control_key: must be at least {MIN_KEY} characters "
                          "('speeddata control key' on a relay host prints one to copy)")
    if ipaddress.ip_address(config.multicast.interface).version != 4:
        raise ConfigError("[multicast] interface: must be an IPv4 address (the groups are IPv4)")
    _check_ports(config)
    for section in ("cache", "exports", "channels"):
        folder = getattr(config, section).dir
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"[{section}] dir: {folder} exists and is not a directory")


def _check_ports(config: Config) -> None:
    """A UDP port that both receives from senders and carries a group makes the relay read
    its own multicast (and a server read raw senders): refuse it, naming both settings."""
    users: dict[int, str] = {}
    if config.relay.port:
        users[config.relay.port] = "[relay] port"
    for item in config.channels.legacy:
        port = int(item.partition(":")[2] or config.relay.port)
        if port != config.relay.port:
            if port in users:
                raise ConfigError(f"[channels] legacy: {item!r} uses the port of {users[port]}")
            users[port] = f"[channels] legacy {item!r}"
    for key in ("full", "decimated", "control"):
        group = getattr(config.multicast, key)
        if group is not None and group.port in users:
            raise ConfigError(
                f"[multicast] {key} = \"{group}\" uses port {group.port}, which is also "
                f"{users[group.port]}: give one of them another port")
        if group is not None:
            users[group.port] = f"[multicast] {key}"


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
                    sections[section][key] = convert(specs[key], value, base)
                except (ValueError, TypeError) as exc:
                    raise ConfigError(f"{origin}: [{section}] {key} = {value!r}: {exc}") from None
    for name, cls in _SECTION_TYPES.items():  # default paths are in the data directory
        for spec in dataclasses.fields(cls):
            if spec.metadata["kind"] == "path" and spec.name not in sections[name]:
                sections[name][spec.name] = home() / spec.default
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
        shown = toml_value(default)
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
