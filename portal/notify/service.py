"""Notifications: write them into the caller's transaction (the outbox), list and read them.

``notify`` only adds rows to the session it is given and never commits: the notification exists
if, and only if, the change it reports commits. The delivery worker (``portal.notify.delivery``)
sends the email and SMS rows afterwards.
"""

from __future__ import annotations

import gettext
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.db import utcnow
from portal.errors import NotFound
from portal.i18n import Msg
from portal.notify.models import CHANNELS, EXTERNAL_CHANNELS, Notification

ALL_CHANNELS: tuple[str, ...] = CHANNELS


def _merged_params(title: Msg, body: Msg) -> dict[str, Any]:
    params = dict(title.params)
    for key, value in body.params.items():
        if key in params and params[key] != value:
            raise ValueError(f"title and body give different values for {{{key}}}")
        params[key] = value
    # Fail here, in the caller's code, rather than at flush time inside its transaction.
    json.dumps(params)
    return params


def _check_link(link: str) -> None:
    # A local path only: the worker prefixes BASE_URL, so nothing can point off-site.
    if link and (not link.startswith("/") or link.startswith("//") or len(link) > 300):
        raise ValueError("a notification link is a local path such as /cases/12")


_ATTACHMENT_RE = re.compile(r"[a-z][a-z0-9_]{0,29}:[A-Za-z0-9_-]{1,69}")


def _check_attachment(attachment: str | None) -> None:
    if attachment is not None and not _ATTACHMENT_RE.fullmatch(attachment):
        raise ValueError("a notification attachment is a reference such as meeting:12")


# A flag in ``AsyncSession.info``: this session queued email or SMS for the delivery worker.
OUTBOX_PENDING = "jiefen.outbox_pending"


async def notify(
    db: AsyncSession,
    user_id: int,
    title: Msg,
    body: Msg,
    *,
    link: str = "",
    channels: Sequence[str] = ALL_CHANNELS,
    attachment: str | None = None,
) -> list[Notification]:
    """Add one notification per channel to ``db`` without committing (the outbox pattern).

    In-app rows are sent at once; email and SMS rows wait for the delivery worker. A channel
    for which the user has no contact (no email address, no phone number) is skipped.
    ``attachment`` (``"<kind>:<key>"``, such as ``"meeting:12"``) goes with the email: the
    worker has the builder registered for that kind make the file when it sends it.
    """
    unknown = set(channels) - set(CHANNELS)
    if unknown:
        raise ValueError(f"unknown channels: {sorted(unknown)}")
    _check_link(link)
    _check_attachment(attachment)
    params = _merged_params(title, body)
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound()
    now = utcnow()
    rows: list[Notification] = []
    for channel in dict.fromkeys(channels):
        if channel != "in_app" and not user.is_active:
            continue  # a deactivated account is not texted or emailed
        if channel == "email" and user.email_index is None:
            continue
        if channel == "sms" and user.phone_index is None:
            continue
        in_app = channel == "in_app"
        row = Notification(
            user_id=user_id,
            channel=channel,
            title_msgid=title.msgid,
            body_msgid=body.msgid,
            params=params,
            link=link,
            attachment=attachment if channel == "email" else None,
            status="sent" if in_app else "pending",
            attempts=0,
            created_at=now,
            sent_at=now if in_app else None,
        )
        db.add(row)
        rows.append(row)
        if not in_app:
            db.info[OUTBOX_PENDING] = True  # web.db_session wakes the worker afterwards
    return rows


async def unread_count(db: AsyncSession, user_id: int) -> int:
    count = await db.scalar(
        select(func.count())
        .select_from(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.channel == "in_app",
            Notification.read_at.is_(None),
        )
    )
    return int(count or 0)


async def list_for_user(db: AsyncSession, user_id: int, limit: int = 50) -> list[Notification]:
    """The user's in-app notifications, newest first."""
    rows = await db.scalars(
        select(Notification)
        .where(Notification.user_id == user_id, Notification.channel == "in_app")
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
    )
    return list(rows)


async def mark_read(db: AsyncSession, user_id: int, notification_id: int) -> Notification:
    """Mark one of the user's in-app notifications read and commit; others' answer NotFound."""
    row = await db.get(Notification, notification_id)
    if row is None or row.user_id != user_id or row.channel != "in_app":
        raise NotFound()
    if row.read_at is None:
        row.read_at = utcnow()
        await db.commit()
    return row


async def mark_all_read(db: AsyncSession, user_id: int) -> int:
    """Mark every unread in-app notification of the user read, commit, and return how many."""
    result = await db.execute(
        update(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.channel == "in_app",
            Notification.read_at.is_(None),
        )
        .values(read_at=utcnow())
    )
    await db.commit()
    return int(cast("CursorResult[Any]", result).rowcount or 0)


async def delivery_log(
    db: AsyncSession, user_id: int, *, link: str | None = None, limit: int = 100
) -> list[Notification]:
    """The user's email and SMS notifications with their delivery status, newest first.

    ``link`` narrows the log to one object (``/cases/12``), for showing that a party was told.
    """
    query = select(Notification).where(
        Notification.user_id == user_id, Notification.channel.in_(EXTERNAL_CHANNELS)
    )
    if link is not None:
        query = query.where(Notification.link == link)
    rows = await db.scalars(
        query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
    )
    return list(rows)


def render(
    notification: Notification,
    catalogues: Mapping[str, gettext.NullTranslations],
    locale: str,
) -> tuple[str, str]:
    """Title and body in ``locale`` (the English source when there is no such catalogue)."""
    translations = catalogues.get(locale) or gettext.NullTranslations()
    params = dict(notification.params or {})
    return (
        Msg(notification.title_msgid, params).render(translations),
        Msg(notification.body_msgid, params).render(translations),
    )
