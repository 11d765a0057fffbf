"""The evidence log's tables: leaves, stored tree hashes, the log head, signed checkpoints,
per-person commitment secrets and the record of full verifications."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal.db import Base, utcnow

# SQLite only makes an INTEGER PRIMARY KEY an auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class LogLeaf(Base):
    """One leaf: its canonical bytes (portal.evidence.verify.leaf) and RFC 9162 leaf hash.

    A leaf is written in the same transaction as what it records, with ``seq`` empty; the
    sequencer then gives it its index in the log (``seq``) and stores the tree hashes, many
    leaves per transaction. ``id`` is only the queue order.
    """

    __tablename__ = "evidence_leaves"
    __table_args__ = (Index("ix_evidence_leaves_case_id_id", "case_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LogHash(Base):
    """A stored tree hash at its tlog storage position (portal.evidence.tlog): about two per
    leaf, so that any proof reads a few rows by key and never scans the log."""

    __tablename__ = "evidence_hashes"

    position: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogHead(Base):
    """The log's current size and root; its one row (id 1) is the sequencer's lock."""

    __tablename__ = "evidence_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LogCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) and, once obtained, its RFC 3161 timestamp."""

    __tablename__ = "evidence_checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    tsa_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    tsa_time: Mapped[datetime | None] = mapped_column()
    tsa_name: Mapped[str] = mapped_column(String(300), default="")
    tsa_error: Mapped[str] = mapped_column(Text, default="")


class PersonSecret(Base):
    """The random secret behind a person's commitments in leaves. Deleting it (erasure) leaves
    the commitments unlinkable and every proof valid."""

    __tablename__ = "evidence_person_secrets"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    secret: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LogVerification(Base):
    """One full verification run (``jiefen evidence verify`` or the administrators' page)."""

    __tablename__ = "evidence_verifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    ok: Mapped[bool] = mapped_column(default=False)
    leaves: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoints: Mapped[int] = mapped_column(Integer, default=0)
    files: Mapped[int] = mapped_column(Integer, default=0)
    problem: Mapped[str] = mapped_column(Text, default="")
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
