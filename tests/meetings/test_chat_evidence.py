"""Evidence items shown in the session's chat as links: only where everyone who may read the
room may see the item, and only items of the session's own case."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from portal.accounts.models import User
from portal.cases import service as cases
from portal.cases.models import Case, CaseMaterial
from portal.meetings.models import MeetingMessage
from tests.factories import _state, make_draft
from tests.meetings.conftest import Crowd, build_cast
from tests.meetings.test_sockets import seat_everyone
from tests.realtime.test_socket_auth import Live


async def test_evidence_links_reach_only_rooms_that_may_see_them(live: Live, people: Crowd) -> None:
    cast = await build_cast(live.app, mode="text")
    mid, state = cast.meeting_id, _state(live.app)
    other = await make_draft(live.app, cast.stranger, None)
    async with state.db() as db:
        items = {
            m.kind: m.id
            for m in await db.scalars(
                select(CaseMaterial).where(CaseMaterial.case_id == cast.case_id)
            )
        }
        foreign = await db.scalar(select(CaseMaterial.id).where(CaseMaterial.case_id == other.id))
        case = await db.get(Case, cast.case_id)
        mediator = await db.get(User, cast.mediator.id)
        assert case is not None and mediator is not None
        private = await cases.add_material(
            db,
            case,
            mediator,
            kind="other",
            filename="note.pdf",
            content_type="application/pdf",
            size=10,
            sha256="ab" * 32,
            title="调解员笔记",
            visibility="mediator",
        )
        private_id = private.id

    async def stored() -> int:
        async with state.db() as db:
            return int(await db.scalar(select(func.count(MeetingMessage.id))) or 0)

    peers = await seat_everyone(people, cast, claimant=cast.claimant, rep1=cast.rep1)
    m, c, r = peers["mediator"], peers["claimant"], peers["rep1"]

    # The contract is shared with both parties: it may be shown in the joint room.
    ack = await c.act(
        "meeting.chat", mid, client_id="e1", text="请看合同", material_id=items["contract"]
    )
    assert ack["ok"], ack
    url = f"/cases/{cast.case_id}/materials/{items['contract']}"
    await r.until(lambda p: any(e["material_url"] == url for e in p.received("meeting.chat")))
    (shown,) = [e for e in r.received("meeting.chat") if e["material_id"]]
    assert shown["material_title"] and shown["text"] == "请看合同"
    synced = await r.act("meeting.sync", mid, after_seq=0)
    assert [e["material_url"] for e in synced["messages"]] == [url]

    # The identity papers never reach the firm; the mediator-only item reaches only the notes;
    # another case's item is not this session's. Each refused, nothing stored.
    before = await stored()
    for sender, material, room, code in [
        (c, items["identity"], None, "not_shared"),
        (m, private_id, None, "not_shared"),
        (c, foreign, None, "invalid_target"),
        (c, 10_000_000, None, "invalid_target"),
    ]:
        ack = await sender.act(
            "meeting.chat",
            mid,
            client_id=f"x{code}{material}",
            text="看",
            material_id=material,
            **({"room": room} if room else {}),
        )
        assert ack.get("error") == code, (material, ack)
    assert await stored() == before
    bad = await c.act("meeting.chat", mid, client_id="bad", text="看", material_id="1")
    assert bad["error"] == "invalid"

    assert (
        await m.act(
            "meeting.chat", mid, client_id="n1", text="备忘", room="notes", material_id=private_id
        )
    )["ok"]
    # In the claimant's private room, the claimant may show their identity papers.
    assert (await m.act("meeting.move", mid, room="caucus_claimant", side="claimant"))["ok"]
    assert (await m.act("meeting.move", mid, room="caucus_claimant", user_id=cast.mediator.id))[
        "ok"
    ]
    await c.until_state(room="caucus_claimant")
    ack = await c.act(
        "meeting.chat", mid, client_id="e2", text="身份证", material_id=items["identity"]
    )
    assert ack["ok"], ack
    await m.until(
        lambda p: any(e["material_id"] == items["identity"] for e in p.received("meeting.chat"))
    )
    # The firm, in the joint room, got the contract and nothing else.
    await asyncio.sleep(0.3)
    assert {e["material_id"] for e in r.received("meeting.chat")} == {items["contract"]}
