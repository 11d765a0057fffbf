"""Evidence benchmark: durable appends, inclusion proofs and full verification of the evidence
log at 1,000,000 leaves, and a 1 GiB upload streamed over HTTP.

    .venv/bin/python bench/evidence.py                     # both backends, 1,000,000 leaves
    .venv/bin/python bench/evidence.py --backend sqlite --leaves 100000 --skip-upload --no-docs

For each backend (SQLite, PostgreSQL) it creates a fresh database (a file in a temporary
directory; a new PostgreSQL database ``jiefen_bench_ev_<random>``, dropped at the end), migrates
it and measures, each beside a reference taken in the same run:

1. Proofs: ``--leaves`` leaves are loaded by bulk inserts: cases, their timelines and evidence
   items, and for each a leaf built as the portal builds it (``event_body`` / ``material_body``
   and ``encode_leaf``, each case's leaves chained by ``prev``), the tree hashes
   (``tlog.assemble_append``) and the log head, with a checkpoint signed every
   ``--checkpoint-every`` leaves and at the end (``sign_checkpoint``). Then ``--proofs``
   inclusion proofs of random leaves in the whole tree, read from the database
   (``DbHashReader``), p50/p99, their size, and a receipt's; reference: one primary-key lookup.
2. Full verification of the log with ``verify_log`` (every leaf against its timeline event or
   evidence item, every chain, the tree, the checkpoints, the files) with one worker process per
   core, as ``jiefen evidence verify`` runs it, and again in one process for comparison;
   reference: reading the same leaves with a plain SELECT and hashing them.
3. Durable appends on top of that log, for ``--append-seconds`` each: ``LogWriter`` with
   ``--writers`` concurrent appenders (group commit), and one transaction per leaf
   (``stage_leaf`` + commit) from ``--stagers`` tasks followed by the sequencer
   (``integrate_all``), each case-bound (a ``minutes`` leaf chained to its case); reference: one
   tiny-row INSERT per committed transaction at the same concurrency. SQLite runs with
   ``PRAGMA synchronous=FULL`` (durable: the WAL is synced at every commit) and, for comparison,
   with NORMAL (the portal's setting: a commit may be lost on power failure); PostgreSQL with its
   default ``synchronous_commit=on``.
4. Upload (unless ``--skip-upload``): a fresh database seeded by ``jiefen demo``, the real server
   (``jiefen serve``, one process, ``EVIDENCE_MAX_MB`` large enough), the demo consumer logged
   in, and a ``--upload-mb`` MiB text file posted as multipart/form-data to
   ``/cases/{id}/materials``, streamed from the file by the client; the server's resident memory
   is polled from /proc throughout. Reference: ``sha256sum`` of the same file.

It prints a table against the issue's targets and writes it into docs/benchmarks.md unless
``--no-docs`` is given. Servers, the temporary directory and the PostgreSQL databases are removed
even when the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import hashlib
import io
import json
import math
import os
import pstats
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cases import (  # noqa: E402 - after the path set-up above
    DEFAULT_POSTGRES_ADMIN_URL,
    DOCS,
    HOST,
    STOP,
    _free_port,
    _interrupt,
    _process_tree,
    _server_env,
    fresh_database,
    login,
    machine,
    run_async,
    start_server,
    update_docs,
)

START = "<!-- evidence:start -->"
END = "<!-- evidence:end -->"

# Targets from the issue.
TARGET_APPENDS = 2000.0  # leaves per second, durable
TARGET_PROOF_MS = 1.0  # per inclusion proof at 1,000,000 leaves
TARGET_VERIFY_S = 30.0  # full verification of 1,000,000 leaves
TARGET_RSS_MB = 100.0  # peak server RSS during a 1 GiB upload
TARGET_UPLOAD_SHARE = 0.5  # of sha256sum's throughput on the same file
REFERENCES = (
    "Trillian about 60 appends/s on 2 cores with MySQL; Tessera about 2,900 appends/s on "
    "12 cores with POSIX storage (the issue's figures)"
)

CHUNK = 50_000  # leaves per bulk-insert transaction while seeding
ROWS = 50_000  # rows per bulk insert of events and materials
MB = 1_000_000


# -- the log to load: cases, their timelines and evidence, and their leaves --------------------

# (weight, the statuses a case goes through after its draft); the ends are its final status.
PATHS: list[tuple[int, list[str]]] = [
    (40, ["submitted", "accepted", "assigned", "in_mediation", "settled", "fulfilled", "closed"]),
    (15, ["submitted", "accepted", "assigned", "in_mediation", "failed", "closed"]),
    (15, ["submitted", "accepted", "assigned", "in_mediation"]),
    (10, ["submitted", "rejected"]),
    (10, ["submitted", "accepted", "withdrawn"]),
    (10, ["submitted", "accepted"]),
]
TRANSITIONS = {
    "submitted": ("submit", "filer"),
    "accepted": ("accept", "staff"),
    "rejected": ("reject", "staff"),
    "assigned": ("assign", "staff"),
    "in_mediation": ("start_mediation", "mediator"),
    "settled": ("settle", "mediator"),
    "fulfilled": ("fulfil", "mediator"),
    "failed": ("fail", "mediator"),
    "closed": ("close", "staff"),
    "withdrawn": ("withdraw", "filer"),
}
REASONS = {
    "rejected": "不属于本委员会受理范围。",
    "failed": "双方未能达成一致。",
    "withdrawn": "已与对方自行和解。",
}
CATEGORIES = ["credit_card", "small_loan", "consumer", "insurance", "securities_advisory"]
LEAVES_PER_CASE = 7.4  # what PATHS give on average: about 5 transitions, 2 files, 0.5 answers
N_STAFF, N_MEDIATORS, N_FIRM_REPS, N_CONSUMERS = 3, 20, 50, 5000
N_FILES = 16  # distinct file contents behind the evidence items (verification reads each once)

EVENT_COLUMNS = [
    "id",
    "case_id",
    "actor_id",
    "kind",
    "from_status",
    "to_status",
    "body",
    "data",
    "visibility",
    "created_at",
]
MATERIAL_COLUMNS = [
    "id",
    "case_id",
    "kind",
    "filename",
    "content_type",
    "size",
    "sha256",
    "uploaded_by_id",
    "created_at",
    "title",
    "description",
    "party",
    "visibility",
    "salt",
    "leaf_id",
]
LEAF_COLUMNS = ["id", "seq", "case_id", "type", "data", "hash", "created_at"]
HASH_COLUMNS = ["position", "hash"]


@dataclass
class Chunk:
    """Leaves [start, end) with their rows, the tree hashes they add and the root after them."""

    start: int
    end: int
    leaves: list[tuple[Any, ...]]
    hashes: list[tuple[int, bytes]]
    root: bytes


@dataclass
class Dataset:
    leaves: int
    users: list[dict[str, Any]]
    secrets: list[tuple[int, bytes]]
    cases: list[dict[str, Any]]
    counters: list[tuple[int, int]]  # (year, last number)
    events: list[tuple[Any, ...]]
    materials: list[tuple[Any, ...]]
    chunks: list[Chunk]
    files: list[bytes]
    kinds: dict[str, int]
    seconds: float


def _user_rows(now: datetime) -> list[dict[str, Any]]:
    """Users with explicit ids: committee staff, mediators, firm representatives, consumers."""
    rows = []
    roles = (
        [("committee_admin", "主任")] * N_STAFF
        + [("mediator", "调解员")] * N_MEDIATORS
        + [("firm_rep", "经理")] * N_FIRM_REPS
        + [("consumer", "用户")] * N_CONSUMERS
    )
    for i, (role, name) in enumerate(roles, start=1):
        rows.append(
            {
                "id": i,
                "role": role,
                "display_name": f"{name}{i}",
                "phone_index": None,
                "phone_enc": None,
                "email_index": hashlib.sha256(f"bench-user-{i}".encode()).hexdigest(),
                "email_enc": None,
                "password_hash": "!",  # nobody logs in as these
                "locale": "zh_CN",
                "large_text": False,
                "firm_id": None,
                "committee_id": None,
                "is_active": True,
                "created_at": now - timedelta(days=800),
                "password_changed_at": now - timedelta(days=800),
                "phone_verified_at": None,
            }
        )
    return rows


def _encode_chains(
    items: list[tuple[int, int, str, str, Any, datetime]],
) -> list[tuple[int, bytes, bytes]]:
    """Leaf bytes and hashes, in log order, for the leaves of some cases: each case's leaves
    chained by ``prev`` (the hash of the case's previous leaf), as stage_leaf chains them."""
    from portal.evidence.verify.leaf import encode_leaf
    from portal.evidence.verify.proofs import leaf_hash

    last: dict[int, str] = {}
    out = []
    for seq, c, number, kind, body, moment in items:
        data = encode_leaf(kind, body, case=number, prev=last.get(c), time=moment)
        digest = leaf_hash(data)
        last[c] = digest.hex()
        out.append((seq, data, digest))
    return out


def encode_all(
    leaves: list[tuple[int, int, str, str, Any, datetime]], workers: int = 2
) -> list[tuple[Any, ...]]:
    """The leaf rows, encoded by ``workers`` processes, each taking whole cases (the chains
    are per case, so the cases split freely); rows in log order."""
    from concurrent.futures import ProcessPoolExecutor

    parts = [[leaf for leaf in leaves if leaf[1] % workers == w] for w in range(workers)]
    encoded: list[tuple[int, bytes, bytes]] = []
    with ProcessPoolExecutor(workers) as pool:
        for result in pool.map(_encode_chains, parts):
            encoded += result
    encoded.sort(key=lambda item: item[0])
    return [
        (seq + 1, seq, c + 1, kind, data, digest, moment)
        for (seq, c, _number, kind, _body, moment), (_seq, data, digest) in zip(
            leaves, encoded, strict=True
        )
    ]


def generate(n_leaves: int, seed: int) -> Dataset:
    """The whole log, deterministic for ``seed``: every leaf exactly as the portal writes it.

    Each case goes through a path of PATHS over days; every action (creating the draft,
    uploading its two files, submitting, each transition, the firm's answer) gets its time, and
    the actions of all cases are then replayed in time order, which gives the ids (timeline
    events, evidence items, leaves) and the log order, up to ``n_leaves`` leaves. A submission
    logs its transition and then its files (cases.service.submit_case)."""
    from portal.evidence import tlog
    from portal.evidence.service import event_body, event_type, material_body
    from portal.evidence.verify.leaf import CASE_TRANSITION, EVIDENCE_ADDED, person_commitment

    started = time.perf_counter()
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    span = timedelta(days=730).total_seconds()
    users = _user_rows(now)
    staff = list(range(1, 1 + N_STAFF))
    mediators = list(range(staff[-1] + 1, staff[-1] + 1 + N_MEDIATORS))
    reps = list(range(mediators[-1] + 1, mediators[-1] + 1 + N_FIRM_REPS))
    consumers = list(range(reps[-1] + 1, reps[-1] + 1 + N_CONSUMERS))
    person_secrets = [(uid, rng.randbytes(32)) for uid in range(1, len(users) + 1)]
    commitments = {uid: person_commitment(s, str(uid)) for uid, s in person_secrets}
    files = [
        b"%PDF-1.4\n% jiefen evidence bench\n" + f"{i}".encode() * (200 + i) + b"\n%%EOF\n"
        for i in range(N_FILES)
    ]
    file_shas = [hashlib.sha256(f).hexdigest() for f in files]

    # Each case's actions: (time, case index, order, action, detail).
    n_cases = math.ceil(n_leaves / LEAVES_PER_CASE * 1.08) + 10
    weights = [w for w, _ in PATHS]
    actions: list[tuple[datetime, int, int, str, Any]] = []
    cases: list[dict[str, Any]] = []
    for c in range(n_cases):
        created = now - timedelta(seconds=span) + timedelta(seconds=rng.uniform(0, span - 86400))
        path = rng.choices(PATHS, weights)[0][1]
        filer = rng.choice(consumers)
        actors = {"filer": filer, "staff": rng.choice(staff), "mediator": rng.choice(mediators)}
        cases.append(
            {
                "id": c + 1,
                "created": created,
                "path": path,
                "actors": actors,
                "rep": rng.choice(reps),
            }
        )
        actions.append((created, c, 0, "create", None))
        moment = created
        for k, kind in enumerate(("identity", "contract")):
            moment += timedelta(seconds=rng.uniform(60, 7200))
            actions.append((moment, c, 1 + k, "upload", kind))
        times = []
        for _ in path:
            moment += timedelta(seconds=rng.uniform(2 * 3600, 96 * 3600))
            times.append(moment)
        for k, target in enumerate(path):
            actions.append((times[k], c, 10 + k, "move", target))
        if "accepted" in path and rng.random() < 0.6:
            k = path.index("accepted")
            after = times[k + 1] if k + 1 < len(times) else times[k] + timedelta(days=3)
            moment = times[k] + (after - times[k]) * rng.uniform(0.2, 0.8)
            actions.append((moment, c, 10 + k, "respond", rng.choice(["agree", "propose"])))
    actions.sort(key=lambda a: (a[0], a[1], a[2]))

    events: list[tuple[Any, ...]] = []
    materials: list[tuple[Any, ...]] = []
    leaves: list[tuple[int, int, str, str, Any, datetime]] = []
    pending_files: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    numbers: dict[int, str] = {}
    counters: dict[int, int] = {}
    status: dict[int, str] = {}
    kinds: dict[str, int] = {}
    touched: set[int] = set()

    def leaf(kind: str, body: Any, c: int, moment: datetime) -> int:
        """Queue the leaf's content; its bytes and hash come later (``_encode_chains``)."""
        seq = len(leaves)
        leaves.append((seq, c, numbers[c], kind, body, moment))
        kinds[kind] = kinds.get(kind, 0) + 1
        return seq + 1

    def event(
        c: int, actor: int, kind: str, before: Any, after: Any, body: str, data: Any, when: datetime
    ) -> Any:
        row = (len(events) + 1, c + 1, actor, kind, before, after, body, data, "all", when)
        events.append(row)
        return SimpleNamespace(
            id=row[0], kind=kind, from_status=before, to_status=after, body=body, data=data
        )

    for moment, c, _order, action, detail in actions:
        if len(leaves) >= n_leaves:
            break
        case = cases[c]
        actors = case["actors"]
        touched.add(c)
        if action == "create":
            status[c] = "draft"
            data0 = {"transition": "create"}
            event(c, actors["filer"], "transition", None, "draft", "", data0, moment)
        elif action == "upload":
            n = rng.randrange(N_FILES)
            row = {
                "id": len(materials) + 1,
                "case_id": c + 1,
                "kind": detail,
                "filename": f"{detail}.pdf",
                "content_type": "application/pdf",
                "size": len(files[n]),
                "sha256": file_shas[n],
                "uploaded_by_id": actors["filer"],
                "created_at": moment,
                "title": "",
                "description": "",
                "party": "claimant",
                "visibility": "parties",
                "salt": rng.randbytes(16).hex(),
                "leaf_id": None,
            }
            materials.append(tuple(row.values()))
            pending_files.setdefault(c, []).append((len(materials) - 1, row))
        elif action == "move":
            name, who = TRANSITIONS[detail]
            data: dict[str, Any] = {"transition": name}
            if detail == "submitted":
                year = moment.year
                counters[year] = counters.get(year, 0) + 1
                numbers[c] = f"PT-{year}-{counters[year]:06d}"
                data["number"] = numbers[c]
            reason = REASONS.get(detail, "")
            ev = event(c, actors[who], "transition", status[c], detail, reason, data, moment)
            status[c] = detail
            leaf(event_type(ev), event_body(ev, commitments[actors[who]]), c, moment)
            if detail == "submitted":
                for index, row in pending_files.pop(c, []):
                    if len(leaves) >= n_leaves:
                        break
                    item: Any = SimpleNamespace(**row)  # what material_body reads of a row
                    body = material_body(item, commitments[actors["filer"]])
                    leaf_id = leaf(EVIDENCE_ADDED, body, c, row["created_at"])
                    materials[index] = (*materials[index][:-1], leaf_id)
        else:  # the firm's answer
            offer = 0
            if detail == "propose":
                offer = rng.randrange(10_000, 5_000_000)
            data = {"response": detail, "offer_fen": offer or None}
            terms = "同意退还一半费用。" if offer else ""
            ev = event(c, case["rep"], "response", None, None, terms, data, moment)
            leaf(event_type(ev), event_body(ev, commitments[case["rep"]]), c, moment)
    assert len(leaves) == n_leaves, "not enough cases generated"
    assert kinds.get(CASE_TRANSITION, 0) > n_leaves // 2
    rows = encode_all(leaves)

    # The cases as they stand at the end of the log.
    case_rows = []
    for c in sorted(touched):
        case = cases[c]
        final = status[c]
        case_rows.append(
            {
                "id": c + 1,
                "number": numbers.get(c),
                "status": final,
                "category": CATEGORIES[c % len(CATEGORIES)],
                "filer_id": case["actors"]["filer"],
                "filed_as": "self",
                "respondent_name": "上海示例消费金融有限公司",
                "amount_fen": 100_000 + (c * 7919) % 5_000_000,
                "outcomes": ["refund"],
                "facts": "分期手续费未告知，要求退还。",
                "eligibility": {},
                "triage_reasons": [],
                "requested_items": [],
                "mediator_id": (
                    case["actors"]["mediator"] if final not in ("draft", "submitted") else None
                ),
                "created_at": case["created"],
                "updated_at": case["created"],
                "submitted_at": case["created"] if c in numbers else None,
                "paused_working_days": 0,
                "filing_ip": "127.0.0.1",
            }
        )

    # The tree hashes, a chunk at a time, as the sequencer stores them.
    chunks = []
    frontier: dict[int, bytes] = {}
    for start in range(0, n_leaves, CHUNK):
        part = rows[start : start + CHUNK]
        known = {p: frontier[p] for p in tlog.append_indexes(start, len(part))}
        new = tlog.assemble_append(start, [row[5] for row in part], known)
        end = start + len(part)
        overlay = {**frontier, **dict(new)}
        frontier = {p: overlay[p] for p in tlog.tree_hash_indexes(end)}
        root = tlog.assemble_tree_hash(end, frontier)
        chunks.append(Chunk(start, end, part, new, root))
    return Dataset(
        leaves=n_leaves,
        users=users,
        secrets=person_secrets,
        cases=case_rows,
        counters=sorted(counters.items()),
        events=events,
        materials=materials,
        chunks=chunks,
        files=files,
        kinds=kinds,
        seconds=time.perf_counter() - started,
    )


# -- loading it ---------------------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's format
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _pg_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


async def bulk_insert(
    conn: Any, table: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """Rows as they are, past the ORM: COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        records = [tuple(_pg_value(v) for v in row) for row in rows]
        await raw.driver_connection.copy_records_to_table(table, records=records, columns=columns)
        return
    marks = ", ".join("?" * len(columns))
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - constants
    await conn.exec_driver_sql(statement, [tuple(_sqlite_value(v) for v in r) for r in rows])


@dataclass
class Loaded:
    seconds: float
    cases: int
    events: int
    materials: int
    checkpoints: int
    db_mb: float


async def load(settings: Any, data: Dataset, checkpoint_every: int) -> Loaded:
    """Bulk-load the dataset into a migrated database, signing checkpoints as the log grows."""
    from sqlalchemy import func, insert, select, update

    from portal.accounts.models import User
    from portal.cases.models import Case, CaseCounter
    from portal.db import create_engine, create_sessionmaker, utcnow
    from portal.evidence.log import HEAD_ID, sign_checkpoint
    from portal.evidence.models import LogCheckpoint, LogHead, PersonSecret
    from portal.evidence.service import blob_store, log_key
    from portal.orgs import service as orgs

    started = time.perf_counter()
    store = blob_store(settings)
    for content in data.files:
        await asyncio.to_thread(store.put_bytes, content)
    key = log_key(settings)
    engine = create_engine(settings.database_url)
    pg = engine.dialect.name == "postgresql"
    sessions = create_sessionmaker(engine)
    checkpoints = 0
    try:
        async with sessions() as db:
            committee = await orgs.create_committee(
                db,
                None,
                name="普陀区科技金融产业解纷中心",
                name_en=None,
                region="上海市普陀区",
                categories=CATEGORIES,
                case_prefix="PT",
            )
            firm = await orgs.create_firm(
                db,
                None,
                name="示例消费金融股份有限公司",
                name_en=None,
                credit_code="91310000MA1K00002C",
                industry="lending",
            )
        async with engine.connect() as conn:
            if not pg:
                await conn.exec_driver_sql("PRAGMA synchronous=OFF")
            users = []
            for row in data.users:
                row = dict(row)
                if row["role"] in ("committee_admin", "mediator"):
                    row["committee_id"] = committee.id
                elif row["role"] == "firm_rep":
                    row["firm_id"] = firm.id
                users.append(row)
            await conn.execute(insert(User.__table__), users)
            now = utcnow()
            await conn.execute(
                insert(PersonSecret.__table__),
                [{"user_id": u, "secret": s, "created_at": now} for u, s in data.secrets],
            )
            for start in range(0, len(data.cases), ROWS):
                part = data.cases[start : start + ROWS]
                await conn.execute(
                    insert(Case.__table__),
                    [{**row, "committee_id": committee.id} for row in part],
                )
            await conn.execute(
                insert(CaseCounter.__table__),
                [{"committee_id": committee.id, "year": y, "last": n} for y, n in data.counters],
            )
            for start in range(0, len(data.events), ROWS):
                await bulk_insert(
                    conn, "case_events", EVENT_COLUMNS, data.events[start : start + ROWS]
                )
            await conn.commit()
            print(
                f"  loaded {len(data.cases):,} cases, {len(data.events):,} timeline events",
                flush=True,
            )
            for chunk in data.chunks:
                if STOP.is_set():
                    raise KeyboardInterrupt("stopped")
                await bulk_insert(conn, "evidence_leaves", LEAF_COLUMNS, chunk.leaves)
                for start in range(0, len(chunk.hashes), ROWS):
                    hashes = chunk.hashes[start : start + ROWS]
                    await bulk_insert(conn, "evidence_hashes", HASH_COLUMNS, list(hashes))
                await conn.execute(
                    update(LogHead)
                    .where(LogHead.id == HEAD_ID)
                    .values(size=chunk.end, root=chunk.root, updated_at=utcnow())
                )
                await conn.commit()
                if chunk.end % checkpoint_every == 0 or chunk.end == data.leaves:
                    async with sessions() as db:
                        signed = await sign_checkpoint(db, key)
                        assert signed is not None and signed.size == chunk.end
                    checkpoints += 1
                print(f"  loaded {chunk.end:,} leaves", end="\r", flush=True)
            print()
            for start in range(0, len(data.materials), ROWS):
                await bulk_insert(
                    conn, "case_materials", MATERIAL_COLUMNS, data.materials[start : start + ROWS]
                )
            if pg:
                for table in ("users", "cases", "case_events", "case_materials", "evidence_leaves"):
                    await conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                        f"(SELECT max(id) FROM {table}))"
                    )
            await conn.commit()
            assert await conn.scalar(select(func.count()).select_from(LogCheckpoint)) == checkpoints
        if pg:
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE")
                size = await conn.scalar(select(func.pg_database_size(func.current_database())))
        else:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA analysis_limit=1000")  # a sample per index
                await conn.exec_driver_sql("ANALYZE")
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                await conn.commit()
            path = settings.database_url.split(":///", 1)[1]
            size = await asyncio.to_thread(os.path.getsize, path)
    finally:
        await engine.dispose()
    return Loaded(
        seconds=time.perf_counter() - started,
        cases=len(data.cases),
        events=len(data.events),
        materials=len(data.materials),
        checkpoints=checkpoints,
        db_mb=float(size or 0) / MB,
    )


# -- measuring: proofs and verification ----------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Proofs:
    size: int
    count: int
    p50_ms: float
    p99_ms: float
    hashes: int
    proof_bytes: int
    receipt_bytes: int
    ref_p50_ms: float
    ref_p99_ms: float


async def measure_proofs(settings: Any, n: int, rng: random.Random) -> Proofs:
    """``n`` inclusion proofs of random leaves in the whole tree, each read from the database in
    one query (as receipts are built), checked against the head's root; then the reference:
    ``n`` primary-key lookups of one stored hash, in the same session."""
    from sqlalchemy import select

    from portal.db import create_engine, create_sessionmaker
    from portal.evidence import tlog
    from portal.evidence.log import DbHashReader, head_of, make_leaf_receipt
    from portal.evidence.models import LogHash, LogLeaf
    from portal.evidence.service import log_key
    from portal.evidence.verify.proofs import verify_inclusion
    from portal.evidence.verify.receipt import dump_receipt

    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            size, root = await head_of(db)
            reader = DbHashReader(db)
            indexes = [rng.randrange(size) for _ in range(n + n // 10)]
            timings: list[float] = []
            lengths: set[int] = set()
            for i, index in enumerate(indexes):
                began = time.perf_counter()
                proof = await tlog.prove_record_async(size, index, reader)
                elapsed = time.perf_counter() - began
                if i >= n // 10:  # the first tenth warms the caches
                    timings.append(elapsed)
                lengths.add(len(proof))
                if i % 50 == 0:
                    digest = await db.scalar(select(LogLeaf.hash).where(LogLeaf.seq == index))
                    assert digest is not None
                    assert verify_inclusion(index, size, bytes(digest), proof, root)
            leaf_id = await db.scalar(select(LogLeaf.id).where(LogLeaf.seq == indexes[0]))
            assert leaf_id is not None
            receipt = await make_leaf_receipt(db, leaf_id, log_key(settings))
            receipt_bytes = len(dump_receipt(receipt))
            stored = tlog.stored_hash_count(size)
            reference: list[float] = []
            for i in range(n + n // 10):
                position = rng.randrange(stored)
                began = time.perf_counter()
                found = (
                    await db.execute(select(LogHash.hash).where(LogHash.position == position))
                ).scalar_one()
                elapsed = time.perf_counter() - began
                assert len(found) == 32
                if i >= n // 10:
                    reference.append(elapsed)
    finally:
        await engine.dispose()
    hashes = max(lengths)
    return Proofs(
        size=size,
        count=len(timings),
        p50_ms=percentile(timings, 50) * 1000,
        p99_ms=percentile(timings, 99) * 1000,
        hashes=hashes,
        proof_bytes=32 * hashes,
        receipt_bytes=receipt_bytes,
        ref_p50_ms=percentile(reference, 50) * 1000,
        ref_p99_ms=percentile(reference, 99) * 1000,
    )


@dataclass
class Verification:
    leaves: int
    checkpoints: int
    files: int
    seconds: float
    ref_seconds: float
    workers: int
    one_process_seconds: float
    profile: list[str] = field(default_factory=list)


async def measure_verification(settings: Any, profile: bool) -> Verification:
    """``verify_log`` over the whole log (not recorded); the reference reads the same leaf rows
    in log order with one plain SELECT and hashes each (no checks)."""
    from sqlalchemy import select

    from portal.db import create_engine, create_sessionmaker
    from portal.evidence.integrity import verify_log
    from portal.evidence.models import LogLeaf
    from portal.evidence.service import blob_store, log_key

    engine = create_engine(settings.database_url)
    store, key = blob_store(settings), log_key(settings)
    sessions = create_sessionmaker(engine)
    workers = len(os.sched_getaffinity(0))  # as `jiefen evidence verify` does by default
    try:
        async with sessions() as db:
            result = await verify_log(db, store, key, record=False, workers=workers)
        if not result.ok:
            raise RuntimeError(f"verify_log found a problem: {result.problem}")
        async with sessions() as db:  # the comparison: everything in this one process
            alone = await verify_log(db, store, key, record=False, workers=1)
        if not alone.ok:
            raise RuntimeError(f"verify_log found a problem: {alone.problem}")
        async with sessions() as db:
            began = time.perf_counter()
            count = 0
            stream = await db.stream(
                select(LogLeaf.data).where(LogLeaf.seq.is_not(None)).order_by(LogLeaf.seq),
                execution_options={"yield_per": 5000},
            )
            async for partition in stream.partitions():
                for (data,) in partition:
                    hashlib.sha256(b"\x00" + bytes(data)).digest()
                    count += 1
            ref_seconds = time.perf_counter() - began
        assert count == result.leaves
        lines: list[str] = []
        if profile:
            profiler = cProfile.Profile()
            async with sessions() as db:
                profiler.enable()
                again = await verify_log(db, store, key, record=False)
                profiler.disable()
            stats = pstats.Stats(profiler, stream=io.StringIO())
            lines = [f"verify_log again under cProfile: {again.seconds:.1f} s"]
            lines += _profile_lines(stats)
    finally:
        await engine.dispose()
    return Verification(
        leaves=result.leaves,
        checkpoints=result.checkpoints,
        files=result.files,
        seconds=result.seconds,
        ref_seconds=ref_seconds,
        workers=workers,
        one_process_seconds=alone.seconds,
        profile=lines,
    )


def _profile_lines(stats: pstats.Stats) -> list[str]:
    """The functions that cost most: by own time (10), and the portal's by cumulative time
    (8); each as "own s, cumulative s: function (calls)"."""
    entries = stats.stats  # type: ignore[attr-defined]

    def name(key: tuple[str, int, str]) -> str:
        path, line, func = key
        path = path.replace(str(ROOT) + "/", "")
        path = re.sub(r".*/site-packages/", "", path)
        path = re.sub(r".*/lib/python3\.\d+/", "", path)
        return f"{path}:{line}({func})" if line else func

    def row(key: Any) -> str:
        primitive, calls, own, cumulative, _ = entries[key]
        count = f"{primitive:,}" if calls == primitive else f"{calls:,}/{primitive:,}"
        return f"{own:6.2f} s own, {cumulative:6.2f} s cum: `{name(key)}` ({count} calls)"

    by_own = sorted(entries, key=lambda k: -entries[k][2])[:10]
    portal = [k for k in entries if k[0].startswith(str(ROOT / "portal"))]
    by_cum = sorted(portal, key=lambda k: -entries[k][3])[:8]
    return (
        ["by own time:"]
        + [row(k) for k in by_own]
        + ["the portal's functions by cumulative time:"]
        + [row(k) for k in by_cum]
    )


# -- measuring: appends -------------------------------------------------------------------------


def bench_engine(url: str, synchronous: str | None, pool: int) -> Any:
    """The portal's engine (portal.db.create_engine) with ``pool`` connections and, on SQLite,
    ``PRAGMA synchronous`` set after the portal's own pragmas on every connection."""
    from sqlalchemy import event

    from portal.db import create_engine

    engine = create_engine(url, pool_size=pool, max_overflow=0)
    if synchronous:

        def pragma(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        event.listen(engine.sync_engine, "connect", pragma)
    return engine


async def run_for(
    tasks: int, seconds: float, op: Callable[[int, int], Awaitable[Any]]
) -> tuple[int, float]:
    """``tasks`` loops calling ``op(task, n)`` until ``seconds`` have passed; (count, wall).
    The process's CPU time per wall second (all threads: SQLite's too) goes to ``LAST_CPU``."""
    deadline = time.perf_counter() + seconds
    done = [0] * tasks

    async def loop(task: int) -> None:
        while time.perf_counter() < deadline and not STOP.is_set():
            await op(task, done[task])
            done[task] += 1

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop(t) for t in range(tasks)))
    wall = time.perf_counter() - began
    LAST_CPU[0] = (time.process_time() - cpu) / wall
    return sum(done), wall


LAST_CPU = [0.0]


@dataclass
class Writer:
    rate: float
    count: int
    per_commit: float
    cpu: float  # this process's CPU, in cores


@dataclass
class Appends:
    setting: str  # "synchronous=FULL", "synchronous_commit=on", ...
    durable: bool
    writer: Writer  # case-bound leaves
    writer_free: Writer  # leaves of no case
    stage_rate: float  # end to end: staged and sequenced
    stage_count: int
    staged_rate: float  # commits of staged leaves alone
    stage_cpu: float
    sequencer_rate: float
    ref_writer_rate: float
    ref_stage_rate: float
    sequenced: bool


def _body(task: int, n: int) -> dict[str, Any]:
    return {"digest": hashlib.sha256(f"{task}/{n}".encode()).hexdigest(), "pages": n}


async def _run_writer(
    sessions: Any, tasks: int, seconds: float, cases: list[tuple[int, str]] | None
) -> Writer:
    """``tasks`` appenders through one LogWriter, each on its own case (or on none)."""
    from portal.evidence.log import LogWriter

    writer = LogWriter(sessions)
    commits = 0
    original = writer._write

    async def counted(db: Any, batch: Any) -> int:
        nonlocal commits
        commits += 1
        return await original(db, batch)

    writer._write = counted  # type: ignore[method-assign]

    async def append(task: int, n: int) -> None:
        if cases is None:
            await writer.append("minutes", _body(task, n))
        else:
            case_id, number = cases[task]
            await writer.append("minutes", _body(task, n), case_id=case_id, case_number=number)

    count, wall = await run_for(tasks, seconds, append)
    await writer.close()
    return Writer(count / wall, count, count / max(1, commits), LAST_CPU[0])


async def _settle(engine: Any) -> None:
    """Start a measurement with no dirty pages around: what the bulk load and earlier phases
    left to write back would otherwise land on the commits' fsyncs."""
    await asyncio.to_thread(os.sync)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("CHECKPOINT")
    else:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    await asyncio.to_thread(os.sync)


async def tiny_inserts(url: str, synchronous: str | None, tasks: int, seconds: float) -> float:
    """The database's own rate of durable commits: ``tasks`` connections of the driver the
    portal uses (aiosqlite with the portal's pragmas; asyncpg), each inserting one tiny row per
    transaction; no SQLAlchemy."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        import asyncpg

        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        conns = [await asyncpg.connect(dsn) for _ in range(tasks)]
        try:
            await conns[0].execute(
                "CREATE TABLE IF NOT EXISTS bench_tiny (id BIGSERIAL PRIMARY KEY, v INTEGER)"
            )

            async def insert(task: int, n: int) -> None:
                async with conns[task].transaction():
                    await conns[task].execute("INSERT INTO bench_tiny (v) VALUES ($1)", n)

            count, wall = await run_for(tasks, seconds, insert)
        finally:
            for conn in conns:
                await conn.close()
        return count / wall
    import aiosqlite

    lite = []
    try:
        for _ in range(tasks):
            conn = await aiosqlite.connect(parsed.database or "")
            lite.append(conn)
            for pragma in ("journal_mode=WAL", "busy_timeout=10000", "foreign_keys=ON"):
                await conn.execute(f"PRAGMA {pragma}")
            await conn.execute(f"PRAGMA synchronous={synchronous or 'NORMAL'}")
        await lite[0].execute("CREATE TABLE IF NOT EXISTS bench_tiny (id INTEGER PRIMARY KEY, v)")
        await lite[0].commit()

        async def insert_lite(task: int, n: int) -> None:
            await lite[task].execute("INSERT INTO bench_tiny (v) VALUES (?)", (n,))
            await lite[task].commit()

        count, wall = await run_for(tasks, seconds, insert_lite)
    finally:
        for conn in lite:
            await conn.close()
    return count / wall


async def measure_appends(
    settings: Any, synchronous: str | None, args: argparse.Namespace, cases: list[tuple[int, str]]
) -> Appends:
    """Case-bound ``minutes`` leaves through LogWriter (group commit; and leaves of no case) and
    through stage_leaf + commit, one transaction per leaf, then integrate_all; the references
    insert one tiny row per committed transaction at the same concurrency."""
    from sqlalchemy import func, select, text

    from portal.db import create_sessionmaker
    from portal.evidence.log import head_of, integrate_all, stage_leaf
    from portal.evidence.models import LogLeaf

    writers, stagers = args.writers, args.stagers
    engine = bench_engine(settings.database_url, synchronous, max(writers, stagers) + 2)
    pg = engine.dialect.name == "postgresql"
    sessions = create_sessionmaker(engine)
    seconds = args.append_seconds
    try:
        async with engine.connect() as conn:
            if pg:
                setting = "synchronous_commit=" + str(
                    await conn.scalar(text("SHOW synchronous_commit"))
                )
            else:
                value = await conn.scalar(text("PRAGMA synchronous"))
                setting = "synchronous=" + {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[value]
            durable = setting in ("synchronous=FULL", "synchronous=EXTRA", "synchronous_commit=on")
        async with sessions() as db:
            size_before, _ = await head_of(db)

        await _settle(engine)
        writer = await _run_writer(sessions, writers, seconds, cases[:writers])
        writer_free = await _run_writer(sessions, writers, seconds, None)
        print(
            f"  {setting}: LogWriter {writer.rate:,.0f} leaves/s case-bound"
            f" ({writer.per_commit:.0f} per commit), {writer_free.rate:,.0f} leaves/s of no case"
            f" ({writer_free.per_commit:.0f} per commit)",
            flush=True,
        )

        # One transaction per leaf, then the sequencer.
        async def stage(task: int, n: int) -> None:
            case_id, number = cases[writers + task]
            async with sessions() as db:
                await stage_leaf(db, "minutes", _body(task, n), case_id=case_id, case_number=number)
                await db.commit()

        stage_count, stage_wall = await run_for(stagers, seconds, stage)
        stage_cpu = LAST_CPU[0]
        began = time.perf_counter()
        async with sessions() as db:
            sequenced_now = await integrate_all(db)
        integrate_wall = time.perf_counter() - began
        stage_rate = stage_count / (stage_wall + integrate_wall)
        print(
            f"  {setting}: stage_leaf+commit {stage_count / stage_wall:,.0f}/s, integrate_all"
            f" {sequenced_now / integrate_wall:,.0f}/s, end to end {stage_rate:,.0f}/s",
            flush=True,
        )
        async with sessions() as db:
            size_after, _ = await head_of(db)
            unsequenced = await db.scalar(
                select(func.count()).select_from(LogLeaf).where(LogLeaf.seq.is_(None))
            )
        sequenced = (
            unsequenced == 0
            and sequenced_now == stage_count
            and size_after == size_before + writer.count + writer_free.count + stage_count
        )

        # The references: one tiny row per committed transaction, straight on the driver.
        ref_writer_rate = await tiny_inserts(settings.database_url, synchronous, writers, seconds)
        ref_stage_rate = await tiny_inserts(settings.database_url, synchronous, stagers, seconds)
        print(
            f"  {setting}: one-row INSERT per commit {ref_writer_rate:,.0f}/s ({writers} tasks),"
            f" {ref_stage_rate:,.0f}/s ({stagers} tasks)",
            flush=True,
        )
    finally:
        await engine.dispose()
    return Appends(
        setting=setting,
        durable=durable,
        writer=writer,
        writer_free=writer_free,
        stage_rate=stage_rate,
        stage_count=stage_count,
        staged_rate=stage_count / stage_wall,
        stage_cpu=stage_cpu,
        sequencer_rate=sequenced_now / integrate_wall if integrate_wall else math.inf,
        ref_writer_rate=ref_writer_rate,
        ref_stage_rate=ref_stage_rate,
        sequenced=sequenced,
    )


async def append_cases(settings: Any, count: int) -> list[tuple[int, str]]:
    """``count`` numbered cases of the loaded log (each appender writes to its own case)."""
    from sqlalchemy import select

    from portal.cases.models import Case
    from portal.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(Case.id, Case.number)
                .where(Case.number.is_not(None))
                .order_by(Case.id.desc())
                .limit(count)
            )
            found = [(int(i), str(n)) for i, n in rows]
    finally:
        await engine.dispose()
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} numbered cases for {count} appenders")
    return found


# -- measuring: the upload ----------------------------------------------------------------------


@dataclass
class Upload:
    size: int
    seconds: float
    sha_seconds: float
    rss_started: float  # MB, idle after start-up
    rss_before: float  # logged in, just before the upload
    rss_peak: float  # during the upload (polled VmRSS, and VmHWM reset just before)
    rss_after: float

    @property
    def rate(self) -> float:
        return self.size / self.seconds / MB

    @property
    def sha_rate(self) -> float:
        return self.size / self.sha_seconds / MB


def write_text_file(path: Path, mib: int) -> str:
    """``mib`` MiB of ASCII text (numbered lines), and its SHA-256."""
    digest = hashlib.sha256()
    line = "Jiefen evidence upload benchmark: plain ASCII text, line {:09d}\n"
    block = "".join(line.format(i) for i in range(20_000)).encode("ascii")
    block = (block * (1 + (1 << 20) // len(block)))[: 1 << 20]
    with path.open("wb") as fh:
        for i in range(mib):
            chunk = f"{i:08d}".encode() + block[8:]
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def _rss_kb(pids: list[int], key: str) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


class RssSampler:
    """Polls the server's resident memory (VmRSS, all its processes) every few milliseconds."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now_kb(self) -> int:
        return _rss_kb(_process_tree(self.pid), "VmRSS")

    def hwm_kb(self) -> int:
        return _rss_kb(_process_tree(self.pid), "VmHWM")

    def reset_peak(self) -> None:
        """Reset VmHWM to the current RSS (Linux: ``5`` into /proc/<pid>/clear_refs)."""
        for pid in _process_tree(self.pid):
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, self.now_kb())
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()


