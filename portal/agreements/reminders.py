"""Reminders for the payments an agreement calls for.

Three days before a payment falls due, the firm's representatives are reminded. The day after
it falls due unpaid, it is overdue: the firm is told again, the claimant is told it is being
followed up, and the mediator is flagged (in the app and by e-mail). Each reminder is claimed
by an UPDATE of its instalment's row before it is sent, so however many processes run the
loop, it goes out once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.agreements.models import Agreement, Instalment, InstalmentState
from portal.agreements.terms import yuan
from portal.audit.service import record
from portal.background import BackgroundLoop
from portal.cases import service as cases
from portal.cases.models import Case
from portal.cases.service import TZ
from portal.db import session_scope, utcnow
from portal.i18n import _l
from portal.notify.service import notify

logger = logging.getLogger("jiefen.agreements.reminders")
LEAD = timedelta(days=3)


@dataclass
class FulfilmentReport:
    due: int = 0  # "falls due soon" reminders sent
    overdue: int = 0  # overdue flags raised
    more: bool = False


async def _claim(db: AsyncSession, instalment_id: int, column: Any, now: datetime) -> bool:
    result = await db.execute(
        update(Instalment)
        .where(
            Instalment.id == instalment_id,
            column.is_(None),
            Instalment.state == InstalmentState.DUE.value,
        )
        .values({column: now})
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount == 1


async def _tell_due(db: AsyncSession, case: Case, row: Instalment) -> None:
    number = case.number or str(case.id)
    for rep in await cases._firm_reps(db, case.respondent_firm_id):
        await notify(
            db,
            rep,
            _l("Case {number}: a payment falls due soon", number=number),
            _l(
                "Payment {instalment} of {amount} yuan under the agreement of case {number} "
                "falls due on {day}. Record it on the agreement page once it is made.",
                instalment=row.number,
                amount=yuan(row.amount_fen),
                number=number,
                day=row.due_on.isoformat(),
            ),
            link=f"/cases/{case.id}/agreement",
        )


async def _tell_overdue(db: AsyncSession, case: Case, row: Instalment) -> None:
    number = case.number or str(case.id)
    link = f"/cases/{case.id}/agreement"
    params = {
        "instalment": row.number,
        "amount": yuan(row.amount_fen),
        "number": number,
        "day": row.due_on.isoformat(),
    }
    for rep in await cases._firm_reps(db, case.respondent_firm_id):
        await notify(
            db,
            rep,
            _l("Case {number}: a payment is overdue", number=number),
            _l(
                "Payment {instalment} of {amount} yuan under the agreement of case {number} "
                "was due on {day} and has not been recorded. Pay it now, or contact the "
                "mediator.",
                **params,
            ),
            link=link,
        )
    if case.mediator_id is not None:
        await notify(
            db,
            case.mediator_id,
            _l("Case {number}: a missed payment", number=number),
            _l(
                "The firm has missed payment {instalment} ({amount} yuan, due {day}) under the "
                "agreement of case {number}. Follow it up with the firm.",
                **params,
            ),
            link=link,
        )
    await notify(
        db,
        case.filer_id,
        _l("Case {number}: a payment is late", number=number),
        _l(
            "Payment {instalment} of {amount} yuan was due on {day} and the firm has not "
            "recorded it. The mediator has been told and will follow it up.",
            **params,
        ),
        link=link,
        channels=("in_app",),
    )


async def send_fulfilment_reminders(
    db: AsyncSession, now: datetime, *, limit: int = 100
) -> FulfilmentReport:
    """Send the reminders due at ``now`` (up to ``limit``) in one transaction, and commit."""
    report = FulfilmentReport()
    today: date = now.astimezone(TZ).date()
    kinds = (
        ("due", Instalment.reminded_due_at, Instalment.due_on <= today + LEAD, _tell_due),
        ("overdue", Instalment.reminded_overdue_at, Instalment.due_on < today, _tell_overdue),
    )
    for kind, column, window, tell in kinds:
        rows = await db.execute(
            select(Instalment, Case)
            .join(Agreement, Agreement.id == Instalment.agreement_id)
            .join(Case, Case.id == Agreement.case_id)
            .where(Instalment.state == InstalmentState.DUE.value, column.is_(None), window)
            .order_by(Instalment.due_on, Instalment.id)
            .limit(limit + 1)
        )
        for row, case in rows.all():
            if report.due + report.overdue >= limit:
                report.more = True
                break
            if not await _claim(db, row.id, column, now):
                continue
            await tell(db, case, row)
            record(
                db,
                None,
                f"agreement.{kind}_reminder",
                "agreement",
                row.agreement_id,
                instalment=row.number,
            )
            if kind == "due":
                report.due += 1
            else:
                report.overdue += 1
    await db.commit()
    return report


class FulfilmentLoop(BackgroundLoop):
    """Runs ``send_fulfilment_reminders`` every ``interval`` seconds (hourly: dates, not
    minutes, matter here)."""

    name = "jiefen-fulfilment"
    log = logger

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        interval: float = 3600.0,
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.on_sent = on_sent

    async def run_once(self) -> bool:
        async with session_scope(self.sessionmaker) as db:
            report = await send_fulfilment_reminders(db, utcnow())
        if report.due or report.overdue:
            logger.info("Fulfilment: %s due, %s overdue reminders", report.due, report.overdue)
            if self.on_sent is not None:
                self.on_sent()
        return report.more
