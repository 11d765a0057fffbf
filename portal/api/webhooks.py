"""Webhooks: a firm's URLs told of events on its cases, signed, retried for a day.

The case timeline is the outbox: every change a firm may see is already a ``CaseEvent``
written in the transaction that made it. :class:`WebhookLoop` reads the timeline after its
cursor, makes a delivery per event for each of the respondent firm's endpoints that asked for
its type, and posts the due deliveries.

A delivery is a POST of JSON with the headers::

    Jiefen-Webhook-Id: <the event's id, the same on every retry>
    Jiefen-Webhook-Timestamp: <unix seconds when this attempt was signed>
    Jiefen-Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

A receiver checks the signature (:func:`verify`), refuses a timestamp older than five minutes
(a replayed request), and may drop an id it has seen. Any 2xx answer within ten seconds is
delivered; otherwise it is tried again after 30 s, 1, 2, 4… minutes (at most an hour apart)
until a day has passed, then given up. A representative may send any delivery again.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.models import User
from portal.api.models import WebhookCursor, WebhookDelivery, WebhookEndpoint
from portal.audit.service import record
from portal.background import BackgroundLoop
from portal.cases.models import Case, CaseEvent
from portal.crypto import DataVault
from portal.db import session_scope, utcnow
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.policy import Role

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("jiefen.webhooks")

EVENTS: dict[str, Msg] = {
    "case.status_changed": _l("A case changed status (accepted, assigned, settled, closed…)"),
    "case.firm_responded": _l("Your firm's answer or proposal was recorded"),
    "case.evidence_added": _l("Evidence the firm may see was added"),
    "case.message": _l("A message the firm may read was posted"),
    "agreement.updated": _l("The settlement agreement or a payment changed"),
    "meeting.updated": _l("A mediation session was scheduled, changed or held"),
}
# The timeline's kinds, as event types.
KINDS = {
    "transition": "case.status_changed",
    "response": "case.firm_responded",
    "material": "case.evidence_added",
    "message": "case.message",
    "agreement": "agreement.updated",
    "meeting": "meeting.updated",
}
SECRET_CONTEXT = "webhooks.secret"  # noqa: S105 (the encryption context, not a secret)
MAX_ENDPOINTS = 10
TIMEOUT = 10.0
GIVE_UP_AFTER = timedelta(days=1)
FIRST_RETRY = 30.0
LONGEST_WAIT = 3600.0
REPLAY_WINDOW = 300
USER_AGENT = "Jiefen-Webhooks/1"


# -- signing ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    window: int = REPLAY_WINDOW,
) -> bool:
    """What a receiver runs: the signature is ours and the timestamp is recent."""
    stamp = headers.get("jiefen-webhook-timestamp") or headers.get("Jiefen-Webhook-Timestamp")
    given = headers.get("jiefen-webhook-signature") or headers.get("Jiefen-Webhook-Signature")
    if not stamp or not given or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > window:
        return False
    expected = sign(secret, int(stamp), body)
    return any(hmac.compare_digest(expected, part.strip()) for part in given.split(","))


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: 30 s, 1, 2, 4… min, ≤ 1 h."""
    return min(FIRST_RETRY * float(2 ** max(attempts - 1, 0)), LONGEST_WAIT)


# -- endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def check_url(url: str, *, allow_private: bool) -> str:
    """An https URL of a public host (http and private addresses only when allowed: tests and
    intranets)."""
    url = url.strip()
    parts = urlsplit(url)
    if len(url) > 500 or parts.scheme not in ("https", "http") or not parts.hostname:
        raise DomainError(_l("Enter a full https:// address."), field="url")
    if parts.username or parts.password:
        raise DomainError(_l("Enter a full https:// address."), field="url")
    if parts.scheme == "http" and not allow_private:
        raise DomainError(_l("Use https:// so that the events travel encrypted."), field="url")
    if not allow_private and not _public(parts.hostname):
        raise DomainError(
            _l("The address must be reachable on the internet, not a private network."),
            field="url",
        )
    return url


