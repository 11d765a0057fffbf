"""Recording a session's room, with everyone's consent (see ``recording_models``).

Every function here is one change in its own transaction, under the session's row lock (as
the other changes of a session), so consents, starts and stops are applied one at a time. The
recorder itself (``realtime.recorder``) acts on what is committed here: a recording whose
status is ``recording`` is made by the process named in it, one in ``sealing`` is finished
and sealed by it. Nobody's voice is recorded before they agree: the recorder only accepts
connections from the people in the room whose latest answer is yes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.audit.service import record
from portal.cases import service as cases
from portal.cases.models import Case, CaseMaterial
from portal.db import utcnow
from portal.errors import DomainError
from portal.evidence import service as evidence
from portal.evidence.log import stage_leaf
from portal.evidence.verify.leaf import RECORDING, JsonValue, format_time, recording_body
from portal.i18n import Msg, _l
from portal.meetings import service
from portal.meetings.models import (
    Meeting,
    MeetingConnection,
    MeetingStatus,
    Mode,
    Participant,
    RealtimeProcess,
    Room,
    SeatState,
    Side,
)
from portal.meetings.recording_models import (
    ACTIVE,
    Recording,
    RecordingConsent,
    RecordingFile,
    RecordingStatus,
    StopReason,
)
from portal.meetings.service import Refused, SeatRow
from realtime.events import RecordingView

STATUS_LABELS: dict[str, Msg] = {
    RecordingStatus.ASKING: _l("Asking for consent"),
    RecordingStatus.RECORDING: _l("Being recorded"),
    RecordingStatus.SEALING: _l("Being sealed"),
    RecordingStatus.SEALED: _l("Sealed in the evidence log"),
    RecordingStatus.LOST: _l("Lost"),
    RecordingStatus.DECLINED: _l("Not recorded: consent refused"),
    RecordingStatus.CANCELLED: _l("Cancelled"),
}
REASONS: dict[str, Msg] = {
    StopReason.STOPPED: _l("stopped by the mediator"),
    StopReason.ENDED: _l("stopped at the end of the session"),
    StopReason.WITHDRAWN: _l("stopped: a participant withdrew consent"),
    StopReason.REFUSED: _l("stopped: someone who joined later refused"),
    StopReason.FAILED: _l("stopped: the recorder's connection failed"),
    StopReason.INTERRUPTED: _l("stopped: the server stopped while recording"),
}
FILE_KINDS: dict[str, Msg] = {
    "mix": _l("Room audio (mixed)"),
    "audio": _l("Audio track"),
    "video": _l("Video track"),
}
# Reasons that make what was recorded partial.
PARTIAL = frozenset(
    {StopReason.WITHDRAWN, StopReason.REFUSED, StopReason.FAILED, StopReason.INTERRUPTED}
)
SHOWN = (RecordingStatus.ASKING.value, RecordingStatus.RECORDING.value)


# -- who has agreed -------------------------------------------------------------------------


async def _answers(db: AsyncSession, recording_ids: Sequence[int]) -> dict[tuple[int, int], bool]:
    """Each person's latest answer to each recording: (recording id, user id) -> agreed."""
    if not recording_ids:
        return {}
    rows = await db.execute(
        select(RecordingConsent.recording_id, RecordingConsent.user_id, RecordingConsent.agreed)
        .where(RecordingConsent.recording_id.in_(recording_ids))
        .order_by(RecordingConsent.id)
    )
    return {(rid, uid): agreed for rid, uid, agreed in rows}


def _present(participants: Sequence[Participant], online: set[int], room: str) -> list[Participant]:
    return [
        p
        for p in participants
        if p.state == SeatState.ADMITTED and p.room == room and p.id in online
    ]


def _paused(present: Sequence[Participant]) -> bool:
    """A room is recorded only while its mediator is in it: left alone, one side's people talk
    among themselves (in the joint room, into a file the other side may hear)."""
    return not any(p.side == Side.MEDIATOR for p in present)


