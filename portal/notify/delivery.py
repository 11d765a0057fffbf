"""Delivery: send the outbox's pending email and SMS notifications and record each outcome.

``deliver_pending`` takes one due row at a time and claims it in a short transaction (on
PostgreSQL with ``SELECT … FOR UPDATE SKIP LOCKED``; on SQLite a conditional update), so several
processes can deliver at once without sending anything twice, and no transaction stays open
during the network call. A failure is retried with exponential backoff
(1, 2, 4, 8, 16 minutes) and gives up after ``MAX_ATTEMPTS``; a refusal that retrying cannot fix
(no address on file, a recipient the server rejects for good) gives up at once.

An email whose notification names an attachment (``meeting:12``) carries the file that the
builder registered for that kind makes while the row is claimed (``portal.notify.attachments``),
so a retry carries the object's state at that moment.

``OutboxWorker`` runs it in the background; the app starts it in its lifespan and may ``wake()``
it after committing a notification.
"""

from __future__ import annotations

import gettext
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any, Protocol, cast

import aiosmtplib
from sqlalchemy import ColumnElement, CursorResult, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.models import User
from portal.accounts.service import contact_of, mask_phone
from portal.background import BackgroundLoop
from portal.crypto import DataVault
from portal.db import session_scope, utcnow
from portal.notify.attachments import Attachment, Attachments, UnknownAttachment
from portal.notify.models import EXTERNAL_CHANNELS, Notification
from portal.notify.service import render
from portal.settings import SmtpSettings

logger = logging.getLogger("jiefen.notify")
sms_logger = logging.getLogger("jiefen.sms")

MAX_ATTEMPTS = 6
# How long a claimed row stays hidden from other workers while it is being sent.
CLAIM_LEASE = timedelta(minutes=5)
FIRST_RETRY = timedelta(minutes=1)
SMTP_TIMEOUT = 30.0
MAX_ERROR_LENGTH = 300
# Chinese carriers expect the sender's signature in 【】 at the start of an SMS.
PREFIX = {"zh_CN": "【解纷】", "en": "[Jiefen] "}
DEFAULT_PREFIX = "[Jiefen] "

_EMAIL_RE = re.compile(r"[^\s'\"<>(),;:\[\]]+@[^\s'\"<>(),;:\[\]]+")
_MOBILE_RE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?1\d{10}(?!\d)")


# -- providers ------------------------------------------------------------------------------


class SmsProvider(Protocol):
    """An SMS gateway (Aliyun, Tencent Cloud SMS…): send a text, return the provider's id."""

    async def send(self, phone: str, text: str) -> str: ...


class LogSmsProvider:
    """The default SMS "gateway": writes the message to the log, with the number masked."""

    async def send(self, phone: str, text: str) -> str:
        provider_id = f"log-{uuid.uuid4().hex}"
        sms_logger.info("SMS %s to %s: %s", provider_id, mask_phone(phone), text)
        return provider_id


async def send_email(
    smtp: SmtpSettings,
    to: str,
    subject: str,
    body: str,
    attachments: Sequence[Attachment] = (),
) -> str:
    """Send one plain-text UTF-8 email (with any ``attachments``) through ``smtp`` and return
    its Message-ID."""
    if smtp.security not in ("none", "starttls", "tls"):
        raise ValueError("SMTP security must be none, starttls or tls")
    sender_domain = parseaddr(smtp.sender)[1].rpartition("@")[2] or "localhost"
    message_id = make_msgid(domain=sender_domain)
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = to
    message["Subject"] = " ".join(subject.split())  # no line breaks in a header
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: autoresponders do not reply
    message.set_content(body, charset="utf-8")
    for attachment in attachments:
        params = {**attachment.params, "name": attachment.filename}
        if attachment.maintype == "text":
            message.add_attachment(
                attachment.content.decode("utf-8"),
                subtype=attachment.subtype,
                filename=attachment.filename,
                params=params,
            )
        else:
            message.add_attachment(
                attachment.content,
                maintype=attachment.maintype,
                subtype=attachment.subtype,
                filename=attachment.filename,
                params=params,
            )
    await aiosmtplib.send(
        message,
        hostname=smtp.host,
        port=smtp.port,
        username=smtp.username,
        password=smtp.password,
        use_tls=smtp.security == "tls",
        start_tls=smtp.security == "starttls",
        timeout=SMTP_TIMEOUT,
    )
    return message_id


# -- delivering the outbox ------------------------------------------------------------------


