"""Batch import of cases from a CSV or XLSX file (批量导入): a firm's own complaints, or cases a
court referred to the committee (委派调解).

The file is kept encrypted in the blob store while its batch lives. A dry run reads and checks
every row and reports each problem (row, column, reason) without saving a case; the importer
then imports all rows or none ("all"), or the valid rows only ("valid"). Either way the rows
are checked again at import time and written in one transaction: the cases with their numbers
(gap-free, taken in one step per committee), their first timeline event, evidence-log leaf and
audit record, so a batch is imported whole or not at all. Each row carries the importer's own
reference; a reference already imported is counted and left alone, so importing a file again
adds nothing twice.

The claimant of an imported case is the consumer account that has verified the row's mobile
number, if there is one; otherwise a placeholder account that cannot log in holds the case
until someone verifies that number (``claim_imported_cases``), and then it is theirs.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import PurePath
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.models import User
from portal.audit.models import AuditEvent
from portal.audit.service import record
from portal.cases import service
from portal.cases.lifecycle import Status
from portal.cases.models import Case, CaseCounter, CaseEvent, ImportBatch
from portal.crypto import DataVault
from portal.db import session_scope, utcnow
from portal.errors import DomainError
from portal.evidence import service as evidence
from portal.evidence.blobs import BlobStore
from portal.evidence.log import LOG_PENDING
from portal.evidence.models import LogLeaf
from portal.evidence.verify.leaf import CASE_TRANSITION, encode_leaf
from portal.evidence.verify.proofs import leaf_hash
from portal.i18n import Msg, _l, load_catalogues
from portal.notify.models import Notification
from portal.notify.service import OUTBOX_PENDING, notify
from portal.orgs.categories import CATEGORIES
from portal.orgs.models import Committee, Firm
from portal.policy import Role
from portal.validators import (
    ValidationError,
    clean_amount_fen,
    clean_credit_code,
    clean_past_date,
    clean_phone,
    clean_resident_id,
    clean_text,
)

logger = logging.getLogger(__name__)

MAX_ROWS = 100_000
# The first problems of a file are kept and shown; a file with more is to be fixed first.
REPORT_LIMIT = 1000
CHUNK = 2000  # rows per INSERT statement
# An XLSX is a ZIP: its parts may not unpack to more than this (a "zip bomb" is refused).
MAX_UNPACKED = 400 * 1024 * 1024

KINDS: dict[str, Msg] = {
    "firm": _l("Complaints against the firm"),
    "court": _l("Cases referred by a court"),
}
MODES: dict[str, Msg] = {
    "all": _l("All or nothing: import only if every row is valid"),
    "valid": _l("Only the valid rows; leave the others out"),
}
STATUSES: dict[str, Msg] = {
    "checking": _l("Being checked"),
    "checked": _l("Checked, not yet imported"),
    "refused": _l("File refused"),
    "importing": _l("Being imported"),
    "imported": _l("Imported"),
    "failed": _l("Import failed"),
}
BUSY = ("checking", "importing")


@dataclass(frozen=True)
class Column:
    key: str
    label: Msg
    required: bool
    example: str
    hint: Msg | None = None


COLUMNS: tuple[Column, ...] = (
    Column("external_ref", _l("Reference"), True, "TS-2026-0001", _l("Your own, unique per case")),
    Column(
        "firm_credit_code",
        _l("Firm credit code"),
        False,
        "",
        _l("Required in a committee's file; a firm may leave it empty"),
    ),
    Column("category", _l("Category"), True, "信用卡"),
    Column("claimant_name", _l("Claimant's name"), True, "张三"),
    Column("claimant_id_number", _l("Claimant's ID number"), True, "11010519491231002X"),
    Column("claimant_phone", _l("Claimant's mobile"), True, "13812345678"),
    Column("amount", _l("Amount (CNY)"), False, "6400.00"),
    Column("incident_date", _l("Date of the dispute"), False, "2026-03-15"),
    Column("facts", _l("Facts and requests"), True, "分期手续费争议，请求退还多收的手续费。"),
    Column(
        "court_case_number",
        _l("Court case number"),
        False,
        "(2026)闽0502民初1234号",
        _l("Required for cases referred by a court"),
    ),
)
COLUMN_LABELS: dict[str, Msg] = {c.key: c.label for c in COLUMNS}


# -- reading the file ---------------------------------------------------------------------------


def _refuse(message: Msg) -> DomainError:
    return DomainError(message, field="file")


@dataclass
class Table:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (the row's number in the file, its cells)


def read_table(data: bytes, filename: str) -> Table:
    """The file's header and rows, or DomainError saying what is wrong with the file."""
    suffix = PurePath(filename).suffix.lower()
    if suffix in (".xlsm", ".xltm", ".xlsb"):
        raise _refuse(_l("Workbooks with macros are refused. Save the sheet as .xlsx or .csv."))
    if suffix == ".xls":
        raise _refuse(_l("The old Excel format (.xls) is not read. Save the sheet as .xlsx."))
    if suffix == ".xlsx":
        rows = _xlsx_rows(data)
    elif suffix in (".csv", ".txt"):
        rows = _csv_rows(data)
    else:
        raise _refuse(_l("Upload a CSV or XLSX file, such as the template."))
    numbered = [(n, cells) for n, cells in rows if any(c.strip() for c in cells)]
    if not numbered:
        raise _refuse(_l("The file is empty."))
    (_, header), body = numbered[0], numbered[1:]
    if not body:
        raise _refuse(_l("The file has a header but no rows."))
    if len(body) > MAX_ROWS:
        raise _refuse(
            _l("At most {count} rows in one file: split it into several.", count=MAX_ROWS)
        )
    return Table(header=[h.strip() for h in header], rows=body)


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without its byte-order mark), else GBK (read as GB 18030, its superset)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:
            break
        return text
    raise _refuse(
        _l(
            "The file's text is neither UTF-8 nor GBK. Save it from the spreadsheet program as "
            "“CSV UTF-8” and upload it again."
        )
    )


