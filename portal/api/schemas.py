"""The firm API's request and response bodies. Their JSON Schemas make the OpenAPI document.

Request bodies forbid unknown fields, so a misspelt field is an error rather than ignored.
Money is in integer fen (分), times are UTC (RFC 3339), dates are China dates.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

CaseStatus = Literal[
    "submitted",
    "needs_info",
    "accepted",
    "rejected",
    "ineligible",
    "assigned",
    "in_mediation",
    "settled",
    "fulfilled",
    "closed",
    "failed",
    "transferred_to_litigation",
    "withdrawn",
]
Fen = Annotated[int, Field(ge=0, le=10**13, description="An amount in fen (分).")]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    field: str
    detail: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: int
    detail: str = Field(description="What went wrong, in the caller's language.")
    errors: list[FieldError] = Field(default_factory=list)


class Material(BaseModel):
    id: int
    kind: str
    title: str
    filename: str
    content_type: str
    size: int
    sha256: str
    party: Literal["claimant", "respondent", "committee"]
    created_at: datetime


class CaseSummary(BaseModel):
    id: int
    number: str | None
    status: CaseStatus
    category: str
    amount_fen: int | None
    submitted_at: datetime | None
    accepted_at: datetime | None
    closed_at: datetime | None
    firm_response: Literal["agree", "propose", "decline"] | None
    firm_response_due: date | None
    close_due: date | None
    outcome: str | None
    updated_at: datetime


class CaseDetail(CaseSummary):
    claimant: str = Field(description="The claimant's name, masked as the portal shows it.")
    outcomes: list[str] = Field(description="What the claimant asks for.")
    facts: str
    incident_date: date | None
    firm_offer_fen: int | None
    firm_terms: str
    firm_responded_at: datetime | None
    materials: list[Material] = Field(description="The files the firm may see.")


class CaseList(BaseModel):
    items: list[CaseSummary]
    next_cursor: str | None = Field(
        description="Pass as ``cursor`` for the next page; null on the last page."
    )


class ResponseIn(Request):
    """Agree to mediate, or decline with a reason."""

    kind: Literal["agree", "decline"]
    reason: str = Field(default="", max_length=2000)


class ProposalIn(Request):
    """A settlement the firm offers: an amount, terms, or both."""

    amount_fen: Fen | None = None
    terms: str = Field(default="", max_length=2000)


class MaterialList(BaseModel):
    items: list[Material]


class Instalment(BaseModel):
    number: int
    amount_fen: int
    due_on: date
    state: Literal["due", "paid", "confirmed", "disputed"]
    overdue: bool
    paid_fen: int | None
    paid_on: date | None
    reference: str
    dispute_reason: str


class Agreement(BaseModel):
    id: int
    case_id: int
    status: Literal["drafting", "signing", "effective"]
    version: int
    effective_at: datetime | None
    clauses: list[str] = Field(description="The current version's clauses, in Chinese.")
    instalments: list[Instalment]


class PaymentIn(Request):
    amount_fen: Annotated[int, Field(ge=1, le=10**13)]
    paid_on: date
    reference: str = Field(default="", max_length=100)


MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    CaseList,
    CaseDetail,
    ResponseIn,
    ProposalIn,
    MaterialList,
    Agreement,
    Instalment,
    PaymentIn,
)
