"""Live-sessions benchmark: chat delivery over Socket.IO with N sessions of 3 participants.

    .venv/bin/python bench/sessions.py                          # 300 sessions on SQLite
    .venv/bin/python bench/sessions.py --database both          # SQLite, then PostgreSQL
    .venv/bin/python bench/sessions.py --sessions 20 --duration 20 --no-docs

A fresh database (a file in a temporary directory, or a new PostgreSQL database
``jiefen_bench_ls_<random>``, dropped at the end) is migrated and seeded with one committee and
``--sessions`` cases, each with its own mediator, claimant and firm (one representative), and
one session scheduled per case by its mediator (``schedule_meeting``; users, firms, cases and
login sessions by bulk inserts, so 300 sessions take seconds). The invitations' e-mail and SMS
rows are marked sent, so the delivery worker stays idle during the run.

The portal (``jiefen serve``: one uvicorn process, one worker) runs in its own process. A load
generator, in ``--clients`` processes of its own (one asyncio loop each; 1 by default), logs
every participant in with a session cookie of its own, connects one WebSocket per participant
(``transports=['websocket']``), sends ``meeting.join``, and the mediator admits both parties
(``meeting.admit``), so all three are in the joint room. Then each participant sends
``meeting.chat`` every ``--interval`` seconds (5), the 3×N senders staggered evenly over the
interval, for ``--warmup`` seconds and then ``--duration`` measured seconds, and every
participant records when each ``meeting.chat`` arrives. A message's delivery latency is the time
from its send to its arrival at each of the two other participants (the sender's echo and its
acknowledgement are counted apart); loss is the expected deliveries of the measured messages
(2 each) less those received, after ``--drain`` seconds without sending.

The reference, in the same run: a bare python-socketio ``AsyncServer`` (no database, no
authentication) served by uvicorn in its own process in the same way, where each socket enters
its session's room and a chat event is re-emitted to the room (``skip_sid`` = the sender) and
acknowledged; the same 3×N clients and schedule.

For each server: messages per second, deliveries per second, delivery latency p50/p99/max, loss,
the server's CPU over the measured window (utime + stime of its process, /proc/<pid>/stat; 100 %
= one core), and its resident memory (VmRSS) before any socket and with every socket joined,
whence the memory per connection. ``--profile`` runs the portal under cProfile, switched on for
the measured window only, and prints where its time went (the profiled run's latencies are not
results). The table is written into docs/benchmarks.md unless ``--no-docs`` is given.

All traffic goes to 127.0.0.1. Servers, client processes, the temporary directory and the
PostgreSQL database are removed even when the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import io
import math
import multiprocessing
import os
import pstats
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cases import (  # noqa: E402 - after the path set-up above
    DEFAULT_POSTGRES_ADMIN_URL,
    DOCS,
    HOST,
    STOP,
    Server,
    _free_port,
    _interrupt,
    _process_tree,
    _server_env,
    _user_row,
    credit_code,
    fresh_database,
    machine,
    run_async,
    start_server,
    update_docs,
)

START = "<!-- bench/sessions.py: results start -->"
END = "<!-- bench/sessions.py: results end -->"

# Targets from the issue.
TARGET_SESSIONS = 300
TARGET_P99_MS = 100.0
PEOPLE = ("mediator", "claimant", "firm rep")  # the three participants of a session
CHAT = "meeting.chat"


# -- seeding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seat:
    """One simulated participant: their user id and session cookie (none for the reference)."""

    user_id: int
    cookie: str


@dataclass(frozen=True)
class Plan:
    """One session to simulate: its index (for the schedule), its id and its three people."""

    index: int
    meeting_id: int
    seats: tuple[Seat, Seat, Seat]  # mediator, claimant, firm representative


@dataclass
class Seeded:
    plans: list[Plan]
    seconds: float
    version: str


def _reference_plans(n: int) -> list[Plan]:
    return [Plan(i, i + 1, (Seat(0, ""), Seat(0, ""), Seat(0, ""))) for i in range(n)]


async def seed(settings: Any, n: int) -> Seeded:
    """One committee; per session a mediator, a claimant, a firm with one representative, an
    assigned case and a session scheduled through the real service; a login session per user."""
    from sqlalchemy import insert, select, update

    from portal.accounts.models import User, UserSession
    from portal.accounts.service import PASSWORDS, sign_token
    from portal.cases.models import Case
    from portal.crypto import DataVault, random_token, token_digest
    from portal.db import create_engine, create_sessionmaker
    from portal.meetings import service as meetings
    from portal.notify.models import Notification
    from portal.orgs import service as orgs
    from portal.orgs.models import Firm, MediatorProfile

    started = time.perf_counter()
    vault = DataVault(settings.data_key)
    engine = create_engine(settings.database_url)
    sessions = create_sessionmaker(engine)
    now = datetime.now(UTC)
    password_hash = PASSWORDS.hash(secrets.token_urlsafe(12))  # nobody logs in by password
    try:
        async with sessions() as db:
            committee = await orgs.create_committee(
                db,
                None,
                name="普陀区科技金融产业解纷中心",
                name_en="Putuo Tech-Finance Dispute Resolution Centre",
                region="上海市普陀区",
                categories=["credit_card", "small_loan", "consumer"],
                case_prefix="PT",
            )
        async with engine.connect() as conn:
            firms = [
                {
                    "name": f"上海华信{i}号消费金融有限公司",
                    "name_en": None,
                    "credit_code": credit_code(5000 + i),
                    "industry": "lending",
                    "created_at": now,
                }
                for i in range(n)
            ]
            await conn.execute(insert(Firm), firms)
            firm_ids = list(await conn.scalars(select(Firm.id).order_by(Firm.id)))
            users = []
            for i in range(n):
                email = f"mediator{i}@sessions.bench"
                mediator = _user_row("mediator", f"王调解员{i}", password_hash, now)
                mediator.update(
                    email_index=vault.blind_index("email", email),
                    email_enc=vault.encrypt(email, "users.email"),
                    committee_id=committee.id,
                )
                phone = f"137{i:08d}"
                claimant = _user_row("consumer", f"张三{i}", password_hash, now)
                claimant.update(
                    phone_index=vault.blind_index("phone", phone),
                    phone_enc=vault.encrypt(phone, "users.phone"),
                    phone_verified_at=now,
                )
                email = f"rep{i}@sessions.bench"
                rep = _user_row("firm_rep", f"公司代表{i}", password_hash, now)
                rep.update(
                    email_index=vault.blind_index("email", email),
                    email_enc=vault.encrypt(email, "users.email"),
                    firm_id=firm_ids[i],
                )
                users += [mediator, claimant, rep]
            await conn.execute(insert(User), users)
            ids = list(await conn.scalars(select(User.id).order_by(User.id)))
            people = [tuple(ids[3 * i : 3 * i + 3]) for i in range(n)]
            await conn.execute(
                insert(MediatorProfile),
                [
                    {"user_id": m, "specialties": ["credit_card"], "grade": "senior"}
                    for m, *_ in people
                ],
            )
            name = "张三"
            claimant_name = (
                vault.encrypt(name, "cases.claimant_name"),
                vault.blind_index("person_name", name),
            )
            cases = []
            for i, ((mediator_id, claimant_id, _), firm_id) in enumerate(
                zip(people, firm_ids, strict=True)
            ):
                cases.append(_case_row(i, committee.id, mediator_id, claimant_id, firm_id, now))
                cases[-1].update(
                    claimant_name_enc=claimant_name[0], claimant_name_index=claimant_name[1]
                )
            await conn.execute(insert(Case), cases)
            tokens = {user_id: random_token() for user_id in ids}
            await conn.execute(
                insert(UserSession),
                [
                    {
                        "id": token_digest(token),
                        "user_id": user_id,
                        "created_at": now,
                        "last_seen_at": now,
                        "user_agent": "bench/sessions.py",
                    }
                    for user_id, token in tokens.items()
                ],
            )
            await conn.commit()
        case_ids = []
        async with engine.connect() as conn:
            case_ids = list(await conn.scalars(select(Case.id).order_by(Case.id)))
        meeting_ids = []
        async with sessions() as db:
            for case_id, (mediator_id, _, _) in zip(case_ids, people, strict=True):
                case = await db.get(Case, case_id)
                actor = await db.get(User, mediator_id)
                assert case is not None and actor is not None
                meeting = await meetings.schedule_meeting(
                    db,
                    case,
                    actor,
                    starts_at=datetime.now(UTC) + timedelta(minutes=5),
                    duration_minutes=120,
                    mode="video",
                )
                meeting_ids.append(meeting.id)
        async with engine.connect() as conn:
            # The invitations' e-mail and SMS: not the subject here, and the delivery worker
            # would retry them against an absent SMTP server during the run.
            await conn.execute(
                update(Notification)
                .where(Notification.status == "pending")
                .values(status="sent", sent_at=now)
            )
            await conn.commit()
        version = await _version(engine)
    finally:
        await engine.dispose()
    cookie_name = settings.session_cookie_name
    plans = [
        Plan(
            i,
            meeting_id,
            (
                Seat(trio[0], f"{cookie_name}={sign_token(settings, tokens[trio[0]])}"),
                Seat(trio[1], f"{cookie_name}={sign_token(settings, tokens[trio[1]])}"),
                Seat(trio[2], f"{cookie_name}={sign_token(settings, tokens[trio[2]])}"),
            ),
        )
        for i, (meeting_id, trio) in enumerate(zip(meeting_ids, people, strict=True))
    ]
    return Seeded(plans, time.perf_counter() - started, version)


def _case_row(
    i: int, committee_id: int, mediator_id: int, filer_id: int, firm_id: int, now: datetime
) -> dict[str, Any]:
    """An accepted case assigned to its mediator, as the services leave it."""
    return {
        "number": f"PT-{now.year}-{i + 1:06d}",
        "committee_id": committee_id,
        "status": "assigned",
        "category": "credit_card",
        "filer_id": filer_id,
        "filed_as": "self",
        "claimant_name_enc": None,
        "claimant_name_index": None,
        "claimant_id_enc": None,
        "claimant_id_index": None,
        "claimant_phone_enc": None,
        "claimant_phone_index": None,
        "agent_name_enc": None,
        "agent_phone_enc": None,
        "agent_phone_index": None,
        "agent_org": "",
        "respondent_firm_id": firm_id,
        "respondent_name": f"上海华信{i}号消费金融有限公司",
        "respondent_credit_code": credit_code(5000 + i),
        "amount_fen": 1_280_000,
        "outcomes": ["refund"],
        "facts": "信用卡分期手续费未告知，要求退还多收取的费用。",
        "incident_date": None,
        "eligibility": dict.fromkeys(
            ("in_court", "in_arbitration", "other_mediator", "has_decision", "settled"), False
        ),
        "complexity": "simple",
        "triage_reasons": [],
        "mediator_id": mediator_id,
        "duplicate_of_id": None,
        "requested_items": [],
        "firm_response": None,
        "firm_offer_fen": None,
        "firm_terms": "",
        "firm_responded_at": None,
        "created_at": now,
        "updated_at": now,
        "submitted_at": now,
        "accepted_at": now,
        "closed_at": None,
        "firm_response_due": (now + timedelta(days=7)).date(),
        "close_due": (now + timedelta(days=21)).date(),
        "paused_at": None,
        "paused_working_days": 0,
        "filing_ip": "127.0.0.1",
        "form_key": None,
    }


async def _version(engine: Any) -> str:
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            value = await conn.exec_driver_sql("SELECT sqlite_version()")
            return f"SQLite {value.scalar_one()}"
        value = await conn.exec_driver_sql("SHOW server_version")
        return f"PostgreSQL {value.scalar_one().split()[0]}"


# -- servers ----------------------------------------------------------------------------------


def serve_reference(port: int) -> None:
    """The reference: a bare python-socketio server, no database and no authentication. A
    socket enters its session's room on ``join``; a chat event goes to the others in the room."""
    import socketio
    import uvicorn

    sio = socketio.AsyncServer(
        async_mode="asgi", cors_allowed_origins=[], logger=False, engineio_logger=False
    )
    rooms: dict[str, str] = {}

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        rooms[sid] = f"room:{data['room']}"
        await sio.enter_room(sid, rooms[sid])
        return {"ok": True}

    @sio.on(CHAT)  # type: ignore[untyped-decorator]
    async def chat(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.emit(CHAT, data, room=rooms[sid], skip_sid=sid)
        return {"ok": True}

    @sio.on("disconnect")  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, reason: Any = None) -> None:
        rooms.pop(sid, None)

    uvicorn.run(
        socketio.ASGIApp(sio),
        host=HOST,
        port=port,
        log_level="warning",
        ws="websockets-sansio",  # as `jiefen serve`
    )


