"""The case list's CSV and XLSX export: the same cases as the list for the same filters (each
person's own scope), only the list's columns, formula cells neutralised, bad formats refused,
every export audited. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select, update

from portal.audit.models import AuditEvent
from portal.cases.models import Case
from portal.policy import Role
from tests.conftest import log_in
from tests.factories import Person, make_case, make_committee, make_firm, make_user, verify_phone

FORMULA = '=HYPERLINK("http://evil.example","点我")'


async def _world(app: Any) -> dict[str, Any]:
    committee = await make_committee(app, categories=["credit_card", "small_loan"])
    other_committee = await make_committee(app, categories=["insurance"])
    firm_x, firm_y = await make_firm(app), await make_firm(app)
    people = {
        "admin": await make_user(app, Role.COMMITTEE_ADMIN, committee=committee),
        "admin_other": await make_user(app, Role.COMMITTEE_ADMIN, committee=other_committee),
        "mediator": await make_user(app, Role.MEDIATOR, committee=committee),
        "firm_rep": await make_user(app, Role.FIRM_REP, firm=firm_x),
        "consumer": await make_user(app, Role.CONSUMER, phone="13900000081"),
        "other_consumer": await make_user(app, Role.CONSUMER, phone="13900000082"),
    }
    await verify_phone(app, people["consumer"])
    await verify_phone(app, people["other_consumer"])
    cases = [
        await make_case(app, people["consumer"], firm_x, category="credit_card"),
        await make_case(app, people["consumer"], firm_y, category="small_loan"),
        await make_case(
            app,
            people["other_consumer"],
            firm_x,
            status="assigned",
            mediator_id=people["mediator"].id,
            category="credit_card",
        ),
        await make_case(app, people["other_consumer"], firm_y, category="insurance"),
    ]
    async with app.starlette.state.db() as db:  # a respondent typed as a formula
        await db.execute(update(Case).where(Case.id == cases[1].id).values(respondent_name=FORMULA))
        await db.commit()
    return {"people": people, "cases": cases, "firm_x": firm_x}


@asynccontextmanager
async def _client(app: Any, person: Person) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await log_in(client, person.login, person.password)
        yield client


def _csv_rows(response: httpx.Response) -> list[list[str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def _listed(html: str) -> set[str]:
    """The case numbers the list page links to."""
    return set(re.findall(r'href="/cases/\d+">([^<]+)</a>', html))


async def test_the_export_holds_the_lists_cases_for_each_person(app: Any) -> None:
    w = await _world(app)
    numbers = [c.number for c in w["cases"]]
    expected = {
        "admin": set(numbers[:3]),
        "admin_other": {numbers[3]},
        "mediator": {numbers[2]},
        "firm_rep": {numbers[0], numbers[2]},
        "consumer": set(numbers[:2]),
    }
    for who, wanted in expected.items():
        async with _client(app, w["people"][who]) as client:
            rows = _csv_rows(await client.get("/cases/export?format=csv"))
            listed = _listed((await client.get("/cases")).text)
        assert {row[0] for row in rows[1:]} == wanted == listed, who
        assert len(rows) == len(wanted) + 1  # a header line, then each case once


async def test_filters_columns_and_formula_cells(app: Any) -> None:
    w = await _world(app)
    numbers = [c.number for c in w["cases"]]
    async with _client(app, w["people"]["admin"]) as client:
        rows = _csv_rows(await client.get("/cases/export?format=csv&category=credit_card"))
        page = (await client.get("/cases?category=credit_card")).text
        assert {row[0] for row in rows[1:]} == {numbers[0], numbers[2]} == _listed(page)
        # The list links to the export with its filters.
        assert "/cases/export?category=credit_card&amp;format=csv" in page
        # A search, in another order: the same cases as the list, in the list's order.
        searched = _csv_rows(await client.get("/cases/export?format=csv&q=信用卡&sort=-amount"))
        page = (await client.get("/cases?q=信用卡&sort=-amount")).text
        in_page = re.findall(r'href="/cases/\d+">([^<]+)</a>', page)
        assert [row[0] for row in searched[1:]] == in_page and len(in_page) == 3
        everything = _csv_rows(await client.get("/cases/export?format=csv&sort=-amount"))
    header = everything[0]
    assert header[0] == "案件编号" and len(header) == 10
    by_number = {row[0]: row for row in everything[1:]}
    formula_row = by_number[numbers[1]]
    assert formula_row[4] == "'" + FORMULA  # neutralised: a spreadsheet shows it as text
    assert formula_row[5] == "12800.0"  # the amount in yuan
    assert formula_row[2] == "小额贷款"
    # No claimant's data: the list's columns only.
    assert not any("张三" in cell for row in everything for cell in row)


async def test_xlsx_export_has_no_formulas(app: Any) -> None:
    w = await _world(app)
    async with _client(app, w["people"]["admin"]) as client:
        response = await client.get("/cases/export?format=xlsx")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    with zipfile.ZipFile(io.BytesIO(response.content)) as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
        strings = (
            book.read("xl/sharedStrings.xml").decode()
            if "xl/sharedStrings.xml" in book.namelist()
            else ""
        )
    assert "<f>" not in sheet  # no cell is a formula
    text = sheet + strings
    for case in w["cases"][:3]:
        assert case.number in text
    assert w["cases"][3].number not in text  # another committee's


async def test_bad_format_is_refused_and_exports_are_audited(app: Any) -> None:
    w = await _world(app)
    async with _client(app, w["people"]["admin"]) as client:
        bad = await client.get("/cases/export?format=exe")
        assert bad.status_code == 400 and "导出" in bad.text
        ok = await client.get("/cases/export?format=csv&category=small_loan&status=nonsense")
        assert ok.status_code == 200
    async with app.starlette.state.db() as db:
        events = list(
            await db.scalars(select(AuditEvent).where(AuditEvent.action == "cases.export"))
        )
    assert len(events) == 1
    assert events[0].actor_id == w["people"]["admin"].id
    assert events[0].detail["filters"]["category"] == "small_loan"
