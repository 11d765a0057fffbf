"""Recording consent, end to end: refusals, withdrawals, latecomers, bad requests, the
per-process limit, recovery after the recording server process died, and the end of the
session. Real Socket.IO peers, real aiortc clients sending tones, a real recorder; the sealed
files are decoded."""

from __future__ import annotations

import array
import asyncio
import fractions
import json
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from sqlalchemy import func, select

from portal.audit.models import AuditEvent
from portal.cases.models import CaseMaterial
from portal.db import utcnow
from portal.meetings.models import Meeting, RealtimeProcess, Room
from portal.meetings.recording import busy_message, listing
from portal.meetings.recording_models import (
    Recording,
    RecordingConsent,
    RecordingFile,
    RecordingStatus,
    StopReason,
)
from portal.orgs.models import Committee
from portal.policy import Role
from realtime.recorder import MANIFEST, RecorderHost
from tests.factories import (
    Person,
    make_case,
    make_firm,
    make_meeting,
    make_user,
    verify_phone,
)
from tests.factories import _state as state_of
from tests.meetings.conftest import Cast, Crowd, Peer, build_cast
from tests.meetings.test_recording import (
    RATE,
    Recorded,
    host_of,
    in_room,
    loudest,
    pcm,
    recording_view,
    sealed,
    until,
)
from tests.realtime.test_socket_auth import Live, session_cookie

FREQS = {"mediator": 440.0, "claimant": 1000.0, "rep1": 1800.0}
# An offer is refused before the recorder ever reads it: any description will do.
OFFER = {"description": {"type": "offer", "sdp": "v=0"}}


def ids_of(cast: Cast) -> dict[str, int]:
    return {"mediator": cast.mediator.id, "claimant": cast.claimant.id, "rep1": cast.rep1.id}


async def recordings_of(live: Live, meeting_id: int) -> list[Recording]:
    async with state_of(live.app).db() as db:
        return list(
            await db.scalars(
                select(Recording).where(Recording.meeting_id == meeting_id).order_by(Recording.id)
            )
        )


async def consents_of(live: Live, recording_id: int) -> list[RecordingConsent]:
    async with state_of(live.app).db() as db:
        return list(
            await db.scalars(
                select(RecordingConsent)
                .where(RecordingConsent.recording_id == recording_id)
                .order_by(RecordingConsent.id)
            )
        )


async def files_of(live: Live, recording_id: int) -> list[tuple[RecordingFile, CaseMaterial]]:
    async with state_of(live.app).db() as db:
        return [
            (f, m)
            for f, m in await db.execute(
                select(RecordingFile, CaseMaterial)
                .join(CaseMaterial, CaseMaterial.id == RecordingFile.material_id)
                .where(RecordingFile.recording_id == recording_id)
                .order_by(RecordingFile.id)
            )
        ]


async def until_recording(peer: Peer, status: str | None) -> None:
    """Wait until the peer's latest state shows the room's recording in ``status`` (None: no
    recording shown any more)."""
    await peer.until(lambda p: (recording_view(p) or {}).get("status") == status)


async def record_tones(
    peers: dict[str, Peer], meeting_id: int, labels: list[str]
) -> dict[str, Recorded]:
    """Connect the clients of ``labels`` (who agreed, the room being recorded) to the
    recorder, each sending its tone; returns once all are connected."""
    clients = {label: Recorded(peers[label], meeting_id, FREQS[label]) for label in labels}
    try:
        for label in labels:
            await until_recording(peers[label], "recording")
            await clients[label].connect()

        async def connected() -> bool:
            return all(c.connected_at is not None for c in clients.values())

        await until(connected, seconds=15)
    except BaseException:
        await close_all(clients)
        raise
    return clients


async def close_all(clients: dict[str, Recorded]) -> None:
    for client in clients.values():
        await client.close()


def check_tracks(
    live: Live,
    rows: list[tuple[RecordingFile, CaseMaterial]],
    ids: dict[str, int],
    seconds: tuple[float, float],
) -> dict[str, float]:
    """Every file decodes: each participant's track carries their own tone, and it and the
    mix last between ``seconds``. Returns each track's length by label."""
    blobs = state_of(live.app).blobs
    by_user = {f.user_id: (f, m) for f, m in rows}
    lengths: dict[str, float] = {}
    for label, user_id in ids.items():
        f, m = by_user[user_id]
        assert f.kind == "audio" and m.kind == "recording" and m.content_type == "audio/ogg"
        samples = pcm(blobs.read_all(m.sha256))
        lengths[label] = len(samples) / RATE
        assert seconds[0] <= lengths[label] <= seconds[1], (label, lengths[label])
        assert abs(f.duration_ms / 1000 - lengths[label]) <= 0.2, (label, f.duration_ms)
        assert loudest(samples, list(FREQS.values())) == FREQS[label], label
    mix, mix_material = by_user[None]
    assert mix.kind == "mix"
    mixed = len(pcm(blobs.read_all(mix_material.sha256))) / RATE
    assert seconds[0] <= mixed <= seconds[1] + 0.5, mixed
    return lengths