async def _online(db: AsyncSession, meeting_id: int) -> set[int]:
    return set(
        await db.scalars(
            select(MeetingConnection.participant_id)
            .where(MeetingConnection.meeting_id == meeting_id)
            .distinct()
        )
    )


async def _participants(db: AsyncSession, meeting_id: int) -> list[Participant]:
    return list(
        await db.scalars(
            select(Participant)
            .where(Participant.meeting_id == meeting_id)
            .execution_options(populate_existing=True)
        )
    )


async def views(
    db: AsyncSession, meeting: Meeting, rows: Sequence[SeatRow], online: set[int]
) -> dict[int, tuple[RecordingView, ...]]:
    """What each participant (by participant id) is shown of the session's recordings."""
    recordings = list(
        await db.scalars(
            select(Recording)
            .where(Recording.meeting_id == meeting.id, Recording.status.in_(SHOWN))
            .order_by(Recording.id)
        )
    )
    if not recordings:
        return {}
    answers = await _answers(db, [r.id for r in recordings])
    participants = [row.participant for row in rows]
    names = {row.participant.user_id: row.name for row in rows}
    present = {r.id: _present(participants, online, r.room) for r in recordings}
    found: dict[int, tuple[RecordingView, ...]] = {}
    for p in participants:
        shown: list[RecordingView] = []
        for r in recordings:
            here = p in present[r.id]
            if not here and p.side != Side.MEDIATOR:
                continue
            answer = answers.get((r.id, p.user_id))
            you = ("yes" if answer else "no" if answer is not None else "asked") if here else ""
            shown.append(
                RecordingView(
                    id=r.id,
                    room=r.room,
                    status=r.status,
                    video=r.video,
                    you=you,
                    agreed=sum(1 for q in present[r.id] if answers.get((r.id, q.user_id))),
                    waiting=tuple(
                        names[q.user_id]
                        for q in present[r.id]
                        if not answers.get((r.id, q.user_id))
                    ),
                    started_at=r.started_at.isoformat() if r.started_at else None,
                    paused=_paused(present[r.id]),
                )
            )
        found[p.id] = tuple(shown)
    return found


async def recorded_peers(db: AsyncSession, recording: Recording) -> set[int]:
    """The user ids whose voice (and picture) the recorder may take now: in the room,
    connected, with voice and video, and whose latest answer is yes; nobody while the
    mediator is not in the room (paused)."""
    participants = await _participants(db, recording.meeting_id)
    online = await _online(db, recording.meeting_id)
    answers = await _answers(db, [recording.id])
    members = service.media_members(participants, online)
    present = _present(participants, online, recording.room)
    if _paused(present):
        return set()
    return {
        p.user_id for p in present if p.id in members and answers.get((recording.id, p.user_id))
    }


# -- asking, answering, stopping ------------------------------------------------------------


def _open_recording(recordings: Sequence[Recording], room: str) -> Recording | None:
    """The room's recording being asked for or made (one being sealed does not count)."""
    return next((r for r in recordings if r.room == room and r.status in SHOWN), None)


async def _recordings(db: AsyncSession, meeting_id: int) -> list[Recording]:
    return list(
        await db.scalars(
            select(Recording)
            .where(Recording.meeting_id == meeting_id, Recording.status.in_(tuple(ACTIVE)))
            .order_by(Recording.id)
            .execution_options(populate_existing=True)
        )
    )


async def running_on(db: AsyncSession, process: str) -> int:
    """How many recordings the server process ``process`` is asking for, making or sealing."""
    return (
        await db.scalar(
            select(func.count())
            .select_from(Recording)
            .where(Recording.process == process, Recording.status.in_(tuple(ACTIVE)))
        )
        or 0
    )


