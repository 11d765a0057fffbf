"""A settlement agreement in three real browsers: the mediator on a computer drafts it from the
case, sets the terms and puts it up for signature; the claimant, on a phone, comments and signs
with password, code and name; the firm's representative, on a phone too, types a wrong code
first, then signs, and the agreement is in effect. The signed PDF and the version's PDF are
downloaded and checked (text, and the SHA-256 the page shows). Screenshots are kept.

Like the other browser tests, the portal runs as ``jiefen serve`` on loopback with its default
SQLite database. The world is built with the test factories before the server starts.

The one-time codes are read where the person would read them: the SMS gateway's output (the
logging gateway writes it to the server's log) and a real SMTP server on loopback. The outbox
row in the database names the message (its provider id); its ``code`` is redacted once the
message is out, which is checked too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiosmtpd.controller import Controller
from asgi_lifespan import LifespanManager
from playwright.sync_api import expect
from pypdf import PdfReader
from sqlalchemy import select

from portal.accounts.models import User
from portal.app import create_app
from portal.cases import service as cases
from portal.cases.models import Case
from portal.cli import upgrade_database
from portal.db import create_engine, create_sessionmaker
from portal.notify.models import Notification
from portal.policy import Role
from portal.settings import Settings
from tests.browser.conftest import BIN
from tests.conftest import ARTIFACTS, free_port
from tests.factories import (
    PASSWORD,
    make_case,
    make_committee,
    make_firm,
    make_user,
    verify_phone,
)

T = TypeVar("T")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
MOBILE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36"
)
CJK = re.compile(r"[\u4e00-\u9fff]")
CODE = re.compile(r"(?<!\d)\d{6}(?!\d)")
# The start of a record in the server's log: the portal's own, or uvicorn's.
LOG_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} |[A-Z]+:\s)")
MEDIATOR_EMAIL = "mediator@agreement.test"
REP_EMAIL = "rep@agreement.test"
CLAIMANT_PHONE = "13912340001"


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message it receives."""

    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"


@dataclass
class Portal:
    url: str
    settings: Settings
    log: Path
    mailbox: Mailbox
    case_id: int
    case_number: str
    claimant_id: int
    rep_id: int


