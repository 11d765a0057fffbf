"""Full verification of the evidence log against everything it stands for.

:func:`verify_log` reads the log once, in index order, a page at a time, and checks

- every leaf: its stored hash is the hash of its bytes, its index follows the last one, its
  bytes are exactly what the stored records give now (the evidence item, timeline event or
  confirmed minutes it records, the case's number, the hash of the case's previous leaf, the
  time), so a changed row, a changed leaf or a broken chain is found;
- every evidence file: the blob exists, decrypts, and its content has the SHA-256 and size the
  leaf states (a flipped byte fails the chunk's authentication tag);
- the tree: the tree hashes are recomputed from the leaves (a stack along the right edge, no
  reads) and compared with the stored ones (which proofs are built from), and the root at each
  signed checkpoint's size with the checkpoint's root; each checkpoint's signature is checked
  with the log's key; the head's size and root at the end; a checkpoint beyond the end (a
  truncated log) is reported.

With ``workers`` > 1, worker processes check blocks of ``BLOCK`` leaves (whole subtrees) side by
side, each with its own connection, and this process joins what they found in log order: a
case's first leaf in a block names its previous leaf, which must be the case's last leaf in the
blocks before; the tree hashes above a block are the block's root joined with the earlier ones;
a checkpoint's root is the earlier blocks' roots joined with the block's right edge at its size.

It stops at the first problem and names the record, in English (the command line and the
administrators' page show it as it is; it is a technical message for the people who run the
portal).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, any_, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from portal.agreements.models import AgreementSignature, AgreementVersion
from portal.cases.models import Case, CaseEvent, CaseMaterial
from portal.db import utcnow
from portal.evidence import tlog
from portal.evidence.blobs import BlobError, BlobStore
from portal.evidence.log import HEAD_ID, LogKey
from portal.evidence.models import (
    LogCheckpoint,
    LogHash,
    LogHead,
    LogLeaf,
    LogVerification,
    PersonSecret,
)
from portal.evidence.service import event_body, event_type
from portal.evidence.verify.leaf import (
    AGREEMENT_SIGNATURE,
    EVIDENCE_ADDED,
    LEAF_PREFIX,
    MINUTES_CONFIRMED,
    MINUTES_SIDES,
    RECORDING,
    LeafError,
    decode_leaf,
    format_time,
    person_commitment,
)
from portal.evidence.verify.note import NoteError, open_checkpoint
from portal.evidence.verify.proofs import EMPTY_ROOT, leaf_hash, node_hash
from portal.meetings.minutes_models import MinutesResponse, MinutesVersion

logger = logging.getLogger(__name__)

PAGE = 5000
EVENT_TYPES = frozenset({"case.transition", "case.response"})
# The event id in a timeline leaf (body keys are sorted and "event" occurs only there).
_EVENT_ID = re.compile(rb'"event":(\d+)[,}]')


class _Erased:
    """A person whose secret was deleted: their commitment cannot be recomputed."""


_ERASED = _Erased()


LINK, CONTENT, TREE, CHECKPOINT = 1, 2, 3, 4


class Mismatch(Exception):
    """The first thing that does not match; the message names it. ``seq``, ``order``: where
    it was found, so that the first of several problems is the one reported, whichever process
    found it. A leaf's checks run in this order: its record, bytes and case (0), its link to the
    case's previous leaf (LINK), its content and file (CONTENT); then its tree hashes (TREE);
    then the checkpoint signed at the size it ends (CHECKPOINT)."""

    def __init__(self, message: str, *, seq: int = -1, order: int = 0) -> None:
        super().__init__(message)
        self.seq = seq
        self.order = order


@dataclass
class _Range:
    """What the check of one range of leaves found (picklable: a worker process sends it)."""

    start: int
    end: int
    problem: tuple[int, int, str] | None = None  # (seq, order, message): the first one
    # The first leaf of each case in the range (when it does not start the log): its index,
    # case, the previous leaf it names, and how it is named in a message.
    claims: list[tuple[int, int, str | None, str]] = field(default_factory=list)
    last: dict[int, str] = field(default_factory=dict)  # case -> its last leaf's hash (hex)
    stacks: dict[int, list[bytes]] = field(default_factory=dict)  # size -> right edge in range
    tail: list[bytes] = field(default_factory=list)  # stored hashes above the range
    files: set[str] = field(default_factory=set)


@dataclass
class Result:
    ok: bool
    leaves: int
    checkpoints: int
    files: int
    problem: str
    seconds: float


_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _json(obj: Any) -> bytes:
    """The canonical JSON of leaves (sorted keys, no spaces, UTF-8): orjson gives the same
    bytes as the json module for every string, integer below 2**64, true, false and null (a
    test checks every code point), ten times faster; anything else takes the json module."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return _dumps(obj).encode("utf-8")


