"""The exceptions speeddata raises: one small tree, messages that state facts."""


class SpeeddataError(Exception):
    """Base of every error speeddata raises on purpose. ``http_status`` is the answer the
    stripchart server gives for it, ``exit_code`` the status a command exits with: the
    type decides, never the message. 2: the user must change something (configuration,
    arguments, the request), so ``speeddata up`` and the systemd units do not restart;
    1 (``RuntimeFailure``): something outside failed, and a restart may cure it."""

    http_status = 400
    exit_code = 2


class RuntimeFailure(SpeeddataError):
    """The disk, the network or another process failed while running: exit 1, which
    ``speeddata up`` and systemd restart (with a back-off)."""

    exit_code = 1


class NetworkError(RuntimeFailure, OSError):
    """A socket cannot be set up now: a multicast group cannot be joined, an address is
    not (yet) on this host, a name does not resolve. An ``OSError`` too, so that a
    caller that can go on without the socket catches it as any socket error."""


class NotFoundError(SpeeddataError):
    """What the request names does not exist."""

    http_status = 404


class ConflictError(SpeeddataError):
    """What the request would create exists already."""

    http_status = 409


class BusyError(SpeeddataError):
    """Too much work is queued; try again later."""

    http_status = 503


class UnauthorizedError(SpeeddataError):
    """The request does not carry the server's token."""

    http_status = 401


class ForbiddenError(SpeeddataError):
    """The request is refused whoever makes it: another site's, or a write the server
    does not take."""

    http_status = 403


class TooLargeError(SpeeddataError):
    """The request's body is larger than any the API takes."""

    http_status = 413


class ConfigError(SpeeddataError):
    """A configuration key or value is wrong; the message names the key."""


class SchemaError(SpeeddataError):
    """A channel schema file cannot be used; the message names the file and the problem."""


class UnknownChannelError(NotFoundError):
    """A channel name or fingerprint that no schema defines."""


class RecordError(SpeeddataError, ValueError):
    """A record does not match its channel's schema; the message names the field."""


class WireError(SpeeddataError, ValueError):
    """A datagram is not a valid single-object datagram. ``reason`` is a short counter key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CacheError(RuntimeFailure):
    """A cache file cannot be read or written."""


class ArchiveError(SpeeddataError):
    """The archive's store refused, lost or garbled an object; the message names it
    (bucket/key)."""


class SourceError(SpeeddataError, ValueError):
    """A line or frame from a device that makes no record. ``reason`` is a short counter
    key (``range``, ``type``, ``json``...); the source counts it and reads on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ControlError(SpeeddataError, ValueError):
    """A control-group message that is refused. ``reason`` is a short counter key
    (bad_marker, bad_mac, stale, replayed, malformed, bad_type, out_of_range, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DerivedError(SpeeddataError, ValueError):
    """A derived channel's file or expression that cannot be used; the message names the
    file, the signal and the character ``position`` (1-based; 0 when it is the file's)."""

    def __init__(self, message: str, position: int = 0) -> None:
        super().__init__(message)
        self.position = position
