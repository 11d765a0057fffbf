"""Erasure and export of a person's data (both backends): after erase-person nothing in the
database, the files or the logs names the person, every receipt still verifies and the
figures stay the same; a case still being handled is refused; the export holds it all."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import LargeBinary, String, Text, select, text
from sqlalchemy.types import JSON

from portal.accounts.erasure import ErasureRefused, erase_person, export_person
from portal.accounts.models import User
from portal.cases import service as cases
from portal.cases.models import Case, CaseMaterial
from portal.db import Base
from portal.evidence import log
from portal.evidence.integrity import verify_log
from portal.evidence.verify.receipt import verify_receipt
from portal.meetings.models import MeetingMessage
from portal.notify.models import Notification
from portal.policy import Role
from tests.conftest import post_form
from tests.factories import (
    PASSWORD,
    PDF,
    make_case,
    make_committee,
    make_firm,
    make_meeting,
    make_user,
    verify_phone,
)

NAME = "欧阳明珠"
ID_NUMBER = "11010519491231002X"
PHONE = "13987654321"
SECRETS_OF_THE_PERSON = (NAME, ID_NUMBER, PHONE)


def _state(app: Any) -> Any:
    return app.starlette.state


async def _person_with_a_case(app: Any) -> dict[str, Any]:
    state = _state(app)
    committee = await make_committee(app)
    await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    mediator = await make_user(app, Role.MEDIATOR, committee=committee)
    firm = await make_firm(app)
    person = await make_user(app, Role.CONSUMER, phone=PHONE, name=NAME)
    await verify_phone(app, person)
    case = await make_case(
        app,
        person,
        firm,
        status="assigned",
        name=NAME,
        id_number=ID_NUMBER,
        facts=f"本人{NAME}（身份证{ID_NUMBER}，电话{PHONE}）的信用卡被收取未告知的分期手续费。",
    )
    meeting = await make_meeting(app, case, mediator)
    async with state.db() as db:
        case = await db.get(Case, case.id)
        user = await db.get(User, person.user.id)
        staff = await db.get(User, mediator.user.id)
        assert case is not None and user is not None and staff is not None
        # A file with the person's ID card, a note, a chat line: all name the person.
        blob = state.blobs.put_bytes(PDF + f"{NAME} {ID_NUMBER}".encode())
        await cases.add_material(
            db,
            case,
            user,
            kind="other",
            filename=f"{NAME}身份证.pdf",
            content_type="application/pdf",
            size=blob.size,
            sha256=blob.sha256,
        )
        await cases.post_message(db, case, user, f"我是{NAME}，请打{PHONE}联系我", "claimant")
        db.add(
            MeetingMessage(
                meeting_id=meeting.id,
                seq=1,
                room="joint",
                sender_id=user.id,
                client_id="c1",
                body=f"{NAME}：我的身份证号是{ID_NUMBER}",
            )
        )
        await db.commit()
        await log.integrate_all(db)
        await log.sign_checkpoint(db, state.log_key)
        await db.commit()
    return {"person": person, "mediator": mediator, "case_id": case.id, "blob": blob.sha256}


async def _traces(app: Any) -> list[str]:
    """Every stored value (text, JSON, bytes, and each encrypted column decrypted where it
    opens) that holds the person's name, ID number or phone."""
    state = _state(app)
    found: list[str] = []
    async with state.db() as db:
        for table in Base.metadata.sorted_tables:
            columns = [
                c for c in table.columns if isinstance(c.type, String | Text | LargeBinary | JSON)
            ]
            if not columns:
                continue
            names = ", ".join(f'"{c.name}"' for c in columns)
            rows = await db.execute(text(f'SELECT {names} FROM "{table.name}"'))  # noqa: S608
            for row in rows:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        raw = bytes(value)
                        plain = raw.decode("utf-8", "replace")
                        if column.name.endswith("_enc"):
                            context = f"{table.name}.{column.name.removesuffix('_enc')}"
                            try:
                                plain = state.vault.decrypt(raw, context)
                            except Exception:  # not this column's context
                                plain = ""
                    else:
                        plain = str(value)
                    for secret in SECRETS_OF_THE_PERSON:
                        if secret in plain:
                            found.append(f"{table.name}.{column.name} holds {secret}")
    for sha256 in state.blobs.iter_blobs():
        content = state.blobs.read_all(sha256).decode("utf-8", "replace")
        for secret in SECRETS_OF_THE_PERSON:
            if secret in content:
                found.append(f"blob {sha256[:12]} holds {secret}")
    return found


