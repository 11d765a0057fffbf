"""When mediation fails: the record of undisputed facts (无争议事实记载) and the one-click transfer
to litigation (一键转诉) with the case file bundle for the court.

The mediator writes the record of the facts both sides accept; each side confirms it (a change
clears the confirmations). Transfer needs a failed case: it marks the case transferred, tells
the parties what to do next, and the bundle (a zip) can be downloaded by them, the mediator and
the committee's staff: an index PDF listing every file with its SHA-256, the claims, the
timeline, the confirmed minutes of each session and every evidence item both parties may see,
each with its evidence-log receipt, and the record of undisputed facts.
"""

from __future__ import annotations

import functools
import gettext
import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.agreements import service
from portal.agreements.judicial import Package, _zip
from portal.agreements.models import UndisputedFacts
from portal.agreements.pdf import AgreementDocument
from portal.agreements.policy import LitigationAccess
from portal.agreements.terms import yuan
from portal.audit.service import record
from portal.cases import service as cases
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseEvent, CaseMaterial
from portal.cases.service import OUTCOMES, TZ
from portal.crypto import DataVault
from portal.db import utcnow
from portal.errors import DomainError, NotFound
from portal.evidence import log
from portal.evidence.blobs import BlobStore
from portal.evidence.log import LogKey
from portal.evidence.verify.receipt import dump_receipt
from portal.i18n import _l, load_catalogues
from portal.meetings.minutes_models import MinutesState, MinutesVersion
from portal.meetings.models import Meeting
from portal.notify.service import notify
from portal.orgs.categories import CATEGORIES

MAX_FACTS = 10_000
WRITABLE = frozenset({Status.IN_MEDIATION, Status.FAILED})
BUNDLED = frozenset({Status.FAILED, Status.TRANSFERRED, Status.CLOSED})


async def access(db: AsyncSession, case_id: int) -> LitigationAccess:
    case = await db.get(Case, case_id)
    if case is None:
        raise NotFound
    facts = await db.scalar(select(UndisputedFacts).where(UndisputedFacts.case_id == case_id))
    return LitigationAccess(case, facts)


def confirmed(facts: UndisputedFacts | None, case: Case) -> bool:
    if facts is None:
        return False
    sides = {"claimant": facts.claimant_confirmed_at, "respondent": facts.respondent_confirmed_at}
    return all(sides[s] is not None for s in service.required_sides(case))


async def write_facts(
    db: AsyncSession, found: LitigationAccess, actor: User, text: str
) -> UndisputedFacts:
    case = found.case
    if Status(case.status) not in WRITABLE:
        raise DomainError(_l("The undisputed facts are recorded while mediation is under way."))
    text = text.replace("\r\n", "\n").strip()
    if not text:
        raise DomainError(_l("Write the facts both sides accept."), field="text")
    if len(text) > MAX_FACTS:
        raise DomainError(_l("Use at most {count} characters.", count=MAX_FACTS), field="text")
    facts = found.facts
    if facts is None:
        facts = UndisputedFacts(case_id=case.id, text=text, author_id=actor.id)
        db.add(facts)
        try:
            await db.flush()
        except IntegrityError:  # written meanwhile (a second click)
            await db.rollback()
            raise DomainError(
                _l("The record was changed meanwhile. Read it again, then confirm.")
            ) from None
    elif facts.text == text:
        raise DomainError(_l("Nothing has changed since the last version."))
    else:
        facts.text, facts.revision, facts.author_id = text, facts.revision + 1, actor.id
        facts.claimant_confirmed_at = facts.respondent_confirmed_at = None
    facts.updated_at = utcnow()
    service._timeline(db, case, actor.id, "facts_written")
    record(db, actor.id, "case.facts_written", "case", case.id)
    number = case.number or str(case.id)
    await service._tell(
        db,
        case,
        _l("Case {number}: confirm the undisputed facts", number=number),
        _l(
            "The mediator recorded the facts both sides accept in case {number}. Read them and "
            "confirm them if they are right.",
            number=number,
        ),
        skip=actor.id,
    )
    await db.commit()
    return facts


