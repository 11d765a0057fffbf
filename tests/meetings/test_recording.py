"""Recording with consent: real aiortc participants, each sending a tone of its own frequency,
connect to the server's recorder through the portal's signaling; the sealed files are decoded
and checked (length, which tone is in which track, the mix), found in the evidence log, and
their receipts verified offline."""

from __future__ import annotations

import array
import asyncio
import fractions
import io
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from sqlalchemy import select

from portal.cases.models import CaseMaterial
from portal.evidence import log
from portal.evidence.integrity import verify_log
from portal.evidence.models import LogLeaf
from portal.evidence.service import forget_person
from portal.evidence.verify.leaf import decode_leaf
from portal.evidence.verify.receipt import verify_receipt
from portal.meetings.recording_models import (
    Recording,
    RecordingConsent,
    RecordingFile,
    RecordingStatus,
    StopReason,
)
from realtime.recorder import RecorderHost
from realtime.recorder_peer import VIDEO_FPS, _Rebased
from tests.conftest import REDIS_URL, redis_available, require_service, truncate_all
from tests.factories import _state as state_of
from tests.meetings.conftest import Cast, Crowd, Peer, build_cast
from tests.meetings.test_media import SmallVideo
from tests.realtime.test_socket_auth import Live, serve

RATE = 48000


