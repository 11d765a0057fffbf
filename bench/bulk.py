"""Bulk handling and the firm API (issue 8): the API's read throughput.

For each backend (SQLite, PostgreSQL): a fresh database seeded with ``--cases`` filings
(bench/cases.py's generator), a firm representative of the firm with the most cases and an API
token; the portal served by ``jiefen serve`` (one process, rate limit lifted); then 16
concurrent clients read the firm's case list (50 a page, following cursors) and single cases
for ``--seconds`` each. The reference, in the same run: a bare Starlette JSON endpoint served by
uvicorn in its own process, answering a list of the same size.

Then batch import (cases.imports), on the same database once the API is measured: a firm's
CSV of ``--import-rows`` rows (10,000 and 100,000 by default; every row a new claimant, so a
placeholder account each) uploaded, checked (the dry run) and imported with the portal's own
functions, in-process against the real database and blob store, timed by phase. The
reference, in the same run: ``sha256sum`` of the same file.

    .venv/bin/python bench/bulk.py --database both
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cases import (  # noqa: E402 - after the path set-up above
    DEFAULT_POSTGRES_ADMIN_URL,
    HOST,
    Result,
    _free_port,
    _server_env,
    fresh_database,
    load,
    machine,
    run_async,
    seed,
    start_bare,
    start_server,
)

CONCURRENCY = 16
HEADER = ["backend", "endpoint", "requests", "p50 ms", "p99 ms", "req/s", "errors"]


def serve_bare(port: int) -> None:
    """The reference: one Starlette route answering a JSON list like the API's page of 50."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    item = {
        "id": 123456,
        "number": "QZ-2026-000123",
        "status": "in_mediation",
        "category": "credit_card",
        "amount_fen": 1234500,
        "submitted_at": "2026-11-20T02:03:04Z",
        "accepted_at": "2026-11-21T02:03:04Z",
        "closed_at": None,
        "firm_response": "agree",
        "firm_response_due": "2026-11-28",
        "close_due": "2026-12-12",
        "outcome": None,
        "updated_at": "2026-11-21T02:03:04Z",
    }
    body = {"items": [item] * 50, "next_cursor": "123406"}

    async def cases(request: Request) -> JSONResponse:
        return JSONResponse(body)

    uvicorn.run(
        Starlette(routes=[Route("/cases", cases)]), host=HOST, port=port, log_level="warning"
    )


async def _token(settings: Any) -> tuple[str, list[int]]:
    """A representative of the firm with the most cases, a token with every permission, and
    that firm's case ids."""
    from sqlalchemy import func, select

    from portal.accounts import service as accounts
    from portal.api import service as api
    from portal.cases.models import Case
    from portal.crypto import DataVault
    from portal.db import create_engine, create_sessionmaker
    from portal.policy import Role

    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as db:
            firm_id, _ = (
                await db.execute(
                    select(Case.respondent_firm_id, func.count())
                    .where(Case.respondent_firm_id.is_not(None), Case.status != "draft")
                    .group_by(Case.respondent_firm_id)
                    .order_by(func.count().desc())
                    .limit(1)
                )
            ).one()
            ids = list(
                await db.scalars(
                    select(Case.id).where(
                        Case.respondent_firm_id == firm_id, Case.status != "draft"
                    )
                )
            )
            rep = await accounts.create_user(
                db,
                DataVault(settings.data_key),
                role=Role.FIRM_REP,
                display_name="接口",
                password=secrets.token_urlsafe(16),
                email=f"api-{secrets.token_hex(4)}@example.com",
                firm_id=firm_id,
            )
            issued = await api.create_token(db, rep, name="bench", scopes=list(api.SCOPES), days=30)
    finally:
        await engine.dispose()
    return issued.secret, ids


async def _measure(
    base_url: str, paths: list[str], marker: bytes, token: str | None, seconds: float
) -> Result:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30
    ) as c:

        async def get(path: str) -> tuple[int, bytes]:
            response = await c.get(path)
            return response.status_code, response.content

        for path in paths[:CONCURRENCY]:  # warm up
            await get(path)
        return await load(get, paths, 10**9, CONCURRENCY, marker, seconds)


@dataclass
class Row:
    backend: str
    endpoint: str
    result: Result

    def cells(self) -> list[str]:
        r = self.result
        return [
            self.backend,
            self.endpoint,
            f"{len(r.latencies)}",
            f"{r.percentile(50):.1f}",
            f"{r.percentile(99):.1f}",
            f"{r.rate:.0f}",
            f"{r.errors}",
        ]