async def _lock_process(db: AsyncSession, process: str) -> None:
    """Count one process's recordings one request at a time (two sessions asking at once
    would both count below the limit). SQLite's writes are one at a time already."""
    connection = await db.connection()
    if connection.dialect.name == "postgresql":
        await db.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
            {"key": f"jiefen-recorder:{process}"},
        )


def busy_message(limit: int) -> Msg:
    if limit <= 0:
        return _l("Sessions cannot be recorded on this server.")
    return _l(
        "This server is already recording {count} sessions, as many as it can. "
        "Try again when one of them has finished.",
        count=limit,
    )


async def ask(
    db: AsyncSession,
    meeting_id: int,
    actor_id: int,
    *,
    video: bool,
    process: str,
    limit: int,
) -> Recording:
    """The mediator asks everyone in their room to agree to record it. The mediator's own
    consent is given by asking. Refused when the session is text only, the room is being
    recorded already, or this server process is recording as many sessions as it may (the
    mediator is told before anyone is asked)."""
    meeting = await service._managed(db, meeting_id, actor_id)
    if meeting.mode == Mode.TEXT:
        raise Refused("no_media", _l("This session is text only."))
    seat = await service._seat(db, meeting.id, actor_id)
    if seat is None or seat.room is None:
        raise Refused("not_admitted", _l("You are not in the session yet."))
    recordings = await _recordings(db, meeting.id)
    if _open_recording(recordings, seat.room) is not None:
        raise Refused("recording", _l("This room is already being recorded, or asked about."))
    await _lock_process(db, process)
    if await running_on(db, process) >= limit:
        raise Refused("busy", busy_message(limit))
    now = utcnow()
    recording = Recording(
        meeting_id=meeting.id,
        room=seat.room,
        video=video and meeting.mode == Mode.VIDEO,
        status=RecordingStatus.ASKING.value,
        requested_by_id=actor_id,
        process=process,
        asked_at=now,
    )
    db.add(recording)
    await db.flush()
    db.add(RecordingConsent(recording_id=recording.id, user_id=actor_id, agreed=True))
    await db.flush()
    record(
        db,
        actor_id,
        "meeting.record_ask",
        "meeting",
        meeting.id,
        recording=recording.id,
        room=recording.room,
        video=recording.video,
    )
    await _start_if_agreed(db, recording)
    await service._publish_states(db, meeting)
    await db.commit()
    return recording


async def _all_agreed(db: AsyncSession, recording: Recording) -> bool:
    participants = await _participants(db, recording.meeting_id)
    present = _present(participants, await _online(db, recording.meeting_id), recording.room)
    answers = await _answers(db, [recording.id])
    return bool(present) and all(answers.get((recording.id, p.user_id)) for p in present)


async def _start_if_agreed(db: AsyncSession, recording: Recording) -> bool:
    """Start asking → recording once everyone present has agreed."""
    if recording.status != RecordingStatus.ASKING or not await _all_agreed(db, recording):
        return False
    recording.status = RecordingStatus.RECORDING.value
    recording.started_at = utcnow()
    record(
        db, None, "meeting.record_start", "meeting", recording.meeting_id, recording=recording.id
    )
    return True


def _stop(recording: Recording, reason: StopReason) -> None:
    now = utcnow()
    if recording.status == RecordingStatus.ASKING:
        declined = reason in (StopReason.WITHDRAWN, StopReason.REFUSED)
        recording.status = (
            RecordingStatus.DECLINED if declined else RecordingStatus.CANCELLED
        ).value
    elif recording.status == RecordingStatus.RECORDING:
        recording.status = RecordingStatus.SEALING.value
        recording.partial = reason in PARTIAL
    else:
        return
    recording.reason = reason.value
    recording.stopped_at = now


def _stop_recorded(
    db: AsyncSession, recording: Recording, reason: StopReason, actor_id: int | None = None
) -> None:
    """Stop it, with the audit event that says who (None: the system) and why."""
    _stop(recording, reason)
    record(
        db,
        actor_id,
        "meeting.record_stop",
        "meeting",
        recording.meeting_id,
        recording=recording.id,
        reason=reason.value,
    )


