"""Soak of mixed load: ops/s, latency, RSS growth, outage recovery; `bench/soak.py --minutes 30`.

    .venv/bin/python bench/soak.py                 # 30 minutes, 100 live sessions
    .venv/bin/python bench/soak.py --minutes 2     # what CI runs on request (never in make test)
    .venv/bin/python bench/soak.py --minutes 1 --no-outages

A fresh PostgreSQL database (``jiefen_bench_soak_<random>`` on 127.0.0.1:5432, dropped at the
end) is migrated and seeded by ``bench.sessions.seed``: one committee, ``--sessions`` cases each
with a mediator, a claimant (phone verified) and a firm representative, one live session per
case, and a login session per user. The portal (``jiefen serve``, one process) runs with
``REDIS_URL=redis://127.0.0.1:6379/14`` and a ``REDIS_PREFIX`` of its own.

One asyncio load generator then runs, for ``--minutes``, at fixed rates (a soak, not a stress):

- ``filing``: a claimant files a case through the real wizard forms (``/cases/new``, the
  claimant, claims and eligibility steps, an identity document and a contract uploaded, then
  ``/cases/<id>/submit``: seven POSTs with the page's CSRF token); a filing succeeds when the
  submit redirects to the case page. The case is found again afterwards by its ``form_key``,
  no longer a draft. (The seeded cases were numbered by bulk insert; the committee's counter is
  moved past them first.)
- ``view``: a logged-in GET of the home page, the case list or the claimant's case page (200).
- ``upload``: a small evidence file POSTed as multipart/form-data to ``/cases/<id>/materials``
  (the form the UI sends, CSRF token as a form field; 303), under a unique file name.
- ``chat``: ``--sessions`` live sessions of three participants on Socket.IO (the seeding and the
  joining are ``bench/sessions.py``'s), one ``meeting.chat`` per session every
  ``--chat-interval`` seconds, the sender taking turns; a message succeeds when acknowledged
  ``ok``; its arrivals at the two other participants are counted too (delivery latency, loss).
  A session whose sockets were dropped is reconnected and re-admitted (at most every 10 s).
- ``healthz``: GET /healthz, the bare-page reference, in the same run.

At about 1/3 of the run PostgreSQL is stopped for ``--outage-seconds`` (10) and started again
(``pg_ctlcluster``), at about 2/3 Redis likewise (``redis-cli shutdown nosave``, then
``redis-server``). For each outage: how the requests made while the service was away answered
(status codes, whether the body is the portal's error page, timeouts apart), and per action the
time from the service's return to the first success. RSS of the server process is taken after
the warm-up and at the end (target: growth ≤ 10 %). Afterwards every filing, upload and chat
message that got a success answer is looked up in the database.

All traffic goes to 127.0.0.1. Every loop is bounded in count and time (10 s per request); the
server, the database and the temporary directory are removed, and PostgreSQL and Redis are
started again if they are found stopped, even when the run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cases import (  # noqa: E402 - after the path set-up above
    DEFAULT_POSTGRES_ADMIN_URL,
    HOST,
    Server,
    _free_port,
    _interrupt,
    _process_tree,
    _server_env,
    fresh_database,
    machine,
    run_async,
    start_server,
)
from bench.sessions import (  # noqa: E402
    CHAT,
    Message,
    Participant,
    Plan,
    _enter,
    seed,
    server_errors,
)

REQUEST_TIMEOUT = 10.0
TARGET_GROWTH = 10.0  # % RSS growth allowed over the run
ACTIONS = ("filing", "view", "upload", "chat", "healthz")
CSRF_RE = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
ERROR_PAGE = 'class="panel error-page"'
VALID_ID = "11010519491231002X"  # a well-formed resident ID number (tests/factories.py)
PDF = b"%PDF-1.4\n% jiefen soak\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]


# -- services -------------------------------------------------------------------------------------


def _pg_cluster() -> str:
    versions = sorted(os.listdir("/etc/postgresql"))
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1]


def _pg_ctl(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_cluster(), "main", action],
        check=True,
        capture_output=True,
        timeout=60,
    )


def pg_ready() -> bool:
    done = subprocess.run(["pg_isready", "-h", HOST, "-t", "2"], capture_output=True, timeout=10)
    return done.returncode == 0


def redis_ready() -> bool:
    try:
        done = subprocess.run(
            ["redis-cli", "-h", HOST, "-p", "6379", "ping"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.stdout.strip() == "PONG"


def _wait(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def ensure_services() -> None:
    """PostgreSQL and Redis running again, whatever happened to the run."""
    if not pg_ready():
        with contextlib.suppress(Exception):
            _pg_ctl("start")
        _wait(pg_ready, 60)
    if not redis_ready():
        with contextlib.suppress(Exception):
            subprocess.run(REDIS_START, capture_output=True, timeout=30)
        _wait(redis_ready, 30)


# -- bookkeeping -----------------------------------------------------------------------------------


@dataclass
class Event:
    action: str
    started: float  # monotonic
    seconds: float
    outcome: str  # "ok", "HTTP 500 (error page)", "timeout", "ConnectError", ...


@dataclass
class Outage:
    service: str
    down: float = 0.0  # monotonic: the stop command was given
    up: float = 0.0  # monotonic: the service answered again
    failed: bool = False


@dataclass
class Soak:
    events: list[Event] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # not sent: backlog full
    filed: list[str] = field(default_factory=list)  # form keys of successful filings
    uploaded: list[str] = field(default_factory=list)  # file names of successful uploads
    chatted: list[str] = field(default_factory=list)  # client ids of acknowledged messages
    delivered: dict[str, Message] = field(default_factory=dict)  # acknowledged: arrivals
    outages: list[Outage] = field(default_factory=list)
    reconnects: int = 0
    reconnect_failures: int = 0
    measure_from: float = 0.0
    measure_to: float = 0.0
    rss_start: float = 0.0
    rss_end: float = 0.0
    rss_max: float = 0.0
    server_exit: int | None = None  # the server's exit status, if it died during the run

    def record(self, action: str, started: float, outcome: str) -> None:
        self.events.append(Event(action, started, time.monotonic() - started, outcome))


def _outcome(response: Any, expected: int) -> str:
    if response.status_code == expected:
        return "ok"
    page = " (error page)" if ERROR_PAGE in response.text else ""
    return f"HTTP {response.status_code}{page}"


def _exception(exc: BaseException) -> str:
    import httpx

    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return "timeout"
    return type(exc).__name__


# -- load -----------------------------------------------------------------------------------------


class Consumer:
    """A seeded claimant with a browser of their own (cookie jar, CSRF token)."""

    def __init__(self, url: str, plan: Plan, case_id: int) -> None:
        import httpx

        name, _, value = plan.seats[1].cookie.partition("=")
        self.plan, self.case_id = plan, case_id
        self.http = httpx.AsyncClient(
            base_url=url, cookies={name: value}, timeout=REQUEST_TIMEOUT, follow_redirects=False
        )
        self.token = ""

    async def csrf(self, refresh: bool = False) -> str:
        if refresh or not self.token:
            page = await self.http.get("/")
            found = CSRF_RE.search(page.text)
            if found is None:
                raise RuntimeError(f"no CSRF token on / (HTTP {page.status_code})")
            self.token = found.group(1)
        return self.token

    async def post(self, path: str, data: dict[str, Any], **kwargs: Any) -> Any:
        data = {**data, "csrf_token": await self.csrf()}
        response = await self.http.post(path, data=data, **kwargs)
        if response.status_code == 403:  # a token from a previous cookie: fetch it again
            data["csrf_token"] = await self.csrf(refresh=True)
            response = await self.http.post(path, data=data, **kwargs)
        return response


async def file_case(c: Consumer, firm_id: int, soak: Soak) -> None:
    started = time.monotonic()
    form_key = "soak" + secrets.token_hex(8)
    try:
        first = await c.post(
            "/cases/new",
            {"category": "credit_card", "firm_id": str(firm_id), "form_key": form_key},
        )
        if first.status_code != 303:
            soak.record("filing", started, _outcome(first, 303))
            return
        match = re.search(r"/cases/(\d+)/edit", first.headers.get("location", ""))
        if match is None:
            soak.record("filing", started, "no case in redirect")
            return
        base = f"/cases/{match.group(1)}/edit"
        questions = ("in_court", "in_arbitration", "other_mediator", "has_decision", "settled")
        steps = [
            ("claimant", {"filed_as": "self", "name": "张三", "id_number": VALID_ID}),
            (
                "claims",
                {
                    "amount": "1,280.50",
                    "outcomes": "refund",
                    "facts": "信用卡分期手续费未告知，要求退还多收取的费用。(soak)",
                },
            ),
            ("eligibility", dict.fromkeys(questions, "no")),
        ]
        for step, data in steps:
            response = await c.post(f"{base}/{step}", data)
            if response.status_code != 303:
                soak.record("filing", started, _outcome(response, 303) + f" at {step}")
                return
        case_path = f"/cases/{match.group(1)}"
        for kind, name, content in (("identity", "身份证.png", PNG), ("contract", "合同.pdf", PDF)):
            response = await c.post(
                f"{case_path}/materials",
                {"kind": kind},
                files={"file": (name, content, "application/octet-stream")},
            )
            if response.status_code != 303:
                soak.record("filing", started, _outcome(response, 303) + f" at {kind}")
                return
        response = await c.post(f"{case_path}/submit", {})
        if response.status_code != 303 or response.headers.get("location") != case_path:
            where = response.headers.get("location", "")
            soak.record("filing", started, _outcome(response, 303) + f" at submit → {where}")
            return
    except Exception as exc:
        soak.record("filing", started, _exception(exc))
        return
    soak.record("filing", started, "ok")
    soak.filed.append(form_key)


async def view_page(c: Consumer, n: int, soak: Soak) -> None:
    path = ("/", "/cases", f"/cases/{c.case_id}")[n % 3]
    started = time.monotonic()
    try:
        response = await c.http.get(path)
    except Exception as exc:
        soak.record("view", started, _exception(exc))
        return
    soak.record("view", started, _outcome(response, 200))


async def upload_file(c: Consumer, n: int, soak: Soak) -> None:
    name = f"soak-{n:06d}-{secrets.token_hex(4)}.txt"
    content = (f"Jiefen soak upload {name}\n" * 80).encode()
    started = time.monotonic()
    try:
        response = await c.post(
            f"/cases/{c.case_id}/materials",
            {"kind": "evidence", "title": "soak upload"},
            files={"file": (name, content, "text/plain")},
        )
    except Exception as exc:
        soak.record("upload", started, _exception(exc))
        return
    outcome = _outcome(response, 303)
    soak.record("upload", started, outcome)
    if outcome == "ok":
        soak.uploaded.append(name)


async def healthz(client: Any, soak: Soak) -> None:
    started = time.monotonic()
    try:
        response = await client.get("/healthz")
    except Exception as exc:
        soak.record("healthz", started, _exception(exc))
        return
    soak.record("healthz", started, _outcome(response, 200))


class Room:
    """One live session's three participants, reconnected when their sockets drop."""

    def __init__(self, url: str, plan: Plan) -> None:
        self.url, self.plan = url, plan
        self.people: list[Participant] = []
        self.repaired_at = 0.0
        self.book: dict[str, Message] = {}  # every message sent: its arrivals at the others

    async def open(self) -> None:
        self.people = [
            Participant(r * 1000 + self.plan.index, self.plan, r, self.book) for r in range(3)
        ]
        await asyncio.wait_for(_enter(self.url, self.people, portal=True), 30)

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.people), return_exceptions=True)

    async def repair(self, soak: Soak) -> bool:
        if time.monotonic() - self.repaired_at < 10:
            return False
        self.repaired_at = time.monotonic()
        soak.reconnects += 1
        await self.close()
        try:
            await self.open()
        except Exception:
            soak.reconnect_failures += 1
            return False
        return True

    async def chat(self, n: int, soak: Soak) -> None:
        sender = self.people[n % 3] if self.people else None
        started = time.monotonic()
        if sender is None or not sender.client.connected:
            if not await self.repair(soak):
                soak.record("chat", started, "disconnected")
                return
            sender = self.people[n % 3]
        client_id = f"soak{self.plan.index}n{n}"
        payload = {
            "meeting_id": self.plan.meeting_id,
            "client_id": client_id,
            "text": f"第{n}条消息：我方愿意减免部分利息，请对方考虑。",
        }
        message = Message(sender.number, time.monotonic(), measured=True)
        self.book[client_id] = message
        try:
            ack = await sender.client.call(CHAT, payload, timeout=REQUEST_TIMEOUT)
        except Exception as exc:
            soak.record("chat", started, _exception(exc))
            return
        if isinstance(ack, dict) and ack.get("ok"):
            soak.record("chat", started, "ok")
            soak.chatted.append(client_id)
            soak.delivered[client_id] = message
        else:
            error = f"{ack.get('error')}: {ack.get('message')}" if isinstance(ack, dict) else ack
            soak.record("chat", started, f"refused {error}")


