"""Administrators enter public holidays and make-up working days for uncovered years."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.cases.policy import CALENDAR
from portal.cases.service import today_in_china
from portal.errors import DomainError
from portal.i18n import _l
from portal.validators import clean_choice, clean_text
from portal.web import Form, db_session, flash, read_form, redirect, render, require
from portal.workdays import service
from portal.workdays.models import KINDS

KIND_LABELS = {"holiday": _l("Public holiday (day off)"), "workday": _l("Make-up working day")}


class CalendarDayForm(Form):
    def validate(self) -> bool:
        from datetime import date

        try:
            self.cleaned["day"] = date.fromisoformat(self.value("day"))
        except ValueError:
            self.add_error("day", _l("Enter a date like 2026-03-15."))
        self.clean("kind", clean_choice, tuple(KINDS))
        self.clean("name", clean_text, max_length=service.NAME_MAX)
        return self.valid


async def calendar(request: Request) -> Response:
    require(request, "view", CALENDAR)
    today = today_in_china()
    year_param = request.query_params.get("year", "")
    year = (
        int(year_param)
        if year_param.isdigit() and 2000 <= int(year_param) <= 2100
        else today.year + 1
    )
    form = CalendarDayForm()
    async with db_session(request) as db:
        if request.method == "POST":
            require(request, "edit", CALENDAR)
            form = CalendarDayForm(await read_form(request))
            if form.validate():
                try:
                    await service.add_calendar_day(
                        db,
                        request.state.user.id,
                        day=form.cleaned["day"],
                        kind=form.cleaned["kind"],
                        name=form.cleaned["name"],
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    return flash(
                        request,
                        redirect(
                            request, "workdays.calendar", query=f"year={form.cleaned['day'].year}"
                        ),
                        _l("Saved."),
                    )
        days = await service.list_calendar_days(db, year)
        cal = await service.load_calendar(db)
    return render(
        request,
        "workdays/calendar.html",
        {
            "form": form,
            "days": days,
            "year": year,
            "kinds": KIND_LABELS,
            "covered": cal.covers(year),
            "warning": service.coverage_warning(cal, today),
        },
        status_code=400 if form.errors else 200,
    )


async def remove(request: Request) -> Response:
    require(request, "edit", CALENDAR)
    async with db_session(request) as db:
        await service.remove_calendar_day(db, request.state.user.id, request.path_params["day_id"])
    return flash(request, redirect(request, "workdays.calendar"), _l("Saved."))


routes = [
    Route("/admin/calendar", calendar, methods=["GET", "POST"], name="workdays.calendar"),
    Route("/admin/calendar/{day_id:int}/delete", remove, methods=["POST"], name="workdays.remove"),
]
