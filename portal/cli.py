"""The ``jiefen`` command: serve, db upgrade/downgrade/current, demo, user create."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from portal.db import create_engine, create_sessionmaker, import_models
from portal.policy import Role
from portal.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent

DEMO_PASSWORD = "Jiefen-Demo-2026"  # noqa: S105 - printed demo login, never for production
DEMO_COMMITTEE = {
    "name": "普陀区科技金融产业解纷中心",
    "name_en": "Putuo Tech-Finance Dispute Resolution Centre",
    "region": "上海市普陀区",
    "categories": [
        "securities_advisory",
        "credit_card",
        "small_loan",
        "small_business_loan",
        "personal_business_loan",
        "insurance",
        "bank_wealth",
        "consumer",
        "other",
    ],
    "case_prefix": "PT",
}
DEMO_FIRMS = [
    {
        "name": "示例证券投资咨询有限公司",
        "name_en": "Example Securities Advisory Co., Ltd.",
        "credit_code": "91310107MA1G00001U",
        "industry": "securities",
    },
    {
        "name": "示例消费金融股份有限公司",
        "name_en": "Example Consumer Finance Co., Ltd.",
        "credit_code": "91310000MA1K00002C",
        "industry": "lending",
    },
]
# (role, display name, login); a phone for the consumer, emails for staff.
DEMO_USERS = [
    (Role.PLATFORM_ADMIN, "平台管理员", "platform@jiefen.example"),
    (Role.COMMITTEE_ADMIN, "王主任", "admin@jiefen.example"),
    (Role.MEDIATOR, "李调解员", "mediator@jiefen.example"),
    (Role.FIRM_REP, "赵经理", "firm@jiefen.example"),
    (Role.CONSUMER, "张先生", "13800138000"),
]


def alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return cfg


def upgrade_database(settings: Settings, revision: str = "heads") -> None:
    """Migrate the schema, then the data that follows it: files of the first storage move
    into the blob store, and materials of numbered cases get their evidence-log leaves."""
    settings.ensure_dirs()
    from alembic import command

    command.upgrade(alembic_config(settings), revision)
    if revision == "heads":
        from portal.evidence.service import blob_store
        from portal.evidence.storage import migrate_legacy_files

        migrate_legacy_files(settings.storage_dir, settings.data_key, blob_store(settings))
        asyncio.run(_backfill_leaves(settings))


async def _backfill_leaves(settings: Settings) -> None:
    from portal.evidence.service import backfill_leaves

    import_models()
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            await backfill_leaves(session)
    finally:
        await engine.dispose()


@click.group()
def main() -> None:
    """Jiefen (解纷): online dispute resolution."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
def serve(host: str, port: int, workers: int, reload: bool) -> None:
    """Serve the portal with uvicorn."""
    import uvicorn

    from portal.server import run

    run(
        uvicorn.Config(
            "portal.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            reload=reload,
            proxy_headers=True,
            ws="websockets-sansio",
            # The portal logs each request itself (portal.observability): by route template,
            # with no query string, which may hold a searched name.
            access_log=False,
        )
    )


@main.group()
def db() -> None:
    """Database migrations."""


@db.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: the newest)."""
    settings = Settings.from_env()
    upgrade_database(settings, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION."""
    from alembic import command

    command.downgrade(alembic_config(Settings.from_env()), revision)


@db.command("current")
def db_current() -> None:
    """Show the database's revision."""
    from alembic import command

    command.current(alembic_config(Settings.from_env()))


