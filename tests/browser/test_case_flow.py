"""A consumer files a dispute on a phone; the committee accepts and assigns; the firm answers."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.factories import PDF, PNG

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def log_in(
    browser: Any, url: str, login: str, viewport: dict[str, int], locale: str | None = None
) -> Any:
    """A new browser context (with the browser's language ``locale`` if given), logged in."""
    context = browser.new_context(viewport=viewport, **({"locale": locale} if locale else {}))
    page = context.new_page()
    page.goto(url + "/accounts/login")
    page.fill("#f-login", login)
    page.fill("#f-password", "Jiefen-Demo-2026")
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=welcome]")
    return page


def test_file_accept_assign_answer(portal_url: str, browser: Any, shot: Any) -> None:
    consumer = log_in(browser, portal_url, "13800138000", PHONE)
    consumer.click("[data-testid=home-file]")
    consumer.select_option("#f-category", "securities_advisory")
    consumer.select_option("#f-firm_id", label="示例证券投资咨询有限公司")
    shot(consumer, "10-file-start-phone")
    consumer.click("text=继续")

    consumer.fill("#f-name", "张三")
    consumer.fill("#f-id_number", "11010519491231002X")
    consumer.click("button[type=submit].primary")
    consumer.fill("#f-amount", "12800")
    consumer.check("input[name=outcomes][value=refund]")
    consumer.fill(
        "#f-facts", "2026年5月购买荐股服务，对方承诺月收益百分之二十，实际亏损，要求退还服务费。"
    )
    consumer.click("button[type=submit].primary")
    for question in ("in_court", "in_arbitration", "other_mediator", "has_decision", "settled"):
        consumer.check(f"input[name={question}][value=no]")
    consumer.click("button[type=submit].primary")

    for kind, name, content, mime in (
        ("identity", "身份证.png", PNG, "image/png"),
        ("contract", "服务合同.pdf", PDF, "application/pdf"),
    ):
        consumer.select_option("#f-kind", kind)
        consumer.set_input_files(
            "#f-file", files=[{"name": name, "mimeType": mime, "buffer": content}]
        )
        consumer.click("form.upload button[type=submit]")
        consumer.wait_for_selector("[data-testid=flash]")
    expect(consumer.locator("[data-testid=materials]")).to_contain_text("服务合同.pdf")
    shot(consumer, "11-file-materials-phone")
    consumer.click("text=继续")
    shot(consumer, "12-file-review-phone")
    consumer.click("[data-testid=submit-case]")
    consumer.wait_for_selector("[data-testid=case-number]")
    number = consumer.inner_text("[data-testid=case-number]")
    assert re.fullmatch(r"PT-\d{4}-\d{6}", number)
    expect(consumer.locator("[data-testid=case-status]")).to_contain_text("待审核")
    shot(consumer, "13-case-submitted-phone")

    admin = log_in(browser, portal_url, "admin@jiefen.example", DESKTOP)
    admin.goto(portal_url + "/cases?status=submitted")
    admin.click(f"text={number}")
    admin.click("[data-testid=act-accept]")
    admin.wait_for_selector("[data-testid=flash]")
    expect(admin.locator("[data-testid=case-status]")).to_contain_text("已受理")
    admin.click("[data-testid=assign]")
    shot(admin, "14-assign-suggestions")
    admin.click("[data-testid=confirm-assign]")
    expect(admin.locator("[data-testid=mediator]")).to_contain_text("李调解员")
    shot(admin, "15-case-assigned-admin")

    # The consumer's open page updates by itself (htmx polling), without a reload.
    expect(consumer.locator("[data-testid=mediator]")).to_contain_text("李调解员", timeout=30_000)
    expect(consumer.locator("[data-testid=timeline]")).to_contain_text("已指派调解员")
    shot(consumer, "16-case-assigned-phone")

    firm = log_in(browser, portal_url, "firm@jiefen.example", DESKTOP)
    firm.goto(portal_url + "/cases")
    firm.click(f"text={number}")
    firm.check("input[name=kind][value=propose]")
    firm.fill("#f-offer", "6400")
    firm.fill("#f-terms", "退还一半服务费")
    firm.click("[data-testid=send-response]")
    firm.wait_for_selector("[data-testid=flash]")
    expect(firm.locator("[data-testid=firm-answer]")).to_contain_text("¥6,400.00")
    # The firm does not see the claimant's identity papers.
    assert "身份证.png" not in firm.content()
    shot(firm, "17-firm-answered")
    # The firm connects its systems: a token for the API, shown once, and its one-click link.
    firm.click("[data-testid=nav-integration]")
    expect(firm.locator("[data-testid=firm-link-qr]")).to_be_visible()
    firm.fill("#f-name", "投诉系统")
    firm.check("input[name=scopes][value='cases:read']")
    firm.click("#tokens button[type=submit].primary")
    expect(firm.locator("[data-testid=token-secret] input")).to_have_value(re.compile(r"^jfk_"))
    shot(firm, "18-firm-integration")
    # The committee's queue: tick cases and act on them together.
    admin.goto(portal_url + "/cases?status=assigned")
    expect(admin.locator("[data-testid=batch-form]")).to_be_visible()
    shot(admin, "19-admin-batch-actions")

    consumer.reload()
    expect(consumer.locator("[data-testid=firm-answer]")).to_contain_text("¥6,400.00")
    expect(consumer.locator("[data-testid=nav-notifications] .count-badge")).not_to_have_text("0")
    for page in (consumer, admin, firm):
        page.context.close()
