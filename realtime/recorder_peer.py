"""The recorder's WebRTC side (aiortc): its peer connections in a recorded room, and each
received track written to a file (see :mod:`realtime.recorder`).

Apart from the recorder's host so that aiortc and PyAV (about 35 MB) are loaded by the first
recording a process makes, not by every worker at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRecorder
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import candidate_from_sdp

from realtime.recorder import MANIFEST

log = logging.getLogger("jiefen.realtime.recorder")
SUFFIX = {"audio": ".ogg", "video": ".webm"}


# Video is kept at up to 15 frames a second and encoded for speed: libvpx's defaults take about
# 20-40 ms of CPU per 640x360 frame on this kind of machine, so a session's three cameras at
# 24 fps would need more than a core and drop frames (bench/recording.py); with the realtime
# deadline and the fastest speed setting a frame takes about 3.5 ms.
VIDEO_FPS = 15
VP8_OPTIONS = {"deadline": "realtime", "cpu-used": "16"}


class _Rebased(MediaStreamTrack):
    """A received track whose frames' timestamps start at 0 (video thinned to ``fps``);
    tells when the first came."""

    def __init__(
        self, source: MediaStreamTrack, started: Callable[[float], None], fps: int | None = None
    ) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._started = started
        self._first: int | None = None
        self._fps = fps
        self._next: float | None = None

    async def recv(self) -> Any:
        while True:
            frame = await self._source.recv()
            if frame.pts is None:
                return frame
            if self._first is None:
                self._first = frame.pts
                self._started(time.time())
            frame.pts -= self._first
            if self._fps is None or frame.time_base is None:
                return frame
            at = float(frame.pts * frame.time_base)
            step = 1 / self._fps
            due = self._next
            if due is None or at >= due - 0.002:
                # On a schedule of 1/fps (24 fps in, 15 out: 15 of every 24 kept), starting
                # again after a pause.
                self._next = (at if due is None or at > due + step else due) + step
                return frame


class _TrackFile:
    """One participant's track written to a file as it arrives."""

    def __init__(self, directory: Path, user_id: int, number: int, track: MediaStreamTrack):
        self.kind = track.kind
        self.name = f"{user_id}-{number}-{track.kind}{SUFFIX[track.kind]}"
        self.user_id = user_id
        self._directory = directory
        self._recorder = MediaRecorder(str(directory / self.name))
        video = track.kind == "video"
        source = _Rebased(track, self._note, fps=VIDEO_FPS if video else None)
        self._recorder.addTrack(source)
        if video:
            # MediaRecorder has no parameter for the encoder's options: set them on the stream
            # it made, before its first frame opens the encoder (aiortc is pinned).
            contexts = getattr(self._recorder, "_MediaRecorder__tracks", {})
            for context in contexts.values():
                context.stream.codec_context.options = dict(VP8_OPTIONS)
        self._stopped = False
        self.task: asyncio.Future[None] | None = None

    def _note(self, started: float) -> None:
        line = {"file": self.name, "user_id": self.user_id, "kind": self.kind, "start": started}
        with (self._directory / MANIFEST).open("a", encoding="utf-8") as manifest:
            manifest.write(json.dumps(line) + "\n")

    async def start(self) -> None:
        await self._recorder.start()

    async def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            try:
                await self._recorder.stop()
            except Exception:
                log.exception("closing %s failed", self.name)


Send = Callable[[int, dict[str, Any]], Awaitable[None]]


class RoomRecorder:
    """The recorder's peer connections in one recorded room, one per recorded participant."""

    def __init__(
        self,
        recording_id: int,
        directory: Path,
        *,
        video: bool,
        send: Send,
        ice: list[RTCIceServer] | None = None,
    ) -> None:
        self.recording_id = recording_id
        self.directory = directory
        self.video = video
        self._send = send
        self._ice = ice or []
        self.pcs: dict[int, RTCPeerConnection] = {}
        self._files: dict[int, list[_TrackFile]] = {}
        self._count = 0
        # Since when nobody who should be recorded has a working connection (None: someone has).
        self.lost_since: float | None = None
        self.closed = False
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def users(self) -> set[int]:
        return set(self.pcs)

    async def signal(self, user_id: int, payload: dict[str, Any]) -> None:
        if self.closed:
            return
        description = payload.get("description")
        if isinstance(description, dict):
            if description.get("type") == "offer":
                await self._answer(user_id, description)
            return  # the recorder never offers, so it never receives an answer
        candidate = payload.get("candidate")
        pc = self.pcs.get(user_id)
        if pc is None or not isinstance(candidate, dict):
            return
        line = str(candidate.get("candidate") or "")
        if not line:
            return  # the end of candidates
        try:
            found = candidate_from_sdp(
                line.split(":", 1)[1] if line.startswith("candidate:") else line
            )
        except (AssertionError, IndexError, ValueError):
            return
        found.sdpMid = candidate.get("sdpMid")
        found.sdpMLineIndex = candidate.get("sdpMLineIndex")
        with contextlib.suppress(Exception):
            await pc.addIceCandidate(found)

    async def _answer(self, user_id: int, description: dict[str, Any]) -> None:
        await self.drop(user_id)  # a new offer: the client started over
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self._ice))
        self.pcs[user_id] = pc
        files = self._files.setdefault(user_id, [])
        kinds: set[str] = set()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            # One microphone and one camera per person: more tracks in an offer are ignored.
            if (track.kind == "video" and not self.video) or track.kind in kinds:
                return
            kinds.add(track.kind)
            self._count += 1
            file = _TrackFile(self.directory, user_id, self._count, track)
            files.append(file)
            file.task = asyncio.ensure_future(file.start())

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            # Failed, or closed by the other side (aiortc reports a peer gone silent as
            # closed once ICE consent expires): their track so far is kept, and their client
            # starts a new connection if it still may be recorded.
            if pc.connectionState in ("failed", "closed") and self.pcs.get(user_id) is pc:
                log.warning(
                    "recording %s: the connection of user %s was lost", self.recording_id, user_id
                )
                await self.drop(user_id)

        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=str(description.get("sdp", "")), type="offer")
            )
            for transceiver in pc.getTransceivers():
                wanted = transceiver.kind == "audio" or (transceiver.kind == "video" and self.video)
                transceiver.direction = "recvonly" if wanted else "inactive"
            await pc.setLocalDescription(await pc.createAnswer())
        except InvalidStateError:
            return  # dropped meanwhile (the recording stopped, or they left)
        except Exception:
            log.warning("recording %s: unusable offer from user %s", self.recording_id, user_id)
            if self.pcs.get(user_id) is pc:
                await self.drop(user_id)
            return
        local = pc.localDescription
        await self._send(user_id, {"description": {"type": local.type, "sdp": local.sdp}})

    async def drop(self, user_id: int) -> None:
        """Stop recording one participant (they left, or may no longer be recorded)."""
        pc = self.pcs.pop(user_id, None)
        for file in self._files.get(user_id, []):
            await file.stop()
        if pc is not None:
            await pc.close()

    async def stop(self) -> None:
        self.closed = True
        for user_id in list(self.pcs):
            await self.drop(user_id)
        for files in self._files.values():
            for file in files:
                await file.stop()