def serve_portal(port: int, profile_out: Path) -> None:
    """``jiefen serve``, with a profiler switched on by SIGUSR1 and off (its report saved to
    ``profile_out``) by SIGUSR2: pyinstrument when it can be imported (it samples the stacks,
    which makes sense of SQLAlchemy's greenlets and of coroutines), else cProfile."""
    import uvicorn

    start: Callable[[], None]
    stop: Callable[[], None]
    try:
        pyinstrument = importlib.import_module("pyinstrument")  # optional, not a dependency
    except ImportError:
        import cProfile

        profiler = cProfile.Profile()
        start = profiler.enable

        def stop() -> None:
            profiler.disable()
            profiler.dump_stats(profile_out)

    else:
        sampler = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")
        start = sampler.start

        def stop() -> None:
            sampler.stop()
            text = sampler.output_text(unicode=False, color=False, show_all=False)
            profile_out.with_suffix(".txt").write_text(text)

    signal.signal(signal.SIGUSR1, lambda _signum, _frame: start())
    signal.signal(signal.SIGUSR2, lambda _signum, _frame: stop())
    uvicorn.run(
        "portal.app:create_app",
        factory=True,
        host=HOST,
        port=port,
        proxy_headers=True,
        ws="websockets-sansio",
    )


def _ticks(pids: list[int]) -> dict[int, int]:
    """CPU clock ticks (utime + stime) used so far by each of ``pids``."""
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            found[pid] = int(fields[11]) + int(fields[12])
    return found


