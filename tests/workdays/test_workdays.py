"""Working days: the 2026 schedule from the library, years it lacks, administrators' entries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from portal.audit.models import AuditEvent
from portal.errors import DomainError, NotFound
from portal.i18n import load_catalogues
from portal.policy import Role
from portal.workdays.models import CalendarDay
from portal.workdays.service import (
    WorkCalendar,
    add_calendar_day,
    coverage_warning,
    list_calendar_days,
    load_calendar,
    remove_calendar_day,
)
from tests.factories import make_user

LIBRARY = WorkCalendar()

# 2031 is past the library's data: Wednesday 1 January, Saturday 4 January.
ENTERED_2031 = {
    date(2031, 1, 1): "holiday",
    date(2031, 1, 2): "holiday",
    date(2031, 1, 4): "workday",
}


def test_spring_festival_2026() -> None:
    # 15-23 February off (nine days); Saturdays 14 and 28 February are make-up working days.
    for day in range(15, 24):
        assert not LIBRARY.is_working_day(date(2026, 2, day)), day
    for weekday_off in (16, 17, 18, 19, 20, 23):
        assert date(2026, 2, weekday_off).weekday() < 5
    for make_up in (date(2026, 2, 14), date(2026, 2, 28)):
        assert make_up.weekday() == 5
        assert LIBRARY.is_working_day(make_up)
    assert LIBRARY.is_working_day(date(2026, 2, 13))
    assert LIBRARY.is_working_day(date(2026, 2, 24))
    assert not LIBRARY.is_working_day(date(2026, 2, 7))  # an ordinary Saturday


def test_national_day_2026() -> None:
    # 1-7 October off; Sunday 20 September and Saturday 10 October are make-up working days.
    for day in range(1, 8):
        assert not LIBRARY.is_working_day(date(2026, 10, day)), day
    for weekday_off in (1, 2, 5, 6, 7):
        assert date(2026, 10, weekday_off).weekday() < 5
    assert date(2026, 9, 20).weekday() == 6
    assert date(2026, 10, 10).weekday() == 5
    assert LIBRARY.is_working_day(date(2026, 9, 20))
    assert LIBRARY.is_working_day(date(2026, 10, 10))
    assert LIBRARY.is_working_day(date(2026, 10, 8))
    assert not LIBRARY.is_working_day(date(2026, 10, 11))


def test_add_working_days_across_spring_festival() -> None:
    friday_before = date(2026, 2, 13)
    assert LIBRARY.add_working_days(friday_before, 0) == friday_before
    assert LIBRARY.add_working_days(friday_before, 1) == date(2026, 2, 14)  # make-up Saturday
    assert LIBRARY.add_working_days(friday_before, 2) == date(2026, 2, 24)
    assert LIBRARY.add_working_days(friday_before, 5) == date(2026, 2, 27)
    assert LIBRARY.working_days_between(friday_before, date(2026, 2, 27)) == 5
    assert LIBRARY.working_days_between(date(2026, 2, 14), date(2026, 2, 23)) == 0
    assert LIBRARY.working_days_between(date(2026, 2, 27), friday_before) == 0
    assert LIBRARY.working_days_between(friday_before, friday_before) == 0
    # A holiday start is returned as it is for n=0; the count starts the day after.
    assert LIBRARY.add_working_days(date(2026, 2, 16), 0) == date(2026, 2, 16)
    assert LIBRARY.add_working_days(date(2026, 2, 16), 1) == date(2026, 2, 24)
    # National Day: from Wednesday 30 September, the 3rd working day is the make-up 10 October.
    assert LIBRARY.add_working_days(date(2026, 9, 30), 3) == date(2026, 10, 10)


days_2025_to_2032 = st.dates(min_value=date(2025, 1, 1), max_value=date(2032, 12, 31))


@given(start=days_2025_to_2032, n=st.integers(min_value=0, max_value=60))
def test_between_inverts_add(start: date, n: int) -> None:
    for calendar in (LIBRARY, WorkCalendar(ENTERED_2031)):
        end = calendar.add_working_days(start, n)
        assert calendar.working_days_between(start, end) == n
        assert end >= start
        if n:
            assert calendar.is_working_day(end)
            assert calendar.working_days_between(start, end - timedelta(days=1)) == n - 1


@given(start=days_2025_to_2032, span=st.integers(min_value=-30, max_value=400))
def test_between_counts_working_days(start: date, span: int) -> None:
    end = start + timedelta(days=span)
    expected = sum(
        LIBRARY.is_working_day(start + timedelta(days=i)) for i in range(1, (end - start).days + 1)
    )
    assert LIBRARY.working_days_between(start, end) == expected


def test_year_without_library_data_uses_weekdays_and_entries() -> None:
    bare = WorkCalendar()
    assert not bare.covers(2031)
    assert bare.is_working_day(date(2031, 1, 1))  # a Wednesday, and nobody said otherwise
    assert not bare.is_working_day(date(2031, 1, 4))  # Saturday
    assert not bare.is_working_day(date(2031, 1, 5))  # Sunday
    assert bare.add_working_days(date(2031, 1, 3), 1) == date(2031, 1, 6)

    entered = WorkCalendar(ENTERED_2031)
    assert entered.covers(2031)
    assert not entered.covers(2032)
    assert not entered.is_working_day(date(2031, 1, 1))
    assert not entered.is_working_day(date(2031, 1, 2))
    assert entered.is_working_day(date(2031, 1, 3))
    assert entered.is_working_day(date(2031, 1, 4))  # make-up Saturday
    assert not entered.is_working_day(date(2031, 1, 5))
    assert entered.add_working_days(date(2030, 12, 31), 2) == date(2031, 1, 4)
    # A make-up working day alone does not mean the year's holidays were entered.
    assert not WorkCalendar({date(2031, 1, 4): "workday"}).covers(2031)


def test_library_covers_its_years_only() -> None:
    assert LIBRARY.covers(2004)
    assert LIBRARY.covers(2026)
    assert not LIBRARY.covers(2003)
    assert not LIBRARY.covers(2031)


def test_entries_override_the_library() -> None:
    corrected = WorkCalendar({date(2026, 2, 16): "workday", date(2026, 3, 3): "holiday"})
    assert corrected.is_working_day(date(2026, 2, 16))
    assert not corrected.is_working_day(date(2026, 3, 3))
    assert LIBRARY.is_working_day(date(2026, 3, 3))


def test_bad_input_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        LIBRARY.add_working_days(date(2026, 3, 2), -1)
    with pytest.raises(ValueError, match="kind"):
        WorkCalendar({date(2031, 1, 1): "vacation"})
    # A UTC datetime's date is the wrong day in China for eight hours a day.
    with pytest.raises(TypeError):
        LIBRARY.is_working_day(datetime(2026, 2, 13, 17, tzinfo=UTC))


def test_coverage_warning_for_the_coming_year() -> None:
    warning = coverage_warning(LIBRARY, date(2026, 11, 23))
    assert warning is not None and warning.params == {"year": 2027}
    english = warning.render(load_catalogues()["en"])
    assert english.startswith("Working-day data for 2027 is missing")
    assert coverage_warning(LIBRARY, date(2025, 11, 23)) is None
    entered_2027 = WorkCalendar({date(2027, 1, 1): "holiday"})
    assert coverage_warning(entered_2027, date(2026, 11, 23)) is None
    # The current year is the more urgent one.
    only_2032 = WorkCalendar({date(2032, 1, 1): "holiday"})
    late = coverage_warning(only_2032, date(2031, 6, 1))
    assert late is not None and late.params == {"year": 2031}


# -- the service against the real databases -------------------------------------------------


async def test_administrator_enters_and_removes_days(app: Any) -> None:
    admin = await make_user(app, Role.PLATFORM_ADMIN)
    async with app.starlette.state.db() as db:
        assert not (await load_calendar(db)).covers(2031)
        new_year = await add_calendar_day(
            db, admin.id, day=date(2031, 1, 1), kind="holiday", name=" 元旦 "
        )
        await add_calendar_day(db, admin.id, day=date(2031, 1, 4), kind="workday", name="元旦")
        await add_calendar_day(db, admin.id, day=date(2030, 10, 1), kind="holiday", name="国庆节")
    assert new_year.name == "元旦" and new_year.created_by_id == admin.id
    assert new_year.created_at.tzinfo is not None

    async with app.starlette.state.db() as db:
        calendar = await load_calendar(db)
        listed = [(d.day, d.kind) for d in await list_calendar_days(db, 2031)]
        everything = await list_calendar_days(db)
        audit = list(await db.scalars(select(AuditEvent).order_by(AuditEvent.id)))
    assert calendar.covers(2031)
    assert not calendar.is_working_day(date(2031, 1, 1))
    assert calendar.is_working_day(date(2031, 1, 4))
    assert listed == [(date(2031, 1, 1), "holiday"), (date(2031, 1, 4), "workday")]
    assert [d.day for d in everything] == [date(2030, 10, 1), date(2031, 1, 1), date(2031, 1, 4)]
    adds = [e for e in audit if e.action == "calendar.add"]
    assert len(adds) == 3
    assert adds[0].actor_id == admin.id and adds[0].object_type == "calendar_day"
    assert adds[0].object_id == str(new_year.id)
    assert adds[0].detail == {"day": "2031-01-01", "kind": "holiday"}

    async with app.starlette.state.db() as db:
        await remove_calendar_day(db, admin.id, new_year.id)
        with pytest.raises(NotFound):
            await remove_calendar_day(db, admin.id, new_year.id)
    async with app.starlette.state.db() as db:
        calendar = await load_calendar(db)
        removed = await db.scalar(select(AuditEvent).where(AuditEvent.action == "calendar.remove"))
    assert calendar.is_working_day(date(2031, 1, 1))
    assert removed is not None and removed.object_id == str(new_year.id)
    assert removed.detail == {"day": "2031-01-01", "kind": "holiday"}


async def test_bad_entries_refused_and_nothing_written(app: Any) -> None:
    admin = await make_user(app, Role.PLATFORM_ADMIN)
    async with app.starlette.state.db() as db:
        await add_calendar_day(db, admin.id, day=date(2031, 1, 1), kind="holiday", name="元旦")
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"day": date(2031, 1, 1), "kind": "workday", "name": "元旦"}, "day"),
        ({"day": date(2031, 1, 2), "kind": "vacation", "name": "元旦"}, "kind"),
        ({"day": date(2031, 1, 2), "kind": "holiday", "name": "  "}, "name"),
        ({"day": date(2031, 1, 2), "kind": "holiday", "name": "节" * 61}, "name"),
    ]
    for fields, field in refusals:
        async with app.starlette.state.db() as db:
            with pytest.raises(DomainError) as refused:
                await add_calendar_day(db, admin.id, **fields)
        assert refused.value.field == field, fields
    async with app.starlette.state.db() as db:
        days = list(await db.scalars(select(CalendarDay)))
        actions = list(await db.scalars(select(AuditEvent.action)))
    assert [(d.day, d.kind) for d in days] == [(date(2031, 1, 1), "holiday")]
    assert actions.count("calendar.add") == 1