async def _find(db: AsyncSession, meeting: Meeting, recording_id: int) -> Recording:
    recording = next((r for r in await _recordings(db, meeting.id) if r.id == recording_id), None)
    if recording is None or recording.status == RecordingStatus.SEALING:
        raise Refused("invalid", _l("This recording is not going on any more."))
    return recording


async def answer(
    db: AsyncSession, meeting_id: int, user_id: int, recording_id: int, agree: bool
) -> Recording:
    """A participant in the recorded room agrees or refuses (or withdraws an agreement).
    A refusal while asking means no recording; while recording, it stops the recording and
    what was made is sealed as partial."""
    meeting = await service._lock(db, meeting_id)
    if meeting.status != MeetingStatus.OPEN:
        raise Refused("not_open", _l("This session is not in progress."))
    seat = await service._seat(db, meeting.id, user_id)
    recording = await _find(db, meeting, recording_id)
    if seat is None or seat.state != SeatState.ADMITTED or seat.room != recording.room:
        raise Refused("invalid", _l("This recording is not of the room you are in."))
    before = (await _answers(db, [recording.id])).get((recording.id, user_id))
    if before is agree:
        await db.rollback()
        return recording  # the same answer again: nothing changes
    db.add(RecordingConsent(recording_id=recording.id, user_id=user_id, agreed=agree))
    await db.flush()
    record(
        db,
        user_id,
        "meeting.record_consent" if agree else "meeting.record_refuse",
        "meeting",
        meeting.id,
        recording=recording.id,
    )
    if agree:
        await _start_if_agreed(db, recording)
    else:
        _stop(recording, StopReason.WITHDRAWN if before else StopReason.REFUSED)
    await service._publish_states(db, meeting)
    await db.commit()
    return recording


async def stop(db: AsyncSession, meeting_id: int, actor_id: int, recording_id: int) -> Recording:
    """The mediator stops a recording (or stops asking)."""
    meeting = await service._managed(db, meeting_id, actor_id)
    recording = await _find(db, meeting, recording_id)
    _stop_recorded(db, recording, StopReason.STOPPED, actor_id)
    await service._publish_states(db, meeting)
    await db.commit()
    return recording


async def stop_all(db: AsyncSession, meeting: Meeting, reason: StopReason) -> None:
    """Stop every recording of the session (its transaction: the caller commits)."""
    for recording in await _recordings(db, meeting.id):
        if recording.status in SHOWN:
            _stop_recorded(db, recording, reason)


async def check_signal(db: AsyncSession, meeting_id: int, user_id: int) -> Recording:
    """The recording a participant's client may negotiate with: of their room, being made,
    and they agreed. Anything else is refused."""
    meeting = await db.get(Meeting, meeting_id, populate_existing=True)
    seat = await service._seat(db, meeting_id, user_id)
    if meeting is None or seat is None:
        raise Refused("invalid_target", _l("That person is not in your room."))
    recording = await db.scalar(
        select(Recording).where(
            Recording.meeting_id == meeting_id,
            Recording.room == seat.room,
            Recording.status == RecordingStatus.RECORDING,
        )
    )
    if recording is None or user_id not in await recorded_peers(db, recording):
        raise Refused("invalid_target", _l("That person is not in your room."))
    return recording


# -- what the recorder does -----------------------------------------------------------------


async def evaluate(db: AsyncSession, recording_id: int) -> Recording | None:
    """Start a recording that was waiting for people who have since left; the recording as
    it stands (None if gone)."""
    recording = await db.get(Recording, recording_id, populate_existing=True)
    if recording is None or recording.status != RecordingStatus.ASKING:
        return recording
    if not await _all_agreed(db, recording):
        await db.rollback()
        return recording  # nothing to do: no lock taken, nothing written
    meeting = await service._lock(db, recording.meeting_id)
    await db.refresh(recording)
    if await _start_if_agreed(db, recording):
        await service._publish_states(db, meeting)
    await db.commit()
    return recording


