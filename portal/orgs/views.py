"""Administration pages for committees, firms and mediators; mediators' own declared ties."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.cases import service as cases_service
from portal.errors import DomainError
from portal.i18n import _l
from portal.orgs import service
from portal.orgs.categories import CATEGORIES, GRADES, INDUSTRIES, TIE_KINDS
from portal.orgs.forms import CommitteeForm, FirmForm, MediatorForm, TieForm
from portal.orgs.policy import COMMITTEES, FIRMS, MEDIATORS
from portal.policy import Role
from portal.web import db_session, flash, identity, read_form, redirect, render, require

CHOICES = {
    "categories": CATEGORIES,
    "industries": INDUSTRIES,
    "grades": GRADES,
    "tie_kinds": TIE_KINDS,
}


def _committee_scope(request: Request) -> int | None:
    """Committee administrators see their own committee; platform administrators see all."""
    who = identity(request)
    return None if who.role == Role.PLATFORM_ADMIN else who.committee_id


def _committee_fields(form: CommitteeForm) -> dict[str, Any]:
    return {
        "name": form.cleaned["name"],
        "name_en": form.cleaned.get("name_en"),
        "region": form.cleaned["region"],
        "categories": form.cleaned["categories"],
        "case_prefix": form.cleaned["case_prefix"],
    }


def _firm_fields(form: FirmForm) -> dict[str, Any]:
    return {
        "name": form.cleaned["name"],
        "name_en": form.cleaned.get("name_en"),
        "credit_code": form.cleaned["credit_code"],
        "industry": form.cleaned["industry"],
    }


async def committees(request: Request) -> Response:
    require(request, "view", COMMITTEES)
    form = CommitteeForm()
    async with db_session(request) as db:
        if request.method == "POST":
            require(request, "create", COMMITTEES)
            form = CommitteeForm(await read_form(request))
            if form.validate():
                try:
                    await service.create_committee(
                        db, request.state.user.id, **_committee_fields(form)
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    return flash(request, redirect(request, "orgs.committees"), _l("Saved."))
        rows = await service.list_committees(db, _committee_scope(request))
    return render(
        request,
        "orgs/committees.html",
        {"rows": rows, "form": form, **CHOICES},
        status_code=400 if form.errors else 200,
    )


async def committee(request: Request) -> Response:
    async with db_session(request) as db:
        obj = await service.get_committee(db, request.path_params["committee_id"])
        require(request, "view", obj)
        form = CommitteeForm(
            {
                "name": obj.name,
                "name_en": obj.name_en or "",
                "region": obj.region,
                "case_prefix": obj.case_prefix,
                "categories": obj.categories,
            }
        )
        if request.method == "POST":
            require(request, "edit", obj)
            form = CommitteeForm(await read_form(request))
            if form.validate():
                try:
                    await service.update_committee(
                        db, request.state.user.id, obj, **_committee_fields(form)
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    return flash(
                        request,
                        redirect(request, "orgs.committee", committee_id=obj.id),
                        _l("Saved."),
                    )
    return render(
        request,
        "orgs/committee.html",
        {"obj": obj, "form": form, **CHOICES},
        status_code=400 if form.errors else 200,
    )


async def firms(request: Request) -> Response:
    require(request, "view", FIRMS)
    form = FirmForm()
    search = request.query_params.get("q", "").strip()[:60]
    async with db_session(request) as db:
        if request.method == "POST":
            require(request, "create", FIRMS)
            form = FirmForm(await read_form(request))
            if form.validate():
                try:
                    created = await service.create_firm(
                        db, request.state.user.id, **_firm_fields(form)
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    # Filings that named this firm before it was registered now reach it.
                    await cases_service.link_cases_to_firm(db, request.state.user.id, created)
                    return flash(request, redirect(request, "orgs.firms"), _l("Saved."))
        elif request.query_params.get("credit_code"):
            # "Register this firm" from a case: the form starts filled in.
            form = FirmForm(
                {
                    "name": request.query_params.get("name", "")[:120],
                    "credit_code": request.query_params.get("credit_code", "")[:18],
                }
            )
        rows = await service.list_firms(db, search)
    return render(
        request,
        "orgs/firms.html",
        {"rows": rows, "form": form, "q": search, **CHOICES},
        status_code=400 if form.errors else 200,
        block="results" if request.method == "GET" else None,
    )


async def firm(request: Request) -> Response:
    async with db_session(request) as db:
        obj = await service.get_firm(db, request.path_params["firm_id"])
        require(request, "view", obj)
        form = FirmForm(
            {
                "name": obj.name,
                "name_en": obj.name_en or "",
                "credit_code": obj.credit_code,
                "industry": obj.industry,
            }
        )
        if request.method == "POST":
            require(request, "edit", obj)
            form = FirmForm(await read_form(request))
            if form.validate():
                try:
                    await service.update_firm(db, request.state.user.id, obj, **_firm_fields(form))
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    return flash(
                        request, redirect(request, "orgs.firm", firm_id=obj.id), _l("Saved.")
                    )
    return render(
        request,
        "orgs/firm.html",
        {"obj": obj, "form": form, **CHOICES},
        status_code=400 if form.errors else 200,
    )


async def mediators(request: Request) -> Response:
    require(request, "view", MEDIATORS)
    async with db_session(request) as db:
        rows = await service.list_mediators(db, _committee_scope(request))
    return render(request, "orgs/mediators.html", {"rows": rows, **CHOICES})


async def mediator(request: Request) -> Response:
    async with db_session(request) as db:
        user, profile = await service.get_mediator(db, request.path_params["user_id"])
        require(request, "view", profile)
        form = MediatorForm({"grade": profile.grade, "specialties": profile.specialties})
        if request.method == "POST":
            require(request, "edit", profile)
            form = MediatorForm(await read_form(request))
            if form.validate():
                await service.update_mediator_profile(
                    db,
                    request.state.user.id,
                    profile,
                    specialties=form.cleaned["specialties"],
                    grade=form.cleaned["grade"],
                )
                return flash(
                    request, redirect(request, "orgs.mediator", user_id=user.id), _l("Saved.")
                )
    return render(
        request,
        "orgs/mediator.html",
        {"mediator": user, "profile": profile, "form": form, **CHOICES},
        status_code=400 if form.errors else 200,
    )


async def my_ties(request: Request) -> Response:
    who = identity(request)
    if who.role != Role.MEDIATOR or who.user_id is None:
        require(request, "declare_ties", MEDIATORS)  # refused: only mediators have ties
    assert who.user_id is not None
    form = TieForm()
    async with db_session(request) as db:
        _, profile = await service.get_mediator(db, who.user_id)
        require(request, "declare_ties", profile)
        if request.method == "POST":
            form = TieForm(await read_form(request))
            if form.validate():
                try:
                    await service.declare_tie(
                        db,
                        who.user_id,
                        profile,
                        firm_id=int(form.value("firm_id")),
                        kind=form.cleaned["kind"],
                        note=form.cleaned["note"],
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    return flash(request, redirect(request, "orgs.my_ties"), _l("Saved."))
        all_firms = await service.list_firms(db)
    return render(
        request,
        "orgs/my_ties.html",
        {"profile": profile, "form": form, "firms": all_firms, **CHOICES},
        status_code=400 if form.errors else 200,
    )


async def tie_withdraw(request: Request) -> Response:
    who = identity(request)
    if who.role != Role.MEDIATOR or who.user_id is None:
        require(request, "declare_ties", MEDIATORS)
    assert who.user_id is not None
    async with db_session(request) as db:
        _, profile = await service.get_mediator(db, who.user_id)
        require(request, "declare_ties", profile)
        await service.withdraw_tie(db, who.user_id, profile, request.path_params["tie_id"])
    return flash(request, redirect(request, "orgs.my_ties"), _l("Saved."))


routes = [
    Route("/admin/committees", committees, methods=["GET", "POST"], name="orgs.committees"),
    Route(
        "/admin/committees/{committee_id:int}",
        committee,
        methods=["GET", "POST"],
        name="orgs.committee",
    ),
    Route("/admin/firms", firms, methods=["GET", "POST"], name="orgs.firms"),
    Route("/admin/firms/{firm_id:int}", firm, methods=["GET", "POST"], name="orgs.firm"),
    Route("/admin/mediators", mediators, name="orgs.mediators"),
    Route(
        "/admin/mediators/{user_id:int}", mediator, methods=["GET", "POST"], name="orgs.mediator"
    ),
    Route("/account/ties", my_ties, methods=["GET", "POST"], name="orgs.my_ties"),
    Route(
        "/account/ties/{tie_id:int}/withdraw",
        tie_withdraw,
        methods=["POST"],
        name="orgs.tie_withdraw",
    ),
]
