"""The firm API, ``/api/v1``: JSON for a firm's own systems, authenticated by bearer tokens.

Every endpoint is one :class:`Endpoint`: its route, the permission (scope) its token needs, its
body's and answer's models. The same list makes the routes and the OpenAPI document
(``portal.api.openapi``), so the document cannot drift from what is served.

Every call: the bearer token (401 without a live one), the token's rate (429 with
Retry-After), the scope (403), then the body (415 for another content type, 413 over the
limit, 422 when it does not match its schema), then the service: a request the case, the
agreement or a rule refuses (a decline without a reason, a payment of the wrong amount, a case
not yet accepted) answers 409 with the reason. Objects of other firms, and anything the firm
may not see under the portal's policy, answer 404. Errors are RFC 9457 problem details in the
caller's language (Accept-Language: zh-CN by default, or en).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from portal.agreements import service as agreements
from portal.agreements.models import AgreementStatus
from portal.agreements.policy import AgreementAccess
from portal.agreements.terms import yuan
from portal.api import schemas
from portal.api.service import Caller, authenticate
from portal.audit.service import personal_data_viewed
from portal.cases import service as cases
from portal.cases import uploads
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseMaterial
from portal.errors import DomainError, NotFound
from portal.evidence.policy import Item
from portal.i18n import Msg, _l
from portal.policy import NotPermitted
from portal.settings import SUPPORTED_LOCALES
from portal.web import client_ip, db_session

PREFIX = "/api/v1"
PROBLEM = "application/problem+json"
MAX_ID = 2**31 - 1
PAGE = 50
MAX_PAGE = 100


class Problem(Exception):
    """An error answered as problem details; ``errors`` names fields."""

    def __init__(
        self,
        status: int,
        message: Msg,
        *,
        errors: list[tuple[str, Msg | str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message.msgid)
        self.status, self.message = status, message
        self.errors = errors or []
        self.headers = headers or {}


TITLES: dict[int, Msg] = {
    400: _l("Bad request"),
    401: _l("Not authenticated"),
    403: _l("Not allowed"),
    404: _l("Not found"),
    405: _l("Method not allowed"),
    409: _l("Refused in the current state"),
    413: _l("Body too large"),
    415: _l("Unsupported content type"),
    422: _l("Invalid request"),
    429: _l("Too many requests"),
    500: _l("Server error"),
    503: _l("Service unavailable"),
}


def _locale(request: Request) -> str:
    """The caller's language from Accept-Language (zh-CN unless English comes first)."""
    default = request.app.state.settings.default_locale
    for part in request.headers.get("accept-language", "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh_CN"
        if tag.startswith("en"):
            return "en"
    return default if default in SUPPORTED_LOCALES else "zh_CN"


def _text(request: Request, message: Msg | str) -> str:
    catalogue = request.app.state.catalogues[_locale(request)]
    return message.render(catalogue) if isinstance(message, Msg) else message


def problem_response(request: Request, problem: Problem) -> Response:
    status = problem.status
    body = schemas.Problem(
        type=f"{request.app.state.settings.base_url}{PREFIX}/problems/{status}",
        title=_text(request, TITLES.get(status, TITLES[400])),
        status=status,
        detail=_text(request, problem.message),
        errors=[
            schemas.FieldError(field=name, detail=_text(request, text))
            for name, text in problem.errors
        ],
    )
    headers = dict(problem.headers)
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="jiefen"')
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, headers=headers, media_type=PROBLEM
    )


# -- one call --------------------------------------------------------------------------------


@dataclass
class Call:
    request: Request
    db: AsyncSession
    caller: Caller
    ids: dict[str, int]
    body: Any = None

    def permits(self, permission: str, resource: object) -> bool:
        policy = self.request.app.state.policy
        return bool(policy.permits(self.caller.identity, permission, resource))

    def require(self, permission: str, resource: object) -> None:
        if not self.permits(permission, resource):
            raise NotFound


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # under PREFIX, with {name} for path parameters
    name: str
    summary: str
    scope: str
    handler: Handler
    response: type[BaseModel]
    status: int = 200
    body: type[BaseModel] | None = None
    multipart: bool = False
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = (404,)
    description: str = ""
    # The services' names of fields, as this endpoint's body calls them.
    fields: dict[str, str] = field(default_factory=dict)


