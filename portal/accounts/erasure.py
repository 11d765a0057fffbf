"""A person's data: erasure (PIPL art. 47) and export (art. 45).

Erasure removes the person's personal data and their commitment secret, and keeps what the
committee's figures and the evidence log need: each case keeps its number, category, amounts,
dates, status and outcome (so every statistic stays the same), and every leaf stays as it was
(so every receipt and proof still verifies). What goes:

- the account: name, phone, email, password, sessions, codes and notifications; it can no
  longer log in, and shows as 已注销用户;
- in the cases the person filed: the claimant's and agent's name, ID number and phone (and
  their blind indexes), the facts as told, the filing address; every timeline note, chat
  message, comment, survey remark and recusal reason; each evidence item's name, title,
  description and salt, and its file (unless another kept item holds the same content);
- the commitment secret, so that no leaf can be linked to the person any more.

Session recordings are evidence items of the case and go with them. The signed agreement
(its PDF names the parties) and confirmed minutes are legal records the committee must keep:
they are counted in the report and kept.
Cases not yet closed are refused (a failed mediation's case file may still go to court): close
or withdraw them first.
"""

from __future__ import annotations

import json
import logging
import secrets
import zipfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import PhoneCode, User, UserSession
from portal.agreements.models import (
    Agreement,
    AgreementComment,
    AgreementVersion,
    Survey,
)
from portal.audit.service import record
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseEvent, CaseMaterial, RecusalRequest
from portal.crypto import DataVault
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence.blobs import BlobStore
from portal.evidence.service import forget_person
from portal.i18n import _l
from portal.meetings.minutes_models import MinutesVersion
from portal.meetings.models import Meeting, MeetingMessage
from portal.notify.models import Notification

logger = logging.getLogger("jiefen.erasure")
ERASED_NAME = "已注销用户"
ERASED_FILENAME = "已删除"
# Not yet closed: the person's data is still needed (an agreement being carried out, a failed
# mediation's case file for the court).
ACTIVE = {
    Status.SUBMITTED,
    Status.NEEDS_INFO,
    Status.ACCEPTED,
    Status.ASSIGNED,
    Status.IN_MEDIATION,
    Status.SETTLED,
    Status.FULFILLED,
    Status.FAILED,
    Status.TRANSFERRED,
}
REASONS = ("request", "retention")


class ErasureRefused(DomainError):
    pass


@dataclass
class ErasureReport:
    user_id: int
    cases: int = 0
    materials: int = 0
    files_deleted: int = 0
    notes: int = 0
    messages: int = 0
    notifications: int = 0
    kept: dict[str, int] = field(default_factory=dict)


async def find_person(db: AsyncSession, vault: DataVault, login: str) -> User:
    """The user by id, phone or email."""
    from portal.accounts.service import find_user_by_login

    if login.isdigit() and len(login) < 11:
        user = await db.get(User, int(login))
    else:
        user = await find_user_by_login(db, vault, login)
    if user is None:
        raise NotFound
    return user


