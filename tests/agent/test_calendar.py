"""Calendar specs: parsing, DST-correct fire times, month ends, catch-up and jitter."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from agent.plugin.calendar import (
    LAST_DAY,
    CalendarSpec,
    CalendarSpecError,
    catch_up_due,
    days_in_month,
    fire_times_between,
    jitter_offset_seconds,
    next_fire,
    parse_calendar,
    previous_fire,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *fields: int, fold: int = 0) -> datetime:
    """Given wall-clock fields in tz, return the aware datetime."""
    return datetime(*fields, tzinfo=tz, fold=fold)


def fires_between(spec: CalendarSpec, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """Given a window, return every fire in (start, end] by chaining next_fire the way the scheduler does."""
    fires = []
    moment = next_fire(spec, start, tz)
    while moment <= end:
        fires.append(moment)
        moment = next_fire(spec, moment, tz)
    return fires


# --- parsing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, hour, minute, weekdays, days, months", [
    ("02:00", 2, 0, None, None, None),
    ("2:30", 2, 30, None, None, None),
    ("mon 03:00", 3, 0, {0}, None, None),
    ("mon,thu 03:00", 3, 0, {0, 3}, None, None),
    ("mon..fri 07:45", 7, 45, {0, 1, 2, 3, 4}, None, None),
    ("sat,sun 06:15", 6, 15, {5, 6}, None, None),
    ("1 04:00", 4, 0, None, {1}, None),
    ("1,15 04:00", 4, 0, None, {1, 15}, None),
    ("31 04:00", 4, 0, None, {31}, None),
    ("last 23:00", 23, 0, None, {LAST_DAY}, None),
    ("jan,apr,jul,oct 1 05:00", 5, 0, None, {1}, {1, 4, 7, 10}),
    ("jan..mar 00:00", 0, 0, None, None, {1, 2, 3}),
    ("* 1 05:00", 5, 0, None, {1}, None),
    ("dec mon 03:00", 3, 0, {0}, None, {12}),
    ("23:59", 23, 59, None, None, None),
])
def test_parse_calendar_accepts_documented_forms(text, hour, minute, weekdays, days, months):
    spec = parse_calendar(text)
    assert (spec.hour, spec.minute) == (hour, minute)
    assert spec.weekdays == (frozenset(weekdays) if weekdays is not None else None)
    assert spec.days == (frozenset(days) if days is not None else None)
    assert spec.months == (frozenset(months) if months is not None else None)


def test_parse_calendar_is_case_insensitive_and_normalises_text():
    spec = parse_calendar("  MON,Thu \t 03:00 ")
    assert spec.weekdays == frozenset({0, 3})
    assert spec.text == "mon,thu 03:00"


def test_calendar_spec_is_frozen():
    spec = parse_calendar("02:00")
    with pytest.raises(AttributeError):
        spec.hour = 3  # type: ignore[misc]


@pytest.mark.parametrize("text, named", [
    ("", "empty"),
    ("   ", "empty"),
    ("mon", "'mon'"),
    ("25:00", "'25:00'"),
    ("12:60", "'12:60'"),
    ("24:00", "'24:00'"),
    ("mnd 03:00", "'mnd'"),
    ("mon,mnd 03:00", "'mnd'"),
    ("jan,foo 1 05:00", "'foo'"),
    ("0 04:00", "'0'"),
    ("32 04:00", "'32'"),
    ("1,0 04:00", "'0'"),
    ("mon 1 03:00", "either weekdays or a day of month"),
    ("1 mon 03:00", "either weekdays or a day of month"),
    ("every 03:00", "'every'"),
    ("mon 03:00 now", "'now'"),
    ("03:00 04:00", "'03:00'"),
    ("mon tue 03:00", "'tue'"),
    ("1 15 03:00", "'15'"),
    ("mon jan 03:00", "'jan'"),
    ("jan feb 03:00", "'feb'"),
    ("sat..mon 06:00", "'sat..mon'"),
    ("nov..feb 1 06:00", "'nov..feb'"),
    ("1x 04:00", "'1x'"),
    ("3:0 04:00", "'3:0'"),
])
def test_parse_calendar_rejects_bad_specs_naming_the_token(text, named):
    with pytest.raises(CalendarSpecError) as caught:
        parse_calendar(text)
    assert named in str(caught.value)


def test_parse_calendar_error_is_a_value_error_with_operator_message():
    with pytest.raises(ValueError, match=r"unknown weekday 'mnd' \(expected mon\.\.sun\)"):
        parse_calendar("mon,mnd 03:00")


def test_wrapping_weekday_range_error_suggests_the_list():
    with pytest.raises(CalendarSpecError, match="sat,sun,mon"):
        parse_calendar("sat..mon 06:00")


def test_calendar_spec_rejects_out_of_range_fields_when_built_by_hand():
    with pytest.raises(CalendarSpecError):
        CalendarSpec(hour=24, minute=0, weekdays=None, days=None, months=None, text="24:00")
    with pytest.raises(CalendarSpecError):
        CalendarSpec(hour=1, minute=0, weekdays=frozenset({0}), days=frozenset({1}), months=None, text="x")


@pytest.mark.parametrize("text, description", [
    ("02:00", "daily at 02:00"),
    ("2:05", "daily at 02:05"),
    ("mon 03:00", "weekly on mon at 03:00"),
    ("mon..fri 07:00", "weekly on mon..fri at 07:00"),
    ("sat,sun 06:15", "weekly on sat,sun at 06:15"),
    ("1 04:00", "monthly on day 1 at 04:00"),
    ("1,15 04:00", "monthly on days 1,15 at 04:00"),
    ("31 04:00", "monthly on day 31 at 04:00 (last day in shorter months)"),
    ("last 23:00", "monthly on the last day at 23:00"),
    ("jan,apr,jul,oct 1 05:00", "on day 1 of jan,apr,jul,oct at 05:00"),
    ("jan,mar 31 05:00", "on day 31 of jan,mar at 05:00"),
    ("feb 30 05:00", "on day 30 of feb at 05:00 (last day in shorter months)"),
    ("dec mon 03:00", "on mon in dec at 03:00"),
    ("jan..mar 00:00", "daily in jan..mar at 00:00"),
])
def test_describe_reads_like_a_sentence(text, description):
    assert parse_calendar(text).describe() == description


def test_days_in_month_knows_leap_years():
    assert days_in_month(2028, 2) == 29
    assert days_in_month(2027, 2) == 28
    assert days_in_month(2100, 2) == 28
    assert days_in_month(2026, 12) == 31


# --- next_fire basics ------------------------------------------------------------------------

def test_next_fire_returns_utc_aware_datetime():
    fire = next_fire(parse_calendar("02:00"), local(BERLIN, 2026, 6, 1, 12, 0), BERLIN)
    assert fire.tzinfo is UTC
    assert fire == datetime(2026, 6, 2, 0, 0, tzinfo=UTC)  # 02:00 CEST


def test_next_fire_same_day_when_slot_is_still_ahead():
    fire = next_fire(parse_calendar("23:00"), local(BERLIN, 2026, 1, 10, 8, 0), BERLIN)
    assert fire.astimezone(BERLIN) == local(BERLIN, 2026, 1, 10, 23, 0)


def test_next_fire_accepts_after_in_any_zone():
    after_in_utc = datetime(2026, 1, 10, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    fire = next_fire(parse_calendar("23:00"), after_in_utc, BERLIN)
    assert fire.astimezone(BERLIN) == local(BERLIN, 2026, 1, 11, 23, 0)


def test_next_fire_rejects_naive_after():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(parse_calendar("02:00"), datetime(2026, 1, 1), BERLIN)


def test_next_fire_is_strictly_after_a_fire_time():
    spec = parse_calendar("02:00")
    fire = next_fire(spec, local(BERLIN, 2026, 5, 1, 0, 0), BERLIN)
    following = next_fire(spec, fire, BERLIN)
    assert following > fire
    assert following.astimezone(BERLIN) == local(BERLIN, 2026, 5, 2, 2, 0)


def test_next_fire_just_before_a_fire_returns_that_fire():
    spec = parse_calendar("mon 03:00")
    fire = next_fire(spec, local(BERLIN, 2026, 5, 1, 0, 0), BERLIN)
    assert next_fire(spec, fire - timedelta(microseconds=1), BERLIN) == fire


# --- DST -------------------------------------------------------------------------------------

def test_next_fire_spring_forward_berlin_runs_once_shifted_by_the_gap():
    spec = parse_calendar("02:30")
    fire = next_fire(spec, local(BERLIN, 2026, 3, 28, 12, 0), BERLIN)
    assert fire == local(BERLIN, 2026, 3, 29, 3, 30).astimezone(UTC)  # 02:30 does not exist
    assert fire == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert next_fire(spec, fire, BERLIN).astimezone(BERLIN) == local(BERLIN, 2026, 3, 30, 2, 30)


def test_next_fire_fall_back_berlin_runs_once_at_first_occurrence():
    spec = parse_calendar("02:30")
    fire = next_fire(spec, local(BERLIN, 2026, 10, 24, 12, 0), BERLIN)
    assert fire == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST, not 02:30 CET
    second_occurrence = local(BERLIN, 2026, 10, 25, 2, 30, fold=1).astimezone(UTC)
    assert next_fire(spec, fire, BERLIN) > second_occurrence
    assert next_fire(spec, fire, BERLIN).astimezone(BERLIN) == local(BERLIN, 2026, 10, 26, 2, 30)


def test_next_fire_spring_forward_new_york_runs_once_shifted_by_the_gap():
    fire = next_fire(parse_calendar("02:30"), local(NEW_YORK, 2026, 3, 7, 12, 0), NEW_YORK)
    assert fire == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT


def test_next_fire_fall_back_new_york_ambiguous_0130_runs_once_at_first_occurrence():
    spec = parse_calendar("01:30")
    fire = next_fire(spec, local(NEW_YORK, 2026, 10, 31, 12, 0), NEW_YORK)
    assert fire == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT
    assert next_fire(spec, fire, NEW_YORK).astimezone(NEW_YORK) == local(NEW_YORK, 2026, 11, 2, 1, 30)


@pytest.mark.parametrize("tz, change_day", [
    (BERLIN, date(2026, 3, 29)),
    (BERLIN, date(2026, 10, 25)),
    (NEW_YORK, date(2026, 3, 8)),
    (NEW_YORK, date(2026, 11, 1)),
], ids=["berlin-spring", "berlin-fall", "new-york-spring", "new-york-fall"])
@pytest.mark.parametrize("wall", ["02:30", "01:30", "00:00", "03:00"])
def test_next_fire_daily_runs_exactly_once_per_local_date_across_dst(tz, change_day, wall):
    spec = parse_calendar(wall)
    first_day, last_day = change_day - timedelta(days=4), change_day + timedelta(days=4)
    start = local(tz, first_day.year, first_day.month, first_day.day, 0, 0) - timedelta(minutes=1)
    end = local(tz, last_day.year, last_day.month, last_day.day, 23, 59)
    fires = fires_between(spec, start, end, tz)

    per_date = Counter(fire.astimezone(tz).date() for fire in fires)
    expected_dates = [first_day + timedelta(days=n) for n in range(9)]
    assert sorted(per_date) == expected_dates
    assert set(per_date.values()) == {1}
    assert fires == sorted(set(fires))
    for fire in fires:
        wall_time = fire.astimezone(tz)
        if fire.astimezone(tz).date() != change_day:
            assert (wall_time.hour, wall_time.minute) == (spec.hour, spec.minute)


# --- month ends, quarterly, weekly ----------------------------------------------------------

@pytest.mark.parametrize("text", ["31 04:00", "last 23:00"])
def test_month_end_specs_fire_once_per_month_on_the_last_day(text):
    spec = parse_calendar(text)
    fires = fires_between(spec, local(BERLIN, 2027, 1, 1, 0, 0), local(BERLIN, 2028, 12, 31, 23, 59), BERLIN)
    dates = [fire.astimezone(BERLIN).date() for fire in fires]
    expected = [date(year, month, days_in_month(year, month))
                for year in (2027, 2028) for month in range(1, 13)]
    assert dates == expected
    assert date(2027, 2, 28) in dates and date(2028, 2, 29) in dates and date(2027, 4, 30) in dates
    assert all((f.astimezone(BERLIN).hour, f.astimezone(BERLIN).minute) == (spec.hour, spec.minute)
               for f in fires)


def test_day_30_fires_once_on_february_28():
    spec = parse_calendar("30 04:00")
    fires = fires_between(spec, local(BERLIN, 2027, 1, 31, 0, 0), local(BERLIN, 2027, 3, 31, 0, 0), BERLIN)
    assert [f.astimezone(BERLIN).date() for f in fires] == [date(2027, 2, 28), date(2027, 3, 30)]


def test_day_29_fires_on_february_29_in_a_leap_year_only_once():
    spec = parse_calendar("29 04:00")
    fires = fires_between(spec, local(BERLIN, 2028, 2, 1, 0, 0), local(BERLIN, 2028, 3, 1, 0, 0), BERLIN)
    assert [f.astimezone(BERLIN).date() for f in fires] == [date(2028, 2, 29)]


def test_days_that_clamp_to_the_same_date_fire_once_not_twice():
    spec = parse_calendar("30,31,last 04:00")
    fires = fires_between(spec, local(BERLIN, 2027, 2, 1, 0, 0), local(BERLIN, 2027, 5, 1, 0, 0), BERLIN)
    assert [f.astimezone(BERLIN).date() for f in fires] == [
        date(2027, 2, 28), date(2027, 3, 30), date(2027, 3, 31), date(2027, 4, 30)]


def test_feb_30_fires_once_a_year_on_the_last_day_of_february():
    spec = parse_calendar("feb 30 04:00")
    fires = fires_between(spec, local(BERLIN, 2027, 1, 1, 0, 0), local(BERLIN, 2028, 12, 31, 0, 0), BERLIN)
    assert [f.astimezone(BERLIN).date() for f in fires] == [date(2027, 2, 28), date(2028, 2, 29)]


def test_quarterly_spec_fires_four_times_a_year_on_quarter_starts():
    spec = parse_calendar("jan,apr,jul,oct 1 05:00")
    fires = fires_between(spec, local(BERLIN, 2026, 1, 1, 0, 0), local(BERLIN, 2027, 12, 31, 23, 59), BERLIN)
    walls = [f.astimezone(BERLIN) for f in fires]
    assert [w.date() for w in walls] == [date(year, month, 1)
                                        for year in (2026, 2027) for month in (1, 4, 7, 10)]
    assert all((w.hour, w.minute) == (5, 0) for w in walls)


def test_weekly_spec_fires_every_monday_seven_wall_days_apart_across_dst():
    spec = parse_calendar("mon 03:00")
    fires = fires_between(spec, local(BERLIN, 2026, 3, 1, 0, 0), local(BERLIN, 2026, 11, 30, 0, 0), BERLIN)
    walls = [f.astimezone(BERLIN) for f in fires]
    assert all(w.weekday() == 0 and (w.hour, w.minute) == (3, 0) for w in walls)
    assert all((b.date() - a.date()).days == 7 for a, b in zip(walls, walls[1:]))
    gaps_in_hours = {(b - a).total_seconds() / 3600 for a, b in zip(fires, fires[1:])}
    assert gaps_in_hours == {167.0, 168.0, 169.0}  # the DST weeks are not 168 h long


def test_weekday_list_fires_on_each_listed_day():
    spec = parse_calendar("sat,sun 06:15")
    fires = fires_between(spec, local(NEW_YORK, 2026, 6, 1, 0, 0), local(NEW_YORK, 2026, 6, 30, 0, 0), NEW_YORK)
    walls = [f.astimezone(NEW_YORK) for f in fires]
    assert [w.day for w in walls] == [6, 7, 13, 14, 20, 21, 27, 28]
    assert all((w.hour, w.minute) == (6, 15) for w in walls)


def test_months_with_weekday_fire_only_inside_those_months():
    spec = parse_calendar("dec mon 03:00")
    fires = fires_between(spec, local(BERLIN, 2026, 1, 1, 0, 0), local(BERLIN, 2026, 12, 31, 23, 0), BERLIN)
    assert [f.astimezone(BERLIN).day for f in fires] == [7, 14, 21, 28]


# --- previous_fire ---------------------------------------------------------------------------

def test_previous_fire_includes_an_exact_fire_time():
    spec = parse_calendar("02:00")
    fire = next_fire(spec, local(BERLIN, 2026, 5, 1, 12, 0), BERLIN)
    assert previous_fire(spec, fire, BERLIN) == fire
    assert previous_fire(spec, fire - timedelta(microseconds=1), BERLIN) == fire - timedelta(days=1)


@pytest.mark.parametrize("text", ["02:30", "01:30", "00:00", "mon 03:00", "31 04:00", "jan,apr,jul,oct 1 05:00"])
@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK], ids=["berlin", "new-york"])
def test_previous_fire_agrees_with_next_fire(text, tz):
    spec = parse_calendar(text)
    sample_starts = [datetime(2026, 3, 7, 0, 0, tzinfo=UTC), datetime(2026, 10, 24, 0, 0, tzinfo=UTC)]
    for start in sample_starts:
        for step in range(0, 24 * 12):  # every 50 min over 10 days, crossing the DST changes
            moment = start + timedelta(minutes=50 * step)
            upcoming = next_fire(spec, moment, tz)
            earlier = previous_fire(spec, moment, tz)
            assert previous_fire(spec, upcoming, tz) == upcoming
            assert earlier <= moment < upcoming
            assert next_fire(spec, earlier, tz) == upcoming  # nothing fires between them
            assert earlier.tzinfo is UTC


def test_previous_fire_rejects_naive_before():
    with pytest.raises(ValueError):
        previous_fire(parse_calendar("02:00"), datetime(2026, 1, 1), BERLIN)


# --- catch-up --------------------------------------------------------------------------------

def test_catch_up_due_after_missing_several_days_of_a_daily_job():
    spec = parse_calendar("02:00")
    now = local(BERLIN, 2026, 5, 10, 9, 0)
    assert catch_up_due(spec, now - timedelta(days=3), now, BERLIN) is True


def test_catch_up_not_due_when_last_fire_was_after_todays_slot():
    spec = parse_calendar("02:00")
    now = local(BERLIN, 2026, 5, 10, 9, 0)
    assert catch_up_due(spec, now - timedelta(hours=1), now, BERLIN) is False


def test_catch_up_not_due_when_never_armed():
    assert catch_up_due(parse_calendar("02:00"), None, local(BERLIN, 2026, 5, 10, 9, 0), BERLIN) is False


def test_catch_up_due_exactly_at_the_fire_time_and_not_just_before():
    spec = parse_calendar("02:00")
    last = local(BERLIN, 2026, 5, 9, 2, 0)
    slot = local(BERLIN, 2026, 5, 10, 2, 0)
    assert catch_up_due(spec, last, slot, BERLIN) is True
    assert catch_up_due(spec, last, slot - timedelta(microseconds=1), BERLIN) is False


def test_catch_up_not_due_when_last_fired_is_in_the_future():
    now = local(BERLIN, 2026, 5, 10, 9, 0)
    assert catch_up_due(parse_calendar("02:00"), now + timedelta(days=2), now, BERLIN) is False


# --- jitter ----------------------------------------------------------------------------------

def test_jitter_is_deterministic_per_key():
    assert jitter_offset_seconds("host-a/disk", 3600) == jitter_offset_seconds("host-a/disk", 3600)


def test_jitter_stays_within_bounds_and_spreads_keys():
    offsets = [jitter_offset_seconds(f"host-{n}/backup", 3600) for n in range(100)]
    assert all(0 <= offset < 3600 for offset in offsets)
    assert min(offsets) < max(offsets)
    assert len(set(offsets)) == 100
    assert min(offsets) < 900 and max(offsets) > 2700  # roughly uniform, not bunched


@pytest.mark.parametrize("maximum", [0, -5, 0.0])
def test_jitter_is_zero_without_a_positive_maximum(maximum):
    assert jitter_offset_seconds("host-a/disk", maximum) == 0.0


def test_jitter_below_one_for_tiny_maximum():
    assert 0 <= jitter_offset_seconds("host-a/disk", 1e-300) < 1e-300


def test_fire_times_between_lists_the_fires_in_the_open_range_as_next_fire_chains_them():
    spec = parse_calendar("mon 03:00")
    start = local(BERLIN, 2026, 3, 23, 3, 0)     # a fire itself: excluded
    end = local(BERLIN, 2026, 4, 13, 3, 0)       # likewise (the range is open at both ends)
    times = fire_times_between(spec, start.timestamp(), end.timestamp(), BERLIN)
    assert times == [f.timestamp() for f in fires_between(spec, start, end, BERLIN)][:-1]
    assert [datetime.fromtimestamp(t, BERLIN).isoformat() for t in times] == [
        "2026-03-30T03:00:00+02:00", "2026-04-06T03:00:00+02:00"]   # across the DST change
