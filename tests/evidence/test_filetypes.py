"""Upload checks on real bytes and real ZIP files: magic bytes, names, archives and bombs."""

from __future__ import annotations

import gettext
import io
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from portal.errors import DomainError
from portal.evidence.blobs import BlobStore
from portal.evidence.filetypes import (
    HEAD_SIZE,
    MAX_NAME_LENGTH,
    Kind,
    check_container,
    check_zip,
    clean_filename,
    iter_zip_members,
    member_name,
    sniff,
    sniff_file,
)

NULL = gettext.NullTranslations()


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\0\0\0\x08free"


SAMPLES: dict[str, bytes] = {
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01",
    "exif-jpeg": b"\xff\xd8\xff\xe1\x18\x00Exif\x00\x00MM\x00*",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00",
    "gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00",
    "webp": b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00",
    "heic": ftyp(b"heic", b"mif1", b"heic"),
    "heif": ftyp(b"mif1", b"mif1", b"heic"),
    "avif": ftyp(b"avif", b"mif1", b"avif", b"miaf"),
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
    "ole2": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(24),
    "id3": b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE",
    "mp3-frame": b"\xff\xfb\x90\x64\x00\x00\x00\x00",
    "m4a": ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"),
    "wav": b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00",
    "ogg": b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead",
    "amr": b"#!AMR\n\x3c\x48\xf5\x1f",
    "mp4": ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"),
    "mov": ftyp(b"qt  ", b"qt  "),
    "ebml": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm",
    "exe": b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00",
    "elf": b"\x7fELF\x02\x01\x01\x00" + bytes(8),
}

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

ACCEPTED = [
    ("photo.jpg", "jpeg", "jpeg", "image/jpeg", "image"),
    ("IMG_0001.JPEG", "exif-jpeg", "jpeg", "image/jpeg", "image"),
    ("截图.png", "png", "png", "image/png", "image"),
    ("a.gif", "gif", "gif", "image/gif", "image"),
    ("a.webp", "webp", "webp", "image/webp", "image"),
    ("IMG_1234.HEIC", "heic", "heic", "image/heic", "image"),
    ("a.heif", "heif", "heif", "image/heif", "image"),
    ("合同.pdf", "pdf", "pdf", "application/pdf", "pdf"),
    ("a.docx", "zip", "docx", DOCX, "office"),
    ("a.xlsx", "zip", "xlsx", XLSX, "office"),
    ("a.pptx", "zip", "pptx", PPTX, "office"),
    ("a.doc", "ole2", "doc", "application/msword", "office"),
    ("a.xls", "ole2", "xls", "application/vnd.ms-excel", "office"),
    ("a.ppt", "ole2", "ppt", "application/vnd.ms-powerpoint", "office"),
    ("录音.mp3", "id3", "mp3", "audio/mpeg", "audio"),
    ("b.mp3", "mp3-frame", "mp3", "audio/mpeg", "audio"),
    ("录音.m4a", "m4a", "m4a", "audio/mp4", "audio"),
    ("android.m4a", "mp4", "m4a", "audio/mp4", "audio"),  # recorders write isom/mp42 brands
    ("a.wav", "wav", "wav", "audio/wav", "audio"),
    ("a.ogg", "ogg", "ogg", "audio/ogg", "audio"),
    ("a.opus", "ogg", "opus", "audio/ogg", "audio"),
    ("a.amr", "amr", "amr", "audio/amr", "audio"),
    ("视频.mp4", "mp4", "mp4", "video/mp4", "video"),
    ("IMG_0002.MOV", "mov", "mov", "video/quicktime", "video"),
    ("a.webm", "ebml", "webm", "video/webm", "video"),
    ("a.mkv", "ebml", "mkv", "video/x-matroska", "video"),
    ("a.zip", "zip", "zip", "application/zip", "zip"),
]


@pytest.mark.parametrize(("filename", "sample", "name", "content_type", "category"), ACCEPTED)
def test_accepted_kinds(
    filename: str, sample: str, name: str, content_type: str, category: str
) -> None:
    kind = sniff(SAMPLES[sample], filename)
    assert (kind.name, kind.content_type, kind.category) == (name, content_type, category)
    assert kind.inline == (category in ("image", "pdf"))


