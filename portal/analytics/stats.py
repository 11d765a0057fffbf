"""The oversight figures: cases received, accepted and ended, money, working days, firm answers.

Every figure counts the cases *filed* (submitted) in a date range, China time, exactly as the
staff case list's "from"/"to" filter does; the counts by outcome are the list's "outcome"
filter. So a figure and the list it links to always show the same cases.

Whole months are read from the running totals that triggers keep (portal.analytics.rollup);
the rest is counted by the database: one GROUP BY per breakdown (month, category, firm,
committee, mediator) over the columns of ``ix_cases_stats``, with the working days in the group
key so that the median and 90th percentile are exact (working days are small whole numbers, so
the groups stay few). Both ways give the same figures. Regions are the committees' regions,
added up here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from portal.accounts.models import User
from portal.agreements.models import Agreement, Instalment, InstalmentState, Survey
from portal.analytics import rollup
from portal.analytics.rollup_models import BY_CATEGORY, BY_FIRM, BY_MEDIATOR, FIGURES
from portal.cases.lifecycle import OPEN_STATUSES, Status
from portal.cases.models import Case
from portal.cases.service import TZ, today_in_china
from portal.errors import DomainError
from portal.i18n import Msg, _l
from portal.orgs.categories import CATEGORIES
from portal.orgs.models import Committee, Firm
from portal.policy import Identity, Role

BREAKDOWNS = ("month", "category", "firm", "committee", "region", "mediator")
# The longest range one request may ask for, and the earliest day.
MAX_RANGE_DAYS = 366 * 10
EARLIEST = date(2000, 1, 1)


@dataclass(frozen=True)
class StatsQuery:
    """Cases filed from ``start`` to ``end`` (both included, China time), optionally of one
    committee, category or firm."""

    start: date
    end: date
    committee_id: int | None = None
    category: str = ""
    firm_id: int | None = None

    def list_params(self) -> dict[str, str]:
        """The same cases in the staff case list's query string."""
        params = {"from": self.start.isoformat(), "to": self.end.isoformat()}
        if self.committee_id is not None:
            params["committee"] = str(self.committee_id)
        if self.category:
            params["category"] = self.category
        if self.firm_id is not None:
            params["firm"] = str(self.firm_id)
        return params


def _whole(value: str, name: Msg) -> int:
    if not value.isdigit() or len(value) > 12:
        raise DomainError(_l("{field}: not a valid choice.", field=name))
    return int(value)


def parse_query(params: Mapping[str, str], who: Identity, today: date | None = None) -> StatsQuery:
    """The dashboard's filters from a query string, checked. A committee administrator sees
    only their own committee; anything else asked for is refused, not silently widened."""
    today = today or today_in_china()
    try:
        end = date.fromisoformat(params["to"]) if params.get("to") else today
        start = (
            date.fromisoformat(params["from"])
            if params.get("from")
            else (end.replace(day=1) - timedelta(days=335)).replace(day=1)
        )
    except ValueError:
        raise DomainError(_l("Dates must be written as YYYY-MM-DD.")) from None
    if start > end:
        raise DomainError(_l("The start date must not be after the end date."))
    if start < EARLIEST or end > today + timedelta(days=366):
        raise DomainError(_l("Choose dates between 2000 and next year."))
    if (end - start).days > MAX_RANGE_DAYS:
        raise DomainError(_l("Choose a range of at most ten years."))
    committee_id = None
    if params.get("committee"):
        committee_id = _whole(params["committee"], _l("Committee"))
    if who.role == Role.COMMITTEE_ADMIN:
        if committee_id is not None and committee_id != who.committee_id:
            raise DomainError(_l("You can see the figures of your own committee only."))
        committee_id = who.committee_id
    category = params.get("category", "")
    if category and category not in CATEGORIES:
        raise DomainError(_l("{field}: not a valid choice.", field=_l("Category")))
    firm_id = _whole(params["firm"], _l("Firm")) if params.get("firm") else None
    return StatsQuery(start, end, committee_id, category, firm_id)


