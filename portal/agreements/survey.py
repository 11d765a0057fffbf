"""The satisfaction survey: once a case is closed, each party side rates fairness, speed, the
mediator and the platform from 1 to 5, with an optional comment; the statistics read the
averages (:func:`summary`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.agreements.models import Survey
from portal.agreements.service import side_of
from portal.audit.service import record
from portal.cases.models import Case
from portal.errors import DomainError
from portal.i18n import Msg, _l

QUESTIONS: dict[str, Msg] = {
    "fairness": _l("How fair was the mediation?"),
    "speed": _l("How quickly was your case handled?"),
    "mediator": _l("How well did the mediator do?"),
    "platform": _l("How easy was this website to use?"),
}
SCALE: dict[int, Msg] = {
    1: _l("Very poor"),
    2: _l("Poor"),
    3: _l("Fair"),
    4: _l("Good"),
    5: _l("Very good"),
}
MAX_COMMENT = 2000


async def answered(db: AsyncSession, case: Case, user: User) -> Survey | None:
    """This user's side's answer, if given."""
    side = side_of(case, user)
    if side is None:
        return None
    found: Survey | None = await db.scalar(
        select(Survey).where(Survey.case_id == case.id, Survey.side == side)
    )
    return found


async def rate(
    db: AsyncSession, case: Case, user: User, answers: Mapping[str, str], comment: str
) -> Survey:
    """Record the side's ratings once; every question must be answered 1–5."""
    side = side_of(case, user)
    if side is None or case.status != "closed":
        raise DomainError(_l("This case cannot be rated."))
    scores: dict[str, int] = {}
    for key in QUESTIONS:
        raw = answers.get(key, "").strip()
        if raw not in {"1", "2", "3", "4", "5"}:
            raise DomainError(_l("Choose a rating from 1 to 5."), field=key)
        scores[key] = int(raw)
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise DomainError(_l("Use at most {count} characters.", count=MAX_COMMENT), field="comment")
    survey = Survey(case_id=case.id, side=side, user_id=user.id, comment=comment, **scores)
    db.add(survey)
    try:
        await db.flush()
    except IntegrityError:
        await db.rollback()
        raise DomainError(_l("Your side has already rated this case. Thank you.")) from None
    record(db, user.id, "case.survey", "case", case.id, side=side, **scores)
    await db.commit()
    return survey


@dataclass(frozen=True)
class Summary:
    count: int
    averages: dict[str, float]  # per question, over every answer


async def summary(db: AsyncSession, committee_id: int | None = None) -> Summary:
    """Averages per question (and how many answers), for one committee or all."""
    columns = [func.avg(getattr(Survey, key)) for key in QUESTIONS]
    query = select(func.count(Survey.id), *columns).join(Case, Case.id == Survey.case_id)
    if committee_id is not None:
        query = query.where(Case.committee_id == committee_id)
    row = (await db.execute(query)).one()
    count = int(row[0] or 0)
    averages = {
        key: round(float(value), 2) if value is not None else 0.0
        for key, value in zip(QUESTIONS, row[1:], strict=True)
    }
    return Summary(count, averages)
