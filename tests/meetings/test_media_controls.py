"""Media around the peer connections: ICE servers with TURN credentials, the connectivity
check, presence (microphone, camera, network quality, device), and the mediator's mute and
ask-to-unmute, each reaching only whom it should."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from portal.meetings import service as meetings_service
from portal.meetings.ice import ice_servers, turn_credential
from portal.meetings.models import MeetingConnection, Participant
from portal.meetings.service import device_kind
from portal.settings import Settings
from tests.conftest import log_in, make_settings, truncate_all
from tests.factories import _state
from tests.meetings.conftest import Crowd, build_cast
from tests.meetings.test_sockets import seat_everyone
from tests.realtime.test_socket_auth import Live, serve

SECRET = "coturn-static-auth-secret"


def test_turn_credentials_are_what_coturn_computes() -> None:
    credential = turn_credential(SECRET, 42, 1_900_000_000)
    assert credential.username == "1900000000:42"
    # coturn (use-auth-secret): base64(HMAC-SHA1(static-auth-secret, username))
    expected = hmac.new(SECRET.encode(), b"1900000000:42", hashlib.sha1).digest()
    assert base64.b64decode(credential.password) == expected


def test_ice_servers_from_settings(tmp_path: Path) -> None:
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    bare = make_settings("sqlite+aiosqlite://", tmp_path)
    assert ice_servers(bare, 7, now) == {"iceServers": [], "expires": None}
    settings = make_settings(
        "sqlite+aiosqlite://",
        tmp_path,
        stun_urls=("stun:turn.example.cn:3478",),
        turn_urls=("turn:turn.example.cn:3478?transport=udp", "turns:turn.example.cn:443"),
        turn_secret=SECRET,
        turn_ttl_seconds=3600,
    )
    found = ice_servers(settings, 7, now)
    expires = int(now.timestamp()) + 3600
    assert found["expires"] == expires
    stun, turn = found["iceServers"]
    assert stun == {"urls": ["stun:turn.example.cn:3478"]}
    assert turn["urls"] == list(settings.turn_urls)
    assert turn["username"] == f"{expires}:7"
    assert turn["credential"] == turn_credential(SECRET, 7, expires).password


def test_turn_settings_are_checked(tmp_path: Path) -> None:
    env = {"VAR_DIR": str(tmp_path)}
    with pytest.raises(ValueError, match="TURN_SECRET"):
        Settings.from_env({**env, "TURN_URLS": "turn:turn.example.cn:3478"})
    with pytest.raises(ValueError, match="turn"):
        Settings.from_env({**env, "TURN_URLS": "http://turn.example.cn", "TURN_SECRET": "s"})
    with pytest.raises(ValueError, match="TURN_TTL"):
        Settings.from_env({**env, "TURN_TTL_SECONDS": "5"})
    settings = Settings.from_env(
        {
            **env,
            "STUN_URLS": "stun:a.example.cn:3478",
            "TURN_URLS": "turn:a.example.cn:3478, turns:a.example.cn:443?transport=tcp",
            "TURN_SECRET": SECRET,
        }
    )
    assert settings.turn_urls == ("turn:a.example.cn:3478", "turns:a.example.cn:443?transport=tcp")
    assert SECRET not in repr(settings)


def test_device_kinds() -> None:
    iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile/15E148 Safari/604.1"
    android = "Mozilla/5.0 (Linux; Android 15; Pixel 9) Chrome/142.0 Mobile Safari/537.36"
    tablet = "Mozilla/5.0 (Linux; Android 14; SM-X710) Chrome/142.0 Safari/537.36"
    ipad = "Mozilla/5.0 (iPad; CPU OS 18_0 like Mac OS X) Safari/604.1"
    desktop = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0 Safari/537.36"
    assert [device_kind(ua) for ua in (iphone, android, tablet, ipad, desktop, "")] == [
        "mobile",
        "mobile",
        "tablet",
        "tablet",
        "desktop",
        "desktop",
    ]


async def test_participants_get_their_own_turn_credentials(db_url: str, tmp_path: Path) -> None:
    async with serve(
        db_url, tmp_path, turn_urls=("turn:turn.example.cn:3478",), turn_secret=SECRET
    ) as live:
        try:
            cast = await build_cast(live.app)
            async with httpx.AsyncClient(base_url=live.url) as http:
                await log_in(http, cast.claimant.login, cast.claimant.password)
                before = int(time.time())
                response = await http.get(f"/api/v1/meetings/{cast.meeting_id}/ice-servers")
            assert response.status_code == 200
            assert response.headers["cache-control"] == "no-store"
            (turn,) = response.json()["iceServers"]
            expiry, user = turn["username"].split(":")
            assert user == str(cast.claimant.id)
            assert before + 86400 <= int(expiry) <= int(time.time()) + 86400
            assert (
                turn["credential"]
                == turn_credential(SECRET, cast.claimant.id, int(expiry)).password
            )
        finally:
            await truncate_all(db_url)


async def test_ping_presence_and_the_mediators_media_requests(live: Live, people: Crowd) -> None:
    cast = await build_cast(live.app, mode="video")
    mid = cast.meeting_id
    lone = await people.peer("early", cast.rep2)
    ping = await lone.call("meeting.ping", {})
    assert ping["ok"] and abs(ping["time"] / 1000 - time.time()) < 5
    assert (await lone.call("meeting.ping", {"x": 1}))["error"] == "invalid"
    peers = await seat_everyone(people, cast, claimant=cast.claimant, rep1=cast.rep1)
    m, c, r = peers["mediator"], peers["claimant"], peers["rep1"]
    # Not admitted yet: nothing to report, nobody to mute.
    assert (await lone.act("meeting.join", mid))["state"]["you"]["state"] == "waiting"
    refused = await lone.act("meeting.presence", mid, audio=True, video=True, quality="good")
    assert refused["error"] == "not_admitted"
    await m.until(lambda p: any(s["state"] == "waiting" for s in p.last_state()["seats"]))
    state = m.last_state()
    assert {s["device"] for s in state["seats"] if s["connected"]} == {"desktop"}
    muted = await m.act("meeting.media", mid, user_id=cast.rep2.id, action="mute_audio")
    assert muted["error"] == "invalid_target"

    # Presence reaches the others in the room, never the sender.
    report = {"audio": False, "video": True, "quality": "fair"}
    assert (await c.act("meeting.presence", mid, **report))["ok"]
    expected = {"meeting_id": mid, "room": "joint", "user_id": cast.claimant.id, **report}
    for peer in (m, r):
        await peer.until(lambda p: expected in p.received("meeting.presence"))
    assert not c.received("meeting.presence")
    for bad in ({"quality": "great"}, {"audio": "yes"}, {"video": None}):
        ack = await c.act("meeting.presence", mid, **{**report, **bad})
        assert ack["error"] == "invalid", bad

    # Only the mediator mutes, and only the person muted hears of it.
    ack = await c.act("meeting.media", mid, user_id=cast.rep1.id, action="mute_audio")
    assert ack["error"] == "forbidden"
    assert (await m.act("meeting.media", mid, user_id=cast.rep1.id, action="mute_audio"))["ok"]
    assert (await m.act("meeting.media", mid, user_id=cast.rep1.id, action="ask_unmute"))["ok"]
    await r.until(lambda p: len(p.received("meeting.media")) == 2)
    assert [e["action"] for e in r.received("meeting.media")] == ["mute_audio", "ask_unmute"]
    assert r.received("meeting.media")[0]["by_name"] == "王调解员"
    bad = await m.act("meeting.media", mid, user_id=cast.rep1.id, action="unmute")
    assert bad["error"] == "invalid"

    # In caucus, the firm's presence stays in the firm's room.
    assert (await m.act("meeting.move", mid, room="caucus_respondent", side="respondent"))["ok"]
    await r.until_state(room="caucus_respondent")
    assert (await r.act("meeting.presence", mid, audio=True, video=False, quality="poor"))["ok"]
    await asyncio.sleep(0.3)
    assert not [p for p in c.received("meeting.presence") if p["user_id"] == cast.rep1.id]
    assert not [p for p in m.received("meeting.presence") if p["room"] != "joint"]
    assert not c.received("meeting.media")


async def test_no_media_in_a_text_session(live: Live, people: Crowd) -> None:
    cast = await build_cast(live.app, mode="text")
    mid = cast.meeting_id
    peers = await seat_everyone(people, cast, claimant=cast.claimant)
    ack = await peers["mediator"].act(
        "meeting.media", mid, user_id=cast.claimant.id, action="mute_audio"
    )
    assert ack["error"] == "no_media"


async def test_connections_of_a_dead_process_are_swept(live: Live, people: Crowd) -> None:
    """A process that crashed leaves its sockets' rows: once it has been silent long enough,
    the sweeper of a live process drops them, so its people show as reconnecting."""
    cast = await build_cast(live.app, mode="video")
    mid = cast.meeting_id
    peers = await seat_everyone(people, cast, claimant=cast.claimant, rep1=cast.rep1)
    m, r = peers["mediator"], peers["rep1"]
    state = _state(live.app)
    sweeper = state.meeting_sockets.sweeper
    await sweeper.run_once()
    # rep1 was, as far as the database knows, also connected through a process that died.
    async with state.db() as db:
        seat = await db.scalar(
            select(Participant).where(
                Participant.meeting_id == mid, Participant.user_id == cast.rep1.id
            )
        )
        db.add(
            MeetingConnection(meeting_id=mid, sid="ghost", participant_id=seat.id, process="0" * 32)
        )
        await db.commit()
    await r.close()  # the live socket goes: rep1 still looks connected through the ghost
    await m.until(
        lambda p: any(
            s["user_id"] == cast.rep1.id and s["connected"] for s in p.last_state()["seats"]
        )
    )
    assert not [e for e in m.received("meeting.peer_left") if e["user_id"] == cast.rep1.id]
    await sweeper.run_once()
    await m.until(
        lambda p: any(
            s["user_id"] == cast.rep1.id and not s["connected"] for s in p.last_state()["seats"]
        )
    )
    await m.until(
        lambda p: any(e["user_id"] == cast.rep1.id for e in p.received("meeting.peer_left"))
    )
    async with state.db() as db:
        left = set(
            await db.scalars(
                select(MeetingConnection.sid).where(MeetingConnection.meeting_id == mid)
            )
        )
    assert "ghost" not in left and m.sid in left  # the live process's sockets stay


async def test_voice_and_video_for_at_most_the_mesh_limit_per_room(
    live: Live, people: Crowd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mediator and the first to come in have voice and video; later arrivals in a full
    room take part by chat, and their signaling is refused, until someone leaves the room."""
    monkeypatch.setattr(meetings_service, "MESH_LIMIT", 3)
    cast = await build_cast(live.app, mode="video")
    mid = cast.meeting_id
    peers = await seat_everyone(
        people, cast, claimant=cast.claimant, rep1=cast.rep1, rep2=cast.rep2
    )
    m, c, r1, r2 = peers["mediator"], peers["claimant"], peers["rep1"], peers["rep2"]
    media = {s["user_id"]: s["media"] for s in m.last_state()["seats"] if s["state"] == "admitted"}
    assert m.last_state()["you"]["media"]
    assert media == {cast.claimant.id: True, cast.rep1.id: True, cast.rep2.id: False}
    await r2.until(lambda p: p.last_state()["you"]["media"] is False)
    offer = {"description": {"type": "offer", "sdp": "v=0"}}
    refused = await r2.act("meeting.signal", mid, to=cast.mediator.id, payload=offer)
    assert refused["error"] == "room_full"
    refused = await m.act("meeting.signal", mid, to=cast.rep2.id, payload=offer)
    assert refused["error"] == "room_full"
    assert (await c.act("meeting.signal", mid, to=cast.rep1.id, payload=offer))["ok"]
    # The claimant's side leaves for its private room: the firm's second representative is in.
    assert (await m.act("meeting.move", mid, room="caucus_claimant", side="claimant"))["ok"]
    await r2.until(lambda p: p.last_state()["you"]["media"] is True)
    assert (await r2.act("meeting.signal", mid, to=cast.mediator.id, payload=offer))["ok"]
    assert (await r1.act("meeting.signal", mid, to=cast.rep2.id, payload=offer))["ok"]