def test_only_images_and_pdf_are_shown_inline() -> None:
    inline = {sniff(SAMPLES[s], f).name for f, s, *_ in ACCEPTED if sniff(SAMPLES[s], f).inline}
    assert inline == {"jpeg", "png", "gif", "webp", "heic", "heif", "pdf"}


def assert_refused(head: bytes, filename: str, msgid_start: str) -> DomainError:
    with pytest.raises(DomainError) as excinfo:
        sniff(head, filename)
    error = excinfo.value
    assert error.field == "file"
    assert error.message.msgid.startswith(msgid_start), error.message.msgid
    return error


@pytest.mark.parametrize(
    ("sample", "filename"),
    [
        ("png", "scan.pdf"),  # a PNG named .pdf
        ("exe", "photo.jpg"),  # a program named .jpg
        ("elf", "photo.jpg"),
        ("exe", "notes.txt"),
        ("pdf", "a.docx"),
        ("zip", "a.doc"),
        ("ole2", "a.docx"),  # (a password-protected docx is an OLE2 container)
        ("heic", "a.mp4"),
        ("mp4", "a.heic"),
        ("avif", "a.heic"),  # AVIF is not on the list
        ("jpeg", "a.png"),
        ("wav", "a.webp"),
        ("webp", "a.wav"),
        ("ogg", "a.mp3"),
        ("png", "a.txt"),
    ],
)
def test_content_that_does_not_match_the_name(sample: str, filename: str) -> None:
    error = assert_refused(SAMPLES[sample], filename, "The file's content does not match")
    extension = "." + filename.rsplit(".", 1)[1]
    text = error.message.render(NULL)
    assert f"({extension})" in text
    assert "JPG, PNG, HEIC" in text and "ZIP" in text  # names what is allowed


@pytest.mark.parametrize("filename", ["setup.exe", "a.svg", "page.html", "a.avif", "README", "x."])
def test_types_not_allowed(filename: str) -> None:
    error = assert_refused(SAMPLES["png"], filename, "Files of this type cannot be uploaded")
    assert "Word, Excel and PowerPoint" in error.message.render(NULL)


def test_empty_head() -> None:
    assert_refused(b"", "a.pdf", "The file is empty.")


def test_pdf_with_junk_before_the_signature() -> None:
    assert sniff(b"\r\n\xef\xbb\xbf  %PDF-1.4\n", "a.pdf").name == "pdf"
    assert_refused(b"x" * 1100 + b"%PDF-1.4", "a.pdf", "The file's content does not match")


def test_plain_text() -> None:
    utf8 = sniff("调解协议：甲方同意退款 1,000 元。\r\n".encode(), "笔记.txt")
    assert utf8 == Kind("txt", "text/plain; charset=utf-8", "text", inline=False)
    gbk = sniff("调解协议：甲方同意退款。".encode("gb18030"), "a.txt")
    assert gbk.content_type == "text/plain; charset=gb18030"
    bom = sniff("\ufeffhello".encode(), "a.TXT")
    assert bom.content_type == "text/plain; charset=utf-8"
    # the sample may stop in the middle of a character
    cut = ("甲" * (HEAD_SIZE // 3 + 1)).encode()[:HEAD_SIZE]
    assert sniff(cut, "a.txt").content_type == "text/plain; charset=utf-8"
    assert sniff(b"tab\tform\x0cfeed\x1a", "a.txt").category == "text"


def test_html_named_txt_is_accepted_as_plain_text() -> None:
    # Decision: stored and served as text/plain, never inline, so it cannot run as a page.
    kind = sniff(b"<!doctype html><script>alert(1)</script>", "page.txt")
    assert kind.content_type == "text/plain; charset=utf-8" and not kind.inline


@pytest.mark.parametrize(
    "head",
    [b"abc\x00def", "abc".encode("utf-16"), b"\x01\x02\x03binary", b"\xff\xfe\xfd\x80\x80\x80"],
)
def test_binary_named_txt_is_refused(head: bytes) -> None:
    assert_refused(head, "a.txt", "The file's content does not match")


# -- file names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("身份证 正面.jpg", "身份证 正面.jpg"),
        ("  合同.pdf \t", "合同.pdf"),
        ("e\u0301.txt", "\u00e9.txt"),  # NFC
        ("report..final.pdf", "report..final.pdf"),  # two dots are not a path
        (".hidden.pdf", ".hidden.pdf"),
        ("会议纪要 10:30.txt", "会议纪要 10:30.txt"),
    ],
)
def test_clean_filename_keeps_good_names(name: str, expected: str) -> None:
    assert clean_filename(name) == expected