def _bounds(query: StatsQuery) -> tuple[datetime, datetime]:
    """As the case list: from the start of ``start`` to the end of ``end``, China time."""
    return (
        datetime.combine(query.start, datetime.min.time(), TZ),
        datetime.combine(query.end, datetime.max.time(), TZ),
    )


def _where(statement: Select[Any], query: StatsQuery) -> Select[Any]:
    low, high = _bounds(query)
    statement = statement.where(Case.submitted_at >= low, Case.submitted_at < high)
    if query.committee_id is not None:
        statement = statement.where(Case.committee_id == query.committee_id)
    if query.category:
        statement = statement.where(Case.category == query.category)
    if query.firm_id is not None:
        statement = statement.where(Case.respondent_firm_id == query.firm_id)
    return statement


@dataclass
class Figures:
    """The figures of one group of cases (a month, a firm…) or of all of them."""

    received: int = 0
    accepted: int = 0
    settled: int = 0
    failed: int = 0
    withdrawn: int = 0
    rejected: int = 0  # rejected or found ineligible
    claimed_fen: int = 0
    agreed_fen: int = 0  # refund and compensation in agreements that took effect
    waived_fen: int = 0  # fees and interest waived by them
    paid_fen: int = 0  # payments the claimant confirmed
    firm_asked: int = 0  # accepted cases against a firm on the platform
    firm_answered: int = 0  # … that the firm answered
    # Working days from acceptance to settlement or failure: how many cases took each number.
    days: Counter[int] = field(default_factory=Counter)

    def add(self, other: Figures) -> None:
        for name in (*FIGURES, "paid_fen"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.days.update(other.days)

    @property
    def success_rate(self) -> float | None:
        """Settled / (settled + failed); None when neither happened."""
        ended = self.settled + self.failed
        return self.settled / ended if ended else None

    @property
    def response_rate(self) -> float | None:
        return self.firm_answered / self.firm_asked if self.firm_asked else None

    @property
    def handled(self) -> int:
        return sum(self.days.values())

    @property
    def mean_days(self) -> float | None:
        n = self.handled
        return sum(d * k for d, k in self.days.items()) / n if n else None

    def _nth(self, rank: int) -> int:
        """The ``rank``-th smallest number of days (1-based)."""
        seen = 0
        for days in sorted(self.days):
            seen += self.days[days]
            if seen >= rank:
                return days
        raise IndexError(rank)

    @property
    def median_days(self) -> float | None:
        """The middle value; for an even count, the mean of the two middle values."""
        n = self.handled
        if not n:
            return None
        return (self._nth((n + 1) // 2) + self._nth(n // 2 + 1)) / 2

    @property
    def p90_days(self) -> int | None:
        """The 90th percentile by nearest rank: the smallest value at least 90% are within."""
        n = self.handled
        return self._nth(math.ceil(0.9 * n)) if n else None


@dataclass
class Group:
    key: Any  # "2026-03", a category, an id, a region
    label: str
    figures: Figures
    list_params: dict[str, str]  # the case list's filters for this group (without outcome)


@dataclass
class MediatorRow:
    user_id: int
    name: str
    figures: Figures
    open_cases: int = 0
    overdue: int = 0
    satisfaction: float | None = None  # mean of the survey answers about them, 1-5
    answers: int = 0
    list_params: dict[str, str] = field(default_factory=dict)


@dataclass
class Dashboard:
    query: StatsQuery
    total: Figures
    breakdowns: dict[str, list[Group]]
    mediators: list[MediatorRow]


def _month_key(db: AsyncSession) -> ColumnElement[Any]:
    if db.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("Asia/Shanghai", Case.submitted_at), "YYYY-MM")
    # Stored as UTC text; China has kept UTC+8 without daylight saving since 1991.
    return func.strftime("%Y-%m", Case.submitted_at, "+8 hours")


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


async def _breakdown(db: AsyncSession, query: StatsQuery, key: Any) -> dict[Any, Figures]:
    ended = Case.outcome.in_(("settled", "failed"))
    statement = select(
        key,
        case((ended, Case.handling_days), else_=None),
        func.count(),
        _count_if(Case.accepted_at.is_not(None)),
        _count_if(Case.outcome == "settled"),
        _count_if(Case.outcome == "failed"),
        _count_if(Case.outcome == "withdrawn"),
        _count_if(Case.outcome.in_(("rejected", "ineligible"))),
        func.coalesce(func.sum(Case.amount_fen), 0),
        func.coalesce(func.sum(Case.agreed_fen), 0),
        func.coalesce(func.sum(Case.waived_fen), 0),
        _count_if(and_(Case.accepted_at.is_not(None), Case.respondent_firm_id.is_not(None))),
        _count_if(
            and_(
                Case.accepted_at.is_not(None),
                Case.respondent_firm_id.is_not(None),
                Case.firm_response.is_not(None),
            )
        ),
    ).group_by(key, case((ended, Case.handling_days), else_=None))
    groups: dict[Any, Figures] = {}
    for row in await db.execute(_where(statement, query)):
        figures = groups.setdefault(row[0], Figures())
        count = int(row[2])
        figures.received += count
        figures.accepted += int(row[3])
        figures.settled += int(row[4])
        figures.failed += int(row[5])
        figures.withdrawn += int(row[6])
        figures.rejected += int(row[7])
        figures.claimed_fen += int(row[8])
        figures.agreed_fen += int(row[9])
        figures.waived_fen += int(row[10])
        figures.firm_asked += int(row[11])
        figures.firm_answered += int(row[12])
        if row[1] is not None:
            figures.days[int(row[1])] += count
    return groups


def _month_params(query: StatsQuery, month: str) -> dict[str, str]:
    year, number = (int(part) for part in month.split("-"))
    first = date(year, number, 1)
    last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return {
        **query.list_params(),
        "from": max(first, query.start).isoformat(),
        "to": min(last, query.end).isoformat(),
    }


async def _names(db: AsyncSession, model: Any, ids: Iterable[Any]) -> dict[int, Any]:
    wanted = [i for i in ids if i is not None]
    if not wanted:
        return {}
    return {row.id: row for row in await db.scalars(select(model).where(model.id.in_(wanted)))}


KEYED = ("month", "category", "firm", "committee", "mediator")


def _keys(db: AsyncSession) -> dict[str, Any]:
    return {
        "month": _month_key(db),
        "category": Case.category,
        "firm": Case.respondent_firm_id,
        "committee": Case.committee_id,
        "mediator": Case.mediator_id,
    }


async def _paid(db: AsyncSession, query: StatsQuery) -> list[tuple[dict[str, Any], int]]:
    """The confirmed payments of the cases ``query`` selects, by every breakdown's key at once
    (payments change without their case changing, so they are not in the running totals)."""
    keys = _keys(db)
    statement = (
        select(*keys.values(), func.sum(Instalment.paid_fen))
        .join(Agreement, Agreement.case_id == Case.id)
        .join(Instalment, Instalment.agreement_id == Agreement.id)
        .where(Instalment.state == InstalmentState.CONFIRMED.value)
        .group_by(*keys.values())
    )
    return [
        (dict(zip(keys, row[:-1], strict=True)), int(row[-1] or 0))
        for row in await db.execute(_where(statement, query))
    ]


def _full_months(query: StatsQuery) -> tuple[date, date] | None:
    """The first and last day of the whole calendar months inside the range, if any."""
    first = (
        query.start
        if query.start.day == 1
        else (query.start.replace(day=28) + timedelta(days=4)).replace(day=1)
    )
    last = (query.end + timedelta(days=1)).replace(day=1) - timedelta(days=1)
    return (first, last) if first <= last else None


def _merge(into: dict[Any, Figures], more: dict[Any, Figures]) -> None:
    for key, figures in more.items():
        into.setdefault(key, Figures()).add(figures)


def _from_totals(figures: Figures, total: rollup.Sum) -> None:
    for name, value in total.named().items():
        setattr(figures, name, getattr(figures, name) + value)
    figures.days.update(total.counter())


def _ref(dim: str) -> int | None:
    return int(dim) if dim else None


async def _figures(
    db: AsyncSession, query: StatsQuery, use_rollup: bool
) -> dict[str, dict[Any, Figures]]:
    """The figures by month, category, firm, committee and mediator. Whole months come from
    the running totals (portal.analytics.rollup); the days of a month cut by the range, a
    firm's own figures, and a category's firms and mediators are counted from the cases."""
    keys = _keys(db)
    found: dict[str, dict[Any, Figures]] = {name: {} for name in KEYED}
    span = _full_months(query) if use_rollup and query.firm_id is None else None
    counted: list[str] = list(KEYED)  # counted from the cases over the whole range
    edges: list[StatsQuery] = []  # … over the days outside whole months
    if span is not None:
        first, last = span
        if query.start < first:
            edges.append(replace(query, end=first - timedelta(days=1)))
        if last < query.end:
            edges.append(replace(query, start=last + timedelta(days=1)))
        months = (first.strftime("%Y-%m"), last.strftime("%Y-%m"))
        where = rollup.Slice(BY_CATEGORY, *months, query.committee_id, query.category or None)
        by_cell = await rollup.totals(db, where, ("month", "committee_id", "dim"))
        added: dict[str, dict[Any, rollup.Sum]] = {"month": {}, "category": {}, "committee": {}}
        for (month, committee_id, category), total in by_cell.items():
            for name, key in (
                ("month", month),
                ("category", category),
                ("committee", committee_id),
            ):
                added[name].setdefault(key, rollup.Sum()).add(total)
        for name, sums in added.items():
            for key, total in sums.items():
                _from_totals(found[name].setdefault(key, Figures()), total)
        counted = ["firm", "mediator"] if query.category else []
        for name, kind in (("firm", BY_FIRM), ("mediator", BY_MEDIATOR)):
            if name in counted:
                continue
            where = rollup.Slice(kind, *months, query.committee_id)
            for (dim,), total in (await rollup.totals(db, where, ("dim",))).items():
                _from_totals(found[name].setdefault(_ref(dim), Figures()), total)
    for name in KEYED:
        for part in [query] if name in counted else edges:
            _merge(found[name], await _breakdown(db, part, keys[name]))
    for key_values, amount in await _paid(db, query):
        for name in KEYED:
            found[name].setdefault(key_values[name], Figures()).paid_fen += amount
    return found


async def dashboard(
    db: AsyncSession, query: StatsQuery, unnamed: str = "—", *, rollup: bool = True
) -> Dashboard:
    """Every figure of the dashboard for the cases ``query`` selects. ``rollup=False`` counts
    every case afresh instead of reading the running totals (the two always agree)."""
    figures_by = await _figures(db, query, rollup)
    months, by_category, by_firm, by_committee, by_mediator = (
        figures_by[name] for name in ("month", "category", "firm", "committee", "mediator")
    )
    total = Figures()
    for figures in months.values():
        total.add(figures)

    firms = {firm_id: firm.name for firm_id, firm in (await _names(db, Firm, by_firm)).items()}
    committees = await _names(db, Committee, by_committee)
    base = query.list_params()
    breakdowns: dict[str, list[Group]] = {
        "month": [
            Group(month, month, figures, _month_params(query, month))
            for month, figures in sorted(months.items())
        ],
        "category": [
            Group(category, category, figures, {**base, "category": category})
            for category, figures in sorted(by_category.items(), key=lambda kv: -kv[1].received)
        ],
        "firm": [
            Group(
                firm_id,
                firms.get(firm_id, unnamed) if firm_id is not None else unnamed,
                figures,
                {**base, "firm": str(firm_id)} if firm_id is not None else {},
            )
            for firm_id, figures in sorted(by_firm.items(), key=lambda kv: -kv[1].received)
        ],
        "committee": [
            Group(
                committee_id,
                committees[committee_id].name if committee_id in committees else unnamed,
                figures,
                {**base, "committee": str(committee_id)},
            )
            for committee_id, figures in sorted(by_committee.items(), key=lambda kv: kv[0])
        ],
    }
    regions: dict[str, Figures] = {}
    for committee_id, figures in by_committee.items():
        found = committees.get(committee_id)
        region = (found.region if found is not None else "") or unnamed
        regions.setdefault(region, Figures()).add(figures)
    breakdowns["region"] = [
        Group(region, region, figures, {})
        for region, figures in sorted(regions.items(), key=lambda kv: -kv[1].received)
    ]
    mediators = await _mediators(db, query, by_mediator, unnamed)
    breakdowns["mediator"] = [
        Group(row.user_id, row.name, row.figures, row.list_params) for row in mediators
    ]
    if None in by_mediator:
        breakdowns["mediator"].append(Group(None, unnamed, by_mediator[None], {}))
    return Dashboard(query, total, breakdowns, mediators)


async def _mediators(
    db: AsyncSession, query: StatsQuery, by_mediator: dict[Any, Figures], unnamed: str
) -> list[MediatorRow]:
    """Every mediator of the committee (or all), with their figures for the range, and, today,
    their open and overdue cases and the parties' satisfaction with them."""
    people = select(User.id, User.display_name).where(User.role == Role.MEDIATOR.value)
    if query.committee_id is not None:
        people = people.where(User.committee_id == query.committee_id)
    rows = {
        user_id: MediatorRow(user_id, name or unnamed, by_mediator.get(user_id, Figures()))
        for user_id, name in await db.execute(people.order_by(User.id))
    }
    for user_id in by_mediator:
        if user_id is not None and user_id not in rows:  # moved to another committee since
            rows[user_id] = MediatorRow(user_id, unnamed, by_mediator[user_id])
    if not rows:
        return []
    for row in rows.values():
        row.list_params = {**query.list_params(), "mediator": str(row.user_id)}
    open_values = [s.value for s in OPEN_STATUSES if s not in (Status.SETTLED, Status.FAILED)]
    today = today_in_china()
    live = (
        select(
            Case.mediator_id,
            func.count(),
            _count_if(and_(Case.close_due.is_not(None), Case.close_due < today)),
        )
        .where(Case.mediator_id.in_(list(rows)), Case.status.in_(open_values))
        .group_by(Case.mediator_id)
    )
    for user_id, count, overdue in await db.execute(live):
        rows[user_id].open_cases = int(count)
        rows[user_id].overdue = int(overdue)
    # The survey's question about the mediator ("How well did the mediator do?", 1-5).
    satisfaction = (
        select(Case.mediator_id, func.count(Survey.id), func.avg(Survey.mediator))
        .join(Case, Case.id == Survey.case_id)
        .where(Case.mediator_id.in_(list(rows)))
        .group_by(Case.mediator_id)
    )
    for user_id, count, mean in await db.execute(satisfaction):
        rows[user_id].answers = int(count)
        rows[user_id].satisfaction = round(float(mean), 2) if count else None
    return sorted(rows.values(), key=lambda r: (-r.figures.received, r.user_id))


async def committee_choices(db: AsyncSession, who: Identity) -> list[tuple[int, str]]:
    """The committees the dashboard may be filtered by: all for a platform administrator."""
    if who.role != Role.PLATFORM_ADMIN:
        return []
    statement = select(Committee.id, Committee.name).order_by(Committee.id)
    return [(int(i), str(name)) for i, name in await db.execute(statement)]


async def firm_choices(db: AsyncSession) -> list[tuple[int, str]]:
    statement = select(Firm.id, Firm.name).order_by(Firm.name)
    return [(int(i), str(name)) for i, name in await db.execute(statement)]
