"""The agreement page of a case: the current version (Chinese legal text, English reading
copy), earlier versions and the changes between them, comments, signing, the PDFs, and the
payments that fulfil it. Plain forms: each change redirects back to the page with a notice,
and a refusal shows the page again with the message and what was typed (400)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portal.accounts.models import User
from portal.agreements import judicial, litigation, service, survey
from portal.agreements.models import AgreementStatus, InstalmentState
from portal.agreements.policy import AgreementAccess, LitigationAccess, SurveyAccess
from portal.agreements.terms import MAX_INSTALMENTS, Terms, check_terms, yuan
from portal.audit.service import personal_data_viewed
from portal.cases.models import Case
from portal.cases.service import TZ
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence.policy import Item
from portal.i18n import Msg, _l
from portal.web import (
    current_user,
    db_session,
    flash,
    identity,
    is_htmx,
    permits,
    read_form,
    redirect,
    render,
    require,
)

TEMPLATE = "agreements/agreement.html"
PAYMENT_ROWS = 6  # rows the editor shows at least (two more than the schedule has)


def _number(raw: Any) -> int | None:
    if isinstance(raw, str) and raw.strip().isdecimal() and len(raw.strip()) < 10:
        return int(raw.strip())
    return None


def _text(form: Any, name: str) -> str:
    raw = form.get(name, "")
    return raw if isinstance(raw, str) else ""


async def _load(request: Request, db: AsyncSession, permission: str = "view") -> AgreementAccess:
    found = await service.access(db, request.path_params["case_id"])
    require(request, "view", found)
    require(request, permission, found)
    return found


async def _context(request: Request, db: AsyncSession, **extra: Any) -> dict[str, Any]:
    found = await _load(request, db)
    agreement = found.agreement
    user = await current_user(request, db)
    context: dict[str, Any] = {
        "case": found.case,
        "agreement": agreement,
        "may_draft": permits(request, "draft", found),
        "may_sign": permits(request, "sign", found),
        "may_comment": permits(request, "comment", found),
        "may_pay": permits(request, "record_payment", found),
        "may_confirm": permits(request, "confirm_payment", found),
        "statuses": service.STATUS_LABELS,
        "sides": service.SIDE_LABELS,
        "instalment_labels": service.INSTALMENT_LABELS,
        "yuan": yuan,
        "today": utcnow().astimezone(TZ).date(),
        "overdue": service.overdue,
        "payment_rows": PAYMENT_ROWS,
        "max_payments": MAX_INSTALMENTS,
        "AgreementStatus": AgreementStatus,
        "may_judicial": permits(request, "judicial", found),
        "referral": await judicial.referral(db, found.case),
        "judicial_labels": judicial.JUDICIAL_LABELS,
        "InstalmentState": InstalmentState,
        **extra,
    }
    if agreement is None:
        return context
    versions = await service.versions(db, agreement)
    current = versions[-1]
    shown: Any = current
    wanted = _number(request.query_params.get("version"))
    if wanted is not None:
        shown = next((v for v in versions if v.number == wanted), None)
        if shown is None:
            raise NotFound
    previous = next((v for v in versions if v.number == shown.number - 1), None)
    signatures = await service.signatures(db, agreement)
    side = service.side_of(found.case, user)
    signed_current = {s.side for s in signatures if s.version_id == current.id and not s.voided_at}
    context.update(
        versions=versions,
        current=current,
        shown=shown,
        terms=Terms.from_json(current.terms),
        diff=service.readable_diff(previous.clauses_zh, shown.clauses_zh) if previous else [],
        previous=previous,
        signatures=signatures,
        signed_current=signed_current,
        required=service.required_sides(found.case),
        my_side=side if side in service.required_sides(found.case) else None,
        channel=service.code_channel(request.app.state.vault, user),
        comments=await service.comments(db, agreement),
        instalments=await service.instalments(db, agreement),
        judicial_application=await judicial.application(db, agreement),
        version_numbers={v.id: v.number for v in versions},
    )
    return context


# What an agreement and the case file show of the claimant: the name and the masked ID number.
SHOWN = ["name", "id_number_masked"]


async def _seen(request: Request, db: AsyncSession, case: Case, via: str) -> None:
    """Record that someone other than the claimant saw the claimant's identity data here."""
    if personal_data_viewed(db, identity(request).user_id, case.id, case.filer_id, SHOWN, via):
        await db.commit()


