"""Risk notices (风险提示) sent to a firm from an early warning, and the firm's acknowledgement."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow


class RiskNotice(Base):
    """What an administrator told a firm about a rise in complaints, with the figures the
    warning showed at that moment (kept as sent, whatever the figures are later)."""

    __tablename__ = "risk_notices"

    id: Mapped[int] = mapped_column(primary_key=True)
    firm_id: Mapped[int] = mapped_column(ForeignKey("firms.id"), index=True)
    # The committee whose administrator sent it; None for a platform administrator.
    committee_id: Mapped[int | None] = mapped_column(ForeignKey("committees.id"))
    sent_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    category: Mapped[str] = mapped_column(String(30), default="")  # "" = all categories
    window_days: Mapped[int] = mapped_column(Integer)
    # observed, expected, p_value, baseline_days, since (ISO date), case_ids
    figures: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    reply: Mapped[str] = mapped_column(Text, default="")