def _run_delay(pid: int) -> float:
    """Seconds the process's main thread (the event loop) has spent runnable but waiting for a
    CPU (/proc/<pid>/schedstat): on a shared 2-core machine, what other processes cost it."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    return 0.0


def _cpu_ticks(pids: list[int]) -> int:
    return sum(_ticks(pids).values())


def _postgres_ticks() -> dict[int, int]:
    """Ticks of every PostgreSQL process (the pool opens backends during the run)."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(entry.path, "comm").read_text().startswith("postgres"):
                    pids.append(int(entry.name))
    return _ticks(pids)


# -- the load generator (runs in its own processes) -------------------------------------------


@dataclass(frozen=True)
class Schedule:
    sessions: int  # in the whole run, for the senders' offsets
    interval: float
    warmup: float
    duration: float
    drain: float
    portal: bool


@dataclass
class Message:
    sender: int
    sent: float
    measured: bool
    ack: float | None = None
    ack_error: str = ""
    receivers: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    echo: bool = False


@dataclass
class Load:
    """What one client process saw of the measured messages."""

    messages: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    unknown: int = 0
    echoes: int = 0
    acked: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    no_ack: int = 0
    latencies: list[float] = field(default_factory=list)
    ack_latencies: list[float] = field(default_factory=list)
    max_lag: float = 0.0  # the latest a send left after its scheduled time
    cpu: float = 0.0  # this process's CPU seconds over the measured window
    setup_seconds: float = 0.0
    send_errors: int = 0

    def add(self, other: Load) -> None:
        for name in ("messages", "expected", "delivered", "duplicates", "unknown", "echoes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.acked += other.acked
        self.refused.update(other.refused)
        self.no_ack += other.no_ack
        self.latencies += other.latencies
        self.ack_latencies += other.ack_latencies
        self.max_lag = max(self.max_lag, other.max_lag)
        self.cpu += other.cpu
        self.setup_seconds = max(self.setup_seconds, other.setup_seconds)
        self.send_errors += other.send_errors


class Participant:
    def __init__(self, number: int, plan: Plan, role: int, book: dict[str, Message]) -> None:
        import aiohttp
        import socketio

        self.number = number  # unique in the run: role * sessions + session index
        self.plan, self.role, self.seat = plan, role, plan.seats[role]
        self.book = book
        self.http = aiohttp.ClientSession()
        self.client = socketio.AsyncClient(reconnection=False, http_session=self.http)
        self.client.on(CHAT, self.received)
        self.unknown = 0

    async def received(self, data: Any) -> None:
        now = time.monotonic()
        message = self.book.get(data.get("client_id", "") if isinstance(data, dict) else "")
        if message is None:
            self.unknown += 1
        elif message.sender == self.number:
            message.echo = True
        else:
            message.receivers.append(self.number)
            message.latencies.append(now - message.sent)

    async def connect(self, url: str) -> None:
        headers = {"Cookie": self.seat.cookie} if self.seat.cookie else {}
        await self.client.connect(url, transports=["websocket"], headers=headers, wait_timeout=60)

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        ack = await self.client.call(event, data, timeout=120)
        if not isinstance(ack, dict) or not ack.get("ok"):
            raise RuntimeError(f"{event} for session {self.plan.meeting_id}: {ack!r}")
        return ack

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.client.connected:
                await self.client.disconnect()
        await self.http.close()


async def _bounded(jobs: list[Callable[[], Awaitable[None]]], at_once: int) -> None:
    gate = asyncio.Semaphore(at_once)

    async def run(job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(run(job) for job in jobs))


async def _enter(url: str, trio: list[Participant], portal: bool) -> None:
    """Connect a session's three people and bring them into its joint room."""
    await asyncio.gather(*(p.connect(url) for p in trio))
    meeting_id = trio[0].plan.meeting_id
    if not portal:
        await asyncio.gather(*(p.call("join", {"room": meeting_id}) for p in trio))
        return
    mediator, *parties = trio
    await mediator.call("meeting.join", {"meeting_id": meeting_id})
    await asyncio.gather(*(p.call("meeting.join", {"meeting_id": meeting_id}) for p in parties))
    for party in parties:
        await mediator.call(
            "meeting.admit", {"meeting_id": meeting_id, "user_id": party.seat.user_id}
        )


async def _send_all(
    people: list[Participant], book: dict[str, Message], plan: Schedule, t0: float
) -> Load:
    load = Load()
    measure_from = t0 + plan.warmup
    stop_at = measure_from + plan.duration
    senders = 3 * plan.sessions

    async def sleep_until(moment: float) -> None:
        delay = moment - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def send(p: Participant) -> None:
        offset = p.number / senders * plan.interval
        n = 0
        while (at := t0 + offset + n * plan.interval) < stop_at:
            await sleep_until(at)
            client_id = f"b{p.number}n{n}"
            sent = time.monotonic()
            message = Message(p.number, sent, measured=at >= measure_from)
            if message.measured:
                load.max_lag = max(load.max_lag, sent - at)
            book[client_id] = message

            def acked(data: Any = None, *_: Any, message: Message = message) -> None:
                message.ack = time.monotonic() - message.sent
                if not (isinstance(data, dict) and data.get("ok")):
                    error = data.get("error") if isinstance(data, dict) else repr(data)
                    message.ack_error = str(error)

            payload = {
                "meeting_id": p.plan.meeting_id,
                "client_id": client_id,
                "text": f"第{n}条消息：我方愿意减免部分利息，请对方考虑。",
            }
            try:
                await p.client.emit(CHAT, payload, callback=acked)
            except Exception as exc:
                message.ack_error = f"send: {type(exc).__name__}"
                load.send_errors += 1
            n += 1

    def cpu() -> float:
        times = os.times()
        return times.user + times.system

    async def window() -> None:
        await sleep_until(measure_from)
        before = cpu()
        await sleep_until(stop_at)
        load.cpu = cpu() - before

    await asyncio.gather(window(), *(send(p) for p in people))
    # Drain: wait for what is still on its way, then count.
    measured = [m for m in book.values() if m.measured]
    deadline = time.monotonic() + plan.drain
    while time.monotonic() < deadline:
        if all(len(m.receivers) >= 2 and m.ack is not None for m in measured):
            break
        await asyncio.sleep(0.1)
    for m in measured:
        load.messages += 1
        load.expected += 2
        receivers = set(m.receivers)
        load.delivered += len(receivers)
        load.duplicates += len(m.receivers) - len(receivers)
        load.latencies += m.latencies
        load.echoes += m.echo
        if m.ack is None:
            load.no_ack += 1
        elif m.ack_error:
            load.refused[m.ack_error] += 1
        else:
            load.acked += 1
            load.ack_latencies.append(m.ack)
    load.unknown = sum(p.unknown for p in people)
    return load


async def _client(conn: Connection, url: str, plans: list[Plan], plan: Schedule) -> None:
    book: dict[str, Message] = {}
    people = [
        Participant(role * plan.sessions + p.index, p, role, book)
        for p in plans
        for role in range(3)
    ]
    trios = [people[i : i + 3] for i in range(0, len(people), 3)]
    try:
        started = time.monotonic()
        await _bounded([partial(_enter, url, trio, plan.portal) for trio in trios], at_once=16)
        setup = time.monotonic() - started
        conn.send(("ready", setup))
        command, t0 = await asyncio.to_thread(conn.recv)
        assert command == "start"
        load = await _send_all(people, book, plan, t0)
        load.setup_seconds = setup
        conn.send(("done", load))
        await asyncio.to_thread(conn.recv)  # "stop"
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        await _bounded([p.close for p in people], at_once=32)
    conn.send(("closed", None))


def client_main(conn: Connection, url: str, plans: list[Plan], plan: Schedule) -> None:
    """A client process: its sessions' participants on one asyncio loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through the pipe
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_client(conn, url, plans, plan))


# -- one measured server ------------------------------------------------------------------------


@dataclass
class Measured:
    label: str
    backend: str
    sessions: int
    sockets: int
    duration: float
    load: Load
    cpu_seconds: float
    wall: float
    rss_idle_mb: float
    rss_joined_mb: float
    rss_after_mb: float
    quiet_cores: float  # the server's CPU with every socket joined, before any message
    cpu_wait: float  # share of the window its event loop waited for a CPU (run queue)
    postgres_cores: float | None
    clients: int
    version: str = ""
    seed_seconds: float = 0.0
    profile: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    def percentile(self, values: list[float], p: float) -> float:
        ordered = sorted(values)
        if not ordered:
            return math.nan
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

    @property
    def p50(self) -> float:
        return self.percentile(self.load.latencies, 50)

    @property
    def p99(self) -> float:
        return self.percentile(self.load.latencies, 99)

    @property
    def worst(self) -> float:
        return max(self.load.latencies, default=math.nan) * 1000

    @property
    def lost(self) -> int:
        return self.load.expected - self.load.delivered

    @property
    def per_socket_kib(self) -> float:
        return (self.rss_joined_mb - self.rss_idle_mb) * 1024 / self.sockets


def _recv(conn: Connection, seconds: float, what: str) -> tuple[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if STOP.is_set():
            raise KeyboardInterrupt("stopping")
        if conn.poll(0.2):
            message: tuple[str, Any] = conn.recv()
            if message[0] == "failed":
                raise RuntimeError(f"a client process failed while {what}: {message[1]}")
            return message
    raise RuntimeError(f"no answer from a client process within {seconds:.0f} s while {what}")


def _sleep_until(moment: float) -> None:
    while (left := moment - time.monotonic()) > 0:
        if STOP.is_set():
            raise KeyboardInterrupt("stopping")
        time.sleep(min(left, 0.2))


def measure(
    label: str,
    backend: str,
    server: Server,
    plans: list[Plan],
    args: argparse.Namespace,
    stack: contextlib.ExitStack,
    profile: Path | None = None,
) -> Measured:
    portal = backend != "reference"
    schedule = Schedule(
        len(plans), args.interval, args.warmup, args.duration, args.drain, portal=portal
    )
    idle_mb, _ = server.memory_mb()
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    for k in range(args.clients):
        parent, child = context.Pipe()
        share = plans[k :: args.clients]
        process = context.Process(
            target=client_main, args=(child, server.url, share, schedule), daemon=True
        )
        process.start()
        child.close()
        stack.callback(_reap, process)
        pipes.append(parent)
    setup = max(_recv(c, 600, "connecting")[1] for c in pipes)
    pids = _process_tree(server.process.pid)
    hz = os.sysconf("SC_CLK_TCK")
    time.sleep(1)  # let the server settle after the joins
    quiet0, quiet_wall0 = _cpu_ticks(pids), time.monotonic()
    time.sleep(3)
    quiet = (_cpu_ticks(pids) - quiet0) / hz / (time.monotonic() - quiet_wall0)
    joined_mb, _ = server.memory_mb()
    print(
        f"  {label}: {3 * len(plans)} sockets joined in {setup:.1f} s; server RSS"
        f" {idle_mb:.0f} MiB idle, {joined_mb:.0f} MiB joined",
        flush=True,
    )
    t0 = time.monotonic() + 1.0
    for c in pipes:
        c.send(("start", t0))
    pg = backend == "postgresql"
    _sleep_until(t0 + args.warmup)
    if profile is not None:
        os.kill(server.process.pid, signal.SIGUSR1)
    cpu0, pg0, wall0 = _cpu_ticks(pids), _postgres_ticks() if pg else {}, time.monotonic()
    delay0 = _run_delay(server.process.pid)
    _sleep_until(t0 + args.warmup + args.duration)
    cpu1, pg1, wall1 = _cpu_ticks(pids), _postgres_ticks() if pg else {}, time.monotonic()
    delay1 = _run_delay(server.process.pid)
    if profile is not None:
        os.kill(server.process.pid, signal.SIGUSR2)
    load = Load()
    for c in pipes:
        load.add(_recv(c, args.drain + 120, "draining")[1])
    after_mb, _ = server.memory_mb()
    for c in pipes:
        c.send(("stop", None))
    for c in pipes:
        with contextlib.suppress(EOFError):
            _recv(c, 300, "disconnecting")
    wall = wall1 - wall0
    return Measured(
        label=label,
        backend=backend,
        sessions=len(plans),
        sockets=3 * len(plans),
        duration=args.duration,
        load=load,
        cpu_seconds=(cpu1 - cpu0) / hz,
        wall=wall,
        rss_idle_mb=idle_mb,
        rss_joined_mb=joined_mb,
        rss_after_mb=after_mb,
        quiet_cores=quiet,
        cpu_wait=(delay1 - delay0) / wall,
        postgres_cores=sum(t - pg0.get(p, 0) for p, t in pg1.items()) / hz / wall if pg else None,
        clients=args.clients,
    )


def _reap(process: Any) -> None:
    process.join(timeout=10)
    if process.is_alive():
        process.terminate()
        process.join(timeout=10)


def run_reference(args: argparse.Namespace, workdir: Path) -> Measured:
    print(f"\n== reference: bare python-socketio, {args.sessions} sessions", flush=True)
    port = _free_port()
    with contextlib.ExitStack() as stack:
        server = start_server(
            "reference",
            [sys.executable, str(Path(__file__).resolve()), "--serve-reference", str(port)],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
            workdir / "reference.log",
            port,
        )
        stack.callback(server.stop)
        time.sleep(1)
        result = measure(
            "reference", "reference", server, _reference_plans(args.sessions), args, stack
        )
    _print_one(result)
    return result


def run_portal(backend: str, args: argparse.Namespace, workdir: Path) -> Measured:
    from portal.cli import upgrade_database
    from portal.settings import Settings

    print(f"\n== portal on {backend}: {args.sessions} sessions", flush=True)
    with contextlib.ExitStack() as stack:
        var_dir = workdir / backend
        port = _free_port()
        url = fresh_database(backend, args.postgres_url, var_dir, stack, "jiefen_bench_ls")
        settings = Settings(
            database_url=url,
            secret_key=secrets.token_urlsafe(32),
            data_key=secrets.token_urlsafe(32),
            var_dir=var_dir,
            storage_dir=var_dir / "storage",
            base_url=f"http://{HOST}:{port}",
        )
        settings.ensure_dirs()
        upgrade_database(settings)
        seeded = run_async(seed(settings, args.sessions))
        print(f"  seeded {args.sessions} sessions in {seeded.seconds:.1f} s", flush=True)
        profile = workdir / f"{backend}.prof" if args.profile else None
        if profile is None:
            argv = [str(ROOT / ".venv" / "bin" / "jiefen"), "serve", "--host", HOST]
            argv += ["--port", str(port), "--workers", "1"]
        else:
            argv = [sys.executable, str(Path(__file__).resolve()), "--serve-portal", str(port)]
            argv += ["--profile-out", str(profile)]
        server = start_server("jiefen", argv, _server_env(settings), var_dir / "server.log", port)
        stack.callback(server.stop)
        _warm_up(server.url)
        try:
            result = measure(
                f"portal, {backend}" + (" (profiled)" if profile else ""),
                backend,
                server,
                seeded.plans,
                args,
                stack,
                profile,
            )
        except Exception:
            for line in server_errors(var_dir / "server.log")[:3]:
                print(f"  server log: {line}", flush=True)
            raise
        result.version, result.seed_seconds = seeded.version, seeded.seconds
        if profile is not None:
            for _ in range(100):
                if profile.exists() or profile.with_suffix(".txt").exists():
                    break
                time.sleep(0.1)
            result.profile = profile_lines(profile, result)
        result.server_errors = server_errors(var_dir / "server.log")
        for line in result.server_errors[:2]:
            print(f"  server log: {line}", flush=True)
    _print_one(result)
    return result


def server_errors(log: Path) -> list[str]:
    """Each ERROR logged by the server, with the last line of its traceback (the exception)."""
    lines = log.read_text(errors="replace").splitlines()
    found = []
    for i, line in enumerate(lines):
        if " ERROR " not in line:
            continue
        cause = ""
        for following in lines[i + 1 :]:
            if following[:4].isdigit() or following.startswith("INFO"):
                break  # the next log record
            if following.strip() and not following.startswith(" "):
                cause = following.strip()
        found.append(line.split(" ERROR ", 1)[1] + (f": {cause}" if cause else ""))
    return found


def _warm_up(url: str) -> None:
    """One page, so the idle memory includes what the first request loads; then let the
    background workers settle."""
    import httpx

    httpx.get(url + "/", timeout=30)
    time.sleep(3)


def profile_lines(path: Path, result: Measured, top: int = 25) -> list[str]:
    """Where the server's time went over the measured window: pyinstrument's call tree, or
    cProfile's functions with the most time (own and cumulative)."""
    sampled = path.with_suffix(".txt")
    if sampled.exists():
        return [f"pyinstrument over the measured window, {result.load.messages:,} messages:"] + [
            line.rstrip() for line in sampled.read_text().splitlines() if line.strip()
        ]
    stats = pstats.Stats(str(path))
    total_tt: float = stats.total_tt  # type: ignore[attr-defined]
    out = [
        f"cProfile over the measured window: {total_tt:.1f} s profiled in {result.wall:.0f} s,"
        f" {result.load.messages:,} messages ({total_tt / max(1, result.load.messages) * 1000:.2f}"
        " ms per message, profiler overhead included; coroutines and greenlets blur the"
        " cumulative times)"
    ]
    for key in ("tottime", "cumulative"):
        buffer = io.StringIO()
        stats.stream = buffer  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(top)
        lines = buffer.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
        out.append(f"by {key}:")
        out += [line.rstrip() for line in lines[start : start + top + 1] if line.strip()]
    return out


# -- reporting ----------------------------------------------------------------------------------

HEADER = [
    "server",
    "sessions",
    "sockets",
    "msg/s",
    "deliveries/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "lost",
    "server CPU",
    "RSS MiB",
    "KiB/socket",
    "target",
]


def _mark(m: Measured) -> str:
    if m.backend == "reference":
        return "reference"
    ok = m.p99 <= TARGET_P99_MS and m.lost == 0 and m.sessions >= TARGET_SESSIONS
    return f"p99 ≤ {TARGET_P99_MS:.0f}, no loss {'✓' if ok else '✗'}"


def _lost(m: Measured) -> str:
    if not m.lost:
        return "0"
    return f"{m.lost} ({m.lost / max(1, m.load.expected):.2%})"


def rows(results: list[Measured]) -> list[list[str]]:
    return [
        [
            m.label,
            f"{m.sessions}",
            f"{m.sockets}",
            f"{m.load.messages / m.duration:.1f}",
            f"{m.load.delivered / m.duration:.1f}",
            f"{m.p50:.1f}",
            f"{m.p99:.1f}",
            f"{m.worst:.1f}",
            _lost(m),
            f"{m.cpu_seconds / m.wall:.0%}",
            f"{m.rss_joined_mb:.0f}",
            f"{m.per_socket_kib:.0f}",
            _mark(m),
        ]
        for m in results
    ]


def text_table(table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *table]) for i in range(len(HEADER))]
    numeric = set(range(1, 12))

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(HEADER), line(["-" * w for w in widths])]
    return "\n".join(out + [line(r) for r in table])