async def _seed_demo(settings: Settings) -> list[tuple[str, str, str]]:
    from sqlalchemy import select

    from portal.accounts import service as accounts
    from portal.crypto import DataVault
    from portal.db import create_engine, create_sessionmaker, utcnow
    from portal.orgs import service as orgs
    from portal.orgs.models import Committee, Firm

    engine = create_engine(settings.database_url)
    vault = DataVault(settings.data_key)
    logins = []
    try:
        async with create_sessionmaker(engine)() as session:
            committee = await session.scalar(
                select(Committee).where(Committee.case_prefix == DEMO_COMMITTEE["case_prefix"])
            )
            if committee is None:
                committee = await orgs.create_committee(session, None, **DEMO_COMMITTEE)  # type: ignore[arg-type]
            firms = []
            for fields in DEMO_FIRMS:
                firm = await session.scalar(
                    select(Firm).where(Firm.credit_code == fields["credit_code"])
                )
                firms.append(firm or await orgs.create_firm(session, None, **fields))
            for role, name, login in DEMO_USERS:
                if await accounts.find_user_by_login(session, vault, login) is None:
                    kind = "email" if "@" in login else "phone"
                    extra: dict[str, Any] = {kind: login}
                    user = await accounts.create_user(
                        session,
                        vault,
                        role=role,
                        display_name=name,
                        password=DEMO_PASSWORD,
                        firm_id=firms[0].id,
                        committee_id=committee.id,
                        **extra,
                    )
                    if kind == "phone":
                        # Demo logins work at once: the demo phone counts as verified.
                        user.phone_verified_at = utcnow()
                        await session.commit()
                    if role == Role.MEDIATOR:
                        _, profile = await orgs.get_mediator(session, user.id)
                        await orgs.update_mediator_profile(
                            session,
                            user.id,
                            profile,
                            specialties=["securities_advisory", "credit_card", "small_loan"],
                            grade="senior",
                        )
                logins.append((role.value, login, DEMO_PASSWORD))
            await _seed_demo_cases(session, settings, vault, committee, firms)
    finally:
        await engine.dispose()
    return logins


DEMO_PDF = b"%PDF-1.4\n% Jiefen demo material\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
DEMO_CASES: list[dict[str, Any]] = [
    {
        "category": "securities_advisory",
        "amount_fen": 1_280_000,
        "facts": "2026年5月购买荐股服务，对方承诺月收益百分之二十，实际亏损，要求退还服务费。",
        "firm": 0,
        "accept": True,
    },
    {
        "category": "small_loan",
        "amount_fen": 356_000,
        "facts": "借款合同未说明服务费，放款时被扣除砍头息，要求退还多收的费用。",
        "firm": 1,
        "accept": False,
    },
]


async def _seed_demo_cases(
    session: Any, settings: Settings, vault: Any, committee: Any, firms: list[Any]
) -> None:
    """Two demo cases, filed by the demo consumer: one accepted and assigned, one to review."""
    from sqlalchemy import func, select

    from portal.accounts import service as accounts
    from portal.cases import service as cases
    from portal.cases.models import Case
    from portal.evidence.service import blob_store

    if await session.scalar(select(func.count(Case.id))):
        return
    consumer = await accounts.find_user_by_login(session, vault, "13800138000")
    admin = await accounts.find_user_by_login(session, vault, "admin@jiefen.example")
    assert consumer is not None and admin is not None
    store = blob_store(settings)
    for n, spec in enumerate(DEMO_CASES):
        case = await _demo_case(session, store, vault, consumer, firms[spec["firm"]], spec, n)
        if spec["accept"]:
            case = await cases.accept_case(session, case, admin)
            best = (await cases.suggest_mediators(session, case))[0]
            await cases.assign_mediator(session, case, admin, best.mediator.id)
    await _seed_demo_history(session, store, vault, consumer, admin, firms)