async def test_erasure_leaves_no_trace_and_every_proof_valid(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # What the portal logs in production (INFO and up; the database driver's DEBUG lines with
    # statement parameters are never on there).
    caplog.set_level(logging.INFO)
    state = _state(app)
    world = await _person_with_a_case(app)
    assert await _traces(app), "the person's data should be there before"

    async with state.db() as db:
        user = await db.get(User, world["person"].user.id)
        assert user is not None
        # The export first: the person's own data and files.
        data, files = await export_person(db, state.vault, user)
        assert data["account"]["phone"] == PHONE and data["account"]["name"] == NAME
        claimant = data["cases"][0]["claimant"]
        assert (claimant["name"], claimant["id_number"]) == (NAME, ID_NUMBER)
        assert any("请打" in e["note"] for e in data["cases"][0]["timeline"])
        assert data["messages"][0]["text"].startswith(NAME)
        assert world["blob"] in {sha for _, sha in files}

        # Still being handled: refused, nothing changed.
        with pytest.raises(ErasureRefused):
            await erase_person(db, state.blobs, user, reason="request")
        await db.rollback()
    assert await _traces(app)

    async with state.db() as db:
        case = await db.get(Case, world["case_id"])
        staff = await db.get(User, world["mediator"].user.id)
        assert case is not None and staff is not None
        await cases.apply_transition(db, case, staff, "start_mediation")
        await cases.apply_transition(db, case, staff, "fail", reason="双方未能达成一致")
        # Failed but not closed: its case file may still go to court, so it is refused.
        person = await db.get(User, world["person"].user.id)
        assert person is not None
        with pytest.raises(ErasureRefused):
            await erase_person(db, state.blobs, person, reason="request")
        await db.rollback()
        case = await db.get(Case, world["case_id"])
        staff = await db.get(User, world["mediator"].user.id)
        assert case is not None and staff is not None
        await cases.apply_transition(db, case, staff, "close")
        figures_before = (case.status, case.category, case.amount_fen, case.closed_at)
        rollup_before = list(await db.execute(text("SELECT * FROM case_rollup ORDER BY 1, 2, 3")))
        await log.integrate_all(db)
        await log.sign_checkpoint(db, state.log_key)
        await db.commit()
        leaves = [
            m.leaf_id
            for m in await db.scalars(select(CaseMaterial).where(CaseMaterial.case_id == case.id))
        ]
        receipts = [await log.make_leaf_receipt(db, leaf, state.log_key) for leaf in leaves]

    async with state.db() as db:
        # A notification about another case whose number starts alike stays.
        other = Notification(
            user_id=world["mediator"].user.id,
            channel="in_app",
            title_msgid="x",
            body_msgid="x",
            link=f"/cases/{world['case_id']}0",
            status="sent",
        )
        db.add(other)
        await db.commit()
        user = await db.get(User, world["person"].user.id)
        assert user is not None
        report = await erase_person(db, state.blobs, user, reason="request")
        assert await db.get(Notification, other.id) is not None
    assert report.cases == 1 and report.materials == 3 and report.files_deleted == 3
    assert report.notes >= 1 and report.messages == 1

    assert await _traces(app) == []
    for record in caplog.records:
        message = record.getMessage()
        for secret in SECRETS_OF_THE_PERSON:
            assert secret not in message, (record.name, message)

    async with state.db() as db:
        # Every receipt still verifies (without the file, which is gone), and so does the log.
        for receipt in receipts:
            report_ = verify_receipt(receipt, None, [state.log_key.vkey])
            assert report_.ok, report_.verdict()
        check = await verify_log(db, state.blobs, state.log_key)
        assert check.ok, check.problem
        # The figures are those of before.
        case = await db.get(Case, world["case_id"])
        assert case is not None
        assert (case.status, case.category, case.amount_fen, case.closed_at) == figures_before
        assert (
            list(await db.execute(text("SELECT * FROM case_rollup ORDER BY 1, 2, 3")))
            == rollup_before
        )
        user = await db.get(User, world["person"].user.id)
        assert user is not None and not user.is_active and user.phone_index is None
    # The account no longer logs in.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await post_form(
            client, "/accounts/login", {"login": PHONE, "password": PASSWORD}
        )
        assert response.status_code == 400
    # A second erasure finds nothing more to do and breaks nothing.
    async with state.db() as db:
        user = await db.get(User, world["person"].user.id)
        assert user is not None
        again = await erase_person(db, state.blobs, user, reason="retention")
        assert again.materials == 0 and again.files_deleted == 0
        assert (await verify_log(db, state.blobs, state.log_key)).ok


BIN = Path(sys.executable).parent / "jiefen"


def test_the_commands(tmp_path: Path) -> None:
    env = {**os.environ, "VAR_DIR": str(tmp_path / "var")}
    for name in ("DATABASE_URL", "SECRET_KEY", "DATA_KEY"):
        env.pop(name, None)

    def jiefen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN), *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    assert jiefen("demo").returncode == 0
    done = jiefen("export-person", "13800138000", "--to", str(tmp_path / "me.zip"))
    assert done.returncode == 0, done.stderr
    with zipfile.ZipFile(tmp_path / "me.zip") as archive:
        person = archive.read("person.json").decode()
        assert "张先生" in person and "13800138000" in person
        assert any(n.startswith("files/") for n in archive.namelist())
    # The demo consumer's cases are being handled: refused, in the default language.
    done = jiefen("erase-person", "13800138000", "--reason", "request", "--yes")
    assert done.returncode != 0 and "仍在办理" in done.stderr, done.stderr
    done = jiefen("erase-person", "13900000000", "--reason", "request", "--yes")
    assert done.returncode != 0 and "no such person" in done.stderr
    # Retention: the demo's people are new, so nothing is due; a dry run says so.
    done = jiefen("retention", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "due: 0 sessions" in done.stdout and "persons due for erasure: 0" in done.stdout
    done = jiefen("retention")
    assert done.returncode == 0 and "persons erased: 0" in done.stdout, done.stdout
