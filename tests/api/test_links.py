"""The firm's one-click mediation link: signed, opening the filing wizard with the firm (and
its chosen category) filled in; a damaged or forged link opens the plain wizard."""

from __future__ import annotations

import io
import re
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from PIL import Image

from portal.cases.links import FirmLink, read_link, sign_link
from portal.policy import Role
from tests.conftest import log_in, make_settings
from tests.factories import make_firm, make_user, verify_phone


def test_links_are_signed_and_forgeries_read_as_nothing(tmp_path: Any) -> None:
    settings = make_settings("sqlite+aiosqlite:///x.db", tmp_path)
    other = make_settings("sqlite+aiosqlite:///x.db", tmp_path, secret_key="another-" + "z" * 40)
    token = sign_link(settings, FirmLink(7, "credit_card"))
    assert read_link(settings, token) == FirmLink(7, "credit_card")
    assert read_link(settings, sign_link(settings, FirmLink(7))) == FirmLink(7, "")
    assert read_link(other, token) is None  # signed by another portal
    assert read_link(settings, token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    assert read_link(settings, "") is None and read_link(settings, "x" * 500) is None


async def test_the_link_opens_the_wizard_with_the_firm(app: Any, client: httpx.AsyncClient) -> None:
    firm = await make_firm(app, name="甲银行")
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    consumer = await make_user(app, Role.CONSUMER, phone="13900000991")
    await verify_phone(app, consumer)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as firm_client:
        await log_in(firm_client, rep.login, rep.password)
        page = await firm_client.get("/firm/integration", params={"category": "credit_card"})
        link = re.search(r'data-testid="firm-link"[^>]*value="([^"]+)"', page.text)
        if link is None:
            link = re.search(r'value="([^"]+)"[^>]*data-testid="firm-link"', page.text)
        assert link is not None and 'data-testid="firm-link-qr"' in page.text
        url = link.group(1).replace("&amp;", "&")
        qr = await firm_client.get("/firm/integration/qr.png", params={"category": "credit_card"})
        assert qr.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(qr.content)).size[0] >= 200
    path = urlsplit(url).path
    assert path.startswith("/m/")
    # Not logged in: to the login page, and back to the wizard afterwards.
    first = await client.get(path)
    assert first.status_code == 303 and first.headers["location"].startswith("/cases/new?via=")
    wizard_url = first.headers["location"]
    to_login = await client.get(wizard_url)
    assert to_login.status_code == 303
    assert unquote(to_login.headers["location"]).endswith(wizard_url)
    await log_in(client, consumer.login, consumer.password)
    wizard = await client.get(wizard_url)
    assert wizard.status_code == 200 and 'data-testid="wizard-via"' in wizard.text
    assert "甲银行" in wizard.text
    assert f'<option value="{firm.id}" selected>' in wizard.text
    assert '<option value="credit_card" selected>' in wizard.text
    # A forged link: the plain wizard, nothing chosen.
    forged = await client.get("/cases/new", params={"via": "eyJmIjoxfQ.forged"})
    assert forged.status_code == 200 and 'data-testid="wizard-via"' not in forged.text
    assert " selected>" not in forged.text.split('id="f-firm_id"')[1].split("</select>")[0]