async def _demo_case(
    session: Any, store: Any, vault: Any, consumer: Any, firm: Any, spec: dict[str, Any], n: int
) -> Any:
    """One demo filing through the real services: draft, claimant, claims, eligibility, the
    two required materials, submission."""
    from portal.cases import service as cases

    case = await cases.start_draft(
        session,
        consumer,
        category=spec["category"],
        region="上海市普陀区",
        firm_id=firm.id,
        respondent_name="",
        respondent_credit_code=None,
        form_key=f"demo-case-{n}-0000000000",
        ip=spec.get("ip", "127.0.0.1"),
    )
    name, id_number = spec.get("claimant", ("张三", "11010519491231002X"))
    await cases.save_claimant(
        session, vault, case, consumer, filed_as="self", name=name, id_number=id_number
    )
    await cases.save_claims(
        session,
        case,
        consumer,
        amount_fen=spec["amount_fen"],
        outcomes=["refund"],
        facts=spec["facts"],
        incident_date=None,
    )
    await cases.save_eligibility(
        session, case, consumer, dict.fromkeys(cases.ELIGIBILITY_QUESTIONS, False)
    )
    for kind in ("identity", "contract"):
        blob = store.put_bytes(DEMO_PDF + f"{kind} {n}".encode())
        await cases.add_material(
            session,
            case,
            consumer,
            kind=kind,
            filename=f"{kind}.pdf",
            content_type="application/pdf",
            size=blob.size,
            sha256=blob.sha256,
        )
    return await cases.submit_case(session, vault, case, consumer)


# Six months of earlier cases, so that the statistics and early warnings have something to show:
# (days ago, category, firm, amount in yuan, how it ended).
DEMO_HISTORY_FACTS = {
    "credit_card": "信用卡账单中出现未经同意的年费和分期手续费，多次联系银行未果，要求退还。",
    "small_loan": "借款时被收取未告知的服务费和担保费，实际利率远高于合同约定，要求退还多收费用。",
    "securities_advisory": "投资顾问承诺稳赚不赔，收取高额服务费后荐股大幅亏损，要求退还服务费。",
}
# A template complaint, as black-market agents file it, with the names and amounts swapped.
DEMO_TEMPLATE = (
    "本人于{month}月经电话推销购买贵司荐股服务，缴纳服务费{amount}元。贵司业务员承诺稳赚不赔、"
    "月收益不低于百分之二十，但按其推荐操作后严重亏损。贵司未揭示风险，虚假宣传，"
    "侵犯了本人的知情权和公平交易权。现要求全额退还服务费并赔偿损失，否则将向监管部门投诉。"
)


def _demo_id_number(n: int) -> str:
    """A valid resident ID number (Shanghai Putuo, born in 1985) for the n-th demo claimant."""
    from portal.validators import resident_id_check_character

    first17 = f"310107198503{10 + n:02d}{100 + n:03d}"
    return first17 + resident_id_check_character(first17)


