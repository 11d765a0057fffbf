"""Typed real-time payloads: small dataclasses, serialised with ``payload()``."""

from __future__ import annotations

import functools
from dataclasses import MISSING, asdict, dataclass, fields
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

_R = TypeVar("_R")


@dataclass(frozen=True)
class Welcome:
    """Sent to a socket once it is authenticated."""

    user_id: int
    role: str
    display_name: str

    EVENT = "welcome"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


# -- live mediation sessions: what the server sends ------------------------------------------
# Rooms are named by the server; a client never names a socket room, only a session's room
# ("joint", "caucus_claimant", "caucus_respondent", "notes"), which the server checks.


@dataclass(frozen=True)
class SeatView:
    """A participant as someone else is allowed to see them."""

    user_id: int
    name: str
    side: str
    state: str
    room: str | None
    connected: bool
    # "mobile", "tablet" or "desktop": the kind of device of their latest connection ("" if none)
    device: str = ""
    # Has voice and video in their room (a mesh of at most six; the rest use the chat)
    media: bool = False


@dataclass(frozen=True)
class RecordingView:
    """A recording of a room that is being asked for or made, as one participant sees it.

    ``you``: "yes" or "no" (their latest answer), "asked" (they are in the room and have not
    answered: their client asks them), or "" (they are not in that room). ``waiting``: the
    names of the people in the room who have not agreed yet. While ``status`` is "recording",
    the clients of those who agreed connect to the recorder, peer ``RECORDER_PEER``.
    """

    id: int
    room: str
    status: str
    video: bool
    you: str
    agreed: int
    waiting: tuple[str, ...]
    started_at: str | None
    # The mediator is not in the room: nobody is recorded until they come back.
    paused: bool = False


# The recorder's user id in signaling (no real user has id 0).
RECORDER_PEER = 0


@dataclass(frozen=True)
class MeetingState:
    """Sent to each participant (to all of their sockets) whenever who is where changes.

    ``seats``: the mediator sees everyone (the waiting room included); anyone else sees only
    the people in their own room. ``mediator``: where the mediator is, as this participant may
    know it: "here", "joint", "caucus" (with the other side), or "away". ``version`` grows with
    every change: a client ignores a state older than one it has.
    """

    meeting_id: int
    version: int
    status: str
    mode: str
    locked: bool
    outcome: str | None
    you: SeatView
    seats: tuple[SeatView, ...]
    mediator: str
    # Recordings being asked for or made: of this participant's room (the mediator: all).
    recordings: tuple[RecordingView, ...] = ()

    EVENT = "meeting.state"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PeerJoined:
    """Someone entered ``room``: open a peer connection to them."""

    meeting_id: int
    room: str
    user_id: int
    name: str
    side: str

    EVENT = "meeting.peer_joined"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PeerLeft:
    """Someone left ``room`` (moved, removed, disconnected, ended): close the connection."""

    meeting_id: int
    room: str
    user_id: int
    reason: str

    EVENT = "meeting.peer_left"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChatMessage:
    """A stored chat message, to the members of its room (and in replays, to the entitled)."""

    meeting_id: int
    seq: int
    room: str
    sender_id: int
    sender_name: str
    side: str
    client_id: str
    text: str
    sent_at: str
    # An evidence item shown as a link: its id, title and page (None, "", "" if none).
    material_id: int | None = None
    material_title: str = ""
    material_url: str = ""

    EVENT = "meeting.chat"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Typing:
    meeting_id: int
    room: str
    user_id: int
    name: str

    EVENT = "meeting.typing"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Signal:
    """A WebRTC signaling message from a peer in the same room (an SDP description or an ICE
    candidate), relayed unchanged."""

    meeting_id: int
    from_user_id: int
    data: dict[str, Any]

    EVENT = "meeting.signal"

    def payload(self) -> dict[str, Any]:
        return {
            "meeting_id": self.meeting_id,
            "from_user_id": self.from_user_id,
            "payload": self.data,
        }


