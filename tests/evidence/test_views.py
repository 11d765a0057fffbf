"""Evidence over HTTP (both backends): uploads of one file, several, or a ZIP; every refusal
shown in Chinese and leaving nothing behind; serving with ranges; who sees what; receipts
checked with the library and the ``jiefen-verify`` command; the public receipt, the log key;
the administrators' checkpoint and full verification."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import html
import io
import json
import re
import secrets
import sys
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, update

from portal.app import create_app
from portal.cases.models import Case, CaseMaterial
from portal.evidence.blobs import MiB
from portal.evidence.models import LogLeaf
from portal.evidence.verify.note import make_vkey
from portal.evidence.verify.receipt import verify_receipt
from portal.policy import Role
from portal.settings import Settings
from tests.conftest import csrf_token, log_in, post_form, truncate_all
from tests.factories import (
    PDF,
    PNG,
    Person,
    make_case,
    make_committee,
    make_firm,
    make_user,
    verify_phone,
)

VERIFY = Path(sys.executable).parent / "jiefen-verify"
BOUNDARY = "----JiefenViewsBoundary5e1f0c2a"
TXT = "2026年5月12日 聊天记录：对方客服承诺“保本保收益”。\n".encode()

# The Chinese messages (portal/locale/zh_CN/LC_MESSAGES/messages.po).
ONE_UPLOADED = "文件已上传。"
MISMATCH_PDF = "文件内容与文件名（.pdf）不符。允许的类型："
FOLDER_PATH = "文件名不能包含文件夹路径或盘符。"
CONTROL_CHARS = "文件名包含控制字符。"
EMPTY = "文件是空的。"
TOO_LARGE_1MB = "文件超过1 MB。"
TOO_COMPRESSED = "无法接受此 ZIP 文件：其中有文件的压缩比超过 100 比 1。"
CUT_OFF = "上传在完成前中断，请重试。"
NO_FILE = "请选择要上传的文件。"
NEVER_RUN = "尚未核验。"


def n_uploaded(n: int) -> str:
    return f"已上传 {n} 个文件。"


def already_in_case(name: str) -> str:
    return f"该文件已在本案中（“{name}”）。"


def zip_member_refused(name: str) -> str:
    return f"ZIP 文件中有无法接受的文件：{name}。"


def _state(app: Any) -> Any:
    return app.starlette.state


def unique(data: bytes) -> bytes:
    """The same kind of file, with different content (a blob of its own)."""
    return data + secrets.token_hex(8).encode()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


# -- a case with all its people -------------------------------------------------------------


@dataclasses.dataclass
class World:
    case: Case
    consumer: Person
    rep: Person
    mediator: Person
    admin: Person


_PHONES = iter(range(1, 10_000))


async def make_world(app: Any) -> World:
    """A numbered case, accepted and assigned: its consumer, firm rep, mediator and admin."""
    committee = await make_committee(app)
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee)
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    consumer = await make_user(app, Role.CONSUMER, phone=f"1370000{next(_PHONES):04d}")
    await verify_phone(app, consumer)
    case = await make_case(app, consumer, firm, status="assigned", mediator_id=mediator.id)
    assert case.number
    return World(case, consumer, rep, mediator, admin)


@contextlib.asynccontextmanager
async def as_user(app: Any, person: Person) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of its own, logged in as ``person``."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await log_in(client, person.login, person.password)
        yield client


# -- multipart bodies, built by hand (names with control characters, cut-off bodies) --------


def text_part(name: str, value: str) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode()


def file_part(filename: str, data: bytes, name: str = "file") -> bytes:
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data


def multipart(*parts: bytes, complete: bool = True) -> bytes:
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--" + BOUNDARY.encode() + b"--\r\n" if complete else b"")


async def post_upload(client: httpx.AsyncClient, case_id: int, body: bytes) -> httpx.Response:
    token = await csrf_token(client)
    return await client.post(
        f"/cases/{case_id}/materials",
        content=body,
        headers={
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "X-CSRF-Token": token,
        },
    )


async def upload(
    client: httpx.AsyncClient,
    case_id: int,
    files: list[tuple[str, bytes]],
    *,
    kind: str = "evidence",
    title: str = "",
    description: str = "",
    visibility: str = "parties",
    complete: bool = True,
) -> str:
    """Upload like the case page's form; returns the page the redirect leads to."""
    parts = [
        text_part("kind", kind),
        text_part("title", title),
        text_part("description", description),
        text_part("visibility", visibility),
        *(file_part(name, data) for name, data in files),
    ]
    response = await post_upload(client, case_id, multipart(*parts, complete=complete))
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/cases/{case_id}"
    page = await client.get(response.headers["location"])
    assert page.status_code == 200
    return html.unescape(page.text)