async def _seed_demo_history(
    session: Any, store: Any, vault: Any, consumer: Any, admin: Any, firms: list[Any]
) -> None:
    """30 cases over the last six months, mediated to an end (settled, failed or withdrawn)
    through the real transitions and then dated back; and a recent rise of near-identical
    complaints against one firm."""
    from datetime import timedelta

    from sqlalchemy import update

    from portal.accounts.models import User
    from portal.cases import service as cases
    from portal.cases.models import Case
    from portal.db import utcnow
    from portal.workdays.service import load_calendar

    now = utcnow()
    calendar = await load_calendar(session)
    categories = list(DEMO_HISTORY_FACTS)
    for i in range(30):
        category = categories[i % 3]
        spec: dict[str, Any] = {
            "category": category,
            "amount_fen": (1_000 + 700 * i) * 100,
            "facts": DEMO_HISTORY_FACTS[category],
        }
        firm = firms[i % 2]
        case = await _demo_case(session, store, vault, consumer, firm, spec, 100 + i)
        case = await cases.accept_case(session, case, admin)
        best = (await cases.suggest_mediators(session, case))[0]
        case = await cases.assign_mediator(session, case, admin, best.mediator.id)
        filed = now - timedelta(days=8 + 6 * i)
        await session.execute(
            update(Case)
            .where(Case.id == case.id)
            .values(
                submitted_at=filed,
                created_at=filed,
                accepted_at=filed + timedelta(days=1),
                firm_response="agree" if i % 5 else None,
            )
        )
        await session.commit()
        await session.refresh(case)
        mediator = await session.get(User, best.mediator.id)
        ending = i % 10
        if ending == 9:
            continue  # still in mediation
        if ending == 8:
            await cases.apply_transition(session, case, consumer, "withdraw", "已与机构自行和解")
            continue
        await cases.apply_transition(session, case, mediator, "start_mediation")
        if ending in (6, 7):
            await cases.apply_transition(session, case, mediator, "fail", "双方未能达成一致")
        else:
            await cases.apply_transition(session, case, mediator, "settle", "双方达成调解协议")
        # Ended 4 to 25 days after acceptance, as if mediated then (the transitions ran today).
        accepted = filed + timedelta(days=1)
        ended = min(accepted + timedelta(days=4 + (7 * i) % 22), now)
        settled = ending not in (6, 7)
        await session.execute(
            update(Case)
            .where(Case.id == case.id)
            .values(
                outcome_at=ended,
                handling_days=calendar.working_days_between(
                    cases.today_in_china(accepted), cases.today_in_china(ended)
                ),
                agreed_fen=spec["amount_fen"] * 6 // 10 if settled else None,
                waived_fen=spec["amount_fen"] // 10 if settled else None,
            )
        )
        await session.commit()
    surname = "王李赵刘陈杨"
    for j in range(6):
        spec = {
            "category": "securities_advisory",
            "claimant": (f"{surname[j]}{'伟芳敏静强磊'[j]}", _demo_id_number(j)),
            "amount_fen": (8_000 + 1_500 * j) * 100,
            "facts": DEMO_TEMPLATE.format(month=j + 3, amount=8_000 + 1_500 * j),
            "ip": "203.0.113.7",
        }
        case = await _demo_case(session, store, vault, consumer, firms[0], spec, 200 + j)
        await session.execute(
            update(Case)
            .where(Case.id == case.id)
            .values(submitted_at=now - timedelta(days=j % 4, hours=2))
        )
        await session.commit()


@main.command()
def demo() -> None:
    """Seed demo data (idempotent) and print the demo logins."""
    settings = Settings.from_env()
    upgrade_database(settings)
    logins = asyncio.run(_seed_demo(settings))
    click.echo("Demo logins (演示账号) at " + settings.base_url + "/accounts/login")
    for role, login, password in logins:
        click.echo(f"  {role:<16} {login:<26} {password}")


@main.group()
def keys() -> None:
    """Blob master keys."""


