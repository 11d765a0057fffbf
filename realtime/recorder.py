"""The recorder: a server-side WebRTC peer (aiortc) in a recorded room, and its sealing.

A recording (``portal.meetings.recording``) is made by the server process named in it. While
its status is ``recording``, the clients of the people in the room who agreed connect to the
recorder as to any other peer (its user id in signaling is ``RECORDER_PEER``, 0), through the
same ``meeting.signal`` event: they offer, the recorder answers with receive-only audio (and
video, if video is recorded). Each incoming track is written to its own file by aiortc's
``MediaRecorder`` (audio Opus/Ogg, video VP8/WebM) with timestamps from 0, and the wall time
of its first frame is appended to ``manifest.jsonl`` in the recording's folder, so that the
folder alone says how to place the tracks, even after a crash.

:class:`RecorderHost` (one per process, a background loop woken by every change) follows the
database: it starts the recorder of a recording its process must make, drops the connection
of anyone who may no longer be recorded (withdrew, left the room, went away), and once a
recording is ``sealing`` it stops it, mixes the room's audio into one file (``mixdown``), stores
every file encrypted in the blob store and attaches them to the case as evidence (each with its
leaf in the evidence log). Recordings of a process that died are taken over by a live one and
sealed as partial from what their folder holds; if nothing can be read, the recording is marked
lost and the mediator is told: never silently gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis

from portal.background import BackgroundLoop
from portal.db import utcnow
from portal.evidence.blobs import BlobStore
from portal.meetings import recording as recordings
from portal.meetings.recording_models import Recording, RecordingStatus, StopReason
from realtime.events import RECORDER_PEER, Signal

if TYPE_CHECKING:
    from aiortc import RTCIceServer

    from realtime.meetings import MeetingSockets
    from realtime.recorder_peer import RoomRecorder

log = logging.getLogger("jiefen.realtime.recorder")

MANIFEST = "manifest.jsonl"
_TRACK_NAME = re.compile(r"(?P<user>\d{1,12})-\d{1,9}-(?P<kind>audio|video)\.(?:ogg|webm)")
MIX = "mix.ogg"
CONTENT_TYPE = {"audio": "audio/ogg", "video": "video/webm", "mix": "audio/ogg"}


@dataclass(frozen=True)
class _Found:
    path: Path
    kind: str
    user_id: int | None
    start: float
    duration: float


# A recording's file may be far larger than an upload (hours of video).
MAX_FILE = 64 * 1024**3
# Received for longer than this past the stop: cut (the recorder stops within a second or so).
_SLACK = 0.05


def _trimmed(found: _Found, until: float) -> _Found:
    """The track without what it holds past ``until``."""
    keep = until - found.start
    if found.duration <= keep + _SLACK:
        return found
    from portal.meetings import mixdown  # PyAV, loaded when a recording is sealed

    out = found.path.with_name("cut-" + found.path.name)
    mixdown.cut(found.path, keep, out)
    duration = mixdown.probe_duration(out)
    return _Found(out, found.kind, found.user_id, found.start, duration or 0.0)


def _read_manifest(directory: Path) -> list[dict[str, Any]]:
    path = directory / MANIFEST
    if not path.exists():
        return []
    entries = []
    # A line cut off by a crash, or otherwise damaged, is left out (and its file reported).
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if (
                isinstance(entry, dict)
                and isinstance(entry.get("file"), str)
                and isinstance(entry.get("start"), (int, float))
                and not isinstance(entry.get("start"), bool)
            ):
                entries.append(entry)
    return entries


def prepare(
    directory: Path, blobs: BlobStore, until: float | None = None
) -> tuple[list[recordings.Sealed], str]:
    """Read what the recording's folder holds (after a crash too), cut every track at
    ``until`` (the Unix time the recording stopped: what came after a withdrawal is not
    kept), make the room's mix, store every readable file in the blob store. Returns the
    files and, if anything could not be read, what (for the mediator). Runs in a worker
    thread."""
    from portal.meetings import mixdown  # PyAV, loaded when a recording is sealed

    found: list[_Found] = []
    problems: list[str] = []
    for entry in _read_manifest(directory):
        path = directory / Path(entry["file"]).name
        duration = mixdown.probe_duration(path) if path.exists() else None
        if duration is None:
            problems.append(f"{path.name}: unreadable")
            continue
        kind = "video" if entry.get("kind") == "video" else "audio"
        user = entry.get("user_id")
        found.append(
            _Found(
                path, kind, user if isinstance(user, int) else None, float(entry["start"]), duration
            )
        )
    # Track files the manifest does not name (its line was lost in a crash): kept, placed at
    # the start of the recording, and said so.
    named = {f.path.name for f in found} | {p.split(": ")[0] for p in problems}
    orphaned = [
        path
        for path in (sorted(directory.iterdir()) if directory.exists() else [])
        if _TRACK_NAME.fullmatch(path.name) and path.name not in named
    ]
    origin = min((f.start for f in found), default=0.0)
    for path in orphaned:
        duration = mixdown.probe_duration(path)
        if duration is None:
            problems.append(f"{path.name}: unreadable")
            continue
        match = _TRACK_NAME.fullmatch(path.name)
        assert match is not None
        found.append(_Found(path, match["kind"], int(match["user"]), origin, duration))
        problems.append(f"{path.name}: its start time was lost; placed at the start")
    if not found:
        if not directory.exists():
            problems.append("the recording's folder is not on this server")
        return [], "; ".join(problems) or "nothing was recorded"
    if until is not None:
        found = [_trimmed(f, until) for f in found if f.start < until]
        if not found:
            return [], "; ".join([*problems, "nothing was recorded before it stopped"])
    origin = min(f.start for f in found)
    audio = [f for f in found if f.kind == "audio"]
    files: list[tuple[_Found, str]] = [(f, f.kind) for f in found]
    if audio:
        mix_path = directory / MIX
        try:
            length = mixdown.mix([mixdown.Track(f.path, f.start - origin) for f in audio], mix_path)
            files.insert(0, (_Found(mix_path, "mix", None, origin, length), "mix"))
        except Exception as exc:
            problems.append(f"mix: {exc}")
    sealed = []
    for f, kind in files:
        with f.path.open("rb") as source:
            blob = blobs.put_stream(source, max_size=MAX_FILE)
        sealed.append(
            recordings.Sealed(
                kind=kind,
                user_id=f.user_id,
                sha256=blob.sha256,
                size=blob.size,
                content_type=CONTENT_TYPE[kind],
                filename=f"recording-{directory.name}-{f.path.name}",
                offset_ms=round((f.start - origin) * 1000),
                duration_ms=round(f.duration * 1000),
            )
        )
    return sealed, "; ".join(problems)


IceServers = Callable[[], list["RTCIceServer"]]
# Sealing that fails this many times in a row is given up: the recording is reported lost
# (its folder is kept for an administrator).
SEAL_ATTEMPTS = 3


class RecorderHost(BackgroundLoop):
    """This process's recorders, following the recordings in the database (see the module)."""

    name = "jiefen-recorder"
    log = log

    def __init__(
        self,
        sockets: MeetingSockets,
        *,
        blobs: BlobStore,
        root: Path,
        limit: int,
        redis_url: str | None = None,
        redis_prefix: str = "jiefen",
        ice: IceServers | None = None,
        interval: float = 1.0,
        stale: float = 45.0,
    ) -> None:
        super().__init__(interval)
        self.busy_interval = interval
        self.idle_interval = max(interval, 5.0)
        self.sockets = sockets
        self.blobs = blobs
        self.root = root
        self.limit = limit
        self.stale = timedelta(seconds=stale)
        self._ice = ice or list
        self.rooms: dict[int, RoomRecorder] = {}
        self._sealing: dict[int, asyncio.Task[None]] = {}
        # Recordings this process stopped: a late offer never makes a recorder for one again.
        self._finished: set[int] = set()
        self._attempts: dict[int, int] = {}
        self._rounds = 0
        # With several processes, signaling for a recorder on another process goes to it
        # through Redis, on the channel named after that process; a change that concerns
        # recordings wakes every process's loop through the broadcast channel.
        self._redis_url = redis_url
        self._prefix = f"{redis_prefix}:recorder"
        self._broadcast = f"{self._prefix}:all"
        self._redis: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._nudges: set[asyncio.Task[None]] = set()

    def _channel(self, process: str) -> str:
        return f"{self._prefix}:{process}"

    # The recorder has failed when, for this long, nobody who should be recorded has a
    # working connection to it (their clients reconnect well within it after a blip).
    lost_after = 15.0

    async def _listen(self) -> None:
        """Deliver the signaling that other processes forward to this one's recorders."""
        assert self._redis is not None
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel(self.process), self._broadcast)
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                try:
                    data = json.loads(message["data"])
                    if data.get("wake"):
                        self.wake()
                        continue
                    await self._deliver(
                        int(data["recording_id"]), int(data["user_id"]), dict(data["payload"])
                    )
                except Exception:
                    log.exception("forwarded recorder signaling could not be delivered")
        except Exception:
            log.exception("the recorder's Redis subscription failed; subscribing again")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            # The next round subscribes again (unless the host is stopping).
            if self._redis is not None:
                with contextlib.suppress(Exception):
                    await self._redis.aclose()
                self._redis = None

    async def _ensure_listening(self) -> None:
        if self._redis_url and self._redis is None:
            self._redis = Redis.from_url(self._redis_url)
            self._listener = asyncio.ensure_future(self._listen())

    def nudge(self) -> None:
        """Something about recordings changed: this process's loop runs now, and (through
        Redis) every other process's, so the one that records acts within moments."""
        self.wake()
        if self._redis is not None:
            task = asyncio.ensure_future(self._publish_wake())
            self._nudges.add(task)
            task.add_done_callback(self._nudges.discard)

    async def _publish_wake(self) -> None:
        with contextlib.suppress(Exception):
            if self._redis is not None:
                await self._redis.publish(self._broadcast, json.dumps({"wake": 1}))

    @property
    def process(self) -> str:
        return self.sockets.process

    async def run_once(self) -> bool:
        await self._ensure_listening()
        self._rounds += 1
        if self._rounds % 10 == 1:
            async with self.sockets._db() as (db, _):
                taken = await recordings.orphans(db, self.process, utcnow(), self.stale)
            for recording_id in taken:
                log.warning("recording %s: its server stopped; sealing what was made", recording_id)
        async with self.sockets._db() as (db, _):
            mine = await recordings.mine(db, self.process)
        for found in mine:
            if found.status == RecordingStatus.ASKING:
                async with self.sockets._db() as (db, _):
                    await recordings.evaluate(db, found.id)
            elif found.status == RecordingStatus.RECORDING:
                await self._follow(found)
            elif found.status == RecordingStatus.SEALING and found.id not in self._sealing:
                self._finished.add(found.id)
                task = asyncio.ensure_future(self._seal(found.id))
                self._sealing[found.id] = task
        # Every second while there is something to follow, else every few seconds (every
        # change wakes the loop anyway).
        busy = bool(mine or self.rooms or self._sealing)
        self.interval = self.busy_interval if busy else self.idle_interval
        # Recorders whose recording was stopped elsewhere, or is gone (read afresh: a
        # recorder may have been made for a recording that started after ``mine`` was read).
        current = {r.id for r in mine if r.status == RecordingStatus.RECORDING}
        for recording_id in set(self.rooms) - current - set(self._sealing):
            async with self.sockets._db() as (db, _):
                now = await db.get(Recording, recording_id, populate_existing=True)
            if now is not None and now.status == RecordingStatus.RECORDING:
                continue
            self._finished.add(recording_id)
            room = self.rooms.pop(recording_id, None)
            if room is not None:
                await room.stop()
        return False

    def _room(self, found: Recording) -> RoomRecorder | None:
        """The recorder of a recording this process makes (None once it was stopped)."""
        if found.id in self._finished:
            return None
        room = self.rooms.get(found.id)
        if room is None:
            meeting_id = found.meeting_id

            async def send(user_id: int, data: dict[str, Any]) -> None:
                await self._send(meeting_id, user_id, data)

            from realtime.recorder_peer import RoomRecorder  # aiortc: on the first recording

            room = RoomRecorder(
                found.id,
                self.root / str(found.id),
                video=found.video,
                send=send,
                ice=self._ice(),
            )
            self.rooms[found.id] = room
        return room

    async def _follow(self, found: Recording) -> None:
        room = self._room(found)
        if room is None:
            return
        # Only connections that were there before the read: one that came meanwhile was
        # checked when its offer came.
        before = dict(room.pcs)
        async with self.sockets._db() as (db, _):
            allowed = await recordings.recorded_peers(db, found)
        for user_id, pc in before.items():
            if user_id not in allowed and room.pcs.get(user_id) is pc:
                await room.drop(user_id)
        working = any(pc.connectionState == "connected" for pc in room.pcs.values())
        if working or not allowed:
            room.lost_since = None
            return
        now = time.monotonic()
        if room.lost_since is None:
            room.lost_since = now
        elif now - room.lost_since >= self.lost_after:
            log.warning("recording %s: no connection to the recorder works; stopping", found.id)
            async with self.sockets._db() as (db, _):
                await recordings.failed(db, found.id, StopReason.FAILED)
            self.wake()

    async def _send(self, meeting_id: int, user_id: int, data: dict[str, Any]) -> None:
        """The recorder's signaling to one participant, through their sockets."""
        from portal.meetings import service

        async with self.sockets._db() as (db, _):
            seat = await service._seat(db, meeting_id, user_id)
        if seat is not None:
            await self.sockets.sio.emit(
                Signal.EVENT,
                Signal(meeting_id, RECORDER_PEER, data).payload(),
                room=service.seat_channel(meeting_id, seat.id),
            )

    async def signal(self, recording_id: int, user_id: int, payload: dict[str, Any]) -> bool:
        """A participant's signaling for the recorder (checked by the caller): handed to it
        here, or forwarded to the process that records. False if that cannot be done."""
        if recording_id in self.rooms:
            return await self._deliver(recording_id, user_id, payload)
        async with self.sockets._db() as (db, _):
            found = await db.get(Recording, recording_id)
        if found is None or found.status != RecordingStatus.RECORDING:
            return False
        if found.process == self.process:
            return await self._deliver(recording_id, user_id, payload)
        if not self._redis_url:
            return False
        await self._ensure_listening()
        assert self._redis is not None
        message = {"recording_id": recording_id, "user_id": user_id, "payload": payload}
        listeners = await self._redis.publish(self._channel(found.process), json.dumps(message))
        return bool(listeners)

    async def _deliver(self, recording_id: int, user_id: int, payload: dict[str, Any]) -> bool:
        room = self.rooms.get(recording_id)
        if room is None:
            async with self.sockets._db() as (db, _):
                found = await db.get(Recording, recording_id)
            if (
                found is None
                or found.process != self.process
                or found.status != RecordingStatus.RECORDING
            ):
                return False
            room = self._room(found)
            if room is None:
                return False
        await room.signal(user_id, payload)
        return True

    async def _seal(self, recording_id: int) -> None:
        try:
            room = self.rooms.pop(recording_id, None)
            if room is not None:
                await room.stop()
            async with self.sockets._db() as (db, _):
                found = await db.get(Recording, recording_id)
                stopped = found.stopped_at if found is not None else None
            directory = self.root / str(recording_id)
            until = stopped.timestamp() if stopped is not None else None
            files, problem = await asyncio.to_thread(prepare, directory, self.blobs, until)
            if problem:
                log.warning("recording %s: %s", recording_id, problem)
            async with self.sockets._db() as (db, _):
                added = await recordings.seal(db, recording_id, files, problem, self.process)
            # The folder goes once its files are evidence; unreadable ones are kept with it.
            if added and "unreadable" not in problem:
                await asyncio.to_thread(shutil.rmtree, directory, True)
            self._attempts.pop(recording_id, None)
        except Exception as exc:
            tries = self._attempts[recording_id] = self._attempts.get(recording_id, 0) + 1
            log.exception("recording %s: sealing failed (attempt %d)", recording_id, tries)
            if tries >= SEAL_ATTEMPTS:
                with contextlib.suppress(Exception):
                    async with self.sockets._db() as (db, _):
                        await recordings.seal(
                            db, recording_id, [], f"sealing failed: {exc}", self.process
                        )
            else:
                await asyncio.sleep(5 * tries)
        finally:
            self._sealing.pop(recording_id, None)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the loop, and seal what this process was recording (as interrupted: the
        session goes on without a recorder until the mediator asks again); its requests for
        consent are cancelled."""
        await super().stop(grace)
        redis, self._redis = self._redis, None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()
        with contextlib.suppress(Exception):
            async with self.sockets._db() as (db, _):
                await recordings.cancel_asking(db, self.process)
        for recording_id in list(self.rooms):
            with contextlib.suppress(Exception):
                async with self.sockets._db() as (db, _):
                    await recordings.failed(db, recording_id, StopReason.INTERRUPTED)
                self._finished.add(recording_id)
                self._sealing.setdefault(
                    recording_id, asyncio.ensure_future(self._seal(recording_id))
                )
        for task in list(self._sealing.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), grace)
        for room in list(self.rooms.values()):
            await room.stop()
        self.rooms.clear()
