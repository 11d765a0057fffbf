"""A consumer registers, logs out and in, switches language; a demo login works."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

PHONE_VIEWPORT = {"width": 390, "height": 844}


def test_register_login_language_logout(portal_url: str, browser: Any, shot: Any) -> None:
    context = browser.new_context(viewport=PHONE_VIEWPORT, locale="zh-CN")
    page = context.new_page()
    page.goto(portal_url + "/")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert "在线" in page.inner_text("h1")
    shot(page, "01-home-zh-phone")

    page.click("text=注册")
    page.fill("#f-display_name", "王阿姨")
    page.fill("#f-phone", "13912345678")
    page.fill("#f-password", "short")
    page.click("button[type=submit].primary")
    # htmx swaps the form with its errors, in Chinese, and moves focus to the summary.
    page.wait_for_selector(".error-summary")
    assert "密码" in page.inner_text("#f-password-error")
    assert page.evaluate("document.activeElement.classList.contains('error-summary')")
    shot(page, "02-register-error-zh")

    page.fill("#f-password", "Plum-Blossom-1958")
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=welcome]")
    assert "王阿姨" in page.inner_text("[data-testid=welcome]")
    shot(page, "03-registered-zh")

    page.click("[data-testid=switch-en]")
    page.wait_for_selector("html[lang=en]")
    assert "Hello" in page.inner_text("[data-testid=welcome]")
    page.click("[data-testid=nav-account]")
    assert "139****5678" in page.inner_text("[data-testid=contact]")
    shot(page, "04-account-en")
    page.click("[data-testid=switch-zh_CN]")
    page.wait_for_selector("html[lang=zh-CN]")
    assert "我的账号" in page.inner_text("h1")

    page.click("[data-testid=logout]")
    page.wait_for_selector("[data-testid=flash]")
    page.goto(portal_url + "/accounts/login")
    page.fill("#f-login", "139 1234 5678")
    page.fill("#f-password", "Plum-Blossom-1958")
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=welcome]")
    assert "王阿姨" in page.inner_text("[data-testid=welcome]")
    page.click("[data-testid=logout]")
    page.wait_for_selector("text=登录")
    context.close()


def test_demo_admin_login_and_large_text(portal_url: str, browser: Any, shot: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(portal_url + "/accounts/login")
    page.fill("#f-login", "admin@jiefen.example")
    page.fill("#f-password", "Jiefen-Demo-2026")
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=welcome]")
    page.click("text=企业")
    page.wait_for_selector("#firm-results")
    assert "示例消费金融股份有限公司" in page.inner_text("#firm-results")
    page.fill("#firm-search", "证券")
    expect(page.locator("#firm-results")).not_to_contain_text("示例消费金融")
    assert "示例证券投资咨询有限公司" in page.inner_text("#firm-results")
    shot(page, "05-admin-firms-zh")
    page.click("text=大字模式")
    page.wait_for_selector("html.large-text")
    shot(page, "06-admin-firms-large-text")
    missing = page.goto(portal_url + "/admin/firms/99999")
    assert missing is not None and missing.status == 404
    assert "页面不存在" in page.inner_text("h1")
    context.close()