async def paced(
    name: str, rate: float, until: float, job: Any, soak: Soak, at_once: int = 16
) -> None:
    """``job(n)`` ``rate`` times a second until ``until`` (monotonic), as tasks, at most
    ``at_once`` in flight (a tick finding them all busy is counted as skipped)."""
    gate = asyncio.Semaphore(at_once)
    tasks: set[asyncio.Task[None]] = set()
    t0 = time.monotonic()
    n = 0
    while (at := t0 + n / rate) < until:
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if gate.locked():
            soak.skipped[name] += 1
        else:

            async def run(i: int = n) -> None:
                async with gate:
                    await job(i)

            task = asyncio.create_task(run())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT * 5)


def rss_mb(server: Server) -> float:
    total = 0
    for pid in _process_tree(server.process.pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def _outage(outage: Outage, stop: list[str] | None, seconds: float) -> None:
    """Stop a service, wait, start it again; runs in a thread."""
    outage.down = time.monotonic()
    try:
        if outage.service == "PostgreSQL":
            _pg_ctl("stop")
            time.sleep(seconds)
            _pg_ctl("start")
            ok = _wait(pg_ready, 60)
        else:
            assert stop is not None
            subprocess.run(stop, capture_output=True, timeout=30)
            time.sleep(seconds)
            subprocess.run(REDIS_START, check=True, capture_output=True, timeout=30)
            ok = _wait(redis_ready, 30)
        outage.failed = not ok
    except Exception as exc:
        print(f"  {outage.service} outage: {exc}", flush=True)
        outage.failed = True
    outage.up = time.monotonic()


async def outages(args: argparse.Namespace, t0: float, total: float, soak: Soak) -> None:
    if args.no_outages:
        return
    plan = [
        (1 / 3, "PostgreSQL", None),
        (2 / 3, "Redis", ["redis-cli", "-h", HOST, "-p", "6379", "shutdown", "nosave"]),
    ]
    for share, service, stop in plan:
        delay = t0 + total * share - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        outage = Outage(service)
        soak.outages.append(outage)
        print(f"  {datetime.now():%H:%M:%S} stopping {service}", flush=True)
        await asyncio.to_thread(_outage, outage, stop, args.outage_seconds)
        print(
            f"  {datetime.now():%H:%M:%S} {service} back after {outage.up - outage.down:.1f} s",
            flush=True,
        )


async def soak_run(
    args: argparse.Namespace,
    server: Server,
    plans: list[Plan],
    cases: dict[int, int],
    firms: list[int],
) -> Soak:
    import httpx

    soak = Soak()
    url = server.url
    rooms = [Room(url, plan) for plan in plans]
    gate = asyncio.Semaphore(10)

    async def open_room(room: Room) -> None:
        async with gate:
            await room.open()

    began = time.monotonic()
    await asyncio.gather(*(open_room(r) for r in rooms))
    print(
        f"  {len(rooms)} sessions joined ({3 * len(rooms)} sockets) in"
        f" {time.monotonic() - began:.0f} s",
        flush=True,
    )
    consumers = [Consumer(url, plan, cases[plan.meeting_id]) for plan in plans[: args.consumers]]
    bare = httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT)
    try:
        for c in consumers:
            await c.csrf()

        def pick(n: int) -> Consumer:
            return consumers[n % len(consumers)]

        async def chat_job(n: int) -> None:
            await rooms[n % len(rooms)].chat(n // len(rooms), soak)

        chat_rate = len(rooms) / args.chat_interval
        total = args.minutes * 60
        t0 = time.monotonic()
        until = t0 + total
        warm = min(30.0, total / 10)
        samples: list[float] = []

        async def memory() -> None:
            await asyncio.sleep(max(0.0, t0 + warm - time.monotonic()))
            soak.rss_start = rss_mb(server)
            soak.measure_from = time.monotonic()
            print(f"  warmed up: server RSS {soak.rss_start:.1f} MiB", flush=True)
            while time.monotonic() < until - 1:
                await asyncio.sleep(min(10.0, max(0.1, until - 1 - time.monotonic())))
                samples.append(rss_mb(server))

        await asyncio.gather(
            memory(),
            outages(args, t0, total, soak),
            paced(
                "filing",
                args.filing_rate,
                until,
                lambda n: file_case(pick(n), firms[n % len(firms)], soak),
                soak,
            ),
            paced("view", args.view_rate, until, lambda n: view_page(pick(n + 1), n, soak), soak),
            paced(
                "upload", args.upload_rate, until, lambda n: upload_file(pick(n + 2), n, soak), soak
            ),
            paced("chat", chat_rate, until, chat_job, soak, at_once=64),
            paced("healthz", args.healthz_rate, until, lambda n: healthz(bare, soak), soak),
        )
        soak.measure_to = time.monotonic()
        soak.rss_end = rss_mb(server)
        soak.server_exit = server.process.poll()
        await asyncio.sleep(3)  # chat deliveries still on their way
        soak.rss_max = max([soak.rss_end, soak.rss_start, *samples])
    finally:
        await bare.aclose()
        await asyncio.gather(*(c.http.aclose() for c in consumers), return_exceptions=True)
        await asyncio.gather(*(r.close() for r in rooms), return_exceptions=True)
    return soak


# -- data ----------------------------------------------------------------------------------------


async def seed_extras(url: str) -> tuple[dict[int, int], list[int]]:
    """Each session's case id, and the firms' ids. The seeded cases were numbered by bulk
    insert: the committee's counter is moved past them so that filings get fresh numbers."""
    from sqlalchemy import func, insert, select

    from portal.cases.models import Case, CaseCounter
    from portal.cases.service import today_in_china
    from portal.db import create_engine, utcnow
    from portal.meetings.models import Meeting
    from portal.orgs.models import Firm

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Meeting.id, Meeting.case_id))).all()
            firms = list(await conn.scalars(select(Firm.id).order_by(Firm.id)))
            counts = (
                await conn.execute(
                    select(Case.committee_id, func.count()).group_by(Case.committee_id)
                )
            ).all()
            year = today_in_china(utcnow()).year
            await conn.execute(
                insert(CaseCounter),
                [{"committee_id": c, "year": year, "last": n} for c, n in counts],
            )
            await conn.commit()
    finally:
        await engine.dispose()
    return {int(m): int(c) for m, c in rows}, [int(f) for f in firms]