CASE_ID = Param(
    "case_id",
    "path",
    {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "The case's id (from the list).",
)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _read_json(request: Request, model: type[BaseModel]) -> BaseModel:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Problem(415, _l("Send the body as application/json."))
    limit = request.app.state.settings.api_max_json_kb * 1024
    too_large = Problem(413, _l("The body is larger than {kb} KB.", kb=limit // 1024))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise too_large
    try:
        return model.model_validate_json(bytes(raw))
    except ValidationError as exc:
        errors: list[tuple[str, Msg | str]] = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(p) for p in error["loc"]) or "body"
            errors.append((where, _l("Not valid here: {reason}", reason=error["msg"])))
        raise Problem(422, _l("The body is not valid."), errors=errors) from None


def _path_ids(request: Request, endpoint: Endpoint) -> dict[str, int]:
    ids: dict[str, int] = {}
    for param in endpoint.params:
        if param.where != "path":
            continue
        raw = str(request.path_params.get(param.name, ""))
        maximum = int(param.schema.get("maximum", MAX_ID))
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= maximum:
            raise Problem(404, _l("There is no such object."))
        ids[param.name] = int(raw)
    return ids


def _view(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    async def view(request: Request) -> Response:
        try:
            secret = _bearer(request)
            if secret is None:
                raise Problem(401, _l("Send an API token: Authorization: Bearer <token>."))
            async with db_session(request) as db:
                caller = await authenticate(db, secret, client_ip(request))
                if caller is None:
                    raise Problem(401, _l("The token is unknown, expired or revoked."))
                wait = await request.app.state.api_rate.retry_after(f"token:{caller.token.id}")
                if wait is not None:
                    raise Problem(
                        429,
                        _l("Too many requests; try again in {seconds} s.", seconds=wait),
                        headers={"Retry-After": str(wait)},
                    )
                if not caller.allows(endpoint.scope):
                    raise Problem(
                        403,
                        _l("This token lacks the permission “{scope}”.", scope=endpoint.scope),
                    )
                call = Call(request, db, caller, _path_ids(request, endpoint))
                if endpoint.body is not None:
                    call.body = await _read_json(request, endpoint.body)
                elif endpoint.multipart:
                    kind = request.headers.get("content-type", "").lower()
                    if not kind.startswith("multipart/form-data"):
                        raise Problem(415, _l("Send the files as multipart/form-data."))
                try:
                    return await endpoint.handler(call)
                except (NotFound, NotPermitted):
                    await db.rollback()
                    raise Problem(404, _l("There is no such object.")) from None
                except DomainError as exc:
                    await db.rollback()
                    # Well-formed and schema-valid, but the case, the agreement or a rule of
                    # the portal refuses it: a conflict with the state of the resource.
                    name = endpoint.fields.get(exc.field or "", exc.field)
                    errors: list[tuple[str, Msg | str]] = [(name, exc.message)] if name else []
                    raise Problem(409, exc.message, errors=errors) from None
        except Problem as problem:
            return problem_response(request, problem)

    view.__name__ = endpoint.name.replace(".", "_")
    return view


def _json(model: BaseModel, status: int = 200) -> Response:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


# -- what the answers hold -------------------------------------------------------------------

MASK = "*"


def _masked_name(name: str) -> str:
    """张三丰 → 张**; the firm sees the surname, as on the portal's pages."""
    return name[:1] + MASK * max(len(name) - 1, 1) if name else ""


SUMMARY = (
    Case.id,
    Case.number,
    Case.status,
    Case.category,
    Case.amount_fen,
    Case.submitted_at,
    Case.accepted_at,
    Case.closed_at,
    Case.firm_response,
    Case.firm_response_due,
    Case.close_due,
    Case.outcome,
    Case.updated_at,
)


def _summary(case: Any) -> dict[str, Any]:
    """The list's fields of a case (or of a row of just those columns)."""
    return {column.key: getattr(case, column.key) for column in SUMMARY}


def _material(m: CaseMaterial) -> schemas.Material:
    return schemas.Material(
        id=m.id,
        kind=m.kind,
        title=m.title,
        filename=m.filename,
        content_type=m.content_type,
        size=m.size,
        sha256=m.sha256,
        party=m.party,  # type: ignore[arg-type]
        created_at=m.created_at,
    )


async def _case(call: Call, permission: str = "view") -> Case:
    case = await call.db.get(Case, call.ids["case_id"])
    # Only the cases against the token's firm: not any the representative filed himself.
    if case is None or case.respondent_firm_id != call.caller.token.firm_id:
        raise NotFound
    call.require(permission, case)
    return case


async def _detail(call: Call, case: Case) -> schemas.CaseDetail:
    claimant = cases.claimant_of(call.request.app.state.vault, case)
    materials = [
        _material(m)
        for m in await cases.materials(call.db, case)
        if call.permits("view", Item(m, case))
    ]
    return schemas.CaseDetail(
        **_summary(case),
        claimant=_masked_name(claimant.name),
        outcomes=list(case.outcomes or []),
        facts=case.facts,
        incident_date=case.incident_date,
        firm_offer_fen=case.firm_offer_fen,
        firm_terms=case.firm_terms,
        firm_responded_at=case.firm_responded_at,
        materials=materials,
    )


# -- the endpoints ---------------------------------------------------------------------------


CURSOR = re.compile(r"[1-9][0-9]{0,8}")


def _cursor(raw: str) -> int:
    """A page's cursor is the id of the last case on the page before (cases go newest first,
    so the next page holds the ids below it): stable however many cases arrive meanwhile."""
    if not CURSOR.fullmatch(raw):
        raise Problem(400, _l("The cursor is not valid."), errors=[("cursor", _l("Not valid"))])
    return int(raw)


def _make_cursor(case_id: int) -> str:
    return str(case_id)


async def list_cases(call: Call) -> Response:
    query = call.request.query_params
    unknown = set(query) - {"status", "limit", "cursor"}
    if unknown:
        name = sorted(unknown)[0]
        raise Problem(400, _l("Unknown parameter: {name}.", name=name), errors=[(name, "?")])
    limit_text = query.get("limit", str(PAGE))
    if not limit_text.isascii() or not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise Problem(
            400,
            _l("limit must be a whole number from 1 to {most}.", most=MAX_PAGE),
            errors=[("limit", _l("Not valid"))],
        )
    limit = int(limit_text)
    # Only the list's columns: no case objects to build (the page is read, never changed).
    statement = select(*SUMMARY).where(
        Case.respondent_firm_id == call.caller.token.firm_id, Case.status != Status.DRAFT.value
    )
    status = query.get("status")
    if status is not None:
        if status not in STATUSES:
            raise Problem(400, _l("Choose one of the options."), errors=[("status", status)])
        statement = statement.where(Case.status == status)
    if "cursor" in query:
        statement = statement.where(Case.id < _cursor(query["cursor"]))
    rows = list(await call.db.execute(statement.order_by(Case.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    return _json(
        schemas.CaseList(
            items=[schemas.CaseSummary(**_summary(c)) for c in page],
            next_cursor=_make_cursor(page[-1].id) if len(rows) > limit else None,
        )
    )


STATUSES = [s.value for s in Status if s != Status.DRAFT]


async def read_case(call: Call) -> Response:
    case = await _case(call)
    detail = await _detail(call, case)
    # The firm's system read the claimant's (masked) name: on the audit trail like a page view.
    user_id = call.caller.user.id
    if personal_data_viewed(call.db, user_id, case.id, case.filer_id, ["name_masked"], "api"):
        await call.db.commit()
    return _json(detail)


async def respond(call: Call) -> Response:
    body: schemas.ResponseIn = call.body
    case = await _case(call, "respond")
    user = await call.db.get(type(call.caller.user), call.caller.user.id)
    assert user is not None
    await cases.respond_as_firm(
        call.db, case, user, kind=body.kind, offer_fen=None, terms=body.reason
    )
    return _json(await _detail(call, case))


async def propose(call: Call) -> Response:
    body: schemas.ProposalIn = call.body
    case = await _case(call, "respond")
    user = await call.db.get(type(call.caller.user), call.caller.user.id)
    assert user is not None
    await cases.respond_as_firm(
        call.db, case, user, kind="propose", offer_fen=body.amount_fen or None, terms=body.terms
    )
    return _json(await _detail(call, case), 201)


async def upload_evidence(call: Call) -> Response:
    case = await _case(call, "upload")
    state = call.request.app.state
    user = await call.db.get(type(call.caller.user), call.caller.user.id)
    assert user is not None
    added = await uploads.receive_materials(
        call.db,
        state.blobs,
        case,
        user,
        call.request.stream(),
        call.request.headers.get("content-type", ""),
        max_file_bytes=state.settings.evidence_max_bytes,
    )
    return _json(schemas.MaterialList(items=[_material(m) for m in added]), 201)


async def _agreement(call: Call, permission: str) -> AgreementAccess:
    case = await _case(call)
    found = await agreements.access(call.db, case.id)
    if found.agreement is None:
        raise NotFound
    call.require(permission, found)
    return found


async def _agreement_body(call: Call, found: AgreementAccess) -> schemas.Agreement:
    agreement = found.agreement
    assert agreement is not None
    clauses: list[str] = []
    if agreement.current_version:
        version = await agreements.current(call.db, agreement)
        clauses = list(version.clauses_zh)
    today = cases.today_in_china()
    rows = await agreements.instalments(call.db, agreement)
    return schemas.Agreement(
        id=agreement.id,
        case_id=found.case.id,
        status=agreement.status,  # type: ignore[arg-type]
        version=agreement.current_version,
        effective_at=agreement.effective_at,
        clauses=clauses,
        instalments=[
            schemas.Instalment(
                number=i.number,
                amount_fen=i.amount_fen,
                due_on=i.due_on,
                state=i.state,  # type: ignore[arg-type]
                overdue=agreements.overdue(i, today),
                paid_fen=i.paid_fen,
                paid_on=i.paid_on,
                reference=i.reference,
                dispute_reason=i.dispute_reason,
            )
            for i in rows
        ],
    )


async def read_agreement(call: Call) -> Response:
    return _json(await _agreement_body(call, await _agreement(call, "view")))


async def record_payment(call: Call) -> Response:
    body: schemas.PaymentIn = call.body
    found = await _agreement(call, "record_payment")
    user = await call.db.get(type(call.caller.user), call.caller.user.id)
    assert user is not None
    if found.agreement is not None and found.agreement.status != AgreementStatus.EFFECTIVE:
        raise DomainError(_l("The agreement is not in effect yet."))
    await agreements.record_payment(
        call.db,
        found,
        user,
        call.ids["number"],
        amount=yuan(body.amount_fen),
        paid_on=body.paid_on.isoformat(),
        reference=body.reference,
    )
    return _json(await _agreement_body(call, found))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/cases",
        "api.cases",
        "List the firm's cases",
        "cases:read",
        list_cases,
        schemas.CaseList,
        params=(
            Param("status", "query", {"type": "string", "enum": STATUSES}, "Only this status."),
            Param(
                "limit",
                "query",
                {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": PAGE},
                "How many to return.",
            ),
            Param(
                "cursor",
                "query",
                {"type": "string", "pattern": f"^{CURSOR.pattern}$"},
                "The next_cursor of the previous page.",
            ),
        ),
        errors=(400,),
        description="Newest first; pages follow next_cursor.",
    ),
    Endpoint(
        "GET",
        "/cases/{case_id}",
        "api.case",
        "Read a case",
        "cases:read",
        read_case,
        schemas.CaseDetail,
        params=(CASE_ID,),
    ),
    Endpoint(
        "POST",
        "/cases/{case_id}/response",
        "api.respond",
        "Agree to mediate, or decline",
        "cases:respond",
        respond,
        schemas.CaseDetail,
        body=schemas.ResponseIn,
        params=(CASE_ID,),
        errors=(404, 409, 413, 415, 422),
        description="Declining needs a reason. Possible once the committee accepted the case.",
        fields={"terms": "reason"},
    ),
    Endpoint(
        "POST",
        "/cases/{case_id}/proposals",
        "api.propose",
        "Propose a settlement",
        "cases:respond",
        propose,
        schemas.CaseDetail,
        status=201,
        body=schemas.ProposalIn,
        params=(CASE_ID,),
        errors=(404, 409, 413, 415, 422),
        description="An amount (fen), terms, or both; the mediator and claimant are told.",
        fields={"offer": "amount_fen"},
    ),
    Endpoint(
        "POST",
        "/cases/{case_id}/evidence",
        "api.evidence",
        "Upload evidence",
        "evidence:write",
        upload_evidence,
        schemas.MaterialList,
        status=201,
        multipart=True,
        params=(CASE_ID,),
        errors=(404, 409, 413, 415, 422),
        description=(
            "multipart/form-data: one or more `file` parts (PDF, images, audio, video, office "
            "documents, or a ZIP of them), optional `title`, `description`, and `visibility` "
            "(`parties` or `mediator`). Streamed, checked by content, stored encrypted; each "
            "file is entered into the evidence log. All files are kept, or none."
        ),
    ),
    Endpoint(
        "GET",
        "/cases/{case_id}/agreement",
        "api.agreement",
        "Read the settlement agreement and its payments",
        "agreements:read",
        read_agreement,
        schemas.Agreement,
        params=(CASE_ID,),
    ),
    Endpoint(
        "POST",
        "/cases/{case_id}/agreement/payments/{number}",
        "api.payment",
        "Record a payment under the agreement",
        "payments:write",
        record_payment,
        schemas.Agreement,
        body=schemas.PaymentIn,
        params=(
            CASE_ID,
            Param(
                "number",
                "path",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                "The instalment's number.",
            ),
        ),
        errors=(404, 409, 413, 415, 422),
        description="The amount must be the instalment's; the claimant is asked to confirm.",
        fields={"amount": "amount_fen"},
    ),
)


ERRORS: dict[int, Msg] = {
    404: _l("There is no such API endpoint."),
    405: _l("This endpoint does not take this method."),
    500: _l("The server failed; the request id is in the X-Request-ID header."),
    503: _l("The database is briefly unavailable; try again after the Retry-After seconds."),
}


def api_error(request: Request, status: int, headers: dict[str, str] | None = None) -> Response:
    """Starlette's own errors (no route, wrong method) and crashes, as problem details."""
    message = ERRORS.get(status, TITLES.get(status, TITLES[400]))
    return problem_response(request, Problem(status, message, headers=dict(headers or {})))


def build_routes() -> list[BaseRoute]:
    from portal.api import openapi

    found: list[BaseRoute] = [
        Route(f"{PREFIX}/openapi.json", openapi.document, name="api.openapi"),
    ]
    for endpoint in ENDPOINTS:
        found.append(
            Route(
                PREFIX + endpoint.path,
                _view(endpoint),
                methods=[endpoint.method],
                name=endpoint.name,
            )
        )
    return found


routes = build_routes()

__all__ = ["ENDPOINTS", "PREFIX", "Endpoint", "Problem", "problem_response", "routes"]
