"""Working-day calendar: public holidays and make-up working days that administrators enter.

The ``chinese_calendar`` library knows the State Council's schedule for the years it was
released with; these rows cover later years and correct the library where it is wrong.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow

HOLIDAY = "holiday"
WORKDAY = "workday"  # a make-up working day (调休上班), usually a Saturday or Sunday
KINDS = (HOLIDAY, WORKDAY)


class CalendarDay(Base):
    """One day that is off (法定节假日) or on (调休上班) against the Monday-to-Friday rule."""

    __tablename__ = "calendar_days"
    __table_args__ = (CheckConstraint("kind IN ('holiday', 'workday')", name="kind_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(60))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