def run_backend(
    backend: str, args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack
) -> tuple[list[Row], list[list[str]]]:
    from portal.cli import upgrade_database
    from portal.settings import Settings

    print(f"\n== {backend}: {args.cases:,} cases", flush=True)
    port = _free_port()
    var_dir = workdir / backend
    url = fresh_database(backend, args.postgres_url, var_dir, stack, prefix="jiefen_bulk")
    settings = Settings(
        database_url=url,
        secret_key=secrets.token_urlsafe(32),
        data_key=secrets.token_urlsafe(32),
        var_dir=var_dir,
        storage_dir=var_dir / "storage",
        base_url=f"http://{HOST}:{port}",
    )
    upgrade_database(settings)
    info = run_async(seed(settings, backend, args.cases, random.Random(args.seed)))
    token, ids = run_async(_token(settings))
    print(f"  seeded in {info.seconds:.0f} s; the firm has {len(ids):,} cases", flush=True)
    env = {**_server_env(settings), "API_RATE_LIMIT": "100000000/minute", "LOG_LEVEL": "WARNING"}
    server = start_server(
        "jiefen",
        [str(ROOT / ".venv" / "bin" / "jiefen"), "serve", "--host", HOST, "--port", str(port)],
        env,
        var_dir / "server.log",
        port,
    )
    stack.callback(server.stop)
    # The portal's background work after a bulk seed (the dashboard's totals, the likeness
    # index, the case library) runs first: measured after it, as a portal in service is.
    print(f"  letting the background work settle for {args.settle:.0f} s", flush=True)
    time.sleep(args.settle)
    rng = random.Random(args.seed)
    # Pages as a client walks them: the first page, and pages after a cursor.
    ids.sort(reverse=True)
    cursors = [ids[i] for i in range(49, len(ids), 50)]
    list_paths = ["/api/v1/cases?limit=50"] + [
        f"/api/v1/cases?limit=50&cursor={c}" for c in rng.sample(cursors, min(len(cursors), 500))
    ]
    case_paths = [f"/api/v1/cases/{i}" for i in rng.sample(ids, min(len(ids), 2000))]
    rows = []
    for name, paths, marker in (
        ("API cases list (50)", list_paths, b'"items"'),
        ("API one case", case_paths, b'"materials"'),
    ):
        result = run_async(_measure(server.url, paths, marker, token, args.seconds))
        print(f"  {name}: {result.rate:.0f} req/s, p99 {result.percentile(99):.1f} ms", flush=True)
        rows.append(Row(backend, name, result))
    server.stop()
    imported = run_imports(backend, settings, args.import_rows, var_dir) if args.import_rows else []
    return rows, imported


IMPORT_HEADER = [
    "backend",
    "rows",
    "file MB",
    "upload s",
    "check s",
    "import s",
    "total s",
    "rows/s",
    "sha256sum s",
]


def import_csv(rows: int, seed: int) -> bytes:
    """A firm's file of ``rows`` complaints in the template's Chinese columns (no firm code)."""
    from portal.validators import resident_id_check_character

    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "外部编号",
            "被申请机构统一社会信用代码",
            "纠纷类型",
            "申请人姓名",
            "申请人身份证号",
            "申请人手机号",
            "金额（元）",
            "纠纷发生日期",
            "纠纷事实与请求",
            "法院案号",
        ]
    )
    categories = ["信用卡", "小额贷款", "credit_card", "small_loan"]
    for n in range(rows):
        region = rng.choice(["110105", "350203", "310101"])
        born = f"19{rng.randint(50, 99)}0{rng.randint(1, 9)}{rng.randint(10, 28)}"
        body = f"{region}{born}{n % 1000:03d}"
        writer.writerow(
            [
                f"B{seed}-{n:07d}",
                "",
                rng.choice(categories),
                f"客户{n}",
                body + resident_id_check_character(body),
                f"13{seed % 10}{n:08d}",
                f"{rng.randint(100, 500_000)}.{rng.randint(0, 99):02d}",
                f"2026-0{rng.randint(1, 9)}-{rng.randint(10, 28)}",
                f"第{n}号投诉：分期手续费与宣传不符，请求退还手续费{rng.randint(100, 9000)}元。",
                "",
            ]
        )
    return out.getvalue().encode("utf-8")


