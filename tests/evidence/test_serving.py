"""Serving blobs: Range parsing, and 200/206/416 responses from a tiny app on real files."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from portal.errors import NotFound
from portal.evidence.blobs import BlobStore
from portal.evidence.serving import (
    ByteRange,
    RangeNotSatisfiable,
    blob_response,
    content_disposition,
    parse_range,
)

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("bytes=0-99", ByteRange(0, 100)),
        ("bytes=0-0", ByteRange(0, 1)),
        ("bytes=999-999", ByteRange(999, 1000)),
        ("bytes=100-", ByteRange(100, 1000)),  # open-ended
        ("bytes=-100", ByteRange(900, 1000)),  # suffix
        ("bytes=-5000", ByteRange(0, 1000)),  # suffix longer than the file
        ("bytes=900-5000", ByteRange(900, 1000)),  # end clamped
        ("bytes=0-" + "9" * 40, ByteRange(0, 1000)),  # absurdly long number
        ("Bytes = 10-19", ByteRange(10, 20)),
        # several ranges: one response covering them all
        ("bytes=0-9,500-509", ByteRange(0, 510)),
        ("bytes=500-509, -10", ByteRange(500, 1000)),
        ("bytes=0-9,5000-6000", ByteRange(0, 10)),  # the unsatisfiable part is dropped
        ("bytes=0-9,,20-29", ByteRange(0, 30)),
        # not understood: ignored, the whole file is sent
        ("items=0-9", None),
        ("bytes", None),
        ("bytes=", None),
        ("bytes=abc", None),
        ("bytes=10-5", None),
        ("bytes=1-2,3", None),
        ("bytes=-", None),
        ("bytes=0x10-20", None),
        ("bytes=٣-٤", None),  # non-ASCII digits
        ("bytes=" + ",".join(f"{i}-{i}" for i in range(101)), None),  # too many parts
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=2000-,-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as excinfo:
        parse_range(header, SIZE)
    assert excinfo.value.content_range == "bytes */1000"


def test_empty_file_satisfies_no_range() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
    assert parse_range(None, 0) is None


def test_content_disposition() -> None:
    value = content_disposition("身份证 正面.jpg", inline=True)
    assert value.startswith("inline; filename=\"___ __.jpg\"; filename*=UTF-8''")
    assert unquote(value.split("''", 1)[1]) == "身份证 正面.jpg"
    assert value.isascii()
    odd = content_disposition('a "quoted" 100%\\.pdf')
    assert odd.startswith('attachment; filename="a _quoted_ 100__.pdf";')
    assert "%22quoted%22%20100%25%5C.pdf" in odd


# -- responses -------------------------------------------------------------------------------

NAME = "身份证 正面.jpg"
DATA = random.Random(5).randbytes(300_000)


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path, {"k1": bytes(32)}, "k1", chunk_size=4096)


@pytest.fixture
async def client(store: BlobStore) -> AsyncIterator[httpx.AsyncClient]:
    async def serve(request: Request) -> Response:
        return await blob_response(
            request,
            store,
            request.path_params["sha"],
            filename=request.query_params.get("name", NAME),
            content_type=request.query_params.get("type", "image/jpeg"),
            inline="download" not in request.query_params,
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found", status_code=404)

    app = Starlette(
        routes=[Route("/files/{sha}", serve, methods=["GET", "HEAD"])],
        exception_handlers={NotFound: not_found},
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def sha(store: BlobStore) -> str:
    return store.put_bytes(DATA).sha256


async def test_whole_file(client: httpx.AsyncClient, sha: str) -> None:
    response = await client.get(f"/files/{sha}")
    assert response.status_code == 200
    assert response.content == DATA
    headers = response.headers
    assert headers["content-length"] == str(len(DATA))
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "image/jpeg"
    assert headers["etag"] == f'"{sha}"'
    assert headers["cache-control"] == "private, no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in headers["content-security-policy"]
    assert "content-range" not in headers
    disposition = headers["content-disposition"]
    assert disposition.startswith("inline;")
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == NAME


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=4095-4096", 4095, 4097),  # across a chunk boundary
        ("bytes=4096-8191", 4096, 8192),  # exactly one chunk
        ("bytes=123456-", 123456, 300_000),
        ("bytes=-1000", 299_000, 300_000),
        ("bytes=10-19,100-109", 10, 110),
    ],
)
async def test_partial_content(
    client: httpx.AsyncClient, sha: str, header: str, start: int, end: int
) -> None:
    response = await client.get(f"/files/{sha}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == DATA[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(DATA)}"
    assert response.headers["content-length"] == str(end - start)


async def test_unsatisfiable(client: httpx.AsyncClient, sha: str) -> None:
    response = await client.get(f"/files/{sha}", headers={"Range": "bytes=300000-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */300000"
    assert response.content == b""


async def test_invalid_range_gets_the_whole_file(client: httpx.AsyncClient, sha: str) -> None:
    response = await client.get(f"/files/{sha}", headers={"Range": "bytes=9-1"})
    assert response.status_code == 200
    assert response.content == DATA


async def test_if_range(client: httpx.AsyncClient, sha: str) -> None:
    same = await client.get(f"/files/{sha}", headers={"Range": "bytes=0-9", "If-Range": f'"{sha}"'})
    assert same.status_code == 206 and same.content == DATA[:10]
    changed = await client.get(
        f"/files/{sha}", headers={"Range": "bytes=0-9", "If-Range": '"something-else"'}
    )
    assert changed.status_code == 200 and changed.content == DATA
    dated = await client.get(
        f"/files/{sha}",
        headers={"Range": "bytes=0-9", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"},
    )
    assert dated.status_code == 200


async def test_head(client: httpx.AsyncClient, sha: str) -> None:
    response = await client.head(f"/files/{sha}", headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.headers["content-length"] == "10"
    assert response.headers["content-range"] == "bytes 10-19/300000"
    assert response.content == b""


async def test_download_of_a_text_file(client: httpx.AsyncClient, store: BlobStore) -> None:
    text = "调解笔录\n".encode("gb18030")
    sha = store.put_bytes(text).sha256
    response = await client.get(
        f"/files/{sha}",
        params={"name": "笔录.txt", "type": "text/plain; charset=gb18030", "download": "1"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=gb18030"
    assert response.text == "调解笔录\n"
    assert response.headers["content-disposition"].startswith('attachment; filename="__.txt";')


async def test_pdf_is_not_sandboxed(client: httpx.AsyncClient, store: BlobStore) -> None:
    sha = store.put_bytes(b"%PDF-1.7\n").sha256
    response = await client.get(f"/files/{sha}", params={"type": "application/pdf"})
    assert "content-security-policy" not in response.headers


async def test_missing_blob_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/files/{'0' * 64}")
    assert response.status_code == 404
