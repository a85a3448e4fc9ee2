"""Human units in the config (`30s`, `10GiB`, `85%`) become seconds, bytes and ratios, and back again."""

from __future__ import annotations

import math

import pytest

from agent.plugin.units import (
    format_duration, format_size, format_timestamp, format_value, parse_duration, parse_ratio, parse_size,
)

GiB = 2**30


@pytest.mark.parametrize("text, seconds", [
    (90, 90.0), (1.5, 1.5), (0, 0.0),
    ("90", 90.0), ("0.5", 0.5),
    ("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("26h", 93600.0), ("7d", 604800.0), ("2w", 1209600.0),
    ("1.5h", 5400.0), ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1m30s500ms", 90.5),
    ("30S", 30.0), (" 10s ", 10.0), ("0s", 0.0),
])
def test_parse_duration_human_form_returns_seconds(text, seconds):
    result = parse_duration(text)
    assert result == seconds
    assert isinstance(result, float)


def test_parse_duration_ms_not_read_as_minutes():
    assert parse_duration("5ms") == 0.005
    assert parse_duration("5m") == 300.0


@pytest.mark.parametrize("text", ["5x", "", "   ", "s", "ms", "-5s", "5m30", "1..5s", "1.s", "abc",
                                  "30 seconds", "5mm", "1h-30m", "∞s"])
def test_parse_duration_bad_text_raises_with_hint(text):
    with pytest.raises(ValueError, match=r"invalid duration .* \(use a number with ms, s, m, h, d or w"):
        parse_duration(text)


@pytest.mark.parametrize("value, message", [
    (-1, "must not be negative"), (-0.5, "must not be negative"),
    (float("nan"), "finite"), (float("inf"), "finite"),
    (True, "expected a duration"), (None, "expected a duration"), ([30], "expected a duration"),
])
def test_parse_duration_bad_value_raises(value, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


@pytest.mark.parametrize("text, size", [
    (0, 0), (1024, 1024), ("512", 512), ("1b", 1), ("1B", 1),
    ("10GiB", 10 * GiB), ("10 gib", 10 * GiB), ("10g", 10 * GiB), ("512MiB", 512 * 2**20),
    ("1.5KiB", 1536), ("1k", 1024), ("1TiB", 2**40), ("1t", 2**40),
    ("500 MB", 500_000_000), ("2GB", 2_000_000_000), ("1kb", 1000), ("3TB", 3 * 10**12),
])
def test_parse_size_human_form_returns_bytes(text, size):
    result = parse_size(text)
    assert result == size
    assert isinstance(result, int)


@pytest.mark.parametrize("text", ["10XB", "", "GiB", "-1", "1.2.3MB", "10 G iB", "ten GB", "10PiB"])
def test_parse_size_bad_text_raises_with_units(text):
    with pytest.raises(ValueError, match=r"invalid size .* \(use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB\)"):
        parse_size(text)


@pytest.mark.parametrize("value, message", [
    (-1, "must not be negative"), (True, "expected a size"), (None, "expected a size"), ({}, "expected a size"),
    (float("nan"), "invalid size"), (float("inf"), "invalid size"),
])
def test_parse_size_bad_value_raises(value, message):
    with pytest.raises(ValueError, match=message):
        parse_size(value)


@pytest.mark.parametrize("text, ratio", [
    ("85%", 0.85), ("0%", 0.0), ("100%", 1.0), ("12.5%", 0.125), (" 85% ", 0.85), ("85 %", 0.85),
    (0.85, 0.85), ("0.5", 0.5), (0, 0.0), (1, 1.0),
    (85, 0.85), ("85", 0.85), (100, 1.0),
])
def test_parse_ratio_percentage_or_fraction_returns_ratio(text, ratio):
    assert parse_ratio(text) == pytest.approx(ratio)


@pytest.mark.parametrize("value, message", [
    ("120%", "between 0% and 100%"), (120, "between 0% and 100%"), ("150", "between 0% and 100%"),
    ("-5%", "between 0% and 100%"), (-0.1, "between 0% and 100%"),
    (float("nan"), "between 0% and 100%"), (float("inf"), "between 0% and 100%"),
    ("abc", "invalid percentage"), ("85 percent", "invalid percentage"), ("%", "invalid percentage"),
    (True, "expected a percentage"), (None, "expected a percentage"),
])
def test_parse_ratio_bad_value_raises(value, message):
    with pytest.raises(ValueError, match=message):
        parse_ratio(value)


@pytest.mark.parametrize("seconds, text", [
    (0, "0ms"), (0.15, "150ms"), (0.25, "250ms"),
    (1, "1s"), (1.5, "1.5s"), (42, "42s"), (12.34, "12.3s"), (59, "59s"),
    (60, "1m"), (300, "5m"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"),
    (86400, "1d"), (183600, "2d3h"), (183840, "2d3h"), (93600, "1d2h"),
])
def test_format_duration_seconds_returns_short_human_form(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("size, text", [
    (0, "0B"), (512, "512B"), (1023, "1023B"), (1024, "1.0KiB"), (1536, "1.5KiB"),
    (512 * 2**20, "512.0MiB"), (10 * GiB, "10.0GiB"), (2**40, "1.0TiB"), (2**50, "1024.0TiB"),
])
def test_format_size_bytes_returns_binary_prefix(size, text):
    assert format_size(size) == text


@pytest.mark.parametrize("value, unit, text", [
    (0.85, "ratio", "85%"), (0.955, "ratio", "95.5%"), (1.0, "ratio", "100%"),
    (300, "seconds", "5m"), (0.2, "seconds", "200ms"),
    (1536, "bytes", "1.5KiB"),
    (2, "count", "2"), (0.5, "count", "0.5"), (3.0, "count", "3"),
])
def test_format_value_by_unit_returns_human_form(value, unit, text):
    assert format_value(value, unit) == text


@pytest.mark.parametrize("seconds", [0.25, 42, 300, 5400, 183600])
def test_format_duration_output_parses_back_to_same_seconds(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("size", [512, 1536, 10 * GiB, 2**40])
def test_format_size_output_parses_back_to_same_bytes(size):
    assert parse_size(format_size(size)) == size


def test_parse_ratio_format_value_round_trip_keeps_percentage():
    for text in ("85%", "12.5%", "0%", "100%"):
        assert format_value(parse_ratio(text), "ratio") == text
    assert math.isclose(parse_ratio(format_value(0.855, "ratio")), 0.855)


def test_format_timestamp_utc_for_programs_local_with_offset_for_people(monkeypatch):
    import time
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert format_timestamp(1736074800.25) == "2025-01-05T11:00:00Z"
        assert format_timestamp(1736074800.25, timespec="milliseconds") == "2025-01-05T11:00:00.250Z"
        assert format_timestamp(1736074800.25, utc=False) == "2025-01-05T12:00:00+01:00"
        assert format_timestamp(None) is None
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