@keys.command("new")
def keys_new() -> None:
    """Print a new master key entry to add to BLOB_MASTER_KEYS (id:base64)."""
    from portal.evidence.blobs import generate_master_key

    click.echo(f"k{int(time.time())}:{generate_master_key()}")


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every file's data key under the current master key (BLOB_MASTER_KEY_ID).

    Add the new key to BLOB_MASTER_KEYS (keeping the old one), make it current, run this, then
    remove the old key. Interrupted runs are finished by running it again."""
    from portal.evidence.blobs import RotationIncomplete
    from portal.evidence.service import blob_store

    settings = Settings.from_env()
    store = blob_store(settings)
    try:
        changed = store.rotate()
    except RotationIncomplete as exc:
        click.echo(f"re-wrapped {exc.rewrapped} files; {len(exc.failed)} failed:", err=True)
        for sha, reason in exc.failed.items():
            click.echo(f"  {sha}: {reason}", err=True)
        raise SystemExit(1) from None
    click.echo(f"re-wrapped {changed} files under master key {store.current_key_id}")


@main.group()
def evidence() -> None:
    """The evidence log."""


async def _with_session(settings: Settings, work: Any) -> Any:
    import_models()
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


@evidence.command("verify")
@click.option("--no-files", is_flag=True, help="Skip re-reading the evidence files.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes checking blocks of leaves side by side (default: one per CPU core).",
)
def evidence_verify(no_files: bool, workers: int | None) -> None:
    """Recompute every leaf, file hash and tree hash; compare with the signed checkpoints."""
    if not _verify_evidence(Settings.from_env(), files=not no_files, workers=workers):
        raise SystemExit(1)


@evidence.command("checkpoint")
def evidence_checkpoint() -> None:
    """Sequence pending leaves, sign a checkpoint and (if TSA_URL is set) timestamp it."""
    from portal.evidence.log import checkpoint_now
    from portal.evidence.service import log_key, tsa_config

    settings = Settings.from_env()

    async def work(db: Any) -> str:
        checkpoint = await checkpoint_now(db, log_key(settings), tsa_config(settings))
        if checkpoint is None:
            return "the log is empty: nothing to sign"
        stamped = " (timestamped)" if checkpoint.tsa_token else ""
        return f"{checkpoint.note}{stamped}"

    click.echo(asyncio.run(_with_session(settings, work)))


@evidence.command("key")
def evidence_key() -> None:
    """Print the log's public key (verifier key) for publication."""
    from portal.evidence.service import log_key

    click.echo(log_key(Settings.from_env()).vkey)


def _passphrase(confirm: bool) -> str:
    """BACKUP_PASSPHRASE, or asked for (twice when sealing) without echo."""
    import os

    given = os.environ.get("BACKUP_PASSPHRASE")
    if given:
        return given
    value: str = click.prompt(
        "Passphrase for the key file", hide_input=True, confirmation_prompt=confirm
    )
    return value


def _progress(stage: str, done: int, total: int) -> None:
    names = {"database": "database", "files": "files", "check": "checking files"}
    click.echo(f"\r{names.get(stage, stage)}: {done:,} / {total:,}   ", nl=False, err=True)
    if done == total:
        click.echo("", err=True)


def _verify_evidence(settings: Settings, files: bool = True, workers: int | None = None) -> bool:
    from portal.evidence.integrity import cores, verify_log
    from portal.evidence.service import blob_store, log_key

    def progress(done: int, total: int) -> None:
        click.echo(f"\r{done:,} / {total:,} leaves", nl=False, err=True)

    store = blob_store(settings) if files else None
    result = asyncio.run(
        _with_session(
            settings,
            lambda db: verify_log(
                db, store, log_key(settings), progress=progress, workers=workers or cores()
            ),
        )
    )
    click.echo("", err=True)
    click.echo(
        f"{result.leaves:,} leaves, {result.checkpoints} checkpoints, {result.files} files "
        f"checked in {result.seconds:.1f} s"
    )
    if not result.ok:
        click.echo(f"MISMATCH: {result.problem}")
        return False
    click.echo("OK: the log, its records and files match the signed checkpoints")
    return True


@main.command()
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--keys-to",
    "keys_path",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the keys, sealed with a passphrase (keep it apart from the backup).",
)
def backup(dest: Path, keys_path: Path) -> None:
    """Back up the database, the evidence files and (sealed, separately) the keys into DEST."""
    from portal.backup import BackupError, create_backup

    settings = Settings.from_env()
    try:
        result = create_backup(settings, dest, keys_path, _passphrase(True), _progress)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"backed up the {result.database} database (schema {result.revision}) and "
        f"{result.files - 1:,} files, {result.bytes / 1e6:,.1f} MB, into {result.path}"
    )
    click.echo(f"keys sealed into {result.keys_path}: keep it and its passphrase elsewhere")