async def confirm_facts(
    db: AsyncSession, found: LitigationAccess, actor: User, revision: int
) -> UndisputedFacts:
    facts = found.facts
    if facts is None:
        raise DomainError(_l("There are no undisputed facts to confirm yet."))
    side = service.side_of(found.case, actor)
    if side is None or side not in service.required_sides(found.case):
        raise DomainError(_l("You are not a party to this case."))
    if getattr(facts, f"{side}_confirmed_at") is not None and revision == facts.revision:
        raise DomainError(_l("Your side has already confirmed this record."))
    column = getattr(UndisputedFacts, f"{side}_confirmed_at")
    # Only the revision the party read, and only once: a change saved meanwhile is not
    # confirmed by a click made on the text before it.
    done = await db.execute(
        update(UndisputedFacts)
        .where(
            UndisputedFacts.id == facts.id,
            UndisputedFacts.revision == revision,
            column.is_(None),
        )
        .values({column: utcnow()})
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", done).rowcount != 1:
        await db.rollback()
        raise DomainError(_l("The record was changed meanwhile. Read it again, then confirm."))
    await db.refresh(facts)
    service._timeline(db, found.case, actor.id, "facts_confirmed", side=side)
    record(db, actor.id, "case.facts_confirmed", "case", found.case.id, side=side)
    await db.commit()
    return facts


async def transfer(db: AsyncSession, found: LitigationAccess, actor: User) -> None:
    """Mark a failed case transferred to litigation and tell the parties their next steps."""
    case = found.case
    # Taking the row only while the case is failed: a second click finds it transferred.
    taken = await db.execute(
        update(Case)
        .where(Case.id == case.id, Case.status == Status.FAILED.value)
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", taken).rowcount != 1:
        raise DomainError(_l("Only a case whose mediation failed can be transferred to court."))
    await db.refresh(case)
    await cases.transfer_to_litigation(db, case, actor)
    number = case.number or str(case.id)
    for user_id in await service._people(db, case):
        await notify(
            db,
            user_id,
            _l("Case {number}: transferred to litigation", number=number),
            _l(
                "Mediation of case {number} did not settle it, and it has been transferred to "
                "litigation. Download the case file from the case page: it holds the claims, "
                "the timeline, the minutes, the evidence with its receipts and the facts both "
                "sides accepted. To sue, file it with the competent people's court within the "
                "limitation period; the facts both sides confirmed need not be proved again.",
                number=number,
            ),
            link=f"/cases/{case.id}/litigation",
        )
    await db.commit()


def _local(moment: datetime) -> str:
    return moment.astimezone(TZ).strftime("%Y-%m-%d %H:%M")


@functools.cache
def _chinese() -> gettext.NullTranslations:
    """The Chinese catalogue: the file for the court is in Chinese, whoever makes it."""
    return load_catalogues().get("zh_CN") or gettext.NullTranslations()


_EVENT_WORDS = {
    "transition": "状态变更",
    "message": "留言",
    "response": "机构答复",
    "assignment": "指派调解员",
    "material": "提交材料",
    "meeting": "调解会议",
    "agreement": "调解协议",
    "request": "要求补充材料",
    "provided": "补充材料",
}


async def bundle(
    db: AsyncSession,
    vault: DataVault,
    blobs: BlobStore,
    found: LitigationAccess,
    log_key: LogKey,
    may_view: Callable[[CaseMaterial], bool],
) -> Package:
    """The case file for the court (see the module's docstring), as the one downloading it
    may have it: ``may_view`` (the evidence policy's "view" for that person) decides which
    evidence items go in, so the firm never gets the claimant's identity papers."""
    case = found.case
    if Status(case.status) not in BUNDLED:
        raise DomainError(_l("The case file is made once mediation has failed."))
    files: list[tuple[str, bytes]] = []
    claimant = cases.claimant_of(vault, case)
    zh = _chinese()
    category = CATEGORIES.get(case.category)
    asked = [OUTCOMES[o].render(zh) if o in OUTCOMES else o for o in case.outcomes]
    claims = [
        f"案号：{case.number}",
        f"纠纷类别：{category.render(zh) if category else case.category}",
        f"申请人：{claimant.name}",
        f"被申请人：{case.respondent_name}",
        f"请求金额：{yuan(case.amount_fen)} 元" if case.amount_fen else "请求金额：—",
        f"请求事项：{'、'.join(asked)}",
        "",
        "事实与理由：",
        case.facts,
    ]
    files.append(("01-claims.txt", "\n".join(claims).encode("utf-8")))
    events = await db.scalars(
        select(CaseEvent)
        .where(CaseEvent.case_id == case.id, CaseEvent.visibility == "all")
        .order_by(CaseEvent.id)
    )
    timeline = [
        f"{_local(e.created_at)}  {_EVENT_WORDS.get(e.kind, e.kind)}"
        + (f"  {e.from_status or ''}→{e.to_status}" if e.to_status else "")
        + (f"  {e.body}" if e.body and e.kind != "material" else "")
        for e in events
    ]
    files.append(("02-timeline.txt", "\n".join(timeline).encode("utf-8")))
    minutes = await db.execute(
        select(MinutesVersion)
        .join(Meeting, Meeting.id == MinutesVersion.meeting_id)
        .where(Meeting.case_id == case.id, MinutesVersion.state == MinutesState.CONFIRMED.value)
        .order_by(MinutesVersion.id)
    )
    for (version,) in minutes.all():
        stem = f"03-minutes/session-{version.meeting_id}-v{version.number}"
        files.append((f"{stem}.txt", version.text.encode("utf-8")))
        if version.leaf_id is not None:
            receipt = await log.make_leaf_receipt(db, version.leaf_id, log_key)
            files.append((f"{stem}.receipt.json", dump_receipt(receipt)))
    materials = await db.scalars(
        select(CaseMaterial)
        .where(CaseMaterial.case_id == case.id, CaseMaterial.visibility == "parties")
        .order_by(CaseMaterial.id)
    )
    for material in materials:
        if not may_view(material):
            continue
        stem = f"04-evidence/{material.id}-{material.filename}"
        files.append((stem, blobs.read_all(material.sha256)))
        if material.leaf_id is not None:
            receipt = await log.make_leaf_receipt(db, material.leaf_id, log_key)
            files.append((f"04-evidence/{material.id}.receipt.json", dump_receipt(receipt)))
    facts = found.facts
    if facts is not None:
        state = "双方均已确认" if confirmed(facts, case) else "尚未经双方确认"
        text = f"无争议事实记载（第 {facts.revision} 版，{state}）\n\n{facts.text}\n"
        files.append(("05-undisputed-facts.txt", text.encode("utf-8")))
    index = AgreementDocument(
        title="案件材料目录",
        case_number=case.number or f"#{case.id}",
        version=1,
        parties=[(p.label_zh, p.text) for p in await service.parties(db, vault, case)],
        preamble=(
            "本目录列出随附的全部文件及其 SHA-256 摘要；附有回执的文件可用 jiefen-verify 离线核验。"
        ),
        clauses=[
            f"{name}（{len(data)} 字节）\nSHA-256：{hashlib.sha256(data).hexdigest()}"
            for name, data in files
        ],
        closing="以上材料由解纷在线调解平台导出。",
        required_signers=[],
        created_at=utcnow().replace(microsecond=0),
        footer="解纷 · 在线调解平台",
    )
    files.insert(0, ("00-index.pdf", await service.render(index)))
    return Package(f"case-file-{case.number or case.id}.zip", _zip(files))
