"""Real WebRTC through the portal's signaling: aiortc peers, each behind a Socket.IO client
that talks to the portal exactly as the session page does (``meeting.signal`` with
``{description: {type, sdp}}``; ICE servers from the authenticated endpoint), connect, exchange
audio and video frames, and close their connections when the mediator moves one side into its
private room.

aiortc has no rollback, so these peers avoid offer collisions the simple way: the peer with the
lower user id offers (the impolite one in perfect negotiation), the other answers. aiortc puts
all its ICE candidates in the SDP, so no candidate messages are needed between them.
"""

from __future__ import annotations

import asyncio
import fractions
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack
from av import VideoFrame

from tests.meetings.conftest import Cast, Crowd, Peer, build_cast
from tests.realtime.test_socket_auth import Live


class SmallVideo(MediaStreamTrack):
    """A 160x120 picture at 15 frames a second (small, so three peers encode it cheaply)."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._count = 0
        self._started: float | None = None

    async def recv(self) -> VideoFrame:
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
        self._count += 1
        wait = self._started + self._count / 15 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        frame = VideoFrame(width=160, height=120, format="yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(self._count * 7) % 256]) * plane.buffer_size)
        frame.pts = self._count * 6000
        frame.time_base = fractions.Fraction(1, 90000)
        return frame


class MediaPeer:
    """One person's media: a peer connection to each other person in their room."""

    def __init__(self, peer: Peer, user_id: int, meeting_id: int, ice: list[RTCIceServer]):
        self.peer, self.me, self.meeting_id, self.ice = peer, user_id, meeting_id, ice
        self.pcs: dict[int, RTCPeerConnection] = {}
        self.closed: dict[int, list[RTCPeerConnection]] = {}
        self.frames: dict[tuple[int, str], int] = {}  # (from user, kind) -> frames received
        self.room: str | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        client = peer.client
        assert client is not None
        client.on("meeting.signal", self._on_signal)
        client.on("meeting.peer_joined", self._on_joined)
        client.on("meeting.peer_left", self._on_left)
        client.on("meeting.state", self._on_state)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- what the server tells us ---------------------------------------------------------

    async def _on_state(self, state: dict[str, Any]) -> None:
        self.peer.events.append(("meeting.state", state))
        self.reconcile(state)

    def reconcile(self, state: dict[str, Any]) -> None:
        you = state["you"]
        room = you["room"] if you["state"] == "admitted" else None
        if room != self.room:
            for other in list(self.pcs):
                self._spawn(self.close(other))
            self.room = room
        if room is None:
            return
        here = {
            s["user_id"]
            for s in state["seats"]
            if s["state"] == "admitted" and s["room"] == room and s["connected"]
        }
        for other in list(self.pcs):
            if other not in here:
                self._spawn(self.close(other))
        for other in here - set(self.pcs):
            if self.me < other:
                self._spawn(self.offer(other))

    async def _on_joined(self, data: dict[str, Any]) -> None:
        self.peer.events.append(("meeting.peer_joined", data))
        other = data["user_id"]
        if data["room"] == self.room and other not in self.pcs and self.me < other:
            self._spawn(self.offer(other))

    async def _on_left(self, data: dict[str, Any]) -> None:
        self.peer.events.append(("meeting.peer_left", data))
        await self.close(data["user_id"])

    async def _on_signal(self, data: dict[str, Any]) -> None:
        self.peer.events.append(("meeting.signal", data))
        description = data["payload"].get("description")
        if description is None:
            return  # a candidate: aiortc peers put theirs in the SDP
        other = data["from_user_id"]
        if description["type"] == "offer":
            pc = self._open(other)
            await pc.setRemoteDescription(RTCSessionDescription(**description))
            await pc.setLocalDescription(await pc.createAnswer())
            await self._send(other, pc)
        elif other in self.pcs:
            await self.pcs[other].setRemoteDescription(RTCSessionDescription(**description))

    # -- connections ----------------------------------------------------------------------

    def _open(self, other: int) -> RTCPeerConnection:
        old = self.pcs.pop(other, None)
        if old is not None:
            self._spawn(old.close())
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice))
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(SmallVideo())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._spawn(self._count(other, track))

        self.pcs[other] = pc
        return pc

    async def _count(self, other: int, track: MediaStreamTrack) -> None:
        key = (other, track.kind)
        while True:
            try:
                await track.recv()
            except Exception:
                return  # the connection closed
            self.frames[key] = self.frames.get(key, 0) + 1

    async def _send(self, other: int, pc: RTCPeerConnection) -> None:
        local = pc.localDescription
        payload = {"description": {"type": local.type, "sdp": local.sdp}}
        ack = await self.peer.act("meeting.signal", self.meeting_id, to=other, payload=payload)
        assert ack["ok"], ack

    async def offer(self, other: int) -> None:
        pc = self._open(other)
        await pc.setLocalDescription(await pc.createOffer())
        await self._send(other, pc)

    async def close(self, other: int) -> None:
        pc = self.pcs.pop(other, None)
        if pc is not None:
            self.closed.setdefault(other, []).append(pc)
            await pc.close()

    async def close_all(self) -> None:
        for other in list(self.pcs):
            await self.close(other)
        for task in list(self.tasks):
            task.cancel()

    # -- what we check --------------------------------------------------------------------

    def connected_to(self) -> set[int]:
        return {o for o, pc in self.pcs.items() if pc.connectionState == "connected"}

    async def receiving_from(self, others: set[int], frames: int = 10) -> None:
        """Wait until audio and video frames have come from each of ``others``."""
        start = dict(self.frames)
        for _ in range(600):
            if all(
                self.frames.get((o, kind), 0) - start.get((o, kind), 0) >= frames
                for o in others
                for kind in ("audio", "video")
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.peer.label}: frames {self.frames}, from {others}")


