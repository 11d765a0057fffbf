"""Which files may be uploaded: content (magic bytes) against the extension, names, ZIP archives.

``sniff(head, filename)`` decides from the first ``HEAD_SIZE`` bytes, before anything is stored.
Formats that are ZIP archives inside (docx/xlsx/pptx, zip) are then checked whole with
``check_container`` on the stored file (any seekable binary file, e.g. ``BlobStore.open``):
an Office file must have ``[Content_Types].xml`` and its ``word/``, ``xl/`` or ``ppt/`` part; a
ZIP must pass ``check_zip``. ``iter_zip_members`` hands out the files of a checked archive one by
one, each to be sniffed and stored like an upload of its own.

Decisions: names with a path, a drive letter or control characters are refused, not repaired
(a browser never sends one; a ZIP that holds one is suspect). Plain text is any UTF-8 or
GB18030 text without NUL bytes or odd control characters; HTML named ``.txt`` is accepted,
because it is stored as ``text/plain`` and never shown inline. Only images and PDF may be
shown inline. Password-protected Office files (OLE2 containers, whatever their extension) are
only accepted under the legacy extensions doc/xls/ppt.
"""

from __future__ import annotations

import codecs
import os
import re
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, BinaryIO, Literal

from portal.errors import DomainError
from portal.i18n import Msg, _l

HEAD_SIZE = 8192  # how much of the start of a file ``sniff`` wants (less is fine for most)
MAX_NAME_LENGTH = 120
MiB = 1024 * 1024
GiB = 1024 * MiB

Category = Literal["image", "pdf", "office", "audio", "video", "text", "zip"]

_ALLOWED = _l(
    "images (JPG, PNG, HEIC, WebP, GIF), PDF, Word, Excel and PowerPoint documents, "
    "audio (MP3, M4A, WAV, OGG, OPUS, AMR), video (MP4, MOV, WebM, MKV), "
    "plain text (TXT) and ZIP archives"
)
_OOXML_PARTS = {"docx": "word/", "xlsx": "xl/", "pptx": "ppt/"}
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")
_TEXT_CONTROLS = re.compile(rb"[\x00-\x08\x0e-\x19\x1c-\x1f\x7f]")  # \t\n\v\f\r, ^Z, ESC are fine
_DRIVE = re.compile(r"^[A-Za-z]:")
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_GENERIC = {b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}


@dataclass(frozen=True)
class Kind:
    """What an accepted file is."""

    name: str  # short type name: "jpeg", "docx", "txt", ...
    content_type: str  # to serve it with (text carries its charset)
    category: Category
    inline: bool  # may be shown in the browser (images and PDF only)


# extension -> (type name, content type, category, content family the magic bytes must show)
_EXTENSIONS: dict[str, tuple[str, str, Category, str]] = {
    ".jpg": ("jpeg", "image/jpeg", "image", "jpeg"),
    ".jpeg": ("jpeg", "image/jpeg", "image", "jpeg"),
    ".png": ("png", "image/png", "image", "png"),
    ".heic": ("heic", "image/heic", "image", "heif"),
    ".heif": ("heif", "image/heif", "image", "heif"),
    ".webp": ("webp", "image/webp", "image", "webp"),
    ".gif": ("gif", "image/gif", "image", "gif"),
    ".pdf": ("pdf", "application/pdf", "pdf", "pdf"),
    ".docx": (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "office",
        "zip",
    ),
    ".xlsx": (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "office",
        "zip",
    ),
    ".pptx": (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "office",
        "zip",
    ),
    ".doc": ("doc", "application/msword", "office", "ole2"),
    ".xls": ("xls", "application/vnd.ms-excel", "office", "ole2"),
    ".ppt": ("ppt", "application/vnd.ms-powerpoint", "office", "ole2"),
    ".mp3": ("mp3", "audio/mpeg", "audio", "mp3"),
    ".m4a": ("m4a", "audio/mp4", "audio", "isobmff"),
    ".wav": ("wav", "audio/wav", "audio", "wav"),
    ".ogg": ("ogg", "audio/ogg", "audio", "ogg"),
    ".opus": ("opus", "audio/ogg", "audio", "ogg"),
    ".amr": ("amr", "audio/amr", "audio", "amr"),
    ".mp4": ("mp4", "video/mp4", "video", "isobmff"),
    ".mov": ("mov", "video/quicktime", "video", "isobmff"),
    ".webm": ("webm", "video/webm", "video", "ebml"),
    ".mkv": ("mkv", "video/x-matroska", "video", "ebml"),
    ".txt": ("txt", "text/plain", "text", "text"),
    ".zip": ("zip", "application/zip", "zip", "zip"),
}