def _canonical(obj: dict[str, Any]) -> bytes:
    return LEAF_PREFIX + _json(obj)


def _time(moment: datetime) -> str:
    """format_time, without its checks and strftime (a million calls in a full run)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # without "+00:00"


def _metadata_digest(metadata: dict[str, Any]) -> str:
    return hashlib.sha256(_json(metadata)).hexdigest()


class _Tree:
    """The right edge of the tree being rebuilt: yields the stored hashes of each leaf."""

    def __init__(self) -> None:
        self.stack: list[bytes] = []
        self.size = 0

    def push(self, record_hash: bytes) -> list[bytes]:
        out = [record_hash]
        h = record_hash
        n = self.size
        while n & 1:
            h = node_hash(self.stack.pop(), h)
            out.append(h)
            n >>= 1
        self.stack.append(h)
        self.size += 1
        return out


class _Verifier:
    def __init__(
        self,
        db: AsyncSession,
        store: BlobStore | None,
        key: LogKey | None,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.db = db
        self.store = store
        self.key = key
        self.progress = progress
        self.tree = _Tree()
        self.first = 0  # the first leaf of the range being checked
        self.conn: AsyncConnection  # run_range() opens it
        self.claims: list[tuple[int, int, str | None, str]] = []
        self.last_by_case: dict[int, str] = {}
        self.numbers: dict[int, str | None] = {}
        self.secrets: dict[int, bytes] = {}
        self.commitments: dict[int, str | _Erased] = {}
        self.files_checked: set[str] = set()
        # The confirmed minutes (version row, its confirmations) of the page, by leaf id.
        self.minutes: dict[int, tuple[Any, list[Any]]] = {}
        # The agreement signatures (with their version's number and PDF) of the page.
        self.signatures: dict[int, Any] = {}
        # The sealed recordings (row, files, consents) of the page, by leaf id.
        self.recordings: dict[int, tuple[Any, list[Any], list[Any]]] = {}

    def _commitment(self, user_id: int | None) -> str | _Erased | None:
        """The person's commitment now, or _ERASED when their secret was deleted."""
        if user_id is None:
            return None
        found = self.commitments.get(user_id)
        if found is None:
            secret = self.secrets.get(user_id)
            found = person_commitment(secret, str(user_id)) if secret else _ERASED
            self.commitments[user_id] = found
        return found

    async def load(self) -> None:
        """What every leaf check needs: the people's secrets and the cases' numbers."""
        self.secrets = {
            uid: bytes(s)
            for uid, s in (await self.db.execute(select(PersonSecret.user_id, PersonSecret.secret)))
        }
        self.numbers = dict((await self.db.execute(select(Case.id, Case.number))).all())

    async def run_range(self, start: int, end: int, size: int, sizes: Sequence[int]) -> _Range:
        """Check leaves ``start`` to ``end - 1`` (a block whose ``start`` is a multiple of its
        length, or the whole log) and the tree hashes stored for them; ``sizes``: the
        checkpoint sizes (and the head's) in (start, end], whose right edges are kept."""
        found = _Range(start, end)
        # Core rows, not the session's ORM machinery (a full run reads millions).
        self.conn = await self.db.connection()
        self.tree = _Tree()
        self.first = start
        self.claims = found.claims
        wanted = sorted({s for s in sizes if start < s <= end} | {end})
        at = start
        try:
            while at < end:
                rows = (
                    await self.conn.execute(
                        select(
                            LogLeaf.seq,
                            LogLeaf.id,
                            LogLeaf.case_id,
                            LogLeaf.type,
                            LogLeaf.data,
                            LogLeaf.hash,
                        )
                        .where(LogLeaf.seq >= at, LogLeaf.seq < end)
                        .order_by(LogLeaf.seq)
                        .limit(PAGE)
                    )
                ).all()
                if not rows:
                    following = await self.conn.scalar(
                        select(func.min(LogLeaf.seq)).where(LogLeaf.seq >= at)
                    )
                    if following is not None:
                        raise Mismatch(_gap(at, following), seq=at)
                    raise Mismatch(f"the log head says {size} leaves, but {at} are stored", seq=at)
                await self._check_page(rows, at, end, wanted, found)
                at = int(rows[-1][0] or 0) + 1
                if self.progress:
                    self.progress(at - start, end - start)
        except Mismatch as exc:
            found.problem = (exc.seq, exc.order, str(exc))
            found.stacks = {k: v for k, v in found.stacks.items() if k <= exc.seq}
        found.last = self.last_by_case
        found.files = self.files_checked
        return found

    async def _check_page(
        self, rows: Sequence[Any], at: int, end: int, wanted: list[int], found: _Range
    ) -> None:
        first = int(rows[0][0])
        if first != at:
            raise Mismatch(_gap(at, first), seq=at)
        gap = None
        if int(rows[-1][0]) != at + len(rows) - 1:  # a leaf is missing: check the ones before
            k = next(k for k, row in enumerate(rows) if row[0] != at + k)
            gap = Mismatch(_gap(at + k, int(rows[k][0])), seq=at + k)
            rows = rows[:k]
        last = int(rows[-1][0])
        # The tree first (no reads): the hashes the leaves give, in storage order.
        expected: list[bytes] = []
        tree = self.tree
        for _, _, _, _, _, digest in rows:
            expected += tree.push(bytes(digest))
            while wanted and wanted[0] == self.first + tree.size:
                found.stacks[wanted.pop(0)] = list(tree.stack)
        low = tlog.stored_hash_index(0, first)
        high = tlog.stored_hash_index(0, last + 1)
        query = (
            select(LogHash.hash)
            .where(LogHash.position >= low, LogHash.position < high)
            .order_by(LogHash.position)
        )
        stored = [bytes(h) for h in (await self.conn.execute(query)).scalars().all()]
        if last + 1 == end:
            # The last leaf of a block also stores the hashes joining it to the blocks before
            # (none for the whole log): the caller checks those.
            found.tail = stored[len(expected) :]
            stored = stored[: len(expected)]
        tree_problem: Mismatch | None = None
        if stored != expected:
            tree_problem = self._tree_mismatch(rows, low, stored, expected)
        checked_to = tree_problem.seq if tree_problem else last
        materials, events = await self._sources(rows)
        self.minutes = await self._minutes_sources(rows)
        self.signatures = await self._signature_sources(rows)
        self.recordings = await self._recording_sources(rows)
        for seq, leaf_id, case_id, kind, data, digest in rows:
            if seq > checked_to:
                break
            data, digest = bytes(data), bytes(digest)
            try:
                if leaf_hash(data) != digest:
                    raise Mismatch(f"leaf {seq}: the stored leaf hash is not the hash of its bytes")
                self._check_leaf(seq, leaf_id, case_id, kind, data, digest, materials, events)
            except Mismatch as exc:
                exc.seq = seq
                raise
        if tree_problem:
            raise tree_problem
        if gap:
            raise gap

    def _tree_mismatch(
        self, rows: Sequence[Any], low: int, stored: list[bytes], expected: list[bytes]
    ) -> Mismatch:
        """The leaf whose stored tree hashes differ first from the ones its leaves give."""
        k = 0
        for seq, *_ in rows:
            count = 1 + _trailing_ones(seq - self.first)
            if stored[k : k + count] != expected[k : k + count]:
                bad = next(
                    (
                        j
                        for j in range(k, k + count)
                        if j >= len(stored) or stored[j] != expected[j]
                    ),
                    k,
                )
                return Mismatch(
                    f"leaf {seq}: the stored tree hash at position {low + bad} "
                    "does not match the leaves (a leaf was changed, moved or removed)",
                    seq=seq,
                    order=TREE,
                )
            k += count
        last = int(rows[-1][0])
        return Mismatch(
            f"leaf {last}: more tree hashes are stored than the leaves give", seq=last, order=TREE
        )

    def _check_note(self, checkpoint: LogCheckpoint) -> None:
        name = f"checkpoint {checkpoint.id} ({checkpoint.size} leaves)"
        if self.key is None:
            return
        try:
            parsed, _ = open_checkpoint(checkpoint.note, [self.key.verifier])
        except NoteError as exc:
            raise Mismatch(
                f"{name}: its signature does not verify with the log key: {exc}"
            ) from None
        if parsed.size != checkpoint.size or parsed.root != bytes(checkpoint.root):
            raise Mismatch(f"{name}: the stored size or root differs from the signed note")

    def _among(self, column: Any, ids: list[int]) -> Any:
        """``column IN ids``; on PostgreSQL with the ids as one array parameter, which spares
        SQLAlchemy rendering a parameter per id (a fifth of a worker's time went there)."""
        if self.conn.dialect.name == "postgresql":
            return column == any_(literal(ids, ARRAY(BigInteger)))
        return column.in_(ids)  # a page's ids, below SQLite's 32,766 parameters

    async def _sources(self, rows: Sequence[Any]) -> tuple[dict[int, Any], dict[int, Any]]:
        """The evidence items (by leaf id) and timeline events (by id) a page of leaves
        records, as plain rows (no ORM objects: a full run reads a million)."""
        material_leaves = [r[1] for r in rows if r[3] == EVIDENCE_ADDED]
        event_ids = [
            int(found.group(1))
            for r in rows
            if r[3] in EVENT_TYPES and (found := _EVENT_ID.search(bytes(r[4])))
        ]
        # An id no table can hold (a forged leaf) is left to the leaf's check, which names it.
        event_ids = [i for i in event_ids if i < 1 << 63]
        materials: dict[int, Any] = {}
        m = CaseMaterial.__table__.c
        wanted: tuple[Any, ...] = (
            m.id,
            m.leaf_id,
            m.filename,
            m.content_type,
            m.kind,
            m.title,
            m.description,
        )
        wanted += (m.party, m.visibility, m.created_at, m.salt, m.uploaded_by_id, m.sha256)
        wanted += (m.size, m.erased_at)
        if material_leaves:
            query = select(*wanted).where(self._among(m.leaf_id, material_leaves))
            for row in (await self.conn.execute(query)).all():
                materials[row.leaf_id] = row
        events: dict[int, Any] = {}
        e = CaseEvent.__table__.c
        columns: tuple[Any, ...] = (
            e.id,
            e.case_id,
            e.actor_id,
            e.kind,
            e.from_status,
            e.to_status,
            e.body,
            e.data,
        )
        columns += (e.created_at, e.erased_at)
        if event_ids:
            query = select(*columns).where(self._among(e.id, event_ids))
            for event in (await self.conn.execute(query)).all():
                events[event.id] = event
        return materials, events

    async def _minutes_sources(self, rows: Sequence[Any]) -> dict[int, tuple[Any, list[Any]]]:
        """The minutes versions (with their confirmations) a page of leaves records."""
        leaf_ids = [r[1] for r in rows if r[3] == MINUTES_CONFIRMED]
        found: dict[int, tuple[Any, list[Any]]] = {}
        versions = MinutesVersion.__table__
        answers = MinutesResponse.__table__
        for part in _chunks(leaf_ids):
            for v in await self.conn.execute(select(versions).where(versions.c.leaf_id.in_(part))):
                found[v.leaf_id] = (v, [])
        by_version = {v.id: confirmations for v, confirmations in found.values()}
        for part in _chunks(list(by_version)):
            query = select(answers).where(
                answers.c.version_id.in_(part), answers.c.answer == "confirmed"
            )
            for a in await self.conn.execute(query):
                by_version[a.version_id].append(a)
        for _, confirmations in found.values():
            confirmations.sort(key=lambda a: MINUTES_SIDES.index(a.side))
        return found

    async def _signature_sources(self, rows: Sequence[Any]) -> dict[int, Any]:
        """The agreement signatures a page of leaves records, each with the number, PDF and
        size of the version it signed."""
        leaf_ids = [r[1] for r in rows if r[3] == AGREEMENT_SIGNATURE]
        signed = AgreementSignature.__table__
        versions = AgreementVersion.__table__
        found: dict[int, Any] = {}
        for part in _chunks(leaf_ids):
            query = (
                select(signed, versions.c.number, versions.c.pdf, versions.c.pdf_size)
                .join(versions, versions.c.id == signed.c.version_id)
                .where(signed.c.leaf_id.in_(part))
            )
            for row in await self.conn.execute(query):
                found[row.leaf_id] = row
        return found

    async def _recording_sources(
        self, rows: Sequence[Any]
    ) -> dict[int, tuple[Any, list[Any], list[Any]]]:
        """The sealed recordings a page of leaves records, with their files and consents."""
        from portal.meetings import recording as recordings
        from portal.meetings.recording_models import Recording

        leaf_ids = [r[1] for r in rows if r[3] == RECORDING]
        found: dict[int, tuple[Any, list[Any], list[Any]]] = {}
        for part in _chunks(leaf_ids):
            for row in await self.db.scalars(select(Recording).where(Recording.leaf_id.in_(part))):
                files = await recordings.leaf_files(self.db, row.id)
                consents = await recordings.consent_rows(self.db, row.id)
                assert row.leaf_id is not None
                found[row.leaf_id] = (row, files, consents)
        return found

    def _recording_body(
        self, where: str, data: bytes, case_id: int | None, found: tuple[Any, list[Any], list[Any]]
    ) -> dict[str, Any]:
        """The body the recording's rows give; a person whose secret was erased is taken at
        the leaf's word (their commitment can no longer be recomputed)."""
        from portal.meetings.recording import recording_leaf_body

        row, files, consents = found
        try:
            stated = decode_leaf(data).body
        except LeafError as exc:
            raise Mismatch(f"{where}: not a valid leaf: {exc}") from None
        said: dict[int | None, Any] = {}
        for users, items in (
            ([f.user_id for f, _ in files], stated.get("files")),
            ([c.user_id for c in consents], stated.get("consents")),
        ):
            listed = items if isinstance(items, (list, tuple)) else []
            for user_id, item in zip(users, listed, strict=False):
                if isinstance(item, Mapping):
                    said.setdefault(user_id, item.get("person"))

        def person(user_id: int | None) -> Any:
            found = self._commitment(user_id)
            return said.get(user_id) if found is _ERASED else found

        try:
            return recording_leaf_body(row, case_id or 0, files, consents, person)
        except LeafError as exc:
            raise Mismatch(f"{where}: recording {row.id} does not match its rows: {exc}") from None

    def _minutes_body(
        self, version: Any, confirmations: list[Any], case_id: int | None, stated: Any
    ) -> dict[str, Any]:
        """log_minutes()'s body from the stored rows; a person whose secret was erased keeps
        the commitment the leaf states (``stated``: the leaf's body)."""

        def person(user_id: int, said: Any) -> Any:
            found = self._commitment(user_id)
            return said if found is _ERASED else found

        said = stated.get("confirmations") if isinstance(stated, dict) else None
        said = said if isinstance(said, list) else []
        text = version.text.encode("utf-8")
        return {
            "sha256": hashlib.sha256(text).hexdigest(),
            "size": len(text),
            "meeting": version.meeting_id,
            "case_id": case_id,
            "version": version.number,
            "mediator": person(version.author_id, stated.get("mediator")),
            "confirmations": [
                {
                    "person": person(
                        a.user_id,
                        said[i].get("person")
                        if i < len(said) and isinstance(said[i], dict)
                        else None,
                    ),
                    "side": a.side,
                    "time": _time(a.updated_at),
                }
                for i, a in enumerate(confirmations)
            ],
        }

    def _check_leaf(
        self,
        seq: int,
        leaf_id: int,
        case_id: int | None,
        kind: str,
        data: bytes,
        digest: bytes,
        materials: dict[int, Any],
        events: dict[int, Any],
    ) -> None:
        number = self.numbers.get(case_id) if case_id is not None else None
        where = f"leaf {seq}" + (f" (case {number})" if number else "")
        if case_id is not None and case_id not in self.numbers:
            raise Mismatch(f"{where}: its case no longer exists")
        prev = self.last_by_case.get(case_id) if case_id is not None else None
        if prev is None and self.first and case_id is not None and case_id not in self.last_by_case:
            # The case's first leaf in a range that does not start the log: the leaf's word for
            # its previous leaf, checked against the ranges before by the caller.
            prev = _stated_prev(data)
            self.claims.append((seq, case_id, prev, where))
        if kind == EVIDENCE_ADDED:
            material = materials.get(leaf_id)
            if material is None:
                raise Mismatch(f"{where}: the evidence item it records is missing")
            self._compare(
                where,
                f"evidence item {material.id}",
                data,
                kind,
                number,
                prev,
                material.created_at,
                self._material_body(material),
            )
            if material.erased_at is None:  # an erased item's file was deleted with it
                self._check_file(where, material)
        elif kind in EVENT_TYPES:
            found = _EVENT_ID.search(data)
            event = events.get(int(found.group(1))) if found else None
            if event is None or event.case_id != case_id:
                raise Mismatch(f"{where}: the timeline event it records is missing")
            body = event_body(event, None)
            body["actor"] = self._commitment(event.actor_id)  # type: ignore[assignment]
            if event.erased_at is not None:  # its note was erased: the leaf's digest stands
                body["note"] = _ERASED  # type: ignore[assignment]
            self._compare(
                where,
                f"timeline event {event.id}",
                data,
                event_type(event),
                number,
                prev,
                event.created_at,
                body,
            )
        elif kind == MINUTES_CONFIRMED:
            found_minutes = self.minutes.get(leaf_id)
            if found_minutes is None or found_minutes[0].confirmed_at is None:
                raise Mismatch(f"{where}: the confirmed minutes it records are missing")
            version, confirmations = found_minutes
            try:
                stated = dict(decode_leaf(data).body)
            except LeafError as exc:
                raise Mismatch(f"{where}: not a valid leaf: {exc}") from None
            self._compare(
                where,
                f"minutes version {version.id}",
                data,
                kind,
                number,
                prev,
                version.confirmed_at,
                self._minutes_body(version, confirmations, case_id, stated),
            )
        elif kind == AGREEMENT_SIGNATURE:
            signed = self.signatures.get(leaf_id)
            if signed is None:
                raise Mismatch(f"{where}: the agreement signature it records is missing")
            if hashlib.sha256(bytes(signed.pdf)).hexdigest() != signed.pdf_sha256:
                raise Mismatch(
                    f"{where}: the PDF of agreement {signed.agreement_id}, version "
                    f"{signed.number}, was changed after it was signed"
                )
            signer: Any = self._commitment(signed.user_id)
            if signer is _ERASED:  # the person's secret was erased: the leaf's word stands
                try:
                    signer = decode_leaf(data).body.get("signer")
                except LeafError as exc:
                    raise Mismatch(f"{where}: not a valid leaf: {exc}") from None
            self._compare(
                where,
                f"agreement signature {signed.id}",
                data,
                kind,
                number,
                prev,
                signed.signed_at,
                {
                    "sha256": signed.pdf_sha256,
                    "size": signed.pdf_size,
                    "case_id": case_id,
                    "agreement": signed.agreement_id,
                    "version": signed.number,
                    "side": signed.side,
                    "signer": signer,
                    "method": signed.method,
                },
            )
        elif kind == RECORDING:
            recorded = self.recordings.get(leaf_id)
            if recorded is None or recorded[0].sealed_at is None:
                raise Mismatch(f"{where}: the recording it records is missing")
            self._compare(
                where,
                f"recording {recorded[0].id}",
                data,
                kind,
                number,
                prev,
                recorded[0].sealed_at,
                self._recording_body(where, data, case_id, recorded),
            )
        else:
            try:
                leaf = decode_leaf(data)
            except LeafError as exc:
                raise Mismatch(f"{where}: not a valid leaf: {exc}") from None
            if leaf.type != kind:
                raise Mismatch(f"{where}: the stored type {kind!r} differs from the leaf's")
            self._check_place(where, leaf, number, prev)
        if case_id is not None:
            self.last_by_case[case_id] = digest.hex()

    def _material_body(self, m: Any) -> dict[str, Any]:
        """material_body(), built without its checks (the rows are the portal's own)."""
        metadata = {
            "item": m.id,
            "filename": m.filename,
            "content_type": m.content_type,
            "kind": m.kind,
            "title": m.title,
            "description": m.description,
            "party": m.party,
            "visibility": m.visibility,
            "uploaded_at": _time(m.created_at),
            "salt": m.salt,
        }
        uploader = self._commitment(m.uploaded_by_id)
        return {
            "item": m.id,
            "sha256": m.sha256,
            "size": m.size,
            # Erased (name, title, description, salt): the leaf's digest stands.
            "metadata": _ERASED if m.erased_at is not None else _metadata_digest(metadata),
            "uploader": "0" * 64 if uploader is None else uploader,
        }

    def _compare(
        self,
        where: str,
        record: str,
        data: bytes,
        kind: str,
        number: str | None,
        prev: str | None,
        when: datetime,
        body: dict[str, Any],
    ) -> None:
        """The leaf must be exactly what the record gives now; on a difference, say which."""
        erased = [key for key, value in body.items() if value is _ERASED]
        if not erased:
            expected = _canonical(
                {
                    "v": 1,
                    "type": kind,
                    "case": number,
                    "prev": prev,
                    "time": _time(when),
                    "body": body,
                }
            )
            if expected == data:
                return
        try:
            leaf = decode_leaf(data)
        except LeafError as exc:
            raise Mismatch(f"{where}: not a valid leaf: {exc}") from None
        self._check_place(where, leaf, number, prev)
        for key in erased:  # whoever it names was erased: the leaf's commitment stands
            body[key] = leaf.body.get(key)
        actual = dict(leaf.body)
        fields = sorted(k for k in set(actual) | set(body) if actual.get(k) != body.get(k))
        if format_time(leaf.time) != _time(when):
            fields.append("time")
        if leaf.type != kind:
            fields.append("type")
        if fields:
            raise Mismatch(
                f"{where}: the leaf does not match {record} as stored now "
                f"(differs in: {', '.join(fields)})",
                order=CONTENT,
            )

    def _check_place(self, where: str, leaf: Any, number: str | None, prev: str | None) -> None:
        if leaf.case != number:
            raise Mismatch(f"{where}: the leaf names case {leaf.case}, the record {number}")
        if leaf.prev != prev:
            raise Mismatch(
                f"{where}: its link to the case's previous leaf is broken "
                "(a leaf of this case was changed, removed or reordered)",
                order=LINK,
            )

    def _check_file(self, where: str, material: Any) -> None:
        if self.store is None or material.sha256 in self.files_checked:
            return
        try:
            size = self.store.size(material.sha256)
            intact = self.store.verify(material.sha256)
        except (BlobError, OSError) as exc:
            raise Mismatch(
                f"{where}: the file of evidence item {material.id} cannot be read: {exc}",
                order=CONTENT,
            ) from None
        if not intact or size != material.size:
            raise Mismatch(
                f"{where}: the stored file of evidence item {material.id} was changed "
                "(its content no longer has the logged SHA-256)",
                order=CONTENT,
            )
        self.files_checked.add(material.sha256)