class Tone(MediaStreamTrack):
    """A sine tone at ``freq`` Hz, 20 ms frames in real time."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self.freq = freq
        self._sent = 0
        self._started: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
        wait = self._started + self._sent / RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = array.array(
            "h",
            (
                int(6000 * math.sin(2 * math.pi * self.freq * (self._sent + i) / RATE))
                for i in range(960)
            ),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, RATE)
        self._sent += 960
        return frame


class Recorded:
    """One person's client as far as recording goes: answers when asked, and once the room
    is recorded and they agreed, connects to the recorder (peer 0) sending their tone."""

    def __init__(self, peer: Peer, meeting_id: int, freq: float, video: bool = False) -> None:
        self.peer, self.meeting_id, self.freq, self.video = peer, meeting_id, freq, video
        self.pc: RTCPeerConnection | None = None
        self.connected_at: float | None = None
        assert peer.client is not None
        peer.client.on("meeting.signal", self._on_signal)

    async def _on_signal(self, data: dict[str, Any]) -> None:
        self.peer.events.append(("meeting.signal", data))
        description = data["payload"].get("description")
        if data["from_user_id"] == 0 and description and self.pc is not None:
            await self.pc.setRemoteDescription(RTCSessionDescription(**description))

    async def connect(self) -> None:
        pc = RTCPeerConnection()
        self.pc = pc
        pc.addTrack(Tone(self.freq))
        if self.video:
            pc.addTrack(SmallVideo())

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()

        await pc.setLocalDescription(await pc.createOffer())
        local = pc.localDescription
        ack = await self.peer.act(
            "meeting.signal",
            self.meeting_id,
            to=0,
            payload={"description": {"type": local.type, "sdp": local.sdp}},
        )
        assert ack["ok"], ack

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()


def recording_view(peer: Peer) -> dict[str, Any] | None:
    shown = peer.last_state()["recordings"]
    return shown[0] if shown else None


def pcm(data: bytes) -> array.array[int]:
    """The audio of an Ogg file as 48 kHz mono 16-bit samples."""
    out = array.array("h")
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    with av.open(io.BytesIO(data)) as container:
        for frame in container.decode(container.streams.audio[0]):
            for f in resampler.resample(frame):
                out.frombytes(bytes(f.planes[0])[: f.samples * 2])
    return out


def power(samples: array.array[int], freq: float) -> float:
    """The power of one frequency in the samples (the Goertzel algorithm)."""
    k = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for v in samples:
        s1, s2 = v + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / max(1, len(samples)) ** 2


def loudest(samples: array.array[int], freqs: list[float]) -> float:
    middle = samples[len(samples) // 4 : len(samples) // 4 + RATE // 2]
    return max(freqs, key=lambda f: power(middle, f))


def host_of(live: Live) -> RecorderHost:
    host = state_of(live.app).meeting_sockets.recorder
    assert isinstance(host, RecorderHost)
    return host


async def until(check: Callable[[], Any], seconds: float = 20.0) -> Any:
    for _ in range(int(seconds / 0.05)):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met")


async def in_room(live: Live, people: Crowd, cast: Cast) -> dict[str, Peer]:
    peers = {
        "mediator": await people.peer("mediator", cast.mediator),
        "claimant": await people.peer("claimant", cast.claimant),
        "rep1": await people.peer("rep1", cast.rep1),
    }
    mid = cast.meeting_id
    assert (await peers["mediator"].act("meeting.join", mid))["ok"]
    for label, person in (("claimant", cast.claimant), ("rep1", cast.rep1)):
        assert (await peers[label].act("meeting.join", mid))["ok"]
        assert (await peers["mediator"].act("meeting.admit", mid, user_id=person.id))["ok"]
        await peers[label].until_state(state="admitted")
    return peers


async def sealed(live: Live, recording_id: int) -> Recording:
    async def done() -> Recording | None:
        async with state_of(live.app).db() as db:
            found = await db.get(Recording, recording_id)
            ok = found is not None and found.status in (
                RecordingStatus.SEALED,
                RecordingStatus.LOST,
            )
            return found if ok else None

    result: Recording = await until(done, seconds=30)
    return result


async def test_consented_recording_of_three_tones_is_sealed_and_verifiable(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app, mode="voice")
    mid = cast.meeting_id
    peers = await in_room(live, people, cast)
    freqs = {"mediator": 440.0, "claimant": 1000.0, "rep1": 1800.0}
    ids = {"mediator": cast.mediator.id, "claimant": cast.claimant.id, "rep1": cast.rep1.id}
    clients = {label: Recorded(peers[label], mid, freqs[label]) for label in peers}
    try:
        # Only the mediator may ask.
        refused = await peers["claimant"].act("meeting.record", mid)
        assert refused["error"] == "forbidden"
        asked = await peers["mediator"].act("meeting.record", mid)
        assert asked["ok"] and asked["status"] == "asking", asked
        rid = asked["recording_id"]
        await peers["claimant"].until(lambda p: (recording_view(p) or {}).get("you") == "asked")
        view = recording_view(peers["claimant"])
        assert view is not None and set(view["waiting"]) == {"张三", "公司代表甲"}
        # Nobody is recorded before everyone agreed: the recorder refuses them.
        offer = {"description": {"type": "offer", "sdp": "v=0"}}
        early = await peers["mediator"].act("meeting.signal", mid, to=0, payload=offer)
        assert early["error"] == "invalid_target"
        assert (await peers["claimant"].act("meeting.consent", mid, recording_id=rid, agree=True))[
            "status"
        ] == "asking"
        assert (await peers["rep1"].act("meeting.consent", mid, recording_id=rid, agree=True))[
            "status"
        ] == "recording"
        for label in peers:
            await peers[label].until(
                lambda p: (recording_view(p) or {}).get("status") == "recording"
            )
            await clients[label].connect()
        for client in clients.values():
            await until(lambda c=client: asyncio.sleep(0, c.connected_at), seconds=15)
        started = max(c.connected_at or 0 for c in clients.values())
        await asyncio.sleep(3)
        stopped = await peers["mediator"].act("meeting.record_stop", mid, recording_id=rid)
        assert stopped["ok"]
        real = time.monotonic() - started
    finally:
        for client in clients.values():
            await client.close()

    done = await sealed(live, rid)
    assert done.status == RecordingStatus.SEALED and not done.partial, done.problem
    assert done.reason == StopReason.STOPPED
    state = state_of(live.app)
    async with state.db() as db:
        rows = list(
            await db.execute(
                select(RecordingFile, CaseMaterial)
                .join(CaseMaterial, CaseMaterial.id == RecordingFile.material_id)
                .where(RecordingFile.recording_id == rid)
            )
        )
        answers = list(
            await db.scalars(select(RecordingConsent).where(RecordingConsent.recording_id == rid))
        )
    assert {(a.user_id, a.agreed) for a in answers} == {(i, True) for i in ids.values()}
    kinds = sorted((f.kind, f.user_id or 0) for f, _ in rows)
    assert kinds == sorted([("mix", 0)] + [("audio", i) for i in ids.values()])
    by_user = {f.user_id: (f, m) for f, m in rows}
    for label, user_id in ids.items():
        f, m = by_user[user_id]
        assert m.kind == "recording" and m.content_type == "audio/ogg"
        assert m.visibility == "parties" and m.leaf_id is not None
        data = state.blobs.read_all(m.sha256)
        samples = pcm(data)
        # Each lasts as long as the recording did (within 10%, or half a second: how long the
        # connections take to start varies with the machine's load), and carries its own tone.
        slack = max(0.1 * real, 0.5)
        assert abs(len(samples) / RATE - real) <= slack, (label, len(samples) / RATE, real)
        assert abs(f.duration_ms / 1000 - real) <= slack
        assert loudest(samples, list(freqs.values())) == freqs[label], label
    _, mix_material = by_user[None]
    mixed = pcm(state.blobs.read_all(mix_material.sha256))
    middle = mixed[len(mixed) // 3 : len(mixed) // 3 + RATE // 2]
    strengths = [power(middle, f) for f in freqs.values()]
    assert min(strengths) > 0.1 * max(strengths), strengths  # every voice is in the mix
    # Each file is in the evidence log, and its receipt verifies against its bytes.
    await state.sequencer.run_once()
    async with state.db() as db:
        for _, m in rows:
            assert m.leaf_id is not None
            receipt = await log.make_leaf_receipt(db, m.leaf_id, state.log_key)
            data = state.blobs.read_all(m.sha256)
            report = verify_receipt(receipt, data, [state.log_key.vkey])
            assert report.trusted and report.check("file").ok is True, report.verdict()
            assert not verify_receipt(receipt, data[:-1], [state.log_key.vkey]).ok
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert result.ok, result.problem
        # The recording itself is a leaf of its own: its files and every consent answer,
        # people only as commitments.
        assert done.leaf_id is not None
        stored = await db.get(LogLeaf, done.leaf_id)
        assert stored is not None and stored.type == "recording"
        raw = bytes(stored.data)
        leaf = decode_leaf(raw)
        body: Any = leaf.body
        assert (body["meeting"], body["recording"], body["room"]) == (mid, rid, "joint")
        assert (body["partial"], body["reason"]) == ("no", "stopped")
        assert sorted(f["sha256"] for f in body["files"]) == sorted(m.sha256 for _, m in rows)
        assert [c["agreed"] for c in body["consents"]] == ["yes", "yes", "yes"]
        assert all(len(c["person"]) == 64 for c in body["consents"])
        assert "张三" not in raw.decode() and "公司代表" not in raw.decode()
        receipt = await log.make_leaf_receipt(db, done.leaf_id, state.log_key)
        report = verify_receipt(receipt, None, [state.log_key.vkey])
        assert report.trusted, report.verdict()
        assert f"recording {rid} of session {mid}" in report.check("leaf").message_en
        # A consent changed afterwards in the database is found by the full check.
        first = await db.scalar(
            select(RecordingConsent)
            .where(RecordingConsent.recording_id == rid)
            .order_by(RecordingConsent.id)
        )
        assert first is not None
        first.agreed = False
        await db.flush()
        tampered = await verify_log(db, state.blobs, state.log_key, record=False)
        assert not tampered.ok and f"recording {rid}" in (tampered.problem or "")
        await db.rollback()
        # Erasing a participant's secret leaves the log verifiable.
        assert await forget_person(db, cast.claimant.id)
        await db.commit()
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert result.ok, result.problem
    # The working folder is gone once sealed.
    assert not (host_of(live).root / str(rid)).exists()


async def test_a_participant_on_another_server_process_is_recorded_through_redis(
    db_url: str, tmp_path: Path
) -> None:
    """The mediator (and so the recorder) on one server, the claimant on another: the
    claimant's signaling reaches the recorder through Redis, and both voices are sealed."""
    if not redis_available():
        require_service("Redis", "nothing listens at 127.0.0.1:6379")
    async with (
        serve(db_url, tmp_path / "a", redis_url=REDIS_URL) as first,
        serve(db_url, tmp_path / "b", redis_url=REDIS_URL) as second,
    ):
        cast = await build_cast(first.app, mode="voice")
        mid = cast.meeting_id
        one, two = Crowd(first), Crowd(second)
        clients: list[Recorded] = []
        try:
            m = await one.peer("mediator", cast.mediator)
            c = await two.peer("claimant", cast.claimant)
            for origin, target, user_id in (
                (first, c, cast.claimant.id),
                (second, m, cast.mediator.id),
            ):
                sio = state_of(origin.app).sio
                for _ in range(100):
                    await sio.emit("probe", {}, room=f"user:{user_id}")
                    await asyncio.sleep(0.05)
                    if target.received("probe"):
                        break
                else:
                    raise AssertionError("Redis never carried a message between the servers")
            assert (await m.act("meeting.join", mid))["ok"]
            assert (await c.act("meeting.join", mid))["ok"]
            assert (await m.act("meeting.admit", mid, user_id=cast.claimant.id))["ok"]
            await c.until_state(state="admitted")
            asked = await m.act("meeting.record", mid)
            rid = asked["recording_id"]
            await c.until(lambda p: (recording_view(p) or {}).get("you") == "asked")
            agreed = await c.act("meeting.consent", mid, recording_id=rid, agree=True)
            assert agreed["status"] == "recording"
            clients = [Recorded(m, mid, 440.0), Recorded(c, mid, 1000.0)]
            for peer in (m, c):
                await peer.until(lambda p: (recording_view(p) or {}).get("status") == "recording")
            for client in clients:
                await client.connect()
            for client in clients:
                await until(lambda c=client: asyncio.sleep(0, c.connected_at), seconds=15)
            await asyncio.sleep(2)
            assert (await m.act("meeting.record_stop", mid, recording_id=rid))["ok"]
        finally:
            for client in clients:
                await client.close()
            await one.close()
            await two.close()
        done = await sealed(first, rid)
        assert done.status == RecordingStatus.SEALED, done.problem
        state = state_of(first.app)
        async with state.db() as db:
            rows = list(
                await db.execute(
                    select(RecordingFile, CaseMaterial)
                    .join(CaseMaterial, CaseMaterial.id == RecordingFile.material_id)
                    .where(RecordingFile.recording_id == rid, RecordingFile.kind == "audio")
                )
            )
        tones = {
            f.user_id: loudest(pcm(state.blobs.read_all(m.sha256)), [440.0, 1000.0])
            for f, m in rows
        }
        assert tones == {cast.mediator.id: 440.0, cast.claimant.id: 1000.0}
    await truncate_all(db_url)