def in_thread(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run async work on its own event loop in another thread, away from Playwright's."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()


async def build_world(settings: Settings) -> dict[str, Any]:
    """A committee with its administrator and mediator, a firm with its representative, and a
    claimant (verified phone) whose case the mediator has taken into mediation."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        committee = await make_committee(app)
        await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
        mediator = await make_user(
            app, Role.MEDIATOR, committee=committee, name="王调解员", email=MEDIATOR_EMAIL
        )
        firm = await make_firm(app, name="示例消费金融股份有限公司")
        rep = await make_user(app, Role.FIRM_REP, firm=firm, name="李经理", email=REP_EMAIL)
        claimant = await make_user(app, Role.CONSUMER, phone=CLAIMANT_PHONE, name="张三")
        await verify_phone(app, claimant)
        case = await make_case(
            app, claimant, firm, status="assigned", mediator_id=mediator.id, category="credit_card"
        )
        async with app.starlette.state.db() as db:
            loaded = await db.get(Case, case.id)
            user = await db.get(User, mediator.id)
            assert loaded is not None and user is not None
            await cases.apply_transition(db, loaded, user, "start_mediation")
            number = loaded.number
    return {
        "case_id": case.id,
        "case_number": number,
        "claimant_id": claimant.id,
        "rep_id": rep.id,
    }


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    """The world above, served by `jiefen serve` in its own process, e-mail to loopback SMTP."""
    var = tmp_path_factory.mktemp("agreement-var")
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "VAR_DIR": str(var),
        "BASE_URL": url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_FROM": "Jiefen <noreply@agreement.test>",
    }
    env.pop("DATABASE_URL", None)
    settings = Settings.from_env(env)
    upgrade_database(settings)
    world = in_thread(lambda: build_world(settings))
    log_path = var / "serve.log"
    log = log_path.open("w")
    server = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(log_path.read_text()) from None
                time.sleep(0.2)
        yield Portal(url, settings, log_path, mailbox, **world)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        smtp.stop()


# -- the signing codes -----------------------------------------------------------------------


def delivered_code_notification(portal: Portal, user_id: int) -> Notification:
    """The newest signing-code notification of ``user_id``, once the outbox has sent it."""

    async def newest() -> Notification | None:
        engine = create_engine(portal.settings.database_url)
        try:
            async with create_sessionmaker(engine)() as db:
                found: Notification | None = await db.scalar(
                    select(Notification)
                    .where(
                        Notification.user_id == user_id,
                        Notification.title_msgid == "Signing code",
                        Notification.channel.in_(["sms", "email"]),
                    )
                    .order_by(Notification.id.desc())
                    .limit(1)
                )
                return found
        finally:
            await engine.dispose()

    deadline = time.monotonic() + 15
    while True:
        row = in_thread(newest)
        if row is not None and row.status == "sent":
            return row
        assert time.monotonic() < deadline, f"the code was not sent: {row and row.last_error}"
        time.sleep(0.2)


def the_code(portal: Portal, text: str) -> str:
    """The one six-digit code in a message (the case number has digits too: left out)."""
    found = CODE.findall(text.replace(portal.case_number, ""))
    assert len(found) == 1, text
    return str(found[0])


def code_by_sms(portal: Portal, user_id: int) -> str:
    row = delivered_code_notification(portal, user_id)
    assert row.channel == "sms"
    # Once out, the outbox keeps no copy of the code.
    assert row.params["code"] == "******"
    log = portal.log.read_text()
    assert CLAIMANT_PHONE not in log  # the gateway's log masks the number
    return the_code(portal, sms_text(log, str(row.provider_id)))


def sms_text(log: str, provider_id: str) -> str:
    """The text of one SMS as the logging gateway wrote it (title and body: several lines)."""
    lines = log.splitlines()
    start = next((n for n, ln in enumerate(lines) if f"SMS {provider_id} to " in ln), None)
    assert start is not None, f"no SMS {provider_id} in the server's log"
    text = [lines[start].split(f"SMS {provider_id} to ", 1)[1].split(": ", 1)[1]]
    for line in lines[start + 1 :]:
        if LOG_RECORD.match(line):
            break
        text.append(line)
    return "\n".join(text)


def code_by_email(portal: Portal, user_id: int) -> str:
    row = delivered_code_notification(portal, user_id)
    assert row.channel == "email"
    assert row.params["code"] == "******"
    message = next(m for m in portal.mailbox.messages if m["Message-ID"] == row.provider_id)
    assert message["To"] == REP_EMAIL
    body = message.get_body(("plain",))
    assert body is not None
    return the_code(portal, str(body.get_content()))


# -- the browsers ----------------------------------------------------------------------------


def log_in(browser: Any, portal: Portal, login: str, *, phone: bool) -> Any:
    options: dict[str, Any] = {"locale": "zh-CN", "accept_downloads": True}
    if phone:
        options.update(
            viewport=PHONE,
            is_mobile=True,
            has_touch=True,
            device_scale_factor=2,
            user_agent=MOBILE_UA,
        )
    else:
        options.update(viewport=DESKTOP)
    page = browser.new_context(**options).new_page()
    page.goto(portal.url + "/accounts/login")
    page.fill("#f-login", login)
    page.fill("#f-password", PASSWORD)
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=welcome]")
    assert page.get_attribute("html", "lang") == "zh-CN"
    return page


def chinese_day(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def fits(page: Any) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide on a {PHONE['width']} px phone"


def usable_sign_form(page: Any) -> None:
    """On a phone the signing form's fields are full width and, like its buttons, at least
    44 px high (a finger-sized target)."""
    form = page.locator("[data-testid=sign-panel] form.stack").bounding_box()
    assert form is not None
    for testid in ("sign-password", "sign-code", "sign-name"):
        box = page.locator(f"[data-testid={testid}]").bounding_box()
        assert box is not None, testid
        assert box["height"] >= 44 and box["width"] >= 0.9 * form["width"], (testid, box, form)
    for testid in ("sign-send-code", "sign-submit"):
        box = page.locator(f"[data-testid={testid}]").bounding_box()
        assert box is not None and box["height"] >= 44, (testid, box)


def draw(page: Any) -> str:
    """Draw a stroke on the signing form's pad; the path the page will send."""
    pad = page.locator("[data-testid=sign-pad]")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()  # in the viewport, where a finger lands
    assert box is not None and box["height"] > 40, box
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    # A finger's stroke, through the browser's own touch input (as a phone's screen sends it).
    cdp = page.context.new_cdp_session(page)
    stroke = [(0.1 + 0.8 * t / 8, 0.7 - 0.5 * (t % 2)) for t in range(9)]
    for n, (fx, fy) in enumerate(stroke):
        point = {"x": x + fx * w, "y": y + fy * h}
        kind = "touchStart" if n == 0 else "touchMove"
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [point]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()
    path: str = page.input_value("[data-testid=sign-drawn]")
    assert path.startswith("M") and path.count("L") >= 6, path
    return path


def sign(page: Any, code: str, name: str, *, drawn: bool = False) -> None:
    page.fill("[data-testid=sign-password]", PASSWORD)
    page.fill("[data-testid=sign-code]", code)
    page.fill("[data-testid=sign-name]", name)
    if drawn:
        draw(page)
    page.click("[data-testid=sign-submit]")


def test_draft_sign_on_phones_and_download(
    portal: Portal, browser: Any, shot: Any, tmp_path: Path
) -> None:
    number = portal.case_number
    agreement_url = f"{portal.url}/cases/{portal.case_id}/agreement"
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    first_due, second_due = today + timedelta(days=30), today + timedelta(days=61)

    # 1. The mediator, on a computer: from the case to a draft, the terms, up for signature.
    mediator = log_in(browser, portal, MEDIATOR_EMAIL, phone=False)
    mediator.goto(f"{portal.url}/cases/{portal.case_id}")
    expect(mediator.locator("[data-testid=case-number]")).to_have_text(number)
    mediator.click("[data-testid=agreement-link]")
    mediator.wait_for_url(agreement_url)
    expect(mediator.locator("[data-testid=agreement]")).to_contain_text(number)
    expect(mediator.locator("[data-testid=agreement-status]")).to_have_count(0)
    mediator.click("[data-testid=agreement-start]")
    expect(mediator.locator("[data-testid=flash]")).to_be_visible()
    expect(mediator.locator("[data-testid=agreement-status]")).to_have_class(
        re.compile(r"\bagreement-drafting\b")
    )
    # Drafted from the case: the amount claimed, paid in one go.
    text = mediator.locator("[data-testid=agreement-text] ol.clauses[lang=zh-CN]")
    expect(text).to_contain_text("人民币12,800.00元")
    expect(mediator.locator("[data-testid=terms-refund]")).to_have_value("12,800.00")

    mediator.fill("[data-testid=terms-refund]", "12345.67")
    mediator.fill("[data-testid=payment-amount-1]", "6000")
    mediator.fill("[data-testid=payment-due-1]", first_due.isoformat())
    mediator.fill("[data-testid=payment-amount-2]", "6345.67")
    mediator.fill("[data-testid=payment-due-2]", second_due.isoformat())
    mediator.fill("#t-note", "按调解结果分两期退款")
    mediator.click("[data-testid=terms-save]")
    expect(mediator.locator("[data-testid=flash]")).to_be_visible()
    expect(text).to_contain_text("人民币12,345.67元")
    expect(text).to_contain_text(
        f"第一期于{chinese_day(first_due)}前支付人民币6,000.00元；"
        f"第二期于{chinese_day(second_due)}前支付人民币6,345.67元"
    )
    expect(text).not_to_contain_text("12,800.00")
    expect(mediator.locator("[data-testid=agreement]")).to_contain_text("按调解结果分两期退款")
    expect(mediator.locator("[data-testid=agreement-diff]")).to_contain_text("人民币12,345.67元")
    # The editor shows what was saved.
    expect(mediator.locator("[data-testid=payment-amount-2]")).to_have_value("6,345.67")
    expect(mediator.locator("[data-testid=payment-due-2]")).to_have_value(second_due.isoformat())
    mediator.click("[data-testid=agreement-open-signing]")
    expect(mediator.locator("[data-testid=flash]")).to_be_visible()
    expect(mediator.locator("[data-testid=agreement-status]")).to_have_class(
        re.compile(r"\bagreement-signing\b")
    )
    expect(mediator.locator("[data-testid=agreement-open-signing]")).to_have_count(0)
    # The mediator does not sign.
    expect(mediator.locator("[data-testid=sign-panel]")).to_have_count(0)
    shot(mediator, "agreement-1-mediator-up-for-signature")

    # 2. The claimant, on a phone: reads, comments, asks for a code by SMS and signs.
    claimant = log_in(browser, portal, CLAIMANT_PHONE, phone=True)
    claimant.goto(agreement_url)
    expect(claimant.locator("[data-testid=agreement-text]")).to_contain_text("人民币12,345.67元")
    expect(claimant.locator("[data-testid=agreement-editor]")).to_have_count(0)
    claimant.fill("[data-testid=comment-body]", "请写明退款到账账户")
    claimant.click("[data-testid=comment-submit]")
    expect(claimant.locator("[data-testid=flash]")).to_be_visible()
    comments = claimant.locator("[data-testid=agreement-comments]")
    expect(comments).to_contain_text("请写明退款到账账户")
    expect(comments).to_contain_text("张三")
    expect(claimant.locator("[data-testid=sign-panel]")).to_be_visible()
    expect(claimant.locator("[data-testid=signature-claimant]")).not_to_contain_text("张三")
    fits(claimant)
    usable_sign_form(claimant)
    shot(claimant, "agreement-2-claimant-before-signing-phone")

    claimant.click("[data-testid=sign-send-code]")
    expect(claimant.locator("[data-testid=flash]")).to_be_visible()
    code = code_by_sms(portal, portal.claimant_id)
    sign(claimant, code, "张三", drawn=True)
    expect(claimant.locator("[data-testid=flash]")).to_be_visible()
    expect(claimant.locator("[data-testid=signature-claimant]")).to_contain_text("张三")
    expect(claimant.locator("[data-testid=sign-panel]")).to_have_count(0)
    # The firm has not signed yet: not in effect.
    expect(claimant.locator("[data-testid=agreement-status]")).to_have_class(
        re.compile(r"\bagreement-signing\b")
    )
    expect(claimant.locator("[data-testid=agreement-signed-pdf]")).to_have_count(0)
    fits(claimant)
    shot(claimant, "agreement-3-claimant-signed-phone")

    # 3. The firm's representative, on a phone: a wrong code first, then the right one.
    rep = log_in(browser, portal, REP_EMAIL, phone=True)
    rep.goto(agreement_url)
    expect(rep.locator("[data-testid=signature-claimant]")).to_contain_text("张三")
    expect(rep.locator("[data-testid=agreement-comments]")).to_contain_text("请写明退款到账账户")
    rep.click("[data-testid=sign-send-code]")
    expect(rep.locator("[data-testid=flash]")).to_be_visible()
    code = code_by_email(portal, portal.rep_id)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    sign(rep, wrong, "李经理")
    error = rep.locator("[data-testid=agreement-error]")
    expect(error).to_be_visible()
    assert CJK.search(error.inner_text()), f"the error is not in Chinese: {error.inner_text()!r}"
    expect(rep.locator("[data-testid=sign-code]")).to_have_attribute("aria-invalid", "true")
    expect(rep.locator("[data-testid=sign-name]")).to_have_value("李经理")  # kept
    expect(rep.locator("[data-testid=sign-password]")).to_have_value("")  # not kept
    expect(rep.locator("[data-testid=signature-respondent]")).not_to_contain_text("李经理")
    expect(rep.locator("[data-testid=agreement-status]")).to_have_class(
        re.compile(r"\bagreement-signing\b")
    )
    fits(rep)
    usable_sign_form(rep)
    shot(rep, "agreement-4-firm-wrong-code-phone")

    sign(rep, code, "李经理")
    expect(rep.locator("[data-testid=flash]")).to_be_visible()
    expect(rep.locator("[data-testid=agreement-error]")).to_have_count(0)
    status = rep.locator("[data-testid=agreement-status]")
    expect(status).to_have_class(re.compile(r"\bagreement-effective\b"))
    assert CJK.search(status.inner_text()), f"the status is not in Chinese: {status.inner_text()!r}"
    expect(rep.locator("[data-testid=signature-respondent]")).to_contain_text("李经理")
    expect(rep.locator("[data-testid=signature-claimant]")).to_contain_text("张三")
    expect(rep.locator("[data-testid=sign-panel]")).to_have_count(0)
    expect(rep.locator("[data-testid=comment-body]")).to_have_count(0)
    fits(rep)
    shot(rep, "agreement-5-firm-signed-in-effect-phone")

    # 4. The signed agreement and the version signed, downloaded.
    with rep.expect_download() as signed_download:
        rep.click("[data-testid=agreement-signed-pdf]")
    signed = signed_download.value
    assert signed.suggested_filename == f"agreement-{number}-signed.pdf"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    signed_path = ARTIFACTS / "agreement-signed.pdf"
    signed.save_as(signed_path)
    assert signed_path.read_bytes().startswith(b"%PDF")
    reader = PdfReader(signed_path)
    assert number in reader.pages[0].extract_text()
    everything = "".join("".join(p.extract_text().split()) for p in reader.pages)
    for expected in ("人民币12,345.67元", "张三", "李经理"):
        assert expected in everything, expected

    with rep.expect_download() as version_download:
        rep.click("[data-testid=agreement-version-pdf]")
    version = version_download.value
    assert version.suggested_filename == f"agreement-{number}-v2.pdf"
    version_path = tmp_path / version.suggested_filename
    version.save_as(version_path)
    shown = rep.inner_text("[data-testid=agreement-sha256]").strip()
    assert re.fullmatch(r"[0-9a-f]{64}", shown)
    assert hashlib.sha256(version_path.read_bytes()).hexdigest() == shown

    # The case is settled, as the claimant's case page says.
    claimant.goto(f"{portal.url}/cases/{portal.case_id}")
    expect(claimant.locator("[data-testid=case-status]")).to_have_text("已达成调解协议")
    expect(claimant.locator("[data-testid=agreement-panel]")).to_be_visible()
    for page in (mediator, claimant, rep):
        page.context.close()