@main.command()
@click.argument("source", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--keys",
    "keys_path",
    type=click.Path(path_type=Path),
    required=True,
    help="The key file written by `jiefen backup --keys-to`.",
)
def restore(source: Path, keys_path: Path) -> None:
    """Restore a backup into this empty instance, migrate it and verify the evidence log."""
    import os

    from portal.backup import BackupError, restore_backup

    try:
        manifest = restore_backup(
            dict(os.environ), source, keys_path, _passphrase(False), _progress
        )
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    settings = Settings.from_env()
    upgrade_database(settings)
    click.echo(f"restored the backup of {manifest['created']} (schema {manifest['revision']})")
    if not _verify_evidence(settings):
        raise SystemExit(1)


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("digest")
def audit_digest() -> None:
    """Digest the audit events not yet in the evidence log (the portal does it every 5 min)."""
    from portal.audit.digest import digest_all

    made = asyncio.run(_with_session(Settings.from_env(), digest_all))
    click.echo(f"{made} digests staged for the evidence log")


@audit.command("verify")
def audit_verify() -> None:
    """Re-hash every kept audit event and compare with the digests in the evidence log."""
    from portal.audit.digest import verify_digests

    check = asyncio.run(_with_session(Settings.from_env(), verify_digests))
    click.echo(
        f"{check.digests:,} digests: {check.events:,} events re-hashed, {check.purged:,} past "
        f"retention deleted, {check.undigested:,} not yet digested"
    )
    if not check.ok:
        click.echo(f"MISMATCH: {check.problem}")
        raise SystemExit(1)
    click.echo("OK: the audit trail matches its digests in the evidence log")


@main.command("erase-person")
@click.argument("login")
@click.option(
    "--reason",
    type=click.Choice(["request", "retention"]),
    required=True,
    help="A lawful request of the person, or the end of the retention period.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase_person_command(login: str, reason: str, yes: bool) -> None:
    """Erase a person's personal data (LOGIN: user id, phone or email); proofs stay valid."""
    from portal.accounts.erasure import ErasureRefused, erase_person, find_person
    from portal.crypto import DataVault
    from portal.errors import NotFound
    from portal.evidence.service import blob_store
    from portal.i18n import load_catalogues

    settings = Settings.from_env()
    vault = DataVault(settings.data_key)

    async def work(db: Any) -> Any:
        try:
            person = await find_person(db, vault, login)
        except NotFound:
            raise click.ClickException("no such person") from None
        if not yes:
            click.confirm(
                f"Erase the personal data of user {person.id} ({person.role})? This cannot be "
                "undone",
                abort=True,
            )
        try:
            return await erase_person(db, blob_store(settings), person, reason=reason)
        except ErasureRefused as exc:
            message = exc.message.render(load_catalogues()[settings.default_locale])
            raise click.ClickException(message) from None

    report = asyncio.run(_with_session(settings, work))
    click.echo(
        f"erased user {report.user_id}: {report.cases} cases, {report.materials} evidence items "
        f"({report.files_deleted} files deleted), {report.notes} notes, {report.messages} "
        f"messages, {report.notifications} notifications"
    )
    kept = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.kept.items() if v)
    if kept:
        click.echo(f"kept as the committee's legal records: {kept}")


@main.command("retention")
@click.option("--dry-run", is_flag=True, help="Count what is due; change nothing.")
def retention_command(dry_run: bool) -> None:
    """Remove what is past its retention period now (the portal does it every six hours)."""
    from portal.evidence.service import blob_store
    from portal.retention import sweep

    settings = Settings.from_env()
    store = blob_store(settings)

    async def work(db: Any) -> Any:
        return await sweep(db, store, settings, dry_run=dry_run)

    report = asyncio.run(_with_session(settings, work))
    verb = "due" if dry_run else "deleted"
    click.echo(
        f"{verb}: {report.sessions} sessions, {report.phone_codes} phone codes, "
        f"{report.throttles} login throttles, {report.invitations} invitations, "
        f"{report.notifications} notifications"
    )
    if dry_run:
        ids = ", ".join(str(i) for i in report.persons_due) or "none"
        click.echo(f"persons due for erasure: {len(report.persons_due)} (user ids: {ids})")
    else:
        click.echo(f"persons erased: {len(report.persons_erased)}")
        if report.persons_refused:
            click.echo(f"refused (a case is open again): {report.persons_refused}")


