"""Typed snapshots: what each service says of itself in its status file, and what
``speeddata status`` and ``/api/status`` read back.

A writer builds one of these frozen dataclasses and ``status.write`` serialises it; a
reader gets the same class back from ``parse`` (the JSON is hostile input from disk:
a wrong type is a ``SnapshotError``, a field a newer writer added is ignored, one an
older writer lacked takes its default). So a counter renamed on one side fails a type
check or a test, not a status page. Figures keyed by a name that varies at run time
(channels, refusal reasons, job kinds) are dicts of typed values.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, TypeVar, Union

from speeddata.errors import SpeeddataError

T = TypeVar("T")


class SnapshotError(SpeeddataError, ValueError):
    """A status file that does not hold the snapshot it says it is."""


@dataclass(frozen=True)
class LossRow:
    """One hop's figures for one source and channel (``loss.Hop.figures``)."""

    source: str
    channel: str
    name: str = ""
    sent: int = 0
    arrived: int = 0
    lost: int = 0
    failed: int = 0
    lost_percent: float = 0.0
    recent_sent: int = 0
    recent_lost: int = 0
    last_report_ns: int | None = None
    unverified: int = 0
    report_only: bool = False
    trust: str = "any host"
    clock_offset_ns: int | None = None  # the sender's clock minus the relay's, measured
    clock_uncertainty_ns: int | None = None
    relay: str = ""  # set where rows of several relays are listed together


@dataclass(frozen=True)
class Stalls:
    """The relay loop's iterations by duration bucket, and the longest."""

    bounds_ms: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    longest_ms: float = 0.0


@dataclass(frozen=True)
class ControlFigures:
    group: str = ""
    joined: bool = False
    sent: int = 0
    send_errors: int = 0
    digests_sent: int = 0
    records_sent: int = 0
    resyncs: int = 0
    received: int = 0
    store_errors: int = 0
    # what the tag store made of the records heard (TagStore.apply_many)
    added: int = 0
    stopped: int = 0
    replaced: int = 0
    deleted: int = 0
    known: int = 0
    older: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    kernel_drops: int = 0


@dataclass(frozen=True)
class ChannelFigures:
    datagrams: int = 0
    bytes: int = 0
    decimated: int = 0
    bad_body: int = 0
    cache_dropped: int = 0
    rate_hz: float = 0.0


@dataclass(frozen=True)
class UnknownFingerprint:
    count: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    source: str | None = None


@dataclass(frozen=True)
class SenderReportFigures:
    links: int = 0
    report_only_links: int = 0
    evicted: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeFigures:
    """Time probes the relay answered, and refused by reason (``clocks.ProbeBudget``)."""

    answered: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    addresses: int = 0


@dataclass(frozen=True)
class JobFigures:
    pending: list[str] = field(default_factory=list)
    submitted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    longest_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RetentionFigures:
    estimated_bytes: int = 0
    scans: int = 0
    scans_skipped: int = 0


@dataclass(frozen=True)
class CacheFigures:
    dir: str = ""
    quota: int = 0
    deleted_files: int = 0
    deleted_bytes: int = 0
    open_files: int = 0
    files_opened: int = 0
    write_errors: int = 0
    fsync_errors: int = 0
    fsync_stalls: int = 0
    repaired_files: int = 0
    damaged_files: int = 0
    moved_aside: int = 0


@dataclass(frozen=True)
class Multicast:
    full: str = ""
    decimated: str = ""
    interface: str = ""


@dataclass(frozen=True)
class Snapshot:
    """What every service's snapshot starts with."""

    service: str
    pid: int
    written: float  # wall-clock seconds
    started: float


@dataclass(frozen=True)
class RelaySnapshot(Snapshot):
    worker: int | None = None
    listen: str = ""
    legacy_ports: dict[str, str] = field(default_factory=dict)
    multicast: Multicast = field(default_factory=Multicast)
    io: str = ""
    rcvbuf: int = 0
    schema_errors: list[str] = field(default_factory=list)
    kernel_drops: int = 0
    # the engine's
    batches: int = 0
    datagrams: int = 0
    sender_reports_routed: int = 0
    time_probes_answered: int = 0
    cached_bytes: int = 0
    registry_swaps: int = 0
    loop_stalls: Stalls = field(default_factory=Stalls)
    control: ControlFigures | None = None
    # the process's
    multicast_send_errors: int = 0
    cache_dropped: int = 0
    status_write_errors: int = 0
    drained_at_stop: int = 0
    dropped_at_stop: int = 0
    # the router's
    channels: dict[str, ChannelFigures] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    last_rejection: dict[str, Any] = field(default_factory=dict)
    unknown_fingerprints: dict[str, UnknownFingerprint] = field(default_factory=dict)
    sender_reports: SenderReportFigures = field(default_factory=SenderReportFigures)
    time_probes: ProbeFigures = field(default_factory=ProbeFigures)
    clock_series: dict[str, int] = field(default_factory=dict)  # the offsets kept on disk
    jobs: JobFigures = field(default_factory=JobFigures)
    retention: RetentionFigures = field(default_factory=RetentionFigures)
    senders: list[LossRow] = field(default_factory=list)
    cache: CacheFigures = field(default_factory=CacheFigures)


