"""Batch actions on the staff lists (the intake and fast-track queues): one action on many
cases, chosen one by one or as every case a filter matches.

Each case is done in a transaction of its own, by the same service function as the one-case
action, so each case's timeline, audit trail and evidence log record it as if done alone; a
case that cannot take the action (its state, a mediator's declared tie, the permission) is
left as it was and named in the summary with the reason.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.models import User
from portal.cases import service
from portal.cases.models import Case
from portal.crypto import DataVault
from portal.db import session_scope
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.orgs.categories import CATEGORIES

MAX_BATCH = 500
ACTIONS: dict[str, Msg] = {
    "accept": _l("Accept"),
    "assign": _l("Assign to a mediator"),
    "notify": _l("Send a message (text and email) from a template"),
}
# The permission each action needs on each case (portal.cases.policy).
PERMISSIONS = {"accept": "review", "assign": "assign", "notify": "message"}
AUDIENCES = ("claimant", "firm", "all")
# What a message template may fill in for each case: {number}, {claimant}…
FIELDS: dict[str, Msg] = {
    "number": _l("the case number"),
    "claimant": _l("the claimant's name"),
    "firm": _l("the firm's name"),
    "category": _l("the kind of dispute"),
    "deadline": _l("the date by which the case must be closed"),
}


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, Msg]] = field(default_factory=list)


@dataclass(frozen=True)
class BatchAction:
    action: str
    mediator_id: int | None = None
    template: str = ""
    audience: str = "claimant"


def check(action: BatchAction, count: int) -> None:
    """Refuse a batch that cannot be right whatever the cases (before touching any)."""
    if action.action not in ACTIONS:
        raise DomainError(_l("Choose one of the options."), field="action")
    if count == 0:
        raise DomainError(_l("Choose at least one case."), field="case_ids")
    if count > MAX_BATCH:
        raise DomainError(
            _l("At most {count} cases at a time: narrow the filter.", count=MAX_BATCH),
            field="case_ids",
        )
    if action.action == "assign" and not action.mediator_id:
        raise DomainError(_l("Choose a mediator of this committee."), field="mediator_id")
    if action.action == "notify":
        if action.audience not in AUDIENCES:
            raise DomainError(_l("Choose one of the options."), field="audience")
        text = action.template.strip()
        if not text:
            raise DomainError(_l("Write a message."), field="template")
        if len(text) > 2000:
            raise DomainError(_l("Use at most {count} characters.", count=2000), field="template")
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError:
            names = {"{"}
        unknown = names - set(FIELDS)
        if unknown:
            raise DomainError(
                _l(
                    "Unknown field {field}: use {fields}.",
                    field="{" + sorted(unknown)[0] + "}",
                    fields=", ".join("{" + f + "}" for f in FIELDS),
                ),
                field="template",
            )


def render(template: str, case: Case, vault: DataVault) -> str:
    claimant = service.claimant_of(vault, case)
    category = CATEGORIES.get(case.category)
    values = {
        "number": case.number or "",
        "claimant": claimant.name,
        "firm": case.respondent_name,
        "category": category.msgid if category else case.category,
        "deadline": case.close_due.isoformat() if case.close_due else "",
    }
    return template.strip().format_map(values)


async def run(
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: DataVault,
    actor_id: int,
    case_ids: Sequence[int],
    action: BatchAction,
    permits: Callable[[str, Case], bool],
) -> BatchResult:
    check(action, len(case_ids))
    result = BatchResult()
    for case_id in case_ids:
        async with session_scope(sessionmaker) as db:
            actor = await db.get(User, actor_id)
            case = await db.get(Case, case_id)
            if actor is None:
                raise NotFound
            label = (case.number or f"#{case.id}") if case is not None else f"#{case_id}"
            if case is None or not permits(PERMISSIONS[action.action], case):
                result.failed.append((label, _l("There is no such case.")))
                continue
            try:
                await _apply(db, vault, case, actor, action)
            except (DomainError, NotFound) as exc:
                await db.rollback()
                reason = (
                    exc.message
                    if isinstance(exc, DomainError)
                    else _l("This action is not possible in the case's current state.")
                )
                result.failed.append((label, reason))
            else:
                result.done.append(label)
    return result


async def _apply(
    db: AsyncSession, vault: DataVault, case: Case, actor: User, action: BatchAction
) -> None:
    if action.action == "accept":
        await service.accept_case(db, case, actor)
    elif action.action == "assign":
        assert action.mediator_id is not None
        await service.assign_mediator(db, case, actor, action.mediator_id)
    else:
        text = render(action.template, case, vault)
        await service.post_message(db, case, actor, text, action.audience)
