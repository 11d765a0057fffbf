"""Record an audit event inside the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from portal.audit.models import AuditEvent


def record(
    db: AsyncSession,
    actor_id: int | None,
    action: str,
    object_type: str,
    object_id: int | str,
    **detail: Any,
) -> AuditEvent:
    event = AuditEvent(
        actor_id=actor_id,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        detail=detail,
    )
    db.add(event)
    return event


PERSONAL_DATA_VIEWED = "personal_data.viewed"


def personal_data_viewed(
    db: AsyncSession,
    viewer_id: int | None,
    case_id: int,
    owner_id: int | None,
    fields: list[str],
    via: str,
) -> AuditEvent | None:
    """Someone saw a case's identity data (the field names, never the values). A person's
    own data is not recorded."""
    if viewer_id is None or viewer_id == owner_id:
        return None
    return record(db, viewer_id, PERSONAL_DATA_VIEWED, "case", case_id, fields=fields, via=via)
