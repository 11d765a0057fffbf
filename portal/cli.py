"""The ``jiefen`` command: serve, db upgrade/downgrade/current, demo, user create."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
from alembic import command
from alembic.config import Config

from portal.policy import Role
from portal.settings import Settings

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
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    return cfg


def upgrade_database(settings: Settings, revision: str = "heads") -> None:
    settings.ensure_dirs()
    command.upgrade(alembic_config(settings), revision)


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

    uvicorn.run(
        "portal.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        proxy_headers=True,
        ws="websockets-sansio",
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
    command.downgrade(alembic_config(Settings.from_env()), revision)


@db.command("current")
def db_current() -> None:
    """Show the database's revision."""
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
    from portal.evidence.storage import BlobStore

    if await session.scalar(select(func.count(Case.id))):
        return
    consumer = await accounts.find_user_by_login(session, vault, "13800138000")
    admin = await accounts.find_user_by_login(session, vault, "admin@jiefen.example")
    assert consumer is not None and admin is not None
    store = BlobStore(settings.storage_dir, settings.data_key)
    for n, spec in enumerate(DEMO_CASES):
        case = await cases.start_draft(
            session,
            consumer,
            category=spec["category"],
            region="上海市普陀区",
            firm_id=firms[spec["firm"]].id,
            respondent_name="",
            respondent_credit_code=None,
            form_key=f"demo-case-{n}-0000000000",
            ip="127.0.0.1",
        )
        await cases.save_claimant(
            session,
            vault,
            case,
            consumer,
            filed_as="self",
            name="张三",
            id_number="11010519491231002X",
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
            stored = store.put(DEMO_PDF + kind.encode(), f"{kind}.pdf")
            await cases.add_material(
                session,
                case,
                consumer,
                kind=kind,
                filename=stored.filename,
                content_type=stored.content_type,
                size=stored.size,
                sha256=stored.sha256,
            )
        case = await cases.submit_case(session, vault, case, consumer)
        if spec["accept"]:
            case = await cases.accept_case(session, case, admin)
            best = (await cases.suggest_mediators(session, case))[0]
            await cases.assign_mediator(session, case, admin, best.mediator.id)


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