@pytest.mark.parametrize(
    ("name", "msgid"),
    [
        ("../../etc/passwd", "The file name must not contain a folder path or a drive letter."),
        ("/etc/passwd", "The file name must not contain a folder path or a drive letter."),
        ("C:\\x.pdf", "The file name must not contain a folder path or a drive letter."),
        ("C:x.pdf", "The file name must not contain a folder path or a drive letter."),
        ("dir\\x.pdf", "The file name must not contain a folder path or a drive letter."),
        ("a\x00b.pdf", "The file name contains control characters."),
        ("a\nb.pdf", "The file name contains control characters."),
        ("\u202egpj.exe", "The file name contains control characters."),  # right-to-left trick
        ("", "The file has no name."),
        ("   ", "The file has no name."),
        ("..", "The file has no name."),
    ],
)
def test_clean_filename_refuses(name: str, msgid: str) -> None:
    with pytest.raises(DomainError) as excinfo:
        clean_filename(name)
    assert excinfo.value.message.msgid == msgid
    assert excinfo.value.field == "file"


def test_long_names_are_cut_keeping_the_extension() -> None:
    long = clean_filename("长" * 300 + ".pdf")
    assert len(long) == MAX_NAME_LENGTH and long.endswith("长.pdf")
    assert clean_filename("x" * 119 + ".pdf") == "x" * 116 + ".pdf"
    assert clean_filename("x" * 116 + ".pdf") == "x" * 116 + ".pdf"
    no_extension = clean_filename("y" * 300)
    assert no_extension == "y" * MAX_NAME_LENGTH
    odd = clean_filename("z" * 200 + "." + "e" * 50)  # not an extension: just cut
    assert len(odd) == MAX_NAME_LENGTH


# -- Office containers ---------------------------------------------------------------------