def _gap(missing: int, following: int) -> str:
    return f"leaf {missing} is missing: the next stored leaf is {following}"


def _stated_prev(data: bytes) -> str | None:
    """The ``prev`` a canonical leaf states: its keys are sorted, so the top-level one comes
    after the body and before only plain strings (the result is checked: the leaf must equal
    the one built with it)."""
    at = data.rfind(b'"prev":')
    if at < 0 or data[at + 7 : at + 11] == b"null":
        return None
    return data[at + 8 : at + 72].decode("ascii", "replace")


def _trailing_ones(n: int) -> int:
    m = n + 1
    return (m & -m).bit_length() - 1


def _chunks(items: list[int], size: int = 1000) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _fold(edge: Sequence[bytes]) -> bytes:
    """The root of a tree from its right edge (complete subtrees, largest first)."""
    if not edge:
        return EMPTY_ROOT
    h = edge[-1]
    for left in reversed(edge[:-1]):
        h = node_hash(left, h)
    return h


class _Stitcher:
    """Joins the ranges' findings in log order: each case's chain across ranges, the tree
    hashes above the blocks, the checkpoints' roots; the first problem in log order wins."""

    def __init__(self, checkpoints: list[LogCheckpoint], block: int) -> None:
        self.block_level = block.bit_length() - 1
        self.block = block
        self.restart(checkpoints)

    def restart(self, checkpoints: list[LogCheckpoint]) -> None:
        """From the first leaf again, expecting these checkpoints."""
        self.pending = checkpoints
        self.stack: list[bytes] = []  # the complete subtrees before the next range
        self.last: dict[int, str] = {}
        self.files: set[str] = set()
        self.leaves = 0
        self.checked = 0
        self.edge: list[bytes] = []  # the right edge at the end of the last range

    def add(self, r: _Range) -> None:
        problems: list[tuple[int, int, str]] = [r.problem] if r.problem else []
        for seq, case_id, stated, where in r.claims:
            if self.last.get(case_id) != stated:
                problems.append(
                    (
                        seq,
                        LINK,
                        f"{where}: its link to the case's previous leaf is broken "
                        "(a leaf of this case was changed, removed or reordered)",
                    )
                )
                break
        before = list(self.stack)
        ending = r.stacks.get(r.end)
        if ending is not None:
            if r.end - r.start == self.block and r.start:
                h, n, joined = ending[0], r.start >> self.block_level, []
                while n & 1:
                    h = node_hash(self.stack.pop(), h)
                    joined.append(h)
                    n >>= 1
                self.stack.append(h)
            else:
                joined = []
                self.stack += ending
            if joined != r.tail:
                bad = next(
                    (j for j in range(len(joined)) if j >= len(r.tail) or joined[j] != r.tail[j]),
                    len(joined),
                )
                position = tlog.stored_hash_index(0, r.end) - len(joined) + bad
                problems.append(
                    (
                        r.end - 1,
                        TREE,
                        f"leaf {r.end - 1}: the stored tree hash at position {position} "
                        "does not match the leaves (a leaf was changed, moved or removed)",
                    )
                )
            self.edge = before + ending
        while self.pending and self.pending[0].size <= r.end:
            edge = r.stacks.get(self.pending[0].size)
            if edge is None:
                break  # past the range's first problem
            checkpoint = self.pending.pop(0)
            if _fold(before + edge) != bytes(checkpoint.root):
                problems.append(
                    (
                        checkpoint.size - 1,
                        CHECKPOINT,
                        f"checkpoint {checkpoint.id}: the tree of its {checkpoint.size} leaves "
                        "has another root than the signed one",
                    )
                )
                break
            self.checked += 1
        if problems:
            seq, order, message = min(problems)
            self.leaves = seq
            raise Mismatch(message, seq=seq, order=order)
        self.last.update(r.last)
        self.files |= r.files
        self.leaves = r.end


