"""Account pages: register, log in and out, change password, download one's data, preferences,
invitations, users."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from portal.accounts import service
from portal.accounts.erasure import export_person, write_export
from portal.accounts.forms import (
    INVITABLE_ROLES,
    ROLE_NAMES,
    ExportForm,
    InvitationForm,
    LoginForm,
    NewAccountForm,
    PasswordForm,
)
from portal.accounts.models import User
from portal.accounts.policy import ACCOUNT, INVITATIONS, USERS
from portal.audit.service import record
from portal.db import utcnow
from portal.errors import DomainError
from portal.i18n import _l
from portal.orgs import service as orgs
from portal.policy import Role
from portal.settings import SUPPORTED_LOCALES, Settings
from portal.validators import ValidationError, clean_phone
from portal.web import (
    LANG_COOKIE,
    TEXT_COOKIE,
    Form,
    client_ip,
    current_user,
    db_session,
    flash,
    read_form,
    redirect,
    redirect_to,
    render,
    require,
    safe_next,
)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _login_response(request: Request, token: str, target: str) -> Response:
    settings = _settings(request)
    response = redirect_to(request, target)
    response.set_cookie(
        settings.session_cookie_name,
        service.sign_token(settings, token),
        max_age=settings.session_absolute_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )
    return response


def _current_user(request: Request) -> User:
    require(request, "view", ACCOUNT)
    user: User = request.state.user
    return user


async def register(request: Request) -> Response:
    form = NewAccountForm()
    if request.method == "POST":
        form = NewAccountForm(await read_form(request))
        if form.validate():
            try:
                async with db_session(request) as db:
                    user = await service.register_consumer(
                        db,
                        request.app.state.vault,
                        display_name=form.cleaned["display_name"],
                        password=form.cleaned["password"],
                        phone=form.cleaned.get("phone"),
                        email=form.cleaned.get("email"),
                        locale=request.state.locale,
                    )
                    token = await service.start_session(
                        db, user, request.headers.get("user-agent", "")
                    )
            except DomainError as exc:
                form.add_error(exc.field, exc.message)
            else:
                response = _login_response(request, token, "/")
                return flash(request, response, _l("Welcome to Jiefen. Your account is ready."))
    return render(
        request,
        "accounts/register.html",
        {"form": form},
        status_code=400 if form.errors else 200,
        block="form" if form.errors else None,
    )


async def login(request: Request) -> Response:
    form = LoginForm()
    next_url = safe_next(request.query_params.get("next"))
    if request.method == "POST":
        form = LoginForm(await read_form(request))
        next_url = safe_next(form.value("next") or None)
        if form.validate():
            try:
                async with db_session(request) as db:
                    user = await service.authenticate(
                        db,
                        request.app.state.vault,
                        form.login,
                        form.value("password"),
                        client_ip(request),
                    )
                    token = await service.start_session(
                        db, user, request.headers.get("user-agent", "")
                    )
            except DomainError as exc:
                form.add_error(exc.field, exc.message)
            else:
                return _login_response(request, token, next_url)
    return render(
        request,
        "accounts/login.html",
        {"form": form, "next": next_url},
        status_code=400 if form.errors else 200,
        block="form" if form.errors else None,
    )


async def logout(request: Request) -> Response:
    token = request.state.session_token
    user = request.state.user
    if token and user is not None:
        async with db_session(request) as db:
            await service.end_session(db, token, user.id)
    settings = _settings(request)
    response = redirect(request, "home")
    response.delete_cookie(settings.session_cookie_name, path="/", secure=settings.secure_cookies)
    return flash(request, response, _l("You have logged out."))


async def profile(request: Request) -> Response:
    user = _current_user(request)
    async with db_session(request) as db:
        committee = await orgs.get_committee(db, user.committee_id) if user.committee_id else None
        firm = await orgs.get_firm(db, user.firm_id) if user.firm_id else None
    contact = service.contact_of(request.app.state.vault, user)
    return render(
        request,
        "accounts/profile.html",
        {
            "contact": contact,
            "committee": committee,
            "firm": firm,
            "role_name": ROLE_NAMES[user.role],
        },
    )


async def password(request: Request) -> Response:
    require(request, "change_password", ACCOUNT)
    user: User = request.state.user
    form = PasswordForm()
    if request.method == "POST":
        form = PasswordForm(await read_form(request))
        if form.validate():
            try:
                async with db_session(request) as db:
                    user = await current_user(request, db)
                    token = await service.change_password(
                        db,
                        user,
                        form.value("current"),
                        form.cleaned["new"],
                        request.headers.get("user-agent", ""),
                    )
            except DomainError as exc:
                form.add_error(exc.field, exc.message)
            else:
                target = str(request.app.url_path_for("accounts.profile"))
                response = _login_response(request, token, target)
                return flash(
                    request,
                    response,
                    _l("Your password has been changed. Other devices have been logged out."),
                )
    return render(
        request,
        "accounts/password.html",
        {"form": form},
        status_code=400 if form.errors else 200,
        block="form" if form.errors else None,
    )


async def my_data(request: Request) -> Response:
    """Download one's own data (PIPL art. 45): a ZIP of ``person.json`` and one's uploads."""
    require(request, "export_data", ACCOUNT)
    form = ExportForm()
    if request.method == "POST":
        form = ExportForm(await read_form(request))
        if form.validate():
            state = request.app.state
            async with db_session(request) as db:
                user = await current_user(request, db)
                try:
                    await service.confirm_password(db, user, form.value("current"))
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    data, files = await export_person(db, state.vault, user)
                    record(
                        db,
                        user.id,
                        "personal_data.exported",
                        "user",
                        user.id,
                        cases=len(data["cases"]),
                        files=len(files),
                    )
                    await db.commit()
            if form.valid:
                return await _zip_response(request, data, files)
    return render(
        request,
        "accounts/data.html",
        {"form": form},
        status_code=400 if form.errors else 200,
    )


async def _zip_response(
    request: Request, data: dict[str, Any], files: list[tuple[str, str]]
) -> Response:
    """The archive, written to a temporary file off the event loop and streamed from it."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the stream below
    try:
        await run_in_threadpool(write_export, spool, data, files, request.app.state.blobs)
    except BaseException:
        spool.close()
        raise
    size = spool.tell()
    spool.seek(0)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := await run_in_threadpool(spool.read, 256 * 1024):
                yield chunk
        finally:
            spool.close()

    day = utcnow().strftime("%Y%m%d")
    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="jiefen-my-data-{day}.zip"',
            "Content-Length": str(size),
            "Cache-Control": "no-store",
        },
    )