async def ice_for(live: Live, cookie: str, meeting_id: int) -> list[RTCIceServer]:
    """The ICE servers the page would fetch (none are configured in tests: host candidates)."""
    async with httpx.AsyncClient(base_url=live.url, headers={"Cookie": cookie}) as http:
        response = await http.get(f"/api/v1/meetings/{meeting_id}/ice-servers")
    assert response.status_code == 200, response.text
    return [RTCIceServer(**s) for s in response.json()["iceServers"]]


async def test_aiortc_peers_connect_through_the_signaling_and_caucus_closes_them(
    live: Live, people: Crowd
) -> None:
    cast: Cast = await build_cast(live.app, mode="video")
    mid = cast.meeting_id
    media: dict[str, MediaPeer] = {}
    ids = {"mediator": cast.mediator.id, "claimant": cast.claimant.id, "rep1": cast.rep1.id}
    for label, person in (
        ("mediator", cast.mediator),
        ("claimant", cast.claimant),
        ("rep1", cast.rep1),
    ):
        peer = await people.peer(label, person)
        media[label] = MediaPeer(peer, person.id, mid, await ice_for(live, peer.cookie, mid))
    try:
        mediator = media["mediator"]
        ack = await mediator.peer.act("meeting.join", mid)
        mediator.reconcile(ack["state"])
        for label in ("claimant", "rep1"):
            ack = await media[label].peer.act("meeting.join", mid)
            assert ack["state"]["you"]["state"] == "waiting"
            admitted = await mediator.peer.act("meeting.admit", mid, user_id=ids[label])
            assert admitted["ok"]
        # Everyone in the joint room: each receives audio and video from both others.
        for label, m in media.items():
            others = {i for name, i in ids.items() if name != label}
            await m.receiving_from(others)
            assert m.connected_to() == others

        # The firm's side goes to its private room: its connections to everyone close...
        moved = await mediator.peer.act(
            "meeting.move", mid, room="caucus_respondent", side="respondent"
        )
        assert moved["ok"] and moved["moved"] == 1
        rep1, claimant = media["rep1"], media["claimant"]
        await rep1.peer.until(lambda _: not rep1.pcs, seconds=10)
        await claimant.peer.until(lambda _: ids["rep1"] not in claimant.pcs, seconds=10)
        await mediator.peer.until(lambda _: ids["rep1"] not in mediator.pcs, seconds=10)
        gone = rep1.closed[ids["claimant"]] + claimant.closed[ids["rep1"]]
        await rep1.peer.until(lambda _: all(pc.connectionState == "closed" for pc in gone))
        # ...the claimant and the mediator still hear and see each other...
        await claimant.receiving_from({ids["mediator"]})
        await mediator.receiving_from({ids["claimant"]})
        # ...and the server refuses signaling across the rooms.
        offer = {"description": {"type": "offer", "sdp": "v=0"}}
        refused = await rep1.peer.act("meeting.signal", mid, to=ids["claimant"], payload=offer)
        assert refused["error"] == "invalid_target"

        # The mediator joins the firm in its room: a new connection, with media both ways.
        went = await mediator.peer.act(
            "meeting.move", mid, room="caucus_respondent", user_id=ids["mediator"]
        )
        assert went["ok"]
        await mediator.receiving_from({ids["rep1"]})
        await rep1.receiving_from({ids["mediator"]})
        await claimant.peer.until(lambda _: not claimant.pcs, seconds=10)
        assert mediator.connected_to() == {ids["rep1"]}
        assert rep1.connected_to() == {ids["mediator"]}
    finally:
        for m in media.values():
            await m.close_all()