@dataclass
class Check:
    name: str
    answered: int
    found: int

    @property
    def lost(self) -> int:
        return self.answered - self.found


async def check_data(url: str, soak: Soak) -> list[Check]:
    """Every success answered is in the database."""
    from sqlalchemy import select

    from portal.cases.models import Case, CaseMaterial
    from portal.db import create_engine
    from portal.meetings.models import MeetingMessage

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            keys = set(
                await conn.scalars(
                    select(Case.form_key).where(Case.form_key.like("soak%"), Case.status != "draft")
                )
            )
            names = set(
                await conn.scalars(
                    select(CaseMaterial.filename).where(CaseMaterial.filename.like("soak-%"))
                )
            )
            ids = set(
                await conn.scalars(
                    select(MeetingMessage.client_id).where(MeetingMessage.client_id.like("soak%"))
                )
            )
    finally:
        await engine.dispose()
    return [
        Check("filings (submitted cases)", len(soak.filed), len(set(soak.filed) & keys)),
        Check("uploads", len(soak.uploaded), len(set(soak.uploaded) & names)),
        Check("chat messages", len(soak.chatted), len(set(soak.chatted) & ids)),
    ]


# -- report -------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


HEADER = ["action", "ops", "ops/s", "p50 ms", "p99 ms", "max ms", "errors", "timeouts", "skipped"]


