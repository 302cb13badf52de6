"""speeddata: telemetry for real machines.

Sources send one Avro single-object datagram per sample over UDP; the relay caches
every byte and re-multicasts it; the stripchart shows it live; tagged ranges become
HDF5 files.
"""

from typing import Any

__version__ = "0.1.0"

from speeddata.sender import Sender


def __getattr__(name: str) -> Any:
    """``speeddata.load`` and ``speeddata.query`` on first use: they need numpy (and
    h5py), which the sender (running inside other people's programs, often on small
    machines) must not pay for."""
    if name == "load":
        from speeddata.sets import load

        return load
    if name == "query":
        from speeddata.queries import query

        return query
    raise AttributeError(f"module 'speeddata' has no attribute {name!r}")


__all__ = ["Sender", "__version__", "load", "query"]
