"""Numbers with units, for cost files and flags: times, sizes and bandwidths.

    parse_time("1.5 ms", "forward")      -> 0.0015      (seconds)
    parse_bytes("64 MiB", "stash_bytes") -> 67108864    (bytes)
    parse_bandwidth("25 GB/s", "link")   -> 2.5e10      (bytes per second)

A bare number is already in the base unit (seconds, bytes, bytes/s). Anything else that is not a number
followed by a known unit (a typo such as "10 GBs" or "1 sec") is a CostError naming the field.
"""

from __future__ import annotations

import math
import re

from schedules.errors import UserError


class CostError(UserError):
    """A cost model, cost file or cost flag is invalid; the message names the field."""


TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
BYTE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
BANDWIDTH_UNITS = {f"{unit}/s": factor for unit, factor in BYTE_UNITS.items()} | {
    "Gbit/s": 10**9 / 8,
    "Mbit/s": 10**6 / 8,
    "Tbit/s": 10**12 / 8,
}
FLOPS_UNITS = {"FLOP/s": 1.0, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "PFLOP/s": 1e15}

_NUMBER_WITH_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\s\d].*?)?\s*$")


def _parse(value: object, field: str, units: dict[str, float], what: str) -> float:
    if isinstance(value, bool):
        raise CostError(f"{field}: expected a {what}, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        match = _NUMBER_WITH_UNIT.match(value)
        if match is None:
            raise CostError(f"{field}: {value!r} is not a number (expected a {what}, e.g. {_example(units)})")
        number, unit = float(match[1]), match[2]
        if unit is not None:
            if unit not in units:
                known = ", ".join(units)
                raise CostError(f"{field}: unknown unit {unit!r} in {value!r} (known: {known})")
            number *= units[unit]
    else:
        raise CostError(f"{field}: expected a {what}, got {value!r}")
    if not math.isfinite(number) or number < 0:
        raise CostError(f"{field}: must be a finite non-negative {what}, got {value!r}")
    return number


def _example(units: dict[str, float]) -> str:
    unit = next(iter(units))
    return f"'1.5 {unit}'"


def parse_time(value: object, field: str) -> float:
    """Seconds from a number (seconds) or a string such as '250 us'."""
    return _parse(value, field, TIME_UNITS, "time")


def parse_bytes(value: object, field: str) -> int:
    """Bytes from a number or a string such as '64 MiB'."""
    return round(_parse(value, field, BYTE_UNITS, "size"))


def parse_bandwidth(value: object, field: str) -> float:
    """Bytes per second from a number or a string such as '25 GB/s' or '100 Gbit/s'; 'inf' allowed."""
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinite", "infinity"):
        return math.inf
    if isinstance(value, float) and value == math.inf:
        return math.inf
    bandwidth = _parse(value, field, BANDWIDTH_UNITS, "bandwidth")
    if bandwidth == 0:
        raise CostError(f"{field}: bandwidth must be positive, got {value!r}")
    return bandwidth


def parse_flops(value: object, field: str) -> float:
    """FLOP per second from a number or a string such as '989 TFLOP/s'."""
    flops = _parse(value, field, FLOPS_UNITS, "FLOP rate")
    if flops == 0:
        raise CostError(f"{field}: must be positive, got {value!r}")
    return flops


def parse_count(value: object, field: str, *, minimum: int = 0) -> int:
    """A whole number >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CostError(f"{field}: expected a whole number, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise CostError(f"{field}: expected a whole number, got {value!r}") from None
    if number < minimum:
        raise CostError(f"{field}: must be at least {minimum}, got {number}")
    return number


def parse_factor(value: object, field: str, *, minimum: float = 0.0) -> float:
    """A plain number >= minimum (no unit)."""
    if isinstance(value, bool):
        raise CostError(f"{field}: expected a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise CostError(f"{field}: expected a number, got {value!r}") from None
    if not math.isfinite(number) or number < minimum:
        raise CostError(f"{field}: must be a finite number >= {minimum}, got {value!r}")
    return number