async def mine(db: AsyncSession, process: str) -> list[Recording]:
    """The recordings the server process ``process`` is making or must seal."""
    return list(
        await db.scalars(
            select(Recording)
            .where(Recording.process == process, Recording.status.in_(tuple(ACTIVE)))
            .order_by(Recording.id)
            .execution_options(populate_existing=True)
        )
    )


async def failed(db: AsyncSession, recording_id: int, reason: StopReason) -> None:
    """The recorder stopped by itself (its connection failed): seal what was made."""
    recording = await db.get(Recording, recording_id, populate_existing=True)
    if recording is None:
        return
    meeting = await service._lock(db, recording.meeting_id)
    await db.refresh(recording)
    if recording.status not in SHOWN:
        await db.commit()
        return
    _stop_recorded(db, recording, reason)
    if meeting.status == MeetingStatus.OPEN:
        await service._publish_states(db, meeting)
    await db.commit()


async def cancel_asking(db: AsyncSession, process: str) -> None:
    """The server process is stopping: its requests for consent are withdrawn."""
    for recording in await mine(db, process):
        if recording.status == RecordingStatus.ASKING:
            await failed(db, recording.id, StopReason.INTERRUPTED)


async def orphans(db: AsyncSession, process: str, now: datetime, stale: timedelta) -> list[int]:
    """Take over the recordings of server processes not heard from for ``stale`` (they
    stopped while recording): each becomes this process's to seal, as partial. Returns their
    ids."""
    alive = select(RealtimeProcess.id).where(RealtimeProcess.seen_at >= now - stale)
    still = Recording.status == RecordingStatus.RECORDING
    taken = list(
        await db.scalars(
            update(Recording)
            .where(
                Recording.status.in_((RecordingStatus.RECORDING, RecordingStatus.SEALING)),
                Recording.process != process,
                Recording.process.not_in(alive),
            )
            .values(
                process=process,
                status=RecordingStatus.SEALING.value,
                # One that was being sealed keeps why it stopped (SET reads the old row).
                partial=case((still, True), else_=Recording.partial),
                reason=case((still, StopReason.INTERRUPTED.value), else_=Recording.reason),
                stopped_at=func.coalesce(Recording.stopped_at, now),
            )
            .returning(Recording.id)
        )
    )
    # Asking is all that was going on: nothing was recorded.
    cancelled = list(
        await db.scalars(
            update(Recording)
            .where(
                Recording.status == RecordingStatus.ASKING,
                Recording.process != process,
                Recording.process.not_in(alive),
            )
            .values(status=RecordingStatus.CANCELLED.value, stopped_at=now)
            .returning(Recording.id)
        )
    )
    changed = [*taken, *cancelled]
    if changed:
        meetings = set(
            await db.scalars(select(Recording.meeting_id).where(Recording.id.in_(changed)))
        )
        for recording_id in changed:
            record(db, None, "meeting.record_takeover", "recording", recording_id, process=process)
        # Everyone in those sessions stops seeing a recording that nobody makes any more.
        for meeting_id in sorted(meetings):
            meeting = await service._lock(db, meeting_id)
            if meeting.status == MeetingStatus.OPEN:
                await service._publish_states(db, meeting)
    await db.commit()
    return taken


@dataclass(frozen=True)
class Sealed:
    """A file of a recording, stored in the blob store, to attach to the case."""

    kind: str  # "mix", "audio", "video"
    user_id: int | None
    sha256: str
    size: int
    content_type: str
    filename: str
    offset_ms: int
    duration_ms: int