def markdown_table(table: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |"]
    out.append(
        "| "
        + " | ".join("---" if i in (0, len(HEADER) - 1) else "---:" for i in range(len(HEADER)))
        + " |"
    )
    out += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(out)


def notes(results: list[Measured]) -> list[str]:
    out = []
    for m in results:
        load = m.load
        ack50 = m.percentile(load.ack_latencies, 50)
        ack99 = m.percentile(load.ack_latencies, 99)
        refused = ", ".join(f"{n} {code}" for code, n in load.refused.most_common())
        parts = [
            f"- {m.label}: {load.messages:,} messages measured ({load.delivered:,} of"
            f" {load.expected:,} deliveries received"
            + (f", {load.duplicates} twice" if load.duplicates else "")
            + f"); acknowledged {load.acked:,} (p50 {ack50:.1f} ms, p99 {ack99:.1f} ms)"
            + (f", refused {refused}" if refused else "")
            + (f", never acknowledged {load.no_ack}" if load.no_ack else "")
            + (f", send errors {load.send_errors}" if load.send_errors else "")
            + "; ",
            f"server CPU {m.cpu_seconds / max(1, load.messages) * 1000:.2f} ms per message"
            f" ({m.quiet_cores:.1%} with every socket joined and no messages); its event loop"
            f" waited for a CPU {m.cpu_wait:.0%} of the window (run queue);"
            f" RSS {m.rss_idle_mb:.0f} MiB idle, {m.rss_joined_mb:.0f} MiB with every socket"
            f" joined, {m.rss_after_mb:.0f} MiB after the run;",
            f" {m.clients} client process{'es' if m.clients > 1 else ''} used"
            f" {load.cpu / m.wall:.2f} cores, sends left at most"
            f" {load.max_lag * 1000:.0f} ms late; sockets joined in {load.setup_seconds:.0f} s",
        ]
        if m.backend != "reference":
            parts.append(
                f"; senders' own echo received for {load.echoes:,} messages"
                f"; {m.version}, seeded in {m.seed_seconds:.0f} s"
            )
        if m.postgres_cores is not None:
            parts.append(
                f"; the PostgreSQL server (all its processes, other users' included) used"
                f" {m.postgres_cores:.2f} cores"
            )
        if load.unknown:
            parts.append(f"; {load.unknown} chat events not sent by this run")
        if m.server_errors:
            first = m.server_errors[0]
            parts.append(f"; the server logged {len(m.server_errors)} errors, the first: {first}")
        out.append("".join(parts) + ".")
    return out


def _print_one(m: Measured) -> None:
    print(text_table(rows([m])))
    print("\n".join(notes([m])))
    for line in m.profile:
        print("    " + line)


SECTION = """
## Live sessions: chat delivery over Socket.IO (`bench/sessions.py`)

N sessions of 3 participants (a mediator, a claimant, a firm representative) on a fresh
database, each participant on its own WebSocket to `jiefen serve` (one process) in the joint
room, each sending one `meeting.chat` every 5 seconds, the senders staggered evenly; a message's
delivery latency is from its send to its arrival at each of the two others. Loss counts the
deliveries missing after a 5 s drain. Reference: a bare python-socketio server re-emitting to
the room (no database, no authentication), same clients and schedule. Server CPU is that
process's share of one core over the measured window; KiB/socket is its RSS with every socket
joined less its RSS before the first socket, per socket. Target: 300 sessions (900 sockets) on
one process with p99 ≤ 100 ms and no loss.

```sh
.venv/bin/python bench/sessions.py --database both   # --sessions, --duration, --clients, --profile
```

{block}
"""


def write_docs(
    results: list[Measured], args: argparse.Namespace, elapsed: float, load_note: str
) -> None:
    now = datetime.now().astimezone()
    versions = ", ".join(dict.fromkeys(m.version for m in results if m.version))
    lines = [
        START,
        f"Latest run: {now:%Y-%m-%d %H:%M %Z}, {machine()}; {versions}; {args.sessions}"
        f" sessions, {args.warmup:g} s warm-up then {args.duration:g} s measured, one message"
        f" per participant every {args.interval:g} s, {args.clients} client"
        f" process{'es' if args.clients > 1 else ''}; the whole run took {elapsed / 60:.0f} min;"
        f" {load_note}.",
        "",
        markdown_table(rows(results)),
        "",
        *notes(results),
        END,
    ]
    block = "\n".join(lines)
    update_docs(block, START, END, SECTION.format(block=block))


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=TARGET_SESSIONS)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between a sender's")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for stragglers")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--no-reference", action="store_true", help="skip the bare server")
    parser.add_argument("--profile", action="store_true", help="cProfile the portal's window")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
        help="a database on the loopback server to connect to while creating the bench one",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/ alone")
    parser.add_argument("--serve-reference", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-portal", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sessions < 1 or args.clients < 1 or args.clients > args.sessions:
        parser.error("--sessions and --clients must be at least 1, and clients ≤ sessions")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_reference:
        serve_reference(args.serve_reference)
        return 0
    if args.serve_portal:
        serve_portal(args.serve_portal, args.profile_out)
        return 0
    from bench.evidence import OtherLoad

    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    backends = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    started = time.monotonic()
    results: list[Measured] = []
    workdir = Path(tempfile.mkdtemp(prefix="jiefen-bench-sessions-"))
    other = OtherLoad()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        stack.enter_context(other)
        if not args.no_reference:
            results.append(run_reference(args, workdir))
        for backend in backends:
            results.append(run_portal(backend, args, workdir))
    elapsed = time.monotonic() - started
    print()
    print(
        f"Live-sessions benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}:"
        f" {args.sessions} sessions × 3 participants, {args.duration:g} s measured, {machine()}"
    )
    print(text_table(rows(results)))
    print("\n".join(notes(results)))
    print(f"whole run: {elapsed / 60:.1f} min; {other.summary()}")
    if not args.no_docs and not args.profile:
        write_docs(results, args, elapsed, other.summary())
        print(f"wrote {DOCS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers, databases and temporary files removed", file=sys.stderr)
        sys.exit(130)
