"""Files for a case from a multipart body, streamed into the blob store as they arrive (one or
many, or a ZIP of them): all are added with their evidence-log leaves in one transaction, or
none is kept. The portal's upload form and the firm API share it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User
from portal.cases import service
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseMaterial
from portal.errors import DomainError
from portal.evidence import upload
from portal.evidence.blobs import BlobStore
from portal.i18n import _l

CLOSED = (Status.CLOSED, Status.WITHDRAWN, Status.REJECTED, Status.INELIGIBLE)


async def receive_materials(
    db: AsyncSession,
    store: BlobStore,
    case: Case,
    actor: User,
    stream: AsyncIterator[bytes],
    content_type: str,
    *,
    max_file_bytes: int,
) -> list[CaseMaterial]:
    """The body's files (fields ``file``, ``kind``, ``title``, ``description``,
    ``visibility``) added to the case; DomainError (nothing kept) when any is refused."""
    if case.status in CLOSED:
        raise DomainError(_l("This case is no longer open."))
    files: list[upload.ReceivedFile] = []
    archives: list[upload.ReceivedFile] = []
    try:
        received = await upload.receive(stream, content_type, store, max_file_bytes=max_file_bytes)
        files = list(received.files)
        for archive in [f for f in files if f.kind.name == "zip"]:
            files.remove(archive)
            archives.append(archive)
            files.extend(await upload.expand_zip(store, archive, max_file_bytes=max_file_bytes))
        if not files:
            raise DomainError(_l("Choose a file to upload."), field="file")
        title = received.first("title").strip()
        added = await service.add_materials(
            db,
            case,
            actor,
            [
                service.NewMaterial(
                    filename=f.filename,
                    content_type=f.kind.content_type,
                    size=f.blob.size,
                    sha256=f.blob.sha256,
                    title=title if len(files) == 1 else "",
                )
                for f in files
            ],
            kind=received.first("kind", "evidence"),
            description=received.first("description"),
            visibility=received.first("visibility", "parties"),
        )
    except BaseException:
        await db.rollback()
        await _discard_unreferenced(db, store, files + archives)
        raise
    # An unpacked ZIP's own bytes are not evidence: only its files are kept.
    await _discard_unreferenced(db, store, archives)
    return added


async def _discard_unreferenced(
    db: AsyncSession, store: BlobStore, files: list[upload.ReceivedFile]
) -> None:
    """Delete the blobs this upload created, unless a concurrent upload of the same content
    has committed a reference to one meanwhile."""
    created = {f.blob.sha256 for f in files if f.blob.created}
    if not created:
        return
    referenced = set(await service.referenced_blobs(db, created))
    await upload.discard_files(store, [f for f in files if f.blob.sha256 not in referenced])