# The stored titles and notes of the evidence items are in Chinese, the language of the record
# (as the agreement's legal text); pages show the kind of each file in the reader's language.
_KIND_ZH = {"mix": "调解录音（混音）", "audio": "调解录音", "video": "调解录像"}
_ROOM_ZH = {
    Room.JOINT.value: "联合调解",
    Room.CAUCUS_CLAIMANT.value: "与申请人单独会谈",
    Room.CAUCUS_RESPONDENT.value: "与被申请人单独会谈",
}
_PARTIAL_ZH = {
    StopReason.WITHDRAWN.value: "一名参与人撤回同意，录音中止",
    StopReason.REFUSED.value: "后加入的参与人不同意，录音中止",
    StopReason.FAILED.value: "录音连接中断",
    StopReason.INTERRUPTED.value: "录音期间服务器停止运行",
}


def _title(kind: str, name: str, room: str, started: datetime | None) -> str:
    when = service.local_time(started) if started else ""
    parts = [_KIND_ZH[kind], _ROOM_ZH.get(room, room), name, when]
    return " · ".join(p for p in parts if p)[:200]


def _note(recording: Recording) -> str:
    if not recording.partial:
        return ""
    return "部分录音：" + _PARTIAL_ZH.get(recording.reason or "", "录音中止")


async def seal(
    db: AsyncSession, recording_id: int, files: Sequence[Sealed], problem: str, process: str
) -> int:
    """Attach the recording's files to the case as evidence (each with its evidence-log leaf,
    in this transaction) and mark it sealed; with no file at all it is marked lost, and the
    problem is kept so that the mediator is told. Only the process that seals it does so
    (read again under the session's lock). Returns how many files were added."""
    recording = await db.get(Recording, recording_id, populate_existing=True)
    if recording is None:
        return 0
    meeting = await service._lock(db, recording.meeting_id)
    await db.refresh(recording)
    if recording.status != RecordingStatus.SEALING or recording.process != process:
        await db.rollback()
        return 0
    case = await db.get(Case, meeting.case_id)
    requester = await db.get(User, recording.requested_by_id)
    assert case is not None and requester is not None
    party = {Room.CAUCUS_CLAIMANT: "claimant", Room.CAUCUS_RESPONDENT: "respondent"}.get(
        Room(recording.room), "committee"
    )
    visibility = "parties" if recording.room == Room.JOINT else "mediator"
    names = dict(
        (
            await db.execute(
                select(User.id, User.display_name).where(
                    User.id.in_([f.user_id for f in files if f.user_id is not None])
                )
            )
        ).all()
    )
    note = _note(recording)
    added = 0
    for file in files:
        try:
            material = await cases.add_material(
                db,
                case,
                requester,
                kind="recording",
                filename=file.filename,
                content_type=file.content_type,
                size=file.size,
                sha256=file.sha256,
                title=_title(
                    file.kind,
                    names.get(file.user_id or 0, ""),
                    recording.room,
                    recording.started_at,
                ),
                description=note,
                visibility=visibility,
                party=party,
                commit=False,
            )
        except DomainError:
            continue  # the very same bytes are in the case already (a silent track)
        added += 1
        db.add(
            RecordingFile(
                recording_id=recording.id,
                kind=file.kind,
                user_id=file.user_id,
                material_id=material.id,
                offset_ms=file.offset_ms,
                duration_ms=file.duration_ms,
            )
        )
    recording.status = (RecordingStatus.SEALED if added else RecordingStatus.LOST).value
    recording.sealed_at = utcnow()
    recording.problem = problem[:2000]
    if added:
        await db.flush()
        leaf = await stage_leaf(
            db,
            RECORDING,
            await leaf_body(db, recording, case.id),
            case_id=case.id,
            case_number=case.number,
            time=recording.sealed_at,
        )
        recording.leaf_id = leaf.id
    record(
        db,
        None,
        "meeting.record_sealed" if added else "meeting.record_lost",
        "meeting",
        meeting.id,
        recording=recording.id,
        files=added,
        partial=recording.partial,
    )
    if meeting.status == MeetingStatus.OPEN:
        await service._publish_states(db, meeting)
    await db.commit()
    return added