async def preferences(request: Request) -> Response:
    """Language and text size: saved on the account, and in a cookie for visitors."""
    data = await read_form(request)
    locale = data.get("locale")
    locale = locale if isinstance(locale, str) and locale in SUPPORTED_LOCALES else None
    text = data.get("text")
    large_text = {"large": True, "normal": False}.get(text) if isinstance(text, str) else None
    user = request.state.user
    if user is not None:
        async with db_session(request) as db:
            await service.set_preferences(
                db, await current_user(request, db), locale=locale, large_text=large_text
            )
    next_field = data.get("next")
    target = safe_next(next_field if isinstance(next_field, str) else None)
    response = redirect_to(request, target)
    settings = _settings(request)
    year = 365 * 24 * 3600
    if locale:
        response.set_cookie(
            LANG_COOKIE, locale, max_age=year, samesite="lax", secure=settings.secure_cookies
        )
    if large_text is not None:
        response.set_cookie(
            TEXT_COOKIE,
            "large" if large_text else "normal",
            max_age=year,
            samesite="lax",
            secure=settings.secure_cookies,
        )
    return response


async def invitation_accept(request: Request) -> Response:
    token = request.path_params["token"]
    form = NewAccountForm()
    async with db_session(request) as db:
        try:
            invitation = await service.open_invitation(db, token)
        except DomainError as exc:
            return render(
                request,
                "errors/error.html",
                {"status": 410, "message": exc.message},
                status_code=410,
            )
        committee = (
            await orgs.get_committee(db, invitation.committee_id)
            if invitation.committee_id
            else None
        )
        firm = await orgs.get_firm(db, invitation.firm_id) if invitation.firm_id else None
        if request.method == "POST":
            form = NewAccountForm(await read_form(request))
            if form.validate():
                try:
                    user = await service.accept_invitation(
                        db,
                        request.app.state.vault,
                        token,
                        display_name=form.cleaned["display_name"],
                        password=form.cleaned["password"],
                        phone=form.cleaned.get("phone"),
                        email=form.cleaned.get("email"),
                        locale=request.state.locale,
                    )
                    session_token = await service.start_session(
                        db, user, request.headers.get("user-agent", "")
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    response = _login_response(request, session_token, "/")
                    return flash(request, response, _l("Welcome to Jiefen. Your account is ready."))
        elif not form.data:
            form = NewAccountForm({"display_name": invitation.invitee_name})
    return render(
        request,
        "accounts/invitation_accept.html",
        {
            "form": form,
            "invitation": invitation,
            "committee": committee,
            "firm": firm,
            "role_name": ROLE_NAMES[invitation.role],
        },
        status_code=400 if form.errors else 200,
    )


async def invitations(request: Request) -> Response:
    require(request, "view", INVITATIONS)
    actor: User = request.state.user
    form = InvitationForm()
    created_link = None
    committee_scope = None if actor.role == Role.PLATFORM_ADMIN.value else actor.committee_id
    async with db_session(request) as db:
        if request.method == "POST":
            require(request, "create", INVITATIONS)
            form = InvitationForm(await read_form(request))
            if form.validate():
                role = Role(form.value("role"))
                firm_id = form.int_or_none("firm_id")
                committee_id = form.int_or_none("committee_id")
                # The policy decides who may invite whom to which organisation.
                if role == Role.PLATFORM_ADMIN:
                    require(request, "invite_platform_admin", INVITATIONS)
                elif role == Role.FIRM_REP:
                    if firm_id is None:
                        form.add_error("firm_id", _l("Choose the firm this person represents."))
                    else:
                        require(request, "invite_rep", await orgs.get_firm(db, firm_id))
                elif committee_id is None:
                    form.add_error(
                        "committee_id", _l("Choose the committee this person works for.")
                    )
                else:
                    require(request, "invite_staff", await orgs.get_committee(db, committee_id))
            if form.valid:
                try:
                    _, token = await service.create_invitation(
                        db,
                        request.app.state.settings,
                        actor,
                        role=Role(form.value("role")),
                        invitee_name=form.cleaned["invitee_name"],
                        firm_id=form.int_or_none("firm_id"),
                        committee_id=form.int_or_none("committee_id"),
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    path = request.app.url_path_for("accounts.invitation_accept", token=token)
                    created_link = _settings(request).base_url + str(path)
                    form = InvitationForm()
        rows = await service.list_invitations(db, committee_scope)
        committees = await orgs.list_committees(db, committee_scope)
        firms = await orgs.list_firms(db)
    roles = {
        k: v
        for k, v in INVITABLE_ROLES.items()
        if k != Role.PLATFORM_ADMIN.value or actor.role == Role.PLATFORM_ADMIN.value
    }
    return render(
        request,
        "accounts/invitations.html",
        {
            "form": form,
            "rows": [(row, service.invitation_state(row)) for row in rows],
            "committees": committees,
            "firms": {f.id: f for f in firms},
            "roles": roles,
            "role_names": ROLE_NAMES,
            "created_link": created_link,
        },
        status_code=400 if form.errors else 200,
    )


async def invitation_revoke(request: Request) -> Response:
    async with db_session(request) as db:
        invitation = await service.get_invitation(db, request.path_params["invitation_id"])
        require(request, "revoke", invitation)
        await service.revoke_invitation(db, request.state.user, invitation)
    return flash(request, redirect(request, "accounts.invitations"), _l("Invitation withdrawn."))


async def users(request: Request) -> Response:
    require(request, "view", USERS)
    vault = request.app.state.vault
    async with db_session(request) as db:
        rows = await service.list_users(db)
    return render(
        request,
        "accounts/users.html",
        {
            "rows": [(u, service.contact_of(vault, u).masked) for u in rows],
            "role_names": ROLE_NAMES,
        },
    )


async def user_active(request: Request) -> Response:
    async with db_session(request) as db:
        target = await service.get_user(db, request.path_params["user_id"])
        require(request, "activate", target)
        data = await read_form(request)
        await service.set_user_active(db, request.state.user, target, data.get("active") == "1")
    return flash(request, redirect(request, "accounts.users"), _l("Account updated."))


async def phone(request: Request) -> Response:
    """Add or change the mobile number and verify it with a code sent by text message."""
    require(request, "view", ACCOUNT)
    user: User = request.state.user
    settings = _settings(request)
    vault = request.app.state.vault
    form = Form()
    next_url = safe_next(request.query_params.get("next"), default="")
    sent = False
    if request.method == "POST":
        data = await read_form(request)
        form = Form(data)
        next_url = safe_next(form.value("next") or None, default="")
        try:
            async with db_session(request) as db:
                user = await current_user(request, db)
                if form.value("action") == "send":
                    phone_number = clean_phone(form.value("phone"))
                    await service.set_phone(db, vault, user, phone_number)
                    await service.send_phone_code(db, settings, user)
                    sent = True
                else:
                    await service.verify_phone_code(db, settings, user, form.value("code"))
                    message = _l("Your mobile number is verified.")
                    response = redirect_to(
                        request, next_url or str(request.app.url_path_for("accounts.profile"))
                    )
                    return flash(request, response, message)
        except ValidationError as exc:
            form.add_error("phone", exc.message)
        except DomainError as exc:
            form.add_error(exc.field or "code", exc.message)
    contact = service.contact_of(vault, request.state.user)
    return render(
        request,
        "accounts/phone.html",
        {"form": form, "contact": contact, "sent": sent, "next": next_url},
        status_code=400 if form.errors else 200,
    )


routes = [
    Route("/account/phone", phone, methods=["GET", "POST"], name="accounts.phone"),
    Route("/accounts/register", register, methods=["GET", "POST"], name="accounts.register"),
    Route("/accounts/login", login, methods=["GET", "POST"], name="accounts.login"),
    Route("/accounts/logout", logout, methods=["POST"], name="accounts.logout"),
    Route("/account", profile, name="accounts.profile"),
    Route("/account/password", password, methods=["GET", "POST"], name="accounts.password"),
    Route("/account/data", my_data, methods=["GET", "POST"], name="accounts.data"),
    Route("/preferences", preferences, methods=["POST"], name="accounts.preferences"),
    Route(
        "/invite/{token}",
        invitation_accept,
        methods=["GET", "POST"],
        name="accounts.invitation_accept",
    ),
    Route("/admin/invitations", invitations, methods=["GET", "POST"], name="accounts.invitations"),
    Route(
        "/admin/invitations/{invitation_id:int}/revoke",
        invitation_revoke,
        methods=["POST"],
        name="accounts.invitation_revoke",
    ),
    Route("/admin/users", users, name="accounts.users"),
    Route(
        "/admin/users/{user_id:int}/active",
        user_active,
        methods=["POST"],
        name="accounts.user_active",
    ),
]