@main.command("export-person")
@click.argument("login")
@click.option("--to", "dest", type=click.Path(path_type=Path), required=True)
def export_person_command(login: str, dest: Path) -> None:
    """Write a person's own data (JSON) and the files they uploaded into a ZIP file."""
    from portal.accounts.erasure import export_person, find_person, write_export
    from portal.crypto import DataVault
    from portal.errors import NotFound
    from portal.evidence.service import blob_store

    settings = Settings.from_env()
    vault = DataVault(settings.data_key)
    store = blob_store(settings)

    async def work(db: Any) -> Any:
        try:
            person = await find_person(db, vault, login)
        except NotFound:
            raise click.ClickException("no such person") from None
        return await export_person(db, vault, person)

    data, files = asyncio.run(_with_session(settings, work))
    with dest.open("xb") as target:
        write_export(target, data, files, store)
    click.echo(f"wrote {len(data['cases'])} cases and {len(files)} files to {dest}")


@main.group()
def user() -> None:
    """Manage users."""


@user.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--name", "display_name", required=True)
@click.option("--phone", default=None)
@click.option("--email", default=None)
@click.option("--committee", "committee_prefix", default=None, help="Committee case prefix.")
@click.option("--firm", "credit_code", default=None, help="Firm's unified social credit code.")
@click.password_option(envvar="JIEFEN_PASSWORD")
def user_create(
    role: str,
    display_name: str,
    phone: str | None,
    email: str | None,
    committee_prefix: str | None,
    credit_code: str | None,
    password: str,
) -> None:
    """Create a user (for example the first platform administrator)."""
    from portal.validators import (
        ValidationError,
        clean_email,
        clean_new_password,
        clean_phone,
    )

    try:
        phone = clean_phone(phone) if phone else None
        email = clean_email(email) if email else None
        clean_new_password(password)
    except ValidationError as exc:
        raise click.BadParameter(
            exc.message.render(__import__("gettext").NullTranslations())
        ) from None
    settings = Settings.from_env()
    upgrade_database(settings)
    user_id = asyncio.run(
        _create_user(
            settings,
            Role(role),
            display_name,
            phone,
            email,
            committee_prefix,
            credit_code,
            password,
        )
    )
    click.echo(f"created user {user_id} ({role})")


async def _create_user(
    settings: Settings,
    role: Role,
    display_name: str,
    phone: str | None,
    email: str | None,
    committee_prefix: str | None,
    credit_code: str | None,
    password: str,
) -> int:
    from sqlalchemy import select

    from portal.accounts import service as accounts
    from portal.crypto import DataVault
    from portal.db import create_engine, create_sessionmaker
    from portal.errors import DomainError
    from portal.orgs.models import Committee, Firm

    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            committee_id = firm_id = None
            if committee_prefix:
                committee_id = await session.scalar(
                    select(Committee.id).where(Committee.case_prefix == committee_prefix.upper())
                )
                if committee_id is None:
                    raise click.BadParameter(f"no committee with prefix {committee_prefix}")
            if credit_code:
                firm_id = await session.scalar(
                    select(Firm.id).where(Firm.credit_code == credit_code)
                )
                if firm_id is None:
                    raise click.BadParameter(f"no firm with credit code {credit_code}")
            try:
                user = await accounts.create_user(
                    session,
                    DataVault(settings.data_key),
                    role=role,
                    display_name=display_name,
                    password=password,
                    phone=phone,
                    email=email,
                    committee_id=committee_id,
                    firm_id=firm_id,
                )
            except DomainError as exc:
                raise click.ClickException(exc.message.msgid) from None
            return user.id
    finally:
        await engine.dispose()
