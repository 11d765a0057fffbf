"""Streaming multipart uploads into a real blob store: splits, limits, refusals, cleanup, ZIPs."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import tracemalloc
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from portal.errors import DomainError
from portal.evidence.blobs import BlobStore, MiB
from portal.evidence.filetypes import HEAD_SIZE, sniff
from portal.evidence.upload import (
    Received,
    ReceivedFile,
    UploadIncomplete,
    expand_zip,
    receive,
)

K1 = bytes(range(32))
B = b"----JiefenFormBoundary7MA4YWxkTrZu0gW"
CT = "multipart/form-data; boundary=" + B.decode()

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 10
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00" + bytes(range(256)) * 50
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01" + b"\0" * 100
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "storage", {"k1": K1}, "k1")


# -- building bodies -----------------------------------------------------------------------


def field(name: str, value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data


def upload(name: str, filename: str | bytes, data: bytes) -> bytes:
    raw = filename.encode() if isinstance(filename, str) else filename
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="'.encode()
        + raw
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + data
    )


def body(*parts: bytes) -> bytes:
    return b"".join(b"--" + B + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + B + b"--\r\n"


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def split_at(data: bytes, *offsets: int) -> AsyncIterator[bytes]:
    bounds = [0, *offsets, len(data)]
    for start, end in itertools.pairwise(bounds):
        yield data[start:end]


async def run(
    store: BlobStore, data: bytes, size: int = 1000, content_type: str = CT, **limits: int
) -> Received:
    limits.setdefault("max_file_bytes", 10 * MiB)
    return await receive(pieces(data, size), content_type, store, **limits)


def stored(store: BlobStore) -> set[str]:
    return set(store.iter_blobs())


def assert_nothing_left(store: BlobStore, before: set[str] | None = None) -> None:
    assert os.listdir(store.tmp_dir) == []
    assert stored(store) == (before or set())


async def refused(store: BlobStore, data: bytes, *, size: int = 1000, **kwargs: int) -> DomainError:
    with pytest.raises(DomainError) as excinfo:
        await run(store, data, size, **kwargs)
    return excinfo.value


FORM = body(
    field("csrf_token", "tok"),
    field("title", "借款合同 — 第一稿"),
    upload("file", "合同.pdf", PDF),
    upload("file", "截图.PNG", PNG),
    field("title", ""),
)


def check_form(store: BlobStore, received: Received) -> None:
    assert received.fields == {"csrf_token": ["tok"], "title": ["借款合同 — 第一稿", ""]}
    assert received.first("title") == "借款合同 — 第一稿"
    assert [(f.field, f.filename, f.kind.name, f.blob.size) for f in received.files] == [
        ("file", "合同.pdf", "pdf", len(PDF)),
        ("file", "截图.PNG", "png", len(PNG)),
    ]
    for received_file, data in zip(received.files, (PDF, PNG), strict=True):
        assert received_file.blob.sha256 == hashlib.sha256(data).hexdigest()
        assert received_file.blob.created
        assert store.read_all(received_file.blob.sha256) == data
    assert os.listdir(store.tmp_dir) == []


# -- accepted uploads ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1000, 4096, 65536, len(FORM)])
async def test_fields_and_files_in_any_chunking(store: BlobStore, size: int) -> None:
    received = await run(store, FORM, size)
    check_form(store, received)


async def test_every_split_point(store: BlobStore) -> None:
    data = body(field("a", "x"), upload("f", "a.pdf", PDF[:40]), field("b", "y"))
    for offset in range(1, len(data)):
        received = await receive(split_at(data, offset), CT, store, max_file_bytes=MiB)
        assert received.fields == {"a": ["x"], "b": ["y"]}, offset
        assert [f.blob.size for f in received.files] == [40], offset
        await received.discard(store)
    assert_nothing_left(store)


async def test_content_that_looks_like_a_boundary_is_kept(store: BlobStore) -> None:
    tricky = PDF + b"\r\n--" + B[:-1] + b"\r\n--" + B + b"x\r\n\r\n--\r" + b"-" * 50
    for size in (1, 5, 100):
        received = await run(store, body(upload("f", "a.pdf", tricky)), size)
        assert store.read_all(received.files[0].blob.sha256) == tricky


async def test_head_larger_than_sniff_size_and_file_larger_than_a_batch(store: BlobStore) -> None:
    data = PDF + bytes(range(256)) * (3 * MiB // 256 + 17)
    received = await run(store, body(upload("f", "big.pdf", data)), 65536)
    assert received.files[0].blob.size == len(data) > HEAD_SIZE
    assert store.read_all(received.files[0].blob.sha256) == data


async def test_empty_form_and_preamble_newlines(store: BlobStore) -> None:
    assert await run(store, b"--" + B + b"--\r\n") == Received()
    received = await run(store, b"\r\n" + body(field("a", "1")) + b"epilogue, ignored")
    assert received.fields == {"a": ["1"]}


async def test_file_input_left_empty_is_skipped(store: BlobStore) -> None:
    received = await run(store, body(field("a", "1"), upload("file", "", b"")))
    assert received.files == []
    assert_nothing_left(store)


async def test_long_names_are_cleaned(store: BlobStore) -> None:
    received = await run(store, body(upload("f", "x" * 300 + ".pdf", PDF)))
    assert received.files[0].filename == "x" * 116 + ".pdf"


async def test_the_same_file_twice_is_stored_once(store: BlobStore) -> None:
    received = await run(store, body(upload("f", "a.pdf", PDF), upload("f", "b.pdf", PDF)))
    assert [f.blob.created for f in received.files] == [True, False]
    assert len(stored(store)) == 1


async def test_discard_deletes_only_what_the_upload_created(store: BlobStore) -> None:
    earlier = store.put_bytes(PNG)
    received = await run(store, body(upload("f", "a.pdf", PDF), upload("f", "b.png", PNG)))
    assert [f.blob.created for f in received.files] == [True, False]
    await received.discard(store)
    assert_nothing_left(store, {earlier.sha256})


async def test_memory_stays_constant(store: BlobStore) -> None:
    """64 MB through receive in 64 KiB chunks: traced memory peaks far below the file size."""
    block = bytes(range(256)) * 256  # 64 KiB
    count = 1024
    head = b"--" + B + b"\r\n" + field("t", "x") + b"\r\n--" + B + b"\r\n"
    head += upload("file", "big.pdf", b"")
    tail = b"\r\n--" + B + b"--\r\n"
    expected = hashlib.sha256(PDF)
    for _ in range(count):
        expected.update(block)

    async def stream() -> AsyncIterator[bytes]:
        yield head + PDF
        for _ in range(count):
            yield block
        yield tail

    tracemalloc.start()
    try:
        received = await receive(stream(), CT, store, max_file_bytes=100 * MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    blob = received.files[0].blob
    assert blob.size == len(PDF) + count * len(block)
    assert blob.sha256 == expected.hexdigest()
    assert peak < 8 * MiB, peak


# -- refusals: each leaves nothing behind --------------------------------------------------

GOOD = upload("file", "good.pdf", PDF)  # stored first, then deleted when a later part fails


@pytest.mark.parametrize(
    ("part", "msgid"),
    [
        (upload("file", "a.pdf", PNG), "The file's content does not match its name"),
        (upload("file", "a.docx", PDF), "The file's content does not match its name"),
        (upload("file", "setup.exe", EXE), "Files of this type cannot be uploaded"),
        (upload("file", "a.jpg", EXE), "The file's content does not match its name"),
        (upload("file", "a.pdf", b""), "The file is empty."),
        (upload("file", "", PDF), "The file has no name."),
        (upload("file", "...", PDF), "The file has no name."),
        (upload("file", "   ", PDF), "The file has no name."),
        (upload("file", "../../etc/a.pdf", PDF), "The file name must not contain a folder"),
        (upload("file", "a\\b.pdf", PDF), "The file name must not contain a folder"),
        (upload("file", "a\x01.pdf", PDF), "The file name contains control characters."),
        (upload("file", "invoice\u202efdp.exe", PDF), "The file name contains control"),
    ],
)
@pytest.mark.parametrize("size", [1, 1000])
async def test_refused_files(store: BlobStore, part: bytes, msgid: str, size: int) -> None:
    error = await refused(store, body(GOOD, part), size=size)
    assert error.field == "file"
    assert error.message.msgid.startswith(msgid), error.message.msgid
    assert_nothing_left(store)


async def test_refused_file_keeps_blobs_stored_before(store: BlobStore) -> None:
    earlier = store.put_bytes(PDF)
    await refused(store, body(GOOD, upload("file", "a.pdf", PNG)))
    assert_nothing_left(store, {earlier.sha256})


async def test_file_too_large_stops_reading_at_once(store: BlobStore) -> None:
    data = body(GOOD, upload("file", "big.pdf", PDF + bytes(8 * MiB)))
    consumed = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in pieces(data, 65536):
            consumed += len(chunk)
            yield chunk

    with pytest.raises(DomainError) as excinfo:
        await receive(stream(), CT, store, max_file_bytes=2 * MiB)
    assert excinfo.value.message.msgid == "The file is larger than {size} MB."
    assert excinfo.value.message.params == {"size": 2}
    assert consumed < 2 * MiB + 3 * 65536
    assert_nothing_left(store)


async def test_file_too_large_while_its_head_is_buffered(store: BlobStore) -> None:
    error = await refused(store, body(upload("file", "a.pdf", PDF)), max_file_bytes=100)
    assert error.message.msgid == "The file is larger than {size} MB."
    assert_nothing_left(store)


async def test_a_file_exactly_at_the_limit_is_accepted(store: BlobStore) -> None:
    received = await run(store, body(upload("file", "a.pdf", PDF)), max_file_bytes=len(PDF))
    assert received.files[0].blob.size == len(PDF)


async def test_too_many_files(store: BlobStore) -> None:
    def form(tag: bytes) -> bytes:
        return body(*(upload("file", f"{i}.pdf", PDF + tag + bytes([i])) for i in range(3)))

    assert len((await run(store, form(b"a"), max_files=3)).files) == 3
    before = stored(store)
    error = await refused(store, form(b"b"), max_files=2)
    assert error.message.msgid == "At most {count} files can be uploaded at once."
    assert error.message.params == {"count": 2}
    assert_nothing_left(store, before)


async def test_too_many_fields(store: BlobStore) -> None:
    data = body(GOOD, *(field(f"f{i}", "v") for i in range(5)))
    error = await refused(store, data, max_fields=4)
    assert error.message.msgid == "The form has more than {count} fields."
    assert_nothing_left(store)


async def test_field_too_long(store: BlobStore) -> None:
    data = body(GOOD, field("description", "长" * 10))  # 30 bytes
    received = await run(store, data, max_field_bytes=30)
    assert received.fields == {"description": ["长" * 10]}
    await received.discard(store)
    error = await refused(store, data, max_field_bytes=29)
    assert (error.field, error.message.msgid) == (
        "description",
        "The text in this field is too long.",
    )
    assert_nothing_left(store)


async def test_field_not_utf8(store: BlobStore) -> None:
    error = await refused(store, body(GOOD, field("title", "合同".encode("gb18030"))))
    assert (error.field, error.message.msgid) == (
        "title",
        "The form contains text that is not valid UTF-8.",
    )
    assert_nothing_left(store)


MALFORMED = "The upload could not be read. Please try again."


@pytest.mark.parametrize(
    "data",
    [
        b"this is not multipart at all\r\n",
        b"--" + B[:-1] + b"X\r\n" + field("a", "1") + b"\r\n--" + B + b"--\r\n",  # wrong boundary
        body(GOOD, b'Content-Disposition: form-data; filename="a.pdf"\r\n\r\n' + PDF),  # no name
        body(GOOD, b'Content-Disposition: attachment; name="a"\r\n\r\nx'),
        body(GOOD, b'Content-Disposition: form-data; name="a"\r\nBad Header\r\n\r\nx'),
        body(GOOD, b'Content-Disposition: form-data; name="a"\r\nX-' + b"y" * 5000 + b": 1\r\n"),
        body(GOOD, b"Content-Transfer-Encoding: base64\r\n" + upload("file", "b.pdf", b"JVBERi0=")),
        body(GOOD, upload("file", b"\xff\xfe.pdf", PDF)),  # a name that is not UTF-8
        body(GOOD, b'Content-Disposition: form-data; name="\xff"\r\n\r\nx'),
    ],
)
async def test_malformed_bodies(store: BlobStore, data: bytes) -> None:
    for size in (1, 1000):
        error = await refused(store, data, size=size)
        assert (error.field, error.message.msgid) == ("file", MALFORMED)
        assert_nothing_left(store)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "x" * 300,
        "application/x-www-form-urlencoded",
        "",
    ],
)
async def test_missing_or_bad_boundary(store: BlobStore, content_type: str) -> None:
    with pytest.raises(DomainError) as excinfo:
        await run(store, FORM, content_type=content_type)
    assert excinfo.value.message.msgid == MALFORMED
    assert_nothing_left(store)


async def test_quoted_boundary_and_other_parameters(store: BlobStore) -> None:
    content_type = f'Multipart/Form-Data; charset=utf-8; boundary="{B.decode()}"'
    check_form(store, await run(store, FORM, content_type=content_type))


@pytest.mark.parametrize(
    "cut",
    [
        0,  # nothing at all
        10,  # inside the first boundary
        len(b"--" + B + b"\r\n" + GOOD) - 5,  # inside the first file
        len(b"--" + B + b"\r\n" + GOOD) + 8,  # after it: in the next delimiter
        -len(b"--\r\n"),  # the last delimiter without its closing "--"
        -len(B) - 4,  # inside the last delimiter
        -len(PDF) // 2,  # inside the second file, the first one committed already
    ],
)
async def test_stream_cut_off(store: BlobStore, cut: int) -> None:
    data = body(GOOD, upload("file", "b.pdf", PDF + b"more"))
    for size in (1, 1000):
        with pytest.raises(UploadIncomplete) as excinfo:
            await run(store, data[:cut], size)
        assert excinfo.value.field == "file"
        assert excinfo.value.message.msgid.startswith("The upload was cut off")
        assert_nothing_left(store)


async def test_stream_error_propagates_and_cleans_up(store: BlobStore) -> None:
    data = body(GOOD, upload("file", "b.pdf", PDF + bytes(3 * MiB)))

    async def stream() -> AsyncIterator[bytes]:
        async for chunk in pieces(data, 65536):
            yield chunk
            if len(os.listdir(store.tmp_dir)) and stored(store):  # mid-way through the 2nd file
                raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await receive(stream(), CT, store, max_file_bytes=10 * MiB)
    assert_nothing_left(store)


async def test_cancelled_upload_cleans_up(store: BlobStore) -> None:
    data = body(GOOD, upload("file", "b.pdf", PDF + bytes(3 * MiB)))
    started = asyncio.Event()

    async def stream() -> AsyncIterator[bytes]:
        async for chunk in pieces(data, 65536):
            yield chunk
            if stored(store):
                started.set()
                await asyncio.sleep(3600)  # the client stalls

    task = asyncio.create_task(receive(stream(), CT, store, max_file_bytes=10 * MiB))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_left(store)


# -- containers: checked on the stored blob once the body is read ---------------------------


def make_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


DOCX = make_zip(
    {
        "[Content_Types].xml": b"<Types/>",
        "_rels/.rels": b"<Relationships/>",
        "word/document.xml": b"<w:document/>",
    }
)
BOMB = make_zip({"zeros.bin": bytes(4 * MiB)})


async def test_office_and_zip_containers_accepted(store: BlobStore) -> None:
    archive = make_zip({"a.pdf": PDF})
    received = await run(
        store, body(upload("file", "a.docx", DOCX), upload("file", "a.zip", archive))
    )
    assert [f.kind.name for f in received.files] == ["docx", "zip"]


@pytest.mark.parametrize(
    ("name", "data", "msgid"),
    [
        ("a.docx", make_zip({"a.pdf": PDF}), "The file's content does not match its name"),
        ("a.docx", DOCX[: len(DOCX) // 2], "The file's content does not match its name"),
        ("a.zip", BOMB, "The ZIP file cannot be accepted: a file in it is compressed"),
        ("a.zip", make_zip({"a.pdf": PDF})[:-30], "The ZIP file is damaged"),
        ("a.zip", make_zip({"../evil.pdf": PDF}), "The ZIP file contains a file with an unsafe"),
    ],
)
async def test_refused_containers(store: BlobStore, name: str, data: bytes, msgid: str) -> None:
    earlier = store.put_bytes(PNG)
    parts = (GOOD, upload("file", "old.png", PNG), upload("file", name, data))
    error = await refused(store, body(*parts))
    assert error.message.msgid.startswith(msgid), error.message.msgid
    assert_nothing_left(store, {earlier.sha256})


# -- expanding ZIP uploads -----------------------------------------------------------------


async def receive_zip(store: BlobStore, archive: bytes) -> ReceivedFile:
    received = await run(store, body(upload("evidence", "批量.zip", archive)))
    return received.files[0]


async def test_expand_zip(store: BlobStore) -> None:
    inner = make_zip({"第1页.jpg": JPEG})
    archive = make_zip(
        {
            "证据/": b"",
            "证据/聊天记录.txt": "你好".encode(),
            "证据/转账.pdf": PDF,
            "证据/合同.docx": DOCX,
            "扫描.zip": inner,
            "__MACOSX/证据/._转账.pdf": b"\0\5\26\7",
            "证据/.DS_Store": b"\0\0\0\1Bud1",
        }
    )
    source = await receive_zip(store, archive)
    members = await expand_zip(store, source, max_file_bytes=MiB)
    assert [(m.field, m.archive_path, m.filename, m.kind.name) for m in members] == [
        ("evidence", "证据/聊天记录.txt", "聊天记录.txt", "txt"),
        ("evidence", "证据/转账.pdf", "转账.pdf", "pdf"),
        ("evidence", "证据/合同.docx", "合同.docx", "docx"),
        ("evidence", "扫描.zip/第1页.jpg", "第1页.jpg", "jpeg"),
    ]
    for member, data in zip(members, ("你好".encode(), PDF, DOCX, JPEG), strict=True):
        assert member.blob.created
        assert store.read_all(member.blob.sha256) == data
    assert os.listdir(store.tmp_dir) == []


@pytest.mark.parametrize(
    ("files", "path", "cause"),
    [
        ({"b.pdf": PDF + b"1", "setup.exe": EXE}, "setup.exe", "Files of this type"),
        ({"b.pdf": PDF + b"1", "证据/a.jpg": PNG}, "证据/a.jpg", "The file's content does not"),
        ({"b.pdf": PDF + b"1", "a.docx": make_zip({"x.txt": b"x"})}, "a.docx", "The file's"),
        ({"b.pdf": PDF + b"1", "big.pdf": PDF + bytes(300_000)}, "big.pdf", "The file is larger"),
        ({"b.pdf": PDF + b"1", "empty.pdf": b""}, "empty.pdf", "The file is empty."),
    ],
)
async def test_expand_zip_refuses_a_member_and_deletes_what_it_stored(
    store: BlobStore, files: dict[str, bytes], path: str, cause: str
) -> None:
    earlier = store.put_bytes(PNG)
    source = await receive_zip(store, make_zip(files))
    before = stored(store)
    assert before == {earlier.sha256, source.blob.sha256}
    with pytest.raises(DomainError) as excinfo:
        await expand_zip(store, source, max_file_bytes=200_000)
    error = excinfo.value
    assert error.message.msgid == "The ZIP file contains a file that cannot be accepted: {name}."
    assert error.message.params == {"name": path}
    assert isinstance(error.__cause__, DomainError)
    assert error.__cause__.message.msgid.startswith(cause)
    assert_nothing_left(store, before)


async def test_expand_zip_checks_the_archive_first(store: BlobStore) -> None:
    archive = store.put_bytes(BOMB)
    source = ReceivedFile("file", "bomb.zip", sniff(BOMB[:HEAD_SIZE], "bomb.zip"), archive)
    with pytest.raises(DomainError, match="compressed more than"):
        await expand_zip(store, source, max_file_bytes=10 * MiB)
    assert_nothing_left(store, {archive.sha256})


async def test_expand_zip_wants_a_zip(store: BlobStore) -> None:
    received = await run(store, body(GOOD))
    with pytest.raises(ValueError, match="not a ZIP"):
        await expand_zip(store, received.files[0], max_file_bytes=MiB)


async def test_wrong_type_is_refused_from_its_head_before_anything_is_written(
    store: BlobStore,
) -> None:
    data = body(upload("file", "photo.pdf", PNG + bytes(2 * MiB)))
    consumed = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal consumed
        async for chunk in pieces(data, 4096):
            assert os.listdir(store.tmp_dir) == []
            consumed += len(chunk)
            yield chunk

    with pytest.raises(DomainError, match="does not match"):
        await receive(stream(), CT, store, max_file_bytes=10 * MiB)
    assert consumed < HEAD_SIZE + 2 * 4096
    assert_nothing_left(store)