async def erase_person(
    db: AsyncSession,
    store: BlobStore,
    user: User,
    *,
    reason: str,
    actor_id: int | None = None,
) -> ErasureReport:
    """Erase ``user``'s personal data (see the module's text); commits, then deletes files."""
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {REASONS}")
    report = ErasureReport(user.id)
    cases = list(await db.scalars(select(Case).where(Case.filer_id == user.id)))
    active = [c for c in cases if c.status in ACTIVE]
    if active:
        raise ErasureRefused(
            _l(
                "{count} cases of this person are still being handled ({numbers}): close or "
                "withdraw them first.",
                count=len(active),
                numbers=", ".join(c.number or str(c.id) for c in active[:5]),
            )
        )
    now = utcnow()
    case_ids = [c.id for c in cases]
    report.cases = len(cases)
    for case in cases:
        case.claimant_name_enc = case.claimant_name_index = None
        case.claimant_id_enc = case.claimant_id_index = None
        case.claimant_phone_enc = case.claimant_phone_index = None
        case.agent_name_enc = case.agent_phone_enc = case.agent_phone_index = None
        case.agent_org = ""
        case.facts = ""
        case.filing_ip = ""

    # Files: deleted unless a kept item (of anyone) holds the same content.
    erased_files: set[str] = set()
    if case_ids:
        materials = list(
            await db.scalars(
                select(CaseMaterial).where(
                    CaseMaterial.case_id.in_(case_ids), CaseMaterial.erased_at.is_(None)
                )
            )
        )
        for material in materials:
            material.filename = ERASED_FILENAME
            material.title = ""
            material.description = ""
            material.salt = ""
            material.erased_at = now
            erased_files.add(material.sha256)
        report.materials = len(materials)
        notes = await db.execute(
            update(CaseEvent)
            .where(CaseEvent.case_id.in_(case_ids), CaseEvent.body != "")
            .values(body="", erased_at=now)
            .execution_options(synchronize_session=False)
        )
        report.notes = _rows(notes)
        meetings = select(Meeting.id).where(Meeting.case_id.in_(case_ids))
        messages = await db.execute(
            update(MeetingMessage)
            .where(MeetingMessage.meeting_id.in_(meetings), MeetingMessage.body != "")
            .values(body="")
            .execution_options(synchronize_session=False)
        )
        report.messages = _rows(messages)
        await db.execute(update(Survey).where(Survey.case_id.in_(case_ids)).values(comment=""))
        await db.execute(
            update(RecusalRequest)
            .where(RecusalRequest.case_id.in_(case_ids))
            .values(reason="", decision_note="")
        )
        versions = (
            select(AgreementVersion.id)
            .join(Agreement, Agreement.id == AgreementVersion.agreement_id)
            .where(Agreement.case_id.in_(case_ids))
        )
        await db.execute(
            update(AgreementComment)
            .where(AgreementComment.version_id.in_(versions))
            .values(body="")
            .execution_options(synchronize_session=False)
        )
        report.kept = {
            "signed_agreements": await _count(
                db,
                select(func.count())
                .select_from(Agreement)
                .where(Agreement.case_id.in_(case_ids), Agreement.signed_pdf.is_not(None)),
            ),
            "confirmed_minutes": await _count(
                db,
                select(func.count())
                .select_from(MinutesVersion)
                .where(
                    MinutesVersion.meeting_id.in_(meetings),
                    MinutesVersion.confirmed_at.is_not(None),
                ),
            ),
        }
    # Their own words elsewhere (as a party to others' cases, too).
    await db.execute(
        update(AgreementComment).where(AgreementComment.author_id == user.id).values(body="")
    )
    await db.execute(update(Survey).where(Survey.user_id == user.id).values(comment=""))
    sent = await db.execute(
        update(MeetingMessage)
        .where(MeetingMessage.sender_id == user.id, MeetingMessage.body != "")
        .values(body="")
        .execution_options(synchronize_session=False)
    )
    report.messages += _rows(sent)

    # Notifications to the person, and to anyone about the person's cases (they name them).
    links = [Notification.user_id == user.id]
    for case_id in case_ids:  # /cases/12 and what is under it, never /cases/123
        page = f"/cases/{case_id}"
        links += [
            Notification.link == page,
            *(Notification.link.like(f"{page}{mark}%") for mark in ("/", "?", "#")),
        ]
    gone = await db.execute(delete(Notification).where(or_(*links)))
    report.notifications = _rows(gone)

    # The account.
    await db.execute(delete(UserSession).where(UserSession.user_id == user.id))
    await db.execute(delete(PhoneCode).where(PhoneCode.user_id == user.id))
    user.display_name = ERASED_NAME
    user.phone_enc = user.phone_index = None
    user.email_enc = None
    # The table needs some login key: a random one that no login can produce.
    user.email_index = "erased:" + secrets.token_hex(24)
    user.password_hash = "!erased"  # noqa: S105 - no password hashes to this
    user.is_active = False
    user.phone_verified_at = None
    await forget_person(db, user.id)
    record(
        db,
        actor_id,
        "person.erased",
        "user",
        user.id,
        reason=reason,
        cases=report.cases,
        materials=report.materials,
    )
    await db.flush()
    still_used = set(
        await db.scalars(
            select(CaseMaterial.sha256).where(
                CaseMaterial.sha256.in_(erased_files), CaseMaterial.erased_at.is_(None)
            )
        )
    )
    await db.commit()
    for sha256 in sorted(erased_files - still_used):
        if store.delete(sha256):
            report.files_deleted += 1
    logger.info(
        "erased person %d (%s): %d cases, %d evidence items, %d files",
        user.id,
        reason,
        report.cases,
        report.materials,
        report.files_deleted,
    )
    return report


