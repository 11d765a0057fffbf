"""Early warnings: firms and categories whose new complaints rise above their own baseline, and
the risk notices (风险提示) administrators send a firm from a warning.

The test, stated on the page: for each firm (and each category), the complaints filed in the
last 7 and in the last 30 days (today included, China time) are compared with the same firm's
rate over the 180 days before that window. If the firm's complaints were a Poisson process at
its baseline rate, the chance of seeing at least the observed number is p = P(X ≥ observed);
a warning is raised when p < 0.001 and at least 5 complaints were filed. A firm with no
complaints in the baseline is taken to have had one (so a first complaint is not a crisis).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.analytics.models import RiskNotice
from portal.audit.service import record
from portal.cases.models import Case
from portal.cases.service import TZ, today_in_china
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.i18n import _l
from portal.notify.service import notify
from portal.orgs.models import Firm
from portal.policy import Identity, Role

WINDOWS = (7, 30)
BASELINE_DAYS = 180
ALPHA = 0.001
MIN_CASES = 5
MAX_MESSAGE = 4000
MAX_REPLY = 2000
SHOWN_CASES = 50


def poisson_tail(observed: int, expected: float) -> float:
    """P(X ≥ observed) for X ~ Poisson(expected)."""
    from scipy.stats import poisson  # imported when needed: scipy.stats takes ~0.3 s to load

    return float(poisson.sf(observed - 1, expected))


@dataclass(frozen=True)
class Alert:
    kind: str  # "firm" or "category"
    key: Any  # the firm's id or the category
    label: str
    window_days: int
    observed: int
    baseline: int  # complaints in the BASELINE_DAYS before the window
    expected: float
    p_value: float
    since: date  # the window's first day

    @property
    def ratio(self) -> float:
        return self.observed / self.expected if self.expected else float("inf")

    def list_params(self) -> dict[str, str]:
        """The cases behind the warning, in the staff case list."""
        params = {"from": self.since.isoformat()}
        params["firm" if self.kind == "firm" else "category"] = str(self.key)
        return params


def _start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), TZ)


async def alerts(
    db: AsyncSession, committee_id: int | None = None, today: date | None = None
) -> list[Alert]:
    """Every warning for today, strongest first."""
    today = today or today_in_china()
    found: list[Alert] = []
    firm_names: dict[int, str] = {}
    for window in WINDOWS:
        since = today - timedelta(days=window - 1)
        baseline_from = since - timedelta(days=BASELINE_DAYS)
        in_window = Case.submitted_at >= _start(since)
        for kind, column in (("firm", Case.respondent_firm_id), ("category", Case.category)):
            statement = (
                select(
                    column,
                    func.coalesce(func.sum(case((in_window, 1), else_=0)), 0),
                    func.coalesce(func.sum(case((in_window, 0), else_=1)), 0),
                )
                .where(
                    Case.submitted_at >= _start(baseline_from),
                    Case.submitted_at < _start(today + timedelta(days=1)),
                    column.is_not(None),
                )
                .group_by(column)
            )
            if committee_id is not None:
                statement = statement.where(Case.committee_id == committee_id)
            for key, observed, baseline in await db.execute(statement):
                observed, baseline = int(observed), int(baseline)
                if observed < MIN_CASES:
                    continue
                expected = max(baseline, 1) * window / BASELINE_DAYS
                p = poisson_tail(observed, expected)
                if p >= ALPHA:
                    continue
                found.append(
                    Alert(kind, key, str(key), window, observed, baseline, expected, p, since)
                )
    firm_ids = {w.key for w in found if w.kind == "firm"}
    if firm_ids:
        statement = select(Firm.id, Firm.name).where(Firm.id.in_(firm_ids))
        firm_names = {int(i): str(name) for i, name in await db.execute(statement)}
    named = [
        Alert(**{**w.__dict__, "label": firm_names.get(w.key, str(w.key))})
        if w.kind == "firm"
        else w
        for w in found
    ]
    return sorted(named, key=lambda w: (w.p_value, -w.observed))


async def alert_for_firm(
    db: AsyncSession, firm_id: int, window: int, committee_id: int | None
) -> Alert | None:
    for found in await alerts(db, committee_id):
        if found.kind == "firm" and found.key == firm_id and found.window_days == window:
            return found
    return None


async def cases_behind(
    db: AsyncSession, warning: Alert, committee_id: int | None, limit: int = SHOWN_CASES
) -> list[Any]:
    column = Case.respondent_firm_id if warning.kind == "firm" else Case.category
    statement = (
        select(Case.id, Case.number, Case.category, Case.status, Case.submitted_at)
        .where(column == warning.key, Case.submitted_at >= _start(warning.since))
        .order_by(Case.submitted_at.desc())
        .limit(limit)
    )
    if committee_id is not None:
        statement = statement.where(Case.committee_id == committee_id)
    return list(await db.execute(statement))


# -- risk notices ---------------------------------------------------------------------------


async def send_notice(
    db: AsyncSession, actor: User, who: Identity, firm_id: int, window: int, message: str
) -> RiskNotice:
    """A risk notice to the firm about its current warning: kept with the warning's figures,
    told to the firm's representatives, audited. Refused when there is no such warning."""
    message = message.strip()
    if not message:
        raise DomainError(_l("Write the notice to the firm."), field="message")
    if len(message) > MAX_MESSAGE:
        raise DomainError(
            _l("At most {n} characters.", n=MAX_MESSAGE),
            field="message",
        )
    committee_id = who.committee_id if who.role == Role.COMMITTEE_ADMIN else None
    warning = await alert_for_firm(db, firm_id, window, committee_id)
    if warning is None:
        raise DomainError(_l("There is no current warning for this firm and period."))
    behind = await cases_behind(db, warning, committee_id, limit=500)
    notice = RiskNotice(
        firm_id=firm_id,
        committee_id=committee_id,
        sent_by_id=actor.id,
        category="",
        window_days=window,
        figures={
            "observed": warning.observed,
            "baseline": warning.baseline,
            "baseline_days": BASELINE_DAYS,
            "expected": round(warning.expected, 3),
            "p_value": warning.p_value,
            "since": warning.since.isoformat(),
            "case_ids": [row.id for row in behind],
        },
        message=message,
        created_at=utcnow(),
    )
    db.add(notice)
    await db.flush()
    record(db, actor.id, "risk_notice.send", "firm", firm_id, notice=notice.id, window=window)
    reps = await db.scalars(
        select(User.id).where(User.firm_id == firm_id, User.role == Role.FIRM_REP.value)
    )
    for rep in reps:
        await notify(
            db,
            rep,
            _l("Risk notice from the mediation committee"),
            _l(
                "Complaints against your firm have risen: {observed} in the last {days} days. "
                "Please read the notice and acknowledge it.",
                observed=warning.observed,
                days=window,
            ),
            link=f"/notices/{notice.id}",
        )
    await db.commit()
    return notice


