"""Serving stored blobs over HTTP: one byte range at a time, names in any language.

Decisions: a Range header this module cannot honour exactly is answered as RFC 9110 allows.
Another unit or bad syntax is ignored (200, the whole file). Several ranges get one 206 response
that covers them all, from the first byte asked for to the last (no multipart responses, so no
amplification by many small ranges). A range that starts beyond the end gets 416 with
``Content-Range: bytes */size``. ``If-Range`` is honoured against the ETag (the SHA-256); with
a date or another tag the whole file is sent.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from portal.evidence.blobs import BlobStore

_DIGITS = re.compile(r"[0-9]+")
_MAX_RANGES = 100  # more parts than this: ignore the header and send the whole file


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class RangeNotSatisfiable(Exception):
    """No requested range overlaps the file: answer 416 with ``Content-Range: bytes */size``."""

    def __init__(self, size: int) -> None:
        super().__init__(f"no requested range within 0..{size}")
        self.size = size

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


def _number(text: str) -> int | None:
    if not _DIGITS.fullmatch(text):
        return None
    return int(text) if len(text) <= 20 else 10**20  # (int() refuses very long strings)


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The part of a ``size``-byte file a ``Range`` header asks for; None means all of it.

    Raises ``RangeNotSatisfiable`` when the header is valid but no range overlaps the file.
    """
    if not header:
        return None
    unit, equals, spec = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts or len(parts) > _MAX_RANGES:
        return None
    spans: list[tuple[int, int]] = []
    for part in parts:
        first_text, dash, last_text = part.partition("-")
        if not dash:
            return None
        first_text, last_text = first_text.strip(), last_text.strip()
        if not first_text:  # "-N": the last N bytes
            suffix = _number(last_text)
            if suffix is None:
                return None
            if suffix > 0 and size > 0:
                spans.append((max(0, size - suffix), size))
            continue
        first = _number(first_text)
        last = _number(last_text) if last_text else 10**20  # "N-": to the end
        if first is None or last is None or last < first:
            return None
        if first < size:
            spans.append((first, min(last + 1, size)))
    if not spans:
        raise RangeNotSatisfiable(size)
    return ByteRange(min(start for start, _ in spans), max(end for _, end in spans))


def content_disposition(filename: str, inline: bool = False) -> str:
    """``inline`` or ``attachment`` with an ASCII fallback name and the RFC 5987 UTF-8 one."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


async def _in_threads(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """Decrypt in worker threads; close the blob even when the client goes away."""
    try:
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        chunks.close()


async def blob_response(
    request: Request,
    store: BlobStore,
    sha256: str,
    *,
    filename: str,
    content_type: str,
    inline: bool = False,
) -> Response:
    """200 with the whole blob, 206 with the range asked for, or 416; HEAD gets the headers.

    ``inline`` shows the file in the browser (pass ``Kind.inline``: images and PDF only);
    otherwise it is downloaded. Raises ``BlobNotFound`` (a ``NotFound``) if the blob is gone.
    """
    size = await anyio.to_thread.run_sync(store.size, sha256)
    etag = f'"{sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(filename, inline),
    }
    if content_type != "application/pdf":  # (browsers' PDF viewers do not run sandboxed)
        headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        range_header = None
    try:
        byte_range = parse_range(range_header, size)
    except RangeNotSatisfiable as exc:
        headers["Content-Range"] = exc.content_range
        return Response(status_code=416, headers=headers)
    status = 200
    if byte_range is None:
        byte_range = ByteRange(0, size)
    else:
        status = 206
        headers["Content-Range"] = byte_range.content_range(size)
    headers["Content-Length"] = str(byte_range.length)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=content_type)
    chunks = await anyio.to_thread.run_sync(
        store.open_range, sha256, byte_range.start, byte_range.end
    )
    return StreamingResponse(
        _in_threads(chunks), status_code=status, headers=headers, media_type=content_type
    )
