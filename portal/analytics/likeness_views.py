"""Template-complaint detection for staff: a filing beside its nearest alike filings, and the
administrators' clusters of alike filings over time. The case page's panel is built here too
(``case_summary``), for portal.cases.views."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from portal.analytics import library, likeness
from portal.analytics.likeness import LikenessIndex
from portal.analytics.policy import LIKENESS
from portal.cases import service as cases
from portal.cases.models import Case
from portal.i18n import Msg, _l
from portal.policy import Role
from portal.web import db_session, identity, permits, render, require

PERIOD_DAYS = 90  # the clusters page's default period, up to today
MIN_SIZE = 3  # a cluster is this many filings or more, by default
MAX_MIN_SIZE = 1000


def running_index(request: Request) -> LikenessIndex | None:
    """The process's index when the app's lifespan made one (filings go "not compared"
    otherwise, and are compared once there is one)."""
    index = getattr(request.app.state, "likeness", None)
    return index if isinstance(index, LikenessIndex) else None


async def index_for(request: Request) -> LikenessIndex:
    """The process's index. The app's lifespan makes and starts it; if it did not, it is made
    here and built at its first use."""
    state = request.app.state
    index = running_index(request)
    if index is None:
        index = LikenessIndex(state.db)
        state.likeness = index
    if not index.ready and not index.running:
        await index.rebuild()
    return index


async def case_summary(request: Request, db: AsyncSession, case: Case) -> likeness.Summary:
    """The case page's panel (the view has checked the "likeness" permission)."""
    return await likeness.case_summary(db, await index_for(request), case, identity(request))


async def compare(request: Request) -> Response:
    """This filing's facts beside each of its nearest alike filings' facts. A filing this
    person may not open (another mediator's case, say) is shown anonymised as the case
    library is: the wording that makes it a template stays, its parties' data does not."""
    async with db_session(request) as db:
        case = await cases.get_case(db, request.path_params["case_id"])
        require(request, "likeness", case)
        result = await likeness.compare(db, await index_for(request), case, identity(request))
        viewable = {near.case.id: permits(request, "view", near.case) for near in result.nearest}
        hidden = [near.case for near in result.nearest if not viewable[near.case.id]]
        known = await library.known_people(db, request.app.state.vault, hidden)
    nearest = []
    for near in result.nearest:
        theirs = near.case.facts
        if not viewable[near.case.id]:
            theirs = library.anonymise(theirs, known[near.case.id])
        nearest.append(
            {
                "near": near,
                "mine": likeness.passages(case.facts, theirs),
                "theirs": likeness.passages(theirs, case.facts),
                "viewable": viewable[near.case.id],
            }
        )
    return render(
        request,
        "analytics/likeness_compare.html",
        {
            "case": case,
            "summary": result.summary,
            "nearest": nearest,
            "same_agent": [(c, permits(request, "view", c)) for c in result.same_agent],
        },
    )


def _day(value: str, default: date) -> date | None:
    if not value:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


async def clusters(request: Request) -> Response:
    """Groups of alike filings in a period, largest first, with their weeks."""
    require(request, "view", LIKENESS)
    who = identity(request)
    params = request.query_params
    today = cases.today_in_china()
    errors: list[Msg] = []
    until = _day(params.get("to", "").strip(), today)
    since = _day(params.get("from", "").strip(), (until or today) - timedelta(days=PERIOD_DAYS))
    if until is None or since is None:
        errors.append(_l("Give the dates as YYYY-MM-DD."))
    elif since > until:
        errors.append(_l("The start of the period is after its end."))
    raw_size = params.get("min", "").strip()
    min_size = int(raw_size) if raw_size.isdigit() else None if raw_size else MIN_SIZE
    if min_size is None or not 2 <= min_size <= MAX_MIN_SIZE:
        errors.append(
            _l(
                "The smallest group must be a whole number from {low} to {high}.",
                low=2,
                high=MAX_MIN_SIZE,
            )
        )
    committee_id: int | None = None
    raw_committee = params.get("committee", "").strip()
    platform = who.role == Role.PLATFORM_ADMIN
    async with db_session(request) as db:
        choices = await likeness.committee_choices(db) if platform else []
        if platform and raw_committee:
            if raw_committee not in {value for value, _ in choices}:
                errors.append(_l("Choose one of the options."))
            else:
                committee_id = int(raw_committee)
        report = None
        if not errors:
            assert since is not None and until is not None and min_size is not None
            report = await likeness.clusters(
                db,
                who,
                likeness.ClusterFilters(
                    since=since, until=until, committee_id=committee_id, min_size=min_size
                ),
            )
    form: dict[str, Any] = {
        "from": params.get("from", "") or (since.isoformat() if since else ""),
        "to": params.get("to", "") or (until.isoformat() if until else ""),
        "min": raw_size or str(MIN_SIZE),
        "committee": raw_committee,
    }
    return render(
        request,
        "analytics/likeness_clusters.html",
        {
            "report": report,
            "errors": errors,
            "form": form,
            "committees": choices,
            "platform": platform,
        },
        status_code=400 if errors else 200,
    )


routes: list[BaseRoute] = [
    Route("/cases/{case_id:int}/likeness", compare, name="likeness.compare"),
    Route("/admin/likeness", clusters, name="likeness.clusters"),
]
