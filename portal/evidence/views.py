"""Evidence pages: files, receipts (JSON and printable, with a QR code), the log's public key,
and the administrators' page for checkpoints and full verification."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from portal.accounts.models import User
from portal.cases.models import Case, CaseMaterial
from portal.cases.service import PARTIES
from portal.errors import NotFound
from portal.evidence import log
from portal.evidence.integrity import cores, last_verification, verify_log
from portal.evidence.policy import EVIDENCE_LOG, Item
from portal.evidence.serving import blob_response
from portal.evidence.verify.leaf import decode_leaf
from portal.evidence.verify.receipt import dump_receipt, verify_receipt
from portal.i18n import _l
from portal.web import db_session, flash, redirect, render, require, url_path

INLINE_TYPES = ("image/", "application/pdf", "audio/", "video/")


async def load_item(request: Request, db: Any) -> Item:
    """The case's evidence item named in the path, if this user may see it (else 404)."""
    case = await db.get(Case, request.path_params["case_id"])
    if case is None:
        raise NotFound
    material = await db.get(CaseMaterial, request.path_params["material_id"])
    if material is None or material.case_id != case.id:
        raise NotFound
    item = Item(material, case)
    require(request, "view", item)
    return item


async def evidence_file(request: Request) -> Response:
    """The file: shown in the browser (images, PDF, audio, video; ranges for seeking) or
    downloaded (?download=1 and every other type)."""
    async with db_session(request) as db:
        item = await load_item(request, db)
    m = item.material
    inline = m.content_type.startswith(INLINE_TYPES) and not request.query_params.get("download")
    return await blob_response(
        request,
        request.app.state.blobs,
        m.sha256,
        filename=m.filename,
        content_type=m.content_type,
        inline=inline,
    )


async def _receipt(request: Request, db: Any, item: Item) -> dict[str, Any]:
    if item.material.leaf_id is None:
        raise NotFound  # a draft's files enter the log when the case is submitted
    state = request.app.state
    return await log.make_leaf_receipt(db, item.material.leaf_id, state.log_key, state.tsa)


def _receipt_name(item: Item) -> str:
    return f"receipt-{item.case.number}-{item.material.id}.json"


async def receipt_json(request: Request) -> Response:
    async with db_session(request) as db:
        item = await load_item(request, db)
        receipt = await _receipt(request, db, item)
    return Response(
        dump_receipt(receipt),
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{_receipt_name(item)}"',
            "Cache-Control": "private, no-store",
        },
    )


def _qr_svg(text: str) -> str:
    import segno  # only the receipt page needs it

    qr = segno.make(text, error="m")
    data: str = qr.svg_data_uri(scale=4, border=2)
    return data


async def receipt_page(request: Request) -> Response:
    """The printable receipt (存证凭证): what was logged, where, and how to check it."""
    async with db_session(request) as db:
        item = await load_item(request, db)
        receipt = await _receipt(request, db, item)
        uploader = await db.get(User, item.material.uploaded_by_id or 0)
    leaf_bytes = base64.b64decode(receipt["leaf"])
    leaf = decode_leaf(leaf_bytes)
    leaf_hash = hashlib.sha256(b"\x00" + leaf_bytes).hexdigest()
    settings = request.app.state.settings
    public_url = settings.base_url + url_path(
        request.app, "evidence.public_receipt", leaf_hash=leaf_hash
    )
    report = verify_receipt(receipt, None, [request.app.state.log_key.vkey])
    return render(
        request,
        "evidence/receipt.html",
        {
            "item": item,
            "m": item.material,
            "case": item.case,
            "uploader": uploader,
            "receipt": receipt,
            "leaf": leaf,
            "leaf_hash": leaf_hash,
            "leaf_json": json.dumps(
                json.loads(leaf_bytes.split(b"\n", 1)[1]), indent=2, ensure_ascii=False
            ),
            "public_url": public_url,
            "qr": _qr_svg(public_url),
            "report": report,
            "key": request.app.state.log_key,
            "party_labels": PARTIES,
        },
    )


