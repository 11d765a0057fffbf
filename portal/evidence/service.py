"""Evidence: what goes into the log for a case, and the stores the app uses.

Leaves never hold personal data: people appear as commitments (HMAC with a secret kept per
person, see portal.evidence.verify.leaf), file names, titles and descriptions only through the
metadata digest, free text only as a digest.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from portal.crypto import derive_key
from portal.evidence.blobs import BlobStore, parse_master_keys
from portal.evidence.log import LogKey, TsaConfig, load_log_key, stage_leaf
from portal.evidence.models import LogLeaf, PersonSecret
from portal.evidence.verify.leaf import (
    CASE_TRANSITION,
    EVIDENCE_ADDED,
    MINUTES_CONFIRMED,
    JsonValue,
    evidence_body,
    format_time,
    metadata_digest,
    minutes_body,
    new_person_secret,
    person_commitment,
)

if TYPE_CHECKING:
    from datetime import datetime

    from portal.cases.models import Case, CaseEvent, CaseMaterial
    from portal.settings import Settings

CASE_RESPONSE = "case.response"


# -- configuration ----------------------------------------------------------------------------


def blob_store(settings: Settings) -> BlobStore:
    """The blob store under STORAGE_DIR with the configured master keys (or, when none are
    configured, one derived from DATA_KEY, for tests and development)."""
    if settings.blob_master_keys:
        keys = parse_master_keys(settings.blob_master_keys)
        current = settings.current_blob_key_id
    else:
        keys = {"derived": derive_key(settings.data_key, "jiefen/blob-master-key")}
        current = "derived"
    return BlobStore(settings.storage_dir, keys, current)


def log_key(settings: Settings) -> LogKey:
    return load_log_key(
        settings.var_dir / "log_signing_key", settings.log_name, settings.log_signing_key
    )


def tsa_config(settings: Settings) -> TsaConfig | None:
    return TsaConfig.from_settings(settings.tsa_url, settings.tsa_ca_file)


# -- people -----------------------------------------------------------------------------------


async def person_secret(db: AsyncSession, user_id: int) -> bytes:
    """The person's commitment secret, created on first use (race-free on both databases)."""
    found = await db.scalar(select(PersonSecret.secret).where(PersonSecret.user_id == user_id))
    if found is not None:
        return bytes(found)
    make = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    await db.execute(
        make(PersonSecret)
        .values(user_id=user_id, secret=new_person_secret())
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    found = await db.scalar(select(PersonSecret.secret).where(PersonSecret.user_id == user_id))
    assert found is not None
    return bytes(found)


async def commitment(db: AsyncSession, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return person_commitment(await person_secret(db, user_id), str(user_id))


async def forget_person(db: AsyncSession, user_id: int) -> bool:
    """Erasure: delete the person's secret; their commitments can no longer be linked to them,
    and every leaf, proof and receipt stays valid. The caller commits."""
    result = await db.execute(delete(PersonSecret).where(PersonSecret.user_id == user_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


# -- leaves -----------------------------------------------------------------------------------


def text_digest(text: str) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text else None


def material_metadata(material: CaseMaterial) -> dict[str, JsonValue]:
    """What the metadata digest of an evidence leaf covers (recomputable from the row)."""
    return {
        "item": material.id,
        "filename": material.filename,
        "content_type": material.content_type,
        "kind": material.kind,
        "title": material.title,
        "description": material.description,
        "party": material.party,
        "visibility": material.visibility,
        "uploaded_at": format_time(material.created_at),
        "salt": material.salt,
    }


def material_body(material: CaseMaterial, uploader: str | None) -> dict[str, JsonValue]:
    return evidence_body(
        sha256=material.sha256,
        size=material.size,
        metadata=metadata_digest(material_metadata(material)),
        uploader=uploader or "0" * 64,
        item=material.id,
    )


def event_body(event: CaseEvent, actor: str | None) -> dict[str, JsonValue]:
    data: dict[str, Any] = event.data or {}
    body: dict[str, JsonValue] = {
        "event": event.id,
        "kind": event.kind,
        "from": event.from_status,
        "to": event.to_status,
        "actor": actor,
        "note": text_digest(event.body),
    }
    if event.kind == "transition":
        body["transition"] = str(data.get("transition", ""))
    if event.kind == "response":
        body["response"] = str(data.get("response", ""))
        offer = data.get("offer_fen")
        body["offer_fen"] = offer if isinstance(offer, int) else None
    return body


def event_type(event: CaseEvent) -> str:
    return CASE_RESPONSE if event.kind == "response" else CASE_TRANSITION


async def log_material(db: AsyncSession, case: Case, material: CaseMaterial) -> LogLeaf:
    """Stage the evidence.added leaf of a material of a numbered case (same transaction)."""
    await db.flush()
    body = material_body(material, await commitment(db, material.uploaded_by_id))
    leaf = await stage_leaf(
        db,
        EVIDENCE_ADDED,
        body,
        case_id=case.id,
        case_number=case.number,
        time=material.created_at,
    )
    material.leaf_id = leaf.id
    return leaf


async def log_event(db: AsyncSession, case: Case, event: CaseEvent) -> LogLeaf:
    """Stage the leaf of a timeline event (a transition, a firm's response)."""
    await db.flush()
    body = event_body(event, await commitment(db, event.actor_id))
    return await stage_leaf(
        db,
        event_type(event),
        body,
        case_id=case.id,
        case_number=case.number,
        time=event.created_at,
    )


async def log_minutes(
    db: AsyncSession,
    case: Case,
    *,
    meeting_id: int,
    version: int,
    text: str,
    mediator_id: int,
    confirmations: list[tuple[str, int, datetime]],
    time: datetime,
) -> LogLeaf:
    """Stage the minutes.confirmed leaf of a session's minutes: the SHA-256 and size of the
    text's UTF-8 bytes (the file a court checks with the receipt), the session, the version,
    and commitments for the mediator and for each side's confirmer, (side, user id, when)."""
    data = text.encode("utf-8")
    body = minutes_body(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        meeting=meeting_id,
        case_id=case.id,
        version=version,
        mediator=await commitment(db, mediator_id) or "0" * 64,
        confirmations=[
            {
                "side": side,
                "person": await commitment(db, user_id) or "0" * 64,
                "time": format_time(moment),
            }
            for side, user_id, moment in confirmations
        ],
    )
    return await stage_leaf(
        db, MINUTES_CONFIRMED, body, case_id=case.id, case_number=case.number, time=time
    )


async def backfill_leaves(db: AsyncSession) -> int:
    """Materials of numbered cases uploaded before the log existed get their leaves (once)."""
    from portal.cases.models import Case, CaseMaterial

    rows = (
        await db.execute(
            select(CaseMaterial, Case)
            .join(Case, Case.id == CaseMaterial.case_id)
            .where(CaseMaterial.leaf_id.is_(None), Case.number.is_not(None))
            .order_by(CaseMaterial.id)
        )
    ).all()
    for material, case in rows:
        await log_material(db, case, material)
    await db.commit()
    return len(rows)
