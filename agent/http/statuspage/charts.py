"""SVG geometry for the status page: sparklines, availability strips and line charts (pure functions).

Everything here turns numbers into numbers and path strings; the templates draw them, so every text
that reaches the page (metric names, labels, times) goes through Jinja's autoescape. No SVG markup is
built in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Callable

from agent.plugin.units import format_value

STATUS_ORDER = ("ok", "warning", "critical", "unknown")   # the order of a bucket's counts (Status values)


@dataclass(frozen=True)
class Point:
    """One bucket of a series: [start, end) and the lowest, mean and highest value in it."""

    start: float
    end: float
    low: float
    mean: float
    high: float


@dataclass(frozen=True)
class StatusBucket:
    """How the runs in [start, end) ended: counts in STATUS_ORDER (all zero: no run)."""

    start: float
    end: float
    counts: tuple[int, int, int, int]

    @property
    def runs(self) -> int:
        return sum(self.counts)

    @property
    def worst(self) -> str:
        return worst_of(self.counts)


def worst_of(counts: tuple[int, int, int, int]) -> str:
    """A bucket's colour: the worst status among its runs (Checkmk's order), `none` when nothing ran."""
    ok, warning, critical, unknown = counts
    return ("critical" if critical else "unknown" if unknown else "warning" if warning else "ok" if ok
            else "none")


@dataclass(frozen=True)
class Segment(StatusBucket):
    """Neighbouring buckets of one colour, merged, and where they are drawn: one rectangle and one tooltip
    instead of dozens (the worst of the summed counts is the buckets' one colour)."""

    x: float = 0.0
    width: float = 0.0

    @property
    def breakdown(self) -> str:
        """`58 runs: 57 ok, 1 critical` for the tooltip."""
        if not self.runs:
            return "no runs"
        parts = ", ".join(f"{n} {label}" for n, label in zip(self.counts, STATUS_ORDER) if n)
        return f"{self.runs} run{'s' if self.runs != 1 else ''}: {parts}"


def strip(buckets: list[StatusBucket], x: Callable[[float], float]) -> list[Segment]:
    """Given buckets oldest first and the time → pixel mapping, return the status strip's segments: a bucket
    where it lies in time, neighbours of one colour merged; time without buckets is left empty."""
    segments: list[Segment] = []
    for bucket in buckets:
        last = segments[-1] if segments else None
        if last is not None and last.worst == bucket.worst and bucket.start <= last.end:
            counts = tuple(a + b for a, b in zip(last.counts, bucket.counts))
            segments[-1] = Segment(last.start, bucket.end, counts, x=last.x, width=x(bucket.end) - last.x)
        else:
            left = x(bucket.start)
            segments.append(Segment(bucket.start, bucket.end, bucket.counts, x=left, width=x(bucket.end) - left))
    return [s for s in segments if s.width > 0]


def bar(counts: list[tuple[int, int, int, int]], width: float, height: float) -> list[tuple[str, str]]:
    """Given evenly spaced buckets' status counts oldest first, return the availability bar as one SVG path
    `d` per colour, (worst status, d): a handful of elements however many buckets, so a page of a hundred
    bars stays small."""
    if not counts:
        return []
    step = width / len(counts)
    shapes: dict[str, list[str]] = {}
    begin, colour = 0, worst_of(counts[0])
    for index in range(1, len(counts) + 1):
        following = worst_of(counts[index]) if index < len(counts) else None
        if following != colour:
            w = (index - begin) * step
            shapes.setdefault(colour, []).append(f"M{begin * step:.1f} 0h{w:.1f}v{height:g}h-{w:.1f}z")
            begin, colour = index, following
    return [(label, "".join(parts)) for label, parts in shapes.items()]


def totals(counts: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return tuple(map(sum, zip(*counts))) if counts else (0, 0, 0, 0)


def sparkline(values: list[float | None], width: float, height: float, pad: float = 2.0) -> str:
    """Given evenly spaced values (None: no data), return an SVG path `d` scaled to the box; gaps break
    the line, a lone value between gaps is a short tick. Empty when there is no value at all."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    step = width / max(1, len(values) - 1) if len(values) > 1 else 0.0

    def y(value: float) -> float:
        if span == 0:
            return height / 2
        return pad + (height - 2 * pad) * (1 - (value - low) / span)

    return _path([(i * step, y(v)) if v is not None else None for i, v in enumerate(values)], tick=1.5)


def _path(points: list[tuple[float, float] | None], tick: float) -> str:
    """`M x y L x y …`, a new `M` after every gap (None); a lone point gets a horizontal tick of ±`tick`."""
    parts: list[str] = []
    run: list[tuple[float, float]] = []
    for point in points + [None]:
        if point is not None:
            run.append(point)
            continue
        if len(run) == 1:
            (x, yv), = run
            parts.append(f"M{x - tick:.1f} {yv:.1f}L{x + tick:.1f} {yv:.1f}")
        elif run:
            parts.append("M" + "L".join(f"{x:.1f} {yv:.1f}" for x, yv in run))
        run = []
    return "".join(parts)


# -- line charts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    at: float        # pixel position
    text: str


@dataclass(frozen=True)
class ThresholdLine:
    label: str       # warning / critical
    y: float
    text: str        # the limit, formatted by the metric's unit


@dataclass(frozen=True)
class Chart:
    """A series drawn over [start, end): the mean as a line, low..high as a band, threshold lines, axes and
    a strip of the runs' statuses under the plot."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    line: str
    band: str
    thresholds: tuple[ThresholdLine, ...]
    off_scale: tuple[tuple[str, str], ...]     # (label, limit) of thresholds too far above the data to draw
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    strip: tuple[Segment, ...]
    strip_y: int


WIDTH, HEIGHT = 760, 210
LEFT, RIGHT, TOP, BOTTOM, STRIP = 64, 12, 10, 40, 8


def line_chart(points: list[Point], start: float, end: float, unit: str, thresholds: list[tuple[str, float]],
               statuses: list[StatusBucket], tz: tzinfo, step: str) -> Chart:
    """Given a series' buckets oldest first, the range, its unit, (label, limit) threshold pairs, the range's
    status buckets and the x-axis step (`hour:N`, `day:N`, `month`), return the chart's geometry. The y axis
    starts at 0 for a series that never goes below it and always shows the thresholds."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = max(end - start, 1.0)

    def x(t: float) -> float:
        return LEFT + plot_w * min(1.0, max(0.0, (t - start) / span))

    values = [p.low for p in points] + [p.high for p in points]
    top = max(values, default=0.0)
    # a limit far above the data (a 2 s critical for 40 ms responses) would flatten the line: it is named
    # beside the chart instead of drawn
    drawn = [(label, limit) for label, limit in thresholds if top <= 0 or limit <= 3 * top]
    off_scale = tuple((label, format_value(limit, unit)) for label, limit in thresholds if (label, limit) not in drawn)
    low, high = _y_range(values + [limit for _, limit in drawn])

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    line, band = [], []
    for run in _runs(points):
        line.append(_path([(x((p.start + p.end) / 2), y(p.mean)) for p in run], tick=1.5))
        if any(p.high > p.low for p in run):
            upper = [(x((p.start + p.end) / 2), y(p.high)) for p in run]
            lower = [(x((p.start + p.end) / 2), y(p.low)) for p in reversed(run)]
            if len(run) == 1:   # a lone bucket: a thin vertical bar from low to high
                (ux, uy), (_, ly) = upper[0], lower[0]
                upper, lower = [(ux - 1.5, uy), (ux + 1.5, uy)], [(ux + 1.5, ly), (ux - 1.5, ly)]
            band.append("M" + "L".join(f"{px:.1f} {py:.1f}" for px, py in upper + lower) + "Z")
    lines = tuple(ThresholdLine(label, round(y(limit), 1), format_value(limit, unit)) for label, limit in drawn)
    y_ticks = tuple(Tick(round(y(v), 1), format_value(v, unit)) for v in _nice_ticks(low, high, unit))
    x_ticks = tuple(Tick(round(x(t), 1), text) for t, text in time_ticks(start, end, tz, step))
    strip_y = TOP + plot_h + BOTTOM - STRIP - 2
    return Chart(WIDTH, HEIGHT, LEFT, TOP, plot_w, plot_h, "".join(line), "".join(band), lines, off_scale, x_ticks,
                 y_ticks, tuple(strip(statuses, x)), strip_y)


def _runs(points: list[Point]) -> list[list[Point]]:
    """Split at gaps: a bucket that does not follow the previous one (nothing ran in between)."""
    runs: list[list[Point]] = []
    for point in points:
        if runs and point.start - runs[-1][-1].end <= 0.5 * (runs[-1][-1].end - runs[-1][-1].start):
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def _y_range(values: list[float]) -> tuple[float, float]:
    """From 0 (or the lowest value below it) to a little above the highest; never an empty range."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(0.0, min(finite)), max(finite)
    if high <= low:
        high = low + (abs(low) or 1.0)
    return low, high + (high - low) * 0.05


def _nice_ticks(low: float, high: float, unit: str = "count", count: int = 4) -> list[float]:
    """Round values inside [low, high]: 1, 2, 2.5 or 5 × 10^n apart, in KiB/MiB/GiB for bytes."""
    scale = 1024.0 ** max(0, int(math.log(max(abs(low), abs(high)), 1024))) if unit == "bytes" and high else 1.0
    raw = (high - low) / scale / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = scale * next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def time_ticks(start: float, end: float, tz: tzinfo, step: str) -> list[tuple[float, str]]:
    """Local-time axis labels inside [start, end]: every N hours (`hour:N`), every N days at midnight
    (`day:N`) or at each month's first day (`month`, the year at January)."""
    kind, _, every = step.partition(":")
    n = int(every or 1)
    moment = datetime.fromtimestamp(start, tz).replace(minute=0, second=0, microsecond=0)
    if kind == "hour":
        while moment.timestamp() < start or moment.hour % n:
            moment += timedelta(hours=1)
        advance, label = (lambda m: m + timedelta(hours=n)), "%H:%M"
    elif kind == "day":
        moment = moment.replace(hour=0) + timedelta(days=1)
        advance, label = (lambda m: (m + timedelta(days=n)).replace(hour=0)), "%a %d" if n == 1 else "%b %d"
    else:
        moment = moment.replace(hour=0, day=1)
        moment = moment.replace(year=moment.year + moment.month // 12, month=moment.month % 12 + 1)
        advance, label = (lambda m: m.replace(year=m.year + m.month // 12, month=m.month % 12 + 1)), "%b"
    ticks = []
    while moment.timestamp() <= end and len(ticks) < 24:
        if moment.timestamp() >= start:   # a year's axis names the year at January, the other months short
            ticks.append((moment.timestamp(), moment.strftime("%Y" if kind == "month" and moment.month == 1
                                                              else label)))
        moment = advance(moment)
    return ticks