def _public(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    return bool(addresses) and all(a.is_global for a in addresses)


async def add_endpoint(
    db: AsyncSession,
    vault: DataVault,
    actor: User,
    *,
    url: str,
    events: list[str],
    allow_private: bool,
) -> NewEndpoint:
    if actor.firm_id is None or actor.role != Role.FIRM_REP:
        raise NotFound
    url = check_url(url, allow_private=allow_private)
    chosen = sorted(set(events))
    if not chosen:
        raise DomainError(_l("Choose at least one kind of event."), field="events")
    if any(e not in EVENTS for e in chosen):
        raise DomainError(_l("Choose one of the options."), field="events")
    live = await db.scalar(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.firm_id == actor.firm_id, WebhookEndpoint.disabled_at.is_(None))
    )
    if (live or 0) >= MAX_ENDPOINTS:
        raise DomainError(_l("A firm may have at most {count} webhooks.", count=MAX_ENDPOINTS))
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(
        firm_id=actor.firm_id,
        created_by_id=actor.id,
        url=url,
        secret_enc=vault.encrypt(secret, SECRET_CONTEXT),
        events=chosen,
        created_at=utcnow(),
    )
    db.add(endpoint)
    await db.flush()
    record(db, actor.id, "webhook.create", "webhook", endpoint.id, events=chosen)
    await db.commit()
    return NewEndpoint(endpoint, secret)


async def endpoints(db: AsyncSession, firm_id: int) -> list[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.firm_id == firm_id)
    return list(await db.scalars(query.order_by(WebhookEndpoint.id.desc())))


async def get_endpoint(db: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    found = await db.get(WebhookEndpoint, endpoint_id)
    if found is None:
        raise NotFound
    return found


async def disable_endpoint(db: AsyncSession, endpoint: WebhookEndpoint, actor: User) -> None:
    if endpoint.disabled_at is not None:
        raise DomainError(_l("This webhook is already turned off."))
    endpoint.disabled_at = utcnow()
    # What was still waiting is not sent any more.
    await db.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.state == "pending")
        .values(state="failed", last_error="webhook turned off")
    )
    record(db, actor.id, "webhook.disable", "webhook", endpoint.id)
    await db.commit()


async def deliveries(db: AsyncSession, endpoint: WebhookEndpoint, limit: int = 100) -> list[Any]:
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    return list(await db.scalars(query.order_by(WebhookDelivery.id.desc()).limit(limit)))


async def resend(
    db: AsyncSession, endpoint: WebhookEndpoint, delivery_id: int, actor: User
) -> WebhookDelivery:
    delivery = await db.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint.id:
        raise NotFound
    if endpoint.disabled_at is not None:
        raise DomainError(_l("This webhook is turned off."))
    delivery.state, delivery.next_attempt_at = "pending", utcnow()
    # A day of tries again, from now.
    delivery.created_at, delivery.attempts = utcnow(), 0
    record(db, actor.id, "webhook.resend", "webhook", endpoint.id, delivery=delivery.id)
    await db.commit()
    return delivery


# -- making deliveries from the timeline ------------------------------------------------------


def payload(event: CaseEvent, case: Case, event_type: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "case_id": case.id,
        "number": case.number,
        "status": case.status,
    }
    if event.kind == "transition":
        data |= {"from_status": event.from_status, "to_status": event.to_status}
        data["transition"] = event.data.get("transition")
    elif event.kind == "response":
        data |= {"response": event.data.get("response"), "offer_fen": event.data.get("offer_fen")}
    elif event.kind == "material":
        data |= {"material_id": event.data.get("material_id"), "title": event.body}
    elif event.kind == "message":
        data["text"] = event.body
    elif event.kind in ("agreement", "meeting"):
        data |= {k: v for k, v in event.data.items() if isinstance(v, str | int | bool)}
    return {
        "id": f"evt_{event.id}",
        "type": event_type,
        "created_at": event.created_at.isoformat(),
        "data": data,
    }


