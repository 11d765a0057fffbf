"""Batch import of cases: the dry run's report row by row, all-or-nothing or valid rows only,
idempotent re-import, court-referred batches, every kind of bad file, and the claimant taking
over imported cases by verifying their number. Real databases, real blob store."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import zipfile
from typing import Any

import httpx
import pytest
import xlsxwriter
from sqlalchemy import func, select

from portal.accounts.models import User
from portal.audit.models import AuditEvent
from portal.cases.models import Case, CaseEvent, ImportBatch
from portal.evidence.models import LogLeaf
from portal.evidence.verify.leaf import decode_leaf
from portal.policy import Role
from portal.validators import resident_id_check_character
from tests.conftest import csrf_token, log_in, post_form
from tests.factories import credit_code, make_committee, make_firm, make_user, verify_phone

ZH_HEADER = [
    "外部编号*",
    "被申请机构统一社会信用代码",
    "纠纷类型*",
    "申请人姓名*",
    "申请人身份证号*",
    "申请人手机号*",
    "金额（元）",
    "纠纷发生日期",
    "纠纷事实与请求*",
    "法院案号",
]
EN_HEADER = [
    "Reference",
    "Firm credit code",
    "Category",
    "Claimant's name",
    "Claimant's ID number",
    "Claimant's mobile",
    "Amount (CNY)",
    "Date of the dispute",
    "Facts and requests",
    "Court case number",
]


def resident_id(n: int) -> str:
    body = f"11010519800101{n % 1000:03d}"
    return body + resident_id_check_character(body)


def row(n: int, code: str = "", **changes: str) -> list[str]:
    values = {
        "ref": f"TS-{n:05d}",
        "code": code,
        "category": "信用卡",
        "name": f"客户{n}",
        "id": resident_id(n),
        "phone": f"139{n:08d}",
        "amount": "1200.50",
        "date": "2026-03-15",
        "facts": f"分期手续费争议{n}，请求退还多收的手续费。",
        "court": "",
    }
    values.update(changes)
    return list(values.values())


def csv_bytes(
    rows: list[list[str]], header: list[str] = ZH_HEADER, encoding: str = "utf-8"
) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def xlsx_bytes(rows: list[list[str]], formula: bool = False) -> bytes:
    out = io.BytesIO()
    book = xlsxwriter.Workbook(out, {"in_memory": True})
    sheet = book.add_worksheet()
    for c, title in enumerate(ZH_HEADER):
        sheet.write_string(0, c, title)
    for r, values in enumerate(rows, start=1):
        for c, value in enumerate(values):
            sheet.write_string(r, c, value)
    if formula:
        sheet.write_formula(len(rows), 6, "=1+1")
    book.close()
    return out.getvalue()


async def upload(
    client: httpx.AsyncClient, name: str, data: bytes, **fields: str
) -> httpx.Response:
    token = await csrf_token(client, "/cases/import")
    return await client.post(
        "/cases/import",
        data={"csrf_token": token, "kind": "firm", **fields},
        files={"file": (name, data, "application/octet-stream")},
    )


async def settle(client: httpx.AsyncClient, location: str) -> str:
    """Follow the batch page until its check or import has finished; its HTML."""
    for _ in range(600):
        page = await client.get(location)
        assert page.status_code == 200, page.text
        status = re.search(r'data-status="(\w+)"', page.text)
        assert status, page.text
        if status.group(1) not in ("checking", "importing"):
            return page.text
        await asyncio.sleep(0.05)
    raise AssertionError("the import did not finish")


async def checked(
    client: httpx.AsyncClient, name: str, data: bytes, **fields: str
) -> tuple[str, str]:
    response = await upload(client, name, data, **fields)
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    return location, await settle(client, location)


async def count(app: Any, model: Any, *where: Any) -> int:
    async with app.starlette.state.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def test_firm_dry_run_report_then_valid_rows_and_idempotent_reimport(
    app: Any, client: httpx.AsyncClient
) -> None:
    await make_committee(app)
    firm = await make_firm(app, name="甲银行")
    other = await make_firm(app, name="乙银行")
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    known = await make_user(app, Role.CONSUMER, phone="13900000001", name="客户1")
    await verify_phone(app, known)
    await log_in(client, rep.login, rep.password)
    rows = [
        row(1),
        row(2, code=firm.credit_code or ""),
        row(3, amount=""),
        row(4, id="110105198001010000", phone="12345"),
        row(5, code=other.credit_code or ""),
        row(6, category="保险理赔"),
        row(2),  # the reference of row 3 again
    ]
    location, page = await checked(client, "投诉.csv", csv_bytes(rows))
    assert 'data-status="checked"' in page
    assert 'data-testid="import-valid">3<' in page, re.sub(r"\s+", " ", page)[-6000:]
    assert 'data-testid="import-invalid">4<' in page
    report = re.sub(r"\s+", " ", page)
    # Each problem with its row (the header is row 1), its column and the reason, in Chinese.
    assert "<td>5</td><td>申请人身份证号</td><td>身份证号码无效" in report or "身份证" in report
    assert "<td>5</td><td>申请人手机号</td>" in report
    assert "<td>6</td><td>被申请机构统一社会信用代码</td><td>这一行写的是另一家机构" in report
    assert "<td>7</td><td>纠纷类型</td>" in report
    assert "<td>8</td><td>外部编号</td><td>外部编号 TS-00002 也在第 3 行。" in report
    assert await count(app, Case) == 0  # the dry run saved nothing

    # All or nothing is refused while rows have problems; nothing changes.
    token = await csrf_token(client, location)
    refused = await client.post(location + "/start", data={"csrf_token": token, "mode": "all"})
    assert refused.status_code == 303
    page = await settle(client, location)
    assert "4 行有问题" in page
    assert await count(app, Case) == 0

    started = await client.post(location + "/start", data={"csrf_token": token, "mode": "valid"})
    assert started.status_code == 303
    page = await settle(client, location)
    assert 'data-status="imported"' in page
    assert 'data-testid="import-imported">3<' in page
    async with app.starlette.state.db() as db:
        cases = list(await db.scalars(select(Case).order_by(Case.id)))
        assert [c.external_ref for c in cases] == ["TS-00001", "TS-00002", "TS-00003"]
        assert {c.status for c in cases} == {"submitted"}
        assert all(c.respondent_firm_id == firm.id for c in cases)
        numbers = [int(c.number.rsplit("-", 1)[1]) for c in cases if c.number]
        assert numbers == list(range(numbers[0], numbers[0] + 3))  # gap-free, in file order
        assert cases[2].amount_fen is None and cases[0].amount_fen == 120050
        # The consumer who verified the number is the claimant; the others wait in a
        # placeholder account that cannot log in.
        assert cases[0].filer_id == known.id
        holder = await db.get(User, cases[1].filer_id)
        assert holder is not None and not holder.is_active and holder.role == "consumer"
        assert holder.email_index and holder.email_index.startswith("claim:")
        events = list(await db.scalars(select(CaseEvent).where(CaseEvent.case_id == cases[0].id)))
        assert [(e.to_status, e.data["transition"]) for e in events] == [("submitted", "import")]
        leaf = await db.scalar(select(LogLeaf).where(LogLeaf.case_id == cases[0].id))
        assert leaf is not None
        decoded = decode_leaf(leaf.data)
        assert decoded.case == cases[0].number and decoded.body["transition"] == "import"
        batch = await db.scalar(select(ImportBatch))
        assert batch is not None and batch.rows_imported == 3 and batch.mode == "valid"
        # The file (personal data) is deleted once imported.
        assert not app.starlette.state.blobs.exists(batch.sha256)
    assert await count(app, AuditEvent, AuditEvent.action == "case.import") == 3
    # Each claimant is told by text message, the placeholder's too (to the row's number).
    from portal.notify.models import Notification

    assert await count(app, Notification, Notification.channel == "sms") == 3
    assert await count(app, AuditEvent, AuditEvent.action == "import.done") == 1

    # The same file again: its references are found, nothing is imported twice.
    location2, page = await checked(client, "投诉.csv", csv_bytes(rows))
    assert 'data-testid="import-existing">3<' in page
    assert 'data-testid="import-valid">0<' in page
    token = await csrf_token(client, location2)
    await client.post(location2 + "/start", data={"csrf_token": token, "mode": "valid"})
    page = await settle(client, location2)
    assert "没有可导入的行" in page
    assert await count(app, Case) == 3

    # Fixed rows later: only the new ones are imported (all-or-nothing now possible).
    fixed = [*rows[:3], row(4), row(7)]
    location3, page = await checked(client, "投诉-修正.xlsx", xlsx_bytes(fixed))
    assert 'data-testid="import-valid">2<' in page and 'data-testid="import-existing">3<' in page
    token = await csrf_token(client, location3)
    await client.post(location3 + "/start", data={"csrf_token": token, "mode": "all"})
    page = await settle(client, location3)
    assert 'data-testid="import-imported">2<' in page
    assert await count(app, Case) == 5

    # Another firm's representative does not see this firm's batches.
    stranger = await make_user(app, Role.FIRM_REP, firm=other)
    await log_in(client, stranger.login, stranger.password)
    assert (await client.get(location)).status_code == 404
    token = await csrf_token(client, "/cases/import")
    forged = await client.post(location + "/start", data={"csrf_token": token, "mode": "all"})
    assert forged.status_code == 404


async def test_bad_files_are_refused_clearly_and_save_nothing(
    app: Any, client: httpx.AsyncClient
) -> None:
    await make_committee(app)
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    await log_in(client, rep.login, rep.password)

    async def refused(name: str, data: bytes, message: str) -> None:
        response = await upload(client, name, data)
        if response.status_code == 303:
            page = await settle(client, response.headers["location"])
            assert 'data-status="refused"' in page, name
        else:
            page = response.text
        assert message in page, (name, re.sub(r"\s+", " ", page)[-3000:])

    missing = [h for h in ZH_HEADER if not h.startswith("申请人手机号")]
    await refused(
        "a.csv", csv_bytes([row(1)[:5] + row(1)[6:]], header=missing), "缺少“申请人手机号”列"
    )
    extra = [*ZH_HEADER, "备注"]
    await refused("b.csv", csv_bytes([[*row(1), "x"]], header=extra), "无法识别的列：备注")
    await refused("c.csv", b"\xff\xfe\xff\x00\x80\x80", "既不是 UTF-8 也不是 GBK")
    await refused("d.csv", ",".join(ZH_HEADER).encode(), "只有表头")
    await refused("e.pdf", b"%PDF-1.4", "请上传 CSV 或 XLSX 文件")
    await refused("f.xlsm", xlsx_bytes([row(1)]), "含宏的工作簿")
    # A macro hidden in a workbook named .xlsx.
    sneaky = io.BytesIO()
    with (
        zipfile.ZipFile(sneaky, "w") as z,
        zipfile.ZipFile(io.BytesIO(xlsx_bytes([row(1)]))) as src,
    ):
        for item in src.infolist():
            z.writestr(item, src.read(item))
        z.writestr("xl/vbaProject.bin", b"\xd0\xcf\x11\xe0")
    await refused("g.xlsx", sneaky.getvalue(), "含宏的工作簿")
    await refused("h.xlsx", xlsx_bytes([row(1)], formula=True), "单元格 G2 含公式")
    await refused("i.xlsx", b"PK\x03\x04 not really", "不是有效的 XLSX 文件")
    # 100 MB: refused from its declared length, before the body is read.
    big = await upload(client, "big.csv", b"0" * (100 * 1024 * 1024))
    assert big.status_code == 413 and "文件超过 50 MB" in big.text
    assert await count(app, Case) == 0
    assert await count(app, ImportBatch, ImportBatch.status != "refused") == 0

    # A category no committee takes yet cannot be routed: a problem of its row.
    _, page = await checked(client, "ins.csv", csv_bytes([row(9, category="保险")]))
    assert "目前还没有调解委员会受理这类纠纷" in page
    # GBK and UTF-8 with a byte-order mark are both read, and English headers too.
    for name, data in (
        ("gbk.csv", csv_bytes([row(1)], encoding="gbk")),
        ("bom.csv", b"\xef\xbb\xbf" + csv_bytes([row(2)])),
        ("en.csv", csv_bytes([row(3, category="Credit card")], header=EN_HEADER)),
    ):
        _, page = await checked(client, name, data)
        assert 'data-testid="import-valid">1<' in page, (name, page[-2000:])


async def test_court_referred_batch_by_the_committee(app: Any, client: httpx.AsyncClient) -> None:
    committee = await make_committee(app)
    firm = await make_firm(app, name="丙小贷公司")
    admin = await make_user(app, Role.COMMITTEE_ADMIN, committee=committee)
    await log_in(client, admin.login, admin.password)
    code = firm.credit_code or ""
    rows = [
        row(1, code=code, court="(2026)闽0502民初1001号"),
        row(2, code=code, court="(2026)闽0502民初1002号"),
    ]
    # The court and its deadline are required for a court's batch.
    response = await upload(client, "法院.csv", csv_bytes(rows), kind="court")
    assert response.status_code == 400 and "此项为必填项" in response.text
    fields = {"kind": "court", "court_name": "思明区人民法院", "court_deadline": "2099-01-31"}
    location, page = await checked(client, "法院.csv", csv_bytes(rows), **fields)
    assert 'data-testid="import-valid">2<' in page
    # A row without the court's case number, or naming no registered firm, has a problem.
    bad = [row(3, code=code), row(4, code=credit_code(999_999), court="x")]
    _, page = await checked(client, "法院2.csv", csv_bytes(bad), **fields)
    assert "<td>2</td><td>法院案号</td><td>此项为必填项" in re.sub(r"\s+", " ", page)
    assert "没有以此统一社会信用代码登记的机构" in page
    token = await csrf_token(client, location)
    await client.post(location + "/start", data={"csrf_token": token, "mode": "all"})
    page = await settle(client, location)
    assert 'data-testid="import-imported">2<' in page
    async with app.starlette.state.db() as db:
        case = await db.scalar(select(Case).order_by(Case.id).limit(1))
        assert case is not None and case.committee_id == committee.id
        assert case.court_case_number == "(2026)闽0502民初1001号"
    detail = await client.get(f"/cases/{case.id}")
    assert "思明区人民法院" in detail.text and "2099-01-31" in detail.text
    # Accepting it: the court's deadline is later than the committee's own, which stands.
    accepted = await post_form(client, f"/cases/{case.id}/act", {"transition": "accept"})
    assert accepted.status_code in (200, 303)


async def test_firm_cannot_import_a_court_batch_or_see_the_committee_page(
    app: Any, client: httpx.AsyncClient
) -> None:
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    consumer = await make_user(app, Role.CONSUMER)
    await log_in(client, rep.login, rep.password)
    response = await upload(client, "x.csv", csv_bytes([row(1)]), kind="court")
    assert response.status_code == 400 and "请从选项中选择一项。" in response.text
    await log_in(client, consumer.login, consumer.password)
    assert (await client.get("/cases/import")).status_code == 404
    assert (await client.get("/cases/import/template.csv")).status_code == 404


async def test_templates_in_both_languages_are_read_back(
    app: Any, client: httpx.AsyncClient
) -> None:
    await make_committee(app)
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    await log_in(client, rep.login, rep.password)
    zh = await client.get("/cases/import/template.csv?lang=zh_CN")
    assert zh.status_code == 200 and "外部编号*" in zh.text
    en = await client.get("/cases/import/template.xlsx?lang=en")
    assert en.status_code == 200 and en.content[:2] == b"PK"
    # The template as downloaded, its example row kept, is a valid file.
    _, page = await checked(client, "template.xlsx", en.content)
    assert 'data-testid="import-valid">1<' in page and 'data-testid="import-invalid">0<' in page
    _, page = await checked(client, "模板.csv", zh.content)
    assert 'data-testid="import-valid">1<' in page


async def test_verifying_the_number_takes_over_imported_cases(
    app: Any, client: httpx.AsyncClient
) -> None:
    await make_committee(app)
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    await log_in(client, rep.login, rep.password)
    location, _ = await checked(client, "a.csv", csv_bytes([row(1), row(2)]))
    token = await csrf_token(client, location)
    await client.post(location + "/start", data={"csrf_token": token, "mode": "all"})
    await settle(client, location)
    # The person registers with the number of row 1: not theirs until they prove it.
    person = await make_user(app, Role.CONSUMER, phone="13900000001")
    async with app.starlette.state.db() as db:
        mine = await db.scalar(select(Case).where(Case.external_ref == "TS-00001"))
        assert mine is not None and mine.filer_id != person.id
    from portal.accounts import service as accounts

    async with app.starlette.state.db() as db:
        user = await db.get(User, person.id)
        assert user is not None
        await accounts.send_phone_code(db, app.starlette.state.settings, user)
        code = await _last_code(app, user.id)
        await accounts.verify_phone_code(db, app.starlette.state.settings, user, code)
    async with app.starlette.state.db() as db:
        mine = await db.scalar(select(Case).where(Case.external_ref == "TS-00001"))
        theirs = await db.scalar(select(Case).where(Case.external_ref == "TS-00002"))
        assert mine is not None and mine.filer_id == person.id
        assert theirs is not None and theirs.filer_id != person.id
    await log_in(client, person.login, person.password)
    assert (await client.get(f"/cases/{mine.id}")).status_code == 200
    assert (await client.get(f"/cases/{theirs.id}")).status_code == 404


async def _last_code(app: Any, user_id: int) -> str:
    from portal.notify.models import Notification

    async with app.starlette.state.db() as db:
        note = await db.scalar(
            select(Notification)
            .where(Notification.user_id == user_id, Notification.channel == "sms")
            .order_by(Notification.id.desc())
            .limit(1)
        )
        assert note is not None
        return str(note.params["code"])


async def test_a_batch_cut_off_by_a_restart_says_so(app: Any, client: httpx.AsyncClient) -> None:
    from datetime import timedelta

    from portal.cases import imports
    from portal.db import utcnow

    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    async with app.starlette.state.db() as db:
        user = await db.get(User, rep.id)
        assert user is not None
        batch = await imports.create_batch(
            db, app.starlette.state.blobs, user, kind="firm", filename="a.csv", data=b"x"
        )
    await log_in(client, rep.login, rep.password)
    page = await client.get(f"/cases/import/{batch.id}")
    assert "hx-get" in page.text.split("data-status=")[1][:300]  # still followed
    assert 'data-testid="import-stalled"' not in page.text
    async with app.starlette.state.db() as db:
        row = await db.get(ImportBatch, batch.id)
        assert row is not None
        row.started_at = utcnow() - imports.STALLED_AFTER - timedelta(minutes=1)
        await db.commit()
    page = await client.get(f"/cases/import/{batch.id}")
    assert 'data-testid="import-stalled"' in page.text and "请重新上传文件" in page.text
    assert "hx-get" not in page.text.split("data-status=")[1][:300]


async def test_pressing_import_twice_imports_once(app: Any, client: httpx.AsyncClient) -> None:
    from portal.cases import imports
    from portal.errors import DomainError

    await make_committee(app)
    firm = await make_firm(app)
    rep = await make_user(app, Role.FIRM_REP, firm=firm)
    await log_in(client, rep.login, rep.password)
    location, _ = await checked(client, "a.csv", csv_bytes([row(1), row(2)]))
    batch_id = int(location.rsplit("/", 1)[1])
    sessions = app.starlette.state.db
    async with sessions() as first, sessions() as second:
        one = await first.get(ImportBatch, batch_id)
        two = await second.get(ImportBatch, batch_id)  # both read it "checked"
        user_one, user_two = await first.get(User, rep.id), await second.get(User, rep.id)
        assert one and two and user_one and user_two
        await imports.start_import(first, one, user_one, "all")
        with pytest.raises(DomainError, match="not waiting to be imported"):
            await imports.start_import(second, two, user_two, "all")
