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


def test_committee_imports_court_referred_cases(
    portal_url: str, browser: Any, shot: Any, tmp_path: Any
) -> None:
    """The committee uploads a court's list of referred cases: the report row by row, then
    the valid rows imported with the court's name, case numbers and deadline."""
    header = ",".join(
        [
            "外部编号*",
            "被申请机构统一社会信用代码",
            "纠纷类型*",
            "申请人姓名*",
            "申请人身份证号*",
            "申请人手机号*",
            "金额（元）",
            "纠纷发生日期",
            "纠纷事实与请求*",
            "法院案号",
        ]
    )
    code = "91310000MA1K00002C"
    rows = [
        f"FY-001,{code},信用卡,王五,11010519491231002X,13700000001,8200,2026-04-02,"
        "分期手续费争议，请求退还。,(2026)沪0101民初1001号",
        f"FY-002,{code},小额贷款,赵六,11010519491231002X,13700000002,15000,2026-05-10,"
        "利息计算争议。,(2026)沪0101民初1002号",
        f"FY-003,{code},信用卡,钱七,110105194912310021,1370000,abc,2026-05-11,年费争议。,",
    ]
    path = tmp_path / "法院委派.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="gbk")
    admin = log_in(browser, portal_url, "admin@jiefen.example", DESKTOP)
    admin.click("[data-testid=nav-import]")
    admin.select_option("#f-kind", "court")
    admin.fill("#f-court_name", "上海市黄浦区人民法院")
    admin.fill("#f-court_deadline", "2099-06-30")
    admin.set_input_files("#f-file", str(path))
    admin.click("[data-testid=import-upload]")
    expect(admin.locator("[data-testid=import-status]")).to_have_attribute("data-status", "checked")
    expect(admin.locator("[data-testid=import-valid]")).to_have_text("2")
    expect(admin.locator("[data-testid=import-report]")).to_contain_text("申请人手机号")
    shot(admin, "20-import-report")
    admin.check("input[name=mode][value=valid]")
    admin.click("[data-testid=import-start]")
    expect(admin.locator("[data-testid=import-status]")).to_have_attribute(
        "data-status", "imported", timeout=20_000
    )
    expect(admin.locator("[data-testid=import-imported]")).to_have_text("2")
    shot(admin, "21-import-done")
    admin.goto(portal_url + "/cases?status=submitted&sort=-submitted")
    admin.locator("#case-results tbody a").first.click()
    expect(admin.locator("[data-testid=court-referral]")).to_contain_text("上海市黄浦区人民法院")
    shot(admin, "22-court-referred-case")
    admin.context.close()
