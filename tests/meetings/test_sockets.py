"""Live sessions over Socket.IO: real clients against the real app served by uvicorn on
loopback, on both databases. Every client records every event and acknowledgement it gets, and
the assertions are made over those records."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from portal.meetings.models import MeetingMessage
from portal.meetings.service import ChatPost, Posted, Refused
from realtime.meetings import ChatWriter, Limits
from tests.conftest import (
    REDIS_URL,
    log_in,
    post_form,
    redis_available,
    require_service,
    truncate_all,
)
from tests.meetings.conftest import Cast, Crowd, Peer, build_cast
from tests.realtime.test_socket_auth import Live, serve


def chats(peer: Peer) -> dict[int, str]:
    """Every message a client has, live or replayed, by sequence number (and no number with
    two different texts)."""
    found: dict[int, str] = {}
    messages = peer.received("meeting.chat")
    for ack in peer.received("ack:meeting.sync"):
        messages += ack.get("messages", [])
    for m in messages:
        assert found.setdefault(m["seq"], m["text"]) == m["text"]
    return found


def rooms_seen(value: Any) -> set[Any]:
    """Every value of a "room" key anywhere in what a client received."""
    found: set[Any] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "room":
                found.add(item)
            found |= rooms_seen(item)
    elif isinstance(value, list | tuple):
        for item in value:
            found |= rooms_seen(item)
    return found


async def seat_everyone(crowd: Crowd, cast: Cast, **who: Any) -> dict[str, Peer]:
    """The mediator opens the session and lets in everyone named."""
    mid = cast.meeting_id
    mediator = await crowd.peer("mediator", cast.mediator)
    assert (await mediator.act("meeting.join", mid))["ok"]
    peers = {"mediator": mediator}
    for label, person in who.items():
        peer = await crowd.peer(label, person)
        ack = await peer.act("meeting.join", mid)
        assert ack["ok"] and ack["state"]["you"]["state"] == "waiting", ack
        assert (await mediator.act("meeting.admit", mid, user_id=person.id))["ok"]
        await peer.until_state(state="admitted", room="joint")
        peers[label] = peer
    return peers


async def test_waiting_room_admission_and_reconnecting(live: Live, people: Crowd) -> None:
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    early = await people.peer("claimant", cast.claimant)
    ack = await early.act("meeting.join", mid)
    assert ack["ok"] and ack["state"]["status"] == "scheduled"
    assert ack["state"]["you"]["state"] == "waiting" and ack["state"]["you"]["room"] is None
    assert (await early.act("meeting.chat", mid, client_id="e1", text="在吗"))[
        "error"
    ] == "not_open"
    assert (await early.act("meeting.sync", mid, after_seq=0))["error"] == "not_admitted"
    # Coming back on a new connection changes nothing.
    await early.close()
    claimant = await people.peer("claimant again", cast.claimant)
    ack = await claimant.act("meeting.join", mid)
    assert ack["state"]["you"]["state"] == "waiting"

    mediator = await people.peer("mediator", cast.mediator)
    ack = await mediator.act("meeting.join", mid)
    assert ack["state"]["status"] == "open" and ack["state"]["you"]["room"] == "joint"
    assert [s["user_id"] for s in ack["state"]["seats"] if s["state"] == "waiting"] == [
        cast.claimant.id
    ]
    await claimant.until_state(mediator="present", status="open")
    said = await mediator.act("meeting.chat", mid, client_id="m1", text="请稍等，马上开始")
    assert said["ok"] and said["seq"] == 1
    await mediator.until(lambda p: bool(p.received("meeting.chat")))
    assert not claimant.received("meeting.chat")  # not in the room yet: nothing reaches them

    assert (await mediator.act("meeting.admit", mid, user_id=cast.claimant.id))["ok"]
    await claimant.until_state(state="admitted", room="joint", mediator="here")
    await mediator.until(
        lambda p: any(e["user_id"] == cast.claimant.id for e in p.received("meeting.peer_joined"))
    )
    synced = await claimant.act("meeting.sync", mid, after_seq=0)
    assert [m["text"] for m in synced["messages"]] == ["请稍等，马上开始"]

    # Dropped by the server: back in the same room, without knocking.
    await live.app.starlette.state.sio.disconnect(claimant.sid)
    await mediator.until(
        lambda p: any(e["reason"] == "disconnected" for e in p.received("meeting.peer_left"))
    )
    back = await people.peer("claimant back", cast.claimant)
    ack = await back.act("meeting.join", mid)
    assert ack["state"]["you"]["state"] == "admitted" and ack["state"]["you"]["room"] == "joint"
    assert (await back.act("meeting.chat", mid, client_id="c1", text="我回来了"))["ok"]

    # Turned away: told so; may knock again, until the session is locked.
    rep = await people.peer("rep1", cast.rep1)
    assert (await rep.act("meeting.join", mid))["state"]["you"]["state"] == "waiting"
    assert (await mediator.act("meeting.chat", mid, client_id="m2", text="只给已入场的人"))["ok"]
    await back.until(lambda p: "只给已入场的人" in chats(p).values())
    assert (await mediator.act("meeting.turn_away", mid, user_id=cast.rep1.id))["ok"]
    await rep.until_state(state="turned_away")
    assert (await rep.act("meeting.join", mid))["state"]["you"]["state"] == "waiting"
    assert (await mediator.act("meeting.lock", mid, locked=True))["ok"]
    await back.until_state(locked=True)
    late = await people.peer("rep2", cast.rep2)
    refused = await late.act("meeting.join", mid)
    assert refused["error"] == "locked" and refused["message"]  # a sentence for the person
    # Someone waiting may still be let in; nobody's events reached the waiting people.
    assert (await mediator.act("meeting.admit", mid, user_id=cast.rep1.id))["ok"]
    await rep.until_state(state="admitted", room="joint")
    assert not late.received("meeting.chat") and not late.received("meeting.state")
    assert not rep.received("meeting.chat")  # said while they waited: not pushed to them


async def test_caucus_isolation_over_every_event(live: Live, people: Crowd) -> None:
    """A scripted session with moves back and forth: no party ever receives anything from the
    other side's caucus or the mediator's notes; the observer nothing from any caucus."""
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    # The script sends faster than people do (the limit has its own test).
    live.app.starlette.state.meeting_sockets.configure(Limits(chat=(1000, 1.0)))
    peers = await seat_everyone(
        people, cast, claimant=cast.claimant, rep1=cast.rep1, rep2=cast.rep2, observer=cast.observer
    )
    m, c, r1, r2, o = (peers[k] for k in ("mediator", "claimant", "rep1", "rep2", "observer"))
    n = 0

    async def say(peer: Peer, text: str, room: str | None = None) -> None:
        nonlocal n
        n += 1
        payload: dict[str, Any] = {"client_id": f"{peer.label}-{n}", "text": text}
        if room:
            payload["room"] = room
        ack = await peer.act("meeting.chat", mid, **payload)
        assert ack["ok"], (peer.label, text, ack)

    async def move(room: str, **target: Any) -> None:
        assert (await m.act("meeting.move", mid, room=room, **target))["ok"]

    async def refused(peer: Peer, event: str, code: str, **payload: Any) -> None:
        ack = await peer.act(event, mid, **payload)
        assert ack["ok"] is False and ack["error"] == code, (peer.label, event, ack)

    async def signal(peer: Peer, to: int, secret: str) -> None:
        data = {"description": {"type": "offer", "sdp": secret}}
        assert (await peer.act("meeting.signal", mid, to=to, payload=data))["ok"]

    for peer in (m, c, r1, r2, o):
        await say(peer, f"joint hello from {peer.label}")
    await c.act("meeting.typing", mid)

    for round_ in (1, 2):
        # The firm's side alone with the mediator.
        await move("caucus_respondent", side="respondent")
        await move("caucus_respondent", user_id=cast.mediator.id)
        await r1.until_state(room="caucus_respondent", mediator="here")
        await c.until_state(mediator="caucus")
        await say(r1, f"SECRET-R firm's bottom line, round {round_}")
        await r2.act("meeting.typing", mid)
        await say(m, f"SECRET-R mediator to the firm, round {round_}")
        await signal(r1, cast.mediator.id, f"SECRET-R-SDP {round_}")
        await signal(m, cast.rep2.id, f"SECRET-R-SDP to rep2 {round_}")
        await say(m, f"SECRET-NOTE firm may give way, round {round_}", room="notes")
        # Meanwhile the claimant tries to look in, and to reach the firm.
        await refused(
            c,
            "meeting.chat",
            "invalid_room",
            client_id=f"x{round_}",
            text="偷看",
            room="caucus_respondent",
        )
        await refused(
            c, "meeting.chat", "invalid_room", client_id=f"y{round_}", text="偷看", room="notes"
        )
        await refused(
            c, "meeting.signal", "invalid_target", to=cast.rep1.id, payload={"candidate": None}
        )
        await say(c, f"claimant waits in the joint room, round {round_}")

        # Then the claimant's side alone with the mediator.
        await move("caucus_claimant", side="claimant")
        await move("caucus_claimant", user_id=cast.mediator.id)
        await c.until_state(room="caucus_claimant", mediator="here")
        await say(c, f"SECRET-C I would accept less, round {round_}")
        await c.act("meeting.typing", mid)
        await signal(c, cast.mediator.id, f"SECRET-C-SDP {round_}")
        await say(m, f"SECRET-C mediator to the claimant, round {round_}")
        await say(m, f"SECRET-NOTE claimant flexible, round {round_}", room="notes")
        await refused(
            r1,
            "meeting.chat",
            "invalid_room",
            client_id=f"z{round_}",
            text="偷看",
            room="caucus_claimant",
        )
        await refused(
            r1, "meeting.signal", "invalid_target", to=cast.claimant.id, payload={"candidate": None}
        )
        await refused(
            o,
            "meeting.chat",
            "invalid_room",
            client_id=f"o{round_}",
            text="偷看",
            room="caucus_claimant",
        )

        # Everyone back together.
        await move("joint", side="all")
        await c.until_state(room="joint", mediator="here")
        await say(m, f"joint again, round {round_}")

    for peer in (c, r1, r2, o, m):
        assert (await peer.act("meeting.sync", mid, after_seq=0))["ok"]
    await say(m, "joint end")
    for peer in (c, r1, r2, o, m):
        await peer.until(lambda p: "joint end" in chats(p).values())

    claimant_side, firm_side = c.dump(), r1.dump() + r2.dump()
    for secret in ("SECRET-R", "SECRET-NOTE"):
        assert secret not in claimant_side
    for secret in ("SECRET-C", "SECRET-NOTE"):
        assert secret not in firm_side
    assert "SECRET" not in o.dump()
    assert rooms_seen(c.events) <= {"joint", "caucus_claimant", None}
    assert rooms_seen(r1.events) | rooms_seen(r2.events) <= {"joint", "caucus_respondent", None}
    assert rooms_seen(o.events) <= {"joint", None}
    # Signals reached only their named peer, within the room.
    assert [s["payload"]["description"]["sdp"] for s in r2.received("meeting.signal")] == [
        "SECRET-R-SDP to rep2 1",
        "SECRET-R-SDP to rep2 2",
    ]
    assert not c.received("meeting.signal") and not r1.received("meeting.signal")
    assert len(m.received("meeting.signal")) == 4
    # Each side did get its own caucus, and the mediator everything, notes included.
    assert "SECRET-C mediator to the claimant, round 2" in claimant_side
    assert "SECRET-R mediator to the firm, round 2" in r1.dump()
    everything = chats(m).values()
    assert sum("SECRET" in text for text in everything) == 12
    assert sorted(chats(m)) == list(range(1, len(chats(m)) + 1))


async def test_replay_after_a_forced_disconnect_loses_nothing_and_repeats_nothing(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    peers = await seat_everyone(people, cast, claimant=cast.claimant)
    m, c = peers["mediator"], peers["claimant"]
    first = await c.act("meeting.chat", mid, client_id="c-1", text="第一条")
    watermark = (await c.act("meeting.sync", mid, after_seq=0))["upto"]
    # A message sent as the connection is cut: whether it was stored is unknown to the client.
    assert c.client is not None
    await c.client.emit("meeting.chat", {"meeting_id": mid, "client_id": "c-2", "text": "第二条"})
    await live.app.starlette.state.sio.disconnect(c.sid)
    for k in range(5):
        assert (await m.act("meeting.chat", mid, client_id=f"m-{k}", text=f"调解员{k}"))["ok"]

    again = await people.peer("claimant again", cast.claimant)
    assert (await again.act("meeting.join", mid))["state"]["you"]["room"] == "joint"
    # The client sends again whatever it has no acknowledgement for, with the same ids.
    retried = await again.act("meeting.chat", mid, client_id="c-1", text="第一条")
    assert retried == {"ok": True, "seq": first["seq"], "duplicate": True}
    assert (await again.act("meeting.chat", mid, client_id="c-2", text="第二条"))["ok"]
    assert (await again.act("meeting.chat", mid, client_id="c-3", text="第三条"))["ok"]
    synced = await again.act("meeting.sync", mid, after_seq=watermark)
    assert not synced["more"]

    have = chats(c) | chats(again)
    async with live.app.starlette.state.db() as db:
        rows = await db.execute(
            select(MeetingMessage.seq, MeetingMessage.body).where(MeetingMessage.meeting_id == mid)
        )
        stored: dict[int, str] = dict(rows.all())
        per_client = list(
            await db.execute(
                select(MeetingMessage.client_id, func.count())
                .where(MeetingMessage.meeting_id == mid)
                .group_by(MeetingMessage.client_id)
            )
        )
    assert have == stored
    assert sorted(stored) == list(range(1, 9))  # three of the claimant's, five, no gap
    assert all(count == 1 for _, count in per_client)
    assert sorted(stored.values()).count("第二条") == 1


async def test_signals_are_relayed_only_to_the_named_peer_in_the_room(
    live: Live, people: Crowd
) -> None:
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    peers = await seat_everyone(people, cast, claimant=cast.claimant, rep1=cast.rep1)
    m, c, r = peers["mediator"], peers["claimant"], peers["rep1"]
    offer = {"description": {"type": "offer", "sdp": "v=0 offer"}}
    assert (await c.act("meeting.signal", mid, to=cast.rep1.id, payload=offer))["ok"]
    await r.until(lambda p: bool(p.received("meeting.signal")))
    assert r.received("meeting.signal") == [
        {"meeting_id": mid, "from_user_id": cast.claimant.id, "payload": offer}
    ]
    assert (await m.act("meeting.move", mid, room="caucus_respondent", side="respondent"))["ok"]
    await c.until(lambda p: any(e["reason"] == "moved" for e in p.received("meeting.peer_left")))
    for to, payload, code in [
        (cast.rep1.id, offer, "invalid_target"),
        (cast.claimant.id, offer, "invalid_target"),
        (999_999, offer, "invalid_target"),
        (cast.mediator.id, {"description": offer, "evil": 1}, "invalid"),
        (cast.mediator.id, {"candidate": "a" * 20_000}, "too_large"),
    ]:
        ack = await c.act("meeting.signal", mid, to=to, payload=payload)
        assert ack["error"] == code, (to, ack)
    for bad in ("offer", ["offer"], None):
        ack = await c.call(
            "meeting.signal", {"meeting_id": mid, "to": cast.rep1.id, "payload": bad}
        )
        assert ack["error"] == "invalid"
    assert (await c.act("meeting.signal", mid, to=cast.mediator.id, payload=offer))["ok"]
    await m.until(lambda p: bool(p.received("meeting.signal")))
    await asyncio.sleep(0.2)
    assert len(r.received("meeting.signal")) == 1


async def test_a_burst_of_messages_is_rate_limited(live: Live, people: Crowd) -> None:
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    peers = await seat_everyone(people, cast, claimant=cast.claimant)
    c = peers["claimant"]
    acks = [await c.act("meeting.chat", mid, client_id=f"b{k}", text=f"{k}") for k in range(11)]
    assert all(a["ok"] for a in acks[:10])
    assert acks[10]["ok"] is False and acks[10]["error"] == "rate_limited"
    assert "秒" in acks[10]["message"]  # told in Chinese how long to wait
    # A retry of a stored message is not a new message: it is answered, not limited.
    assert (await c.act("meeting.chat", mid, client_id="b3", text="3"))["duplicate"] is True
    # Others are not held back.
    assert (await peers["mediator"].act("meeting.chat", mid, client_id="m", text="好"))["ok"]


async def test_refusals_for_outsiders_non_mediators_and_bad_input(
    live: Live, people: Crowd, caplog: pytest.LogCaptureFixture
) -> None:
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    peers = await seat_everyone(people, cast, claimant=cast.claimant)
    m, c = peers["mediator"], peers["claimant"]
    rep = await people.peer("rep1", cast.rep1)
    await rep.act("meeting.join", mid)
    caplog.set_level(logging.WARNING, logger="jiefen.realtime.meetings")
    for event, payload in [
        ("meeting.admit", {"user_id": cast.rep1.id}),
        ("meeting.turn_away", {"user_id": cast.rep1.id}),
        ("meeting.remove", {"user_id": cast.mediator.id}),
        ("meeting.move", {"room": "caucus_claimant", "side": "claimant"}),
        ("meeting.lock", {"locked": True}),
        ("meeting.end", {"outcome": "settled"}),
    ]:
        ack = await c.act(event, mid, **payload)
        assert ack["ok"] is False and ack["error"] == "forbidden", (event, ack)
    state = (await m.act("meeting.join", mid))["state"]
    assert state["status"] == "open" and not state["locked"]
    assert [s["state"] for s in state["seats"] if s["user_id"] == cast.rep1.id] == ["waiting"]
    assert any("refused meeting.admit" in r.getMessage() for r in caplog.records)
    # Outsiders learn nothing: the same answer as for a session that does not exist.
    for person in (cast.stranger, cast.other_rep):
        outsider = await people.peer(person.login, person)
        assert (await outsider.act("meeting.join", mid))["error"] == "not_found"
        assert (await outsider.act("meeting.join", 999_999))["error"] == "not_found"
        chat = await outsider.act("meeting.chat", mid, client_id="x", text="hi")
        assert chat["error"] == "not_joined"
        assert (await outsider.act("meeting.sync", mid, after_seq=0))["error"] == "not_joined"
        assert not outsider.received("meeting.state") and not outsider.received("meeting.chat")
    # Malformed and oversize payloads.
    for event, data in [
        ("meeting.join", "abc"),
        ("meeting.join", [mid]),
        ("meeting.join", {"meeting_id": str(mid)}),
        ("meeting.join", {"meeting_id": True}),
        ("meeting.join", {"meeting_id": mid, "as": "mediator"}),
        ("meeting.chat", {"meeting_id": mid, "client_id": "k", "text": 5}),
        ("meeting.chat", {"meeting_id": mid, "text": "no id"}),
        ("meeting.sync", {"meeting_id": mid, "after_seq": 1.5}),
        ("meeting.move", {"meeting_id": mid, "room": "joint", "user_id": "1"}),
    ]:
        ack = await c.call(event, data)
        assert ack["ok"] is False and ack["error"] == "invalid", (event, data, ack)
    # A client sending the server's own "disconnect" as an event does not leave its place.
    assert c.client is not None
    await c.client.emit("disconnect", {})
    too_long = await c.act("meeting.chat", mid, client_id="long", text="长" * 2001)
    assert too_long["error"] == "too_large"
    assert (await c.act("meeting.sync", mid, after_seq=-5))["error"] == "invalid"
    # And the session goes on for everyone.
    assert (await c.act("meeting.chat", mid, client_id="fine", text="还在"))["ok"]
    await m.until(lambda p: "还在" in chats(p).values())
    assert not m.received("meeting.peer_left")
    mine = [s for s in m.last_state()["seats"] if s["user_id"] == cast.claimant.id]
    assert mine[0]["connected"] is True


async def test_cancelling_on_the_page_tells_the_people_waiting(live: Live, people: Crowd) -> None:
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    waiting = await people.peer("claimant", cast.claimant)
    assert (await waiting.act("meeting.join", mid))["state"]["you"]["state"] == "waiting"
    async with httpx.AsyncClient(base_url=live.url) as http:
        await log_in(http, cast.mediator.login, cast.mediator.password)
        done = await post_form(http, f"/meetings/{mid}/cancel", {"reason": "调解员临时有事"})
        assert done.status_code == 303
    await waiting.until_state(status="cancelled")


async def test_two_processes_share_a_session_through_redis(db_url: str, tmp_path: Path) -> None:
    """The mediator on one server, the claimant on another: admission, moves and chat cross
    between them through Redis."""
    if not redis_available():
        require_service("Redis", "nothing listens at 127.0.0.1:6379")
    async with (
        serve(db_url, tmp_path / "a", redis_url=REDIS_URL) as first,
        serve(db_url, tmp_path / "b", redis_url=REDIS_URL) as second,
    ):
        cast = await build_cast(first.app)
        mid = cast.meeting_id
        one, two = Crowd(first), Crowd(second)
        try:
            m = await one.peer("mediator", cast.mediator)
            c = await two.peer("claimant", cast.claimant)
            # Each server subscribes to Redis when its first socket connects: wait until both
            # hear each other.
            for origin, target, user_id in (
                (first, c, cast.claimant.id),
                (second, m, cast.mediator.id),
            ):
                sio = origin.app.starlette.state.sio
                for _ in range(100):
                    await sio.emit("probe", {}, room=f"user:{user_id}")
                    await asyncio.sleep(0.05)
                    if target.received("probe"):
                        break
                else:
                    pytest.fail("Redis never carried a message between the servers")
            assert (await m.act("meeting.join", mid))["ok"]
            assert (await c.act("meeting.join", mid))["state"]["you"]["state"] == "waiting"
            await m.until(lambda p: any(s["state"] == "waiting" for s in p.last_state()["seats"]))
            assert (await m.act("meeting.admit", mid, user_id=cast.claimant.id))["ok"]
            await c.until_state(state="admitted", room="joint")
            assert (await m.act("meeting.chat", mid, client_id="m1", text="跨进程你好"))["ok"]
            await c.until(lambda p: "跨进程你好" in chats(p).values())
            assert (await c.act("meeting.chat", mid, client_id="c1", text="收到"))["ok"]
            await m.until(lambda p: "收到" in chats(p).values())
            # A move made on the first server takes the claimant's socket on the second
            # out of the joint room: what is said there no longer reaches them.
            await m.act("meeting.move", mid, room="caucus_claimant", side="claimant")
            await c.until_state(room="caucus_claimant")
            await m.act("meeting.chat", mid, client_id="m2", text="联合室里的话")
            await m.act("meeting.move", mid, room="caucus_claimant", user_id=cast.mediator.id)
            await m.act("meeting.chat", mid, client_id="m3", text="单独谈谈")
            await c.until(lambda p: "单独谈谈" in chats(p).values())
            assert "联合室里的话" not in chats(c).values()
        finally:
            await one.close()
            await two.close()
    await truncate_all(db_url)


async def test_the_chat_writer_stores_what_queued_in_one_commit(
    live: Live, people: Crowd, db_url: str
) -> None:
    """SQLite's path (on PostgreSQL each message is its own transaction): messages that queue
    while a commit is under way share the next one; a refusal is answered on its own."""
    cast = await build_cast(live.app)
    mid = cast.meeting_id
    peers = await seat_everyone(people, cast, claimant=cast.claimant)
    sockets = live.app.starlette.state.meeting_sockets
    assert (sockets._writer is not None) == db_url.startswith("sqlite")
    sockets.configure(Limits(chat=(1000, 1.0)))
    batches: list[int] = []

    async def store(posts: list[ChatPost]) -> list[Posted | Refused]:
        batches.append(len(posts))
        return await sockets._store_batch(posts)

    writer = ChatWriter(store, limit=15)
    senders = [cast.claimant, cast.mediator] * 10
    posts = [ChatPost(mid, p.id, f"w{n}", f"第{n}条") for n, p in enumerate(senders)]
    posts.insert(7, ChatPost(mid, cast.claimant.id, "forged", "偷看", room="notes"))
    answers = await asyncio.gather(*(writer.post(p) for p in posts), return_exceptions=True)
    assert batches == [15, 6]  # everything queued before the first commit, 15 at a time
    refused = answers.pop(7)
    assert isinstance(refused, Refused) and refused.code == "invalid_room"
    assert [a.message.seq for a in answers if isinstance(a, Posted)] == list(range(1, 21))
    # Everyone in the room got every message, in order.
    for peer in peers.values():
        await peer.until(lambda p: len(p.received("meeting.chat")) == 20)
        assert [m["seq"] for m in peer.received("meeting.chat")] == list(range(1, 21))
