"""The scheduling form (used to schedule and to reschedule)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from portal.i18n import _l
from portal.meetings.service import DURATIONS, MODES
from portal.validators import clean_choice
from portal.web import Form

DURATION_CHOICES = {str(d): d for d in DURATIONS}


class ScheduleForm(Form):
    """When (a local date and time in the committee's time zone), how long, which mode, and
    optionally who observes."""

    def __init__(self, data: Mapping[str, Any] | None, time_zone: str) -> None:
        super().__init__(data)
        self.time_zone = ZoneInfo(time_zone)

    def validate(self) -> bool:
        raw = self.value("starts_at").strip()
        try:
            local = datetime.fromisoformat(raw) if raw else None
        except ValueError:
            local = None
        if local is None or local.tzinfo is not None:
            self.add_error("starts_at", _l("Give the date and time of the session."))
        else:
            self.cleaned["starts_at"] = local.replace(tzinfo=self.time_zone)
        self.clean("mode", clean_choice, MODES)
        duration = self.value("duration")
        if duration not in DURATION_CHOICES:
            self.add_error("duration", _l("Choose one of the options."))
        else:
            self.cleaned["duration"] = DURATION_CHOICES[duration]
        observers = self.values("observers")
        if any(not o.isdigit() for o in observers):
            self.add_error("observers", _l("Choose one of the options."))
        self.cleaned["observers"] = [int(o) for o in observers if o.isdigit()]
        return self.valid