async def leaf_files(db: AsyncSession, recording_id: int) -> list[tuple[RecordingFile, Any]]:
    """The recording's files with their evidence items' hash and size, in the order sealed."""
    rows = await db.execute(
        select(RecordingFile, CaseMaterial.sha256, CaseMaterial.size)
        .join(CaseMaterial, CaseMaterial.id == RecordingFile.material_id)
        .where(RecordingFile.recording_id == recording_id)
        .order_by(RecordingFile.id)
    )
    return [(f, (sha256, size)) for f, sha256, size in rows]


async def consent_rows(db: AsyncSession, recording_id: int) -> list[RecordingConsent]:
    return list(
        await db.scalars(
            select(RecordingConsent)
            .where(RecordingConsent.recording_id == recording_id)
            .order_by(RecordingConsent.id)
        )
    )


def recording_leaf_body(
    recording: Recording,
    case_id: int,
    files: Sequence[tuple[RecordingFile, Any]],
    consents: Sequence[RecordingConsent],
    person: Callable[[int | None], Any],
) -> dict[str, JsonValue]:
    """The ``recording`` leaf's body from the rows (``person``: a user's commitment); the
    evidence log's full check rebuilds it the same way."""
    return recording_body(
        case_id=case_id,
        meeting=recording.meeting_id,
        recording=recording.id,
        room=recording.room,
        partial=recording.partial,
        reason=recording.reason or "",
        started=format_time(recording.started_at or recording.asked_at),
        stopped=format_time(recording.stopped_at or recording.asked_at),
        files=[
            {"sha256": sha256, "size": size, "kind": f.kind, "person": person(f.user_id)}
            for f, (sha256, size) in files
        ],
        consents=[
            {
                "person": person(c.user_id),
                "agreed": "yes" if c.agreed else "no",
                "time": format_time(c.answered_at),
            }
            for c in consents
        ],
    )


async def leaf_body(db: AsyncSession, recording: Recording, case_id: int) -> dict[str, JsonValue]:
    files = await leaf_files(db, recording.id)
    consents = await consent_rows(db, recording.id)
    people = {f.user_id for f, _ in files} | {c.user_id for c in consents}
    commitments = {user_id: await evidence.commitment(db, user_id) for user_id in people if user_id}
    return recording_leaf_body(
        recording, case_id, files, consents, lambda user_id: commitments.get(user_id or 0)
    )


# -- what pages show ------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedFile:
    file: RecordingFile
    material: CaseMaterial


@dataclass(frozen=True)
class Listed:
    recording: Recording
    files: list[ListedFile]
    consents: list[tuple[str, bool, datetime]]


async def listing(db: AsyncSession, meeting_id: int) -> list[Listed]:
    """The session's recordings, newest first, with their files and every answer given."""
    recordings = list(
        await db.scalars(
            select(Recording)
            .where(Recording.meeting_id == meeting_id)
            .order_by(Recording.id.desc())
        )
    )
    found: list[Listed] = []
    for r in recordings:
        rows = await db.execute(
            select(RecordingFile, CaseMaterial)
            .join(CaseMaterial, CaseMaterial.id == RecordingFile.material_id)
            .where(RecordingFile.recording_id == r.id)
            .order_by(RecordingFile.id)
        )
        files = [ListedFile(f, m) for f, m in rows]
        consents = [
            (name, agreed, at)
            for name, agreed, at in await db.execute(
                select(User.display_name, RecordingConsent.agreed, RecordingConsent.answered_at)
                .join(User, User.id == RecordingConsent.user_id)
                .where(RecordingConsent.recording_id == r.id)
                .order_by(RecordingConsent.id)
            )
        ]
        found.append(Listed(r, files, consents))
    return found
