"""The consumer guide: public, in Chinese (the default) and English, with the points people
need before filing; the filing wizard's first step and the home page link to it."""

from __future__ import annotations

from typing import Any

import httpx

from portal.policy import Role
from tests.conftest import log_in
from tests.factories import make_user

ZH = [
    "人民调解不收取任何费用",
    "调解不是投诉",
    "调解不是信访",
    "调解不是诉讼",
    "身份证明",
    "关键合同或凭证",
    "司法确认",
    "“黑维”或“黑产代理”",
    "模板投诉",
    "验证码",
    "12378",
]
EN = [
    "Mediation is free.",
    "Mediation is not a complaint.",
    "Mediation is not a petition.",
    "Mediation is not a lawsuit.",
    "The key contract or receipt",
    "Judicial confirmation makes it enforceable.",
    "“rights-protection agencies”",
    "Use template complaints:",
    "Never give anyone your codes, passwords or bank card.",
    "What to do instead",
    "Before you file: a guide to mediation",
]


async def test_the_guide_is_public_in_both_languages(client: httpx.AsyncClient) -> None:
    chinese = await client.get("/guide")
    assert chinese.status_code == 200 and 'lang="zh-CN"' in chinese.text
    for sentence in ZH:
        assert sentence in chinese.text, sentence
    assert "Mediation is free." not in chinese.text
    client.cookies.set("jiefen_lang", "en")
    english = await client.get("/guide")
    assert english.status_code == 200 and '<html lang="en"' in english.text
    for sentence in EN:
        assert sentence in english.text, sentence
    assert "人民调解不收取任何费用" not in english.text


async def test_the_wizard_and_the_home_page_link_to_the_guide(
    app: Any, client: httpx.AsyncClient
) -> None:
    home = await client.get("/")
    assert 'href="/guide" data-testid="home-guide"' in home.text
    consumer = await make_user(app, Role.CONSUMER, phone="13911112222")
    await log_in(client, consumer.login, consumer.password)
    wizard = await client.get("/cases/new")
    assert wizard.status_code == 200
    assert 'href="/guide" data-testid="wizard-guide"' in wizard.text
    assert 'data-testid="home-guide"' in (await client.get("/")).text
    # Logged in, the guide offers to file.
    assert 'href="/cases/new"' in (await client.get("/guide")).text
