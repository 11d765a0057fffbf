"""Live mediation sessions over Socket.IO: the events clients send, checked and handed to
``portal.meetings.service``, whose after-commit operations are then published.

Client → server (each acknowledged with ``{"ok": true, ...}`` or a :class:`Refusal`):

=====================  ==================================  ====================================
event                  payload                             acknowledgement
=====================  ==================================  ====================================
``meeting.join``       ``{meeting_id}``                    ``state``: your ``meeting.state``
``meeting.chat``       ``{meeting_id, client_id, text,     ``seq``, ``duplicate`` (a retry)
                       room?, material_id?}``
``meeting.sync``       ``{meeting_id, after_seq}``         ``messages``, ``upto``, ``more``
``meeting.typing``     ``{meeting_id}``
``meeting.signal``     ``{meeting_id, to, payload}``
``meeting.presence``   ``{meeting_id, audio, video,
                       quality}``
``meeting.ping``       ``{}``                              ``time``: the server's (Unix ms)
``meeting.admit``      ``{meeting_id, user_id}``           (mediator only, as the next four)
``meeting.turn_away``  ``{meeting_id, user_id}``
``meeting.remove``     ``{meeting_id, user_id}``
``meeting.move``       ``{meeting_id, room, user_id?,      ``moved``
                       side?}``
``meeting.lock``       ``{meeting_id, locked}``
``meeting.media``      ``{meeting_id, user_id, action}``   (mute_audio, mute_video, ask_unmute)
``meeting.end``        ``{meeting_id, outcome}``
``meeting.record``     ``{meeting_id, video?}``            ``recording_id`` (mediator only)
``meeting.record_stop`` ``{meeting_id, recording_id}``     (mediator only)
``meeting.consent``    ``{meeting_id, recording_id,
                       agree}``
=====================  ==================================  ====================================

Signaling addressed ``to`` 0 (``RECORDER_PEER``) goes to the recorder of the sender's room,
if a recording is being made there and the sender agreed to it (``realtime.recorder``).

Server → client: ``meeting.state``, ``meeting.peer_joined``, ``meeting.peer_left``,
``meeting.chat``, ``meeting.typing``, ``meeting.signal``, ``meeting.presence``, ``meeting.media``
(``realtime.events``).

Every refusal (malformed or oversize payload, a session one is not party to, a forged room or
target, a mediator's action from anyone else, a burst of messages) is acknowledged with a code
and a sentence in the user's language, and logged; nothing else happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import gettext
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from portal.accounts.models import User
from portal.accounts.service import identity_of
from portal.background import BackgroundLoop
from portal.db import session_scope, unavailable, utcnow
from portal.errors import DomainError, NotFound
from portal.evidence.policy import Item
from portal.i18n import Msg, _l
from portal.live import Op, committed, publish
from portal.meetings import recording, service
from portal.meetings.service import Refused
from portal.policy import Identity, NotPermitted, Policy
from realtime.events import (
    RECORDER_PEER,
    BadRequest,
    ChatRequest,
    ConsentRequest,
    EndRequest,
    JoinRequest,
    LockRequest,
    MediaControlRequest,
    MoveRequest,
    PingRequest,
    PresenceRequest,
    RecordRequest,
    Refusal,
    SeatRequest,
    SignalRequest,
    StopRecordingRequest,
    SyncRequest,
    TypingRequest,
    parse,
)
from realtime.server import EventHandler

if TYPE_CHECKING:
    from realtime.recorder import RecorderHost

log = logging.getLogger("jiefen.realtime.meetings")


class RateLimit:
    """At most ``count`` events per ``seconds`` for each key, in a sliding window.

    Per process: with several processes a participant's sockets are usually on one of them
    (one device, one socket), and the limit is there to stop bursts, not to count exactly.
    """

    def __init__(
        self, count: int, seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.count, self.seconds, self._clock = count, seconds, clock
        self._seen: dict[Hashable, deque[float]] = {}

    def wait(self, key: Hashable) -> float:
        """0 if one more event is allowed now (and count it); else seconds until it is."""
        now = self._clock()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.seconds:
            seen.popleft()
        if len(seen) >= self.count:
            return seen[0] + self.seconds - now
        seen.append(now)
        return 0.0

    def forget(self, key: Hashable) -> None:
        self._seen.pop(key, None)


@dataclass(frozen=True)
class Limits:
    chat: tuple[int, float] = (10, 5.0)
    typing: tuple[int, float] = (20, 5.0)
    # An ICE negotiation sends a burst of candidates.
    signal: tuple[int, float] = (200, 5.0)


Call = Callable[[str, Any], Awaitable[dict[str, Any]]]


class MeetingSockets:
    """The session events of the portal's Socket.IO namespace (a ``SocketFeature``)."""

    def __init__(
        self,
        *,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        policy: Policy,
        catalogues: Mapping[str, gettext.NullTranslations],
        default_locale: str,
        limits: Limits = Limits(),
    ) -> None:
        self._sessions = sessions  # made in the app's lifespan, so fetched when needed
        self._policy = policy
        self._catalogues = catalogues
        self._default_locale = default_locale
        self.configure(limits)
        # One chat message at a time per socket, so a sender's messages keep their order.
        self._locks: dict[str, asyncio.Lock] = {}
        # On SQLite, chat messages are stored by one writer, many per commit (see ChatWriter).
        self._writer_made = False
        self._chat_writer: ChatWriter | None = None
        self.sio: Any = None
        # This process's name in meeting_connections, and the loop that keeps it alive there
        # and removes the sockets of processes that died (started by the app's lifespan).
        self.process = uuid.uuid4().hex
        self.sweeper = ConnectionSweeper(self)
        # This process's recorder (set by the app, with the blob store it seals into).
        self.recorder: RecorderHost | None = None

    def bind(self, sio: Any) -> None:
        self.sio = sio

    def configure(self, limits: Limits) -> None:
        """Set the rate limits (a scripted test sends faster than people do)."""
        self._chat_limit = RateLimit(*limits.chat)
        self._typing_limit = RateLimit(*limits.typing)
        self._signal_limit = RateLimit(*limits.signal)

    def handlers(self) -> dict[str, EventHandler]:
        calls: dict[str, Call] = {
            "meeting.join": self.join,
            "meeting.chat": self.chat,
            "meeting.sync": self.sync,
            "meeting.typing": self.typing,
            "meeting.signal": self.signal,
            "meeting.presence": self.presence,
            "meeting.ping": self.ping,
            "meeting.media": self.media,
            "meeting.admit": self.admit,
            "meeting.turn_away": self.turn_away,
            "meeting.remove": self.remove,
            "meeting.move": self.move,
            "meeting.lock": self.lock,
            "meeting.end": self.end,
            "meeting.record": self.record,
            "meeting.record_stop": self.record_stop,
            "meeting.consent": self.consent,
        }
        return {event: self._guarded(event, call) for event, call in calls.items()}

    # -- plumbing ---------------------------------------------------------------------------

    def _guarded(self, event: str, call: Call) -> EventHandler:
        async def handler(sid: str, data: Any) -> dict[str, Any]:
            try:
                return await call(sid, data)
            except BadRequest as exc:
                return await self._refuse(
                    sid, event, "invalid", _l("The request is not valid."), str(exc)
                )
            except (NotFound, NotPermitted):
                return await self._refuse(
                    sid, event, "not_found", _l("There is no such session, or it is not yours.")
                )
            except Refused as exc:
                return await self._refuse(sid, event, exc.code, exc.message)
            except DomainError as exc:
                return await self._refuse(sid, event, "refused", exc.message)
            except Exception as exc:
                if unavailable(exc):  # the database is away (restart, failover): say so
                    return await self._refuse(
                        sid,
                        event,
                        "unavailable",
                        _l(
                            "The service is briefly unavailable and nothing was saved. Messages "
                            "are sent again by themselves; anything else, try again in a moment."
                        ),
                        type(exc).__name__,
                    )
                log.exception("%s from socket %s failed", event, sid)
                return await self._refuse(
                    sid, event, "error", _l("Something went wrong. Please try again.")
                )

        return handler

    async def _refuse(
        self, sid: str, event: str, code: str, message: Msg, detail: str = ""
    ) -> dict[str, Any]:
        session = await self._session(sid)
        log.warning(
            "refused %s from user %s (socket %s): %s %s",
            event,
            session.get("user_id"),
            sid,
            code,
            detail or message.msgid,
        )
        locale = session.get("locale") or self._default_locale
        catalogue = self._catalogues.get(locale) or gettext.NullTranslations()
        return Refusal(code, message.render(catalogue)).payload()

    async def _session(self, sid: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = await self.sio.get_session(sid)
        except KeyError:
            return {}
        return found

    async def _member(self, sid: str, meeting_id: int) -> int:
        """The user behind ``sid``, which must have joined ``meeting_id``."""
        session = await self._session(sid)
        if meeting_id not in session.get("meetings", ()):
            raise Refused("not_joined", _l("Join the session first."))
        user_id: int = session["user_id"]
        return user_id

    @contextlib.asynccontextmanager
    async def _db(self) -> AsyncIterator[tuple[AsyncSession, list[Op]]]:
        """A database session whose committed live operations are published afterwards."""
        ops: list[Op] = []
        async with session_scope(self._sessions()) as db:
            yield db, ops
        ops.extend(committed(db))
        await publish(self.sio, ops)

    async def _active_user(self, db: AsyncSession, user_id: int) -> User:
        user = await db.get(User, user_id)
        if user is None or not user.is_active:
            raise NotFound
        return user

    @staticmethod
    def _limited(limit: RateLimit, key: Hashable, message: Msg) -> None:
        wait = limit.wait(key)
        if wait:
            raise Refused("rate_limited", message)

    # -- joining and chat -------------------------------------------------------------------

    async def join(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(JoinRequest, data)
        session = await self._session(sid)
        environ = self.sio.get_environ(sid) or {}
        async with self._db() as (db, _):
            user = await self._active_user(db, session["user_id"])
            resource = await service.access(db, request.meeting_id)
            self._policy.require(identity_of(user), "join", resource)
            joined = await service.join_meeting(
                db,
                resource,
                user,
                sid,
                device=str(environ.get("HTTP_USER_AGENT", "")),
                process=self.process,
            )
            async with self.sio.session(sid) as saved:
                saved.setdefault("meetings", set()).add(request.meeting_id)
                saved["locale"] = user.locale
        return {"ok": True, "state": joined.state.payload()}

    def _may_view(self, who: Identity, item: Item) -> bool:
        return self._policy.permits(who, "view", item)

    @property
    def _writer(self) -> ChatWriter | None:
        """On SQLite, the process's chat writer; on PostgreSQL none: each message is its own
        transaction, and sessions' messages are stored in parallel (each locks only its
        session's row)."""
        if not self._writer_made:
            sessions = self._sessions()
            bind = sessions.kw.get("bind")
            if bind is not None and bind.dialect.name == "sqlite":
                self._chat_writer = ChatWriter(self._store_batch)
            self._writer_made = True
        return self._chat_writer

    async def _store_batch(self, posts: list[service.ChatPost]) -> list[service.Posted | Refused]:
        try:
            async with self._db() as (db, _):
                return await service.post_messages(db, posts, self._may_view, self._count_chat)
        except IntegrityError:
            # A retry stored meanwhile by another process: each on its own, as on PostgreSQL.
            answers: list[service.Posted | Refused] = []
            for post in posts:
                try:
                    async with self._db() as (db, _):
                        answers.append(await self._post_one(db, post))
                except Refused as refused:
                    answers.append(refused)
            return answers

    def _lock_for(self, sid: str) -> asyncio.Lock:
        return self._locks.setdefault(sid, asyncio.Lock())

    async def chat(self, sid: str, data: Any) -> dict[str, Any]:
        # Taken before anything else (before any await), in the order the messages came.
        async with self._lock_for(sid):
            request = parse(ChatRequest, data)
            user_id = await self._member(sid, request.meeting_id)
            post = service.ChatPost(
                request.meeting_id,
                user_id,
                request.client_id,
                request.text,
                request.room,
                request.material_id,
            )
            if self._writer is not None:
                posted = await self._writer.post(post)
            else:
                async with self._db() as (db, _):
                    posted = await self._post_one(db, post)
        return {"ok": True, "seq": posted.message.seq, "duplicate": posted.duplicate}

    def _count_chat(self, post: service.ChatPost) -> None:
        wait = self._chat_limit.wait((post.meeting_id, post.user_id))
        if wait:
            raise Refused(
                "rate_limited",
                _l(
                    "You are sending messages too quickly. "
                    "Wait {seconds} seconds, then send again.",
                    seconds=max(1, math.ceil(wait)),
                ),
            )

    async def _post_one(self, db: AsyncSession, post: service.ChatPost) -> service.Posted:
        return await service.post_message(
            db,
            post.meeting_id,
            post.user_id,
            client_id=post.client_id,
            text=post.text,
            room=post.room,
            material_id=post.material_id,
            may_view=self._may_view,
            admit=self._count_chat,
        )

    async def sync(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(SyncRequest, data)
        user_id = await self._member(sid, request.meeting_id)
        async with self._db() as (db, _):
            synced = await service.sync_messages(db, request.meeting_id, user_id, request.after_seq)
        return {
            "ok": True,
            "messages": [m.payload() for m in synced.messages],
            "upto": synced.upto,
            "more": synced.more,
        }

    async def typing(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(TypingRequest, data)
        user_id = await self._member(sid, request.meeting_id)
        self._limited(
            self._typing_limit, (request.meeting_id, user_id), _l("Too many requests. Slow down.")
        )
        async with self._db() as (db, ops):
            ops += await service.typing(db, request.meeting_id, user_id, sid)
        return {"ok": True}

    async def signal(self, sid: str, data: Any) -> dict[str, Any]:
        # In the order they came, as chat: a description relayed after its own ICE candidates
        # would leave the peer with candidates it cannot use yet.
        async with self._lock_for(sid):
            return await self._signal(sid, data)

    async def _signal(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(SignalRequest, data)
        user_id = await self._member(sid, request.meeting_id)
        self._limited(
            self._signal_limit, (request.meeting_id, user_id), _l("Too many requests. Slow down.")
        )
        if request.to == RECORDER_PEER:
            return await self._signal_recorder(request.meeting_id, user_id, request.payload)
        async with self._db() as (db, ops):
            ops += await service.relay_signal(
                db, request.meeting_id, user_id, request.to, request.payload
            )
        return {"ok": True}

    async def _signal_recorder(
        self, meeting_id: int, user_id: int, payload: dict[str, Any]
    ) -> dict[str, Any]:
        service.check_signal_payload(payload)
        async with self._db() as (db, _):
            found = await recording.check_signal(db, meeting_id, user_id)
        if self.recorder is None or not await self.recorder.signal(found.id, user_id, payload):
            # Made by another server process: its clients reconnect there (see docs/deploy.md).
            raise Refused("invalid_target", _l("That person is not in your room."))
        return {"ok": True}

    async def presence(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(PresenceRequest, data)
        user_id = await self._member(sid, request.meeting_id)
        self._limited(
            self._typing_limit, (request.meeting_id, user_id), _l("Too many requests. Slow down.")
        )
        async with self._db() as (db, ops):
            ops += await service.relay_presence(
                db,
                request.meeting_id,
                user_id,
                sid,
                audio=request.audio,
                video=request.video,
                quality=request.quality,
            )
        return {"ok": True}

    async def ping(self, sid: str, data: Any) -> dict[str, Any]:
        parse(PingRequest, data)
        return {"ok": True, "time": int(time.time() * 1000)}

    # -- the mediator's controls ------------------------------------------------------------

    async def _manage(
        self, sid: str, meeting_id: int, action: Callable[[AsyncSession, int], Awaitable[Any]]
    ) -> Any:
        """Check on the server, through the policy, that the socket's user runs the session."""
        user_id = await self._member(sid, meeting_id)
        async with self._db() as (db, _):
            user = await self._active_user(db, user_id)
            resource = await service.access(db, meeting_id)
            if not self._policy.permits(identity_of(user), "manage", resource):
                raise Refused("forbidden", _l("Only the mediator can do this."))
            done = await action(db, user_id)
        self._wake_recorder()  # who may be recorded may have changed
        return done

    async def admit(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(SeatRequest, data)
        await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: service.admit(db, request.meeting_id, actor, request.user_id),
        )
        return {"ok": True}

    async def turn_away(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(SeatRequest, data)
        await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: service.turn_away(db, request.meeting_id, actor, request.user_id),
        )
        return {"ok": True}

    async def remove(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(SeatRequest, data)
        await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: service.remove(db, request.meeting_id, actor, request.user_id),
        )
        return {"ok": True}

    async def move(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(MoveRequest, data)
        moved = await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: service.move(
                db,
                request.meeting_id,
                actor,
                request.room,
                user_id=request.user_id,
                side=request.side,
            ),
        )
        return {"ok": True, "moved": moved}

    async def media(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(MediaControlRequest, data)
        await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: service.request_media(
                db, request.meeting_id, actor, request.user_id, request.action
            ),
        )
        return {"ok": True}

    async def lock(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(LockRequest, data)
        await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: service.set_locked(db, request.meeting_id, actor, request.locked),
        )
        return {"ok": True}

    async def end(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(EndRequest, data)
        await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: service.end_meeting(db, request.meeting_id, actor, request.outcome),
        )
        return {"ok": True}

    # -- recording --------------------------------------------------------------------------

    def _wake_recorder(self) -> None:
        """Recorders (on this process and the others) act on the change at once."""
        if self.recorder is not None:
            self.recorder.nudge()

    async def record(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(RecordRequest, data)
        if self.recorder is None:
            raise Refused("busy", recording.busy_message(0))
        found = await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: recording.ask(
                db,
                request.meeting_id,
                actor,
                video=request.video,
                process=self.process,
                limit=self.recorder.limit if self.recorder else 0,
            ),
        )
        return {"ok": True, "recording_id": found.id, "status": found.status}

    async def record_stop(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(StopRecordingRequest, data)
        await self._manage(
            sid,
            request.meeting_id,
            lambda db, actor: recording.stop(db, request.meeting_id, actor, request.recording_id),
        )
        return {"ok": True}

    async def consent(self, sid: str, data: Any) -> dict[str, Any]:
        request = parse(ConsentRequest, data)
        user_id = await self._member(sid, request.meeting_id)
        self._limited(
            self._typing_limit, (request.meeting_id, user_id), _l("Too many requests. Slow down.")
        )
        async with self._db() as (db, _):
            found = await recording.answer(
                db, request.meeting_id, user_id, request.recording_id, request.agree
            )
        self._wake_recorder()
        return {"ok": True, "status": found.status}

    # -- going away -------------------------------------------------------------------------

    async def disconnected(self, sid: str) -> None:
        self._locks.pop(sid, None)
        session = await self._session(sid)
        if not session.get("meetings"):
            return  # a page's socket that never joined a session: nothing to do
        async with self._db() as (db, _):
            await service.drop_connection(db, sid)
        self._wake_recorder()


class ChatWriter:
    """Stores the chat messages of every session of this process through one writer, all the
    messages that queued while the last commit waited for the disk in the next transaction.

    SQLite has one writer at a time, and with ``synchronous=FULL`` each commit waits for the
    disk: one message per commit tops out near 140 messages a second on this machine, so
    that 300 sessions' messages arrived seconds late (bench/sessions.py). Queued here in the
    order they came (a sender's own order is kept by its socket's lock), they share commits.
    A message's refusal is its own; it does not hold up the others in its batch.
    """

    def __init__(
        self,
        store: Callable[[list[service.ChatPost]], Awaitable[list[service.Posted | Refused]]],
        limit: int = 100,
    ) -> None:
        self._store = store
        self.limit = limit
        self._queue: list[tuple[service.ChatPost, asyncio.Future[service.Posted]]] = []
        self._task: asyncio.Task[None] | None = None

    async def post(self, post: service.ChatPost) -> service.Posted:
        """The message as stored, once committed; raises :class:`Refused` if it was refused."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[service.Posted] = loop.create_future()
        self._queue.append((post, future))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.limit], self._queue[self.limit :]
            try:
                answers = await self._store([post for post, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():  # its sender went away (the handler was cancelled)
                    continue
                if isinstance(answer, Refused):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)


class ConnectionSweeper(BackgroundLoop):
    """Says every ``interval`` seconds that this process is alive, and drops the session
    connections of processes silent for ``stale`` (killed, crashed, or the previous run of this
    one): their people show as reconnecting instead of connected forever."""

    name = "jiefen-connection-sweeper"
    log = logging.getLogger("jiefen.realtime.sweeper")

    def __init__(
        self, sockets: MeetingSockets, interval: float = 10.0, stale: float = 45.0
    ) -> None:
        super().__init__(interval)
        self.sockets = sockets
        self.stale = timedelta(seconds=stale)

    async def run_once(self) -> bool:
        async with self.sockets._db() as (db, _):
            await service.process_alive(db, self.sockets.process, utcnow())
            dropped = await service.sweep_dead_connections(db, utcnow(), self.stale)
        if dropped:
            self.log.info("dropped %d sockets of server processes that stopped", dropped)
        return False