async def post_file(
    url: str, path: Path, cookies: dict[str, str], token: str
) -> tuple[int, str, float]:
    """POST ``path`` as the ``file`` field of a multipart/form-data body, read from disk as it
    is sent (aiohttp, with Content-Length as a browser sends it); (status, location, seconds)."""
    import aiohttp

    boundary = "----jiefenbench" + secrets.token_hex(12)
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="kind"\r\n\r\nevidence\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="title"\r\n\r\nbenchmark upload\r\n'
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    total = len(head) + (await asyncio.to_thread(path.stat)).st_size + len(tail)

    async def body() -> AsyncIterator[bytes]:
        yield head
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk
        yield tail

    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(total),
        "X-CSRF-Token": token,
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
    }
    timeout = aiohttp.ClientTimeout(total=1800)
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()) as s:
        began = time.perf_counter()
        async with s.post(url, data=body(), headers=headers, allow_redirects=False) as response:
            await response.read()
            elapsed = time.perf_counter() - began
            return response.status, response.headers.get("Location", ""), elapsed


async def _csrf(base_url: str, cookies: dict[str, str]) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=base_url, cookies=cookies, timeout=30) as client:
        page = await client.get("/")
        found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
        if found is None:
            raise RuntimeError("no CSRF token on the home page")
        return found.group(1)


