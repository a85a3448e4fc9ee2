"""Human units in config (`30s`, `5m`, `10GiB`, `85%`) normalised once to base units.

Seconds, bytes and ratios (0..1) are what the rest of the agent works with; the
parsers here are the only place that knows the human spellings, and the
formatters the only place that turns base units back into them.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

_DURATION_UNITS = {
    "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")

_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([a-z]*)$")


def parse_duration(value: object) -> float:
    """Given `90`, `"30s"`, `"1h30m"` or `"250ms"`, return seconds; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m, 26h (got {value!r})")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"duration must be a finite number of seconds (got {value})")
        if value < 0:
            raise ValueError(f"duration must not be negative (got {value})")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30s, 5m, 26h (got {value!r})")
    text = value.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"invalid duration {value!r} (use a number with ms, s, m, h, d or w, e.g. 30s, 5m, 1h30m)")
    return total


def parse_size(value: object) -> int:
    """Given `1024`, `"10GiB"` or `"500 MB"`, return bytes; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 512MiB or 10GB (got {value!r})")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative (got {value})")
        return value
    if isinstance(value, float):
        return parse_size(str(value))
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 512MiB or 10GB (got {value!r})")
    match = _SIZE_RE.match(value.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS | {"": 1}:
        raise ValueError(f"invalid size {value!r} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    return int(float(match.group(1)) * _SIZE_UNITS.get(match.group(2), 1))


def parse_ratio(value: object) -> float:
    """Given `"85%"` or `0.85`, return 0.85; raise ValueError when outside 0..100 %.

    A bare number above 1 is read as a percentage (`85` → 0.85), since nobody
    means a ratio of 85 for a usage threshold.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage such as 85% (got {value!r})")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"invalid percentage {value!r} (use e.g. 85% or 0.85)") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise ValueError(f"expected a percentage such as 85% (got {value!r})")
    if number > 1 and not (isinstance(value, str) and value.strip().endswith("%")):
        number /= 100
    if not 0 <= number <= 1:
        raise ValueError(f"percentage must be between 0% and 100% (got {value!r})")
    return number


def format_duration(seconds: float) -> str:
    """Return a short human form: 250µs, 1.5ms, 150ms, 42s, 5m, 1h30m, 2d3h (sub-millisecond times
    keep their digits: a loopback connect takes microseconds, not "0ms")."""
    if 0 < seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if 0 < seconds < 0.01:
        return f"{seconds * 1000:.2g}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    parts = []
    remaining = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])


def format_size(size: float) -> str:
    """Return a binary-prefixed size: 512B, 1.5KiB, 20.0GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_value(value: float, unit: str) -> str:
    """Format a metric value by its unit (ratio, seconds, bytes, or a plain count)."""
    if unit == "ratio":
        return f"{value * 100:.1f}".removesuffix(".0") + "%"
    if unit == "seconds":
        return format_duration(value)
    if unit == "bytes":
        return format_size(value)
    return f"{value:g}"


def duration_text(seconds: float) -> str:
    """Return a duration exactly as a config file may write it: 90d, 1h30m, 1m0.5s, 250ms, 0.25ms."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:.10g}ms"
    parts, whole = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = whole + (seconds - int(seconds))
    if rest or not parts:
        parts.append(f"{rest:.10g}s")
    return "".join(parts)


def size_text(size: int) -> str:
    """Return a size exactly as a config file may write it: 10GiB, 500MB, 1234B."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10),
                         ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def ratio_text(ratio: float) -> str:
    """Return a ratio as the percentage a config file may write: 0.85 → 85%, 0.855 → 85.5%."""
    return f"{ratio * 100:.10g}%"


def format_timestamp(ts: float | None, *, utc: bool = True, timespec: str = "seconds") -> str | None:
    """Given a Unix time, return it as ISO 8601: in UTC with a `Z` (what programs read: JSON, CSV, archives),
    or with `utc=False` in local time with its offset (evidence an operator reads); None for None."""
    if ts is None:
        return None
    if not utc:
        return datetime.fromtimestamp(ts).astimezone().isoformat(timespec=timespec)
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")
