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
