"""Data retention: how long each kind of record is kept, and the sweep that removes the rest.

- login sessions: until idle (``SESSION_IDLE_MINUTES``) or too old
  (``SESSION_ABSOLUTE_HOURS``), then deleted;
- phone codes: one day past their expiry; login throttles: one day past the last failure or
  block; then deleted;
- notifications (in-app, email and SMS with their delivery receipts) and invitations that
  expired, were used or revoked: ``NOTIFICATION_RETENTION_DAYS`` (730), then deleted;
- a consumer's personal data: ``PERSON_RETENTION_DAYS`` (1825) after their last case was closed
  (or rejected, withdrawn) and their last login, then erased
  (:func:`portal.accounts.erasure.erase_person`, "retention");
- the audit trail: ``AUDIT_RETENTION_DAYS`` (365, at least 183), then deleted whole digests
  (:mod:`portal.audit.digest`, its own loop);
- cases' figures, the evidence log and signed agreements: for good (the committee's records).

Notifications still waiting for delivery are never deleted. ``PERSON_RETENTION_DAYS=0`` turns
automatic erasure off (erasure on request stays, ``jiefen erase-person``). Staff and firm
accounts are never erased by age: administrators deactivate them.

:class:`RetentionLoop` sweeps every six hours in each process (PostgreSQL: one at a time under
an advisory lock; SQLite: its write lock); ``jiefen retention [--dry-run]`` sweeps now and says
what it removed. Each sweep that removed anything is an audit event with the counts.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.erasure import ErasureRefused, erase_person
from portal.accounts.models import Invitation, LoginThrottle, PhoneCode, User, UserSession
from portal.audit.service import record
from portal.background import BackgroundLoop
from portal.cases.lifecycle import FINAL_STATUSES, Status
from portal.cases.models import Case
from portal.db import utcnow
from portal.evidence.blobs import BlobStore
from portal.notify.models import Notification
from portal.policy import Role
from portal.settings import Settings

logger = logging.getLogger("jiefen.retention")
SWEEP_LOCK = 0x4A46_5245  # "JFRE": one sweeper at a time on PostgreSQL
# A case in one of these has ended for good; until then its claimant's data is needed (a
# failed mediation's case file may still go to court).
ENDED = FINAL_STATUSES | {Status.DRAFT}
ERASED_HASH = "!erased"  # the password hash erase_person leaves
PERSONS_PER_SWEEP = 200  # erasures in one sweep; the next sweep takes the rest


@dataclass
class RetentionReport:
    sessions: int = 0
    phone_codes: int = 0
    throttles: int = 0
    invitations: int = 0
    notifications: int = 0
    persons_erased: list[int] = field(default_factory=list)
    persons_due: list[int] = field(default_factory=list)  # a dry run lists them instead
    persons_refused: list[int] = field(default_factory=list)

    @property
    def removed(self) -> int:
        counts = (self.sessions, self.phone_codes, self.throttles, self.invitations)
        return sum(counts) + self.notifications + len(self.persons_erased)


async def persons_due(
    db: AsyncSession, days: int, now: datetime, *, only: int | None = None
) -> list[int]:
    """Consumers whose every case ended, and who last logged in (or, never having logged in
    since this was recorded, were created) more than ``days`` ago, and whose last case ended
    that long ago; not yet erased."""
    cutoff = now - timedelta(days=days)
    not_ended = select(Case.id).where(
        Case.filer_id == User.id, Case.status.not_in([s.value for s in ENDED])
    )
    recent_end = select(Case.id).where(
        Case.filer_id == User.id,
        func.coalesce(Case.closed_at, Case.updated_at) > cutoff,
    )
    query = (
        select(User.id)
        .where(
            User.role == Role.CONSUMER.value,
            User.password_hash != ERASED_HASH,
            User.created_at < cutoff,
            or_(User.last_login_at.is_(None), User.last_login_at < cutoff),
            ~not_ended.exists(),
            ~recent_end.exists(),
        )
        .order_by(User.id)
        .limit(PERSONS_PER_SWEEP)
    )
    if only is not None:
        query = query.where(User.id == only)
    return list(await db.scalars(query))


async def sweep(
    db: AsyncSession,
    store: BlobStore,
    settings: Settings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> RetentionReport:
    """Remove what is past its retention period (see the module's table); commits unless
    ``dry_run``, which counts and lists the same and changes nothing."""
    now = now or utcnow()
    report = RetentionReport()
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK})
    kept = timedelta(days=settings.notification_retention_days)
    targets = [
        (
            "sessions",
            UserSession,
            or_(
                UserSession.last_seen_at < now - timedelta(minutes=settings.session_idle_minutes),
                UserSession.created_at < now - timedelta(hours=settings.session_absolute_hours),
            ),
        ),
        ("phone_codes", PhoneCode, PhoneCode.expires_at < now - timedelta(days=1)),
        (
            "throttles",
            LoginThrottle,
            and_(
                LoginThrottle.last_failure_at < now - timedelta(days=1),
                or_(
                    LoginThrottle.blocked_until.is_(None),
                    LoginThrottle.blocked_until < now - timedelta(days=1),
                ),
            ),
        ),
        (
            "invitations",
            Invitation,
            func.coalesce(Invitation.accepted_at, Invitation.revoked_at, Invitation.expires_at)
            < now - kept,
        ),
        (
            "notifications",
            Notification,
            and_(Notification.status != "pending", Notification.created_at < now - kept),
        ),
    ]
    for name, model, condition in targets:
        if dry_run:
            count = await db.scalar(select(func.count()).select_from(model).where(condition))
        else:
            result = await db.execute(
                delete(model).where(condition).execution_options(synchronize_session=False)
            )
            count = result.rowcount  # type: ignore[attr-defined]
        setattr(report, name, int(count or 0))
    if settings.person_retention_days:
        report.persons_due = await persons_due(db, settings.person_retention_days, now)
    if dry_run:
        await db.rollback()
        return report
    if report.removed or report.persons_due:
        record(db, None, "retention.swept", "retention", 0, **_counts(report))
    await db.commit()
    for user_id in report.persons_due:
        try:
            user = await _claim(db, user_id, settings.person_retention_days, now)
            if user is None:  # another process erased them, or they came back meanwhile
                await db.rollback()
                continue
            await erase_person(db, store, user, reason="retention")
        except ErasureRefused:  # a case was filed meanwhile
            await db.rollback()
            report.persons_refused.append(user_id)
            continue
        except DBAPIError:  # e.g. a deadlock with a request touching the same rows
            await db.rollback()
            logger.warning("retention: erasing user %d failed; the next sweep tries again", user_id)
            continue
        report.persons_erased.append(user_id)
    if report.removed:
        logger.info("retention sweep: %s", _counts(report))
    return report


async def _claim(db: AsyncSession, user_id: int, days: int, now: datetime) -> User | None:
    """The user, if still due, in a transaction that holds the sweep's lock until the erasure
    commits (PostgreSQL: the advisory lock again; SQLite: its write lock, taken by a no-op
    write), so that two processes never erase the same person at once."""
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SWEEP_LOCK})
    else:
        await db.execute(
            update(User)
            .where(User.id == user_id)
            .values(id=User.id)
            .execution_options(synchronize_session=False)
        )
    if user_id not in await persons_due(db, days, now, only=user_id):
        return None
    return await db.get(User, user_id, populate_existing=True)


def _counts(report: RetentionReport) -> dict[str, int]:
    counts = asdict(report)
    for name in ("persons_erased", "persons_due", "persons_refused"):
        counts[name] = len(counts[name])
    return counts


class RetentionLoop(BackgroundLoop):
    """Sweeps every ``interval`` seconds (six hours); the first sweep comes a minute after
    start, so a restart never waits on it."""

    name = "jiefen-retention"
    log = logger
    first_delay = 60.0

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        store: BlobStore,
        settings: Settings,
        interval: float = 6 * 3600.0,
    ) -> None:
        super().__init__(interval)
        self.sessionmaker = sessionmaker
        self.store = store
        self.settings = settings

    async def run_once(self) -> bool:
        async with self.sessionmaker() as db:
            report = await sweep(db, self.store, self.settings)
        return len(report.persons_erased) >= PERSONS_PER_SWEEP
