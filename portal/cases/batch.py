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
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.models import User
from portal.cases import service
from portal.cases.models import Case
from portal.crypto import DataVault
from portal.db import session_scope
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.meetings import service as meetings
from portal.orgs.categories import CATEGORIES
from portal.policy import Role

MAX_BATCH = 500
ACTIONS: dict[str, Msg] = {
    "accept": _l("Accept"),
    "assign": _l("Assign to a mediator"),
    "notify": _l("Send a message (text and email) from a template"),
    "status": _l("Change the status"),
    "schedule": _l("Schedule mediation sessions one after another"),
}
# The permission each action needs on each case (portal.cases.policy); the case's lifecycle
# (who may make which transition) and the scheduling rules are checked by the service.
PERMISSIONS = {
    "accept": "review",
    "assign": "assign",
    "notify": "message",
    "status": "view",
    "schedule": "message",
}
# What each role may do to many cases: the committee runs the queues; a mediator works
# through their own cases (only a case's mediator schedules its sessions).
ROLE_ACTIONS: dict[str, tuple[str, ...]] = {
    Role.COMMITTEE_ADMIN.value: ("accept", "assign", "notify", "status"),
    Role.PLATFORM_ADMIN.value: ("accept", "assign", "notify", "status"),
    Role.MEDIATOR.value: ("notify", "status", "schedule"),
}
# The status changes that need nothing but the decision (the others carry a reason or a
# document and are made one case at a time).
STATUS_CHANGES: dict[str, Msg] = {
    "start_mediation": _l("Start mediation"),
    "transfer": _l("Transfer to litigation"),
    "fulfil": _l("Record that the agreement was carried out"),
    "close": _l("Close the case"),
}
GAPS = (0, 5, 10, 15, 30)
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
    transition: str = ""
    # Sessions: the first starts at ``starts_at`` (aware), each next one after the last
    # session's ``duration`` and ``gap`` minutes.
    starts_at: datetime | None = None
    duration: int = 30
    gap: int = 0
    mode: str = "video"

    def slot(self, index: int) -> datetime:
        assert self.starts_at is not None
        return self.starts_at + timedelta(minutes=index * (self.duration + self.gap))


def actions_for(role: str) -> dict[str, Msg]:
    return {name: ACTIONS[name] for name in ROLE_ACTIONS.get(role, ())}


def check(action: BatchAction, count: int, role: str = Role.COMMITTEE_ADMIN.value) -> None:
    """Refuse a batch that cannot be right whatever the cases (before touching any)."""
    if action.action not in ROLE_ACTIONS.get(role, ()):
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
    if action.action == "status" and action.transition not in STATUS_CHANGES:
        raise DomainError(_l("Choose one of the options."), field="transition")
    if action.action == "schedule":
        if action.starts_at is None:
            raise DomainError(_l("Give the date and time of the session."), field="starts_at")
        if action.duration not in meetings.DURATIONS or action.gap not in GAPS:
            raise DomainError(_l("Choose one of the options."), field="duration")
        if action.mode not in meetings.MODES:
            raise DomainError(_l("Choose one of the options."), field="mode")
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
    role: str = Role.COMMITTEE_ADMIN.value,
) -> BatchResult:
    check(action, len(case_ids), role)
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
                await _apply(db, vault, case, actor, action, len(result.done))
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
    db: AsyncSession, vault: DataVault, case: Case, actor: User, action: BatchAction, done: int
) -> None:
    """One case; ``done`` cases of the batch were done before it (a session takes the next
    free slot, so the day's sessions follow one another without holes)."""
    if action.action == "accept":
        await service.accept_case(db, case, actor)
    elif action.action == "assign":
        assert action.mediator_id is not None
        await service.assign_mediator(db, case, actor, action.mediator_id)
    elif action.action == "status":
        await service.apply_transition(db, case, actor, action.transition)
    elif action.action == "schedule":
        await meetings.schedule_meeting(
            db,
            case,
            actor,
            starts_at=action.slot(done),
            duration_minutes=action.duration,
            mode=action.mode,
        )
    else:
        text = render(action.template, case, vault)
        await service.post_message(db, case, actor, text, action.audience)