async def _import(settings: Any, data: bytes) -> tuple[float, float, float, int]:
    """Upload, check and import ``data`` as a firm representative: the seconds of each phase
    and the cases imported."""
    from sqlalchemy import func, select

    from portal.accounts import service as accounts
    from portal.cases import imports
    from portal.cases.models import Case, ImportBatch
    from portal.crypto import DataVault
    from portal.db import create_engine, create_sessionmaker
    from portal.evidence import service as evidence
    from portal.policy import Role

    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    vault = DataVault(settings.data_key)
    store = evidence.blob_store(settings)
    try:
        async with sessions() as db:
            firm_id = await db.scalar(
                select(Case.respondent_firm_id)
                .where(Case.respondent_firm_id.is_not(None))
                .group_by(Case.respondent_firm_id)
                .order_by(func.count().desc())
                .limit(1)
            )
            rep = await accounts.create_user(
                db,
                vault,
                role=Role.FIRM_REP,
                display_name="导入",
                password=secrets.token_urlsafe(16),
                email=f"import-{secrets.token_hex(4)}@example.com",
                firm_id=firm_id,
            )
            started = time.perf_counter()
            batch = await imports.create_batch(
                db, store, rep, kind="firm", filename="bench.csv", data=data
            )
            uploaded = time.perf_counter()
        await imports.check_batch(sessions, store, batch.id)
        checked = time.perf_counter()
        async with sessions() as db:
            fresh = await db.get(ImportBatch, batch.id)
            assert fresh is not None and fresh.status == "checked", fresh and fresh.error
            assert fresh.rows_invalid == 0, fresh.report[:3]
            await imports.start_import(db, fresh, rep, "all")
        ok = await imports.import_batch(sessions, store, vault, batch.id)
        done = time.perf_counter()
        async with sessions() as db:
            fresh = await db.get(ImportBatch, batch.id)
            assert ok and fresh is not None, fresh and fresh.error
            imported = fresh.rows_imported
    finally:
        await engine.dispose()
    return uploaded - started, checked - uploaded, done - checked, imported


def run_imports(backend: str, settings: Any, sizes: list[int], workdir: Path) -> list[list[str]]:
    rows = []
    for i, size in enumerate(sizes):
        data = import_csv(size, seed=i + 1)
        path = workdir / f"import-{size}.csv"
        path.write_bytes(data)
        started = time.perf_counter()
        subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
        reference = time.perf_counter() - started
        upload, check, write, imported = asyncio.run(_import(settings, data))
        assert imported == size, (imported, size)
        total = upload + check + write
        print(
            f"  import {size:,} rows: upload {upload:.1f} s, check {check:.1f} s, import"
            f" {write:.1f} s ({size / total:,.0f} rows/s; sha256sum {reference * 1000:.0f} ms)",
            flush=True,
        )
        rows.append(
            [
                backend,
                f"{size:,}",
                f"{len(data) / 1e6:.1f}",
                f"{upload:.2f}",
                f"{check:.1f}",
                f"{write:.1f}",
                f"{total:.1f}",
                f"{size / total:,.0f}",
                f"{reference:.3f}",
            ]
        )
    return rows


def table(rows: list[list[str]], header: list[str] = HEADER) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, ["-" * w for w in widths], *rows]
    ]
    return "\n".join(out)


def markdown(rows: list[list[str]], header: list[str] = HEADER) -> str:
    out = ["| " + " | ".join(header) + " |"]
    out.append("| " + " | ".join("---" if i < 2 else "---:" for i in range(len(header))) + " |")
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--settle", type=float, default=90.0)
    parser.add_argument(
        "--import-rows", type=int, nargs="*", default=[10_000, 100_000], help="none: no import"
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_ADMIN_URL)
    parser.add_argument("--serve-bare", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    started = time.monotonic()
    backends = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    rows: list[Row] = []
    imported: list[list[str]] = []
    workdir = Path(tempfile.mkdtemp(prefix="jiefen-bulk-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        bare = start_bare(Path(__file__).resolve(), workdir, stack)
        reference = run_async(_measure(bare.url, ["/cases"], b'"items"', None, args.seconds))
        rows.append(Row("-", "bare Starlette JSON (50)", reference))
        for backend in backends:
            read, written = run_backend(backend, args, workdir, stack)
            rows += read
            imported += written
    cells = [r.cells() for r in rows]
    print()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; {CONCURRENCY} concurrent clients,"
        f" {args.seconds:.0f} s each; {time.monotonic() - started:.0f} s in all"
    )
    print(table(cells))
    print()
    print(markdown(cells))
    if imported:
        print()
        print("Batch import: upload, dry run, import; the reference is sha256sum of the same file")
        print(table(imported, IMPORT_HEADER))
        print()
        print(markdown(imported, IMPORT_HEADER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
