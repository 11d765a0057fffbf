"""The statistics dashboard with its exports, early warnings, and risk notices to firms."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal import exports
from portal.analytics import alerts, charts, stats
from portal.analytics.policy import DASHBOARD, NOTICES
from portal.errors import DomainError
from portal.i18n import Msg, _l
from portal.orgs.categories import CATEGORIES
from portal.policy import Role
from portal.web import (
    db_session,
    flash,
    identity,
    read_form,
    redirect,
    render,
    require,
    tr,
    url_path,
)

BREAKDOWN_TITLES: dict[str, Msg] = {
    "month": _l("By month of filing"),
    "category": _l("By category"),
    "firm": _l("By firm"),
    "committee": _l("By committee"),
    "region": _l("By region"),
    "mediator": _l("By mediator"),
}


def _yuan(fen: int) -> str:
    return f"{fen / 100:,.0f}"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _days(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}".removesuffix(".0")


def _label(request: Request, breakdown: str, group: stats.Group) -> str:
    if breakdown == "category" and group.key in CATEGORIES:
        return tr(request, CATEGORIES[group.key])
    return group.label


def _list_link(request: Request, params: dict[str, str], outcome: str = "") -> str:
    """The staff case list showing exactly the cases a figure counts."""
    if not params:
        return ""
    query = {**params, **({"outcome": outcome} if outcome else {})}
    return url_path(request.app, "cases.list") + "?" + urlencode(query)


def _headers(request: Request, breakdown: str) -> list[str]:
    names: list[Msg] = [
        BREAKDOWN_TITLES[breakdown],
        _l("Cases received"),
        _l("Cases accepted"),
        _l("Settled cases"),
        _l("Failed mediations"),
        _l("Withdrawn cases"),
        _l("Rejected or ineligible"),
        _l("Success rate"),
        _l("Claimed (CNY)"),
        _l("Agreed (CNY)"),
        _l("Waived (CNY)"),
        _l("Paid and confirmed (CNY)"),
        _l("Working days, mean"),
        _l("Working days, median"),
        _l("Working days, 90th percentile"),
        _l("Firm response rate"),
    ]
    if breakdown == "mediator":
        names += [_l("Open cases"), _l("Overdue"), _l("Satisfaction (1-5)")]
    return [tr(request, name) for name in names]


def _cells(figures: stats.Figures) -> list[Any]:
    return [
        figures.received,
        figures.accepted,
        figures.settled,
        figures.failed,
        figures.withdrawn,
        figures.rejected,
        _percent(figures.success_rate),
        figures.claimed_fen / 100,
        figures.agreed_fen / 100,
        figures.waived_fen / 100,
        figures.paid_fen / 100,
        _days(figures.mean_days),
        _days(figures.median_days),
        _days(figures.p90_days),
        _percent(figures.response_rate),
    ]


def _rows(request: Request, board: stats.Dashboard, breakdown: str) -> Iterator[list[Any]]:
    if breakdown == "mediator":
        for row in board.mediators:
            satisfaction = "—" if row.satisfaction is None else row.satisfaction
            yield [row.name, *_cells(row.figures), row.open_cases, row.overdue, satisfaction]
        return
    for group in board.breakdowns[breakdown]:
        yield [_label(request, breakdown, group), *_cells(group.figures)]
    yield [tr(request, _l("All")), *_cells(board.total)]


def _chart_data(request: Request, board: stats.Dashboard) -> dict[str, Any]:
    months = board.breakdowns["month"]
    by_category = board.breakdowns["category"]
    firms = [g for g in board.breakdowns["firm"] if g.key is not None][:15]
    return {
        "months": charts.columns(
            tr(request, _l("Cases filed, settled and failed, by month of filing")),
            [g.label for g in months],
            [
                charts.Series(
                    tr(request, _l("Cases received")), [g.figures.received for g in months]
                ),
                charts.Series(
                    tr(request, _l("Settled cases")), [g.figures.settled for g in months]
                ),
                charts.Series(
                    tr(request, _l("Failed mediations")), [g.figures.failed for g in months]
                ),
            ],
        ),
        "categories": charts.bars(
            tr(request, _l("Cases received by category")),
            [
                (
                    _label(request, "category", g),
                    g.figures.received,
                    f"{g.figures.received:,} · {_percent(g.figures.success_rate)}",
                )
                for g in by_category
            ],
        ),
        "firms": charts.bars(
            tr(request, _l("Success rate by firm (most complaints first)")),
            [
                (
                    g.label,
                    (g.figures.success_rate or 0) * 100,
                    f"{_percent(g.figures.success_rate)} · {g.figures.received:,}",
                )
                for g in firms
            ],
            top_value=100,
        ),
        "mediators": charts.bars(
            tr(request, _l("Open and overdue cases by mediator")),
            [
                (
                    row.name,
                    row.open_cases,
                    f"{row.open_cases:,} · {tr(request, _l('overdue'))} {row.overdue:,}",
                )
                for row in board.mediators
            ],
        ),
    }


async def dashboard(request: Request) -> Response:
    require(request, "view", DASHBOARD)
    who = identity(request)
    try:
        query = stats.parse_query(request.query_params, who)
    except DomainError as exc:
        return render(
            request,
            "analytics/dashboard.html",
            {"error": exc.message, "board": None, "params": dict(request.query_params)},
            status_code=400,
        )
    async with db_session(request) as db:
        board = await stats.dashboard(db, query, unnamed=tr(request, _l("None")))
        committees = await stats.committee_choices(db, who)
        firms = await stats.firm_choices(db)
    return render(
        request,
        "analytics/dashboard.html",
        {
            "error": None,
            "board": board,
            "params": {**query.list_params(), "from": query.start.isoformat()},
            "titles": BREAKDOWN_TITLES,
            "charts": _chart_data(request, board),
            "committees": committees,
            "firms": firms,
            "categories": CATEGORIES,
            "label": lambda breakdown, group: _label(request, breakdown, group),
            "list_link": lambda params, outcome="": _list_link(request, params, outcome),
            "percent": _percent,
            "days": _days,
            "yuan": _yuan,
            "export_query": urlencode(query.list_params()),
            "platform": who.role == Role.PLATFORM_ADMIN,
        },
    )


async def export(request: Request) -> Response:
    require(request, "export", DASHBOARD)
    params = request.query_params
    breakdown = params.get("breakdown", "month")
    fmt = params.get("format", "csv")
    if breakdown not in stats.BREAKDOWNS or fmt not in exports.FORMATS:
        return Response(tr(request, _l("Unknown export.")), status_code=400)
    try:
        query = stats.parse_query(params, identity(request))
    except DomainError as exc:
        return Response(tr(request, exc.message), status_code=400)
    async with db_session(request) as db:
        board = await stats.dashboard(db, query, unnamed=tr(request, _l("None")))
    name = f"jiefen-{breakdown}-{query.start.isoformat()}-{query.end.isoformat()}"
    lines = [_headers(request, breakdown), *_rows(request, board, breakdown)]
    return await exports.download(fmt, name, lines)


# -- early warnings and risk notices ----------------------------------------------------------


def _scope(request: Request) -> int | None:
    who = identity(request)
    return who.committee_id if who.role == Role.COMMITTEE_ADMIN else None


async def warnings_page(request: Request, error: Msg | None = None, status: int = 200) -> Response:
    require(request, "view", DASHBOARD)
    async with db_session(request) as db:
        found = await alerts.alerts(db, _scope(request))
        behind = {
            (a.kind, a.key, a.window_days): await alerts.cases_behind(db, a, _scope(request))
            for a in found
        }
    return render(
        request,
        "analytics/warnings.html",
        {
            "alerts": found,
            "behind": behind,
            "categories": CATEGORIES,
            "windows": alerts.WINDOWS,
            "baseline_days": alerts.BASELINE_DAYS,
            "alpha": alerts.ALPHA,
            "min_cases": alerts.MIN_CASES,
            "error": error,
            "list_link": lambda params: _list_link(request, params),
        },
        status_code=status,
    )


async def warnings(request: Request) -> Response:
    return await warnings_page(request)


async def send_notice(request: Request) -> Response:
    require(request, "warn", DASHBOARD)
    form = await read_form(request)
    firm = str(form.get("firm", ""))
    window = str(form.get("window", ""))
    if not firm.isdigit() or not window.isdigit() or int(window) not in alerts.WINDOWS:
        error = _l("There is no current warning for this firm and period.")
        return await warnings_page(request, error, 400)
    async with db_session(request) as db:
        try:
            notice = await alerts.send_notice(
                db,
                request.state.user,
                identity(request),
                int(firm),
                int(window),
                str(form.get("message", "")),
            )
        except DomainError as exc:
            await db.rollback()
            error = exc.message
        else:
            return flash(
                request,
                redirect(request, "analytics.notice", notice_id=notice.id),
                _l("The risk notice was sent to the firm."),
            )
    return await warnings_page(request, error, 400)


async def notices(request: Request) -> Response:
    require(request, "list", NOTICES)
    async with db_session(request) as db:
        rows = await alerts.notices_for(db, identity(request))
        names = {row.firm_id: await alerts.firm_name(db, row.firm_id) for row in rows}
    return render(request, "analytics/notices.html", {"rows": rows, "names": names})


async def notice(request: Request) -> Response:
    async with db_session(request) as db:
        found = await alerts.get_notice(db, request.path_params["notice_id"])
        require(request, "view", found)
        error: Msg | None = None
        if request.method == "POST":
            require(request, "acknowledge", found)
            form = await read_form(request)
            try:
                await alerts.acknowledge(db, found, request.state.user, str(form.get("reply", "")))
            except DomainError as exc:
                await db.rollback()
                await db.refresh(found)
                error = exc.message
            else:
                return flash(
                    request,
                    redirect(request, "analytics.notice", notice_id=found.id),
                    _l("Acknowledged."),
                )
        firm_name = await alerts.firm_name(db, found.firm_id)
    return render(
        request,
        "analytics/notice.html",
        {"notice": found, "firm_name": firm_name, "error": error},
        status_code=400 if error else 200,
    )


routes = [
    Route("/admin/stats", dashboard, name="analytics.dashboard"),
    Route("/admin/stats/export", export, name="analytics.export"),
    Route("/admin/warnings", warnings, name="analytics.warnings"),
    Route("/admin/warnings/notice", send_notice, methods=["POST"], name="analytics.send_notice"),
    Route("/notices", notices, name="analytics.notices"),
    Route(
        "/notices/{notice_id:int}",
        notice,
        methods=["GET", "POST"],
        name="analytics.notice",
    ),
]
