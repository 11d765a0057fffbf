"""Delivery: real SMTP servers on loopback, the logging SMS gateway, retries, the worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portal.db import utcnow
from portal.i18n import Msg, _l
from portal.notify.delivery import (
    MAX_ATTEMPTS,
    DeliveryReport,
    LogSmsProvider,
    OutboxWorker,
    deliver_pending,
)
from portal.notify.models import Notification
from portal.notify.service import notify
from portal.policy import Role
from portal.settings import SmtpSettings
from tests.conftest import free_port
from tests.factories import make_user

ACCOUNT_UPDATED = _l("Account updated.")
PASSWORD_CHANGED = _l("Your password has been changed. Other devices have been logged out.")
SMTP_USER, SMTP_PASSWORD = "jiefen", "smtp-Secret-1"


# -- a real SMTP server on loopback ---------------------------------------------------------


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it receives (and can refuse some recipients)."""

    messages: list[EmailMessage] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.sessions.append(
            {
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "authenticated": bool(session.authenticated),
                "rcpt_tos": list(envelope.rcpt_tos),
            }
        )
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        # handled=False: the server, not this callback, answers the client (235 or 535).
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    settings: SmtpSettings
    box: Mailbox


StartSmtp = Callable[..., SmtpServer]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and the key), trusted by the tests below."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jiefen test SMTP")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def start_smtp(
    tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[StartSmtp]:
    """Start real SMTP servers on free loopback ports; all are stopped at the end of the test."""
    controllers: list[Controller] = []
    cert_path, key_path = tls_files
    # The client (aiosmtplib, through ssl.create_default_context) trusts the test certificate.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))

    def start(*, security: str = "none", login: bool = False) -> SmtpServer:
        box = Mailbox()
        port = free_port()
        options: dict[str, Any] = {}
        if security != "none":
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert_path, key_path)
            if security == "tls":
                options["ssl_context"] = context
            else:
                options.update(tls_context=context, require_starttls=True)
        if login:
            options["authenticator"] = box.authenticate
            if security == "tls":
                # aiosmtpd only counts STARTTLS as encryption; implicit TLS is encrypted too.
                options["auth_require_tls"] = False
            else:
                options["auth_required"] = True
        controller = Controller(box, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        settings = SmtpSettings(
            host="127.0.0.1",
            port=port,
            sender="Jiefen <noreply@jiefen.test>",
            security=security,
            username=SMTP_USER if login else None,
            password=SMTP_PASSWORD if login else None,
        )
        return SmtpServer(settings, box)

    yield start
    for controller in controllers:
        controller.stop()


def dead_smtp() -> SmtpSettings:
    """A loopback port with nothing listening."""
    return SmtpSettings(host="127.0.0.1", port=free_port())


# -- helpers --------------------------------------------------------------------------------


async def queue(
    app: Any,
    user_id: int,
    *,
    channels: tuple[str, ...],
    title: Msg = ACCOUNT_UPDATED,
    body: Msg = PASSWORD_CHANGED,
    link: str = "/cases/12",
) -> list[int]:
    async with app.starlette.state.db() as db:
        rows = await notify(db, user_id, title, body, link=link, channels=channels)
        await db.commit()
    return [row.id for row in rows]


async def deliver(
    app: Any,
    smtp: SmtpSettings | None = None,
    *,
    sms: Any = None,
    now: dt.datetime | None = None,
) -> DeliveryReport:
    state = app.starlette.state
    return await deliver_pending(
        state.db,
        vault=state.vault,
        catalogues=state.catalogues,
        smtp=smtp or dead_smtp(),
        sms=sms or LogSmsProvider(),
        base_url=state.settings.base_url,
        now=now,
    )


async def fetch(app: Any, row_id: int) -> Notification:
    async with app.starlette.state.db() as db:
        row = await db.get(Notification, row_id)
    assert row is not None
    return row


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Poll ``check`` (state in another thread or task) until it holds or time runs out."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


# -- email ----------------------------------------------------------------------------------


async def test_email_arrives_in_each_recipients_language(app: Any, start_smtp: StartSmtp) -> None:
    server = start_smtp()
    zh = await make_user(app, Role.CONSUMER, email="zhang.san@example.com", locale="zh_CN")
    en = await make_user(app, Role.CONSUMER, email="jane.smith@example.com", locale="en")
    [zh_row] = await queue(app, zh.id, channels=("email",))
    [en_row] = await queue(app, en.id, channels=("email",))

    assert await deliver(app, server.settings) == DeliveryReport(sent=2)

    mails = {str(m["To"]): m for m in server.box.messages}
    assert sorted(mails) == ["jane.smith@example.com", "zhang.san@example.com"]
    chinese = mails["zhang.san@example.com"]
    assert chinese["Subject"] == "【解纷】账号信息已更新。"
    assert "您的密码已修改，其他设备上的登录已退出。" in text_of(chinese)
    assert "http://testserver/cases/12" in text_of(chinese)
    assert "Your password" not in text_of(chinese)
    english = mails["jane.smith@example.com"]
    assert english["Subject"] == "[Jiefen] Account updated."
    assert text_of(english) == (
        "Your password has been changed. Other devices have been logged out.\n\n"
        "http://testserver/cases/12\n"
    )
    for mail in (chinese, english):
        assert mail["From"] == "Jiefen <noreply@jiefen.test>"
        assert mail.get_content_type() == "text/plain"
        assert mail.get_content_charset() == "utf-8"
        assert mail["Auto-Submitted"] == "auto-generated"
    assert [s["tls"] for s in server.box.sessions] == [False, False]  # security = "none"

    for row_id, mail in ((zh_row, chinese), (en_row, english)):
        row = await fetch(app, row_id)
        assert row.status == "sent" and row.attempts == 1 and row.last_error is None
        assert row.sent_at is not None and row.next_attempt_at is None
        assert row.provider_id == mail["Message-ID"]  # the 送达 receipt
    # Nothing is due any more.
    assert await deliver(app, server.settings) == DeliveryReport()
    assert len(server.box.messages) == 2


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_email_over_tls_with_login(app: Any, start_smtp: StartSmtp, security: str) -> None:
    server = start_smtp(security=security, login=True)
    person = await make_user(app, Role.CONSUMER, email="tls@example.com", locale="en")
    [row_id] = await queue(app, person.id, channels=("email",))
    assert await deliver(app, server.settings) == DeliveryReport(sent=1)
    assert server.box.sessions == [
        {"tls": True, "authenticated": True, "rcpt_tos": ["tls@example.com"]}
    ]
    assert (await fetch(app, row_id)).status == "sent"


async def test_wrong_smtp_password_is_retried(app: Any, start_smtp: StartSmtp) -> None:
    server = start_smtp(security="starttls", login=True)
    wrong = SmtpSettings(**{**server.settings.__dict__, "password": "wrong"})
    person = await make_user(app, Role.CONSUMER, email="retry-auth@example.com")
    [row_id] = await queue(app, person.id, channels=("email",))
    assert await deliver(app, wrong) == DeliveryReport(retried=1)
    row = await fetch(app, row_id)
    assert row.status == "pending" and row.last_error is not None
    assert row.last_error.startswith("SMTPAuthenticationError")
    assert server.box.messages == []


async def test_smtp_down_backs_off_then_fails(app: Any) -> None:
    person = await make_user(app, Role.CONSUMER, email="patient@example.com")
    [row_id] = await queue(app, person.id, channels=("email",))
    smtp = dead_smtp()
    clock = utcnow()

    assert await deliver(app, smtp, now=clock) == DeliveryReport(retried=1)
    row = await fetch(app, row_id)
    assert row.status == "pending" and row.attempts == 1
    assert row.next_attempt_at == clock + dt.timedelta(minutes=1)
    assert row.last_error is not None and row.last_error.startswith("SMTPConnectError")
    assert "patient" not in row.last_error and "@" not in row.last_error
    # Not due before its time.
    assert await deliver(app, smtp, now=clock + dt.timedelta(seconds=59)) == DeliveryReport()

    delays = []
    while row.status == "pending":
        assert row.next_attempt_at is not None
        clock = row.next_attempt_at
        report = await deliver(app, smtp, now=clock)
        row = await fetch(app, row_id)
        if row.next_attempt_at is not None:
            delays.append(row.next_attempt_at - clock)
            assert report == DeliveryReport(retried=1)
        else:
            assert report == DeliveryReport(failed=1)
    assert delays == [dt.timedelta(minutes=m) for m in (2, 4, 8, 16)]
    assert row.status == "failed" and row.attempts == MAX_ATTEMPTS == 6
    assert row.sent_at is None and row.provider_id is None
    # A failed row is never tried again.
    assert await deliver(app, smtp, now=clock + dt.timedelta(days=1)) == DeliveryReport()


async def test_refused_recipient_fails_at_once_without_keeping_the_address(
    app: Any, start_smtp: StartSmtp
) -> None:
    server = start_smtp()
    server.box.refuse.add("gone@example.com")
    gone = await make_user(app, Role.CONSUMER, email="gone@example.com")
    fine = await make_user(app, Role.CONSUMER, email="fine@example.com")
    [gone_row] = await queue(app, gone.id, channels=("email",))
    [fine_row] = await queue(app, fine.id, channels=("email",))

    assert await deliver(app, server.settings) == DeliveryReport(sent=1, failed=1)
    row = await fetch(app, gone_row)
    assert row.status == "failed" and row.attempts == 1
    assert row.last_error is not None and "550" in row.last_error
    assert "gone" not in row.last_error and "example.com" not in row.last_error
    assert (await fetch(app, fine_row)).status == "sent"  # one failure does not undo others


async def test_row_without_a_contact_fails_at_once(app: Any) -> None:
    person = await make_user(app, Role.CONSUMER, email="no-phone@example.com")
    async with app.starlette.state.db() as db:
        # notify() would skip it; a phone removed after queueing looks like this.
        row = Notification(
            user_id=person.id,
            channel="sms",
            title_msgid=ACCOUNT_UPDATED.msgid,
            body_msgid=PASSWORD_CHANGED.msgid,
            params={},
            status="pending",
        )
        db.add(row)
        await db.commit()
    assert await deliver(app) == DeliveryReport(failed=1)
    failed = await fetch(app, row.id)
    assert failed.status == "failed"
    assert failed.last_error == "Undeliverable: the recipient has no sms contact on file"


# -- SMS ------------------------------------------------------------------------------------


async def test_sms_is_logged_with_the_number_masked(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    person = await make_user(app, Role.CONSUMER, phone="13812345678", locale="zh_CN")
    [row_id] = await queue(app, person.id, channels=("sms",))
    with caplog.at_level(logging.DEBUG):
        assert await deliver(app) == DeliveryReport(sent=1)
    row = await fetch(app, row_id)
    assert row.status == "sent" and row.provider_id and row.provider_id.startswith("log-")
    [record] = [r for r in caplog.records if r.name == "jiefen.sms"]
    line = record.getMessage()
    assert "138****5678" in line and row.provider_id in line
    assert "【解纷】账号信息已更新。" in line and "http://testserver/cases/12" in line
    assert "13812345678" not in caplog.text


async def test_concurrent_deliverers_send_each_message_once(app: Any) -> None:
    class SlowSms:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, phone: str, text: str) -> str:
            await asyncio.sleep(0.05)
            self.sent.append(phone)
            return f"slow-{len(self.sent)}"

    phones = [f"1390000000{n}" for n in range(4)]
    for phone in phones:
        person = await make_user(app, Role.CONSUMER, phone=phone)
        await queue(app, person.id, channels=("sms",))
    sms = SlowSms()
    reports = await asyncio.gather(deliver(app, sms=sms), deliver(app, sms=sms))
    assert sorted(sms.sent) == phones
    assert sum(r.sent for r in reports) == 4 and all(r.sent for r in reports)


# -- the worker -----------------------------------------------------------------------------


async def test_worker_delivers_when_woken_and_stops_cleanly(
    app: Any, start_smtp: StartSmtp
) -> None:
    server = start_smtp()
    state = app.starlette.state
    worker = OutboxWorker(
        state.db,
        vault=state.vault,
        catalogues=state.catalogues,
        smtp=server.settings,
        base_url=state.settings.base_url,
        interval=3600,  # only wake() can explain a delivery within the test
    )
    person = await make_user(app, Role.CONSUMER, email="woken@example.com", locale="en")
    worker.start()
    try:
        await asyncio.sleep(0.1)  # the first, empty run is over; the worker now sleeps
        [row_id] = await queue(app, person.id, channels=("email",))
        worker.wake()

        async def delivered() -> bool:
            return len(server.box.messages) == 1 and (await fetch(app, row_id)).status == "sent"

        await eventually(delivered, seconds=5)
    finally:
        async with asyncio.timeout(2):
            await worker.stop()
    assert not worker.running


async def test_worker_survives_errors(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    state = app.starlette.state
    calls = 0

    def broken_sessionmaker() -> Any:
        nonlocal calls
        calls += 1
        raise RuntimeError("database unavailable")

    worker = OutboxWorker(
        broken_sessionmaker,
        vault=state.vault,
        catalogues=state.catalogues,
        smtp=dead_smtp(),
        base_url=state.settings.base_url,
        interval=3600,
    )
    with caplog.at_level(logging.ERROR, logger="jiefen.notify"):
        worker.start()
        try:

            async def failed_once() -> bool:
                return calls == 1

            await eventually(failed_once)
            worker.wake()

            async def failed_twice() -> bool:
                return calls == 2

            await eventually(failed_twice)
            assert worker.running
        finally:
            await worker.stop()
    assert not worker.running
    assert [r.exc_info is not None for r in caplog.records if r.name == "jiefen.notify"] == [
        True,
        True,
    ]
