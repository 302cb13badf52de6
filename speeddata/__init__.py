"""speeddata: telemetry for real machines.

Sources send one Avro single-object datagram per sample over UDP; the relay caches
every byte and re-multicasts it; the stripchart shows it live; tagged ranges become
HDF5 files.
"""

__version__ = "0.1.0"

from speeddata.sender import Sender
from speeddata.sets import load

__all__ = ["Sender", "__version__", "load"]
