"""Case pages: the filing wizard, the case page, staff actions, lists."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal import exports
from portal.accounts.models import User
from portal.agreements import service as agreements
from portal.agreements.policy import LitigationAccess, SurveyAccess
from portal.analytics import likeness_views
from portal.audit.service import personal_data_viewed, record
from portal.cases import batch, links, service, uploads
from portal.cases.forms import (
    ClaimantForm,
    ClaimsForm,
    EligibilityForm,
    RequestForm,
    ResponseForm,
    StartForm,
)
from portal.cases.lifecycle import STATUS_LABELS, Party, Status
from portal.cases.models import Case
from portal.cases.policy import CASES
from portal.errors import DomainError, NotFound
from portal.evidence import views as evidence_views
from portal.evidence.policy import Item
from portal.i18n import Msg, _l
from portal.meetings import service as meetings_service
from portal.orgs import service as orgs
from portal.orgs.categories import CATEGORIES
from portal.orgs.models import Committee, Firm
from portal.policy import Role
from portal.web import (
    Form,
    client_ip,
    db_session,
    flash,
    identity,
    is_htmx,
    permits,
    read_form,
    redirect,
    redirect_to,
    render,
    require,
    tr,
    url_path,
)

WIZARD_STEPS = ["claimant", "claims", "eligibility", "materials", "review"]
STEP_TITLES: dict[str, Msg] = {
    "start": _l("The dispute"),
    "claimant": _l("Who is the claimant"),
    "claims": _l("What you ask for"),
    "eligibility": _l("Court, arbitration or settlement"),
    "materials": _l("Materials"),
    "review": _l("Check and submit"),
}
CHOICES = {
    "categories": CATEGORIES,
    "outcomes": service.OUTCOMES,
    "questions": service.ELIGIBILITY_QUESTIONS,
    "advice": service.ELIGIBILITY_ADVICE,
    "material_kinds": service.MATERIAL_KINDS,
    "requestable": service.REQUESTABLE_ITEMS,
    "responses": service.RESPONSES,
    "status_labels": STATUS_LABELS,
    "personal_materials": service.PERSONAL_MATERIALS,
    "party_labels": service.PARTIES,
    "visibilities": service.VISIBILITIES,
    "step_titles": STEP_TITLES,
    "steps": WIZARD_STEPS,
}


def _user(request: Request) -> User:
    user: User = request.state.user
    return user


async def _load(request: Request, db: Any, permission: str = "view") -> Case:
    case = await service.get_case(db, request.path_params["case_id"])
    require(request, permission, case)
    return case


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


# -- lists ----------------------------------------------------------------------------------


def _filters(params: Mapping[str, str]) -> service.CaseFilters:
    """The list's filters from a query string; a value that is not one of the choices is
    ignored, as the form never sends one."""
    return service.CaseFilters(
        status=params.get("status", "") if params.get("status", "") in set(Status) else "",
        category=params.get("category", "") if params.get("category", "") in CATEGORIES else "",
        firm_id=_int(params.get("firm")),
        mediator_id=_int(params.get("mediator")),
        committee_id=_int(params.get("committee")),
        submitted_from=_date(params.get("from")),
        submitted_to=_date(params.get("to")),
        due=params.get("due", "")
        if params.get("due") in ("overdue", "soon", "firm_silent")
        else "",
        complexity=params.get("complexity", "")
        if params.get("complexity") in ("simple", "complex")
        else "",
        outcome=params.get("outcome", "")
        if params.get("outcome") in service.OUTCOME_FILTERS
        else "",
        q=params.get("q", "").strip()[:100],
        sort=params.get("sort", "-submitted"),
        page=_int(params.get("page")) or 1,
    )


async def case_list(request: Request) -> Response:
    require(request, "list", CASES)
    params = request.query_params
    filters = _filters(params)
    who = identity(request)
    staff = who.role in (Role.COMMITTEE_ADMIN, Role.PLATFORM_ADMIN)
    batch_actions = batch.actions_for(str(who.role)) if who.role else {}
    # An htmx update replaces only the results: the filters' options are not needed then.
    options = staff and not is_htmx(request)
    async with db_session(request) as db:
        rows, total = await service.list_cases(db, request.app.state.vault, who, filters)
        firms: list[Any] = []
        mediators: list[Any] = []
        committees: list[Any] = []
        if staff:  # the filter's and the batch form's choice of mediator
            mediator_query = select(User.id, User.display_name).where(
                User.role == Role.MEDIATOR.value
            )
            if who.role == Role.COMMITTEE_ADMIN:
                mediator_query = mediator_query.where(User.committee_id == who.committee_id)
            mediators = list(await db.execute(mediator_query.order_by(User.id)))
        if options:
            firms = list(await db.execute(select(Firm.id, Firm.name).order_by(Firm.name)))
            if who.role == Role.PLATFORM_ADMIN:
                committees = list(
                    await db.execute(select(Committee.id, Committee.name).order_by(Committee.id))
                )
    capped = total > service.COUNT_CAP
    pages = max(1, -(-min(total, service.COUNT_CAP) // filters.per_page))
    query = {k: v for k, v in params.items() if k != "page"}
    return render(
        request,
        "cases/list.html",
        {
            "rows": rows,
            "total": min(total, service.COUNT_CAP),
            "capped": capped,
            "filters": filters,
            "pages": pages,
            "query": query,
            "firms": firms,
            "mediators": mediators,
            "committees": committees,
            "staff": staff,
            "status_choices": [(k, v) for k, v in STATUS_LABELS.items() if k != "draft"],
            "batch_actions": batch_actions,
            "status_changes": batch.STATUS_CHANGES,
            "durations": meetings_service.DURATIONS,
            "gaps": batch.GAPS,
            "meeting_modes": meetings_service.MODES,
            "batch_fields": batch.FIELDS,
            "batch_max": batch.MAX_BATCH,
            "query_string": urlencode(query),
            "today": service.today_in_china(),
            **CHOICES,
        },
        block="results",
    )


async def export_list(request: Request) -> Response:
    """Every case of the list with its filters, as CSV or XLSX, streamed from the database.
    Only the list's columns: no claimant's name, number or contact."""
    require(request, "export", CASES)
    params = request.query_params
    fmt = params.get("format", "csv")
    if fmt not in exports.FORMATS:
        return Response(tr(request, _l("Unknown export.")), status_code=400)
    filters = _filters(params)
    who = identity(request)
    async with db_session(request) as db:
        record(
            db,
            who.user_id,
            "cases.export",
            "case_list",
            "-",
            format=fmt,
            filters={k: v for k, v in params.items() if k not in ("format", "page")},
        )
        await db.commit()
    header = [
        tr(request, label)
        for label in (
            _l("Case number"),
            _l("Status"),
            _l("Category"),
            _l("Triage"),
            _l("Firm"),
            _l("Amount (CNY)"),
            _l("Filed"),
            _l("Deadline"),
            _l("Firm's answer"),
            _l("Outcome"),
        )
    ]

    def label(labels: Mapping[Any, Msg], value: str | None) -> str:
        return tr(request, labels[value]) if value in labels else value or ""

    complexity = {"simple": _l("Simple"), "complex": _l("Complex")}

    async def lines() -> AsyncIterator[list[Any]]:
        yield header
        async with db_session(request) as db:
            async for row in service.export_rows(db, request.app.state.vault, who, filters):
                filed = row.submitted_at.astimezone(service.TZ) if row.submitted_at else None
                yield [
                    row.number or "",
                    label(STATUS_LABELS, row.status),
                    label(CATEGORIES, row.category),
                    label(complexity, row.complexity),
                    row.respondent_name or "",
                    row.amount_fen / 100 if row.amount_fen is not None else None,
                    filed.strftime("%Y-%m-%d %H:%M") if filed else "",
                    row.close_due.isoformat() if row.close_due else "",
                    label(service.RESPONSES, row.firm_response),
                    label(STATUS_LABELS, row.outcome),
                ]

    name = f"jiefen-cases-{service.today_in_china().isoformat()}"
    return await exports.download(fmt, name, lines())


# -- the wizard -----------------------------------------------------------------------------


async def batch_action(request: Request) -> Response:
    """One action on the chosen cases, or on every case the list's filter matches."""
    require(request, "batch", CASES)
    who = identity(request)
    assert who.user_id is not None
    # A ticked case is a field: room for more than a batch holds, to say it is too many.
    form = await read_form(request, max_fields=batch.MAX_BATCH + 100)
    starts_at = None
    if form.get("starts_at"):
        try:
            local = datetime.fromisoformat(str(form.get("starts_at")).strip())
        except ValueError:
            local = None
        if local is not None and local.tzinfo is None:
            starts_at = local.replace(tzinfo=service.TZ)
    action = batch.BatchAction(
        action=str(form.get("action", "")),
        mediator_id=_int(str(form.get("mediator_id", ""))),
        template=str(form.get("template", "")),
        audience=str(form.get("audience", "claimant")),
        transition=str(form.get("transition", "")),
        starts_at=starts_at,
        duration=_int(str(form.get("duration", ""))) or 0,
        gap=_int(str(form.get("gap", "0"))) or 0,
        mode=str(form.get("mode", "video")),
    )
    state = request.app.state
    limit = batch.MAX_BATCH + 1  # one more, to know when there are too many
    if form.get("all_matching") == "1":
        filters = _filters(QueryParams(str(form.get("query", ""))))
        async with db_session(request) as db:
            ids = await service.matching_ids(db, state.vault, who, filters, limit)
    else:
        chosen = [str(v) for v in form.getlist("case_ids")]
        ids = list(dict.fromkeys(int(v) for v in chosen if v.isdigit()))
    try:
        result = await batch.run(
            state.db,
            state.vault,
            who.user_id,
            ids[:limit],
            action,
            lambda permission, case: permits(request, permission, case),
            role=str(who.role),
        )
    except DomainError as exc:
        return render(
            request, "cases/batch.html", {"error": exc.message, "result": None}, status_code=400
        )
    return render(
        request,
        "cases/batch.html",
        {"error": None, "result": result, "action": batch.ACTIONS[action.action]},
    )