def rows(soak: Soak) -> list[list[str]]:
    seconds = max(1e-9, _span(soak))
    out = []
    for action in ACTIONS:
        events = [e for e in soak.events if e.action == action]
        ok = [e.seconds * 1000 for e in events if e.outcome == "ok"]
        timeouts = sum(e.outcome == "timeout" for e in events)
        errors = len(events) - len(ok) - timeouts
        out.append(
            [
                action + (" (reference)" if action == "healthz" else ""),
                f"{len(ok)}",
                f"{len(ok) / seconds:.2f}",
                f"{percentile(ok, 50):.1f}",
                f"{percentile(ok, 99):.1f}",
                f"{max(ok, default=float('nan')):.1f}",
                f"{errors}",
                f"{timeouts}",
                f"{soak.skipped[action]}",
            ]
        )
    return out


def _span(soak: Soak) -> float:
    if not soak.events:
        return 0.0
    return max(e.started + e.seconds for e in soak.events) - min(e.started for e in soak.events)


def text_table(header: list[str], table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in table)])


def markdown_table(header: list[str], table: list[list[str]]) -> str:
    out = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in table])


def outage_lines(soak: Soak) -> list[str]:
    out = []
    for outage in soak.outages:
        window = [e for e in soak.events if outage.down <= e.started <= outage.up]
        failures = Counter(f"{e.action}: {e.outcome}" for e in window if e.outcome != "ok")
        ok = Counter(e.action for e in window if e.outcome == "ok")
        slowest = max((e.seconds for e in window if e.outcome != "ok"), default=0.0)
        out.append(
            f"- {outage.service} away {outage.up - outage.down:.1f} s"
            + (" (did not come back in time!)" if outage.failed else "")
            + f"; {len(window)} operations started meanwhile, succeeded:"
            f" {', '.join(f'{a} {n}' for a, n in sorted(ok.items())) or 'none'};"
            f" failed: {', '.join(f'{k} ×{n}' for k, n in failures.most_common()) or 'none'};"
            f" slowest failure {slowest:.1f} s."
        )
        recovery = []
        for action in ACTIONS:
            after = [e for e in soak.events if e.action == action and e.started >= outage.up]
            first = next(
                (e for e in sorted(after, key=lambda e: e.started) if e.outcome == "ok"), None
            )
            failed_after = sum(
                1
                for e in after
                if e.outcome != "ok" and (first is None or e.started < first.started)
            )
            if first is None:
                recovery.append(f"{action} none")
            else:
                done = first.started + first.seconds - outage.up
                recovery.append(f"{action} {done:.1f} s ({failed_after} failed first)")
        out.append(f"  recovery (service back → first success done): {'; '.join(recovery)}.")
    return out