@dataclass
class DeliveryReport:
    """What one ``deliver_pending`` run did."""

    sent: int = 0
    failed: int = 0
    retried: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.failed + self.retried

    def add(self, outcome: str) -> None:
        if outcome == "sent":
            self.sent += 1
        elif outcome == "retried":
            self.retried += 1
        else:
            self.failed += 1


class Undeliverable(Exception):
    """A failure that retrying cannot fix, such as no address of that kind on file."""


@dataclass(frozen=True)
class _Outgoing:
    channel: str
    address: str
    subject: str
    text: str
    attachments: tuple[Attachment, ...] = ()


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failure: 1, 2, 4, 8… minutes."""
    return FIRST_RETRY * (1 << max(attempts - 1, 0))


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, Undeliverable | UnknownAttachment):
        return True
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return bool(exc.recipients) and all(r.code >= 500 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError):
        return exc.code >= 500
    return False


def short_error(exc: BaseException, *secrets: str | None) -> str:
    """``Class: message`` with the recipient's contact details and anything like them removed."""
    text = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _EMAIL_RE.sub("***", text)
    text = _MOBILE_RE.sub("***", text)
    return text[:MAX_ERROR_LENGTH]


def _prepare(
    row: Notification,
    user: User | None,
    vault: DataVault,
    catalogues: Mapping[str, gettext.NullTranslations],
    base_url: str,
) -> _Outgoing:
    if user is None:
        raise Undeliverable("the recipient no longer exists")
    contact = contact_of(vault, user)
    address = contact.email if row.channel == "email" else contact.phone
    if not address:
        raise Undeliverable(f"the recipient has no {row.channel} contact on file")
    title, body = render(row, catalogues, user.locale)
    if row.link:
        body = f"{body}\n\n{base_url.rstrip('/')}{row.link}"
    prefix = PREFIX.get(user.locale, DEFAULT_PREFIX)
    if row.channel == "email":
        return _Outgoing("email", address, prefix + title, body)
    return _Outgoing("sms", address, "", f"{prefix}{title}\n{body}")


async def _attach(
    db: AsyncSession,
    outgoing: _Outgoing,
    reference: str,
    user: User,
    attachments: Attachments | None,
    catalogues: Mapping[str, gettext.NullTranslations],
    base_url: str,
    sender: str,
    now: datetime,
) -> _Outgoing:
    """The email with the file ``reference`` names, made now (without it if its object is gone)."""
    if attachments is None:
        raise UnknownAttachment("no attachment builders were given to the worker")
    built = await attachments.build(
        db,
        reference,
        user=user,
        address=outgoing.address,
        translations=catalogues.get(user.locale) or gettext.NullTranslations(),
        base_url=base_url,
        sender=sender,
        now=now,
    )
    return replace(outgoing, attachments=(built,)) if built is not None else outgoing


async def _send(outgoing: _Outgoing, smtp: SmtpSettings, sms: SmsProvider) -> str:
    if outgoing.channel == "email":
        return await send_email(
            smtp, outgoing.address, outgoing.subject, outgoing.text, outgoing.attachments
        )
    return await sms.send(outgoing.address, outgoing.text)


def _due(due_at: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        Notification.status == "pending",
        Notification.channel.in_(EXTERNAL_CHANNELS),
        or_(Notification.next_attempt_at.is_(None), Notification.next_attempt_at <= due_at),
    )


