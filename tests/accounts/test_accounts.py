"""Registration, login, throttling, sessions, password change, preferences."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, text, update

from portal.accounts.models import LoginThrottle, User, UserSession
from portal.audit.models import AuditEvent
from portal.db import utcnow
from portal.policy import Role
from tests.conftest import csrf_token, log_in, post_form
from tests.factories import PASSWORD, make_user


async def count(app: Any, model: Any) -> int:
    async with app.starlette.state.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def register(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    data = {"display_name": "张三", "phone": "13812345678", "email": "", "password": PASSWORD}
    data.update(fields)
    return await post_form(client, "/accounts/register", data)


async def test_register_logs_in_and_encrypts_contact(app: Any, client: httpx.AsyncClient) -> None:
    response = await register(client)
    assert response.status_code == 303
    cookie = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookie if c.startswith("jiefen_session="))
    assert "HttpOnly" in session_cookie and "SameSite=lax" in session_cookie
    assert "Secure" not in session_cookie  # BASE_URL is http in tests
    page = await client.get("/account")
    assert page.status_code == 200
    assert "138****5678" in page.text and "13812345678" not in page.text
    async with app.starlette.state.db() as db:
        raw = (await db.execute(text("SELECT * FROM users"))).mappings().one()
        events = list(await db.scalars(select(AuditEvent.action)))
    assert raw["role"] == "consumer"
    assert b"13812345678" not in bytes(raw["phone_enc"])
    assert "13812345678" not in str(dict(raw))
    assert raw["password_hash"].startswith("$argon2id$")
    assert "user.create" in events and "session.start" in events


async def test_duplicate_registration_refused_in_chinese(
    app: Any, client: httpx.AsyncClient
) -> None:
    assert (await register(client)).status_code == 303
    other = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with other:
        response = await register(other, display_name="李四", phone="138 1234 5678")
    assert response.status_code == 400
    assert "该手机号" in response.text or "已注册" in response.text
    assert await count(app, User) == 1


async def test_bad_fields_come_back_with_errors_and_nothing_saved(
    app: Any, client: httpx.AsyncClient
) -> None:
    cases = [
        ({"password": "short"}, "password"),
        ({"password": "password1234"}, "password"),
        ({"phone": "12345"}, "phone"),
        ({"phone": "", "email": "not-an-email"}, "email"),
        ({"phone": "", "email": ""}, "phone"),
        ({"display_name": ""}, "display_name"),
    ]
    for fields, field in cases:
        response = await register(client, **fields)
        assert response.status_code == 400, fields
        assert f'id="f-{field}-error"' in response.text, fields
        assert f'aria-describedby="f-{field}' in response.text or f'id="f-{field}"' in response.text
        assert 'aria-invalid="true"' in response.text
    assert await count(app, User) == 0


async def test_errors_follow_the_chosen_language(client: httpx.AsyncClient) -> None:
    zh = await register(client, password="short")
    assert "密码" in zh.text
    await post_form(client, "/preferences", {"locale": "en"})
    en = await register(client, password="short")
    assert "Use at least 10 characters for your password." in en.text
    assert '<html lang="en"' in en.text


async def test_htmx_form_error_returns_only_the_form(client: httpx.AsyncClient) -> None:
    token = await csrf_token(client)
    response = await client.post(
        "/accounts/register",
        data={"display_name": "", "phone": "", "password": ""},
        headers={"HX-Request": "true", "X-CSRF-Token": token},
    )
    assert response.status_code == 400
    assert response.text.lstrip().startswith("<form")
    assert "<html" not in response.text


async def test_login_logout_and_wrong_password(app: Any, client: httpx.AsyncClient) -> None:
    person = await make_user(app, Role.CONSUMER, phone="13700000000")
    wrong = await post_form(
        client, "/accounts/login", {"login": "13700000000", "password": "nope-nope-nope"}
    )
    assert wrong.status_code == 400
    unknown = await post_form(
        client, "/accounts/login", {"login": "13700000009", "password": "nope-nope-nope"}
    )
    assert unknown.status_code == 400
    # The same message for a wrong password and an unknown account.
    assert "密码有误" in wrong.text or "密码错误" in wrong.text
    summary = re.compile(r'<div class="error-summary".*?</div>', re.S)
    assert summary.findall(wrong.text) == summary.findall(unknown.text)
    await log_in(client, "137 0000 0000", person.password)
    assert (await client.get("/account")).status_code == 200
    assert await count(app, UserSession) == 1
    out = await post_form(client, "/accounts/logout")
    assert out.status_code == 303
    assert await count(app, UserSession) == 0
    assert (await client.get("/account")).status_code == 303


async def test_login_redirects_to_a_local_next_only(app: Any, client: httpx.AsyncClient) -> None:
    person = await make_user(app, Role.CONSUMER)
    token = await csrf_token(client)
    response = await client.post(
        "/accounts/login",
        data={
            "csrf_token": token,
            "login": person.login,
            "password": person.password,
            "next": "//evil.example/steal",
        },
    )
    assert response.headers["location"] == "/"
    await post_form(client, "/accounts/logout")
    token = await csrf_token(client)
    response = await client.post(
        "/accounts/login",
        data={
            "csrf_token": token,
            "login": person.login,
            "password": person.password,
            "next": "/account",
        },
    )
    assert response.headers["location"] == "/account"


async def test_throttling_per_account_with_growing_delay(
    app: Any, client: httpx.AsyncClient
) -> None:
    person = await make_user(app, Role.CONSUMER)
    for _ in range(5):
        response = await post_form(
            client, "/accounts/login", {"login": person.login, "password": "bad-bad-bad-1"}
        )
        assert response.status_code == 400
    # Now even the right password waits, and the message says how long.
    blocked = await post_form(
        client, "/accounts/login", {"login": person.login, "password": person.password}
    )
    assert blocked.status_code == 400
    assert "失败次数过多" in blocked.text or "尝试次数过多" in blocked.text
    assert "秒" in blocked.text
    async with app.starlette.state.db() as db:
        rows = {r.key.split(":")[0]: r for r in await db.scalars(select(LoginThrottle))}
    assert rows["acct"].failures == 5 and rows["ip"].failures == 5
    first_delay = rows["acct"].blocked_until - rows["acct"].last_failure_at
    assert timedelta(seconds=14) < first_delay <= timedelta(seconds=15)
    # Expire the block; one more failure doubles the delay.
    async with app.starlette.state.db() as db:
        await db.execute(
            update(LoginThrottle).values(blocked_until=utcnow() - timedelta(seconds=1))
        )
        await db.commit()
    await post_form(client, "/accounts/login", {"login": person.login, "password": "bad-bad-bad-1"})
    async with app.starlette.state.db() as db:
        acct = await db.scalar(select(LoginThrottle).where(LoginThrottle.key.like("acct:%")))
    assert acct is not None and acct.blocked_until is not None
    assert acct.blocked_until - acct.last_failure_at == timedelta(seconds=30)


async def test_throttling_per_ip_across_accounts(app: Any, client: httpx.AsyncClient) -> None:
    person = await make_user(app, Role.CONSUMER)
    for n in range(5):
        await post_form(
            client, "/accounts/login", {"login": f"1390000000{n}", "password": "bad-bad-bad-1"}
        )
    blocked = await post_form(
        client, "/accounts/login", {"login": person.login, "password": person.password}
    )
    assert blocked.status_code == 400
    assert "秒" in blocked.text


async def test_session_idle_and_absolute_expiry(app: Any, client: httpx.AsyncClient) -> None:
    settings = app.starlette.state.settings
    person = await make_user(app, Role.CONSUMER)
    await log_in(client, person.login, person.password)
    assert (await client.get("/account")).status_code == 200
    async with app.starlette.state.db() as db:
        await db.execute(
            update(UserSession).values(
                last_seen_at=utcnow() - timedelta(minutes=settings.session_idle_minutes + 1)
            )
        )
        await db.commit()
    assert (await client.get("/account")).status_code == 303
    assert await count(app, UserSession) == 0

    await log_in(client, person.login, person.password)
    async with app.starlette.state.db() as db:
        await db.execute(
            update(UserSession).values(
                created_at=utcnow() - timedelta(hours=settings.session_absolute_hours, minutes=1)
            )
        )
        await db.commit()
    assert (await client.get("/account")).status_code == 303


async def test_forged_session_cookie_is_ignored(app: Any, client: httpx.AsyncClient) -> None:
    client.cookies.set("jiefen_session", "made-up-token.signature")
    assert (await client.get("/account")).status_code == 303


async def test_password_change_logs_out_other_devices(app: Any, client: httpx.AsyncClient) -> None:
    person = await make_user(app, Role.CONSUMER)
    other = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with other:
        await log_in(other, person.login, person.password)
        await log_in(client, person.login, person.password)
        wrong = await post_form(
            client, "/account/password", {"current": "nope", "new": "New-Tea-Garden-9"}
        )
        assert wrong.status_code == 400
        weak = await post_form(
            client, "/account/password", {"current": person.password, "new": "12345678"}
        )
        assert weak.status_code == 400
        done = await post_form(
            client, "/account/password", {"current": person.password, "new": "New-Tea-Garden-9"}
        )
        assert done.status_code == 303
        assert (await client.get("/account")).status_code == 200  # this device stays in
        assert (await other.get("/account")).status_code == 303  # the other is out
    await post_form(client, "/accounts/logout")
    await log_in(client, person.login, "New-Tea-Garden-9")


async def test_language_choice_persists_for_the_user(app: Any, client: httpx.AsyncClient) -> None:
    person = await make_user(app, Role.CONSUMER)
    home = await client.get("/")
    assert '<html lang="zh-CN"' in home.text
    await log_in(client, person.login, person.password)
    switched = await post_form(client, "/preferences", {"locale": "en", "next": "/account"})
    assert switched.headers["location"] == "/account"
    assert '<html lang="en"' in (await client.get("/account")).text
    async with app.starlette.state.db() as db:
        user = await db.get(User, person.id)
    assert user is not None and user.locale == "en"
    # A new browser gets the user's language as soon as they log in.
    fresh = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    async with fresh:
        await log_in(fresh, person.login, person.password)
        assert '<html lang="en"' in (await fresh.get("/")).text


async def test_large_text_mode(app: Any, client: httpx.AsyncClient) -> None:
    await post_form(client, "/preferences", {"text": "large"})
    assert '<html lang="zh-CN" class="large-text"' in (await client.get("/")).text
    await post_form(client, "/preferences", {"text": "normal"})
    assert "large-text" not in (await client.get("/")).text.split(">", 2)[1]


async def test_deactivated_user_cannot_log_in(app: Any, client: httpx.AsyncClient) -> None:
    admin = await make_user(app, Role.PLATFORM_ADMIN)
    person = await make_user(app, Role.CONSUMER)
    await log_in(client, admin.login, admin.password)
    response = await post_form(client, f"/admin/users/{person.id}/active", {"active": "0"})
    assert response.status_code == 303
    own = await post_form(client, f"/admin/users/{admin.id}/active", {"active": "0"})
    assert own.status_code == 400
    await post_form(client, "/accounts/logout")
    refused = await post_form(
        client, "/accounts/login", {"login": person.login, "password": person.password}
    )
    assert refused.status_code == 400
