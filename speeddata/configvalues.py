"""A setting's value from a TOML file or a flag into its typed value (sizes, groups,
addresses, paths, networks, lists), or a ValueError saying what is wrong and how to
write it; ``config`` declares the settings, this reads their values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Group:
    """A multicast group and port, written ``"239.1.1.1:6000"``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"



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


def convert(spec: dataclasses.Field, value: Any, base: Path) -> Any:
    """The setting's value from a file's or a flag's, or ValueError saying what is wrong."""
    converted = _convert_type(spec, value, base)
    bounds = spec.metadata["bounds"]
    if bounds is not None:
        low, high = bounds
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ValueError("must be a finite number")
        if not low <= converted <= high:
            raise ValueError(f"must be from {_number(low)} to {_number(high)}")
    return converted


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def parse_address(value: Any) -> str:
    """An IP address written as digits (a host or interface name is not accepted)."""
    text = str(value).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address like 192.168.1.20 (for an interface name, "
            "'ip -4 addr show NAME' shows its address)") from None
    return text


def _convert_type(spec: dataclasses.Field, value: Any, base: Path) -> Any:
    kind = spec.metadata["kind"]
    if kind == "address":
        return parse_address(value)
    if kind == "size":
        return parse_size(value)
    if kind == "group":
        return parse_group(value)
    if kind == "path":
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else (base / path)
    if kind == "networks":
        items = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ValueError("expected a list of networks like '192.168.1.0/24'")
        try:
            return [str(ipaddress.IPv4Network(v, strict=False)) for v in items if v]
        except ValueError as exc:
            raise ValueError(f"{exc} (write IPv4 networks like '192.168.1.0/24')") from None
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
        if not re.fullmatch(r"\s*[+-]?\d+\s*", value):
            raise ValueError("expected a whole number")
        return int(value)
    if python_type is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if python_type is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError("expected a number") from None
    if not isinstance(value, python_type) or isinstance(value, bool):
        raise ValueError(f"expected {python_type.__name__}, got {type(value).__name__}")
    return value
