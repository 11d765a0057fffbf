"""CSRF, error pages, security headers, static files."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import csrf_token


async def test_unsafe_request_without_token_is_refused(client: httpx.AsyncClient) -> None:
    await client.get("/")  # the browser has a CSRF cookie
    for data, headers in [
        ({"locale": "en"}, {}),
        ({"locale": "en", "csrf_token": "0" * 64}, {}),
        ({"locale": "en"}, {"X-CSRF-Token": "forged"}),
        ({"locale": "en"}, {"HX-Request": "true"}),
    ]:
        response = await client.post("/preferences", data=data, headers=headers)
        assert response.status_code == 403
        assert "表单已过期" in response.text or "刷新" in response.text
        assert "jiefen_lang" not in response.headers.get("set-cookie", "")


async def test_token_from_another_browser_is_refused(client: httpx.AsyncClient, app: Any) -> None:
    token = await csrf_token(client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        await other.get("/")
        response = await other.post("/preferences", data={"csrf_token": token, "locale": "en"})
    assert response.status_code == 403


async def test_first_request_without_cookie_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/preferences", data={"csrf_token": "x", "locale": "en"})
    assert response.status_code == 403


async def test_header_token_works_for_htmx(client: httpx.AsyncClient) -> None:
    token = await csrf_token(client)
    response = await client.post(
        "/preferences",
        data={"locale": "en"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert response.status_code == 204 and response.headers["HX-Redirect"] == "/"


async def test_multipart_form_with_token_first(client: httpx.AsyncClient) -> None:
    token = await csrf_token(client)
    response = await client.post(
        "/preferences",
        data={"csrf_token": token, "locale": "en"},
        files={"unused": ("a.txt", b"x")},
    )
    # The token was found; the view then refuses the file it does not accept.
    assert response.status_code != 403


async def test_styled_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert 'data-testid="error-404"' in response.text and "页面不存在" in response.text
    assert (await client.get("/admin/firms/999999")).status_code in (303, 404)


async def test_500_shows_request_id_and_logs_traceback(
    app: Any, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("kaboom in a view")

    app.starlette.router.routes.append(Route("/boom", boom))
    with caplog.at_level(logging.ERROR, logger="jiefen.errors"):
        response = await client.get("/boom")
    assert response.status_code == 500
    request_id = response.headers["X-Request-ID"]
    assert request_id in response.text
    assert "kaboom" not in response.text and "Traceback" not in response.text
    record = next(r for r in caplog.records if request_id in r.getMessage())
    assert record.exc_info is not None and "kaboom in a view" in str(record.exc_info[1])


async def test_security_headers_and_static_vendor(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    # Scripts run only with this response's nonce, which every script tag carries; the next
    # response has another.
    nonce = re.search(r"script-src 'nonce-([\w-]+)'", csp)
    assert nonce is not None
    tags = re.findall(r"<script[^>]*\bsrc=[^>]*>", response.text)
    assert tags and all(f'nonce="{nonce[1]}"' in tag for tag in tags)
    again = (await client.get("/")).headers["Content-Security-Policy"]
    assert nonce[1] not in again
    assert "Strict-Transport-Security" not in response.headers  # plain http in tests
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    for path in [
        "/static/vendor/htmx-2.0.11/htmx.min.js",
        "/static/vendor/socket.io-client-4.8.4/socket.io.min.js",
        "/static/css/jiefen.css",
        "/static/js/app.js",
    ]:
        assert (await client.get(path)).status_code == 200, path
    assert "//cdn" not in response.text and "https://" not in response.text