async def _claim(
    db: AsyncSession, due_at: datetime, lease_until: datetime
) -> tuple[bool, Notification | None]:
    """Claim the oldest due row: (False, None) when none is left, (True, None) on a lost race.

    The claim pushes ``next_attempt_at`` past the lease, so no other process picks the row while
    it is being sent (and a process that dies mid-send leaves it due again when the lease ends).
    PostgreSQL skips rows another process has locked; SQLite serialises the conditional update.
    """
    query = select(Notification).where(*_due(due_at)).order_by(Notification.id).limit(1)
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = await db.scalar(query)
    if row is None:
        return False, None
    result = await db.execute(
        update(Notification)
        .where(Notification.id == row.id, *_due(due_at))
        .values(next_attempt_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", result).rowcount != 1:
        await db.rollback()
        return True, None
    return True, row


# Parameters that are one-time secrets (verification codes): redacted after delivery.
SECRET_PARAMS = frozenset({"code"})
REDACTED = "******"


async def _record(
    sessionmaker: async_sessionmaker[AsyncSession],
    row_id: int,
    attempts: int,
    stamp: datetime,
    provider_id: str | None,
    problem: Exception | None,
    address: str | None,
) -> str:
    """Write the outcome of one attempt; return "sent", "retried" or "failed"."""
    attempts += 1
    values: dict[str, Any]
    if problem is None:
        outcome = "sent"
        values = {
            "status": "sent",
            "sent_at": stamp,
            "next_attempt_at": None,
            "provider_id": (provider_id or "")[:120],
            "last_error": None,
        }
    else:
        give_up = attempts >= MAX_ATTEMPTS or _is_permanent(problem)
        outcome = "failed" if give_up else "retried"
        values = {
            "status": "failed" if give_up else "pending",
            "next_attempt_at": None if give_up else stamp + retry_delay(attempts),
            "last_error": short_error(problem, address),
        }
    async with session_scope(sessionmaker) as db:
        if outcome != "retried":
            # Once a message is out (or given up), one-time secrets in it are not kept.
            params = await db.scalar(select(Notification.params).where(Notification.id == row_id))
            if params and SECRET_PARAMS & set(params):
                values["params"] = {
                    k: (REDACTED if k in SECRET_PARAMS else v) for k, v in params.items()
                }
        await db.execute(
            update(Notification)
            .where(Notification.id == row_id)
            .values(attempts=attempts, **values)
            .execution_options(synchronize_session=False)
        )
        await db.commit()
    if outcome == "failed":
        logger.warning(
            "Notification %s gave up after %s attempts: %s", row_id, attempts, values["last_error"]
        )
    return outcome


async def deliver_pending(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    vault: DataVault,
    catalogues: Mapping[str, gettext.NullTranslations],
    smtp: SmtpSettings,
    sms: SmsProvider,
    base_url: str,
    attachments: Attachments | None = None,
    limit: int = 100,
    now: datetime | None = None,
) -> DeliveryReport:
    """Send up to ``limit`` due email/SMS notifications, each committed on its own.

    Each row is claimed (one short transaction, in which an email's attachment is also made
    from the current state of its object), sent with no transaction open, and its outcome
    recorded (another short transaction). Failures are recorded on the row, never raised.
    ``now`` fixes the clock (tests).
    """
    report = DeliveryReport()
    due_at = now or utcnow()
    for _ in range(limit):
        stamp = now or utcnow()
        outgoing: _Outgoing | None = None
        problem: Exception | None = None
        async with session_scope(sessionmaker) as db:
            found, row = await _claim(db, due_at, stamp + CLAIM_LEASE)
            if not found:
                break
            if row is None:
                continue  # another process claimed it first
            row_id, attempts = row.id, row.attempts
            try:
                user = await db.get(User, row.user_id)
                prepared = _prepare(row, user, vault, catalogues, base_url)
                if prepared.channel == "email" and row.attachment and user is not None:
                    prepared = await _attach(
                        db,
                        prepared,
                        row.attachment,
                        user,
                        attachments,
                        catalogues,
                        base_url,
                        smtp.sender,
                        stamp,
                    )
                outgoing = prepared
            except Exception as exc:
                problem = exc
            await db.commit()
        provider_id: str | None = None
        if outgoing is not None:
            try:
                provider_id = await _send(outgoing, smtp, sms)
            except Exception as exc:
                problem = exc
        outcome = await _record(
            sessionmaker,
            row_id,
            attempts,
            now or utcnow(),
            provider_id,
            problem,
            outgoing.address if outgoing else None,
        )
        report.add(outcome)
    return report


class OutboxWorker(BackgroundLoop):
    """Runs ``deliver_pending`` every ``interval`` seconds, or at once when woken."""

    name = "jiefen-outbox"
    log = logger

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        vault: DataVault,
        catalogues: Mapping[str, gettext.NullTranslations],
        smtp: SmtpSettings,
        base_url: str,
        sms: SmsProvider | None = None,
        attachments: Attachments | None = None,
        interval: float = 5.0,
        limit: int = 100,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.vault = vault
        self.catalogues = catalogues
        self.smtp = smtp
        self.base_url = base_url
        self.sms: SmsProvider = sms or LogSmsProvider()
        self.attachments = attachments
        self.limit = limit

    async def run_once(self) -> bool:
        report = await deliver_pending(
            self.sessionmaker,
            vault=self.vault,
            catalogues=self.catalogues,
            smtp=self.smtp,
            sms=self.sms,
            base_url=self.base_url,
            attachments=self.attachments,
            limit=self.limit,
        )
        if report.total:
            logger.info(
                "Outbox: %s sent, %s retried later, %s failed",
                report.sent,
                report.retried,
                report.failed,
            )
        return report.total >= self.limit
