"""Statutory working days (工作日): the State Council's holidays and make-up working days (调休).

Deadlines in the portal are counted in working days. ``chinese_calendar`` carries the official
schedule for the years it was released with; for later years (the schedule for year Y is only
published around November of Y-1) administrators enter the holidays and make-up working days as
``CalendarDay`` rows, which also override the library where it is wrong. A year nobody has data
for falls back to Monday to Friday, and ``coverage_warning`` tells administrators to fill it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

import chinese_calendar  # type: ignore[import-untyped]
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.service import record
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.workdays.models import HOLIDAY, KINDS, WORKDAY, CalendarDay

NAME_MAX = 60
_ONE_DAY = timedelta(days=1)


def _library_is_workday(day: date) -> bool | None:
    """The library's answer, or None when it has no data for the day's year."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


def _check_date(value: date) -> date:
    # A datetime is a date to Python, but its .date() is the UTC day, which is the wrong
    # calendar day in China between 16:00 and 24:00 UTC: callers convert to local dates first.
    if isinstance(value, datetime):
        raise TypeError("pass a calendar date in China's time zone, not a datetime")
    return value


class WorkCalendar:
    """Which days are working days: administrators' entries, then the library, then Mon-Fri.

    ``entered`` maps a day to ``"holiday"`` (off) or ``"workday"`` (a make-up working day).
    """

    def __init__(self, entered: Mapping[date, str] | None = None) -> None:
        entered = dict(entered or {})
        for day, kind in entered.items():
            _check_date(day)
            if kind not in KINDS:
                raise ValueError(f"unknown calendar day kind {kind!r} on {day}")
        self._entered = entered
        # The library takes ~20 µs a day; deadlines for a list of cases ask about the same days.
        self._known: dict[date, bool] = {}

    def is_working_day(self, d: date) -> bool:
        known = self._known.get(_check_date(d))
        if known is None:
            kind = self._entered.get(d)
            if kind is not None:
                known = kind == WORKDAY
            else:
                library = _library_is_workday(d)
                known = library if library is not None else d.weekday() < 5
            self._known[d] = known
        return known

    def add_working_days(self, start: date, n: int) -> date:
        """The ``n``-th working day after ``start`` (``start`` itself does not count)."""
        if n < 0:
            raise ValueError("n must not be negative")
        day = _check_date(start)
        while n:
            day += _ONE_DAY
            if self.is_working_day(day):
                n -= 1
        return day

    def working_days_between(self, start: date, end: date) -> int:
        """The number of working days in (start, end]; 0 when ``end`` is not after ``start``."""
        day, end = _check_date(start), _check_date(end)
        count = 0
        while day < end:
            day += _ONE_DAY
            count += self.is_working_day(day)
        return count

    def covers(self, year: int) -> bool:
        """Whether the library has the year, or administrators entered a holiday in it."""
        if _library_is_workday(date(year, 1, 1)) is not None:
            return True
        return any(d.year == year and kind == HOLIDAY for d, kind in self._entered.items())


def coverage_warning(calendar: WorkCalendar, today: date) -> Msg | None:
    """A warning for administrators when this year or the coming one has no holiday data."""
    for year in (today.year, today.year + 1):
        if not calendar.covers(year):
            return _l(
                "Working-day data for {year} is missing: enter that year's public holidays "
                "and make-up working days.",
                year=year,
            )
    return None


async def load_calendar(db: AsyncSession) -> WorkCalendar:
    rows = await db.execute(select(CalendarDay.day, CalendarDay.kind))
    return WorkCalendar(dict(rows.all()))


async def list_calendar_days(db: AsyncSession, year: int | None = None) -> list[CalendarDay]:
    query = select(CalendarDay).order_by(CalendarDay.day)
    if year is not None:
        query = query.where(CalendarDay.day.between(date(year, 1, 1), date(year, 12, 31)))
    return list(await db.scalars(query))


async def add_calendar_day(
    db: AsyncSession, actor_id: int, *, day: date, kind: str, name: str
) -> CalendarDay:
    _check_date(day)
    if kind not in KINDS:
        raise DomainError(_l("Choose one of the options."), field="kind")
    name = name.strip()
    if not name:
        raise DomainError(_l("This field is required."), field="name")
    if len(name) > NAME_MAX:
        raise DomainError(_l("Use at most {count} characters.", count=NAME_MAX), field="name")
    duplicate = _l("This day is already in the calendar: remove it first to change it.")
    if await db.scalar(select(CalendarDay.id).where(CalendarDay.day == day)) is not None:
        raise DomainError(duplicate, field="day")
    entry = CalendarDay(day=day, kind=kind, name=name, created_by_id=actor_id)
    db.add(entry)
    try:
        await db.flush()
    except IntegrityError:  # entered at the same moment by someone else
        await db.rollback()
        raise DomainError(duplicate, field="day") from None
    record(db, actor_id, "calendar.add", "calendar_day", entry.id, day=day.isoformat(), kind=kind)
    await db.commit()
    return entry


async def remove_calendar_day(db: AsyncSession, actor_id: int, day_id: int) -> None:
    entry = await db.get(CalendarDay, day_id)
    if entry is None:
        raise NotFound
    detail = {"day": entry.day.isoformat(), "kind": entry.kind}
    await db.delete(entry)
    record(db, actor_id, "calendar.remove", "calendar_day", day_id, **detail)
    await db.commit()