def make_zip(path: Path, files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


OOXML = {
    "docx": {
        "[Content_Types].xml": b"<Types/>",
        "_rels/.rels": b"<Relationships/>",
        "word/document.xml": b"<w:document/>",
    },
    "xlsx": {"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"},
    "pptx": {"[Content_Types].xml": b"<Types/>", "ppt/presentation.xml": b"<p/>"},
}


@pytest.mark.parametrize("extension", ["docx", "xlsx", "pptx"])
def test_office_documents(tmp_path: Path, extension: str) -> None:
    path = make_zip(tmp_path / f"a.{extension}", OOXML[extension])
    with path.open("rb") as fh:
        kind = sniff_file(fh, path.name)
        assert fh.tell() == 0
    assert kind.name == extension and kind.category == "office"


@pytest.mark.parametrize(
    ("files", "filename"),
    [
        ({"photo.jpg": b"\xff\xd8\xff"}, "a.docx"),  # a plain zip named .docx
        ({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b""}, "a.docx"),  # an xlsx
        ({"word/document.xml": b""}, "a.docx"),  # no [Content_Types].xml
    ],
)
def test_zip_that_is_not_the_office_document_it_claims(
    tmp_path: Path, files: dict[str, bytes], filename: str
) -> None:
    path = make_zip(tmp_path / "x.zip", files)
    with path.open("rb") as fh, pytest.raises(DomainError) as excinfo:
        sniff_file(fh, filename)
    assert excinfo.value.message.msgid.startswith("The file's content does not match")


def test_truncated_office_document(tmp_path: Path) -> None:
    data = make_zip(tmp_path / "a.docx", OOXML["docx"]).read_bytes()
    with pytest.raises(DomainError, match="does not match"):
        sniff_file(io.BytesIO(data[: len(data) // 2]), "a.docx")


def test_other_kinds_need_no_container_check(tmp_path: Path) -> None:
    check_container(io.BytesIO(SAMPLES["png"]), sniff(SAMPLES["png"], "a.png"))


# -- ZIP archives ----------------------------------------------------------------------------


def zip_error(source: Path | io.BytesIO, **limits: int) -> str:
    with pytest.raises(DomainError) as excinfo:
        check_zip(source, **limits)
    assert excinfo.value.field == "file"
    return excinfo.value.message.msgid


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1 GiB of zeros, compressed as it is written (about 4.5 MB at level 1)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    zeros = bytes(1024 * 1024)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("zeros.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(1024):
            member.write(zeros)
    return path


def test_zip_bomb_by_ratio(bomb: Path) -> None:
    assert bomb.stat().st_size < 8 * 1024 * 1024
    assert zip_error(bomb).startswith("The ZIP file cannot be accepted: a file in it is compressed")


def test_zip_bomb_by_total_size(bomb: Path) -> None:
    msgid = zip_error(bomb, max_ratio=10**6, max_total=512 * 1024 * 1024)
    assert msgid == "The ZIP file unpacks to more than {size} MB."


def test_zip_with_ten_thousand_entries(tmp_path: Path) -> None:
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(10_000):
            zf.writestr(f"f{i}.txt", b"x")
    assert zip_error(path) == "The ZIP file contains more than {count} files."
    assert check_zip(path, max_entries=10_000).entries == 10_000


def patch_sizes(data: bytes, file_size: int) -> bytes:
    """Make the (single) entry's local and central headers claim ``file_size`` bytes."""
    patched = bytearray(data)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", patched, 22, file_size)  # local file header
    struct.pack_into("<I", patched, central + 24, file_size)  # central directory
    return bytes(patched)


def test_zip_whose_declared_size_lies(tmp_path: Path) -> None:
    honest = make_zip(tmp_path / "lie.zip", {"zeros.bin": bytes(20 * 1024 * 1024)}).read_bytes()
    assert zip_error(io.BytesIO(honest)).startswith("The ZIP file cannot be accepted")
    # claims 1,000 bytes: passes the central-directory checks, found out while unpacking
    lying = patch_sizes(honest, 1000)
    with zipfile.ZipFile(io.BytesIO(lying)) as zf:
        assert zf.infolist()[0].file_size == 1000
    assert zip_error(io.BytesIO(lying)).startswith("The ZIP file is damaged")


def set_flag(data: bytes, bit: int) -> bytes:
    patched = bytearray(data)
    central = data.index(b"PK\x01\x02")
    patched[6] |= bit  # local header general-purpose flags
    patched[central + 8] |= bit  # central directory flags
    return bytes(patched)


def test_encrypted_entries(tmp_path: Path) -> None:
    data = make_zip(tmp_path / "a.zip", {"secret.pdf": b"%PDF-1.4"}).read_bytes()
    assert zip_error(io.BytesIO(set_flag(data, 0x1))).startswith(
        "The ZIP file contains password-protected files"
    )


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "/etc/passwd", "a/../../b.txt", "C:/x.txt", "..\\..\\x.txt", "a\x07.txt"],
)
def test_entry_names_with_traversal(tmp_path: Path, name: str) -> None:
    path = make_zip(tmp_path / "a.zip", {"ok.txt": b"fine", name: b"evil"})
    assert zip_error(path) == "The ZIP file contains a file with an unsafe name: {name}."


def test_nested_zip_one_level_is_fine_two_are_not(tmp_path: Path) -> None:
    inner = make_zip(tmp_path / "inner.zip", {"a.txt": b"A", "b.txt": b"B"}).read_bytes()
    outer = make_zip(tmp_path / "outer.zip", {"inner.zip": inner, "c.txt": b"C"})
    report = check_zip(outer)
    assert report.entries == 4 and report.total_size == len(inner) + 3
    deeper = make_zip(tmp_path / "deeper.zip", {"outer.zip": outer.read_bytes()})
    assert zip_error(deeper) == "The ZIP file contains ZIP files nested more than one level deep."


def test_nested_bomb_is_counted(tmp_path: Path) -> None:
    inner = make_zip(tmp_path / "inner.zip", {"zeros.bin": bytes(8 * 1024 * 1024)}).read_bytes()
    outer = make_zip(tmp_path / "outer.zip", {"inner.zip": inner}, zipfile.ZIP_STORED)
    assert zip_error(outer).startswith("The ZIP file cannot be accepted")
    assert zip_error(outer, max_ratio=10**6, max_total=4 * 1024 * 1024).startswith(
        "The ZIP file unpacks to more than"
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda data: data[: len(data) // 2],  # cut off
        lambda data: data[:40] + bytes([data[40] ^ 0xFF]) + data[41:],  # corrupted stream
        lambda data: b"PK\x03\x04" + bytes(100),
    ],
)
def test_damaged_zip(tmp_path: Path, make: Callable[[bytes], bytes]) -> None:
    data = make_zip(tmp_path / "a.zip", {"a.txt": b"word " * 5000}).read_bytes()
    assert zip_error(io.BytesIO(make(data))).startswith("The ZIP file is damaged")


def test_empty_zip(tmp_path: Path) -> None:
    assert zip_error(make_zip(tmp_path / "a.zip", {})) == "The ZIP file is empty."


def test_chinese_names_written_by_windows_tools_in_gbk(tmp_path: Path) -> None:
    # Zip tools on Chinese Windows write GBK names without the UTF-8 flag.
    gbk = "合同.txt".encode("gb18030")
    placeholder = b"x" * (len(gbk) - 4) + b".txt"
    data = make_zip(tmp_path / "a.zip", {placeholder.decode(): b"hello"}).read_bytes()
    data = data.replace(placeholder, gbk)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.infolist()[0]
        assert not info.flag_bits & 0x800
        assert member_name(info) == "合同.txt"
    members = [(m.path, m.stream.read()) for m in iter_zip_members(io.BytesIO(data))]
    assert members == [("合同.txt", b"hello")]


def test_iter_zip_members(tmp_path: Path) -> None:
    inner = make_zip(tmp_path / "inner.zip", {"第1页.jpg": SAMPLES["jpeg"]}).read_bytes()
    path = tmp_path / "batch.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("证据/", b"")
        zf.writestr("证据/聊天记录.txt", "你好".encode())
        zf.writestr("证据/转账.pdf", SAMPLES["pdf"])
        zf.writestr("扫描.zip", inner)
        zf.writestr("__MACOSX/证据/._转账.pdf", b"\0\5\26\7")
        zf.writestr("证据/.DS_Store", b"\0\0\0\1Bud1")
    seen = []
    for member in iter_zip_members(path):
        data = member.stream.read()
        kind = sniff(data[:HEAD_SIZE], member.filename)
        seen.append((member.path, member.filename, member.size, kind.name))
    assert seen == [
        ("证据/聊天记录.txt", "聊天记录.txt", 6, "txt"),
        ("证据/转账.pdf", "转账.pdf", len(SAMPLES["pdf"]), "pdf"),
        ("扫描.zip/第1页.jpg", "第1页.jpg", len(SAMPLES["jpeg"]), "jpeg"),
    ]


def test_iter_zip_members_checks_first(bomb: Path) -> None:
    with pytest.raises(DomainError):
        next(iter_zip_members(bomb))


def test_archive_stored_encrypted_is_checked_and_unpacked_into_blobs(tmp_path: Path) -> None:
    """The upload path for a batch: store the ZIP, check it, store each member as a blob."""
    store = BlobStore(tmp_path / "storage", {"k1": bytes(32)}, "k1")
    archive = make_zip(
        tmp_path / "batch.zip", {"a.pdf": SAMPLES["pdf"], "b.png": SAMPLES["png"] * 1000}
    )
    blob = store.put_bytes(archive.read_bytes())
    stored = {}
    with store.open(blob.sha256) as fh:
        assert sniff_file(fh, "batch.zip").name == "zip"
        for member in iter_zip_members(fh):
            kind = sniff(member.stream.read(HEAD_SIZE), member.filename)
            member.stream.seek(0)
            stored[member.filename] = (kind.name, store.put_stream(member.stream))
    assert [(name, kind) for name, (kind, _) in stored.items()] == [
        ("a.pdf", "pdf"),
        ("b.png", "png"),
    ]
    stored_blobs = {name: blob for name, (_, blob) in stored.items()}
    assert store.read_all(stored_blobs["a.pdf"].sha256) == SAMPLES["pdf"]
    assert store.read_all(stored_blobs["b.png"].sha256) == SAMPLES["png"] * 1000
