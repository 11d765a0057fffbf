"""Spreadsheet downloads (CSV and XLSX) written as rows arrive, never built in memory: the
dashboard's tables (portal.analytics.views) and the case lists (portal.cases.views).

A text cell that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return) is written with a leading apostrophe; XLSX cells are
written as plain strings and numbers, never as formulas or links."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

FORMATS = ("csv", "xlsx")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

Lines = Iterable[Sequence[Any]] | AsyncIterable[Sequence[Any]]


def safe_cell(value: Any) -> Any:
    """Text that a spreadsheet would take for a formula, neutralised with an apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


async def _each(lines: Lines) -> AsyncIterator[Sequence[Any]]:
    if isinstance(lines, AsyncIterable):
        async for line in lines:
            yield line
    else:
        for line in lines:
            yield line


async def _csv(lines: Lines) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    yield "\ufeff".encode()  # so that Excel reads the file as UTF-8
    async for line in _each(lines):
        writer.writerow([safe_cell(value) for value in line])
        if buffer.tell() >= 16 * 1024:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode("utf-8")


async def _xlsx(lines: Lines) -> str:
    """The workbook written row by row to a temporary file (xlsxwriter's constant memory mode);
    returns its path."""
    import xlsxwriter

    handle, path = tempfile.mkstemp(suffix=".xlsx")
    os.close(handle)
    try:
        workbook = xlsxwriter.Workbook(
            path,
            {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False},
        )
        sheet = workbook.add_worksheet()
        r = 0
        async for line in _each(lines):
            for c, value in enumerate(line):
                if value is None:
                    continue
                if isinstance(value, str):
                    sheet.write_string(r, c, value)
                else:
                    sheet.write_number(r, c, value)
            r += 1
        workbook.close()
    except BaseException:
        os.unlink(path)
        raise
    return path


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(64 * 1024):
            yield chunk


async def download(fmt: str, name: str, lines: Lines) -> Response:
    """``lines`` (a header line first) as ``name``.csv or .xlsx. CSV is streamed as the lines
    come; XLSX is written to a temporary file first (its format needs the whole sheet),
    streamed, then removed."""
    disposition = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
    if fmt == "csv":
        return StreamingResponse(
            _csv(lines), media_type="text/csv; charset=utf-8", headers=disposition
        )
    if fmt != "xlsx":
        raise ValueError(fmt)
    path = await _xlsx(lines)
    return StreamingResponse(
        _file_chunks(path),
        media_type=XLSX_TYPE,
        headers=disposition,
        background=BackgroundTask(os.unlink, path),
    )