@dataclass(frozen=True)
class ArchiveSnapshot(Snapshot):
    endpoint: str = ""
    bucket: str = ""
    host: str = ""
    archived_files: int = 0
    archived_bytes: int = 0
    upload_mb_per_s: float | None = None
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    errors: int = 0
    last_error: str = ""
    store: str = "unknown"
    backlog_files: int = 0
    backlog_bytes: int = 0
    uploading: str = ""


@dataclass(frozen=True)
class DamageFigures:
    """Cache blocks a reader skipped as damaged (``cache.check.Skipped``)."""

    blocks: int = 0
    records: int = 0
    files: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    last: str = ""


@dataclass(frozen=True)
class ServeChannel:
    rate_hz: float = 0.0
    datagrams: int = 0
    stale: bool = False


@dataclass(frozen=True)
class ServeSnapshot(Snapshot):
    url: str = ""
    token_required: bool = True
    listen: str = ""
    groups: list[str] = field(default_factory=list)
    source: str = ""
    clients: int = 0
    max_clients: int = 0
    clients_refused: int = 0
    frames_sent: int = 0
    frames_dropped: int = 0
    closed_slow_clients: int = 0
    push_failures: int = 0
    subscribes: int = 0
    subscribes_limited: int = 0
    page_bad_messages: int = 0
    pruned_subscriptions: int = 0
    datagrams: int = 0
    rejected: int = 0
    refused: dict[str, dict[str, int]] = field(default_factory=dict)
    feed_errors: int = 0
    forward_reports: dict[str, SenderReportFigures] = field(default_factory=dict)
    kernel_drops: int = 0
    history_bytes: int = 0
    cache_damage: DamageFigures = field(default_factory=DamageFigures)
    scrollback: dict[str, int] = field(default_factory=dict)
    pivot_jobs: dict[str, Any] = field(default_factory=dict)
    multicast_loss: dict[str, list[LossRow]] = field(default_factory=dict)
    channels: dict[str, ServeChannel] = field(default_factory=dict)


@dataclass(frozen=True)
class BlockSnapshot(Snapshot):
    """A processing block (``speeddata block run``): its engine's counters and its I/O."""

    file: str = ""
    group: str = ""
    relay: str = ""
    missing_inputs: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    kernel_drops: int | None = None
    sender: dict[str, Any] = field(default_factory=dict)
    block: str = ""
    inputs: list[str] = field(default_factory=list)
    output: str = ""
    batches: int = 0
    records_in: int = 0
    records_out: int = 0
    nan_records: int = 0
    dropped_nan: int = 0
    other_datagrams: int = 0
    function_seconds: float = 0.0
    received: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    held_dropped: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)


KINDS: dict[str, type[Snapshot]] = {
    "relay": RelaySnapshot, "archive": ArchiveSnapshot, "serve": ServeSnapshot,
    "block": BlockSnapshot}


def as_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as its status file and ``/api/status`` hold it."""
    return dataclasses.asdict(snapshot)


def parse(data: Any) -> Snapshot:
    """A status file's JSON as its typed snapshot, by its ``service``; SnapshotError if
    it is not one."""
    if not isinstance(data, dict) or data.get("service") not in KINDS:
        raise SnapshotError("not a snapshot of a known service")
    return build(KINDS[data["service"]], data)


def build(kind: type[T], data: Any) -> T:
    """``data`` (decoded JSON) as ``kind``, checked field by field, recursively."""
    return _value(kind, data, kind.__name__)


@cache
def _hints(kind: type) -> dict[str, Any]:
    return typing.get_type_hints(kind)


def _value(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _value(option, value, where)
                except SnapshotError:
                    continue
        raise SnapshotError(f"{where}: {type(value).__name__} is none of {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: expected an object, got {type(value).__name__}")
        hints = _hints(hint)
        fields = {f.name: f for f in dataclasses.fields(hint)}
        args = {name: _value(hints[name], value[name], f"{where}.{name}")
                for name in fields if name in value}
        missing = [name for name, f in fields.items() if name not in args
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise SnapshotError(f"{where}: missing {', '.join(missing)}")
        return hint(**args)
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: expected an object, got {type(value).__name__}")
        return {_value(key_type, k, where): _value(value_type, v, f"{where}[{k}]")
                for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise SnapshotError(f"{where}: expected a list, got {type(value).__name__}")
        return [_value(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and type(value) in (int, float):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise SnapshotError(f"{where}: expected {getattr(hint, '__name__', hint)}, "
                        f"got {type(value).__name__}")