def _file_error(message: Msg) -> DomainError:
    return DomainError(message, field="file")


def _not_allowed() -> DomainError:
    return _file_error(
        _l(
            "Files of this type cannot be uploaded. Allowed: {allowed}.",
            allowed={"msgid": _ALLOWED.msgid},
        )
    )


def _mismatch(extension: str) -> DomainError:
    return _file_error(
        _l(
            "The file's content does not match its name ({extension}). Allowed: {allowed}.",
            extension=extension,
            allowed={"msgid": _ALLOWED.msgid},
        )
    )


def _is_mp3_frame(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    return version != 1 and layer != 0 and bitrate not in (0, 15) and rate != 3


def _ftyp_family(head: bytes) -> str:
    box_size = struct.unpack(">I", head[:4])[0]
    end = min(len(head), box_size if 16 <= box_size <= 4096 else 16)
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS and not brands & _HEIF_BRANDS:
        return "avif"
    if brands & (_HEIF_BRANDS | _HEIF_GENERIC):
        return "heif"
    return "isobmff"


def detect(head: bytes) -> str | None:
    """The content family the first bytes show, or None (plain text or unknown)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole2"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _ftyp_family(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "ebml"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"ID3") or _is_mp3_frame(head):
        return "mp3"
    if head[:2] == b"MZ" or head[:4] in (b"\x7fELF", b"\xca\xfe\xba\xbe", b"\xcf\xfa\xed\xfe"):
        return "executable"
    return None


def text_charset(head: bytes) -> str | None:
    """ "utf-8" or "gb18030" when ``head`` reads as plain text in it, else None."""
    if _TEXT_CONTROLS.search(head):
        return None
    for charset in ("utf-8", "gb18030"):
        try:
            # final=False: the sample may end inside a multi-byte character
            codecs.getincrementaldecoder(charset)().decode(head, final=False)
        except UnicodeDecodeError:
            continue
        return charset
    return None


def sniff(head: bytes, filename: str) -> Kind:
    """The kind of an upload from its first bytes and its name; DomainError if not allowed.

    For docx/xlsx/pptx and zip this only sees a ZIP signature: call ``check_container`` on
    the whole file too.
    """
    if not head:
        raise _file_error(_l("The file is empty."))
    extension = PurePosixPath(filename).suffix.lower()
    spec = _EXTENSIONS.get(extension)
    if spec is None:
        raise _not_allowed()
    name, content_type, category, family = spec
    found = detect(head)
    if family == "text":
        charset = text_charset(head) if found is None else None
        if charset is None:
            raise _mismatch(extension)
        content_type = f"text/plain; charset={charset}"
    elif found != family and not (
        # readers accept a PDF whose signature comes a little after some junk
        family == "pdf" and found is None and b"%PDF-" in head[:1024]
    ):
        raise _mismatch(extension)
    return Kind(name, content_type, category, inline=category in ("image", "pdf"))


def sniff_file(source: BinaryIO, filename: str) -> Kind:
    """``sniff`` plus ``check_container``, for a whole seekable file (position restored)."""
    position = source.tell()
    head = source.read(HEAD_SIZE)
    source.seek(position)
    kind = sniff(head, filename)
    check_container(source, kind)
    source.seek(position)
    return kind


# -- names -------------------------------------------------------------------------------


def clean_filename(name: str) -> str:
    """A display name: NFC, trimmed, at most 120 characters (the extension kept).

    Refuses (DomainError) a name with a path, a drive letter, control characters, or nothing.
    """
    name = unicodedata.normalize("NFC", name or "").strip()
    if not name or set(name) == {"."}:
        raise _file_error(_l("The file has no name."))
    if "/" in name or "\\" in name or _DRIVE.match(name):
        raise _file_error(_l("The file name must not contain a folder path or a drive letter."))
    if any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in name):
        raise _file_error(_l("The file name contains control characters."))
    if len(name) > MAX_NAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem or len(extension) > 10:
            stem, extension = name, ""
        else:
            extension = "." + extension
        name = stem[: MAX_NAME_LENGTH - len(extension)].rstrip() + extension
    return name


# -- containers ----------------------------------------------------------------------------


def _damaged() -> DomainError:
    return _file_error(
        _l("The ZIP file is damaged or uses a compression method that is not supported.")
    )


_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError)


def _open_zip(source: str | os.PathLike[str] | IO[bytes]) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (*_ZIP_ERRORS, OSError):
        raise _damaged() from None


def member_name(info: zipfile.ZipInfo) -> str:
    """The entry's name, decoded as its writer meant (Chinese Windows tools write GBK)."""
    name = info.filename
    if info.flag_bits & 0x800:
        return name
    try:
        raw = name.encode("cp437")
    except UnicodeEncodeError:
        return name
    for charset in ("utf-8", "gb18030"):
        try:
            return raw.decode(charset)
        except UnicodeDecodeError:
            continue
    return name


def _check_member_name(name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if (
        name.startswith(("/", "\\"))
        or _DRIVE.match(name)
        or ".." in parts
        or any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in name)
    ):
        raise _file_error(
            _l("The ZIP file contains a file with an unsafe name: {name}.", name=name[:120])
        )


def _is_nested_zip(name: str) -> bool:
    return name.lower().endswith(".zip")


def _is_junk(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or parts[-1] in _JUNK_NAMES or parts[-1].startswith("._")


@dataclass(frozen=True)
class ZipReport:
    entries: int  # entries counted, those of a nested archive included
    total_size: int  # bytes once everything is unpacked


@dataclass
class _Budget:
    max_entries: int
    max_total: int
    max_ratio: int
    ratio_floor: int = MiB  # smaller entries are never refused for their ratio
    entries: int = 0
    total: int = 0

    def count(self, entries: int) -> None:
        self.entries += entries
        if self.entries > self.max_entries:
            raise _file_error(
                _l("The ZIP file contains more than {count} files.", count=self.max_entries)
            )

    def too_big(self) -> DomainError:
        return _file_error(
            _l("The ZIP file unpacks to more than {size} MB.", size=self.max_total // MiB)
        )

    def too_compressed(self) -> DomainError:
        return _file_error(
            _l(
                "The ZIP file cannot be accepted: a file in it is compressed more than "
                "{ratio} to 1.",
                ratio=self.max_ratio,
            )
        )

    def check_ratio(self, size: int, compressed: int) -> None:
        if size > self.ratio_floor and size > self.max_ratio * max(compressed, 1):
            raise self.too_compressed()


def _check_archive(archive: zipfile.ZipFile, budget: _Budget, depth: int) -> None:
    infos = archive.infolist()
    budget.count(len(infos))
    for info in infos:
        _check_member_name(member_name(info))
        if info.flag_bits & 0x1:
            raise _file_error(
                _l("The ZIP file contains password-protected files; upload it without a password.")
            )
    files = [info for info in infos if not info.is_dir()]
    if budget.total + sum(info.file_size for info in files) > budget.max_total:
        raise budget.too_big()
    for info in files:
        budget.check_ratio(info.file_size, info.compress_size)
    for info in files:
        nested = _is_nested_zip(member_name(info))
        if nested and depth >= 1:
            raise _file_error(
                _l("The ZIP file contains ZIP files nested more than one level deep.")
            )
        try:
            with archive.open(info) as member:
                # Declared sizes can lie: count what really comes out, with a running cap.
                produced = 0
                while data := member.read(256 * 1024):
                    produced += len(data)
                    budget.total += len(data)
                    if budget.total > budget.max_total:
                        raise budget.too_big()
                    budget.check_ratio(produced, info.compress_size)
            if nested:
                with archive.open(info) as member, zipfile.ZipFile(member) as inner:
                    _check_archive(inner, budget, depth + 1)
        except _ZIP_ERRORS:
            raise _damaged() from None


def check_zip(
    source: str | os.PathLike[str] | IO[bytes],
    max_entries: int = 1000,
    max_total: int = 2 * GiB,
    max_ratio: int = 100,
) -> ZipReport:
    """Refuse (DomainError) a ZIP that is damaged, a bomb, encrypted or has unsafe names.

    Reads the central directory first (entry count, declared sizes and ratios, names,
    encryption), then decompresses every entry as a stream, counting the bytes that really
    come out against the same limits. A ZIP inside the archive is checked the same way (its
    entries and bytes count too); one inside that is refused.
    """
    budget = _Budget(max_entries, max_total, max_ratio)
    with _open_zip(source) as archive:
        if not archive.infolist():
            raise _file_error(_l("The ZIP file is empty."))
        _check_archive(archive, budget, depth=0)
    return ZipReport(budget.entries, budget.total)


def check_container(source: str | os.PathLike[str] | IO[bytes], kind: Kind) -> None:
    """The whole-file checks ``sniff`` cannot do from the first bytes (ZIP-based formats).

    docx/xlsx/pptx: a ZIP with ``[Content_Types].xml`` and the ``word/``, ``xl/`` or ``ppt/``
    part of its kind (the server never unpacks Office files, so no bomb check); zip:
    ``check_zip``. Other kinds: nothing to do.
    """
    if kind.name == "zip":
        check_zip(source)
        return
    prefix = _OOXML_PARTS.get(kind.name)
    if prefix is None:
        return
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (*_ZIP_ERRORS, OSError):
        raise _mismatch("." + kind.name) from None
    if "[Content_Types].xml" not in names or not any(n.startswith(prefix) for n in names):
        raise _mismatch("." + kind.name)


@dataclass(frozen=True)
class ZipMember:
    path: str  # where it is in the archive ("合同/第1页.jpg"; "扫描.zip/第1页.jpg" if nested)
    filename: str  # its cleaned name, to store it under
    size: int  # its size as the archive declares it (the stream enforces it)
    stream: IO[bytes]  # readable until the iteration moves on


def iter_zip_members(
    source: str | os.PathLike[str] | IO[bytes],
    max_entries: int = 1000,
    max_total: int = 2 * GiB,
    max_ratio: int = 100,
) -> Iterator[ZipMember]:
    """``check_zip``, then each file of the archive as a stream, one at a time.

    A nested ZIP is opened and its files are handed out instead of it. Folders and the
    clutter operating systems add (``__MACOSX/``, ``.DS_Store``, ``Thumbs.db``) are skipped.
    Each member is a new upload: ``sniff`` its head and store it (``BlobStore.put_stream``).
    """
    check_zip(source, max_entries, max_total, max_ratio)
    with _open_zip(source) as archive:
        yield from _members(archive, prefix="")


def _members(archive: zipfile.ZipFile, prefix: str) -> Iterator[ZipMember]:
    for info in archive.infolist():
        name = member_name(info)
        if info.is_dir() or _is_junk(name):
            continue
        path = prefix + name.replace("\\", "/")
        try:
            with archive.open(info) as stream:
                if not prefix and _is_nested_zip(name):
                    with zipfile.ZipFile(stream) as inner:
                        yield from _members(inner, prefix=path + "/")
                    continue
                filename = clean_filename(path.rsplit("/", 1)[-1])
                yield ZipMember(path=path, filename=filename, size=info.file_size, stream=stream)
        except _ZIP_ERRORS:
            raise _damaged() from None