async def firm_link(request: Request) -> Response:
    """A firm's one-click link (portal.cases.links): on to the wizard, the firm pre-filled."""
    query = urlencode({"via": request.path_params["token"]})
    return redirect_to(request, f"{url_path(request.app, 'cases.new')}?{query}")


async def new_case(request: Request) -> Response:
    require(request, "file", CASES)
    form = StartForm({"form_key": secrets.token_urlsafe(16)})
    via: Firm | None = None
    async with db_session(request) as db:
        link = links.read_link(request.app.state.settings, request.query_params.get("via", ""))
        if link is not None:
            via = await db.get(Firm, link.firm_id)
        if via is not None and link is not None and request.method == "GET":
            form = StartForm(
                {
                    "form_key": form.value("form_key"),
                    "firm_id": str(via.id),
                    "category": link.category,
                }
            )
        if request.method == "POST":
            form = StartForm(await request.form())
            if form.validate():
                try:
                    case = await service.start_draft(
                        db,
                        _user(request),
                        category=form.cleaned["category"],
                        region=form.cleaned.get("region") or "",
                        firm_id=form.cleaned["firm_id"],
                        respondent_name=form.cleaned.get("respondent_name") or "",
                        respondent_credit_code=form.cleaned["respondent_credit_code"],
                        form_key=form.value("form_key"),
                        ip=client_ip(request),
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    return redirect(request, "cases.edit", case_id=case.id, step="claimant")
        firms = await orgs.list_firms(db)
    return render(
        request,
        "cases/wizard.html",
        {"step": "start", "form": form, "firms": firms, "case": None, "via": via, **CHOICES},
        status_code=400 if form.errors else 200,
    )


async def edit_case(request: Request) -> Response:
    step = request.path_params["step"]
    if step not in WIZARD_STEPS:
        raise NotFound
    user = _user(request)
    vault = request.app.state.vault
    async with db_session(request) as db:
        case = await _load(request, db, "edit")
        if case.status != Status.DRAFT:
            return redirect(request, "cases.detail", case_id=case.id)
        claimant = service.claimant_of(vault, case)
        form: Form = Form()
        ineligible: list[str] = service.ineligible_reasons(case)
        if step == "claimant":
            form = ClaimantForm(
                {
                    "filed_as": case.filed_as,
                    "name": claimant.name,
                    "id_number": claimant.id_number,
                    "agent_name": claimant.agent_name,
                    "agent_phone": claimant.agent_phone,
                    "agent_org": case.agent_org,
                    "claimant_phone": claimant.phone,
                }
            )
        elif step == "claims":
            form = ClaimsForm(
                {
                    "amount": f"{case.amount_fen / 100:.2f}" if case.amount_fen else "",
                    "outcomes": case.outcomes,
                    "facts": case.facts,
                    "incident_date": case.incident_date.isoformat() if case.incident_date else "",
                }
            )
        elif step == "eligibility":
            form = EligibilityForm({k: ("yes" if v else "no") for k, v in case.eligibility.items()})
        if request.method == "POST":
            data = await request.form()
            try:
                if step == "claimant":
                    form = ClaimantForm(data)
                    if form.validate():
                        await service.save_claimant(
                            db,
                            vault,
                            case,
                            user,
                            filed_as=form.cleaned["filed_as"],
                            name=form.cleaned["name"],
                            id_number=form.cleaned["id_number"],
                            agent_name=form.cleaned.get("agent_name") or "",
                            agent_phone=form.cleaned.get("agent_phone") or "",
                            agent_org=form.cleaned.get("agent_org") or "",
                            claimant_phone=form.cleaned.get("claimant_phone") or "",
                        )
                        return redirect(request, "cases.edit", case_id=case.id, step="claims")
                elif step == "claims":
                    form = ClaimsForm(data)
                    if form.validate():
                        await service.save_claims(
                            db,
                            case,
                            user,
                            amount_fen=form.cleaned["amount"],
                            outcomes=form.cleaned["outcomes"],
                            facts=form.cleaned["facts"],
                            incident_date=form.cleaned["incident_date"],
                        )
                        return redirect(request, "cases.edit", case_id=case.id, step="eligibility")
                elif step == "eligibility":
                    form = EligibilityForm(data)
                    if form.validate():
                        ineligible = await service.save_eligibility(
                            db, case, user, form.cleaned["answers"]
                        )
                        if not ineligible:
                            return redirect(
                                request, "cases.edit", case_id=case.id, step="materials"
                            )
            except DomainError as exc:
                form.add_error(exc.field, exc.message)
        items = await service.materials(db, case)
        kinds = {m.kind for m in items}
        missing = service.missing_for_submission(case, kinds, user)
        duplicate = await service.likely_duplicate(db, case) if step == "review" else None
    return render(
        request,
        "cases/wizard.html",
        {
            "step": step,
            "form": form,
            "case": case,
            "claimant": claimant,
            "materials": items,
            "missing": missing,
            "duplicate": duplicate,
            "ineligible": ineligible,
            "max_mb": request.app.state.settings.evidence_max_mb,
            **CHOICES,
        },
        status_code=400 if form.errors else 200,
    )


async def submit_case(request: Request) -> Response:
    user = _user(request)
    async with db_session(request) as db:
        case = await service.get_case(db, request.path_params["case_id"])
        require(request, "view", case)
        if case.status != Status.DRAFT and case.filer_id == user.id:
            # The same form sent twice: the case exists once; show it.
            return redirect(request, "cases.detail", case_id=case.id)
        require(request, "edit", case)
        try:
            await service.submit_case(
                db, request.app.state.vault, case, user, likeness_views.running_index(request)
            )
        except DomainError as exc:
            response = redirect(request, "cases.edit", case_id=case.id, step="review")
            return flash(request, response, exc.message, "error")
    response = redirect(request, "cases.detail", case_id=case.id)
    return flash(request, response, _l("Your case has been submitted."))


async def upload_material(request: Request) -> Response:
    """Files for a case (portal.cases.uploads): all are kept, or none."""
    user = _user(request)
    state = request.app.state
    async with db_session(request) as db:
        case = await _load(request, db, "upload")
        back = (
            redirect(request, "cases.edit", case_id=case.id, step="materials")
            if case.status == Status.DRAFT
            else redirect(request, "cases.detail", case_id=case.id)
        )
        try:
            added = await uploads.receive_materials(
                db,
                state.blobs,
                case,
                user,
                request.stream(),
                request.headers.get("content-type", ""),
                max_file_bytes=state.settings.evidence_max_bytes,
            )
        except DomainError as exc:
            return flash(request, back, exc.message, "error")
    if len(added) == 1:
        return flash(request, back, _l("File uploaded."))
    return flash(request, back, _l("{n} files uploaded.", n=len(added)))


async def delete_material(request: Request) -> Response:
    async with db_session(request) as db:
        case = await _load(request, db, "edit")
        await service.remove_material(db, case, _user(request), request.path_params["material_id"])
    return redirect(request, "cases.edit", case_id=case.id, step="materials")


# -- the case page ----------------------------------------------------------------------------


async def case_identity(request: Request) -> Response:
    """The claimant's (and agent's) full ID number and mobile numbers, for those who may see
    them and need to (to call, to draft the agreement). Each showing goes into the audit
    trail, and the committee sees who looked."""
    who = identity(request)
    async with db_session(request) as db:
        case = await _load(request, db, "view_identity")
        if case.status == Status.DRAFT:
            raise NotFound
        claimant = service.claimant_of(request.app.state.vault, case)
        fields = ["name", "id_number", "phone"] if claimant.phone else ["name", "id_number"]
        if case.filed_as == "agent":
            fields += ["agent_name", "agent_phone"]
        personal_data_viewed(db, who.user_id, case.id, case.filer_id, fields, "reveal")
        await db.commit()
        seen_by = await service.identity_views(db, case) if permits(request, "review", case) else []
    return render(
        request,
        "cases/identity.html",
        {"case": case, "claimant": claimant, "seen_by": seen_by},
        block="identity",
    )


async def case_detail(request: Request) -> Response:
    who = identity(request)
    async with db_session(request) as db:
        case = await _load(request, db)
        if case.status == Status.DRAFT:
            return redirect(request, "cases.edit", case_id=case.id, step="review")
        page = await service.case_page(db, case, who)
        parties = service.parties_of(case, who)
        if not is_htmx(request) and parties & {Party.STAFF, Party.MEDIATOR}:
            # The page shows the claimant's name (ID and phone masked).
            personal_data_viewed(db, who.user_id, case.id, case.filer_id, ["name"], "case_page")
            await db.commit()
        agreement = await agreements.access(db, case.id)
        imported = await service.import_batch_of(db, case)
        likeness = (
            await likeness_views.case_summary(request, db, case)
            if permits(request, "likeness", case) and not is_htmx(request)
            else None
        )
    return render(
        request,
        "cases/detail.html",
        {
            "case": case,
            "agreement": agreement.agreement,
            "agreement_statuses": agreements.STATUS_LABELS,
            "agreement_actions": agreements.TIMELINE,
            "survey_open": permits(request, "rate", SurveyAccess(case)),
            "litigation_visible": case.status in ("in_mediation", "failed", Status.TRANSFERRED)
            and permits(request, "view", LitigationAccess(case, None)),
            "agreement_visible": permits(request, "view", agreement)
            and (agreement.agreement is not None or permits(request, "draft", agreement)),
            "events": page.events,
            "materials": page.materials,
            "committee": page.committee,
            "mediator": page.mediator,
            "actors": page.actors,
            "recusal": page.recusal,
            "duplicate": page.duplicate,
            "parties": parties,
            "Party": Party,
            "actions": service.actions_for(case, who),
            "claimant": service.claimant_of(request.app.state.vault, case),
            "today": service.today_in_china(),
            "service_next_step": service.next_step,
            "evidence_item": lambda m: Item(m, case),
            "max_mb": request.app.state.settings.evidence_max_mb,
            "likeness": likeness,
            "imported": imported,
            **CHOICES,
        },
        block="live",
    )


CaseCall = Callable[[AsyncSession, Case, User, FormData], Awaitable[object]]


async def _case_action(request: Request, permission: str, call: CaseCall, done: Msg) -> Response:
    """One action on a case from its page: check, call the service, back to the page with the
    outcome (a refusal is shown there, in the user's language, and changes nothing)."""
    async with db_session(request) as db:
        case = await _load(request, db, permission)
        data = await request.form()
        back = redirect(request, "cases.detail", case_id=case.id)
        try:
            await call(db, case, _user(request), data)
        except DomainError as exc:
            return flash(request, back, exc.message, "error")
    return flash(request, back, done)


def _text(data: FormData, name: str, limit: int = 2000) -> str:
    value = data.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


def _valid(form: Form) -> Form:
    if not form.validate():
        field, message = next(iter(form.errors.items()))
        raise DomainError(message, field=field)
    return form


async def _act(db: AsyncSession, case: Case, user: User, data: FormData) -> object:
    name, reason = _text(data, "action", 40), _text(data, "reason")
    if name == "accept":
        return await service.accept_case(db, case, user)
    if name in ("reject", "mark_ineligible"):
        return await service.reject_case(
            db, case, user, reason, ineligible=name == "mark_ineligible"
        )
    return await service.apply_transition(db, case, user, name, reason)


async def act(request: Request) -> Response:
    """A lifecycle action from the case page: accept, reject, start, settle, withdraw…"""
    return await _case_action(request, "view", _act, _l("Done."))


async def request_material(request: Request) -> Response:
    async def call(db: AsyncSession, case: Case, user: User, data: FormData) -> object:
        form = _valid(RequestForm(data))
        note = form.cleaned.get("reason") or ""
        return await service.request_material(db, case, user, form.cleaned["items"], note)

    return await _case_action(request, "view", call, _l("Request sent."))


async def provide_material(request: Request) -> Response:
    async def call(db: AsyncSession, case: Case, user: User, data: FormData) -> object:
        return await service.provide_material(db, case, user, _text(data, "reason"))

    return await _case_action(request, "view", call, _l("The committee has been told."))


async def assign(request: Request) -> Response:
    async with db_session(request) as db:
        case = await _load(request, db, "assign")
        error = None
        if request.method == "POST":
            data = await request.form()
            try:
                mediator_id = _int(str(data.get("mediator_id", "")))
                if mediator_id is None:
                    raise DomainError(
                        _l("Choose a mediator of this committee."), field="mediator_id"
                    )
                if await service.pending_recusal(db, case) is not None and data.get("decision"):
                    await service.decide_recusal(
                        db,
                        case,
                        _user(request),
                        grant=data.get("decision") == "grant",
                        note=str(data.get("note", ""))[:2000],
                        new_mediator_id=mediator_id,
                    )
                else:
                    await service.assign_mediator(
                        db, case, _user(request), mediator_id, str(data.get("note", ""))[:2000]
                    )
            except DomainError as exc:
                error = exc.message
            else:
                return flash(
                    request,
                    redirect(request, "cases.detail", case_id=case.id),
                    _l("Mediator assigned."),
                )
        suggestions = await service.suggest_mediators(db, case)
        recusal = await service.pending_recusal(db, case)
    return render(
        request,
        "cases/assign.html",
        {"case": case, "suggestions": suggestions, "error": error, "recusal": recusal, **CHOICES},
        status_code=400 if error else 200,
    )


async def decide_recusal(request: Request) -> Response:
    async def call(db: AsyncSession, case: Case, user: User, data: FormData) -> object:
        await service.decide_recusal(
            db, case, user, grant=False, note=_text(data, "note"), new_mediator_id=None
        )
        return None

    return await _case_action(request, "assign", call, _l("Done."))


async def respond(request: Request) -> Response:
    async def call(db: AsyncSession, case: Case, user: User, data: FormData) -> object:
        form = _valid(ResponseForm(data))
        return await service.respond_as_firm(
            db,
            case,
            user,
            kind=form.cleaned["kind"],
            offer_fen=form.cleaned["offer"],
            terms=form.cleaned.get("terms") or "",
        )

    return await _case_action(request, "respond", call, _l("Your answer has been recorded."))


async def message(request: Request) -> Response:
    async def call(db: AsyncSession, case: Case, user: User, data: FormData) -> object:
        audience = _text(data, "audience", 10) or "all"
        return await service.post_message(db, case, user, _text(data, "message", 6000), audience)

    return await _case_action(request, "message", call, _l("Message sent."))


async def recusal(request: Request) -> Response:
    async def call(db: AsyncSession, case: Case, user: User, data: FormData) -> object:
        return await service.request_recusal(db, case, user, _text(data, "reason"))

    return await _case_action(
        request, "recuse", call, _l("Your request has been sent to the committee.")
    )


class RulesForm(Form):
    def validate(self) -> bool:
        from portal.validators import clean_amount_fen

        self.clean("simple_max_amount", clean_amount_fen)
        chosen = self.values("simple_categories")
        if any(c not in CATEGORIES for c in chosen):
            self.add_error("simple_categories", _l("Choose one of the options."))
        self.cleaned["simple_categories"] = [c for c in CATEGORIES if c in chosen]
        self.cleaned["agent_is_complex"] = self.value("agent_is_complex") == "1"
        for name in ("firm_response_days", "simple_close_days", "complex_close_days"):
            raw = self.value(name).strip()
            if not raw.isdigit():
                self.add_error(name, _l("Enter a number of working days from 1 to 120."))
            else:
                self.cleaned[name] = int(raw)
        return self.valid


async def rules(request: Request) -> Response:
    """A committee's triage rules (繁简分流) and deadlines in working days."""
    async with db_session(request) as db:
        committee = await orgs.get_committee(db, request.path_params["committee_id"])
        require(request, "view", committee)
        current = await service.rules_for(db, committee.id)
        form = RulesForm(
            {
                "simple_max_amount": f"{current.simple_max_amount_fen / 100:.2f}",
                "simple_categories": current.simple_categories,
                "agent_is_complex": "1" if current.agent_is_complex else "",
                "firm_response_days": str(current.firm_response_days),
                "simple_close_days": str(current.simple_close_days),
                "complex_close_days": str(current.complex_close_days),
            }
        )
        if request.method == "POST":
            require(request, "edit", committee)
            form = RulesForm(await request.form())
            if form.validate():
                try:
                    await service.save_rules(
                        db,
                        _user(request),
                        committee.id,
                        simple_max_amount_fen=form.cleaned["simple_max_amount"],
                        simple_categories=form.cleaned["simple_categories"],
                        agent_is_complex=form.cleaned["agent_is_complex"],
                        firm_response_days=form.cleaned["firm_response_days"],
                        simple_close_days=form.cleaned["simple_close_days"],
                        complex_close_days=form.cleaned["complex_close_days"],
                    )
                except DomainError as exc:
                    form.add_error(exc.field, exc.message)
                else:
                    response = redirect(request, "cases.rules", committee_id=committee.id)
                    return flash(request, response, _l("Saved."))
    return render(
        request,
        "cases/rules.html",
        {"committee": committee, "form": form, **CHOICES},
        status_code=400 if form.errors else 200,
    )


routes = [
    Route(
        "/admin/committees/{committee_id:int}/rules",
        rules,
        methods=["GET", "POST"],
        name="cases.rules",
    ),
    Route("/cases", case_list, name="cases.list"),
    Route("/cases/export", export_list, name="cases.export"),
    Route("/cases/new", new_case, methods=["GET", "POST"], name="cases.new"),
    Route("/m/{token}", firm_link, name="cases.firm_link"),
    Route("/cases/batch", batch_action, methods=["POST"], name="cases.batch"),
    Route("/cases/{case_id:int}", case_detail, name="cases.detail"),
    Route("/cases/{case_id:int}/identity", case_identity, name="cases.identity"),
    Route(
        "/cases/{case_id:int}/edit/{step}", edit_case, methods=["GET", "POST"], name="cases.edit"
    ),
    Route("/cases/{case_id:int}/submit", submit_case, methods=["POST"], name="cases.submit"),
    Route("/cases/{case_id:int}/materials", upload_material, methods=["POST"], name="cases.upload"),
    Route(
        "/cases/{case_id:int}/materials/{material_id:int}",
        evidence_views.evidence_file,
        name="cases.material",
    ),
    Route(
        "/cases/{case_id:int}/materials/{material_id:int}/delete",
        delete_material,
        methods=["POST"],
        name="cases.material_delete",
    ),
    Route("/cases/{case_id:int}/act", act, methods=["POST"], name="cases.act"),
    Route("/cases/{case_id:int}/request", request_material, methods=["POST"], name="cases.request"),
    Route("/cases/{case_id:int}/provide", provide_material, methods=["POST"], name="cases.provide"),
    Route("/cases/{case_id:int}/assign", assign, methods=["GET", "POST"], name="cases.assign"),
    Route("/cases/{case_id:int}/recusal", recusal, methods=["POST"], name="cases.recusal"),
    Route(
        "/cases/{case_id:int}/recusal/refuse",
        decide_recusal,
        methods=["POST"],
        name="cases.recusal_refuse",
    ),
    Route("/cases/{case_id:int}/respond", respond, methods=["POST"], name="cases.respond"),
    Route("/cases/{case_id:int}/messages", message, methods=["POST"], name="cases.message"),
]