async def _demo_case(url: str) -> int:
    from sqlalchemy import select

    from portal.cases.models import Case
    from portal.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            case_id = await conn.scalar(select(Case.id).order_by(Case.id).limit(1))
    finally:
        await engine.dispose()
    if case_id is None:
        raise RuntimeError("jiefen demo made no case")
    return int(case_id)


async def _stored_material(url: str, case_id: int) -> tuple[int, str, int | None]:
    from sqlalchemy import select

    from portal.cases.models import CaseMaterial
    from portal.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(CaseMaterial.size, CaseMaterial.sha256, CaseMaterial.leaf_id)
                    .where(CaseMaterial.case_id == case_id)
                    .order_by(CaseMaterial.id.desc())
                    .limit(1)
                )
            ).one()
    finally:
        await engine.dispose()
    return int(row[0]), str(row[1]), row[2]


def measure_upload(
    settings: Any, args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack
) -> Upload:
    from portal.cli import DEMO_PASSWORD

    var_dir = Path(settings.var_dir)
    port = _free_port()
    env = _server_env(settings)
    env = {k: v for k, v in env.items() if not k.startswith(("EVIDENCE_", "BLOB_", "LOG_"))}
    env.update(EVIDENCE_MAX_MB=str(args.upload_mb + 100), BASE_URL=f"http://{HOST}:{port}")
    jiefen = str(ROOT / ".venv" / "bin" / "jiefen")
    subprocess.run(
        [jiefen, "demo"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=300
    )
    case_id = run_async(_demo_case(settings.database_url))

    path = workdir / "upload.txt"
    stack.callback(lambda: path.unlink(missing_ok=True))
    if not path.exists() or path.stat().st_size != args.upload_mb << 20:
        write_text_file(path, args.upload_mb)
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)  # page cache
    began = time.perf_counter()
    done = subprocess.run(["sha256sum", str(path)], check=True, capture_output=True, text=True)
    sha_seconds = time.perf_counter() - began
    expected = done.stdout.split()[0]

    server = start_server(
        "jiefen",
        [jiefen, "serve", "--host", HOST, "--port", str(port), "--workers", "1"],
        env,
        var_dir / "server.log",
        port,
    )
    stack.callback(server.stop)
    sampler = RssSampler(server.process.pid)
    time.sleep(1.0)
    started = sampler.now_kb()
    cookies = dict(run_async(login(server.url, "13800138000", DEMO_PASSWORD)).items())
    token = run_async(_csrf(server.url, cookies))
    time.sleep(1.0)
    before = sampler.now_kb()
    sampler.reset_peak()  # VmHWM from here on: the login's password hash is not the upload's
    with sampler:
        status, location, seconds = run_async(
            post_file(f"{server.url}/cases/{case_id}/materials", path, cookies, token)
        )
        time.sleep(0.5)
    after, hwm = sampler.now_kb(), sampler.hwm_kb()
    server.stop()
    if status != 303:
        raise RuntimeError(f"upload answered HTTP {status}")
    size, sha, leaf_id = run_async(_stored_material(settings.database_url, case_id))
    if size != args.upload_mb << 20 or sha != expected or leaf_id is None:
        tail = (var_dir / "server.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"upload not stored as sent ({size} bytes, {sha}, {location}):\n{tail}")
    mb = 1024 / MB  # kB (KiB) to MB
    print(
        f"  upload {size / seconds / MB:,.0f} MB/s, sha256sum {size / sha_seconds / MB:,.0f}"
        f" MB/s; server RSS {started * mb:.0f} MB started, {before * mb:.0f} MB logged in,"
        f" peak {max(sampler.peak_kb, hwm) * mb:.0f} MB (polled {sampler.peak_kb * mb:.0f},"
        f" VmHWM {hwm * mb:.0f}), after {after * mb:.0f} MB",
        flush=True,
    )
    return Upload(
        size=size,
        seconds=seconds,
        sha_seconds=sha_seconds,
        rss_started=started * mb,
        rss_before=before * mb,
        rss_peak=max(sampler.peak_kb, hwm, after) * mb,
        rss_after=after * mb,
    )


# -- the machine ---------------------------------------------------------------------------------


class OtherLoad:
    """Samples, every ``interval`` seconds, the CPU that processes other than this benchmark's
    (and PostgreSQL's, which serve it) use: the machine has 2 cores, and anything else running
    on it shows in every figure. ``cores`` is their average over the run."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _ticks() -> dict[int, tuple[str, int]]:
        out = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                out[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
        return out

    def _run(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        before, then = self._ticks(), time.monotonic()
        while not self._stop.wait(self.interval):
            now, at = self._ticks(), time.monotonic()
            ours = set(_process_tree(os.getpid()))
            use: dict[str, float] = {}
            for pid, (name, ticks) in now.items():
                if pid in ours or name.startswith("postgres") or pid not in before:
                    continue
                spent = (ticks - before[pid][1]) / hz / (at - then)
                if spent > 0.005:
                    use[name] = use.get(name, 0.0) + spent
            self.samples.append((sum(use.values()), use))
            before, then = now, at

    def __enter__(self) -> OtherLoad:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cores(self) -> float:
        return sum(c for c, _ in self.samples) / len(self.samples) if self.samples else 0.0

    def summary(self) -> str:
        names: dict[str, float] = {}
        for _, use in self.samples:
            for name, cores in use.items():
                names[name] = names.get(name, 0.0) + cores / len(self.samples)
        top = sorted(names.items(), key=lambda item: -item[1])[:3]
        busy = sum(1 for c, _ in self.samples if c > 0.5) / max(1, len(self.samples))
        return (
            f"other processes used {self.cores:.2f} of the 2 cores on average"
            f" (more than half a core {busy:.0%} of the time"
            + (": " + ", ".join(f"{n} {c:.2f}" for n, c in top) if top else "")
            + ")"
        )


# -- one backend ----------------------------------------------------------------------------------


@dataclass
class BackendRun:
    backend: str
    version: str
    loaded: Loaded
    proofs: Proofs
    verification: Verification
    appends: list[Appends]
    upload: Upload | None


def _settings(url: str, var_dir: Path) -> Any:
    from portal.settings import Settings

    return Settings(
        database_url=url,
        secret_key=secrets.token_urlsafe(32),
        data_key=secrets.token_urlsafe(32),
        var_dir=var_dir,
        storage_dir=var_dir / "storage",
        base_url=f"http://{HOST}:8000",
    )


async def _version(url: str) -> str:
    from portal.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                value = await conn.exec_driver_sql("SELECT sqlite_version()")
                return f"SQLite {value.scalar_one()}"
            value = await conn.exec_driver_sql("SHOW server_version")
            return f"PostgreSQL {value.scalar_one().split()[0]}"
    finally:
        await engine.dispose()


def run_backend(
    backend: str,
    args: argparse.Namespace,
    workdir: Path,
    data: Dataset,
    stack: contextlib.ExitStack,
) -> BackendRun:
    from portal.cli import upgrade_database

    print(f"\n== {backend}: {args.leaves:,} leaves", flush=True)
    var_dir = workdir / backend
    settings = _settings(
        fresh_database(backend, args.postgres_url, var_dir, stack, "jiefen_bench_ev"), var_dir
    )
    upgrade_database(settings)
    version = run_async(_version(settings.database_url))
    loaded = run_async(load(settings, data, args.checkpoint_every))
    print(
        f"  loaded in {loaded.seconds:.0f} s: {loaded.cases:,} cases, {loaded.events:,} events,"
        f" {loaded.materials:,} evidence items, {loaded.checkpoints} checkpoints,"
        f" {loaded.db_mb:,.0f} MB",
        flush=True,
    )
    rng = random.Random(args.seed + 1)
    proofs = run_async(measure_proofs(settings, args.proofs, rng))
    print(
        f"  proofs p50 {proofs.p50_ms:.3f} ms, p99 {proofs.p99_ms:.3f} ms ({proofs.hashes}"
        f" hashes); primary-key lookup p50 {proofs.ref_p50_ms:.3f} ms,"
        f" p99 {proofs.ref_p99_ms:.3f} ms",
        flush=True,
    )
    verification = run_async(measure_verification(settings, args.profile))
    print(
        f"  verify_log {verification.seconds:.1f} s with {verification.workers} workers"
        f" ({verification.one_process_seconds:.1f} s in one process;"
        f" {verification.leaves:,} leaves,"
        f" {verification.checkpoints} checkpoints, {verification.files} files);"
        f" SELECT + sha256 {verification.ref_seconds:.1f} s",
        flush=True,
    )
    for line in verification.profile:
        print("    " + line)
    cases = run_async(append_cases(settings, args.writers + args.stagers))
    settings_to_run = ["FULL", "NORMAL"] if backend == "sqlite" else [None]
    appends = [run_async(measure_appends(settings, s, args, cases)) for s in settings_to_run]
    upload = None
    if not args.skip_upload:
        up_dir = workdir / f"{backend}-upload"
        up_settings = _settings(
            fresh_database(backend, args.postgres_url, up_dir, stack, "jiefen_bench_ev"), up_dir
        )
        up_settings.ensure_dirs()
        upload = measure_upload(up_settings, args, workdir, stack)
    return BackendRun(backend, version, loaded, proofs, verification, appends, upload)


# -- reporting ------------------------------------------------------------------------------------

HEADER = ["backend", "measurement", "result", "reference, same run", "target"]


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def rows(runs: list[BackendRun], args: argparse.Namespace) -> list[list[str]]:
    table = []
    for run in runs:
        b = run.backend
        for a in run.appends:
            durable = "durable" if a.durable else "not durable"
            seq = "all sequenced" if a.sequenced else "NOT all sequenced"

            def target(rate: float, a: Appends = a) -> str:
                if not a.durable:
                    return "comparison"
                return f"≥ {TARGET_APPENDS:,.0f}/s {_mark(rate >= TARGET_APPENDS)}"

            ref = f"{a.ref_writer_rate:,.0f}/s one-row INSERT per commit, {args.writers} tasks"
            for label, w in (("case-bound", a.writer), ("no case", a.writer_free)):
                table.append(
                    [
                        b,
                        f"appends, LogWriter, {args.writers} appenders, {label} leaves,"
                        f" {a.setting} ({durable})",
                        f"{w.rate:,.0f}/s ({w.count:,} leaves, {w.per_commit:.0f} per commit,"
                        f" {seq}; bench process {w.cpu:.2f} cores)",
                        ref,
                        target(w.rate),
                    ]
                )
            table.append(
                [
                    b,
                    f"appends, stage_leaf + commit, {args.stagers} tasks, case-bound, then"
                    f" integrate_all, {a.setting} ({durable})",
                    f"{a.stage_rate:,.0f}/s end to end ({a.stage_count:,} leaves; commits"
                    f" {a.staged_rate:,.0f}/s, sequencer {a.sequencer_rate:,.0f}/s; bench"
                    f" process {a.stage_cpu:.2f} cores)",
                    f"{a.ref_stage_rate:,.0f}/s one-row INSERT per commit, {args.stagers} tasks",
                    target(a.stage_rate),
                ]
            )
        p = run.proofs
        table.append(
            [
                b,
                f"inclusion proof at {p.size:,} leaves ({p.count:,} random leaves)",
                f"p50 {p.p50_ms:.3f} ms, p99 {p.p99_ms:.3f} ms; {p.hashes} hashes ="
                f" {p.proof_bytes} B; receipt {p.receipt_bytes:,} B",
                f"primary-key lookup p50 {p.ref_p50_ms:.3f} ms, p99 {p.ref_p99_ms:.3f} ms",
                f"≤ {TARGET_PROOF_MS:g} ms (p99) {_mark(p.p99_ms <= TARGET_PROOF_MS)}",
            ]
        )
        v = run.verification
        table.append(
            [
                b,
                f"full verification, verify_log, {v.leaves:,} leaves",
                f"{v.seconds:.1f} s ({v.leaves / v.seconds:,.0f} leaves/s, {v.workers} worker"
                f" processes; in one process {v.one_process_seconds:.1f} s; checkpoints:"
                f" {v.checkpoints}, files: {v.files})",
                f"{v.ref_seconds:.1f} s SELECT + SHA-256 of the same leaves"
                f" ({v.seconds / v.ref_seconds:.0f}×)",
                f"≤ {TARGET_VERIFY_S:g} s {_mark(v.seconds <= TARGET_VERIFY_S)}",
            ]
        )
        u = run.upload
        if u is not None:
            share = u.rate / u.sha_rate
            ok_rss, ok_rate = u.rss_peak <= TARGET_RSS_MB, share >= TARGET_UPLOAD_SHARE
            table.append(
                [
                    b,
                    f"{u.size >> 20:,} MiB .txt upload over HTTP, `jiefen serve`",
                    f"{u.rate:,.0f} MB/s ({share:.0%} of sha256sum); server RSS peak"
                    f" {u.rss_peak:.0f} MB (+{u.rss_peak - u.rss_before:.0f} over the"
                    f" {u.rss_before:.0f} MB before; {u.rss_after:.0f} MB after)",
                    f"sha256sum {u.sha_rate:,.0f} MB/s",
                    f"RSS ≤ {TARGET_RSS_MB:g} MB {_mark(ok_rss)}, ≥ 50 % {_mark(ok_rate)}",
                ]
            )
    return table


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *table]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(HEADER), line(["-" * w for w in widths])]
    return "\n".join(out + [line(r) for r in table])


def markdown_table(table: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "| " + " | ".join("---" for _ in HEADER) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(out)


def notes(runs: list[BackendRun], data: Dataset) -> list[str]:
    kinds = ", ".join(f"{n:,} `{k}`" for k, n in sorted(data.kinds.items(), key=lambda i: -i[1]))
    out = [
        f"- The log: {data.leaves:,} leaves ({kinds}) over {len(data.cases):,} cases with"
        f" {len(data.events):,} timeline events and {len(data.materials):,} evidence items, built"
        f" in {data.seconds:.0f} s (encode_leaf in two processes, then the tree hashes); the"
        f" evidence items share {N_FILES} small files, so verification decrypts {N_FILES} blobs.",
    ]
    for run in runs:
        lo = run.loaded
        out.append(
            f"- {run.backend} ({run.version}): loaded in {lo.seconds:.0f} s by bulk inserts"
            f" (checkpoints signed: {lo.checkpoints}), database {lo.db_mb:,.0f} MB."
        )
        if run.upload is not None:
            u = run.upload
            out.append(
                f"  Upload: {u.size >> 20:,} MiB in {u.seconds:.1f} s; the idle server held"
                f" {u.rss_started:.0f} MB after start-up and {u.rss_before:.0f} MB once the demo"
                " consumer had logged in, before the upload."
            )
        for line in run.verification.profile:
            out.append(f"    - {line}" if line[0].isdigit() or line[0] == " " else f"  - {line}")
    out += [
        "",
        f"References for appends: {REFERENCES}. Appends run on top of the loaded log, each"
        " appender on its own case (so each leaf also reads its case's last leaf for `prev`);"
        " every pool has a connection per task. The reference is the database's own cost of a"
        " durable commit at that concurrency.",
    ]
    return out


SECTION = """
## Evidence log: appends, proofs, verification, upload (`bench/evidence.py`)

Per backend, on a fresh database: loads a realistic evidence log by bulk inserts (cases, their
timelines and evidence items, every leaf built as the portal builds it and chained per case, the
tree hashes, checkpoints), then measures inclusion proofs read from the database, a full
`verify_log`, durable appends on top of the log (`LogWriter` group commit; one transaction per
leaf with `stage_leaf`, then the sequencer), and a 1 GiB text file uploaded over HTTP to `jiefen
serve` in its own process. Targets: appends ≥ 2,000/s durable; a proof ≤ 1 ms at 1,000,000 leaves;
full verification of 1,000,000 leaves ≤ 30 s; a 1 GiB upload with the server's RSS ≤ 100 MB and at
least half the throughput of `sha256sum` on the same file.

```sh
.venv/bin/python bench/evidence.py            # both backends; --backend, --leaves, --skip-upload
```

{block}
"""


def write_docs(
    runs: list[BackendRun],
    args: argparse.Namespace,
    data: Dataset,
    elapsed: float,
    other: OtherLoad,
) -> None:
    now = datetime.now().astimezone()
    lines = [
        START,
        f"Latest run: {now:%Y-%m-%d %H:%M %Z}, {machine()}; "
        + ", ".join(r.version for r in runs)
        + f"; {args.leaves:,} leaves, {args.proofs:,} proofs, {args.append_seconds:g} s per"
        f" append measurement; the whole run took {elapsed / 60:.0f} min; {other.summary()}."
        " MB = 10^6 bytes.",
        "",
        markdown_table(rows(runs, args)),
        "",
        *notes(runs, data),
        END,
    ]
    block = "\n".join(lines)
    update_docs(block, START, END, SECTION.format(block=block))


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--checkpoint-every", type=int, default=250_000, help="leaves")
    parser.add_argument("--proofs", type=int, default=1000)
    parser.add_argument("--append-seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--writers", type=int, default=64, help="LogWriter appenders")
    parser.add_argument("--stagers", type=int, default=16, help="stage_leaf tasks")
    parser.add_argument("--upload-mb", type=int, default=1024, help="MiB")
    parser.add_argument("--skip-upload", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile a second verify_log")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
        help="a database on the loopback server to connect to while creating the bench ones",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args(argv)
    if args.checkpoint_every % CHUNK:
        parser.error(f"--checkpoint-every must be a multiple of {CHUNK:,}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    started = time.monotonic()
    print(f"building {args.leaves:,} leaves...", flush=True)
    data = generate(args.leaves, args.seed)
    # The dataset stays in memory for the second backend: keep the collector from walking it
    # again and again while this process measures (the portal's processes do not hold it).
    gc.collect()
    gc.freeze()
    print(
        f"  built in {data.seconds:.0f} s: {len(data.cases):,} cases, {len(data.events):,}"
        f" events, {len(data.materials):,} evidence items",
        flush=True,
    )
    runs: list[BackendRun] = []
    workdir = Path(tempfile.mkdtemp(prefix="jiefen-bench-evidence-"))
    other = OtherLoad()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        stack.enter_context(other)
        for backend in backends:
            with contextlib.ExitStack() as inner:
                runs.append(run_backend(backend, args, workdir, data, inner))
    elapsed = time.monotonic() - started
    print()
    print(
        f"Evidence benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}:"
        f" {args.leaves:,} leaves, {machine()}"
    )
    print(text_table(rows(runs, args)))
    print("\n".join(notes(runs, data)))
    print(f"whole run: {elapsed / 60:.1f} min; {other.summary()}")
    if not args.no_docs:
        write_docs(runs, args, data, elapsed, other)
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers, databases and temporary files removed", file=sys.stderr)
        sys.exit(130)