@dataclass(frozen=True)
class MediaRequest:
    """The mediator asks this participant to ``mute_audio``, ``mute_video`` (the client obeys
    at once) or ``ask_unmute`` (the client asks its user; nobody is unmuted remotely)."""

    meeting_id: int
    action: str
    by_name: str

    EVENT = "meeting.media"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Presence:
    """What a participant's client reports of itself to the others in its room: whether its
    microphone and camera are on, and the quality of its connections ("good", "fair", "poor",
    "unknown") from WebRTC statistics."""

    meeting_id: int
    room: str
    user_id: int
    audio: bool
    video: bool
    quality: str

    EVENT = "meeting.presence"

    def payload(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Refusal:
    """The acknowledgement of a refused request: a code for programs, a sentence for people."""

    error: str
    message: str

    def payload(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error, "message": self.message}


# -- live mediation sessions: what clients send ----------------------------------------------
# Each request is a JSON object with exactly these keys (optional ones may be left out); each
# is acknowledged with {"ok": true, ...} or a Refusal.


class BadRequest(ValueError):
    """The payload is not an object of the expected shape."""


def parse(cls: type[_R], data: Any) -> _R:
    """Build request ``cls`` from a client's payload; anything unexpected is a BadRequest."""
    if not isinstance(data, dict):
        raise BadRequest("not an object")
    hints, names = _shape(cls)  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise BadRequest(f"unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            if f.default is MISSING:
                raise BadRequest(f"{f.name} missing")
            continue
        value = data[f.name]
        if not _fits(value, hints[f.name]):
            raise BadRequest(f"{f.name} has the wrong type")
        values[f.name] = value
    return cls(**values)


@functools.cache
def _shape(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A request class's field types and names (worked out once per class)."""
    return get_type_hints(cls), frozenset(f.name for f in fields(cls))


def _fits(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return type(value) is int and -(2**53) <= value <= 2**53
    if hint is bool or hint is str:
        return type(value) is hint
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    raise TypeError(f"unsupported request field type {hint!r}")


@dataclass(frozen=True)
class JoinRequest:
    meeting_id: int


@dataclass(frozen=True)
class ChatRequest:
    meeting_id: int
    client_id: str
    text: str
    room: str | None = None  # default: the sender's room; the mediator may say "notes"
    material_id: int | None = None  # an evidence item of the case, shown as a link


@dataclass(frozen=True)
class SyncRequest:
    meeting_id: int
    after_seq: int = 0


@dataclass(frozen=True)
class TypingRequest:
    meeting_id: int


@dataclass(frozen=True)
class SignalRequest:
    meeting_id: int
    to: int  # the peer's user id
    payload: dict[str, Any]


@dataclass(frozen=True)
class PingRequest:
    """A connectivity check before joining: acknowledged at once with the server's time."""


@dataclass(frozen=True)
class PresenceRequest:
    meeting_id: int
    audio: bool
    video: bool
    quality: str


@dataclass(frozen=True)
class MediaControlRequest:
    """The mediator's ``mute_audio``, ``mute_video`` or ``ask_unmute`` for one participant."""

    meeting_id: int
    user_id: int
    action: str


@dataclass(frozen=True)
class SeatRequest:
    """admit, turn_away, remove: one participant, by user id."""

    meeting_id: int
    user_id: int


@dataclass(frozen=True)
class MoveRequest:
    """Move one participant (``user_id``) or a whole side ("claimant", "respondent", or "all"
    back to the joint room) to ``room``."""

    meeting_id: int
    room: str
    user_id: int | None = None
    side: str | None = None


@dataclass(frozen=True)
class RecordRequest:
    """The mediator asks everyone in their room to agree to record it (video too, if asked
    and the session is a video session)."""

    meeting_id: int
    video: bool = False


@dataclass(frozen=True)
class ConsentRequest:
    """A participant's answer to a recording of their room (false later: a withdrawal)."""

    meeting_id: int
    recording_id: int
    agree: bool


@dataclass(frozen=True)
class StopRecordingRequest:
    meeting_id: int
    recording_id: int


@dataclass(frozen=True)
class LockRequest:
    meeting_id: int
    locked: bool


@dataclass(frozen=True)
class EndRequest:
    meeting_id: int
    outcome: str