async def notices_for(db: AsyncSession, who: Identity) -> list[RiskNotice]:
    statement = select(RiskNotice).order_by(RiskNotice.created_at.desc(), RiskNotice.id.desc())
    if who.role == Role.FIRM_REP:
        statement = statement.where(RiskNotice.firm_id == who.firm_id)
    elif who.role == Role.COMMITTEE_ADMIN:
        statement = statement.where(RiskNotice.committee_id == who.committee_id)
    return list(await db.scalars(statement.limit(200)))


async def get_notice(db: AsyncSession, notice_id: int) -> RiskNotice:
    found = await db.get(RiskNotice, notice_id)
    if found is None:
        raise NotFound
    return found


async def acknowledge(db: AsyncSession, notice: RiskNotice, actor: User, reply: str) -> RiskNotice:
    """The firm has read the notice (once); its reply, if any, is kept; the sender is told."""
    reply = reply.strip()
    if len(reply) > MAX_REPLY:
        raise DomainError(_l("At most {n} characters.", n=MAX_REPLY), field="reply")
    if notice.acknowledged_at is not None:
        raise DomainError(_l("This notice was already acknowledged."))
    notice.acknowledged_at = utcnow()
    notice.acknowledged_by_id = actor.id
    notice.reply = reply
    record(db, actor.id, "risk_notice.acknowledge", "risk_notice", notice.id)
    await notify(
        db,
        notice.sent_by_id,
        _l("A firm acknowledged a risk notice"),
        _l("The firm acknowledged risk notice no. {id}.", id=notice.id),
        link=f"/notices/{notice.id}",
    )
    await db.commit()
    return notice


async def firm_name(db: AsyncSession, firm_id: int) -> str:
    return await db.scalar(select(Firm.name).where(Firm.id == firm_id)) or ""
