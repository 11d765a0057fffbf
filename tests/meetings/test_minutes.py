"""Minutes (调解笔录), on both databases: autosave and versions, stale saves, putting them to the
parties, confirming and declining, a change voiding answers, the confirmed minutes' leaf
checked by the offline verifier, the pages (htmx blocks and full pages) and who sees what."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.audit.models import AuditEvent
from portal.cases.models import CaseEvent
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence import log
from portal.evidence.integrity import verify_log
from portal.evidence.models import LogLeaf
from portal.evidence.service import forget_person
from portal.evidence.verify.leaf import (
    LeafError,
    decode_leaf,
    encode_leaf,
    leaf_hash_hex,
    minutes_body,
)
from portal.evidence.verify.receipt import dump_receipt, verify_receipt
from portal.meetings import minutes
from portal.meetings import service as meetings
from portal.meetings.minutes_models import MinutesResponse, MinutesVersion
from portal.notify.models import Notification
from tests.conftest import csrf_token, log_in, post_form
from tests.factories import Person
from tests.meetings.conftest import Cast, build_cast

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent.parent
HX = {"HX-Request": "true"}


# -- helpers --------------------------------------------------------------------------------


async def run(app: Any, call: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with app.starlette.state.db() as db:
        return await call(db)


async def as_user(
    app: Any,
    person: Person,
    meeting_id: int,
    call: Callable[[AsyncSession, Any, User], Awaitable[T]],
) -> T:
    """Run a minutes service call as ``person`` in a session of its own."""

    async def go(db: AsyncSession) -> T:
        user = await db.get(User, person.id)
        assert user is not None
        resource = await meetings.access(db, meeting_id)
        return await call(db, resource, user)

    return await run(app, go)


async def write(app: Any, cast: Cast, text: str, base: int) -> minutes.Saved:
    return await as_user(
        app,
        cast.mediator,
        cast.meeting_id,
        lambda db, r, u: minutes.save_minutes(db, r, u, text, base),
    )


async def present(app: Any, cast: Cast, text: str, base: int) -> MinutesVersion:
    return await as_user(
        app,
        cast.mediator,
        cast.meeting_id,
        lambda db, r, u: minutes.present_minutes(db, r, u, text, base),
    )


async def confirm(
    app: Any, cast: Cast, person: Person, number: int, sha256: str
) -> minutes.Confirmed:
    return await as_user(
        app,
        person,
        cast.meeting_id,
        lambda db, r, u: minutes.confirm_minutes(db, r, u, number, sha256),
    )


async def decline(
    app: Any, cast: Cast, person: Person, number: int, sha256: str, reason: str
) -> MinutesResponse:
    return await as_user(
        app,
        person,
        cast.meeting_id,
        lambda db, r, u: minutes.decline_minutes(db, r, u, number, sha256, reason),
    )


async def versions(app: Any, meeting_id: int) -> list[MinutesVersion]:
    return await run(
        app,
        lambda db: minutes._all_versions(db, meeting_id),
    )


async def open_session(app: Any, cast: Cast) -> None:
    """The mediator joins: the session is open."""

    async def go(db: AsyncSession) -> None:
        user = await db.get(User, cast.mediator.id)
        assert user is not None
        resource = await meetings.access(db, cast.meeting_id)
        await meetings.join_meeting(db, resource, user, "sid-mediator", device="test")

    await run(app, go)


async def age_drafts(app: Any, meeting_id: int, minutes_ago: int = 3) -> None:
    """Make the drafts look saved ``minutes_ago`` minutes ago (beyond the coalescing window)."""

    async def go(db: AsyncSession) -> None:
        await db.execute(
            update(MinutesVersion)
            .where(MinutesVersion.meeting_id == meeting_id)
            .values(saved_at=utcnow() - timedelta(minutes=minutes_ago))
        )
        await db.commit()

    await run(app, go)


async def titles(app: Any, person: Person) -> list[str]:
    return list(
        await run(
            app,
            lambda db: db.scalars(
                select(Notification.title_msgid)
                .where(Notification.user_id == person.id, Notification.channel == "in_app")
                .order_by(Notification.id)
            ),
        )
    )


async def audit_actions(app: Any, meeting_id: int) -> list[str]:
    return list(
        await run(
            app,
            lambda db: db.scalars(
                select(AuditEvent.action)
                .where(
                    AuditEvent.object_type == "meeting",
                    AuditEvent.object_id == str(meeting_id),
                    AuditEvent.action.like("minutes.%"),
                )
                .order_by(AuditEvent.id)
            ),
        )
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def in_english(client: httpx.AsyncClient) -> None:
    token = await csrf_token(client)
    done = await client.post("/preferences", data={"csrf_token": token, "locale": "en"})
    assert done.status_code == 303


# -- the service ----------------------------------------------------------------------------


async def test_autosave_coalesces_saves_into_versions(app: Any) -> None:
    cast = await build_cast(app)
    first = await write(app, cast, "调解笔录\n时间：今天", 0)
    assert (first.version.number, first.version.revision, first.coalesced) == (1, 1, False)
    # Saves of the same draft by its author within two minutes update it.
    for n in range(2, 6):
        saved = await write(app, cast, f"调解笔录\n时间：今天\n第{n}段", n - 1)
        assert (saved.version.number, saved.version.revision, saved.coalesced) == (1, n, True)
    found = await versions(app, cast.meeting_id)
    assert len(found) == 1 and found[0].saves == 5 and found[0].sha256 == sha(found[0].text)
    # The same text again changes nothing.
    same = await write(app, cast, "调解笔录\n时间：今天\n第5段", 5)
    assert not same.changed and same.version.revision == 5
    # After a pause of more than two minutes, a save makes a new version.
    await age_drafts(app, cast.meeting_id)
    later = await write(app, cast, "调解笔录\r\n时间：今天\r\n第5段\r\n补充", 5)
    assert (later.version.number, later.version.revision, later.coalesced) == (2, 6, False)
    found = await versions(app, cast.meeting_id)
    assert [v.number for v in found] == [2, 1]
    assert found[0].text == "调解笔录\n时间：今天\n第5段\n补充"  # line breaks as LF
    assert found[1].text == "调解笔录\n时间：今天\n第5段"  # the old version is kept
    assert await audit_actions(app, cast.meeting_id) == ["minutes.save"] * 6


async def test_stale_and_bad_saves_are_refused_and_change_nothing(app: Any) -> None:
    cast = await build_cast(app)
    await write(app, cast, "第一稿", 0)
    await write(app, cast, "第一稿，改", 1)  # another tab, revision 2 now
    with pytest.raises(minutes.StaleMinutes) as stale:
        await write(app, cast, "旧标签页里的文字", 1)
    assert stale.value.message.params["version"] == 1
    for text, base in [("   \n ", 2), ("字" * (minutes.MAX_MINUTES + 1), 2), ("x", -1)]:
        with pytest.raises(DomainError):
            await write(app, cast, text, base)
    found = await versions(app, cast.meeting_id)
    assert [(v.number, v.text, v.revision) for v in found] == [(1, "第一稿，改", 2)]
    assert await audit_actions(app, cast.meeting_id) == ["minutes.save"] * 2
    # Only the session's mediator writes.
    with pytest.raises(NotFound):
        await as_user(
            app,
            cast.claimant,
            cast.meeting_id,
            lambda db, r, u: minutes.save_minutes(db, r, u, "我来写", 2),
        )


async def test_present_confirm_and_the_evidence_log(app: Any) -> None:
    cast = await build_cast(app)
    await write(app, cast, "草稿", 0)
    with pytest.raises(DomainError):  # not before the session has started
        await present(app, cast, "草稿", 1)
    await open_session(app, cast)
    text = "调解笔录\n申请人张三与被申请人就信用卡分期达成一致。"
    version = await present(app, cast, text, 1)  # the editor's text is saved first
    assert (version.number, version.state, version.sha256) == (1, "presented", sha(text))
    assert "Minutes to confirm" in await titles(app, cast.claimant)
    assert "Minutes to confirm" in await titles(app, cast.rep2)
    assert "Minutes to confirm" not in await titles(app, cast.observer)
    with pytest.raises(DomainError):  # the same text again: already put to them
        await present(app, cast, text, version.revision)

    # Answers are bound to the version and its text.
    for number, digest in [(2, sha(text)), (1, sha("别的文字")), (1, "")]:
        with pytest.raises(DomainError):
            await confirm(app, cast, cast.claimant, number, digest)
    with pytest.raises(NotFound):  # an observer, or the mediator, answers for no side
        await confirm(app, cast, cast.observer, 1, sha(text))
    first = await confirm(app, cast, cast.claimant, 1, sha(text))
    assert not first.complete and first.leaf is None
    with pytest.raises(DomainError):
        await confirm(app, cast, cast.claimant, 1, sha(text))
    assert "Minutes confirmed by a party" in await titles(app, cast.mediator)
    # The firm confirms through any one of its representatives.
    done = await confirm(app, cast, cast.rep2, 1, sha(text))
    assert done.complete and done.leaf is not None
    with pytest.raises(DomainError):
        await confirm(app, cast, cast.rep1, 1, sha(text))
    found = await versions(app, cast.meeting_id)
    assert found[0].state == "confirmed" and found[0].leaf_id == done.leaf.id
    assert "Minutes confirmed" in await titles(app, cast.observer)
    # Confirmed minutes are final.
    with pytest.raises(DomainError):
        await write(app, cast, text + "\n再补充", found[0].revision)

    state = app.starlette.state
    async with state.db() as db:
        await log.integrate_all(db)
        leaves = list(
            await db.scalars(
                select(LogLeaf).where(LogLeaf.case_id == cast.case_id).order_by(LogLeaf.id)
            )
        )
        assert leaves[-1].id == done.leaf.id and leaves[-1].type == "minutes.confirmed"
        leaf = decode_leaf(bytes(leaves[-1].data))
        # The case's hash chain goes on.
        assert leaf.prev == leaf_hash_hex(bytes(leaves[-2].data))
        body = leaf.body
        assert body["sha256"] == sha(text) and body["size"] == len(text.encode())
        assert (body["meeting"], body["case_id"], body["version"]) == (
            cast.meeting_id,
            cast.case_id,
            1,
        )
        assert [c["side"] for c in body["confirmations"]] == ["claimant", "respondent"]  # type: ignore[index, union-attr]
        raw = bytes(leaves[-1].data).decode()
        assert "张三" not in raw and "公司代表" not in raw and "信用卡" not in raw
        event = await db.scalar(
            select(CaseEvent).where(CaseEvent.case_id == cast.case_id).order_by(CaseEvent.id.desc())
        )
        assert event is not None and event.data["action"] == "minutes_confirmed"
        receipt = await log.make_leaf_receipt(db, done.leaf.id, state.log_key)
    report = verify_receipt(receipt, text.encode("utf-8"), [state.log_key.vkey])
    assert report.trusted and report.check("file").ok is True, report.verdict()
    assert f"session {cast.meeting_id}, version 1" in report.check("leaf").message_en
    other = verify_receipt(receipt, (text + " ").encode("utf-8"), [state.log_key.vkey])
    assert not other.ok and other.check("file").ok is False
    # The administrators' full verification checks the leaf against the stored minutes.
    async with state.db() as db:
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert result.ok, result.problem
        # Erasing a confirmer's secret leaves the log verifiable.
        assert await forget_person(db, cast.claimant.id)
        await db.commit()
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert result.ok, result.problem
        await db.execute(
            update(MinutesVersion)
            .where(MinutesVersion.id == found[0].id)
            .values(text=text + "（事后改动）")
        )
        await db.commit()
        result = await verify_log(db, state.blobs, state.log_key, record=False)
        assert not result.ok and f"minutes version {found[0].id}" in result.problem
        assert "sha256" in result.problem
    assert await audit_actions(app, cast.meeting_id) == [
        "minutes.save",
        "minutes.save",
        "minutes.present",
        "minutes.confirm",
        "minutes.confirm",
        "minutes.confirmed",
    ]


async def test_a_change_after_confirmations_voids_them(app: Any) -> None:
    cast = await build_cast(app)
    await open_session(app, cast)
    v1 = await present(app, cast, "第一版", 0)
    await confirm(app, cast, cast.claimant, 1, v1.sha256)
    saved = await write(app, cast, "第二版：金额更正", v1.revision)
    assert saved.version.number == 2 and saved.superseded is not None
    found = await versions(app, cast.meeting_id)
    assert [(v.number, v.state) for v in found] == [(2, "draft"), (1, "superseded")]
    for person in (cast.claimant, cast.rep1, cast.rep2, cast.observer):
        assert "Minutes changed" in await titles(app, person)
    # The old version can no longer be answered, and the draft is not put to anyone yet.
    with pytest.raises(DomainError):
        await confirm(app, cast, cast.rep1, 1, v1.sha256)
    with pytest.raises(DomainError):
        await confirm(app, cast, cast.rep1, 2, saved.version.sha256)
    v2 = await present(app, cast, "第二版：金额更正", saved.version.revision)
    assert v2.number == 2
    # The claimant's earlier confirmation does not carry over.
    first = await confirm(app, cast, cast.rep1, 2, v2.sha256)
    assert not first.complete
    done = await confirm(app, cast, cast.claimant, 2, v2.sha256)
    assert done.complete
    assert "minutes.supersede" in await audit_actions(app, cast.meeting_id)


async def test_a_party_declines_with_a_reason(app: Any) -> None:
    cast = await build_cast(app)
    await open_session(app, cast)
    v1 = await present(app, cast, "笔录：双方同意退款一千元。", 0)
    with pytest.raises(DomainError):
        await decline(app, cast, cast.claimant, 1, v1.sha256, "   ")
    with pytest.raises(DomainError):
        await decline(app, cast, cast.claimant, 1, v1.sha256, "长" * 2001)
    answer = await decline(app, cast, cast.claimant, 1, v1.sha256, "金额应为一千五百元")
    assert (answer.answer, answer.reason, answer.sha256) == (
        "declined",
        "金额应为一千五百元",
        v1.sha256,
    )
    assert "Minutes declined" in await titles(app, cast.mediator)
    # They may still confirm it after all; the reason goes.
    await confirm(app, cast, cast.claimant, 1, v1.sha256)
    await confirm(app, cast, cast.rep1, 1, v1.sha256)
    found = await versions(app, cast.meeting_id)
    assert found[0].state == "confirmed"
    assert await audit_actions(app, cast.meeting_id) == [
        "minutes.save",
        "minutes.present",
        "minutes.decline",
        "minutes.confirm",
        "minutes.confirm",
        "minutes.confirmed",
    ]


def test_differences_between_versions() -> None:
    old = "第一行\n第二行\n金额：一千元\n" + "\n".join(f"不变{i}" for i in range(10)) + "\n结尾"
    new = (
        "第一行\n第二行\n金额：一千五百元\n"
        + "\n".join(f"不变{i}" for i in range(10))
        + "\n结尾\n新增一行"
    )
    lines = minutes.diff_texts(old, new)
    kinds = [line.kind for line in lines]
    assert kinds == [
        "same",
        "same",
        "changed",
        "same",
        "same",
        "skipped",
        "same",
        "same",
        "added",
    ]
    changed = lines[2]
    assert ("+", "五百") in changed.parts and "".join(
        t for op, t in changed.parts if op != "+"
    ) == "金额：一千元"
    assert lines[5].skipped == 7
    assert lines[-1].parts == (("+", "新增一行"),)
    unlike = minutes.diff_texts("甲乙丙", "完全不同的内容")
    assert [line.kind for line in unlike] == ["removed", "added"]
    assert minutes.diff_texts("同", "同") == [minutes.DiffLine("same", (("=", "同"),))]


def test_the_minutes_leaf_encoding_is_strict() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    person = "a" * 64
    good = minutes_body(
        sha256="b" * 64,
        size=12,
        meeting=3,
        case_id=4,
        version=2,
        mediator=person,
        confirmations=[
            {"side": "claimant", "person": person, "time": "2026-12-03T08:00:00.000000Z"},
            {"side": "respondent", "person": person, "time": "2026-12-03T08:01:00.000000Z"},
        ],
    )
    data = encode_leaf("minutes.confirmed", good, case="AB-2026-000001", prev=None, time=when)
    assert decode_leaf(data).body == good
    bad_bodies = [
        {**good, "sha256": "B" * 64},
        {**good, "version": 0},
        {**good, "confirmations": []},
        {**good, "confirmations": list(reversed(good["confirmations"]))},  # type: ignore[call-overload]
        {**good, "confirmations": [{"side": "observer", "person": person, "time": "x"}]},
        {k: v for k, v in good.items() if k != "mediator"},
    ]
    for body in bad_bodies:
        with pytest.raises(LeafError):
            encode_leaf("minutes.confirmed", body, case="AB-2026-000001", prev=None, time=when)


# -- the pages ------------------------------------------------------------------------------


async def test_autosave_over_htmx_and_a_stale_tab(app: Any, client: httpx.AsyncClient) -> None:
    cast = await build_cast(app)
    await log_in(client, cast.mediator.login, cast.mediator.password)
    await in_english(client)
    room = await client.get(f"/meetings/{cast.meeting_id}")
    assert f'hx-get="/meetings/{cast.meeting_id}/minutes"' in room.text
    panel = await client.get(f"/meetings/{cast.meeting_id}/minutes", headers=HX)
    assert panel.status_code == 200 and "<html" not in panel.text
    assert 'hx-trigger="input changed delay:1500ms"' in panel.text
    assert 'name="base" value="0"' in panel.text
    token = await csrf_token(client)
    path = f"/meetings/{cast.meeting_id}/minutes/save"
    headers = {**HX, "X-CSRF-Token": token}
    saved = await client.post(
        path, data={"text": "调解笔录 <b>初稿</b>", "base": "0"}, headers=headers
    )
    assert saved.status_code == 200 and "<html" not in saved.text
    assert 'id="minutes-status"' in saved.text and "version 1" in saved.text
    assert "Saved at" in saved.text and 'name="base" value="1"' in saved.text
    again = await client.post(path, data={"text": "调解笔录 初稿二", "base": "1"}, headers=headers)
    assert "version 1" in again.text and 'name="base" value="2"' in again.text
    # Another tab still at revision 1 is refused, clearly, and changes nothing.
    stale = await client.post(path, data={"text": "旧的", "base": "1"}, headers=headers)
    assert stale.status_code == 400 and "changed elsewhere" in stale.text
    assert 'name="base" value="1"' in stale.text
    empty = await client.post(path, data={"text": "  ", "base": "2"}, headers=headers)
    assert empty.status_code == 400 and "empty" in empty.text
    too_long = await client.post(path, data={"text": "字" * 100_001, "base": "2"}, headers=headers)
    assert too_long.status_code == 400 and "at most 100000 characters" in too_long.text
    wrong = await client.post(path, data={"text": "x", "base": "abc"}, headers=headers)
    assert wrong.status_code == 400
    found = await versions(app, cast.meeting_id)
    assert [(v.number, v.text, v.revision) for v in found] == [(1, "调解笔录 初稿二", 2)]
    # Without htmx: the page again, with the message and the text that was not saved.
    # (A stale tab gets its text beside the editor, which shows the newer minutes.)
    plain = await post_form(client, path, {"text": "没保存的文字", "base": "1"})
    assert plain.status_code == 400 and "<html" in plain.text
    assert 'data-testid="minutes-unsaved">没保存的文字</textarea>' in plain.text
    assert 'data-testid="minutes-text">调解笔录 初稿二</textarea>' in plain.text
    blank = await post_form(client, path, {"text": " ", "base": "2"})
    assert blank.status_code == 400 and "empty" in blank.text
    ok = await post_form(client, path, {"text": "调解笔录 定稿", "base": "2"})
    assert (
        ok.status_code == 303 and ok.headers["location"] == f"/meetings/{cast.meeting_id}/minutes"
    )
    page = await client.get(ok.headers["location"])
    assert "Minutes saved: version 1." in page.text and "调解笔录 定稿" in page.text


async def test_the_parties_pages_confirm_and_decline(app: Any, client: httpx.AsyncClient) -> None:
    cast = await build_cast(app)
    await open_session(app, cast)
    draft = await write(app, cast, "只有调解员能看到的草稿", 0)
    await log_in(client, cast.claimant.login, cast.claimant.password)
    await in_english(client)
    page = await client.get(f"/meetings/{cast.meeting_id}/minutes")
    assert page.status_code == 200 and "只有调解员能看到的草稿" not in page.text
    assert 'data-testid="minutes-none"' in page.text and 'hx-trigger="every 30s"' in page.text
    assert (await client.get(f"/meetings/{cast.meeting_id}/minutes/1.txt")).status_code == 404
    assert (await client.get(f"/meetings/{cast.meeting_id}/minutes?version=1")).status_code == 404
    # A party cannot write.
    refused = await post_form(
        client, f"/meetings/{cast.meeting_id}/minutes/save", {"text": "我改", "base": "1"}
    )
    assert refused.status_code == 404
    text = "调解笔录\n双方同意：被申请人退还手续费 300 元。"
    v1 = await present(app, cast, text, draft.version.revision)
    panel = await client.get(f"/meetings/{cast.meeting_id}/minutes", headers=HX)
    assert text.split("\n")[1] in panel.text and 'data-testid="minutes-confirm"' in panel.text
    assert 'hx-trigger="every 30s"' not in panel.text  # nothing reloads what they are reading
    token = await csrf_token(client)
    headers = {**HX, "X-CSRF-Token": token}
    bad = await client.post(
        f"/meetings/{cast.meeting_id}/minutes/confirm",
        data={"version": "1", "sha256": sha("别的")},
        headers=headers,
    )
    assert bad.status_code == 400 and "not the minutes put to you" in bad.text
    no_reason = await client.post(
        f"/meetings/{cast.meeting_id}/minutes/decline",
        data={"version": "1", "sha256": v1.sha256, "reason": ""},
        headers=headers,
    )
    assert no_reason.status_code == 400 and "Say what is wrong" in no_reason.text
    declined = await client.post(
        f"/meetings/{cast.meeting_id}/minutes/decline",
        data={"version": "1", "sha256": v1.sha256, "reason": "手续费应为 350 元"},
        headers=headers,
    )
    assert declined.status_code == 200 and "sent to the mediator" in declined.text
    assert "手续费应为 350 元" in declined.text
    confirmed = await client.post(
        f"/meetings/{cast.meeting_id}/minutes/confirm",
        data={"version": "1", "sha256": v1.sha256},
        headers=headers,
    )
    assert confirmed.status_code == 200 and "Your confirmation was recorded" in confirmed.text
    assert 'data-testid="minutes-confirm"' not in confirmed.text

    # The firm's representative confirms without htmx: the minutes are final.
    firm = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with firm:
        await log_in(firm, cast.rep1.login, cast.rep1.password)
        await in_english(firm)
        done = await post_form(
            firm,
            f"/meetings/{cast.meeting_id}/minutes/confirm",
            {"version": "1", "sha256": v1.sha256},
        )
        assert done.status_code == 303
        final = await firm.get(done.headers["location"])
        assert "Every party has confirmed the minutes" in final.text
        assert 'data-testid="minutes-final"' in final.text
        text_file = await firm.get(f"/meetings/{cast.meeting_id}/minutes/1.txt")
        assert text_file.status_code == 200 and text_file.content == text.encode("utf-8")
        found = await versions(app, cast.meeting_id)
        async with app.starlette.state.db() as db:
            leaf = await db.get(LogLeaf, found[0].leaf_id)
            assert leaf is not None
            leaf_hash = bytes(leaf.hash).hex()
        assert f'href="/evidence/receipts/{leaf_hash}.json"' in final.text
        receipt = await firm.get(f"/evidence/receipts/{leaf_hash}.json")
        assert receipt.status_code == 200

    # The offline verifier, as a court runs it, on the receipt and the text file.
    key = app.starlette.state.log_key.vkey
    report = verify_receipt(receipt.content, text_file.content, [key])
    assert report.trusted and report.check("file").ok is True, report.verdict()
    assert (
        json.loads(base64.b64decode(json.loads(receipt.content)["leaf"]).split(b"\n", 1)[1])["type"]
        == "minutes.confirmed"
    )


async def test_the_offline_verifier_command_checks_confirmed_minutes(
    app: Any, tmp_path: Path
) -> None:
    cast = await build_cast(app)
    await open_session(app, cast)
    text = "调解笔录：双方和解。"
    v1 = await present(app, cast, text, 0)
    await confirm(app, cast, cast.claimant, 1, v1.sha256)
    done = await confirm(app, cast, cast.rep1, 1, v1.sha256)
    assert done.leaf is not None
    state = app.starlette.state
    async with state.db() as db:
        receipt = await log.make_leaf_receipt(db, done.leaf.id, state.log_key)
    (tmp_path / "receipt.json").write_bytes(dump_receipt(receipt))
    (tmp_path / "minutes.txt").write_bytes(text.encode("utf-8"))
    (tmp_path / "other.txt").write_bytes((text + "改").encode("utf-8"))

    def verify(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "portal.evidence.verify.cli", *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    good = verify(
        str(tmp_path / "receipt.json"), str(tmp_path / "minutes.txt"), "--key", state.log_key.vkey
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.strip().splitlines()[-1].startswith("验证通过")
    assert "笔录" in good.stdout
    changed = verify(
        str(tmp_path / "receipt.json"), str(tmp_path / "other.txt"), "--key", state.log_key.vkey
    )
    assert changed.returncode == 1


async def test_who_sees_and_does_what(app: Any, client: httpx.AsyncClient) -> None:
    cast = await build_cast(app)
    await open_session(app, cast)
    v1 = await present(app, cast, "给各方确认的笔录", 0)
    await write(app, cast, "之后的草稿", v1.revision)  # withdraws v1, a new draft v2
    base = f"/meetings/{cast.meeting_id}/minutes"
    for person in (cast.stranger, cast.other_rep):
        async with httpx.AsyncClient(
            transport=client._transport, base_url="http://testserver"
        ) as other:
            await log_in(other, person.login, person.password)
            assert (await other.get(base)).status_code == 404
            assert (await other.get(f"{base}/1.txt")).status_code == 404
            for action in ("save", "present", "confirm", "decline"):
                response = await post_form(other, f"{base}/{action}", {"version": "1"})
                assert response.status_code == 404, action
    # The observer reads what was put to the parties, not the draft, and answers nothing.
    await log_in(client, cast.observer.login, cast.observer.password)
    page = await client.get(base)
    assert "给各方确认的笔录" in page.text and "之后的草稿" not in page.text
    assert 'data-testid="minutes-confirm"' not in page.text
    assert (await client.get(f"{base}/1.txt")).status_code == 200
    assert (await client.get(f"{base}/2.txt")).status_code == 404
    answer = await post_form(client, f"{base}/confirm", {"version": "1", "sha256": v1.sha256})
    assert answer.status_code == 404


async def test_the_mediator_sees_versions_and_differences(
    app: Any, client: httpx.AsyncClient
) -> None:
    cast = await build_cast(app)
    await open_session(app, cast)
    await write(app, cast, "金额：一千元\n<script>alert(1)</script>", 0)
    await age_drafts(app, cast.meeting_id)
    await write(app, cast, "金额：一千五百元\n<script>alert(1)</script>", 1)
    await log_in(client, cast.mediator.login, cast.mediator.password)
    await in_english(client)
    page = await client.get(f"/meetings/{cast.meeting_id}/minutes")
    assert page.status_code == 200
    assert 'data-testid="minutes-diff"' in page.text
    assert '<ins><span class="visually-hidden">added: </span>五百</ins>' in page.text
    assert "<script>alert(1)</script>" not in page.text  # escaped everywhere
    assert "&lt;script&gt;" in page.text
    old = await client.get(f"/meetings/{cast.meeting_id}/minutes?version=1")
    assert old.status_code == 200 and 'data-testid="minutes-diff"' not in old.text
    compared = await client.get(f"/meetings/{cast.meeting_id}/minutes?version=1&compare=2")
    assert '<del><span class="visually-hidden">removed: </span>五百</del>' in compared.text
    for query in ("version=9", "version=x", "version=2&compare=2", "version=2&compare=7"):
        missing = await client.get(f"/meetings/{cast.meeting_id}/minutes?{query}")
        assert missing.status_code == 404, query
    # Put to the parties: the mediator's view of the answers refreshes itself.
    found = await versions(app, cast.meeting_id)
    await present(app, cast, found[0].text, found[0].revision)
    panel = await client.get(f"/meetings/{cast.meeting_id}/minutes", headers=HX)
    assert "?part=responses" in panel.text and "no answer yet" in panel.text
    responses = await client.get(f"/meetings/{cast.meeting_id}/minutes?part=responses", headers=HX)
    assert responses.status_code == 200 and responses.text.lstrip().startswith(
        '<div id="minutes-responses"'
    )
    count = await run(
        app,
        lambda db: db.scalar(
            select(func.count())
            .select_from(MinutesVersion)
            .where(MinutesVersion.meeting_id == cast.meeting_id)
        ),
    )
    assert count == 2