def cores() -> int:
    """The CPU cores this process may run on: the worker processes a full verification uses."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Leaves a worker process checks at a time (a power of two: blocks are whole subtrees).
BLOCK = 1 << 16
_worker_cache: dict[str, tuple[dict[int, bytes], dict[int, str | None]]] = {}


def _worker_start() -> None:
    # A worker only reads, and frees each range's rows by reference counting: the cycle
    # collector would walk its growing dictionaries again and again (a fifth of the time).
    gc.disable()


def _check_block(
    url: str, store: BlobStore | None, start: int, end: int, size: int, sizes: list[int]
) -> _Range:
    """A worker process: check one block with its own connection."""
    try:
        return asyncio.run(_check_block_async(url, store, start, end, size, sizes))
    finally:
        gc.collect()


async def _check_block_async(
    url: str, store: BlobStore | None, start: int, end: int, size: int, sizes: list[int]
) -> _Range:
    from portal.db import create_engine, create_sessionmaker

    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as db:
            verifier = _Verifier(db, store, None, None)
            cached = _worker_cache.get(url)
            if cached is None:
                await verifier.load()
                _worker_cache[url] = (verifier.secrets, verifier.numbers)
            else:
                verifier.secrets, verifier.numbers = cached
            return await verifier.run_range(start, end, size, sizes)
    finally:
        await engine.dispose()


async def _verify(verifier: _Verifier, stitcher: _Stitcher, workers: int, block: int) -> None:
    db = verifier.db
    head = await db.get(LogHead, HEAD_ID)
    size, root = (head.size, bytes(head.root)) if head else (0, EMPTY_ROOT)
    checkpoints = list((await db.scalars(select(LogCheckpoint).order_by(LogCheckpoint.size))).all())
    for checkpoint in checkpoints:
        verifier._check_note(checkpoint)
    pending = [c for c in checkpoints if c.size > 0]
    stitcher.pending = list(pending)
    sizes = sorted({c.size for c in pending if c.size <= size} | {size})
    url = db.get_bind().engine.url
    in_memory = url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or "mode=memory" in str(url)
    )
    parallel = size > block and workers > 1 and not in_memory
    if parallel:
        try:
            await _verify_in_workers(verifier, stitcher, workers, block, size, sizes)
        except BrokenProcessPool as exc:  # a worker died (out of memory, killed): go on alone
            logger.warning("evidence verification: %s; checking in this process instead", exc)
            stitcher.restart(list(pending))
            parallel = False
    if size and not parallel:
        await verifier.load()
        stitcher.add(await verifier.run_range(0, size, size, sizes))
    await _verify_end(verifier, stitcher, size, root)


async def _verify_in_workers(
    verifier: _Verifier, stitcher: _Stitcher, workers: int, block: int, size: int, sizes: list[int]
) -> None:
    """Worker processes check whole blocks; this one joins their findings in order. They are
    forked from a fork server that imported this module once (not from this process, whose
    event loop and threads a fork would copy half-way; nor spawned, importing it each time)."""
    url = verifier.db.get_bind().engine.url
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start)
    loop = asyncio.get_running_loop()
    link = url.render_as_string(hide_password=False)
    futures: list[asyncio.Future[_Range]] = []
    try:
        futures = [
            loop.run_in_executor(
                pool,
                _check_block,
                link,
                verifier.store,
                at,
                min(at + block, size),
                size,
                sizes,
            )
            for at in range(0, size, block)
        ]
        for future in futures:
            stitcher.add(await future)
            if verifier.progress:
                verifier.progress(stitcher.leaves, size)
    finally:
        for future in futures:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


async def _verify_end(verifier: _Verifier, stitcher: _Stitcher, size: int, root: bytes) -> None:
    stored = await verifier.db.scalar(select(func.max(LogLeaf.seq)))
    if stored is not None and stored + 1 > size:
        raise Mismatch(f"the log head says {size} leaves, but {stored + 1} are stored", seq=size)
    if _fold(stitcher.edge) != root:
        raise Mismatch(f"the log head's root does not match the {size} stored leaves", seq=size)
    if stitcher.pending:
        raise Mismatch(
            f"a checkpoint was signed for {stitcher.pending[0].size} leaves, but only {size} "
            "are stored: the log was cut short",
            seq=size,
        )


async def verify_log(
    db: AsyncSession,
    store: BlobStore | None,
    key: LogKey | None,
    *,
    progress: Callable[[int, int], None] | None = None,
    actor_id: int | None = None,
    record: bool = True,
    workers: int = 1,
    block: int = BLOCK,
) -> Result:
    """Verify the whole log (see the module); records the run unless ``record`` is False.
    With ``workers`` > 1 (and a log longer than ``block`` leaves in a database file or server),
    that many processes check blocks of ``block`` leaves side by side."""
    if block < 2 or block & (block - 1):
        raise ValueError("block must be a power of two, at least 2")
    began = time.perf_counter()
    started = utcnow()
    verifier = _Verifier(db, store, key, progress)
    stitcher = _Stitcher([], block)
    problem = ""
    try:
        await _verify(verifier, stitcher, workers, block)
    except Mismatch as exc:
        problem = str(exc)
    except tlog.TlogError as exc:
        problem = f"the stored tree is damaged: {exc}"
    result = Result(
        ok=not problem,
        leaves=stitcher.leaves,
        checkpoints=stitcher.checked,
        files=len(stitcher.files),
        problem=problem,
        seconds=time.perf_counter() - began,
    )
    if record:
        await db.commit()  # ends the reading transaction (objects stay loaded)
        db.add(
            LogVerification(
                started_at=started,
                finished_at=utcnow(),
                ok=result.ok,
                leaves=result.leaves,
                checkpoints=result.checkpoints,
                files=result.files,
                problem=problem[:4000],
                actor_id=actor_id,
            )
        )
        await db.commit()
    return result


async def last_verification(db: AsyncSession) -> LogVerification | None:
    result: LogVerification | None = await db.scalar(
        select(LogVerification).order_by(LogVerification.id.desc()).limit(1)
    )
    return result