# -- 1. a refusal while asking ----------------------------------------------------------------


async def test_refusal_while_asking_declines_and_nothing_is_recorded(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    peers = await in_room(live, people, cast)
    asked = await peers["mediator"].act("meeting.record", mid)
    assert asked["ok"] and asked["status"] == "asking", asked
    rid = asked["recording_id"]
    await peers["claimant"].until(lambda p: (recording_view(p) or {}).get("you") == "asked")

    before = time.time()
    refused = await peers["claimant"].act("meeting.consent", mid, recording_id=rid, agree=False)
    assert refused == {"ok": True, "status": "declined"}, refused

    (found,) = await recordings_of(live, mid)
    assert found.id == rid and found.status == RecordingStatus.DECLINED
    assert found.reason == StopReason.REFUSED and not found.partial
    assert found.started_at is None and found.stopped_at is not None
    # Nobody is shown a recording any more.
    for peer in peers.values():
        await until_recording(peer, None)
    # The mediator asked (and so agreed), yet the recorder refuses them: nothing is recorded.
    early = await peers["mediator"].act("meeting.signal", mid, to=0, payload=OFFER)
    assert early["ok"] is False and early["error"] == "invalid_target", early
    # A late yes changes nothing: the recording is over.
    late = await peers["rep1"].act("meeting.consent", mid, recording_id=rid, agree=True)
    assert late["error"] == "invalid", late
    answers = await consents_of(live, rid)
    assert [(a.user_id, a.agreed) for a in answers] == [
        (cast.mediator.id, True),
        (cast.claimant.id, False),
    ]
    no = answers[1]
    assert before - 1 <= no.answered_at.timestamp() <= time.time() + 1, no.answered_at
    assert answers[0].answered_at <= no.answered_at
    host = host_of(live)
    assert rid not in host.rooms
    assert not (host.root / str(rid)).exists()
    assert await files_of(live, rid) == []


# -- 2. a withdrawal while recording ----------------------------------------------------------


async def test_withdrawal_stops_and_seals_what_was_recorded_as_partial(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    ids = ids_of(cast)
    peers = await in_room(live, people, cast)
    rid = (await peers["mediator"].act("meeting.record", mid))["recording_id"]
    for label in ("claimant", "rep1"):
        agreed = await peers[label].act("meeting.consent", mid, recording_id=rid, agree=True)
        assert agreed["ok"], agreed
    assert agreed["status"] == "recording"
    clients = await record_tones(peers, mid, list(ids))
    try:
        first = min(c.connected_at or 0 for c in clients.values())
        await asyncio.sleep(2)
        withdrawn = await peers["claimant"].act(
            "meeting.consent", mid, recording_id=rid, agree=False
        )
        withdrawn_at = time.monotonic()
        assert withdrawn == {"ok": True, "status": "sealing"}, withdrawn
        for peer in peers.values():
            await until_recording(peer, None)
        # The recorder takes nobody once the recording stopped.
        after = await peers["mediator"].act("meeting.signal", mid, to=0, payload=OFFER)
        assert after["error"] == "invalid_target", after
        done = await sealed(live, rid)
    finally:
        await close_all(clients)

    assert done.status == RecordingStatus.SEALED, done.problem
    assert done.partial and done.reason == StopReason.WITHDRAWN
    rows = await files_of(live, rid)
    assert sorted((f.kind, f.user_id or 0) for f, _ in rows) == sorted(
        [("mix", 0)] + [("audio", i) for i in ids.values()]
    )
    # About 2 s each; the claimant's voice was not taken after they withdrew.
    lengths = check_tracks(live, rows, ids, (1.5, 5.0))
    for label, length in lengths.items():
        assert length <= withdrawn_at - first + 0.3, (label, lengths, withdrawn_at - first)
    for _, m in rows:
        assert m.description.startswith("部分录音"), m.description
    history = await consents_of(live, rid)
    claimant = [a for a in history if a.user_id == cast.claimant.id]
    assert [a.agreed for a in claimant] == [True, False]
    assert claimant[0].answered_at <= claimant[1].answered_at
    assert not (host_of(live).root / str(rid)).exists()


# -- 3. someone comes in while recording --------------------------------------------------------


async def test_latecomer_is_asked_not_recorded_and_their_refusal_stops_it(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    peers = {
        "mediator": await people.peer("mediator", cast.mediator),
        "claimant": await people.peer("claimant", cast.claimant),
        "rep1": await people.peer("rep1", cast.rep1),
    }
    assert (await peers["mediator"].act("meeting.join", mid))["ok"]
    assert (await peers["claimant"].act("meeting.join", mid))["ok"]
    assert (await peers["mediator"].act("meeting.admit", mid, user_id=cast.claimant.id))["ok"]
    await peers["claimant"].until_state(state="admitted")
    asked = await peers["mediator"].act("meeting.record", mid)
    rid = asked["recording_id"]
    assert asked["status"] == "asking"
    agreed = await peers["claimant"].act("meeting.consent", mid, recording_id=rid, agree=True)
    assert agreed == {"ok": True, "status": "recording"}, agreed
    clients = await record_tones(peers, mid, ["mediator", "claimant"])
    host = host_of(live)
    try:
        await asyncio.sleep(1)
        # rep1 comes in while the room is being recorded.
        assert (await peers["rep1"].act("meeting.join", mid))["ok"]
        assert (await peers["mediator"].act("meeting.admit", mid, user_id=cast.rep1.id))["ok"]
        await peers["rep1"].until_state(state="admitted")
        await peers["rep1"].until(lambda p: (recording_view(p) or {}).get("you") == "asked")
        view = recording_view(peers["rep1"])
        assert view is not None and view["status"] == "recording" and view["id"] == rid
        assert view["waiting"] == ["公司代表甲"] and view["agreed"] == 2, view
        # Not before they answer: the recorder refuses them.
        early = await peers["rep1"].act("meeting.signal", mid, to=0, payload=OFFER)
        assert early["ok"] is False and early["error"] == "invalid_target", early
        assert host.rooms[rid].users == {cast.mediator.id, cast.claimant.id}
        refused = await peers["rep1"].act("meeting.consent", mid, recording_id=rid, agree=False)
        assert refused == {"ok": True, "status": "sealing"}, refused
        done = await sealed(live, rid)
    finally:
        await close_all(clients)

    assert done.status == RecordingStatus.SEALED, done.problem
    assert done.partial and done.reason == StopReason.REFUSED
    rows = await files_of(live, rid)
    recorded = {"mediator": cast.mediator.id, "claimant": cast.claimant.id}
    assert sorted((f.kind, f.user_id or 0) for f, _ in rows) == sorted(
        [("mix", 0)] + [("audio", i) for i in recorded.values()]
    )
    check_tracks(live, rows, recorded, (1.0, 10.0))
    answers = [(a.user_id, a.agreed) for a in await consents_of(live, rid)]
    assert answers == [(cast.mediator.id, True), (cast.claimant.id, True), (cast.rep1.id, False)]


# -- 4. who may ask, and requests that make no sense ------------------------------------------


async def test_only_the_mediator_asks_and_bad_requests_change_nothing(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    peers = await in_room(live, people, cast)
    claimant = peers["claimant"]

    forbidden = await claimant.act("meeting.record", mid)
    assert forbidden["ok"] is False and forbidden["error"] == "forbidden", forbidden
    assert await recordings_of(live, mid) == []

    asked = await peers["mediator"].act("meeting.record", mid)
    assert asked["ok"], asked
    rid = asked["recording_id"]
    again = await peers["mediator"].act("meeting.record", mid, video=True)
    assert again["ok"] is False and again["error"] == "recording", again
    stop = await claimant.act("meeting.record_stop", mid, recording_id=rid)
    assert stop["error"] == "forbidden", stop

    unknown = await claimant.act("meeting.consent", mid, recording_id=rid + 1000, agree=True)
    assert unknown["ok"] is False and unknown["error"] == "invalid", unknown
    malformed: list[dict[str, Any]] = [
        {"meeting_id": mid, "recording_id": rid},
        {"meeting_id": mid, "recording_id": rid, "agree": "yes"},
        {"meeting_id": mid, "recording_id": rid, "agree": "false"},
        {"meeting_id": mid, "recording_id": rid, "agree": 0},
        {"meeting_id": mid, "recording_id": str(rid), "agree": True},
        {"meeting_id": mid, "recording_id": rid, "agree": True, "extra": 1},
    ]
    for payload in malformed:
        answer = await claimant.call("meeting.consent", payload)
        assert answer["ok"] is False and answer["error"] == "invalid", (payload, answer)
    bad_ask = await peers["mediator"].act("meeting.record", mid, video="yes")
    assert bad_ask["error"] == "invalid", bad_ask

    # Nothing changed: one recording, still asking, with only the mediator's own consent.
    (found,) = await recordings_of(live, mid)
    assert found.id == rid and found.status == RecordingStatus.ASKING and not found.video
    answers = await consents_of(live, rid)
    assert [(a.user_id, a.agreed) for a in answers] == [(cast.mediator.id, True)]
    view = recording_view(claimant)
    assert view is not None and view["you"] == "asked"


async def test_a_text_only_session_cannot_be_recorded(live: Live, people: Crowd) -> None:
    cast = await build_cast(live.app, mode="text")
    mediator = await people.peer("mediator", cast.mediator)
    assert (await mediator.act("meeting.join", cast.meeting_id))["ok"]
    no_media = await mediator.act("meeting.record", cast.meeting_id)
    assert no_media["ok"] is False and no_media["error"] == "no_media", no_media
    assert await recordings_of(live, cast.meeting_id) == []
    assert mediator.last_state()["recordings"] == []


# -- 5. the per-process limit -----------------------------------------------------------------


@dataclass
class Session:
    mediator: Person
    meeting_id: int


async def another_session(live: Live, cast: Cast) -> Session:
    """A second case with its own mediator, claimant and firm, and a session scheduled for
    it. (``build_cast`` cannot be called twice for one app: every case goes to the first
    committee, whose mediators the second cast's are not.)"""
    app = live.app
    async with state_of(app).db() as db:
        committee = await db.get(Committee, cast.mediator.user.committee_id)
    assert committee is not None
    mediator = await make_user(app, Role.MEDIATOR, committee=committee, name="赵调解员")
    firm = await make_firm(app)
    claimant = await make_user(app, Role.CONSUMER, phone="13700000001", name="李四")
    await verify_phone(app, claimant)
    case = await make_case(app, claimant, firm, status="assigned", mediator_id=mediator.id)
    meeting = await make_meeting(app, case, mediator, mode="voice")
    return Session(mediator, meeting.id)


async def test_a_process_records_no_more_sessions_than_its_limit(live: Live, people: Crowd) -> None:
    host = host_of(live)
    assert host.limit == 2  # settings.recording_limit
    host.limit = 1
    first = await build_cast(live.app, mode="voice")
    m1 = await people.peer("mediator1", first.mediator)
    c1 = await people.peer("claimant1", first.claimant)
    assert (await m1.act("meeting.join", first.meeting_id))["ok"]
    assert (await c1.act("meeting.join", first.meeting_id))["ok"]
    assert (await m1.act("meeting.admit", first.meeting_id, user_id=first.claimant.id))["ok"]
    await c1.until_state(state="admitted")
    asked = await m1.act("meeting.record", first.meeting_id)
    assert asked["ok"] and asked["status"] == "asking", asked

    second = await another_session(live, first)
    m2 = await people.peer("mediator2", second.mediator)
    assert (await m2.act("meeting.join", second.meeting_id))["ok"]
    busy = await m2.act("meeting.record", second.meeting_id)
    assert busy["ok"] is False and busy["error"] == "busy", busy
    catalogue = state_of(live.app).catalogues["zh_CN"]
    assert busy["message"] == busy_message(1).render(catalogue)
    assert "1" in busy["message"] and "2" not in busy["message"]
    assert await recordings_of(live, second.meeting_id) == []
    assert m2.last_state()["recordings"] == []

    # Once the first one is over, the second session may be recorded.
    stopped = await m1.act(
        "meeting.record_stop", first.meeting_id, recording_id=asked["recording_id"]
    )
    assert stopped["ok"], stopped
    (cancelled,) = await recordings_of(live, first.meeting_id)
    assert cancelled.status == RecordingStatus.CANCELLED
    now = await m2.act("meeting.record", second.meeting_id)
    assert now["ok"], now
    assert await m2.act(
        "meeting.record_stop", second.meeting_id, recording_id=now["recording_id"]
    ) == {"ok": True}


# -- 6. recovery after the recording process died ----------------------------------------------


def write_tone(path: Path, seconds: float, freq: float) -> None:
    """An Ogg/Opus file of a tone, as the recorder writes one."""
    with av.open(str(path), "w", format="ogg") as output:
        stream = output.add_stream("libopus", rate=RATE)
        stream.layout = "mono"
        sent = 0
        while sent < seconds * RATE:
            samples = array.array(
                "h",
                (int(6000 * math.sin(2 * math.pi * freq * (sent + i) / RATE)) for i in range(960)),
            )
            frame = av.AudioFrame(format="s16", layout="mono", samples=960)
            frame.planes[0].update(samples.tobytes())
            frame.sample_rate = RATE
            frame.pts = sent
            frame.time_base = fractions.Fraction(1, RATE)
            for packet in stream.encode(frame):
                output.mux(packet)
            sent += 960
        for packet in stream.encode(None):
            output.mux(packet)


async def orphan(live: Live, cast: Cast) -> tuple[int, str]:
    """A recording that a server process, gone without a trace, was making."""
    dead = "d" * 32
    async with state_of(live.app).db() as db:
        assert await db.get(RealtimeProcess, dead) is None
        found = Recording(
            meeting_id=cast.meeting_id,
            room=Room.JOINT.value,
            status=RecordingStatus.RECORDING.value,
            requested_by_id=cast.mediator.id,
            process=dead,
            asked_at=utcnow() - timedelta(seconds=20),
            started_at=utcnow() - timedelta(seconds=15),
        )
        db.add(found)
        await db.flush()
        for user_id in (cast.mediator.id, cast.claimant.id):
            db.add(RecordingConsent(recording_id=found.id, user_id=user_id, agreed=True))
        await db.commit()
        return found.id, dead


async def restarted(live: Live) -> RecorderHost:
    """This server's recorder as it is right after a start: the running loop is stopped (so
    that only the test drives it) and a new host follows the database from its first round."""
    state = state_of(live.app)
    await host_of(live).stop()
    return RecorderHost(
        state.meeting_sockets,
        blobs=state.blobs,
        root=state.settings.recordings_dir,
        limit=state.settings.recording_limit,
    )


async def test_recording_of_a_dead_process_is_recovered_from_its_folder(live: Live) -> None:
    cast = await build_cast(live.app, mode="voice")
    host = await restarted(live)
    rid, dead = await orphan(live, cast)
    folder = state_of(live.app).settings.recordings_dir / str(rid)
    folder.mkdir(parents=True)
    # The claimant's track, cut off part-way by the crash; the mediator's, never written.
    track = folder / f"{cast.claimant.id}-1-audio.ogg"
    write_tone(track, 4, FREQS["claimant"])
    whole = track.read_bytes()
    track.write_bytes(whole[: len(whole) * 55 // 100])
    held = len(pcm(track.read_bytes())) / RATE
    assert 1.0 < held < 3.0, held
    empty = folder / f"{cast.mediator.id}-2-audio.ogg"
    empty.write_bytes(b"")
    began = time.time() - 15
    with (folder / MANIFEST).open("w", encoding="utf-8") as manifest:
        for name, user_id, start in (
            (track.name, cast.claimant.id, began),
            (empty.name, cast.mediator.id, began + 0.5),
        ):
            entry = {"file": name, "user_id": user_id, "kind": "audio", "start": start}
            manifest.write(json.dumps(entry) + "\n")
        manifest.write('{"file": "3-3-aud')  # the line being written when it stopped

    await host.run_once()
    done = await sealed(live, rid)

    assert done.status == RecordingStatus.SEALED, done.problem
    assert done.partial and done.reason == StopReason.INTERRUPTED
    assert done.process == host.process != dead and done.stopped_at is not None
    assert empty.name in done.problem and "unreadable" in done.problem, done.problem
    rows = await files_of(live, rid)
    assert sorted((f.kind, f.user_id or 0) for f, _ in rows) == [
        ("audio", cast.claimant.id),
        ("mix", 0),
    ]
    blobs = state_of(live.app).blobs
    by_kind = {f.kind: (f, m) for f, m in rows}
    audio, material = by_kind["audio"]
    samples = pcm(blobs.read_all(material.sha256))
    assert abs(len(samples) / RATE - held) <= 0.1, (len(samples) / RATE, held)
    assert abs(audio.duration_ms / 1000 - held) <= 0.15, (audio.duration_ms, held)
    assert loudest(samples, list(FREQS.values())) == FREQS["claimant"]
    assert material.kind == "recording" and material.description.startswith("部分录音")
    mix, mix_material = by_kind["mix"]
    mixed = len(pcm(blobs.read_all(mix_material.sha256))) / RATE
    assert abs(mixed - held) <= 0.15 and abs(mix.duration_ms / 1000 - held) <= 0.15
    # The folder is kept for an administrator while it holds a file that could not be read.
    assert empty.exists()


async def test_recording_of_a_dead_process_without_its_folder_is_reported_lost(
    live: Live,
) -> None:
    cast = await build_cast(live.app, mode="voice")
    host = await restarted(live)
    rid, _ = await orphan(live, cast)
    assert not (host.root / str(rid)).exists()

    await host.run_once()
    done = await sealed(live, rid)

    assert done.status == RecordingStatus.LOST
    assert done.partial and done.reason == StopReason.INTERRUPTED
    assert done.problem.strip() and "folder" in done.problem, done.problem
    assert done.sealed_at is not None
    assert await files_of(live, rid) == []
    # Reported, not silently gone: listed for the session with its problem, and audited.
    async with state_of(live.app).db() as db:
        (listed,) = await listing(db, cast.meeting_id)
        lost = await db.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "meeting.record_lost")
        )
    assert listed.recording.id == rid and listed.recording.problem == done.problem
    assert listed.files == []
    assert lost == 1


# -- 7. the end of the session ------------------------------------------------------------------


async def test_ending_the_session_stops_and_seals_the_recording_in_full(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    ids = ids_of(cast)
    peers = await in_room(live, people, cast)
    rid = (await peers["mediator"].act("meeting.record", mid))["recording_id"]
    for label in ("claimant", "rep1"):
        assert (await peers[label].act("meeting.consent", mid, recording_id=rid, agree=True))["ok"]
    clients = await record_tones(peers, mid, list(ids))
    try:
        await asyncio.sleep(1.5)
        ended = await peers["mediator"].act("meeting.end", mid, outcome="adjourned")
        assert ended == {"ok": True}, ended
        done = await sealed(live, rid)
    finally:
        await close_all(clients)

    assert done.status == RecordingStatus.SEALED, done.problem
    assert done.reason == StopReason.ENDED and not done.partial
    assert done.problem == ""
    rows = await files_of(live, rid)
    assert sorted((f.kind, f.user_id or 0) for f, _ in rows) == sorted(
        [("mix", 0)] + [("audio", i) for i in ids.values()]
    )
    check_tracks(live, rows, ids, (1.2, 8.0))
    assert all(m.description == "" for _, m in rows)
    async with state_of(live.app).db() as db:
        meeting = await db.get(Meeting, mid)
        assert meeting is not None
        assert meeting.status == "ended" and meeting.outcome == "adjourned"


async def test_two_sessions_asking_at_once_stay_within_the_limit(live: Live, people: Crowd) -> None:
    """Two mediators ask at the same moment on a process that may record one session: one
    is refused (on PostgreSQL the count is taken under a lock per process)."""
    host_of(live).limit = 1
    first = await build_cast(live.app, mode="voice")
    second = await another_session(live, first)
    m1 = await people.peer("mediator1", first.mediator)
    m2 = await people.peer("mediator2", second.mediator)
    assert (await m1.act("meeting.join", first.meeting_id))["ok"]
    assert (await m2.act("meeting.join", second.meeting_id))["ok"]
    answers = await asyncio.gather(
        m1.act("meeting.record", first.meeting_id), m2.act("meeting.record", second.meeting_id)
    )
    assert sorted(a["ok"] for a in answers) == [False, True], answers
    assert [a["error"] for a in answers if not a["ok"]] == ["busy"]
    both = await recordings_of(live, first.meeting_id) + await recordings_of(
        live, second.meeting_id
    )
    assert len(both) == 1


async def test_a_taken_over_recording_that_was_being_sealed_keeps_why_it_stopped(
    live: Live,
) -> None:
    cast = await build_cast(live.app, mode="voice")
    host = await restarted(live)
    withdrawn, _ = await orphan(live, cast)
    finished, _ = await orphan(live, cast)
    async with state_of(live.app).db() as db:
        for rid, reason, partial in (
            (withdrawn, StopReason.WITHDRAWN, True),
            (finished, StopReason.STOPPED, False),
        ):
            found = await db.get(Recording, rid)
            assert found is not None
            found.status = RecordingStatus.SEALING.value
            found.reason, found.partial = reason.value, partial
        await db.commit()
    folder = state_of(live.app).settings.recordings_dir
    for rid in (withdrawn, finished):
        (folder / str(rid)).mkdir(parents=True)
        track = folder / str(rid) / f"{cast.claimant.id}-1-audio.ogg"
        write_tone(track, 1 + rid % 2, FREQS["claimant"])
        entry = {"file": track.name, "user_id": cast.claimant.id, "kind": "audio", "start": 1.0}
        (folder / str(rid) / MANIFEST).write_text(json.dumps(entry) + "\n")
    await host.run_once()
    first, second = await sealed(live, withdrawn), await sealed(live, finished)
    assert (first.status, first.reason, first.partial) == ("sealed", "withdrawn", True)
    assert (second.status, second.reason, second.partial) == ("sealed", "stopped", False)


async def test_a_track_whose_manifest_line_was_lost_is_still_sealed(live: Live) -> None:
    """The manifest's line for a track was cut off (or damaged): the track is kept, placed
    at the start, and the mediator is told its start time was lost."""
    cast = await build_cast(live.app, mode="voice")
    host = await restarted(live)
    rid, _ = await orphan(live, cast)
    folder = state_of(live.app).settings.recordings_dir / str(rid)
    folder.mkdir(parents=True)
    track = folder / f"{cast.claimant.id}-1-audio.ogg"
    write_tone(track, 2, FREQS["claimant"])
    (folder / MANIFEST).write_text(
        json.dumps({"file": track.name, "user_id": cast.claimant.id, "kind": "audio"}) + "\n"
    )
    await host.run_once()
    done = await sealed(live, rid)
    assert done.status == RecordingStatus.SEALED, done.problem
    assert "start time was lost" in done.problem
    rows = await files_of(live, rid)
    assert sorted((f.kind, f.user_id or 0) for f, _ in rows) == [
        ("audio", cast.claimant.id),
        ("mix", 0),
    ]


def test_what_came_after_the_stop_is_cut_from_every_track(tmp_path: Path) -> None:
    """Sealing cuts each track at the moment the recording stopped (a withdrawal is honoured
    to the fraction of a second, however late the recorder's connections closed), and the
    mix is as long as the longest cut track."""
    from portal.evidence.blobs import BlobStore, generate_master_key, parse_master_keys
    from realtime.recorder import prepare

    folder = tmp_path / "7"
    folder.mkdir()
    start = 1_700_000_000.0
    entries = []
    for n, (user_id, offset, freq) in enumerate(((3, 0.0, 440.0), (4, 0.5, 1000.0)), 1):
        track = folder / f"{user_id}-{n}-audio.ogg"
        write_tone(track, 4, freq)
        entries.append(
            {"file": track.name, "user_id": user_id, "kind": "audio", "start": start + offset}
        )
    (folder / MANIFEST).write_text("".join(json.dumps(e) + "\n" for e in entries))
    blobs = BlobStore(tmp_path / "blobs", parse_master_keys("k1:" + generate_master_key()), "k1")
    files, problem = prepare(folder, blobs, until=start + 2.0)
    assert problem == ""
    lengths = {f.user_id: f.duration_ms / 1000 for f in files}
    assert abs(lengths[3] - 2.0) <= 0.05 and abs(lengths[4] - 1.5) <= 0.05, lengths
    assert abs(lengths[None] - 2.0) <= 0.05, lengths
    for f in files:
        decoded = len(pcm(blobs.read_all(f.sha256))) / RATE
        assert abs(decoded - f.duration_ms / 1000) <= 0.05, (f, decoded)


def silence(client: Recorded) -> None:
    """The participant's network goes away at once: their ICE sockets close without a word
    (no DTLS close, no STUN answer), as when a phone loses its signal."""
    assert client.pc is not None
    for transport in client.pc._RTCPeerConnection__iceTransports:  # type: ignore[attr-defined]
        for protocol in list(transport._connection._protocols):
            if protocol.transport is not None:
                protocol.transport.close()


async def test_the_recording_stops_and_is_sealed_when_the_recorders_connections_fail(
    live: Live, people: Crowd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ICE consent (RFC 7675) checked every 0.2 s instead of 5: a connection whose other end
    fell silent is lost within about a second. One participant's lost connection drops only
    them (their track so far is kept, the recording goes on); when nobody who should be
    recorded has a working connection for ``lost_after`` (1 s here, 15 s in service), the
    recorder has failed: the recording stops and what was made is sealed as partial."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 2)
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    m = await people.peer("mediator", cast.mediator)
    c = await people.peer("claimant", cast.claimant)
    assert (await m.act("meeting.join", mid))["ok"]
    assert (await c.act("meeting.join", mid))["ok"]
    assert (await m.act("meeting.admit", mid, user_id=cast.claimant.id))["ok"]
    await c.until_state(state="admitted")
    rid = (await m.act("meeting.record", mid))["recording_id"]
    assert (await c.act("meeting.consent", mid, recording_id=rid, agree=True))["ok"]
    clients = await record_tones({"mediator": m, "claimant": c}, mid, ["mediator", "claimant"])
    host = host_of(live)
    host.lost_after = 1.0
    try:
        await asyncio.sleep(1.5)
        silence(clients["claimant"])

        async def claimant_dropped() -> bool:
            room = host.rooms.get(rid)
            return room is not None and set(room.pcs) == {cast.mediator.id}

        await until(claimant_dropped, seconds=10)
        found = (await recordings_of(live, mid))[0]
        assert found.status == RecordingStatus.RECORDING  # the mediator is still recorded
        await asyncio.sleep(1)
        silence(clients["mediator"])
        done = await sealed(live, rid)
    finally:
        await close_all(clients)
    assert done.status == RecordingStatus.SEALED, done.problem
    assert done.partial and done.reason == StopReason.FAILED
    rows = await files_of(live, rid)
    lengths = {f.user_id: f.duration_ms / 1000 for f, _ in rows if f.kind == "audio"}
    assert set(lengths) == {cast.mediator.id, cast.claimant.id}
    # The claimant's track ends when their network went; the mediator's about 1 s later.
    assert lengths[cast.mediator.id] > lengths[cast.claimant.id] + 0.5, lengths
    async with state_of(live.app).db() as db:
        stops = list(
            await db.scalars(select(AuditEvent).where(AuditEvent.action == "meeting.record_stop"))
        )
    assert [s.detail.get("reason") for s in stops] == ["failed"]


async def test_the_joint_room_is_not_recorded_while_the_mediator_is_out_of_it(
    live: Live, people: Crowd
) -> None:
    """The mediator takes the claimant into their private room: the firm's people, left in
    the joint room, are not recorded (their talk would go into a file the claimant may hear)
    until the mediator comes back; the pause shows in everyone's state."""
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    ids = ids_of(cast)
    peers = await in_room(live, people, cast)
    rid = (await peers["mediator"].act("meeting.record", mid))["recording_id"]
    for label in ("claimant", "rep1"):
        assert (await peers[label].act("meeting.consent", mid, recording_id=rid, agree=True))["ok"]
    clients = await record_tones(peers, mid, list(ids))
    host = host_of(live)
    try:
        moved = await peers["mediator"].act(
            "meeting.move", mid, room="caucus_claimant", side="claimant"
        )
        assert moved["ok"], moved
        went = await peers["mediator"].act(
            "meeting.move", mid, room="caucus_claimant", user_id=ids["mediator"]
        )
        assert went["ok"], went
        await peers["rep1"].until(lambda p: (recording_view(p) or {}).get("paused") is True)

        async def nobody_recorded() -> bool:
            room = host.rooms.get(rid)
            return room is not None and not room.pcs

        await until(nobody_recorded, seconds=10)
        refused = await peers["rep1"].act("meeting.signal", mid, to=0, payload=OFFER)
        assert refused["error"] == "invalid_target", refused
        (found,) = await recordings_of(live, mid)
        assert found.status == RecordingStatus.RECORDING  # paused, not stopped
        # The mediator's own view of the joint room's recording says so too.
        mediator_view = [r for r in peers["mediator"].last_state()["recordings"] if r["id"] == rid]
        assert mediator_view and mediator_view[0]["paused"] is True

        # Back together: the recording goes on (the firm's client may connect again).
        back = await peers["mediator"].act("meeting.move", mid, room="joint", side="all")
        assert back["ok"], back
        await peers["rep1"].until(lambda p: (recording_view(p) or {}).get("paused") is False)
        again = clients["rep1"]
        await again.close()
        again.connected_at = None
        await again.connect()
        await until(lambda: asyncio.sleep(0, again.connected_at), seconds=15)
        assert ids["rep1"] in host.rooms[rid].pcs
    finally:
        await close_all(clients)


async def test_a_caucus_recording_is_for_that_side_and_the_staff_only(
    live: Live, people: Crowd
) -> None:
    """The claimant's private room recorded with the claimant's consent: the claimant and
    the mediator hear it on the minutes page; the firm neither sees it listed nor can fetch
    it (404), and the firm's people were never asked."""
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    ids = ids_of(cast)
    peers = await in_room(live, people, cast)
    assert (
        await peers["mediator"].act("meeting.move", mid, room="caucus_claimant", side="claimant")
    )["ok"]
    assert (
        await peers["mediator"].act(
            "meeting.move", mid, room="caucus_claimant", user_id=ids["mediator"]
        )
    )["ok"]
    asked = await peers["mediator"].act("meeting.record", mid)
    rid = asked["recording_id"]
    await peers["claimant"].until(lambda p: (recording_view(p) or {}).get("you") == "asked")
    assert peers["rep1"].last_state()["recordings"] == []  # the firm is not told of it
    agreed = await peers["claimant"].act("meeting.consent", mid, recording_id=rid, agree=True)
    assert agreed["status"] == "recording", agreed
    clients = await record_tones(peers, mid, ["mediator", "claimant"])
    try:
        await asyncio.sleep(1.5)
        assert (await peers["mediator"].act("meeting.record_stop", mid, recording_id=rid))["ok"]
    finally:
        await close_all(clients)
    done = await sealed(live, rid)
    assert done.status == RecordingStatus.SEALED and done.room == "caucus_claimant"
    rows = await files_of(live, rid)
    assert {(m.party, m.visibility) for _, m in rows} == {("claimant", "mediator")}
    mix = next(m for f, m in rows if f.kind == "mix")
    file_url = f"/cases/{cast.case_id}/materials/{mix.id}"
    for person, sees in ((cast.claimant, True), (cast.mediator, True), (cast.rep1, False)):
        cookie = await session_cookie(live, person.login, person.password)
        async with httpx.AsyncClient(base_url=live.url, headers={"Cookie": cookie}) as http:
            page = await http.get(f"/meetings/{mid}/minutes")
            assert page.status_code == 200
            assert ('data-testid="recording-file-mix"' in page.text) is sees, person.login
            got = await http.get(file_url)
            assert got.status_code == (200 if sees else 404), (person.login, got.status_code)
            if sees:
                assert got.headers["content-type"].startswith("audio/ogg")
