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


def test_csp_blocks_injected_scripts_while_the_page_works(
    portal_url: str, browser: Any, shot: Any
) -> None:
    """Stand-in for an XSS: the login page arrives with an inline script and a script from this
    origin (say, an uploaded file) slipped in. Neither runs; the page's own scripts do."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    # Runs through DevTools, outside the page's policy: it only records what the policy refused.
    page.add_init_script(
        "window.refused = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.refused.push(e.violatedDirective + ' ' + e.blockedURI));"
    )

    def inject(route: Any) -> None:
        response = route.fetch()
        html = response.text().replace(
            "</body>",
            "<script>window.inlineRan = true</script>"
            '<script src="/var/uploads/evil.js"></script></body>',
        )
        route.fulfill(response=response, body=html)

    def evil(route: Any) -> None:
        route.fulfill(body="window.uploadRan = true", content_type="text/javascript")

    page.route("**/accounts/login", inject)
    page.route("**/var/uploads/evil.js", evil)
    page.goto(portal_url + "/accounts/login")
    page.wait_for_function("window.refused.length >= 2")
    assert page.evaluate("window.inlineRan") is None
    assert page.evaluate("window.uploadRan") is None
    refused = page.evaluate("window.refused")
    assert any(r.startswith("script-src-elem inline") for r in refused), refused
    assert any(r.endswith("/var/uploads/evil.js") for r in refused), refused
    # The page's own scripts ran: htmx posts the login form and swaps in its errors.
    assert page.evaluate("typeof htmx") == "object"
    page.fill("#f-login", "admin@jiefen.example")
    page.fill("#f-password", "not-the-password")
    page.click("button[type=submit].primary")
    page.wait_for_selector(".error-summary")
    shot(page, "07-csp-refused-injected-scripts")
    page.unroute("**/accounts/login")
    page.fill("#f-password", "Jiefen-Demo-2026")
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=welcome]")
    context.close()