async def page(request: Request) -> Response:
    async with db_session(request) as db:
        context = await _context(request, db)
        if context["agreement"] is not None and not is_htmx(request):
            await _seen(request, db, context["case"], "agreement_page")
    return render(request, TEMPLATE, context)


async def _refused(request: Request, db: AsyncSession, exc: DomainError, **kept: Any) -> Response:
    await db.rollback()
    context = await _context(request, db, error=exc.message, error_field=exc.field, **kept)
    return render(request, TEMPLATE, context, status_code=400)


def _back(request: Request, message: Msg) -> Response:
    return flash(
        request,
        redirect(request, "agreements.page", case_id=request.path_params["case_id"]),
        message,
    )


# One change from the page: (db, the agreement, the actor, the form) → the notice to show.
Act = Callable[[AsyncSession, AgreementAccess, User, FormData], Awaitable[Msg]]
Keep = Callable[[FormData], dict[str, Any]]


async def _act(request: Request, permission: str, act: Act, keep: Keep | None = None) -> Response:
    """Check, read the form, make the change, back to the page with its notice; a refusal
    shows the page again with the message and what ``keep`` takes from the form."""
    async with db_session(request) as db:
        found = await _load(request, db, permission)
        actor = await current_user(request, db)
        form = await read_form(request)
        try:
            message = await act(db, found, actor, form)
        except DomainError as exc:
            return await _refused(request, db, exc, **(keep(form) if keep else {}))
    return _back(request, message)


def _version(form: FormData) -> int:
    number = _number(form.get("version"))
    if number is None:
        raise DomainError(_l("The request is not valid."))
    return number


TERM_FIELDS = (
    "refund",
    "compensation",
    "fee_waiver",
    "interest_waiver",
    "apology",
    "other",
    "withdraw_complaints",
    "note",
)


def _terms_form(form: FormData) -> dict[str, Any]:
    return {
        "form": {k: _text(form, k) for k in TERM_FIELDS},
        "form_payments": [
            (_text(form, f"payment_amount_{n}"), _text(form, f"payment_due_{n}"))
            for n in range(1, MAX_INSTALMENTS + 2)
        ],
    }


async def start(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, _: FormData) -> Msg:
        await service.start(db, request.app.state.vault, found, actor)
        return _l("The agreement was started from the case. Check the terms.")

    return await _act(request, "draft", act)


