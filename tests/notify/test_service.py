"""The outbox: notifications join the caller's transaction; unread counts; reading; rendering."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from portal.accounts.models import User
from portal.errors import NotFound
from portal.i18n import _l, load_catalogues
from portal.notify import service as notifications
from portal.notify.models import Notification
from portal.policy import Role
from tests.factories import make_user

PASSWORD_CHANGED = _l("Your password has been changed. Other devices have been logged out.")
ACCOUNT_UPDATED = _l("Account updated.")


async def all_rows(app: Any) -> list[Notification]:
    async with app.starlette.state.db() as db:
        return list(await db.scalars(select(Notification).order_by(Notification.id)))


async def test_notification_exists_only_if_the_change_commits(app: Any) -> None:
    person = await make_user(app, Role.CONSUMER, email="a@example.com", phone="13800000001")
    async with app.starlette.state.db() as db:
        user = await db.get(User, person.id)
        assert user is not None
        user.display_name = "改名"
        rows = await notifications.notify(db, person.id, ACCOUNT_UPDATED, PASSWORD_CHANGED)
        assert len(rows) == 3
        await db.rollback()
    assert await all_rows(app) == []
    async with app.starlette.state.db() as db:
        unchanged = await db.get(User, person.id)
        assert unchanged is not None and unchanged.display_name != "改名"

    async with app.starlette.state.db() as db:
        user = await db.get(User, person.id)
        assert user is not None
        user.display_name = "改名"
        await notifications.notify(
            db, person.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, link="/account"
        )
        await db.commit()
    rows = await all_rows(app)
    by_channel = {row.channel: row for row in rows}
    assert sorted(by_channel) == ["email", "in_app", "sms"]
    in_app = by_channel["in_app"]
    assert in_app.status == "sent" and in_app.sent_at is not None and in_app.read_at is None
    for channel in ("email", "sms"):
        row = by_channel[channel]
        assert row.status == "pending" and row.sent_at is None and row.attempts == 0
        assert row.next_attempt_at is None
    assert all(row.title_msgid == ACCOUNT_UPDATED.msgid for row in rows)
    assert all(row.link == "/account" and row.created_at.tzinfo is not None for row in rows)


async def test_channels_without_a_contact_are_skipped(app: Any) -> None:
    email_only = await make_user(app, Role.CONSUMER, email="only-mail@example.com")
    phone_only = await make_user(app, Role.CONSUMER, phone="13800000002")
    async with app.starlette.state.db() as db:
        mail_rows = await notifications.notify(db, email_only.id, ACCOUNT_UPDATED, PASSWORD_CHANGED)
        phone_rows = await notifications.notify(
            db, phone_only.id, ACCOUNT_UPDATED, PASSWORD_CHANGED
        )
        sms_only = await notifications.notify(
            db, email_only.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, channels=("sms",)
        )
        await db.commit()
    assert [r.channel for r in mail_rows] == ["in_app", "email"]
    assert [r.channel for r in phone_rows] == ["in_app", "sms"]
    assert sms_only == []
    assert len(await all_rows(app)) == 4


async def test_bad_arguments_are_refused_before_anything_is_added(app: Any) -> None:
    person = await make_user(app, Role.CONSUMER)
    async with app.starlette.state.db() as db:
        for link in ("https://evil.example/x", "//evil.example/x", "cases/1", "/" + "x" * 300):
            with pytest.raises(ValueError, match="local path"):
                await notifications.notify(
                    db, person.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, link=link
                )
        with pytest.raises(ValueError, match="unknown channels"):
            await notifications.notify(
                db, person.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, channels=("fax",)
            )
        with pytest.raises(ValueError, match="different values"):
            await notifications.notify(db, person.id, _l("{n}", n=1), _l("{n}", n=2))
        with pytest.raises(NotFound):
            await notifications.notify(db, person.id + 999, ACCOUNT_UPDATED, PASSWORD_CHANGED)
        await db.commit()
    assert await all_rows(app) == []


async def test_unread_count_and_reading(app: Any) -> None:
    me = await make_user(app, Role.CONSUMER, email="me@example.com")
    other = await make_user(app, Role.CONSUMER, email="other@example.com")
    async with app.starlette.state.db() as db:
        for n in range(3):
            await notifications.notify(
                db, me.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, link=f"/cases/{n}"
            )
        [theirs] = await notifications.notify(
            db, other.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, channels=("in_app",)
        )
        await db.commit()

    async with app.starlette.state.db() as db:
        assert await notifications.unread_count(db, me.id) == 3  # email rows do not count
        listed = await notifications.list_for_user(db, me.id)
        assert [row.link for row in listed] == ["/cases/2", "/cases/1", "/cases/0"]
        assert {row.channel for row in listed} == {"in_app"}
        assert len(await notifications.list_for_user(db, me.id, limit=2)) == 2

        with pytest.raises(NotFound):
            await notifications.mark_read(db, me.id, theirs.id)
        [email_row] = [
            r for r in await notifications.delivery_log(db, me.id) if r.link == "/cases/0"
        ]
        with pytest.raises(NotFound):
            await notifications.mark_read(db, me.id, email_row.id)
        with pytest.raises(NotFound):
            await notifications.mark_read(db, me.id, 999_999)

        read = await notifications.mark_read(db, me.id, listed[0].id)
        assert read.read_at is not None
        assert await notifications.unread_count(db, me.id) == 2
        assert await notifications.mark_all_read(db, me.id) == 2
        assert await notifications.unread_count(db, me.id) == 0
        assert await notifications.unread_count(db, other.id) == 1  # untouched

    async with app.starlette.state.db() as db:
        assert all(row.read_at is not None for row in await notifications.list_for_user(db, me.id))
        theirs_now = await db.get(Notification, theirs.id)
        assert theirs_now is not None and theirs_now.read_at is None


async def test_delivery_log_lists_email_and_sms_receipts(app: Any) -> None:
    person = await make_user(app, Role.CONSUMER, email="log@example.com", phone="13800000003")
    async with app.starlette.state.db() as db:
        await notifications.notify(
            db, person.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, link="/cases/7"
        )
        await notifications.notify(
            db, person.id, ACCOUNT_UPDATED, PASSWORD_CHANGED, link="/cases/8"
        )
        await db.commit()
        log = await notifications.delivery_log(db, person.id)
        assert [(row.channel, row.link) for row in log] == [
            ("sms", "/cases/8"),
            ("email", "/cases/8"),
            ("sms", "/cases/7"),
            ("email", "/cases/7"),
        ]
        assert {row.status for row in log} == {"pending"}
        one_case = await notifications.delivery_log(db, person.id, link="/cases/7")
        assert [row.channel for row in one_case] == ["sms", "email"]
        count = await db.scalar(select(func.count()).select_from(Notification))
    assert count == 6


def test_render_translates_at_display_time() -> None:
    catalogues = load_catalogues()
    row = Notification(
        title_msgid=ACCOUNT_UPDATED.msgid,
        body_msgid="Use at least {count} characters for your password.",
        params={"count": 10},
    )
    assert notifications.render(row, catalogues, "zh_CN") == (
        "账号信息已更新。",
        "密码至少需要10个字符。",
    )
    assert notifications.render(row, catalogues, "en") == (
        "Account updated.",
        "Use at least 10 characters for your password.",
    )
    # An unknown language falls back to the English source rather than failing.
    assert notifications.render(row, catalogues, "fr")[0] == "Account updated."
