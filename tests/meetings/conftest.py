"""Live sessions: a cast (a case with its mediator, claimant, two firm representatives, an
observer and two outsiders, and a session scheduled for it) and Socket.IO clients that record
every event they receive."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from portal.policy import Role
from tests.conftest import truncate_all
from tests.factories import (
    Person,
    make_case,
    make_committee,
    make_firm,
    make_meeting,
    make_user,
    verify_phone,
)
from tests.realtime.test_socket_auth import Live, serve, session_cookie

_phones = itertools.count(1)


@dataclass
class Cast:
    mediator: Person
    claimant: Person
    rep1: Person
    rep2: Person
    observer: Person
    stranger: Person  # a consumer with no part in the case
    other_rep: Person  # a representative of another firm
    case_id: int
    meeting_id: int


async def build_cast(app: Any, *, mode: str = "video", minutes_from_now: int = 60) -> Cast:
    committee = await make_committee(app)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee, name="王调解员")
    observer = await make_user(app, Role.MEDIATOR, committee=committee, name="李观察员")
    firm = await make_firm(app)
    rep1 = await make_user(app, Role.FIRM_REP, firm=firm, name="公司代表甲")
    rep2 = await make_user(app, Role.FIRM_REP, firm=firm, name="公司代表乙")
    claimant = await make_user(app, Role.CONSUMER, phone=f"139{next(_phones):08d}", name="张三")
    stranger = await make_user(app, Role.CONSUMER, phone=f"139{next(_phones):08d}", name="路人")
    other_rep = await make_user(app, Role.FIRM_REP, name="别家公司代表")
    await verify_phone(app, claimant)
    case = await make_case(app, claimant, firm, status="assigned", mediator_id=mediator.id)
    meeting = await make_meeting(
        app,
        case,
        mediator,
        mode=mode,
        minutes_from_now=minutes_from_now,
        observers=(observer,),
    )
    return Cast(
        mediator=mediator,
        claimant=claimant,
        rep1=rep1,
        rep2=rep2,
        observer=observer,
        stranger=stranger,
        other_rep=other_rep,
        case_id=case.id,
        meeting_id=meeting.id,
    )


@pytest.fixture
async def live(db_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with serve(db_url, tmp_path) as server:
        yield server
    await truncate_all(db_url)


class Peer:
    """A Socket.IO client for one person that records every event and acknowledgement."""

    def __init__(self, label: str, url: str, cookie: str) -> None:
        self.label, self.url, self.cookie = label, url, cookie
        self.events: list[tuple[str, Any]] = []
        self._http: aiohttp.ClientSession | None = None
        self.client: socketio.AsyncClient | None = None

    async def connect(self) -> Peer:
        self._http = aiohttp.ClientSession()
        self.client = socketio.AsyncClient(reconnection=False, http_session=self._http)

        async def record(event: str, data: Any = None) -> None:
            self.events.append((event, data))

        self.client.on("*", record)
        await self.client.connect(
            self.url, transports=["websocket"], headers={"Cookie": self.cookie}, wait_timeout=5
        )
        return self

    @property
    def sid(self) -> str:
        assert self.client is not None
        sid = self.client.get_sid()
        assert sid is not None
        return str(sid)

    async def call(self, event: str, data: Any) -> Any:
        assert self.client is not None
        ack = await self.client.call(event, data, timeout=10)
        self.events.append((f"ack:{event}", ack))
        return ack

    async def act(self, event: str, meeting_id: int, **payload: Any) -> Any:
        return await self.call(event, {"meeting_id": meeting_id, **payload})

    async def close(self) -> None:
        if self.client is not None and self.client.connected:
            await self.client.disconnect()
        if self._http is not None:
            await self._http.close()

    def received(self, event: str) -> list[Any]:
        return [data for name, data in self.events if name == event]

    def last_state(self) -> dict[str, Any]:
        states = self.received("meeting.state") + [
            a["state"] for a in self.received("ack:meeting.join") if a.get("ok")
        ]
        return max(states, key=lambda s: s["version"])

    def dump(self) -> str:
        return json.dumps(self.events, ensure_ascii=False)

    async def until(self, check: Callable[[Peer], bool], seconds: float = 5.0) -> None:
        for _ in range(int(seconds / 0.02)):
            if check(self):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.label}: condition not met; events: {self.events[-8:]}")

    async def until_state(self, **expected: Any) -> dict[str, Any]:
        """Wait for a state whose ``you`` fields (or top-level fields) match."""

        def matches(peer: Peer) -> bool:
            try:
                state = peer.last_state()
            except ValueError:
                return False
            return all(state["you"].get(k, state.get(k)) == v for k, v in expected.items())

        await self.until(matches)
        return self.last_state()


class Crowd:
    """The people connected in one test, closed at the end."""

    def __init__(self, live: Live) -> None:
        self.live = live
        self.peers: list[Peer] = []

    async def peer(self, label: str, person: Person) -> Peer:
        cookie = await session_cookie(self.live, person.login, person.password)
        peer = await Peer(label, self.live.url, cookie).connect()
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()


@pytest.fixture
async def people(live: Live) -> AsyncIterator[Crowd]:
    room = Crowd(live)
    try:
        yield room
    finally:
        await room.close()