async def save_version(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        kept = _terms_form(form)
        terms = check_terms(kept["form"], kept["form_payments"], utcnow().astimezone(TZ).date())
        vault = request.app.state.vault
        row = await service.save_version(db, vault, found, actor, terms, kept["form"]["note"])
        return _l("Version {version} saved.", version=row.number)

    return await _act(request, "draft", act, _terms_form)


async def open_signing(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, _: FormData) -> Msg:
        await service.open_signing(db, found, actor)
        return _l("The agreement is up for signature. The parties have been told.")

    return await _act(request, "draft", act)


async def comment(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        await service.add_comment(db, found, actor, _version(form), _text(form, "body"))
        return _l("Your comment was added.")

    return await _act(request, "comment", act, lambda form: {"comment_body": _text(form, "body")})


async def send_code(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, _: FormData) -> Msg:
        state = request.app.state
        channel = await service.send_code(db, state.settings, state.vault, found, actor)
        if channel == "sms":
            return _l("A code was sent to your mobile phone.")
        return _l("A code was sent to your e-mail address.")

    return await _act(request, "sign", act)


async def sign(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        state = request.app.state
        await service.sign(
            db,
            state.settings,
            found,
            actor,
            version_number=_version(form),
            password=_text(form, "password"),
            code=_text(form, "code"),
            typed_name=_text(form, "typed_name"),
            drawn=_text(form, "drawn").strip() or None,
        )
        if found.agreement is not None and found.agreement.status == AgreementStatus.EFFECTIVE:
            return _l("You signed. Every party has signed: the agreement is in effect.")
        return _l("You signed. The other party has been told.")

    return await _act(request, "sign", act, lambda form: {"typed_name": _text(form, "typed_name")})


PAYMENT_FIELDS = ("amount", "paid_on", "reference")


async def record_payment(request: Request) -> Response:
    number = request.path_params["number"]

    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        kept = {k: _text(form, k) for k in PAYMENT_FIELDS}
        await service.record_payment(db, found, actor, number, **kept)
        return _l("The payment was recorded. The claimant has been asked to confirm it.")

    def keep(form: FormData) -> dict[str, Any]:
        return {"payment": {k: _text(form, k) for k in PAYMENT_FIELDS}, "payment_number": number}

    return await _act(request, "record_payment", act, keep)


async def answer_payment(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        await service.answer_payment(
            db,
            found,
            actor,
            request.path_params["number"],
            received=_text(form, "answer") == "received",
            reason=_text(form, "reason"),
        )
        return _l("Thank you. Your answer was recorded.")

    return await _act(
        request, "confirm_payment", act, lambda form: {"answer_reason": _text(form, "reason")}
    )


def _pdf(data: bytes, name: str) -> Response:
    return Response(
        data,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


async def version_pdf(request: Request) -> Response:
    """A version's PDF as signed: the file a signature's receipt is checked against."""
    number = request.path_params["version"]
    async with db_session(request) as db:
        found = await _load(request, db)
        data = await service.version_pdf(db, found, number)
        await _seen(request, db, found.case, "agreement_pdf")
    return _pdf(data, f"agreement-{found.case.number or found.case.id}-v{number}.pdf")


async def signed_pdf(request: Request) -> Response:
    """The agreement in effect with every signature and the receipt's QR code."""
    async with db_session(request) as db:
        found = await _load(request, db)
        try:
            data = await service.executed_pdf(
                db, request.app.state.vault, found, request.app.state.settings.base_url
            )
        except DomainError:
            raise NotFound from None
        await _seen(request, db, found.case, "signed_agreement_pdf")
    return _pdf(data, f"agreement-{found.case.number or found.case.id}-signed.pdf")


routes = [
    Route("/cases/{case_id:int}/agreement", page, name="agreements.page"),
    Route("/cases/{case_id:int}/agreement/start", start, methods=["POST"], name="agreements.start"),
    Route(
        "/cases/{case_id:int}/agreement/versions",
        save_version,
        methods=["POST"],
        name="agreements.save",
    ),
    Route(
        "/cases/{case_id:int}/agreement/signing",
        open_signing,
        methods=["POST"],
        name="agreements.open_signing",
    ),
    Route(
        "/cases/{case_id:int}/agreement/comments",
        comment,
        methods=["POST"],
        name="agreements.comment",
    ),
    Route(
        "/cases/{case_id:int}/agreement/code", send_code, methods=["POST"], name="agreements.code"
    ),
    Route("/cases/{case_id:int}/agreement/sign", sign, methods=["POST"], name="agreements.sign"),
    Route(
        "/cases/{case_id:int}/agreement/v{version:int}.pdf",
        version_pdf,
        name="agreements.version_pdf",
    ),
    Route("/cases/{case_id:int}/agreement/signed.pdf", signed_pdf, name="agreements.signed_pdf"),
    Route(
        "/cases/{case_id:int}/agreement/payments/{number:int}",
        record_payment,
        methods=["POST"],
        name="agreements.pay",
    ),
    Route(
        "/cases/{case_id:int}/agreement/payments/{number:int}/answer",
        answer_payment,
        methods=["POST"],
        name="agreements.answer",
    ),
]


async def _survey(request: Request, db: AsyncSession) -> SurveyAccess:
    case = await db.get(Case, request.path_params["case_id"])
    if case is None:
        raise NotFound
    found = SurveyAccess(case)
    require(request, "rate", found)
    return found


def _survey_page(
    request: Request, case: Case, done: Any, status_code: int = 200, **extra: Any
) -> Response:
    context = {
        "case": case,
        "done": done,
        "questions": survey.QUESTIONS,
        "scale": survey.SCALE,
        "max_comment": survey.MAX_COMMENT,
        **extra,
    }
    return render(request, "agreements/survey.html", context, status_code=status_code)


async def survey_page(request: Request) -> Response:
    async with db_session(request) as db:
        found = await _survey(request, db)
        done = await survey.answered(db, found.case, await current_user(request, db))
    return _survey_page(request, found.case, done)


async def survey_answer(request: Request) -> Response:
    async with db_session(request) as db:
        found = await _survey(request, db)
        actor = await current_user(request, db)
        form = await read_form(request)
        answers = {key: _text(form, key) for key in survey.QUESTIONS}
        comment = _text(form, "comment")
        try:
            await survey.rate(db, found.case, actor, answers, comment)
        except DomainError as exc:
            await db.rollback()
            done = await survey.answered(db, found.case, actor)
            return _survey_page(
                request,
                found.case,
                done,
                400,
                error=exc.message,
                error_field=exc.field,
                answers=answers,
                comment=comment,
            )
    return flash(
        request,
        redirect(request, "cases.detail", case_id=found.case.id),
        _l("Thank you for rating the mediation."),
    )


routes += [
    Route("/cases/{case_id:int}/survey", survey_page, name="agreements.survey"),
    Route(
        "/cases/{case_id:int}/survey",
        survey_answer,
        methods=["POST"],
        name="agreements.survey_answer",
    ),
]


async def judicial_apply(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        row = await judicial.apply(db, found, actor, _text(form, "court"))
        if row.status == "applied":
            return _l("Both parties have applied. The package for the court is ready.")
        return _l("Your side applied. The other party has been asked to join.")

    return await _act(request, "sign", act, lambda form: {"court": _text(form, "court")})


DECISION_FIELDS = ("outcome", "court_case_number", "decided_on", "note")


async def judicial_decision(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        kept = {k: _text(form, k) for k in DECISION_FIELDS}
        await judicial.record_decision(db, found, actor, **kept)
        return _l("The court's answer was recorded. The parties have been told.")

    def keep(form: FormData) -> dict[str, Any]:
        return {"decision": {k: _text(form, k) for k in DECISION_FIELDS}}

    return await _act(request, "judicial", act, keep)


def _zip_response(package: judicial.Package) -> Response:
    return Response(
        package.data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{package.name}"',
            "Cache-Control": "private, no-store",
        },
    )


async def judicial_package(request: Request) -> Response:
    state = request.app.state
    async with db_session(request) as db:
        found = await _load(request, db)
        try:
            package = await judicial.judicial_package(
                db, state.vault, found, state.settings.base_url, state.log_key
            )
        except DomainError:
            raise NotFound from None
        await _seen(request, db, found.case, "judicial_package")
    return _zip_response(package)


REFERRAL_FIELDS = ("court", "court_case_number", "referred_on")


async def referral_record(request: Request) -> Response:
    async def act(db: AsyncSession, found: AgreementAccess, actor: User, form: FormData) -> Msg:
        kept = {k: _text(form, k) for k in REFERRAL_FIELDS}
        await judicial.record_referral(db, found.case, actor, **kept)
        return _l("The court referral was recorded.")

    def keep(form: FormData) -> dict[str, Any]:
        return {"referral_form": {k: _text(form, k) for k in REFERRAL_FIELDS}}

    return await _act(request, "judicial", act, keep)


async def referral_report(request: Request) -> Response:
    state = request.app.state
    async with db_session(request) as db:
        found = await _load(request, db, "judicial")
        actor = await current_user(request, db)
        await read_form(request)
        try:
            package = await judicial.referral_report(
                db, state.vault, found, actor, state.settings.base_url, state.log_key
            )
        except DomainError as exc:
            return await _refused(request, db, exc)
    return _zip_response(package)


routes += [
    Route(
        "/cases/{case_id:int}/agreement/judicial",
        judicial_apply,
        methods=["POST"],
        name="agreements.judicial_apply",
    ),
    Route(
        "/cases/{case_id:int}/agreement/judicial/decision",
        judicial_decision,
        methods=["POST"],
        name="agreements.judicial_decision",
    ),
    Route(
        "/cases/{case_id:int}/agreement/judicial.zip",
        judicial_package,
        name="agreements.judicial_package",
    ),
    Route(
        "/cases/{case_id:int}/referral",
        referral_record,
        methods=["POST"],
        name="agreements.referral",
    ),
    Route(
        "/cases/{case_id:int}/referral/report",
        referral_report,
        methods=["POST"],
        name="agreements.referral_report",
    ),
]


# -- when mediation fails -------------------------------------------------------------------

LITIGATION = "agreements/litigation.html"


async def _litigation(request: Request, db: AsyncSession, permission: str) -> LitigationAccess:
    found = await litigation.access(db, request.path_params["case_id"])
    require(request, "view", found)
    require(request, permission, found)
    return found


async def _litigation_page(
    request: Request, db: AsyncSession, status_code: int = 200, **extra: Any
) -> Response:
    found = await _litigation(request, db, "view")
    user = await current_user(request, db)
    side = service.side_of(found.case, user)
    facts = found.facts
    mine = None
    if facts is not None and side in service.required_sides(found.case):
        mine = getattr(facts, f"{side}_confirmed_at")
    context = {
        "case": found.case,
        "facts": facts,
        "confirmed": litigation.confirmed(facts, found.case),
        "my_side": side if side in service.required_sides(found.case) else None,
        "my_confirmation": mine,
        "required": service.required_sides(found.case),
        "sides": service.SIDE_LABELS,
        "may_write": permits(request, "write_facts", found)
        and found.case.status in litigation.WRITABLE,
        "may_transfer": permits(request, "transfer", found) and found.case.status == "failed",
        "bundled": found.case.status in litigation.BUNDLED,
        "max_facts": litigation.MAX_FACTS,
        **extra,
    }
    return render(request, LITIGATION, context, status_code=status_code)


async def litigation_page(request: Request) -> Response:
    async with db_session(request) as db:
        return await _litigation_page(request, db)


LitigationAct = Callable[[AsyncSession, LitigationAccess, User, FormData], Awaitable[Msg]]


async def _litigation_act(
    request: Request, permission: str, act: LitigationAct, keep: Keep | None = None
) -> Response:
    async with db_session(request) as db:
        found = await _litigation(request, db, permission)
        actor = await current_user(request, db)
        form = await read_form(request)
        try:
            message = await act(db, found, actor, form)
        except DomainError as exc:
            await db.rollback()
            kept = keep(form) if keep else {}
            return await _litigation_page(request, db, 400, error=exc.message, **kept)
    back = redirect(request, "agreements.litigation", case_id=request.path_params["case_id"])
    return flash(request, back, message)


async def facts_write(request: Request) -> Response:
    async def act(db: AsyncSession, found: LitigationAccess, actor: User, form: FormData) -> Msg:
        await litigation.write_facts(db, found, actor, _text(form, "text"))
        return _l("The record was saved. Both sides have been asked to confirm it.")

    return await _litigation_act(
        request, "write_facts", act, lambda form: {"draft": _text(form, "text")}
    )


async def facts_confirm(request: Request) -> Response:
    async def act(db: AsyncSession, found: LitigationAccess, actor: User, form: FormData) -> Msg:
        revision = _number(form.get("revision"))
        await litigation.confirm_facts(db, found, actor, revision or 0)
        return _l("Thank you. Your confirmation was recorded.")

    return await _litigation_act(request, "confirm_facts", act)


async def transfer(request: Request) -> Response:
    async def act(db: AsyncSession, found: LitigationAccess, actor: User, _: FormData) -> Msg:
        await litigation.transfer(db, found, actor)
        return _l("The case was transferred to litigation. The parties have been told.")

    return await _litigation_act(request, "transfer", act)


async def case_file(request: Request) -> Response:
    state = request.app.state
    async with db_session(request) as db:
        found = await _litigation(request, db, "view")
        try:
            package = await litigation.bundle(
                db,
                state.vault,
                state.blobs,
                found,
                state.log_key,
                lambda material: permits(request, "view", Item(material, found.case)),
            )
        except DomainError:
            raise NotFound from None
        await _seen(request, db, found.case, "case_file")
    return _zip_response(package)


routes += [
    Route("/cases/{case_id:int}/litigation", litigation_page, name="agreements.litigation"),
    Route(
        "/cases/{case_id:int}/litigation/facts",
        facts_write,
        methods=["POST"],
        name="agreements.facts",
    ),
    Route(
        "/cases/{case_id:int}/litigation/facts/confirm",
        facts_confirm,
        methods=["POST"],
        name="agreements.facts_confirm",
    ),
    Route(
        "/cases/{case_id:int}/litigation/transfer",
        transfer,
        methods=["POST"],
        name="agreements.transfer",
    ),
    Route(
        "/cases/{case_id:int}/litigation/case-file.zip",
        case_file,
        name="agreements.case_file",
    ),
]
