"""Attachments: a notification names one, the worker has the registered builder make it at send
time and the email carries it (real SMTP on loopback); unknown kinds and failing builders."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.ext.asyncio import AsyncSession

from portal.notify.attachments import (
    Attachment,
    AttachmentBuilder,
    AttachmentRequest,
    Attachments,
)
from portal.notify.delivery import DeliveryReport, LogSmsProvider, deliver_pending
from portal.notify.service import notify
from portal.policy import Role
from portal.settings import SmtpSettings
from tests.conftest import free_port
from tests.factories import make_user
from tests.notify.test_delivery import (
    ACCOUNT_UPDATED,
    PASSWORD_CHANGED,
    Mailbox,
    SmtpServer,
    fetch,
    text_of,
)

PDF = b"%PDF-1.4\n% a receipt\n%%EOF\n"


@pytest.fixture
def mail() -> Iterator[SmtpServer]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield SmtpServer(SmtpSettings(host="127.0.0.1", port=port), box)
    controller.stop()


class Receipts:
    """A feature's builder: remembers what it was asked, answers from its current ``state``."""

    def __init__(self) -> None:
        self.requests: list[AttachmentRequest] = []
        self.state = "first"

    async def build(self, db: AsyncSession, request: AttachmentRequest) -> Attachment | None:
        self.requests.append(request)
        if request.key == "gone":
            return None
        if request.key == "broken":
            raise RuntimeError("storage unavailable")
        return Attachment(
            PDF + self.state.encode(), "application/pdf", f"receipt-{request.key}.pdf"
        )


async def queue(app: Any, user_id: int, attachment: str | None) -> list[int]:
    async with app.starlette.state.db() as db:
        rows = await notify(
            db, user_id, ACCOUNT_UPDATED, PASSWORD_CHANGED, link="/cases/7", attachment=attachment
        )
        await db.commit()
    return [row.id for row in rows]


async def deliver(app: Any, mail: SmtpServer, attachments: Attachments) -> DeliveryReport:
    state = app.starlette.state
    return await deliver_pending(
        state.db,
        vault=state.vault,
        catalogues=state.catalogues,
        smtp=mail.settings,
        sms=LogSmsProvider(),
        base_url=state.settings.base_url,
        attachments=attachments,
    )


def registry(receipts: Receipts) -> Attachments:
    builders: dict[str, AttachmentBuilder] = {"receipt": receipts.build}
    return Attachments([builders])


async def test_the_email_carries_the_file_as_it_is_when_sent(app: Any, mail: SmtpServer) -> None:
    person = await make_user(
        app, Role.CONSUMER, email="receipt@example.com", phone="13912340000", locale="en"
    )
    ids = await queue(app, person.id, "receipt:12")
    rows = {(await fetch(app, i)).channel: await fetch(app, i) for i in ids}
    assert rows["email"].attachment == "receipt:12"
    assert rows["in_app"].attachment is None and rows["sms"].attachment is None

    receipts = Receipts()
    receipts.state = "changed after queueing"
    assert await deliver(app, mail, registry(receipts)) == DeliveryReport(sent=2)
    [message] = mail.box.messages
    assert "http://testserver/cases/7" in text_of(message)
    [part] = list(message.iter_attachments())
    assert isinstance(part, EmailMessage)
    assert part.get_content_type() == "application/pdf"
    assert part.get_filename() == "receipt-12.pdf"
    assert part.get_content() == PDF + b"changed after queueing"
    # Asked once (for the email, not the text), with the recipient's particulars.
    [request] = receipts.requests
    assert request.key == "12" and request.user.id == person.id
    assert request.address == "receipt@example.com"
    assert request.base_url == "http://testserver"
    assert request.translations is app.starlette.state.catalogues["en"]


async def test_a_gone_object_sends_the_email_without_it(app: Any, mail: SmtpServer) -> None:
    person = await make_user(app, Role.CONSUMER, email="gone@example.com")
    [_, email_id] = await queue(app, person.id, "receipt:gone")
    assert await deliver(app, mail, registry(Receipts())) == DeliveryReport(sent=1)
    [message] = mail.box.messages
    assert message.get_content_type() == "text/plain"
    assert (await fetch(app, email_id)).status == "sent"


async def test_an_unknown_kind_gives_up_and_a_failing_builder_retries(
    app: Any, mail: SmtpServer
) -> None:
    person = await make_user(app, Role.CONSUMER, email="unlucky@example.com")
    [_, unknown] = await queue(app, person.id, "invoice:3")
    [_, broken] = await queue(app, person.id, "receipt:broken")
    report = await deliver(app, mail, registry(Receipts()))
    assert report == DeliveryReport(failed=1, retried=1)
    row = await fetch(app, unknown)
    assert row.status == "failed" and row.attempts == 1
    assert row.last_error == "UnknownAttachment: no attachment builder for 'invoice'"
    row = await fetch(app, broken)
    assert row.status == "pending" and row.last_error == "RuntimeError: storage unavailable"
    assert mail.box.messages == []


async def test_references_are_checked_and_kinds_registered_once(app: Any) -> None:
    person = await make_user(app, Role.CONSUMER, email="strict@example.com")
    for bad in ("meeting", "meeting:", ":12", "Meeting:12", "meeting:../12", "a:" + "1" * 80):
        with pytest.raises(ValueError, match="attachment"):
            await queue(app, person.id, bad)
    receipts = Receipts()
    with pytest.raises(ValueError, match="receipt"):
        Attachments([{"receipt": receipts.build}, {"receipt": receipts.build}])
    assert app.starlette.state.attachments.kinds == {"meeting"}
