"""Tag records: one tag name's shared state at one version, as control messages carry
it between relays and stores compare it. Valid by construction (a ``ControlError`` with
the refusal's reason otherwise), so no bad value from the network reaches a store.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from speeddata.errors import ControlError
from speeddata.times import LATEST_NS

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # whole names only (fullmatch)
CHANNEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # a channel name in a tag
MAX_NOTE = 4096  # characters
MAX_CHANNELS = 256  # so that the largest tag record fits one datagram (under 60 kB)
MAX_ORIGIN = 255  # characters of a host name
ACTIONS = ("add", "stop", "delete")


def is_time(value: object) -> bool:
    return type(value) is int and 0 <= value <= LATEST_NS  # type: ignore[operator]


def _refuse(reason: str, message: str) -> ControlError:
    return ControlError(reason, message)


@dataclass(frozen=True)
class TagRecord:
    """One name's shared state at one version: a tag (after an add or a stop) or its
    deletion (a tombstone). What tag messages carry and stores compare; valid by
    construction (ControlError with a reason otherwise), so no bad value reaches a store."""

    action: str  # add, stop or delete
    name: str
    changed_ns: int  # the version: when the change was made, on the host that made it
    origin: str = ""  # that host
    start_ns: int = 0
    end_ns: int | None = None
    note: str = ""
    channels: tuple[str, ...] = ()
    created_ns: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise _refuse("unknown_action", f"unknown tag action {str(self.action)[:20]!r}")
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise _refuse("bad_name", "not a tag name")
        for what in ("changed_ns", "start_ns", "created_ns"):
            if not is_time(getattr(self, what)):
                raise _refuse("bad_time", f"tag {self.name}: {what} is not an integer time "
                              "from 1970 to 2262")
        if self.end_ns is not None:
            if not is_time(self.end_ns):
                raise _refuse("bad_time", f"tag {self.name}: end_ns is not an integer time "
                              "from 1970 to 2262")
            if self.end_ns < self.start_ns:
                raise _refuse("end_before_start", f"tag {self.name}: ends before it starts")
        if not isinstance(self.origin, str) or len(self.origin) > MAX_ORIGIN:
            raise _refuse("too_long", f"tag {self.name}: origin is not a host name")
        if not isinstance(self.note, str) or len(self.note) > MAX_NOTE:
            raise _refuse("too_long", f"tag {self.name}: the note is not text of at most "
                          f"{MAX_NOTE} characters")
        if (not isinstance(self.channels, tuple) or len(self.channels) > MAX_CHANNELS
                or not all(isinstance(c, str) and CHANNEL.fullmatch(c)
                           for c in self.channels)):
            raise _refuse("bad_channels", f"tag {self.name}: channels are not at most "
                          f"{MAX_CHANNELS} channel names")

    @property
    def deleted(self) -> bool:
        return self.action == "delete"

    def content(self) -> str:
        """What two stores must agree on for this name (not where it came from)."""
        if self.deleted:
            return json.dumps([self.name, self.changed_ns, "deleted"])
        return json.dumps([self.name, self.changed_ns, self.start_ns, self.end_ns, self.note,
                           list(self.channels), self.created_ns], ensure_ascii=False)

    def version(self) -> tuple[int, int, str]:
        """The order of records of one name: later change first, then a tag before a
        delete made at the same nanosecond (it protects more), then the content."""
        digest = hashlib.sha256(self.content().encode()).hexdigest()
        return (self.changed_ns, 0 if self.deleted else 1, digest)

    def as_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"kind": "tag", "action": self.action, "name": self.name,
                                   "changed_ns": self.changed_ns, "origin": self.origin}
        if not self.deleted:
            message.update(start_ns=self.start_ns, end_ns=self.end_ns, note=self.note,
                           channels=list(self.channels), created_ns=self.created_ns)
        return message


def parse_record(message: dict[str, Any]) -> TagRecord:
    """A tag message's body as a TagRecord, or ControlError naming the reason: only JSON
    integers are times (no floats, Infinity, booleans or strings), only known actions."""
    if not isinstance(message, dict):
        raise _refuse("malformed", "a tag message is not an object")
    action = message.get("action")
    if action not in ACTIONS:
        raise _refuse("unknown_action", f"unknown tag action {str(action)[:20]!r}")
    fields: dict[str, Any] = {"action": action}
    names = ["name", "changed_ns", "origin"]
    if action != "delete":
        names += ["start_ns", "end_ns", "note", "channels", "created_ns"]
    for key in names:
        if key not in message:
            raise _refuse("malformed", f"a tag message without {key}")
        fields[key] = message[key]
    if action != "delete":
        if not isinstance(fields["channels"], list) or len(fields["channels"]) > MAX_CHANNELS:
            raise _refuse("bad_channels", "channels is not a list of channel names")
        fields["channels"] = tuple(fields["channels"])
    for key in ("changed_ns", "start_ns", "created_ns", "end_ns"):
        value = fields.get(key)
        if key in fields and not (value is None and key == "end_ns") and type(value) is not int:
            raise _refuse("bad_type", f"{key} is a {type(value).__name__}, not an integer")
    return TagRecord(**fields)