def _csv_rows(data: bytes) -> list[tuple[int, list[str]]]:
    text = decode_text(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            rows.append((reader.line_num, cells))
    except csv.Error:
        raise _refuse(
            _l("Line {line} of the file is not valid CSV.", line=reader.line_num)
        ) from None
    return rows


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _xlsx_rows(data: bytes) -> list[tuple[int, list[str]]]:
    import openpyxl
    from openpyxl.utils import get_column_letter

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.infolist()
    except (zipfile.BadZipFile, ValueError):
        raise _refuse(_l("This is not a valid XLSX file.")) from None
    lowered = [info.filename.lower() for info in names]
    if any(n.endswith("vbaproject.bin") or "/macrosheets/" in n for n in lowered):
        raise _refuse(_l("Workbooks with macros are refused. Save the sheet as .xlsx or .csv."))
    if sum(info.file_size for info in names) > MAX_UNPACKED:
        raise _refuse(_l("This is not a valid XLSX file."))
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    except Exception:  # openpyxl raises many kinds on a damaged file
        raise _refuse(_l("This is not a valid XLSX file.")) from None
    try:
        sheet = book.worksheets[0]
        rows: list[tuple[int, list[str]]] = []
        for number, cells in enumerate(sheet.iter_rows(), start=1):
            texts: list[str] = []
            for index, cell in enumerate(cells, start=1):
                if cell.data_type == "f":
                    raise _refuse(
                        _l(
                            "Cell {cell} holds a formula. Formulas are refused: paste the "
                            "values only (Paste Special → Values) and upload again.",
                            cell=f"{get_column_letter(index)}{number}",
                        )
                    )
                texts.append(_cell_text(cell.value))
            rows.append((number, texts))
    finally:
        book.close()
    return rows


@cache
def _header_names() -> dict[str, str]:
    """Every way a column may be headed (its key, its label in each language) -> its key."""
    names: dict[str, str] = {}
    catalogues = load_catalogues()
    for column in COLUMNS:
        names[column.key] = column.key
        for translations in catalogues.values():
            names[_normal(translations.gettext(column.label.msgid))] = column.key
    return names


@cache
def _category_names() -> dict[str, str]:
    names: dict[str, str] = {}
    catalogues = load_catalogues()
    for key, label in CATEGORIES.items():
        names[key] = key
        for translations in catalogues.values():
            names[_normal(translations.gettext(label.msgid))] = key
    return names


def _normal(text: str) -> str:
    return text.strip().rstrip("*＊").strip().lower()


def map_header(header: Sequence[str], kind: str) -> dict[str, int]:
    """Column key -> position; DomainError for a missing, unknown or repeated column."""
    names = _header_names()
    positions: dict[str, int] = {}
    unknown: list[str] = []
    for index, title in enumerate(header):
        if not title:
            continue
        key = names.get(_normal(title))
        if key is None:
            unknown.append(title)
        elif key in positions:
            raise _refuse(_l("The column “{column}” appears twice.", column=title))
        else:
            positions[key] = index
    if unknown:
        raise _refuse(
            _l(
                "Unknown columns: {columns}. Use the template's columns only.",
                columns="、".join(unknown[:5]),
            )
        )
    required = [c for c in COLUMNS if c.required]
    if kind == "court":
        required.append(next(c for c in COLUMNS if c.key == "court_case_number"))
    missing = [c.label for c in required if c.key not in positions]
    if missing:
        raise _refuse(
            _l(
                "The column “{column}” is missing. Download the template to see every column.",
                column={"msgid": missing[0].msgid},
            )
        )
    return positions


# -- checking the rows --------------------------------------------------------------------------


@dataclass
class Importer:
    """Who imports, and what their rows may name."""

    kind: str  # "firm" or "court"
    source: str  # "firm:12" or "committee:3": the scope of the references
    firm: Firm | None  # a firm's own import
    committee_id: int | None  # a committee's import


@dataclass
class ValidRow:
    row: int
    ref: str
    firm: Firm
    category: str
    name: str
    id_number: str
    phone: str
    amount_fen: int | None
    incident_date: date | None
    facts: str
    court_case_number: str | None
    committee_id: int = 0


@dataclass
class Checked:
    valid: list[ValidRow] = field(default_factory=list)
    problems: list[tuple[int, str, Msg]] = field(default_factory=list)
    invalid_rows: int = 0
    existing: int = 0
    total: int = 0

    def report(self) -> list[list[Any]]:
        return [[row, key, msg.msgid, msg.params] for row, key, msg in self.problems]


async def _context(
    db: AsyncSession, importer: Importer, refs: Iterable[str]
) -> tuple[dict[str, Firm], set[str], set[str]]:
    """The registered firms by credit code (for a committee's file), the references already
    imported, and the categories some committee takes (where a firm's cases go)."""
    taken: set[str] = set()
    for categories in await db.scalars(select(Committee.categories)):
        taken.update(categories or [])
    firms: dict[str, Firm] = {}
    if importer.firm is None:
        for firm in await db.scalars(select(Firm).where(Firm.credit_code.is_not(None))):
            assert firm.credit_code is not None
            firms[firm.credit_code] = firm
    # Every reference this importer has used: one range of the (source, reference) index,
    # streamed. (IN lists of thousands of references made PostgreSQL scan the table.)
    wanted = set(refs)
    existing: set[str] = set()
    used = await db.stream_scalars(
        select(Case.external_ref)
        .where(Case.import_source == importer.source)
        .execution_options(yield_per=5000)
    )
    async for ref in used:
        if ref in wanted:
            existing.add(ref)
    return firms, existing, taken


async def check_rows(
    db: AsyncSession,
    table: Table,
    importer: Importer,
    progress: Progress | None = None,
) -> Checked:
    """Every row checked; nothing written."""
    positions = map_header(table.header, importer.kind)
    width = len(table.header)
    ref_at = positions["external_ref"]
    refs = [cells[ref_at].strip() for _, cells in table.rows if ref_at < len(cells)]
    firms, existing, taken = await _context(db, importer, refs)
    categories = _category_names()
    today = service.today_in_china()
    seen: dict[str, int] = {}
    result = Checked(total=len(table.rows))

    for count, (number, cells) in enumerate(table.rows, start=1):
        if count % 500 == 0:
            if progress is not None:
                progress.done = count
            await asyncio.sleep(0)  # let other requests in
        problems: list[tuple[str, Msg]] = []

        def get(key: str, cells: list[str] = cells) -> str:
            at = positions.get(key)
            return cells[at].strip() if at is not None and at < len(cells) else ""

        def clean(
            key: str,
            cleaner: Any,
            *args: Any,
            problems: list[tuple[str, Msg]] = problems,
            **kwargs: Any,
        ) -> Any:
            try:
                return cleaner(*args, **kwargs)
            except ValidationError as exc:
                problems.append((key, exc.message))
                return None

        if len(cells) > width and any(c.strip() for c in cells[width:]):
            problems.append(("", _l("This row has more cells than the header has columns.")))
        ref = clean("external_ref", clean_text, get("external_ref"), max_length=64)
        if ref and ref in seen:
            problems.append(
                (
                    "external_ref",
                    _l("The reference {ref} is also on row {row}.", ref=ref, row=seen[ref]),
                )
            )
        elif ref:
            seen[ref] = number
            if ref in existing:
                result.existing += 1
                continue
        firm: Firm | None = importer.firm
        code = get("firm_credit_code")
        if importer.firm is not None:
            if code and code.upper() != (importer.firm.credit_code or ""):
                problems.append(
                    (
                        "firm_credit_code",
                        _l("This row names another firm; a firm imports only its own cases."),
                    )
                )
        elif not code:
            problems.append(("firm_credit_code", _l("This field is required.")))
        else:
            cleaned = clean("firm_credit_code", clean_credit_code, code)
            if cleaned:
                firm = firms.get(cleaned)
                if firm is None:
                    problems.append(
                        ("firm_credit_code", _l("No registered firm has this credit code."))
                    )
        category = categories.get(_normal(get("category")))
        if category is None:
            problems.append(
                (
                    "category",
                    _l("Unknown category “{value}”.", value=get("category")[:40])
                    if get("category")
                    else _l("This field is required."),
                )
            )
        elif importer.committee_id is None and category not in taken:
            problems.append(
                (
                    "category",
                    _l("No committee takes disputes of this kind yet. Choose another category."),
                )
            )
        name = clean("claimant_name", clean_text, get("claimant_name"), max_length=60)
        id_number = clean("claimant_id_number", clean_resident_id, get("claimant_id_number"), today)
        phone = clean("claimant_phone", clean_phone, get("claimant_phone"))
        amount = get("amount")
        amount_fen = clean("amount", clean_amount_fen, amount) if amount else None
        day = get("incident_date")
        incident = clean("incident_date", clean_past_date, day, today) if day else None
        facts = clean("facts", clean_text, get("facts"), max_length=5000)
        court_number: str | None = None
        if importer.kind == "court":
            court_number = clean(
                "court_case_number", clean_text, get("court_case_number"), max_length=60
            )
        if problems:
            result.invalid_rows += 1
            for key, message in problems:
                if len(result.problems) < REPORT_LIMIT:
                    result.problems.append((number, key, message))
            continue
        assert firm is not None and category is not None
        result.valid.append(
            ValidRow(
                row=number,
                ref=ref,
                firm=firm,
                category=category,
                name=name,
                id_number=id_number,
                phone=phone,
                amount_fen=amount_fen,
                incident_date=incident,
                facts=facts,
                court_case_number=court_number,
            )
        )
    if progress is not None:
        progress.done = len(table.rows)
    return result


# -- progress -------------------------------------------------------------------------------------


@dataclass
class Progress:
    """How far a running check or import is (this process; pages poll it)."""

    phase: str
    total: int
    done: int = 0


RUNNING: dict[int, Progress] = {}
# Longer than any check or import takes (100,000 rows: under two minutes): a batch still busy
# after this, and running in no process, was cut off.
STALLED_AFTER = timedelta(minutes=30)


def stalled(batch: ImportBatch, now: datetime | None = None) -> bool:
    """The batch's check or import was cut off (its process stopped): nothing was saved, and
    the file is to be uploaded again."""
    if batch.status not in BUSY or batch.id in RUNNING:
        return False
    started = batch.started_at or batch.created_at
    return (now or utcnow()) - started > STALLED_AFTER


# -- writing the cases ---------------------------------------------------------------------------


async def _claimants(
    db: AsyncSession, vault: DataVault, rows: Sequence[ValidRow]
) -> dict[str, int]:
    """The filer of each row's case by its phone's blind index: the consumer who verified the
    number, else the number's placeholder account (made here when it does not exist yet)."""
    by_index: dict[str, ValidRow] = {}
    for row in rows:
        by_index.setdefault(vault.blind_index("phone", row.phone), row)
    indexes = list(by_index)
    filers: dict[str, int] = {}
    for start in range(0, len(indexes), 5000):
        part = indexes[start : start + 5000]
        for user_id, phone_index in await db.execute(
            select(User.id, User.phone_index).where(
                User.phone_index.in_(part),
                User.role == Role.CONSUMER.value,
                User.phone_verified_at.is_not(None),
                User.is_active.is_(True),
            )
        ):
            if phone_index is not None:
                filers[phone_index] = user_id
        holders = {placeholder_key(i): i for i in part if i not in filers}
        for user_id, key in await db.execute(
            select(User.id, User.email_index).where(User.email_index.in_(list(holders)))
        ):
            if key is not None:
                filers[holders[key]] = user_id
    new = [i for i in indexes if i not in filers]
    now = utcnow()
    for start in range(0, len(new), CHUNK):
        part = new[start : start + CHUNK]
        values = [
            {
                "role": Role.CONSUMER.value,
                "display_name": by_index[i].name[:60],
                "email_index": placeholder_key(i),
                "phone_enc": vault.encrypt(by_index[i].phone, "users.phone"),
                "password_hash": "!",  # no password can match: the account cannot log in
                "is_active": False,
                "created_at": now,
                "password_changed_at": now,
            }
            for i in part
        ]
        ids = await _insert(db, User, values, User.email_index, [v["email_index"] for v in values])
        filers.update(zip(part, ids, strict=True))
    return filers


async def _insert(
    db: AsyncSession, model: Any, values: list[dict[str, Any]], key: Any, keys: list[Any]
) -> list[int]:
    """Insert the rows; their new ids, in order. PostgreSQL returns them from the INSERT (in
    batches); on SQLite, RETURNING in parameter order would send one statement per row, so the
    rows go as one executemany and their ids are read back by ``key`` (unique among them)."""
    if db.get_bind().dialect.name == "postgresql":
        return list(
            await db.scalars(
                insert(model).returning(model.id, sort_by_parameter_order=True), values
            )
        )
    await db.execute(insert(model), values)
    found: dict[Any, int] = {}
    for start in range(0, len(keys), 5000):
        found.update(
            (k, i)
            for k, i in await db.execute(
                select(key, model.id).where(key.in_(keys[start : start + 5000]))
            )
        )
    return [found[k] for k in keys]


def placeholder_key(phone_index: str) -> str:
    """The login key of the placeholder account holding imported cases for a phone number:
    never the index of an email address (those carry no prefix), so no one logs in with it."""
    return f"claim:{phone_index}"


async def _numbers(db: AsyncSession, committee: Committee, year: int, count: int) -> list[str]:
    """``count`` consecutive case numbers of the committee, taken in one step."""
    await service.next_case_number(db, committee, year)  # creates the counter, takes one
    last = await db.scalar(
        update(CaseCounter)
        .where(CaseCounter.committee_id == committee.id, CaseCounter.year == year)
        .values(last=CaseCounter.last + count - 1)
        .returning(CaseCounter.last)
    )
    assert last is not None
    first = last - count + 1
    return [f"{committee.case_prefix}-{year}-{n:06d}" for n in range(first, last + 1)]


async def write_cases(
    db: AsyncSession,
    vault: DataVault,
    batch: ImportBatch,
    actor: User,
    rows: Sequence[ValidRow],
    progress: Progress | None = None,
) -> list[str]:
    """The rows' cases, in the caller's transaction: submitted, numbered, each with its
    timeline event, evidence-log leaf and audit record. Returns the case numbers."""
    if not rows:
        return []
    now = utcnow()
    year = service.today_in_china(now).year
    routed: dict[str, int] = {}
    for row in rows:
        if batch.committee_id is not None:
            row.committee_id = batch.committee_id
        else:
            if row.category not in routed:
                routed[row.category] = (await service.route_committee(db, row.category)).id
            row.committee_id = routed[row.category]
    numbers: dict[int, list[str]] = {}
    for committee_id in sorted({r.committee_id for r in rows}):
        committee = await db.get(Committee, committee_id)
        assert committee is not None
        count = sum(1 for r in rows if r.committee_id == committee_id)
        numbers[committee_id] = await _numbers(db, committee, year, count)
    filers = await _claimants(db, vault, rows)
    actor_commitment = await evidence.commitment(db, actor.id)
    written: list[str] = []
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        case_rows = []
        for row in part:
            number = numbers[row.committee_id].pop(0)
            phone_index = vault.blind_index("phone", row.phone)
            case_rows.append(
                {
                    "number": number,
                    "committee_id": row.committee_id,
                    "status": Status.SUBMITTED.value,
                    "category": row.category,
                    "filer_id": filers[phone_index],
                    "filed_as": "self",
                    "claimant_name_enc": vault.encrypt(row.name, "cases.claimant_name"),
                    "claimant_name_index": vault.blind_index("person_name", row.name),
                    "claimant_id_enc": vault.encrypt(row.id_number, "cases.claimant_id"),
                    "claimant_id_index": vault.blind_index("resident_id", row.id_number),
                    "claimant_phone_enc": vault.encrypt(row.phone, "cases.claimant_phone"),
                    "claimant_phone_index": phone_index,
                    "respondent_firm_id": row.firm.id,
                    "respondent_name": row.firm.name,
                    "respondent_credit_code": row.firm.credit_code,
                    "amount_fen": row.amount_fen,
                    "outcomes": [],
                    "facts": row.facts,
                    "incident_date": row.incident_date,
                    "eligibility": {},
                    "triage_reasons": [],
                    "requested_items": [],
                    "created_at": now,
                    "updated_at": now,
                    "submitted_at": now,
                    # Not the importer's address: it is no filer's, and one address on
                    # thousands of cases would read as a template campaign to staff.
                    "filing_ip": "",
                    "import_batch_id": batch.id,
                    "import_source": batch.source,
                    "external_ref": row.ref,
                    "court_case_number": row.court_case_number,
                }
            )
        # (The numbers are new and unique: the key to read the ids back by.)
        case_ids = await _insert(db, Case, case_rows, Case.number, [v["number"] for v in case_rows])
        event_rows = [
            {
                "case_id": case_id,
                "actor_id": actor.id,
                "kind": "transition",
                "from_status": None,
                "to_status": Status.SUBMITTED.value,
                "body": "",
                "visibility": "all",
                "data": {"transition": "import", "number": values["number"], "batch": batch.id},
                "created_at": now,
            }
            for case_id, values in zip(case_ids, case_rows, strict=True)
        ]
        # (A new case has its one event: the case is the key.)
        event_ids = await _insert(db, CaseEvent, event_rows, CaseEvent.case_id, case_ids)
        leaves = []
        for event_id, values in zip(event_ids, event_rows, strict=True):
            body = evidence.event_body(CaseEvent(id=event_id, **values), actor_commitment)
            case_number = str(values["data"]["number"])  # type: ignore[index]
            data = encode_leaf(CASE_TRANSITION, body, case=case_number, prev=None, time=now)
            leaves.append(
                {
                    "case_id": values["case_id"],
                    "type": CASE_TRANSITION,
                    "data": data,
                    "hash": leaf_hash(data),
                    "created_at": now,
                }
            )
        await db.execute(insert(LogLeaf), leaves)
        await db.execute(
            insert(AuditEvent),
            [
                {
                    "actor_id": actor.id,
                    "action": "case.import",
                    "object_type": "case",
                    "object_id": str(case_id),
                    "detail": {"batch": batch.id, "ref": values["external_ref"]},
                    "created_at": now,
                }
                for case_id, values in zip(case_ids, case_rows, strict=True)
            ],
        )
        # Each claimant is told by text message: the case, and how to follow it (register or
        # log in with this number and verify it). Sent by the outbox worker.
        sms = _COURT_SMS if batch.kind == "court" else _FIRM_SMS
        await db.execute(
            insert(Notification),
            [
                {
                    "user_id": values["filer_id"],
                    "channel": "sms",
                    "title_msgid": _SMS_TITLE.msgid,
                    "body_msgid": sms.msgid,
                    "params": {
                        "number": values["number"],
                        "firm": values["respondent_name"],
                        "court": batch.court_name,
                    },
                    "link": f"/cases/{case_id}",
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                }
                for case_id, values in zip(case_ids, case_rows, strict=True)
            ],
        )
        written.extend(str(v["number"]) for v in case_rows)
        if progress is not None:
            progress.done = start + len(part)
        await asyncio.sleep(0)
    db.info[LOG_PENDING] = True
    db.info[OUTBOX_PENDING] = True
    return written


_SMS_TITLE = _l("Case {number}: your dispute is with the mediation committee")
_FIRM_SMS = _l(
    "Your complaint against {firm} was passed to the mediation committee as case {number}. "
    "Log in or register on Jiefen with this mobile number and verify it to follow the case."
)
_COURT_SMS = _l(
    "{court} referred your dispute with {firm} to the mediation committee as case {number}. "
    "Log in or register on Jiefen with this mobile number and verify it to follow the case."
)


# -- the batch's life ---------------------------------------------------------------------------


def importer_of(batch: ImportBatch, firm: Firm | None) -> Importer:
    return Importer(
        kind=batch.kind, source=batch.source, firm=firm, committee_id=batch.committee_id
    )


def source_of(user: User) -> str:
    """The scope of an importer's references: their firm, or their committee."""
    if user.role == Role.FIRM_REP.value:
        return f"firm:{user.firm_id}"
    return f"committee:{user.committee_id}"


async def recent_batches(db: AsyncSession, user: User, limit: int = 20) -> list[ImportBatch]:
    """The latest files of the user's firm or committee."""
    query = (
        select(ImportBatch)
        .where(ImportBatch.source == source_of(user))
        .order_by(ImportBatch.id.desc())
        .limit(limit)
    )
    return list(await db.scalars(query))


async def create_batch(
    db: AsyncSession,
    store: BlobStore,
    actor: User,
    *,
    kind: str,
    filename: str,
    data: bytes,
    court_name: str = "",
    court_deadline: date | None = None,
) -> ImportBatch:
    """Keep the file (encrypted) and open its batch; the check runs next (``check_batch``)."""
    source = source_of(actor)
    if actor.role == Role.FIRM_REP.value:
        if kind != "firm":
            raise DomainError(_l("Choose one of the options."), field="kind")
        firm_id, committee_id = actor.firm_id, None
    elif actor.role == Role.COMMITTEE_ADMIN.value:
        if kind not in KINDS:
            raise DomainError(_l("Choose one of the options."), field="kind")
        firm_id, committee_id = None, actor.committee_id
    else:
        raise DomainError(_l("Only firms and committees import cases."))
    if kind == "court":
        try:
            court_name = clean_text(court_name, max_length=120)
        except ValidationError as exc:
            raise DomainError(exc.message, field="court_name") from None
        if court_deadline is None:
            raise DomainError(_l("Enter a date like 2026-03-15."), field="court_deadline")
        if court_deadline < service.today_in_china():
            raise DomainError(_l("The court's deadline has passed."), field="court_deadline")
    else:
        court_name, court_deadline = "", None
    if not data:
        raise DomainError(_l("Choose a file to upload."), field="file")
    name = PurePath(filename.replace("\\", "/")).name[:200] or "import.csv"
    blob = await asyncio.to_thread(store.put_bytes, data, len(data) + 1)
    batch = ImportBatch(
        started_at=utcnow(),
        kind=kind,
        source=source,
        firm_id=firm_id,
        committee_id=committee_id,
        created_by_id=actor.id,
        filename=name,
        size=len(data),
        sha256=blob.sha256,
        court_name=court_name,
        court_deadline=court_deadline,
        status="checking",
        error=[],
        report=[],
    )
    db.add(batch)
    await db.flush()
    record(
        db,
        actor.id,
        "import.upload",
        "import_batch",
        batch.id,
        kind=kind,
        filename=name,
        size=len(data),
        sha256=blob.sha256,
    )
    await db.commit()
    return batch


async def _load(
    db: AsyncSession, store: BlobStore, batch: ImportBatch, progress: Progress | None
) -> tuple[Table, Importer]:
    firm = await db.get(Firm, batch.firm_id) if batch.firm_id else None
    data = await asyncio.to_thread(store.read_all, batch.sha256)
    table = await asyncio.to_thread(read_table, data, batch.filename)
    if progress is not None:
        progress.total = len(table.rows)
    return table, importer_of(batch, firm)


def _problem(exc: DomainError) -> list[Any]:
    return [exc.message.msgid, exc.message.params]


async def check_batch(
    sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, batch_id: int
) -> None:
    """The dry run: read and check every row, keep the counts and the report."""
    progress = RUNNING.setdefault(batch_id, Progress("checking", 0))
    try:
        async with session_scope(sessionmaker) as db:
            batch = await db.get(ImportBatch, batch_id)
            assert batch is not None
            try:
                table, importer = await _load(db, store, batch, progress)
                checked = await check_rows(db, table, importer, progress)
            except DomainError as exc:
                batch.status = "refused"
                batch.error = _problem(exc)
                batch.finished_at = utcnow()
                await db.commit()
                await _discard(db, store, batch)
                return
            batch.status = "checked"
            batch.rows_total = checked.total
            batch.rows_valid = len(checked.valid)
            batch.rows_invalid = checked.invalid_rows
            batch.rows_existing = checked.existing
            batch.report = checked.report()
            await db.commit()
    except Exception:
        logger.exception("import %s: the check failed", batch_id)
        await _fail(sessionmaker, batch_id, _l("The file could not be checked. Try again."))
    finally:
        RUNNING.pop(batch_id, None)


async def start_import(db: AsyncSession, batch: ImportBatch, actor: User, mode: str) -> None:
    """Move a checked batch to importing (the caller then runs ``import_batch``)."""
    if mode not in MODES:
        raise DomainError(_l("Choose one of the options."), field="mode")
    if batch.status != "checked":
        raise DomainError(_l("This file is not waiting to be imported."))
    if mode == "all" and batch.rows_invalid:
        raise DomainError(
            _l(
                "{count} rows have problems: fix them and upload the file again, or import "
                "the valid rows only.",
                count=batch.rows_invalid,
            ),
            field="mode",
        )
    if batch.rows_valid == 0:
        raise DomainError(_l("No row is left to import."), field="mode")
    # One import per batch, even when the button is pressed twice at once: only the request
    # that moves it from "checked" goes on.
    moved = await db.execute(
        update(ImportBatch)
        .where(ImportBatch.id == batch.id, ImportBatch.status == "checked")
        .values(status="importing", mode=mode, started_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        await db.rollback()
        raise DomainError(_l("This file is not waiting to be imported."))
    record(db, actor.id, "import.start", "import_batch", batch.id, mode=mode)
    await db.commit()


async def import_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: BlobStore,
    vault: DataVault,
    batch_id: int,
    ip: str = "",
) -> bool:
    """Check the rows again and write the cases in one transaction. True when it committed;
    the session info says whether the outbox or the log's sequencer has work."""
    progress = RUNNING.setdefault(batch_id, Progress("importing", 0))
    try:
        async with session_scope(sessionmaker) as db:
            batch = await db.get(ImportBatch, batch_id)
            assert batch is not None and batch.status == "importing"
            actor = await db.get(User, batch.created_by_id)
            assert actor is not None
            try:
                table, importer = await _load(db, store, batch, progress)
                progress.phase = "checking"
                checked = await check_rows(db, table, importer, progress)
                if batch.mode == "all" and checked.invalid_rows:
                    raise DomainError(
                        _l("Rows changed since the check: nothing was imported. Check again.")
                    )
                progress.phase, progress.done, progress.total = "importing", 0, len(checked.valid)
                numbers = await write_cases(db, vault, batch, actor, checked.valid, progress)
            except DomainError as exc:
                await db.rollback()
                await _fail(sessionmaker, batch_id, exc.message)
                return False
            batch.status = "imported"
            batch.rows_total = checked.total
            batch.rows_invalid = checked.invalid_rows
            batch.rows_existing = checked.existing
            batch.rows_imported = len(numbers)
            batch.report = checked.report()
            batch.first_number = numbers[0] if numbers else None
            batch.last_number = numbers[-1] if numbers else None
            batch.finished_at = utcnow()
            record(
                db,
                actor.id,
                "import.done",
                "import_batch",
                batch.id,
                imported=len(numbers),
                ip=ip[:45],
                existing=checked.existing,
                left_out=checked.invalid_rows,
            )
            await _announce(db, batch, checked.valid)
            await db.commit()
            await _discard(db, store, batch)
        return True
    except Exception:
        logger.exception("import %s: the import failed", batch_id)
        await _fail(sessionmaker, batch_id, _l("The import failed; nothing was saved. Try again."))
        return False
    finally:
        RUNNING.pop(batch_id, None)


async def _announce(db: AsyncSession, batch: ImportBatch, rows: Sequence[ValidRow]) -> None:
    """One notice per batch to each committee's staff and, for a committee's import, to each
    firm's representatives (not one per case)."""
    link = f"/cases?batch={batch.id}"
    committees: dict[int, int] = {}
    firms: dict[int, int] = {}
    for row in rows:
        committees[row.committee_id] = committees.get(row.committee_id, 0) + 1
        firms[row.firm.id] = firms.get(row.firm.id, 0) + 1
    title = (
        _l("{count} cases referred by {court}", count=len(rows), court=batch.court_name)
        if batch.kind == "court"
        else _l("{count} cases imported", count=len(rows))
    )
    for committee_id, count in committees.items():
        for user_id in await service._committee_staff(db, committee_id):
            if user_id != batch.created_by_id:
                await notify(
                    db,
                    user_id,
                    title,
                    _l("{count} new cases are waiting for review.", count=count),
                    link=link,
                    channels=("in_app",),
                )
    if batch.firm_id is None:
        for firm_id, count in firms.items():
            for user_id in await service._firm_reps(db, firm_id):
                await notify(
                    db,
                    user_id,
                    title,
                    _l("{count} new cases name your firm.", count=count),
                    link="/cases",
                    channels=("in_app",),
                )


async def _fail(
    sessionmaker: async_sessionmaker[AsyncSession], batch_id: int, message: Msg
) -> None:
    async with session_scope(sessionmaker) as db:
        batch = await db.get(ImportBatch, batch_id)
        if batch is not None:
            batch.status = "failed"
            batch.error = [message.msgid, message.params]
            batch.finished_at = utcnow()
            await db.commit()


async def _discard(db: AsyncSession, store: BlobStore, batch: ImportBatch) -> None:
    """The file's personal data is not kept once the batch has ended (unless the same bytes
    are evidence somewhere, or another batch still holds them)."""
    if await service.referenced_blobs(db, {batch.sha256}):
        return
    others = await db.scalar(
        select(ImportBatch.id)
        .where(
            ImportBatch.sha256 == batch.sha256,
            ImportBatch.id != batch.id,
            ImportBatch.status.in_(("checking", "checked", "importing")),
        )
        .limit(1)
    )
    if others is None:
        await asyncio.to_thread(store.delete, batch.sha256)


async def claim_imported_cases(db: AsyncSession, user: User) -> int:
    """When ``user`` has verified their mobile number, the cases imported for that number
    become theirs (in the caller's transaction). Returns how many."""
    if user.phone_index is None or user.role != Role.CONSUMER.value:
        return 0
    holder = await db.scalar(
        select(User.id).where(User.email_index == placeholder_key(user.phone_index))
    )
    if holder is None:
        return 0
    moved = await db.execute(
        update(Case).where(Case.filer_id == holder).values(filer_id=user.id, updated_at=utcnow())
    )
    count = int(moved.rowcount)  # type: ignore[attr-defined]
    if count:
        record(db, user.id, "case.claim", "user", holder, cases=count)
    return count
