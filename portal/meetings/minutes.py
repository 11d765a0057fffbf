"""Minutes (调解笔录) of a live session: written by its mediator, autosaved and versioned, put to
the parties, confirmed by every side, then appended to the evidence log.

- :func:`save_minutes` stores the mediator's text. Saves of the same draft by the same author
  less than :data:`COALESCE` apart update that draft (autosave must not make a row per pause);
  otherwise, and always once a version was put to the parties, a save makes a new version. A
  save carries the revision its editor started from: one from an older revision (the mediator
  in another tab saved meanwhile) is refused and changes nothing.
- :func:`present_minutes` puts the newest version to the parties (saving the editor's text
  first, so what is presented is what the mediator sees).
- :func:`confirm_minutes` / :func:`decline_minutes`: each required side (the claimant; the firm
  through any of its representatives) answers that exact version, named by its number and the
  SHA-256 of its text. When every side has confirmed, the version is confirmed: its
  ``minutes.confirmed`` leaf (portal.evidence.service.log_minutes) is staged in the same
  transaction, on the case's hash chain, with a timeline event.
- A change after the minutes were put to the parties supersedes the presented version: its
  answers no longer count, and everyone is told.

Every change first locks the session's row (a no-op UPDATE), so changes to one session's
minutes are applied one at a time, on SQLite and PostgreSQL alike. Every change is audited.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from difflib import SequenceMatcher
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.audit.service import record
from portal.cases.models import Case, CaseEvent
from portal.cases.service import TZ
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence.models import LogLeaf
from portal.evidence.service import log_minutes
from portal.i18n import Msg, _l
from portal.meetings.minutes_models import Answer, MinutesResponse, MinutesState, MinutesVersion
from portal.meetings.models import Meeting, MeetingStatus, Participant, SeatState, Side
from portal.meetings.policy import MeetingAccess
from portal.meetings.service import SIDES, side_of
from portal.notify.service import notify

MAX_MINUTES = 100_000
MAX_REASON = 2000
#: Saves of one draft by its author closer together than this update the draft in place.
COALESCE = timedelta(minutes=2)
WRITABLE = frozenset({MeetingStatus.SCHEDULED, MeetingStatus.OPEN, MeetingStatus.ENDED})
PRESENTABLE = frozenset({MeetingStatus.OPEN, MeetingStatus.ENDED})
PARTY_SIDES = (Side.CLAIMANT.value, Side.RESPONDENT.value)

P = ParamSpec("P")
T = TypeVar("T")

STATE_LABELS: dict[str, Msg] = {
    MinutesState.DRAFT: _l("Draft (only the mediator sees it)"),
    MinutesState.PRESENTED: _l("Put to the parties for confirmation"),
    MinutesState.CONFIRMED: _l("Confirmed by the parties"),
    MinutesState.SUPERSEDED: _l("Replaced by a later version"),
}
ANSWER_LABELS: dict[str, Msg] = {
    Answer.CONFIRMED: _l("Confirmed"),
    Answer.DECLINED: _l("Declined"),
}


class StaleMinutes(DomainError):
    """The editor started from an older revision than the newest: nothing was saved."""

    def __init__(self, latest: MinutesVersion | None) -> None:
        if latest is None:
            message = _l(
                "The minutes were changed elsewhere since this page was opened. Nothing was "
                "saved: copy your text, reload the page and make your change again."
            )
        else:
            message = _l(
                "The minutes were changed elsewhere (in another window or on another device) "
                "since this page was opened: they are now at version {version}, saved at "
                "{time}. Nothing was saved: copy your text, reload the page and make your "
                "change again.",
                version=latest.number,
                time=clock(latest.saved_at),
            )
        super().__init__(message, field="text")


def clock(moment: datetime) -> str:
    """A time of day in the committee's time zone (Beijing time): 14:05."""
    return moment.astimezone(TZ).strftime("%H:%M")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clean_text(text: str) -> str:
    """The text as stored and hashed: line breaks as LF (browsers send CRLF), no NUL, no
    surrounding blank space. Refused when empty or longer than :data:`MAX_MINUTES`."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()
    if not text:
        raise DomainError(_l("Write the minutes first: the text is empty."), field="text")
    if len(text) > MAX_MINUTES:
        raise DomainError(
            _l("The minutes can have at most {count} characters.", count=MAX_MINUTES),
            field="text",
        )
    return text


def required_sides(case: Case) -> tuple[str, ...]:
    """The sides whose confirmation the minutes need: the claimant, and the firm if any."""
    if case.respondent_firm_id is None:
        return (Side.CLAIMANT.value,)
    return PARTY_SIDES


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answered:
    response: MinutesResponse
    name: str


@dataclass(frozen=True)
class Minutes:
    """What one reader may see of a session's minutes."""

    meeting: Meeting
    case: Case
    writer: bool
    side: str | None  # the reader's party side ("claimant", "respondent"), if they have one
    versions: list[MinutesVersion]  # those this reader may see, newest first
    answers: dict[int, dict[str, Answered]]  # by version id, then side
    required: tuple[str, ...]
    revision: int  # what an editor starts from (0: nothing saved yet)
    leaf_hash: str | None = None  # of the confirmed version's evidence-log leaf
    authors: dict[int, str] = field(default_factory=dict)

    @property
    def latest(self) -> MinutesVersion | None:
        """The newest version this reader may see (for the mediator, the one in the editor)."""
        return self.versions[0] if self.versions else None

    @property
    def put(self) -> MinutesVersion | None:
        """The newest version put to the parties (presented, confirmed or since replaced)."""
        return next((v for v in self.versions if v.state != MinutesState.DRAFT), None)

    @property
    def confirmed(self) -> MinutesVersion | None:
        return next((v for v in self.versions if v.state == MinutesState.CONFIRMED), None)

    def answers_to(self, version: MinutesVersion | None) -> dict[str, Answered]:
        return self.answers.get(version.id, {}) if version is not None else {}

    @property
    def mine(self) -> Answered | None:
        return self.answers_to(self.put).get(self.side) if self.side else None

    @property
    def can_respond(self) -> bool:
        """The reader's side may confirm (or decline) the version put to the parties now."""
        put = self.put
        if self.side is None or put is None or put.state != MinutesState.PRESENTED:
            return False
        mine = self.mine
        return mine is None or mine.response.answer == Answer.DECLINED

    @property
    def can_edit(self) -> bool:
        return self.writer and self.meeting.status in WRITABLE and self.confirmed is None

    @property
    def can_present(self) -> bool:
        """The mediator may put the editor's text to the parties (a change since the version
        they have makes a new version; the same text again is refused)."""
        return self.can_edit and self.meeting.status in PRESENTABLE

    @property
    def waiting(self) -> bool:
        """Something may still change that this reader waits for (the page refreshes it)."""
        if self.confirmed is not None:
            return False
        if self.writer:
            put = self.put
            return put is not None and put.state == MinutesState.PRESENTED
        return not self.can_respond

    def version(self, number: int) -> MinutesVersion | None:
        return next((v for v in self.versions if v.number == number), None)

    def previous(self, version: MinutesVersion) -> MinutesVersion | None:
        """The version this reader may see that came before ``version``."""
        return next((v for v in self.versions if v.number < version.number), None)


