"""Batch import pages: upload a file, watch it checked, read the report, import (cases.imports)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from portal import exports
from portal.cases import imports
from portal.cases.models import ImportBatch
from portal.cases.policy import IMPORTS
from portal.errors import DomainError, NotFound
from portal.i18n import Msg, _l
from portal.web import (
    Form,
    client_ip,
    current_user,
    db_session,
    flash,
    is_htmx,
    redirect,
    render,
    require,
)

# Running checks and imports, so that they are not collected while they run.
_TASKS: set[asyncio.Task[Any]] = set()


class _TooLarge(Exception):
    pass


def _max_bytes(request: Request) -> int:
    return int(request.app.state.settings.import_max_mb) * 1024 * 1024


def _too_large(request: Request) -> Msg:
    return _l(
        "The file is larger than {mb} MB. Split it into several files.",
        mb=request.app.state.settings.import_max_mb,
    )


async def _read_upload(request: Request) -> tuple[Form, UploadFile | None]:
    """The form with its one file, refusing a body over the limit before it is all read."""
    limit = _max_bytes(request) + 64 * 1024  # the file, and room for the form's fields
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _TooLarge
    seen = 0
    receive = request.receive

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        return message

    data = await Request(request.scope, limited).form(max_files=1, max_fields=10)
    upload = data.get("file")
    return Form(data), upload if isinstance(upload, UploadFile) else None


async def _page(request: Request, form: Form, status_code: int = 200) -> Response:
    user = request.state.user
    async with db_session(request) as db:
        recent = await imports.recent_batches(db, user)
    return render(
        request,
        "cases/import.html",
        {
            "form": form,
            "kinds": imports.KINDS if user.role == "committee_admin" else None,
            "columns": imports.COLUMNS,
            "recent": recent,
            "statuses": imports.STATUSES,
            "max_mb": request.app.state.settings.import_max_mb,
            "max_rows": imports.MAX_ROWS,
        },
        status_code=status_code,
    )


def _run(coro: Any) -> None:
    task = asyncio.create_task(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def import_page(request: Request) -> Response:
    """GET: the upload form, the templates and this importer's recent files. POST: upload."""
    require(request, "import", IMPORTS)
    if request.method == "GET":
        return await _page(request, Form({"kind": "firm"}))
    state = request.app.state
    try:
        form, upload = await _read_upload(request)
    except _TooLarge:
        form = Form()
        form.add_error("file", _too_large(request))
        return await _page(request, form, status_code=413)
    if upload is None or not upload.filename:
        form.add_error("file", _l("Choose a file to upload."))
        return await _page(request, form, status_code=400)
    try:
        data = await upload.read()
    finally:
        await upload.close()
    if len(data) > _max_bytes(request):
        form.add_error("file", _too_large(request))
        return await _page(request, form, status_code=413)
    deadline: date | None = None
    if form.value("court_deadline"):
        try:
            deadline = date.fromisoformat(form.value("court_deadline").strip())
        except ValueError:
            form.add_error("court_deadline", _l("Enter a date like 2026-03-15."))
            return await _page(request, form, status_code=400)
    async with db_session(request) as db:
        actor = await current_user(request, db)
        try:
            batch = await imports.create_batch(
                db,
                state.blobs,
                actor,
                kind=form.value("kind", "firm"),
                filename=upload.filename,
                data=data,
                court_name=form.value("court_name"),
                court_deadline=deadline,
            )
        except DomainError as exc:
            form.add_error(exc.field, exc.message)
            return await _page(request, form, status_code=400)
    imports.RUNNING[batch.id] = imports.Progress("checking", 0)
    _run(imports.check_batch(state.db, state.blobs, batch.id))
    return redirect(request, "cases.import_batch", batch_id=batch.id)


async def _load(request: Request, permission: str = "view") -> ImportBatch:
    async with db_session(request) as db:
        batch = await db.get(ImportBatch, request.path_params["batch_id"])
    if batch is None:
        raise NotFound
    require(request, permission, batch)
    return batch


def _problems(batch: ImportBatch) -> list[tuple[int, Msg | None, Msg]]:
    return [
        (row, imports.COLUMN_LABELS.get(key), Msg(msgid, params))
        for row, key, msgid, params in batch.report
    ]


async def batch_page(request: Request) -> Response:
    """The batch: progress while it is checked or imported (polled), then its report."""
    batch = await _load(request)
    progress = imports.RUNNING.get(batch.id)
    context = {
        "batch": batch,
        "progress": progress,
        "stalled": imports.stalled(batch),
        "percent": int(100 * progress.done / progress.total) if progress and progress.total else 0,
        "problems": _problems(batch),
        "report_limit": imports.REPORT_LIMIT,
        "error": Msg(batch.error[0], batch.error[1]) if batch.error else None,
        "statuses": imports.STATUSES,
        "kinds": imports.KINDS,
        "modes": imports.MODES,
        "columns": imports.COLUMN_LABELS,
        "form": Form({"mode": "all" if not batch.rows_invalid else "valid"}),
    }
    block = "status" if is_htmx(request) else None
    return render(request, "cases/import_batch.html", context, block=block)


async def start(request: Request) -> Response:
    """Import a checked batch: all rows or none, or the valid rows only."""
    batch = await _load(request, "import")
    form = Form(await request.form(max_files=0, max_fields=5))
    async with db_session(request) as db:
        actor = await current_user(request, db)
        fresh = await db.get(ImportBatch, batch.id)
        assert fresh is not None
        try:
            await imports.start_import(db, fresh, actor, form.value("mode"))
        except DomainError as exc:
            response = redirect(request, "cases.import_batch", batch_id=batch.id)
            return flash(request, response, exc.message, "error")
    imports.RUNNING[batch.id] = imports.Progress("importing", 0)
    _run(_import_and_wake(request, batch.id))
    return redirect(request, "cases.import_batch", batch_id=batch.id)


async def _import_and_wake(request: Request, batch_id: int) -> None:
    state = request.app.state
    if await imports.import_batch(state.db, state.blobs, state.vault, batch_id, client_ip(request)):
        for worker in ("outbox", "sequencer"):
            loop = getattr(state, worker, None)
            if loop is not None:
                loop.wake()


async def template(request: Request) -> Response:
    """The import template in the chosen language, as CSV or XLSX, with one example row."""
    require(request, "import", IMPORTS)
    fmt = request.path_params["fmt"]
    if fmt not in exports.FORMATS:
        raise NotFound
    language = request.query_params.get("lang", "zh_CN")
    catalogues = request.app.state.catalogues
    translations = catalogues.get(language) or catalogues["zh_CN"]

    def title(column: imports.Column) -> str:
        text = column.label.render(translations)
        return f"{text}*" if column.required else text

    async def lines() -> AsyncIterator[list[Any]]:
        yield [title(c) for c in imports.COLUMNS]
        yield [c.example for c in imports.COLUMNS]

    suffix = "zh" if language == "zh_CN" else "en"
    return await exports.download(fmt, f"jiefen-import-template-{suffix}", lines())


routes = [
    Route("/cases/import", import_page, methods=["GET", "POST"], name="cases.import"),
    Route("/cases/import/template.{fmt}", template, name="cases.import_template"),
    Route("/cases/import/{batch_id:int}", batch_page, name="cases.import_batch"),
    Route(
        "/cases/import/{batch_id:int}/start",
        start,
        methods=["POST"],
        name="cases.import_start",
    ),
]