async def test_video_is_recorded_when_chosen(live: Live, people: Crowd) -> None:
    """A video session recorded with video: each participant's picture is a VP8/WebM file
    that decodes, as long as the recording, beside their audio."""
    cast = await build_cast(live.app, mode="video")
    mid = cast.meeting_id
    m = await people.peer("mediator", cast.mediator)
    c = await people.peer("claimant", cast.claimant)
    assert (await m.act("meeting.join", mid))["ok"]
    assert (await c.act("meeting.join", mid))["ok"]
    assert (await m.act("meeting.admit", mid, user_id=cast.claimant.id))["ok"]
    await c.until_state(state="admitted")
    asked = await m.act("meeting.record", mid, video=True)
    rid = asked["recording_id"]
    await c.until(lambda p: (recording_view(p) or {}).get("video") is True)
    agreed = await c.act("meeting.consent", mid, recording_id=rid, agree=True)
    assert agreed["status"] == "recording"
    clients = [Recorded(m, mid, 440.0, video=True), Recorded(c, mid, 1000.0, video=True)]
    try:
        for peer in (m, c):
            await peer.until(lambda p: (recording_view(p) or {}).get("status") == "recording")
        for client in clients:
            await client.connect()
        for client in clients:
            await until(lambda c=client: asyncio.sleep(0, c.connected_at), seconds=15)
        started = max(client.connected_at or 0 for client in clients)
        await asyncio.sleep(5)
        assert (await m.act("meeting.record_stop", mid, recording_id=rid))["ok"]
        real = time.monotonic() - started
    finally:
        for client in clients:
            await client.close()
    done = await sealed(live, rid)
    assert done.status == RecordingStatus.SEALED and done.video, done.problem
    state = state_of(live.app)
    async with state.db() as db:
        rows = list(
            await db.execute(
                select(RecordingFile, CaseMaterial)
                .join(CaseMaterial, CaseMaterial.id == RecordingFile.material_id)
                .where(RecordingFile.recording_id == rid)
            )
        )
    videos = [(f, m) for f, m in rows if f.kind == "video"]
    assert sorted(f.user_id or 0 for f, _ in videos) == sorted([cast.mediator.id, cast.claimant.id])
    assert {f.kind for f, _ in rows} == {"mix", "audio", "video"}
    for f, material in videos:
        assert material.content_type == "video/webm"
        with av.open(io.BytesIO(state.blobs.read_all(material.sha256))) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "vp8"
            frames = list(container.decode(stream))
        assert frames and (frames[0].width, frames[0].height) == (160, 120)
        # 15 frames a second were sent: about that many per second are in the file.
        assert 0.6 * 15 * real <= len(frames) <= 1.2 * 15 * real, (len(frames), real)
        # (within 15%, or 1.2 s for the video connection's start under load: CI once took 0.93)
        assert abs(f.duration_ms / 1000 - real) <= max(0.15 * real, 1.2), (f.duration_ms, real)


async def test_video_is_thinned_to_fifteen_frames_a_second() -> None:
    """A camera sending 24 frames a second is recorded at 15, evenly, timestamps from 0."""

    class Camera:
        kind = "video"

        def __init__(self) -> None:
            self.sent = 0

        async def recv(self) -> av.VideoFrame:
            frame = av.VideoFrame(width=16, height=16, format="yuv420p")
            frame.pts = 777 + self.sent * 90000 // 24
            frame.time_base = fractions.Fraction(1, 90000)
            self.sent += 1
            return frame

    camera = Camera()
    started: list[float] = []
    thinned = _Rebased(camera, started.append, fps=VIDEO_FPS)  # type: ignore[arg-type]
    kept = [(await thinned.recv()).pts for _ in range(45)]
    assert kept[0] == 0 and len(started) == 1
    seconds = kept[-1] / 90000
    assert 14.5 <= (len(kept) - 1) / seconds <= 15.5, (len(kept), seconds)
    assert 45 / camera.sent == pytest.approx(15 / 24, abs=0.03)
    gaps = {b - a for a, b in itertools.pairwise(kept)}
    assert gaps <= {3750, 7500}  # one or two camera frames apart, never more