def delivery_lines(soak: Soak) -> list[str]:
    """Acknowledged chat messages: arrivals at the two other participants, over the run and
    for the messages sent while a service was away."""

    def line(label: str, messages: list[Message]) -> str:
        expected = 2 * len(messages)
        got = sum(len(set(m.receivers)) for m in messages)
        latencies = [x * 1000 for m in messages for x in m.latencies]
        return (
            f"chat deliveries {label}: {got} of {expected} received"
            f" ({expected - got} lost); delivery p50 {percentile(latencies, 50):.1f} ms,"
            f" p99 {percentile(latencies, 99):.1f} ms"
        )

    messages = list(soak.delivered.values())
    out = [line("(acknowledged messages, whole run)", messages)]
    for outage in soak.outages:
        during = [m for m in messages if outage.down <= m.sent <= outage.up]
        out.append(line(f"sent while {outage.service} was away", during))
    return out


def report(args: argparse.Namespace, soak: Soak, checks: list[Check], elapsed: float) -> str:
    growth = (soak.rss_end - soak.rss_start) / soak.rss_start * 100 if soak.rss_start else 0.0
    if soak.server_exit is not None:
        memory = (
            f"server RSS: {soak.rss_start:.1f} MiB after warm-up; THE SERVER EXITED during the"
            f" run (status {soak.server_exit}), max sampled {soak.rss_max:.1f} MiB ✗"
        )
    else:
        memory = (
            f"server RSS: {soak.rss_start:.1f} MiB after warm-up, {soak.rss_end:.1f} MiB at the"
            f" end (max sampled {soak.rss_max:.1f}); growth {growth:+.1f} %"
            f" (target ≤ {TARGET_GROWTH:.0f} %: {'✓' if growth <= TARGET_GROWTH else '✗'})"
        )
    lines = [
        f"Soak, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {args.minutes:g} min of load"
        f" ({_span(soak):.0f} s measured), {args.sessions} live sessions, {machine()}",
        "",
        text_table(HEADER, rows(soak)),
        "",
        memory,
        f"chat: {soak.reconnects} session reconnects ({soak.reconnect_failures} failed)",
        *delivery_lines(soak),
        "outages:",
        *outage_lines(soak),
        "errors by kind: "
        + (
            ", ".join(
                f"{k} ×{n}"
                for k, n in Counter(
                    f"{e.action}: {e.outcome}" for e in soak.events if e.outcome != "ok"
                ).most_common()
            )
            or "none"
        ),
        "data check (success answered → row found):",
        *(
            f"- {c.name}: {c.answered} answered, {c.found} found, lost {c.lost}"
            f" {'✓' if c.lost == 0 else '✗'}"
            for c in checks
        ),
        f"whole run: {elapsed / 60:.1f} min",
    ]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes of load (30)")
    parser.add_argument("--sessions", type=int, default=100, help="live sessions (100)")
    parser.add_argument("--consumers", type=int, default=20, help="claimants doing HTTP (20)")
    parser.add_argument("--chat-interval", type=float, default=5.0, help="s between a session's")
    parser.add_argument("--filing-rate", type=float, default=0.5, help="filings per second")
    parser.add_argument("--view-rate", type=float, default=3.0, help="page views per second")
    parser.add_argument("--upload-rate", type=float, default=1.0, help="uploads per second")
    parser.add_argument("--healthz-rate", type=float, default=2.0, help="/healthz per second")
    parser.add_argument("--outage-seconds", type=float, default=10.0)
    parser.add_argument("--no-outages", action="store_true", help="leave PostgreSQL/Redis up")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
        help="a database on the loopback server to connect to while creating the soak one",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60 or args.sessions < 1 or args.consumers < 1:
        parser.error("--minutes must be in (0, 1440], --sessions and --consumers ≥ 1")
    args.consumers = min(args.consumers, args.sessions)
    for name in ("chat_interval", "filing_rate", "view_rate", "upload_rate", "healthz_rate"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not args.redis_url.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("--redis-url must point at 127.0.0.1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from portal.cli import upgrade_database
    from portal.settings import Settings

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    if not pg_ready() or not redis_ready():
        raise SystemExit("PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) must be running")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="jiefen-bench-soak-"))
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, True)
        port = _free_port()
        url = fresh_database("postgresql", args.postgres_url, workdir, stack, "jiefen_bench_soak")
        stack.callback(ensure_services)
        prefix = f"soak{secrets.token_hex(4)}"
        settings = Settings(
            database_url=url,
            secret_key=secrets.token_urlsafe(32),
            data_key=secrets.token_urlsafe(32),
            var_dir=workdir,
            storage_dir=workdir / "storage",
            base_url=f"http://{HOST}:{port}",
            redis_url=args.redis_url,
            redis_prefix=prefix,
        )
        settings.ensure_dirs()
        upgrade_database(settings)
        seeded = run_async(seed(settings, args.sessions))
        cases, firms = run_async(seed_extras(url))
        print(f"  seeded {args.sessions} sessions in {seeded.seconds:.1f} s ({seeded.version})")
        env = _server_env(settings)
        env.update(REDIS_URL=args.redis_url, REDIS_PREFIX=prefix)
        jiefen = str(ROOT / ".venv" / "bin" / "jiefen")
        argv_ = [jiefen, "serve", "--host", HOST, "--port", str(port), "--workers", "1"]
        server = start_server("jiefen", argv_, env, workdir / "server.log", port)
        stack.callback(server.stop)
        soak = run_async(soak_run(args, server, seeded.plans, cases, firms))
        checks = run_async(check_data(url, soak))
        errors = server_errors(workdir / "server.log")
        if soak.server_exit is not None:  # the log goes with the temporary directory: show it
            tail = (workdir / "server.log").read_text(errors="replace").splitlines()[-40:]
            print("server log, last lines:\n" + "\n".join(tail))
        text = report(args, soak, checks, time.monotonic() - started)
        print()
        print(text)
        kinds = Counter(errors)
        print(f"server log: {len(errors)} errors" + (":" if errors else ""))
        for line, n in kinds.most_common(5):
            print(f"  ×{n} {line[:300]}")
        print()
        print(markdown_table(HEADER, rows(soak)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        ensure_services()
        print("\ninterrupted; server, database and temporary files removed", file=sys.stderr)
        sys.exit(130)