async def public_receipt(request: Request) -> Response:
    """A receipt by its leaf hash (the QR code on a printed receipt points here): no login,
    since a receipt holds no personal data and the hash cannot be guessed."""
    text = request.path_params["leaf_hash"]
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        raise NotFound from None
    if len(digest) != 32:
        raise NotFound
    async with db_session(request) as db:
        leaf_id = await log.leaf_id_by_hash(db, digest)
        if leaf_id is None:
            raise NotFound
        state = request.app.state
        receipt = await log.make_leaf_receipt(db, leaf_id, state.log_key, state.tsa)
    return Response(
        dump_receipt(receipt),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def consistency(request: Request) -> Response:
    """A consistency proof between two signed checkpoints (RFC 9162 §2.1.4), for anyone who
    kept an older checkpoint: ``?from=OLD_SIZE&to=NEW_SIZE`` (sizes of signed checkpoints)."""
    params = request.query_params
    try:
        old, new = int(params.get("from", "")), int(params.get("to", ""))
    except ValueError:
        return JSONResponse({"error": "from and to must be checkpoint sizes"}, status_code=400)
    async with db_session(request) as db:
        answer = await log.prove_consistency(db, old, new)
    if answer is None:
        return JSONResponse(
            {"error": "from and to must be sizes of signed checkpoints, from ≤ to"},
            status_code=400,
        )
    return JSONResponse(
        {
            "from": {"size": old, "checkpoint": answer.old.note},
            "to": {"size": new, "checkpoint": answer.new.note},
            "proof": [base64.b64encode(h).decode("ascii") for h in answer.proof],
        },
        headers={"Cache-Control": "public, max-age=3600"},
    )


async def log_key_page(request: Request) -> Response:
    """The log's public key, published for anyone who checks a receipt."""
    key = request.app.state.log_key
    if request.query_params.get("format") == "text":
        return Response(key.vkey + "\n", media_type="text/plain; charset=utf-8")
    async with db_session(request) as db:
        checkpoint = await log.latest_checkpoint(db)
    return render(request, "evidence/key.html", {"key": key, "checkpoint": checkpoint})


# -- administrators ---------------------------------------------------------------------------


async def admin_page(request: Request) -> Response:
    require(request, "view", EVIDENCE_LOG)
    async with db_session(request) as db:
        size, root = await log.head_of(db)
        pending = await log.pending_count(db)
        checkpoints = await log.recent_checkpoints(db)
        checkpoint = checkpoints[0] if checkpoints else None
        verification = await last_verification(db)
    return render(
        request,
        "evidence/admin.html",
        {
            "size": size,
            "root": base64.b64encode(root).decode(),
            "pending": pending,
            "checkpoint": checkpoint,
            "checkpoints": checkpoints,
            "verification": verification,
            "key": request.app.state.log_key,
            "tsa_url": request.app.state.settings.tsa_url,
            "evidence_log": EVIDENCE_LOG,
        },
    )


async def admin_checkpoint(request: Request) -> Response:
    require(request, "manage", EVIDENCE_LOG)
    state = request.app.state
    async with db_session(request) as db:
        checkpoint = await log.checkpoint_now(db, state.log_key, state.tsa)
    response = redirect(request, "evidence.admin")
    if checkpoint is None:
        return flash(request, response, _l("The log is empty: there is nothing to sign."), "error")
    return flash(
        request, response, _l("Checkpoint signed for {size} entries.", size=checkpoint.size)
    )


VERIFY_WORKERS = min(4, cores())


async def admin_verify(request: Request) -> Response:
    require(request, "manage", EVIDENCE_LOG)
    state = request.app.state
    async with db_session(request) as db:
        # A log longer than one block is checked by worker processes: this process stays free
        # to serve others while they work (it only joins their findings).
        result = await verify_log(
            db, state.blobs, state.log_key, actor_id=request.state.user.id, workers=VERIFY_WORKERS
        )
    response = redirect(request, "evidence.admin")
    if result.ok:
        return flash(
            request,
            response,
            _l(
                "Verified {leaves} entries and {files} files: everything matches.",
                leaves=result.leaves,
                files=result.files,
            ),
        )
    return flash(request, response, _l("The verification found a mismatch; see below."), "error")


routes = [
    Route(
        "/cases/{case_id:int}/materials/{material_id:int}/receipt",
        receipt_page,
        name="evidence.receipt",
    ),
    Route(
        "/cases/{case_id:int}/materials/{material_id:int}/receipt.json",
        receipt_json,
        name="evidence.receipt_json",
    ),
    Route("/evidence/receipts/{leaf_hash}.json", public_receipt, name="evidence.public_receipt"),
    Route("/evidence/key", log_key_page, name="evidence.key"),
    Route("/evidence/consistency", consistency, name="evidence.consistency"),
    Route("/admin/evidence", admin_page, name="evidence.admin"),
    Route(
        "/admin/evidence/checkpoint",
        admin_checkpoint,
        methods=["POST"],
        name="evidence.checkpoint",
    ),
    Route("/admin/evidence/verify", admin_verify, methods=["POST"], name="evidence.verify"),
]