def flash(page: str) -> str:
    found = re.search(r'data-testid="flash">(.*?)</div>', page, re.S)
    assert found, "no message on the page"
    return found.group(1).strip()


def evidence_list(page: str) -> str:
    found = re.search(r'data-testid="evidence-list">(.*?)</ul>', page, re.S)
    assert found
    return found.group(1)


# -- what is stored ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Stored:
    materials: int
    leaves: int
    blobs: frozenset[str]
    tmp: frozenset[str]


def _files(root: Path) -> frozenset[str]:
    return frozenset(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def stored(app: Any) -> Stored:
    state = _state(app)
    async with state.db() as db:
        materials = await db.scalar(select(func.count(CaseMaterial.id)))
        leaves = await db.scalar(select(func.count(LogLeaf.id)))
    return Stored(
        materials or 0, leaves or 0, _files(state.blobs.blob_dir), _files(state.blobs.tmp_dir)
    )


async def materials_of(app: Any, case_id: int) -> list[CaseMaterial]:
    async with _state(app).db() as db:
        rows = await db.scalars(
            select(CaseMaterial).where(CaseMaterial.case_id == case_id).order_by(CaseMaterial.id)
        )
        return list(rows)


async def material_named(app: Any, case_id: int, filename: str) -> CaseMaterial:
    found = [m for m in await materials_of(app, case_id) if m.filename == filename]
    assert len(found) == 1, filename
    return found[0]


# -- uploads -------------------------------------------------------------------------------


async def test_several_files_or_a_zip_are_listed_logged_and_stored(app: Any) -> None:
    world = await make_world(app)
    state = _state(app)
    async with as_user(app, world.consumer) as client:
        png, pdf = unique(PNG), unique(PDF)
        before = await stored(app)
        page = await upload(
            client,
            world.case.id,
            [("转账截图.png", png), ("还款协议.pdf", pdf), ("聊天记录.txt", TXT)],
            description="对方承诺保本的证据",
            visibility="parties",
        )
        assert flash(page) == n_uploaded(3)
        listed = evidence_list(page)
        for name in ("转账截图.png", "还款协议.pdf", "聊天记录.txt"):
            assert name in listed
        assert listed.count("对方承诺保本的证据") == 3
        after = await stored(app)
        assert after.materials == before.materials + 3
        assert after.leaves == before.leaves + 3
        assert len(after.blobs - before.blobs) == 3
        assert after.tmp == frozenset()
        for name, data, content_type in (
            ("转账截图.png", png, "image/png"),
            ("还款协议.pdf", pdf, "application/pdf"),
            ("聊天记录.txt", TXT, "text/plain; charset=utf-8"),
        ):
            m = await material_named(app, world.case.id, name)
            assert m.leaf_id is not None
            assert m.sha256 == hashlib.sha256(data).hexdigest() and m.size == len(data)
            assert m.content_type == content_type
            assert m.party == "claimant" and m.visibility == "parties" and m.kind == "evidence"
            assert state.blobs.exists(m.sha256)
            assert state.blobs.read_all(m.sha256) == data

        # One file: its title is what the list shows.
        page = await upload(client, world.case.id, [("合同.pdf", unique(PDF))], title="借款合同")
        assert flash(page) == ONE_UPLOADED
        assert "借款合同" in evidence_list(page)
        assert (await material_named(app, world.case.id, "合同.pdf")).title == "借款合同"

        # A ZIP: each of its files becomes an item of its own (the clutter is skipped).
        first, second = unique(PNG), unique(PDF)
        archive = make_zip(
            {"证据/第1页.png": first, "证据/第2页.pdf": second, "__MACOSX/._x": b"junk"}
        )
        before = await stored(app)
        page = await upload(client, world.case.id, [("证据.zip", archive)])
        assert flash(page) == n_uploaded(2)
        listed = evidence_list(page)
        assert "第1页.png" in listed and "第2页.pdf" in listed and "证据.zip" not in listed
        after = await stored(app)
        assert (after.materials, after.leaves) == (before.materials + 2, before.leaves + 2)
        for name, data in (("第1页.png", first), ("第2页.pdf", second)):
            m = await material_named(app, world.case.id, name)
            assert m.leaf_id is not None and m.sha256 == hashlib.sha256(data).hexdigest()
            assert _state(app).blobs.exists(m.sha256)
        assert after.tmp == frozenset()


# -- refusals: the message in Chinese, and nothing half-stored -------------------------------


async def refused(
    app: Any, client: httpx.AsyncClient, case_id: int, message: str, **kw: Any
) -> None:
    before = await stored(app)
    page = await upload(client, case_id, **kw)
    assert message in flash(page), flash(page)
    assert 'class="flash flash-error"' in page
    after = await stored(app)
    assert after.materials == before.materials
    assert after.leaves == before.leaves
    assert after.blobs == before.blobs
    assert after.tmp == frozenset()


BOMB = make_zip({"zeros.bin": bytes(4 * MiB)})  # about 4 KB, a thousand to one


async def test_bad_uploads_are_refused_in_chinese_and_leave_nothing(app: Any) -> None:
    world = await make_world(app)
    case_id = world.case.id
    async with as_user(app, world.consumer) as client:
        await refused(app, client, case_id, MISMATCH_PDF, files=[("合同.pdf", unique(PNG))])
        await refused(app, client, case_id, FOLDER_PATH, files=[("../../x.pdf", unique(PDF))])
        await refused(app, client, case_id, FOLDER_PATH, files=[("..\\..\\x.pdf", unique(PDF))])
        await refused(app, client, case_id, CONTROL_CHARS, files=[("a\x07b.pdf", unique(PDF))])
        await refused(app, client, case_id, CONTROL_CHARS, files=[("a\u202egpj.pdf", PDF)])
        await refused(app, client, case_id, EMPTY, files=[("空.pdf", b"")])
        await refused(app, client, case_id, NO_FILE, files=[("", b"")])
        await refused(app, client, case_id, TOO_COMPRESSED, files=[("bomb.zip", BOMB)])
        # A body cut off half-way through a file: no final boundary.
        big = unique(PDF) + secrets.token_bytes(200_000)
        await refused(app, client, case_id, CUT_OFF, files=[("大.pdf", big)], complete=False)
        # The same, cut in the middle of the file's bytes.
        token = await csrf_token(client)
        body = multipart(text_part("kind", "evidence"), file_part("半.pdf", big))
        before = await stored(app)
        response = await client.post(
            f"/cases/{case_id}/materials",
            content=body[: len(body) // 2],
            headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "X-CSRF-Token": token,
            },
        )
        assert response.status_code == 303
        page = html.unescape((await client.get(response.headers["location"])).text)
        assert flash(page) == CUT_OFF
        assert await stored(app) == before


async def test_a_file_already_in_the_case_is_named_and_a_bad_batch_keeps_nothing(
    app: Any,
) -> None:
    world = await make_world(app)
    case_id = world.case.id
    async with as_user(app, world.consumer) as client:
        pdf = unique(PDF)
        page = await upload(client, case_id, [("合同.pdf", pdf)], title="借款合同")
        assert flash(page) == ONE_UPLOADED
        # Again, under another name: refused, naming the item it already is.
        await refused(app, client, case_id, already_in_case("借款合同"), files=[("副本.pdf", pdf)])
        # One already stored file among new ones: none of the new ones is kept.
        good = [("a.png", unique(PNG)), ("b.txt", unique(TXT))]
        await refused(
            app, client, case_id, already_in_case("借款合同"), files=[*good, ("c.pdf", pdf)]
        )
        # The same new file twice in one batch.
        twice = unique(PNG)
        await refused(
            app,
            client,
            case_id,
            already_in_case("x.png"),
            files=[("x.png", twice), ("y.png", twice)],
        )
        # A bad file last, first or in the middle: the good ones are not kept either.
        bad = ("伪装.pdf", unique(PNG))
        for files in ([*good, bad], [bad, *good], [good[0], bad, good[1]]):
            await refused(app, client, case_id, MISMATCH_PDF, files=files)
        await refused(app, client, case_id, FOLDER_PATH, files=[*good, ("../x.pdf", unique(PDF))])
        await refused(app, client, case_id, EMPTY, files=[*good, ("空.txt", b"")])
        await refused(app, client, case_id, TOO_COMPRESSED, files=[*good, ("bomb.zip", BOMB)])
        await refused(app, client, case_id, CUT_OFF, files=good, complete=False)
        # The identity papers make_case stored: refused as a duplicate by its file name.
        identity = next(m for m in await materials_of(app, case_id) if m.kind == "identity")
        same = _state(app).blobs.read_all(identity.sha256)
        await refused(
            app, client, case_id, already_in_case("identity.pdf"), files=[*good, ("i.pdf", same)]
        )
        # After all that, a good upload still works.
        page = await upload(client, case_id, good)
        assert flash(page) == n_uploaded(2)


async def test_a_zip_upload_leaves_no_blob_of_the_archive(app: Any) -> None:
    world = await make_world(app)
    blobs = _state(app).blobs
    async with as_user(app, world.consumer) as client:
        # A member refused: the other file and the ZIP's good member are not kept...
        refused_zip = make_zip({"好.png": unique(PNG), "坏.pdf": unique(PNG)})
        before = await stored(app)
        page = await upload(
            client, world.case.id, [("a.txt", unique(TXT)), ("证据.zip", refused_zip)]
        )
        assert flash(page) == zip_member_refused("坏.pdf")
        after = await stored(app)
        assert (after.materials, after.leaves, after.tmp) == (
            before.materials,
            before.leaves,
            frozenset(),
        )
        leftover = after.blobs - before.blobs
        # ... and an accepted ZIP: its two files are stored.
        accepted_zip = make_zip({"c.png": unique(PNG), "d.pdf": unique(PDF)})
        page = await upload(client, world.case.id, [("证据2.zip", accepted_zip)])
        assert flash(page) == n_uploaded(2)
        final = await stored(app)
        assert final.materials == after.materials + 2
        # The bug: each archive is still in storage, referenced by nothing.
        assert not blobs.exists(hashlib.sha256(refused_zip).hexdigest())
        assert leftover == frozenset()
        assert not blobs.exists(hashlib.sha256(accepted_zip).hexdigest())
        assert len(final.blobs - after.blobs) == 2


@pytest.fixture
async def small_app(settings: Settings) -> AsyncIterator[Any]:
    """The app with a 1 MB limit per file."""
    application = create_app(dataclasses.replace(settings, evidence_max_mb=1))
    async with LifespanManager(application):
        yield application
    await truncate_all(settings.database_url)


async def test_a_file_over_the_limit_is_refused_and_leaves_nothing(small_app: Any) -> None:
    world = await make_world(small_app)
    async with as_user(small_app, world.consumer) as client:
        too_big = PDF + bytes(MiB + 1 - len(PDF))
        just_right = unique(PDF)
        just_right += bytes(MiB - len(just_right))
        await refused(small_app, client, world.case.id, TOO_LARGE_1MB, files=[("大.pdf", too_big)])
        await refused(
            small_app,
            client,
            world.case.id,
            TOO_LARGE_1MB,
            files=[("小.pdf", just_right), ("大.pdf", too_big)],
        )
        # A ZIP member over the limit is refused too (the archive itself is small).
        # (half random, half zeros: compressed to about half, so neither archive nor bomb)
        big = PDF + secrets.token_bytes(MiB // 2) + bytes(MiB // 2 + 1000)
        archive = make_zip({"ok.txt": unique(TXT), "大.pdf": big})
        assert len(archive) < MiB
        before = await stored(small_app)
        page = await upload(client, world.case.id, [("包.zip", archive)])
        assert zip_member_refused("大.pdf") in flash(page)
        after = await stored(small_app)
        assert (after.materials, after.leaves) == (before.materials, before.leaves)
        page = await upload(client, world.case.id, [("小.pdf", just_right)])
        assert flash(page) == ONE_UPLOADED


# -- serving -------------------------------------------------------------------------------


async def test_ranges_and_inline_or_attachment(app: Any) -> None:
    world = await make_world(app)
    async with as_user(app, world.consumer) as client:
        png, pdf = unique(PNG), unique(PDF) + secrets.token_bytes(5000)
        await upload(client, world.case.id, [("图.png", png), ("书.pdf", pdf), ("聊.txt", TXT)])
        items = {m.filename: m for m in await materials_of(app, world.case.id)}
        url = f"/cases/{world.case.id}/materials/{items['书.pdf'].id}"

        part = await client.get(url, headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206
        assert part.content == pdf[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{len(pdf)}"
        assert part.headers["content-length"] == "1000"
        tail = await client.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == pdf[-10:]
        assert tail.headers["content-range"] == f"bytes {len(pdf) - 10}-{len(pdf) - 1}/{len(pdf)}"
        beyond = await client.get(url, headers={"Range": f"bytes={len(pdf)}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(pdf)}"
        whole = await client.get(url)
        assert whole.status_code == 200 and whole.content == pdf
        assert whole.headers["accept-ranges"] == "bytes"

        expected = {
            "图.png": ("image/png", "inline", png),
            "书.pdf": ("application/pdf", "inline", pdf),
            "聊.txt": ("text/plain; charset=utf-8", "attachment", TXT),
        }
        for name, (content_type, disposition, data) in expected.items():
            response = await client.get(f"/cases/{world.case.id}/materials/{items[name].id}")
            assert response.status_code == 200 and response.content == data
            assert response.headers["content-type"] == content_type
            assert response.headers["content-disposition"].startswith(disposition + ";")
            assert response.headers["x-content-type-options"] == "nosniff"
            download = await client.get(
                f"/cases/{world.case.id}/materials/{items[name].id}?download=1"
            )
            assert download.headers["content-disposition"].startswith("attachment;")


async def test_who_sees_which_item(app: Any) -> None:
    world = await make_world(app)
    case_id = world.case.id
    async with (
        as_user(app, world.consumer) as consumer,
        as_user(app, world.rep) as rep,
        as_user(app, world.mediator) as mediator,
        as_user(app, world.admin) as admin,
    ):
        await upload(consumer, case_id, [("只给调解员.pdf", unique(PDF))], visibility="mediator")
        await upload(rep, case_id, [("公司内部说明.pdf", unique(PDF))], visibility="mediator")
        await upload(consumer, case_id, [("共享.png", unique(PNG))])
        await upload(consumer, case_id, [("户口本.png", unique(PNG))], kind="identity")
        items = {m.filename: m for m in await materials_of(app, case_id)}
        assert items["公司内部说明.pdf"].party == "respondent"

        def url(name: str) -> str:
            return f"/cases/{case_id}/materials/{items[name].id}"

        seen = {
            "consumer": (
                consumer,
                {"只给调解员.pdf", "共享.png", "户口本.png", "identity.pdf", "contract.pdf"},
            ),
            "rep": (rep, {"公司内部说明.pdf", "共享.png", "contract.pdf"}),
            "mediator": (mediator, set(items)),
            "admin": (admin, set(items)),
        }
        for who, (client, visible) in seen.items():
            page = html.unescape((await client.get(f"/cases/{case_id}")).text)
            listed = evidence_list(page)
            for name in items:
                response = await client.get(url(name))
                receipt = await client.get(url(name) + "/receipt.json")
                if name in visible:
                    assert response.status_code == 200, (who, name)
                    assert receipt.status_code == 200, (who, name)
                    assert name in listed, (who, name)
                else:
                    assert response.status_code == 404, (who, name)
                    assert receipt.status_code == 404, (who, name)
                    assert (await client.get(url(name) + "/receipt")).status_code == 404
                    assert name not in listed, (who, name)
        # Nobody outside the case, and no one anonymous.
        other = await make_user(app, Role.CONSUMER, phone="13711112222")
        async with as_user(app, other) as stranger:
            assert (await stranger.get(url("共享.png"))).status_code == 404
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as anonymous:
            response = await anonymous.get(url("共享.png"))
            assert response.status_code == 303 and "/accounts/login" in response.headers["location"]


async def test_a_hidden_item_is_not_named_anywhere_on_the_other_partys_page(app: Any) -> None:
    world = await make_world(app)
    async with as_user(app, world.consumer) as consumer, as_user(app, world.rep) as rep:
        await upload(
            consumer, world.case.id, [("只给调解员.pdf", unique(PDF))], visibility="mediator"
        )
        await upload(consumer, world.case.id, [("户口本.png", unique(PNG))], kind="identity")
        await upload(rep, world.case.id, [("公司内部说明.pdf", unique(PDF))], visibility="mediator")
        firm_page = html.unescape((await rep.get(f"/cases/{world.case.id}")).text)
        consumer_page = html.unescape((await consumer.get(f"/cases/{world.case.id}")).text)
        assert "只给调解员.pdf" not in firm_page
        assert "户口本.png" not in firm_page
        assert "公司内部说明.pdf" not in consumer_page


# -- receipts --------------------------------------------------------------------------------


async def run_verify(*args: str | Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(VERIFY),
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_receipts_page_json_public_and_checked_by_the_library_and_the_command(
    app: Any, tmp_path: Path
) -> None:
    world = await make_world(app)
    state = _state(app)
    async with as_user(app, world.consumer) as client:
        pdf, png = unique(PDF), unique(PNG)
        await upload(client, world.case.id, [("合同.pdf", pdf)])
        await upload(client, world.case.id, [("截图.png", png)], title="转账截图")
        contract = await material_named(app, world.case.id, "合同.pdf")
        item = await material_named(app, world.case.id, "截图.png")

        # The printable receipt: what, the file's hash, and a QR code of its public address.
        page = await client.get(f"/cases/{world.case.id}/materials/{item.id}/receipt")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert "存证凭证" in text and "转账截图" in text and world.case.number in text
        assert re.search(r'<img src="data:image/svg\+xml[^"]+"', page.text)
        sha = re.search(r'data-testid="file-sha">([0-9a-f]{64})<', text)
        assert sha and sha.group(1) == hashlib.sha256(png).hexdigest()
        public = re.search(r"http://testserver(/evidence/receipts/([0-9a-f]{64})\.json)", text)
        assert public, "the public receipt's address is printed under the QR code"
        png_receipt = (
            await client.get(f"/cases/{world.case.id}/materials/{item.id}/receipt.json")
        ).json()
        leaf_hash = hashlib.sha256(b"\x00" + base64.b64decode(png_receipt["leaf"])).hexdigest()
        assert public.group(2) == leaf_hash

        response = await client.get(f"/cases/{world.case.id}/materials/{contract.id}/receipt.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["content-disposition"] == (
            f'attachment; filename="receipt-{world.case.number}-{contract.id}.json"'
        )
        receipt = response.content
        key = await client.get("/evidence/key?format=text")
        vkey = key.text.strip()
        assert vkey == state.log_key.vkey

    report = verify_receipt(receipt, pdf, [vkey])
    assert report.ok and report.trusted, report.verdict()
    assert report.check("file").ok is True
    assert report.case == world.case.number
    assert not verify_receipt(receipt, png, [vkey]).ok

    receipt_path = write(tmp_path / "receipt.json", receipt)
    pdf_path = write(tmp_path / "合同.pdf", pdf)
    png_path = write(tmp_path / "截图.png", png)
    code, output = await run_verify(receipt_path, pdf_path, "--key", vkey)
    assert code == 0, output
    assert f"验证通过：该文件与调解委员会存证日志第 {report.index} 号记录一致" in output
    assert world.case.number in output

    code, output = await run_verify(receipt_path, png_path, "--key", vkey)
    assert code == 1, output
    assert "文件与日志记录不符" in output and "验证未通过" in output

    code, output = await run_verify("--lang", "en", receipt_path, png_path, "--key", vkey)
    assert code == 1 and "The file does NOT match the log entry" in output

    # One hash of the inclusion proof changed: the proof no longer leads to the signed root.
    tampered = json.loads(receipt)
    assert tampered["inclusion_proof"], "the log is large enough for a proof"
    first = bytearray(base64.b64decode(tampered["inclusion_proof"][0]))
    first[0] ^= 0x01
    tampered["inclusion_proof"][0] = base64.b64encode(bytes(first)).decode()
    bad_path = write(tmp_path / "tampered.json", json.dumps(tampered).encode())
    code, output = await run_verify(bad_path, pdf_path, "--key", vkey)
    assert code == 1, output
    assert "验证未通过" in output and "包含证明" in output
    assert not verify_receipt(bad_path.read_bytes(), pdf, [vkey]).ok

    # Another log's key: everything holds, but it is not trusted.
    other = Ed25519PrivateKey.generate().public_key()
    other_key = make_vkey(state.log_key.origin, other)
    code, output = await run_verify(receipt_path, pdf_path, "--key", other_key)
    assert code == 1, output
    assert "验证未通过" in output and "日志公钥" in output

    # The public receipt (the QR code's address) and the log key need no login.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as anonymous:
        response = await anonymous.get(public.group(1))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        report = verify_receipt(response.content, png, [state.log_key.vkey])
        assert report.ok and report.trusted, report.verdict()
        assert "张三" not in response.text and "截图.png" not in response.text
        for missing in ("0" * 64, "abc", "zz" * 32, "00" * 31):
            assert (await anonymous.get(f"/evidence/receipts/{missing}.json")).status_code == 404
        key = await anonymous.get("/evidence/key?format=text")
        assert key.status_code == 200
        assert key.headers["content-type"] == "text/plain; charset=utf-8"
        assert key.text == state.log_key.vkey + "\n"
        key_page = await anonymous.get("/evidence/key")
        assert key_page.status_code == 200 and state.log_key.vkey in key_page.text


# -- the administrators' page ------------------------------------------------------------------


async def test_admin_signs_a_checkpoint_and_verification_finds_tampering(app: Any) -> None:
    world = await make_world(app)
    state = _state(app)
    async with as_user(app, world.consumer) as consumer:
        await upload(consumer, world.case.id, [("合同.pdf", unique(PDF))], title="借款合同")
        # Not for a party.
        assert (await consumer.get("/admin/evidence")).status_code == 404
        assert (await post_form(consumer, "/admin/evidence/verify")).status_code == 404
        assert (await post_form(consumer, "/admin/evidence/checkpoint")).status_code == 404
    item = await material_named(app, world.case.id, "合同.pdf")

    async with as_user(app, world.admin) as admin:
        page = await admin.get("/admin/evidence")
        assert page.status_code == 200 and NEVER_RUN in page.text
        # Without the CSRF token: refused, nothing done.
        forged = await admin.post("/admin/evidence/checkpoint")
        assert forged.status_code == 403

        response = await post_form(admin, "/admin/evidence/checkpoint")
        assert response.status_code == 303 and response.headers["location"] == "/admin/evidence"
        page = html.unescape((await admin.get("/admin/evidence")).text)
        async with state.db() as db:
            leaves = await db.scalar(select(func.count(LogLeaf.id)))
        assert flash(page) == f"已为 {leaves} 条记录签署检查点。"
        assert re.search(rf'data-testid="log-size">{leaves:,}', page)

        response = await post_form(admin, "/admin/evidence/verify")
        assert response.status_code == 303
        page = html.unescape((await admin.get("/admin/evidence")).text)
        assert re.fullmatch(r"已核验 \d+ 条记录和 \d+ 个文件：全部一致。", flash(page))
        verification = re.search(r'data-testid="verification" class="ok">(.*?)</p>', page, re.S)
        assert verification and "全部一致" in verification.group(1)

        # A row changed behind the log's back.
        async with state.db() as db:
            await db.execute(
                update(CaseMaterial).where(CaseMaterial.id == item.id).values(title="改过的标题")
            )
            await db.commit()
        response = await post_form(admin, "/admin/evidence/verify")
        assert response.status_code == 303
        page = html.unescape((await admin.get("/admin/evidence")).text)
        assert flash(page) == "核验发现不一致，详见下文。"
        verification = re.search(r'data-testid="verification" class="error">(.*?)</p>', page, re.S)
        assert verification, "the failed verification is shown"
        assert "发现不一致" in verification.group(1)
        assert f"evidence item {item.id}" in verification.group(1)


async def test_the_evidence_pages_fill_in_their_numbers(app: Any) -> None:
    world = await make_world(app)
    async with as_user(app, world.consumer) as client:
        await upload(client, world.case.id, [("合同.pdf", unique(PDF))])
        item = await material_named(app, world.case.id, "合同.pdf")
        case_page = html.unescape((await client.get(f"/cases/{world.case.id}")).text)
        receipt = html.unescape(
            (await client.get(f"/cases/{world.case.id}/materials/{item.id}/receipt")).text
        )
    async with as_user(app, world.admin) as admin:
        await post_form(admin, "/admin/evidence/checkpoint")
        await post_form(admin, "/admin/evidence/verify")
        admin_page = html.unescape((await admin.get("/admin/evidence")).text)
    assert re.search(r"第 \d+ 条（共 \d+ 条）", receipt), "the receipt's place in the log"
    assert re.search(r"\d+ 条记录，签署于 \d{4}-", admin_page), "the latest checkpoint"
    assert re.search(r"最近一次核验（\d{4}-[^）]+）：\d+ 条记录", admin_page)
    assert "每个不超过 200 MB" in case_page, "the upload limit"
    for page in (receipt, admin_page, case_page):
        assert not re.search(r"\{(index|size|when|leaves|checkpoints|files|mb)\}", page)


async def test_the_receipt_labels_the_file_as_a_file(app: Any) -> None:
    world = await make_world(app)
    async with as_user(app, world.consumer) as client:
        await upload(client, world.case.id, [("合同.pdf", unique(PDF))])
        item = await material_named(app, world.case.id, "合同.pdf")
        receipt = (await client.get(f"/cases/{world.case.id}/materials/{item.id}/receipt")).text
    label = re.search(r"<dt>([^<]*)</dt><dd>合同\.pdf \(", receipt)
    assert label, "the file's line on the receipt"
    assert label.group(1) == "证据文件"
