"""The audit trail in the evidence log: digests, their verification and retention.

Every event not yet digested is hashed, in id order and one canonical JSON line each, into a
digest chained to the previous one (``sha256(prev || "\\n" || lines)``); the digest's figures
become an ``audit.digest`` leaf of the evidence log, which the signed checkpoints cover. Anyone
who later deletes, edits or moves an audit event makes :func:`verify_digests` fail, and the
leaf shows what the trail was when it was digested. Events are kept for the retention period
(at least six months) and then deleted; their digest stays, marked purged.

Several processes may digest at once: a digest claims its events with a conditional update
and gives up (rolls back) if another process claimed any of them first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.audit.models import AuditDigest, AuditEvent
from portal.background import BackgroundLoop
from portal.db import utcnow
from portal.evidence.log import stage_leaf
from portal.evidence.models import LogLeaf
from portal.evidence.verify.leaf import AUDIT_DIGEST, LeafError, decode_leaf

logger = logging.getLogger("jiefen.audit")
BATCH = 1000
MIN_RETENTION_DAYS = 183  # six months: the least the trail is kept


def event_line(event: AuditEvent) -> str:
    """One event as a canonical JSON line (what its digest hashes)."""
    return json.dumps(
        [
            event.id,
            event.actor_id,
            event.action,
            event.object_type,
            event.object_id,
            event.detail or {},
            event.created_at.isoformat(),
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def digest_of(prev: str | None, events: list[AuditEvent]) -> str:
    digest = hashlib.sha256((prev or "").encode())
    for event in events:
        digest.update(b"\n" + event_line(event).encode())
    return digest.hexdigest()


async def digest_pending(db: AsyncSession, limit: int = BATCH) -> AuditDigest | None:
    """Digest up to ``limit`` undigested events and stage their leaf; commits. None when there
    was nothing to digest or another process got there first."""
    try:
        events = list(
            await db.scalars(
                select(AuditEvent)
                .where(AuditEvent.digest_id.is_(None))
                .order_by(AuditEvent.id)
                .limit(limit)
            )
        )
        if not events:
            await db.rollback()
            return None
        prev = await db.scalar(select(AuditDigest).order_by(AuditDigest.id.desc()).limit(1))
        prev_sha = prev.sha256 if prev else None
        digest = AuditDigest(
            first_event_id=events[0].id,
            last_event_id=events[-1].id,
            count=len(events),
            sha256=digest_of(prev_sha, events),
            prev_sha256=prev_sha,
        )
        db.add(digest)
        await db.flush()
        ids = [e.id for e in events]
        claimed = await db.execute(
            update(AuditEvent)
            .where(AuditEvent.id.in_(ids), AuditEvent.digest_id.is_(None))
            .values(digest_id=digest.id)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != len(ids):  # type: ignore[attr-defined]
            await db.rollback()
            return None
        leaf = await stage_leaf(
            db,
            AUDIT_DIGEST,
            {
                "digest": digest.id,
                "first": digest.first_event_id,
                "last": digest.last_event_id,
                "count": digest.count,
                "sha256": digest.sha256,
                "prev": prev_sha,
            },
        )
        digest.leaf_id = leaf.id
        await db.commit()
    except DBAPIError:  # a concurrent digest holds the write (SQLite) or won the race
        await db.rollback()
        logger.info("audit digest deferred: another process is digesting", exc_info=True)
        return None
    return digest


async def digest_all(db: AsyncSession, limit: int = BATCH) -> int:
    """Digest until nothing is left; the number of digests made (this caller's). When another
    process digests at the same moment, wait for it and go on, so nothing is left on return."""
    made = tries = 0
    while True:
        if await digest_pending(db, limit) is not None:
            made += 1
            continue
        left = await db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.digest_id.is_(None))
        )
        await db.rollback()
        if not left or tries >= 100:
            return made
        tries += 1
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    digests: int
    events: int
    purged: int
    undigested: int
    problem: str = ""


async def verify_digests(db: AsyncSession) -> AuditCheck:
    """Re-hash every kept event into its digest, follow the chain and compare each digest with
    its evidence-log leaf (the leaf itself is checked by the evidence log's verification)."""
    digests = events = purged = 0
    prev_sha: str | None = None
    for digest in await db.scalars(select(AuditDigest).order_by(AuditDigest.id)):
        digests += 1
        where = f"audit digest {digest.id}"
        if digest.prev_sha256 != prev_sha:
            return AuditCheck(False, digests, events, purged, 0, f"{where}: the chain is broken")
        leaf = await db.get(LogLeaf, digest.leaf_id) if digest.leaf_id else None
        if leaf is None:
            return AuditCheck(False, digests, events, purged, 0, f"{where}: its leaf is missing")
        try:
            body = decode_leaf(bytes(leaf.data)).body
        except LeafError as exc:
            return AuditCheck(False, digests, events, purged, 0, f"{where}: {exc}")
        figures = {
            "digest": digest.id,
            "first": digest.first_event_id,
            "last": digest.last_event_id,
            "count": digest.count,
            "sha256": digest.sha256,
            "prev": digest.prev_sha256,
        }
        if dict(body) != figures:
            return AuditCheck(
                False, digests, events, purged, 0, f"{where} differs from its evidence-log leaf"
            )
        if digest.purged_at is not None:
            purged += digest.count
        else:
            covered = list(
                await db.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.digest_id == digest.id)
                    .order_by(AuditEvent.id)
                )
            )
            events += len(covered)
            if len(covered) != digest.count or digest_of(prev_sha, covered) != digest.sha256:
                return AuditCheck(
                    False,
                    digests,
                    events,
                    purged,
                    0,
                    f"{where}: events {digest.first_event_id}-{digest.last_event_id} were "
                    "changed, removed or added after they were digested",
                )
        prev_sha = digest.sha256
    undigested = await db.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.digest_id.is_(None))
    )
    return AuditCheck(True, digests, events, purged, int(undigested or 0))


async def purge_expired(db: AsyncSession, retention_days: int) -> int:
    """Delete digested events older than the retention period (never under six months) and
    mark their digests purged; commits. The number of events deleted."""
    days = max(retention_days, MIN_RETENTION_DAYS)
    cutoff = utcnow() - timedelta(days=days)
    # Whole digests only, so that every digest is either fully kept or marked purged.
    expired = list(
        await db.scalars(
            select(AuditDigest.id)
            .where(AuditDigest.purged_at.is_(None))
            .where(
                ~select(AuditEvent.id)
                .where(AuditEvent.digest_id == AuditDigest.id, AuditEvent.created_at >= cutoff)
                .exists()
            )
        )
    )
    if not expired:
        return 0
    deleted = await db.execute(delete(AuditEvent).where(AuditEvent.digest_id.in_(expired)))
    await db.execute(
        update(AuditDigest).where(AuditDigest.id.in_(expired)).values(purged_at=utcnow())
    )
    await db.commit()
    count = int(deleted.rowcount or 0)  # type: ignore[attr-defined]
    logger.info("audit: %d events past %d days deleted (%d digests)", count, days, len(expired))
    return count


class AuditDigestLoop(BackgroundLoop):
    """Digests the trail every ``interval`` seconds and deletes what is past retention."""

    name = "jiefen-audit"
    log = logger
    first_delay = 60.0  # a start-up (and a short test) is not interrupted by the trail's digest

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        retention_days: int,
        interval: float = 300.0,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.retention_days = retention_days

    async def run_once(self) -> bool:
        async with self.sessionmaker() as db:
            more = await digest_pending(db) is not None
            if not more:
                await purge_expired(db, self.retention_days)
            return more