async def fan_out(db: AsyncSession, batch: int = 500) -> int:
    """Deliveries for the timeline's events after the cursor; the number of events read."""
    cursor = await db.get(WebhookCursor, 1, with_for_update=True)
    if cursor is None:
        last = await db.scalar(select(func.coalesce(func.max(CaseEvent.id), 0)))
        db.add(WebhookCursor(id=1, last_event_id=int(last or 0)))
        await db.commit()
        return 0
    start = cursor.last_event_id
    listening = list(
        await db.scalars(select(WebhookEndpoint).where(WebhookEndpoint.disabled_at.is_(None)))
    )
    if not listening:
        top = await db.scalar(select(func.coalesce(func.max(CaseEvent.id), 0)))
        cursor.last_event_id = max(start, int(top or 0))
        await db.commit()
        return 0
    rows = (
        await db.execute(
            select(CaseEvent, Case)
            .join(Case, Case.id == CaseEvent.case_id)
            .where(CaseEvent.id > start)
            .order_by(CaseEvent.id)
            .limit(batch)
        )
    ).all()
    by_firm: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in listening:
        by_firm.setdefault(endpoint.firm_id, []).append(endpoint)
    now = utcnow()
    for event, case in rows:
        event_type = KINDS.get(event.kind)
        targets = by_firm.get(case.respondent_firm_id or 0, [])
        # Only what the firm could see when it happened: nothing of the claimant's draft.
        visible = (
            event.visibility in ("all", "firm")
            and case.status != "draft"
            and event.to_status != "draft"
        )
        if event_type is None or not targets or not visible:
            continue
        body = json.dumps(payload(event, case, event_type), ensure_ascii=False)
        for endpoint in targets:
            if event_type in endpoint.events:
                db.add(
                    WebhookDelivery(
                        endpoint_id=endpoint.id,
                        event_id=f"evt_{event.id}",
                        event_type=event_type,
                        case_id=case.id,
                        payload=body,
                        state="pending",
                        attempts=0,
                        next_attempt_at=now,
                        last_error="",
                        created_at=now,
                    )
                )
    if rows:
        cursor.last_event_id = rows[-1][0].id
    await db.commit()
    return len(rows)


# -- sending ----------------------------------------------------------------------------------


async def _due(db: AsyncSession, now: datetime, batch: int) -> list[WebhookDelivery]:
    """Take due deliveries for this process: each is leased for a while (another process
    skips it), so two processes never post the same attempt."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    due = list(await db.scalars(query))
    for delivery in due:
        delivery.next_attempt_at = now + timedelta(seconds=TIMEOUT * 6)
    await db.commit()
    return due


async def send_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    vault: DataVault,
    client: Callable[[], httpx.AsyncClient],
    *,
    allow_private: bool,
    batch: int = 50,
) -> int:
    async with session_scope(sessionmaker) as db:
        due = await _due(db, utcnow(), batch)
        if not due:
            return 0
        ids = {d.endpoint_id for d in due}
        found = await db.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id.in_(ids)))
        endpoints_by_id = {e.id: e for e in found}
    for delivery in due:
        endpoint = endpoints_by_id[delivery.endpoint_id]
        status, error = await _post(client(), vault, endpoint, delivery, allow_private)
        async with session_scope(sessionmaker) as db:
            row = await db.get(WebhookDelivery, delivery.id)
            if row is None or row.state != "pending":
                continue
            now = utcnow()
            row.attempts += 1
            row.last_status, row.last_error = status, error[:300]
            if status is not None and 200 <= status < 300:
                row.state, row.delivered_at = "delivered", now
            elif endpoint.disabled_at is not None or now - row.created_at >= GIVE_UP_AFTER:
                row.state = "failed"
            else:
                row.next_attempt_at = now + timedelta(seconds=backoff(row.attempts))
            await db.commit()
    return len(due)


async def _post(
    client: httpx.AsyncClient,
    vault: DataVault,
    endpoint: WebhookEndpoint,
    delivery: WebhookDelivery,
    allow_private: bool,
) -> tuple[int | None, str]:
    host = urlsplit(endpoint.url).hostname or ""
    if not allow_private and not _public(host):
        return None, "the address is not on the public internet"
    secret = vault.decrypt(endpoint.secret_enc, SECRET_CONTEXT)
    body = delivery.payload.encode()
    stamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Jiefen-Webhook-Id": delivery.event_id,
        "Jiefen-Webhook-Event": delivery.event_type,
        "Jiefen-Webhook-Timestamp": str(stamp),
        "Jiefen-Webhook-Signature": sign(secret, stamp, body),
    }
    import httpx

    try:
        response = await client.post(endpoint.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    text = "" if 200 <= response.status_code < 300 else response.text[:200]
    return response.status_code, text


class WebhookLoop(BackgroundLoop):
    """Reads the timeline for webhooks and posts what is due (every ``interval`` seconds)."""

    name = "jiefen-webhooks"
    log = log

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        vault: DataVault,
        *,
        allow_private: bool,
        interval: float = 5.0,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.vault = vault
        self.allow_private = allow_private
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """The HTTP client, made (and httpx imported: 18 MB) when there is something to post."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        return self._client

    async def run_once(self) -> bool:
        async with session_scope(self.sessionmaker) as db:
            read = await fan_out(db)
        sent = await send_due(
            self.sessionmaker, self.vault, self.client, allow_private=self.allow_private
        )
        return read >= 500 or sent >= 50

    async def stop(self, grace: float = 10.0) -> None:
        await super().stop(grace)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