async def _all_versions(db: AsyncSession, meeting_id: int) -> list[MinutesVersion]:
    return list(
        await db.scalars(
            select(MinutesVersion)
            .where(MinutesVersion.meeting_id == meeting_id)
            .order_by(MinutesVersion.number.desc())
            .execution_options(populate_existing=True)
        )
    )


async def _latest(db: AsyncSession, meeting_id: int) -> MinutesVersion | None:
    found: MinutesVersion | None = await db.scalar(
        select(MinutesVersion)
        .where(MinutesVersion.meeting_id == meeting_id)
        .order_by(MinutesVersion.number.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return found


async def _responses(db: AsyncSession, version_id: int) -> dict[str, MinutesResponse]:
    rows = await db.scalars(
        select(MinutesResponse)
        .where(MinutesResponse.version_id == version_id)
        .execution_options(populate_existing=True)
    )
    return {r.side: r for r in rows}


def party_side(case: Case, user: User) -> str | None:
    """The side for which ``user`` answers the minutes of a session of ``case``, if any."""
    side = side_of(case, user)
    if side is None or side.value not in required_sides(case):
        return None
    return side.value


async def read_minutes(
    db: AsyncSession, resource: MeetingAccess, reader: User, *, writer: bool
) -> Minutes:
    """The minutes as ``reader`` may see them (the caller has checked the "view" permission;
    ``writer`` is whether they may write them). Drafts are the mediator's alone."""
    meeting, case = resource.meeting, resource.case
    versions = await _all_versions(db, meeting.id)
    revision = versions[0].revision if versions else 0
    if not writer:
        versions = [v for v in versions if v.state != MinutesState.DRAFT]
    answers: dict[int, dict[str, Answered]] = {}
    ids = [v.id for v in versions]
    if ids:
        rows = await db.execute(
            select(MinutesResponse, User.display_name)
            .join(User, User.id == MinutesResponse.user_id)
            .where(MinutesResponse.version_id.in_(ids))
            .execution_options(populate_existing=True)
        )
        for response, name in rows:
            answers.setdefault(response.version_id, {})[response.side] = Answered(response, name)
    leaf_hash = None
    confirmed = next((v for v in versions if v.state == MinutesState.CONFIRMED), None)
    if confirmed is not None and confirmed.leaf_id is not None:
        found = await db.scalar(select(LogLeaf.hash).where(LogLeaf.id == confirmed.leaf_id))
        leaf_hash = bytes(found).hex() if found is not None else None
    authors: dict[int, str] = {}
    if versions:
        names = select(User.id, User.display_name).where(
            User.id.in_({v.author_id for v in versions})
        )
        authors = {row.id: row.display_name for row in await db.execute(names)}
    return Minutes(
        meeting=meeting,
        case=case,
        writer=writer,
        side=None if writer else party_side(case, reader),
        versions=versions,
        answers=answers,
        required=required_sides(case),
        revision=revision,
        leaf_hash=leaf_hash,
        authors=authors,
    )


# -- changing -------------------------------------------------------------------------------


def _refusal_rolls_back(
    change: Callable[Concatenate[AsyncSession, P], Awaitable[T]],
) -> Callable[Concatenate[AsyncSession, P], Awaitable[T]]:
    """A refused change changes nothing: its transaction (and the session's lock) is rolled
    back before the refusal reaches the caller. (The session's objects are then expired:
    load them again before use.)"""

    @functools.wraps(change)
    async def run(db: AsyncSession, /, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await change(db, *args, **kwargs)
        except (DomainError, NotFound):
            await db.rollback()
            raise

    return run


async def _lock(db: AsyncSession, meeting_id: int) -> Meeting:
    """Lock the session's row until the transaction ends (changing nothing in it)."""
    result = await db.execute(
        update(Meeting)
        .where(Meeting.id == meeting_id)
        .values(updated_at=Meeting.updated_at)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound
    meeting = await db.get(Meeting, meeting_id, populate_existing=True)
    assert meeting is not None
    return meeting


def _require_writer(resource: MeetingAccess, actor: User) -> None:
    meeting, case = resource.meeting, resource.case
    if actor.id != meeting.mediator_id or case.mediator_id != meeting.mediator_id:
        raise NotFound


def _require_writable(meeting: Meeting, latest: MinutesVersion | None) -> None:
    if meeting.status not in WRITABLE:
        raise DomainError(_l("This session was cancelled: it has no minutes."))
    if latest is not None and latest.state == MinutesState.CONFIRMED:
        raise DomainError(
            _l(
                "These minutes were confirmed by the parties and are in the evidence log: "
                "they can no longer be changed."
            )
        )


async def _people(db: AsyncSession, meeting: Meeting, sides: tuple[str, ...] = ()) -> list[int]:
    """Who is on the session (not removed), optionally only of ``sides``."""
    query = select(Participant.user_id).where(
        Participant.meeting_id == meeting.id, Participant.state != SeatState.REMOVED.value
    )
    if sides:
        query = query.where(Participant.side.in_(sides))
    return list(await db.scalars(query.order_by(Participant.id)))


async def _tell(
    db: AsyncSession, user_ids: list[int], skip: int, title: Msg, body: Msg, meeting: Meeting
) -> None:
    for user_id in dict.fromkeys(user_ids):
        if user_id != skip:
            await notify(db, user_id, title, body, link=f"/meetings/{meeting.id}/minutes")


@dataclass(frozen=True)
class Saved:
    version: MinutesVersion
    changed: bool  # False when the text was already the newest version's
    coalesced: bool  # the newest draft was updated rather than a new version made
    superseded: MinutesVersion | None = None  # the version put to the parties it replaced


async def _save(
    db: AsyncSession,
    meeting: Meeting,
    case: Case,
    actor: User,
    text: str,
    base_revision: int,
    latest: MinutesVersion | None,
) -> Saved:
    revision = latest.revision if latest is not None else 0
    if base_revision != revision:
        raise StaleMinutes(latest)
    _require_writable(meeting, latest)
    if latest is not None and latest.text == text:
        return Saved(latest, changed=False, coalesced=False)
    now = utcnow()
    superseded = None
    if (
        latest is not None
        and latest.state == MinutesState.DRAFT
        and latest.author_id == actor.id
        and now - latest.saved_at < COALESCE
    ):
        latest.text, latest.sha256 = text, digest(text)
        latest.saved_at, latest.saves, latest.revision = now, latest.saves + 1, revision + 1
        version, coalesced = latest, True
    else:
        if latest is not None and latest.state == MinutesState.PRESENTED:
            await _supersede(db, meeting, case, actor, latest, now)
            superseded = latest
        version = MinutesVersion(
            meeting_id=meeting.id,
            number=(latest.number + 1) if latest is not None else 1,
            text=text,
            sha256=digest(text),
            author_id=actor.id,
            state=MinutesState.DRAFT.value,
            revision=revision + 1,
            saves=1,
            created_at=now,
            saved_at=now,
        )
        db.add(version)
        coalesced = False
    await db.flush()
    record(
        db,
        actor.id,
        "minutes.save",
        "meeting",
        meeting.id,
        version=version.number,
        sha256=version.sha256,
        coalesced=coalesced,
    )
    return Saved(version, changed=True, coalesced=coalesced, superseded=superseded)


async def _supersede(
    db: AsyncSession,
    meeting: Meeting,
    case: Case,
    actor: User,
    presented: MinutesVersion,
    now: datetime,
) -> None:
    """The presented version is replaced: its answers no longer count; everyone is told."""
    presented.state = MinutesState.SUPERSEDED.value
    presented.superseded_at = now
    voided = sorted(await _responses(db, presented.id))
    record(
        db,
        actor.id,
        "minutes.supersede",
        "meeting",
        meeting.id,
        version=presented.number,
        voided=voided,
    )
    await _tell(
        db,
        await _people(db, meeting),
        actor.id,
        _l("Minutes changed"),
        _l(
            "Case {number}: the mediator changed the minutes of the session after putting "
            "them to the parties (version {version}). Any confirmation given for that version "
            "no longer counts; you will be asked to confirm the new version.",
            number=case.number or "",
            version=presented.number,
        ),
        meeting,
    )


@_refusal_rolls_back
async def save_minutes(
    db: AsyncSession, resource: MeetingAccess, actor: User, text: str, base_revision: int
) -> Saved:
    """The mediator saves the minutes' text (autosave or the save button); commits."""
    _require_writer(resource, actor)
    text = clean_text(text)
    meeting = await _lock(db, resource.meeting.id)
    latest = await _latest(db, meeting.id)
    saved = await _save(db, meeting, resource.case, actor, text, base_revision, latest)
    await db.commit()
    return saved


@_refusal_rolls_back
async def present_minutes(
    db: AsyncSession, resource: MeetingAccess, actor: User, text: str, base_revision: int
) -> MinutesVersion:
    """The mediator puts the minutes, as now in the editor, to the parties for confirmation
    (during or after the session); the parties are told. Commits."""
    _require_writer(resource, actor)
    text = clean_text(text)
    meeting = await _lock(db, resource.meeting.id)
    case = resource.case
    latest = await _latest(db, meeting.id)
    if meeting.status not in PRESENTABLE:
        _require_writable(meeting, latest)
        raise DomainError(_l("The minutes can be put to the parties once the session has started."))
    saved = await _save(db, meeting, case, actor, text, base_revision, latest)
    version = saved.version
    if version.state == MinutesState.PRESENTED:
        raise DomainError(
            _l("This version was already put to the parties: they are asked to confirm it.")
        )
    now = utcnow()
    version.state = MinutesState.PRESENTED.value
    version.presented_at = now
    version.revision += 1
    record(
        db,
        actor.id,
        "minutes.present",
        "meeting",
        meeting.id,
        version=version.number,
        sha256=version.sha256,
    )
    await _tell(
        db,
        await _people(db, meeting, required_sides(case)),
        actor.id,
        _l("Minutes to confirm"),
        _l(
            "Case {number}: the mediator has put the minutes of the session (version "
            "{version}) to you. Please read them, then confirm them or say what is wrong.",
            number=case.number or "",
            version=version.number,
        ),
        meeting,
    )
    await db.commit()
    return version


async def _answering(
    db: AsyncSession, resource: MeetingAccess, actor: User, number: int, sha256: str
) -> tuple[Meeting, str, MinutesVersion, dict[str, MinutesResponse]]:
    """Lock, and check that ``actor`` answers for a side, that the version named is the one
    put to the parties now, with that text, and that their side has not confirmed it yet."""
    side = party_side(resource.case, actor)
    if side is None:
        raise NotFound
    meeting = await _lock(db, resource.meeting.id)
    latest = await _latest(db, meeting.id)
    if latest is not None and latest.state == MinutesState.CONFIRMED and latest.number == number:
        raise DomainError(_l("These minutes are already confirmed by every party."))
    if (
        latest is None
        or latest.number != number
        or latest.state != MinutesState.PRESENTED
        or not hmac.compare_digest(latest.sha256.encode(), sha256.encode("utf-8", "replace"))
    ):
        raise DomainError(
            _l(
                "These are not the minutes put to you for confirmation now: they were changed "
                "or withdrawn meanwhile. Nothing was recorded. Read the current version, then "
                "answer again."
            )
        )
    responses = await _responses(db, latest.id)
    done = responses.get(side)
    if done is not None and done.answer == Answer.CONFIRMED:
        raise DomainError(_l("Your side has already confirmed these minutes."))
    return meeting, side, latest, responses


def _answer(
    db: AsyncSession,
    responses: dict[str, MinutesResponse],
    version: MinutesVersion,
    side: str,
    actor: User,
    answer: Answer,
    reason: str,
) -> MinutesResponse:
    now = utcnow()
    response = responses.get(side)
    if response is None:
        response = MinutesResponse(version_id=version.id, side=side, created_at=now)
        db.add(response)
        responses[side] = response
    response.user_id = actor.id
    response.answer = answer.value
    response.sha256 = version.sha256
    response.reason = reason
    response.updated_at = now
    return response


@dataclass(frozen=True)
class Confirmed:
    version: MinutesVersion
    complete: bool  # every required side has now confirmed: the minutes are in the log
    leaf: LogLeaf | None


@_refusal_rolls_back
async def confirm_minutes(
    db: AsyncSession, resource: MeetingAccess, actor: User, number: int, sha256: str
) -> Confirmed:
    """A party confirms the version put to them (named by number and SHA-256). The last
    required confirmation confirms the minutes and stages their evidence-log leaf. Commits."""
    meeting, side, version, responses = await _answering(db, resource, actor, number, sha256)
    case = resource.case
    _answer(db, responses, version, side, actor, Answer.CONFIRMED, "")
    record(
        db,
        actor.id,
        "minutes.confirm",
        "meeting",
        meeting.id,
        version=version.number,
        sha256=version.sha256,
        side=side,
    )
    await db.flush()
    confirmed = {s: r for s, r in responses.items() if r.answer == Answer.CONFIRMED}
    required = required_sides(case)
    leaf = None
    if all(s in confirmed for s in required):
        leaf = await _finish(db, meeting, case, actor, version, [confirmed[s] for s in required])
    else:
        await _tell(
            db,
            [meeting.mediator_id],
            actor.id,
            _l("Minutes confirmed by a party"),
            _l(
                "Case {number}: {side} confirmed the minutes (version {version}).",
                number=case.number or "",
                side={"msgid": SIDES[side].msgid},
                version=version.number,
            ),
            meeting,
        )
    await db.commit()
    return Confirmed(version, complete=leaf is not None, leaf=leaf)


async def _finish(
    db: AsyncSession,
    meeting: Meeting,
    case: Case,
    actor: User,
    version: MinutesVersion,
    confirmations: list[MinutesResponse],
) -> LogLeaf:
    now = utcnow()
    version.state = MinutesState.CONFIRMED.value
    version.confirmed_at = now
    version.revision += 1
    leaf = await log_minutes(
        db,
        case,
        meeting_id=meeting.id,
        version=version.number,
        text=version.text,
        mediator_id=version.author_id,
        confirmations=[(r.side, r.user_id, r.updated_at) for r in confirmations],
        time=now,
    )
    version.leaf_id = leaf.id
    db.add(
        CaseEvent(
            created_at=now,
            case_id=case.id,
            actor_id=actor.id,
            kind="meeting",
            body="",
            visibility="all",
            data={
                "meeting_id": meeting.id,
                "action": "minutes_confirmed",
                "version": version.number,
                "starts_at": meeting.starts_at.isoformat(),
                "mode": meeting.mode,
                "outcome": meeting.outcome,
            },
        )
    )
    record(
        db,
        actor.id,
        "minutes.confirmed",
        "meeting",
        meeting.id,
        version=version.number,
        sha256=version.sha256,
        leaf=leaf.id,
    )
    await _tell(
        db,
        [*await _people(db, meeting), meeting.mediator_id],
        actor.id,
        _l("Minutes confirmed"),
        _l(
            "Case {number}: every party has confirmed the minutes of the session (version "
            "{version}). They are now in the evidence log.",
            number=case.number or "",
            version=version.number,
        ),
        meeting,
    )
    return leaf


@_refusal_rolls_back
async def decline_minutes(
    db: AsyncSession,
    resource: MeetingAccess,
    actor: User,
    number: int,
    sha256: str,
    reason: str,
) -> MinutesResponse:
    """A party declines the version put to them, saying why; the mediator is told. (They may
    still confirm it later; the mediator may change the text, which makes a new version.)"""
    reason = reason.replace("\r\n", "\n").replace("\x00", "").strip()
    if not reason:
        raise DomainError(_l("Say what is wrong in the minutes."), field="reason")
    if len(reason) > MAX_REASON:
        raise DomainError(
            _l("A reason can have at most {count} characters.", count=MAX_REASON),
            field="reason",
        )
    meeting, side, version, responses = await _answering(db, resource, actor, number, sha256)
    case = resource.case
    response = _answer(db, responses, version, side, actor, Answer.DECLINED, reason)
    record(
        db,
        actor.id,
        "minutes.decline",
        "meeting",
        meeting.id,
        version=version.number,
        sha256=version.sha256,
        side=side,
    )
    await _tell(
        db,
        [meeting.mediator_id],
        actor.id,
        _l("Minutes declined"),
        _l(
            "Case {number}: {side} declined the minutes (version {version}). Reason: {reason}",
            number=case.number or "",
            side={"msgid": SIDES[side].msgid},
            version=version.number,
            reason=reason,
        ),
        meeting,
    )
    await db.commit()
    return response


# -- differences between versions -----------------------------------------------------------


@dataclass(frozen=True)
class DiffLine:
    """One line of a comparison: "same", "added", "removed", "changed" (with the changed
    parts of the line) or "skipped" (that many unchanged lines not shown). Each part is
    ("=", kept text), ("-", removed text) or ("+", added text)."""

    kind: str
    parts: tuple[tuple[str, str], ...] = ()
    skipped: int = 0


# Above this (characters of the old line × of the new), a changed line is shown as removed
# and added rather than compared character by character.
_INLINE_LIMIT = 250_000


def _inline(old: str, new: str) -> DiffLine | None:
    if len(old) * len(new) > _INLINE_LIMIT:
        return None
    matcher = SequenceMatcher(None, old, new, autojunk=False)
    if matcher.ratio() < 0.4:
        return None
    parts: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            parts.append(("=", old[i1:i2]))
            continue
        if i2 > i1:
            parts.append(("-", old[i1:i2]))
        if j2 > j1:
            parts.append(("+", new[j1:j2]))
    return DiffLine("changed", tuple(parts))


def diff_texts(old: str, new: str, context: int = 2) -> list[DiffLine]:
    """The changes from ``old`` to ``new``, line by line (characters within changed lines),
    with ``context`` unchanged lines around each change."""
    a, b = old.split("\n"), new.split("\n")
    lines: list[DiffLine] = []
    opcodes = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    for n, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            same = a[i1:i2]
            head = context if n > 0 else 0
            tail = context if n < len(opcodes) - 1 else 0
            if len(same) > head + tail + 1:
                lines += [DiffLine("same", (("=", s),)) for s in same[:head]]
                lines.append(DiffLine("skipped", skipped=len(same) - head - tail))
                lines += [DiffLine("same", (("=", s),)) for s in same[len(same) - tail :]]
            else:
                lines += [DiffLine("same", (("=", s),)) for s in same]
            continue
        removed, added = a[i1:i2], b[j1:j2]
        if tag == "replace":
            paired = min(len(removed), len(added))
            for old_line, new_line in zip(removed[:paired], added[:paired], strict=True):
                inline = _inline(old_line, new_line)
                if inline is not None:
                    lines.append(inline)
                else:
                    lines.append(DiffLine("removed", (("-", old_line),)))
                    lines.append(DiffLine("added", (("+", new_line),)))
            removed, added = removed[paired:], added[paired:]
        lines += [DiffLine("removed", (("-", s),)) for s in removed]
        lines += [DiffLine("added", (("+", s),)) for s in added]
    return lines
