"""The committee administrator reads the statistics (a figure opens the same cases in the list),
sees the early warning of the demo's surge of complaints, and sends the firm a risk notice that
the firm's representative acknowledges."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from tests.browser.test_case_flow import DESKTOP, PHONE, log_in


def test_statistics_warning_and_risk_notice(portal_url: str, browser: Any, shot: Any) -> None:
    admin = log_in(browser, portal_url, "admin@jiefen.example", DESKTOP, "zh-CN")
    admin.click("[data-testid=nav-stats]")
    expect(admin.locator("[data-testid=kpis]")).to_be_visible()
    # The demo: 38 cases filed in the last twelve months, 18 settled and 6 failed.
    expect(admin.locator("[data-testid=kpi-received]")).to_have_text("38")
    expect(admin.locator("[data-testid=kpi-settled]")).to_have_text("18")
    expect(admin.locator("[data-testid=kpi-success]")).to_have_text("75.0%")
    assert admin.locator("svg.chart").count() >= 3
    shot(admin, "60-statistics")

    # A figure opens the case list with exactly those cases.
    admin.click("[data-testid=kpi-settled] a")
    expect(admin.locator("[data-testid=case-count]")).to_have_text(re.compile(r"\b18\b"))
    assert "outcome=settled" in admin.url

    # The export downloads the month table.
    admin.go_back()
    with admin.expect_download() as download:
        admin.click("[data-testid=export-month-csv]")
    assert download.value.suggested_filename.endswith(".csv")

    admin.click("[data-testid=nav-warnings]")
    card = admin.locator("[data-testid^=alert-firm-]").first
    expect(card).to_contain_text("示例证券投资咨询有限公司")
    card.locator("summary").click()
    expect(card.locator("li").first).to_be_visible()
    shot(admin, "61-early-warnings")
    card.locator("button[type=submit]").click()
    expect(admin.locator("[data-testid=notice-message]")).to_be_visible()
    notice_url = admin.url

    firm = log_in(browser, portal_url, "firm@jiefen.example", PHONE, "zh-CN")
    firm.goto(portal_url + "/notices")
    firm.locator("[data-testid=notices] a").first.click()
    assert firm.url == notice_url
    expect(firm.locator("[data-testid=notice-figures]")).to_be_visible()
    firm.fill("#reply", "已成立专项小组，五个工作日内书面答复。")
    firm.click("[data-testid=acknowledge]")
    expect(firm.locator("[data-testid=notice-acknowledged]")).to_be_visible()
    shot(firm, "62-risk-notice-acknowledged-phone")

    admin.goto(notice_url)
    expect(admin.locator("[data-testid=notice-reply]")).to_contain_text("专项小组")

    phone = log_in(browser, portal_url, "admin@jiefen.example", PHONE, "zh-CN")
    phone.goto(portal_url + "/admin/stats")
    expect(phone.locator("[data-testid=kpi-received]")).to_have_text("38")
    shot(phone, "63-statistics-phone")