def _rows(result: Any) -> int:
    return int(result.rowcount or 0)


async def _count(db: AsyncSession, query: Any) -> int:
    return int(await db.scalar(query) or 0)


# -- export -----------------------------------------------------------------------------------


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


async def export_person(
    db: AsyncSession, vault: DataVault, user: User
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The person's own data as one JSON-ready dict, and the files they uploaded as
    (name in the archive, SHA-256) pairs."""
    from portal.accounts.service import contact_of, identity_of
    from portal.cases.service import claimant_of
    from portal.evidence import policy as evidence_policy
    from portal.policy import Policy

    # Only the evidence items the person may see on the case page (not the firm's items kept
    # for the mediator), by the same rules.
    policy = Policy([evidence_policy.RULES])
    who = identity_of(user)
    contact = contact_of(vault, user)
    data: dict[str, Any] = {
        "format": "jiefen-person-export/1",
        "exported_at": utcnow().isoformat(),
        "account": {
            "id": user.id,
            "role": user.role,
            "name": user.display_name,
            "phone": contact.phone,
            "email": contact.email,
            "locale": user.locale,
            "created_at": _iso(user.created_at),
        },
        "cases": [],
        "messages": [],
    }
    files: list[tuple[str, str]] = []
    for case in await db.scalars(select(Case).where(Case.filer_id == user.id).order_by(Case.id)):
        claimant = claimant_of(vault, case)
        events = await db.scalars(
            select(CaseEvent)
            .where(CaseEvent.case_id == case.id, CaseEvent.visibility.in_(("all", "claimant")))
            .order_by(CaseEvent.id)
        )
        materials = [
            m
            for m in await db.scalars(
                select(CaseMaterial)
                .where(CaseMaterial.case_id == case.id, CaseMaterial.erased_at.is_(None))
                .order_by(CaseMaterial.id)
            )
            if policy.permits(who, "view", evidence_policy.Item(m, case))
        ]
        for material in materials:
            if material.uploaded_by_id == user.id:
                files.append(
                    (
                        f"files/{case.number or case.id}/{material.id}-{material.filename}",
                        material.sha256,
                    )
                )
        data["cases"].append(
            {
                "number": case.number,
                "status": case.status,
                "category": case.category,
                "respondent": case.respondent_name,
                "amount_fen": case.amount_fen,
                "outcomes": case.outcomes,
                "facts": case.facts,
                "incident_date": _iso(case.incident_date),
                "filed_as": case.filed_as,
                "claimant": {
                    "name": claimant.name,
                    "id_number": claimant.id_number,
                    "phone": claimant.phone,
                    "agent_name": claimant.agent_name,
                    "agent_phone": claimant.agent_phone,
                },
                "created_at": _iso(case.created_at),
                "submitted_at": _iso(case.submitted_at),
                "closed_at": _iso(case.closed_at),
                "timeline": [
                    {
                        "kind": e.kind,
                        "from": e.from_status,
                        "to": e.to_status,
                        "note": e.body,
                        "at": _iso(e.created_at),
                    }
                    for e in events
                ],
                "materials": [
                    {
                        "id": m.id,
                        "filename": m.filename,
                        "title": m.title,
                        "size": m.size,
                        "sha256": m.sha256,
                        "uploaded_by_you": m.uploaded_by_id == user.id,
                        "at": _iso(m.created_at),
                    }
                    for m in materials
                ],
            }
        )
    for message in await db.scalars(
        select(MeetingMessage)
        .where(MeetingMessage.sender_id == user.id)
        .order_by(MeetingMessage.id)
    ):
        data["messages"].append(
            {
                "meeting": message.meeting_id,
                "room": message.room,
                "text": message.body,
                "at": _iso(message.created_at),
            }
        )
    return data, files


def write_export(
    target: BinaryIO, data: dict[str, Any], files: list[tuple[str, str]], store: BlobStore
) -> None:
    """The export as a ZIP file: ``person.json`` and the files, decrypted as they are copied."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("person.json", json.dumps(data, ensure_ascii=False, indent=1))
        for name, sha256 in files:
            with store.open(sha256) as source, archive.open(name, "w") as sink:
                while chunk := source.read(1024 * 1024):
                    sink.write(chunk)
