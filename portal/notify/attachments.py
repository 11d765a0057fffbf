"""Email attachments made at send time, by builders that the features register.

A notification names what its email carries as a reference, ``"<kind>:<key>"`` (such as
``"meeting:12"``). When the delivery worker sends the email it asks the builder registered for
that kind to make the file from the current state of the object, in the recipient's language:
an email retried an hour later carries what is true then, not what was true when it was queued.

This module imports no feature. Each feature states its builders in one mapping (as
``portal.meetings.calendar.ATTACHMENTS``); ``portal.app`` hands them to :class:`Attachments`, as
it hands the features' rules to ``portal.policy.Policy``.
"""

from __future__ import annotations

import gettext
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from portal.accounts.models import User


@dataclass(frozen=True)
class Attachment:
    """A file for an email: its bytes, MIME type, file name and extra Content-Type parameters
    (``{"method": "REQUEST"}`` for an iCalendar invitation)."""

    content: bytes
    content_type: str
    filename: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]

    @property
    def subtype(self) -> str:
        return self.content_type.partition("/")[2]


@dataclass(frozen=True)
class AttachmentRequest:
    """What a builder is told: the key after ``kind:``, and to whom the email goes (the user,
    their address, their language), from whom (``sender``, the From address), where the portal
    is (``base_url``) and when (``now``)."""

    key: str
    user: User
    address: str
    translations: gettext.NullTranslations
    base_url: str
    sender: str
    now: datetime


# A builder reads what it needs through ``db`` (the worker's short transaction) and returns the
# file, or None when its object is gone (the email then goes without it).
AttachmentBuilder = Callable[[AsyncSession, AttachmentRequest], Awaitable[Attachment | None]]


class UnknownAttachment(LookupError):
    """No feature registered a builder for the reference's kind."""


def split_reference(reference: str) -> tuple[str, str]:
    kind, sep, key = reference.partition(":")
    if not sep or not kind or not key:
        raise UnknownAttachment(f"not an attachment reference: {reference!r}")
    return kind, key


class Attachments:
    """The registered builders, by kind."""

    def __init__(self, builders: Iterable[Mapping[str, AttachmentBuilder]] = ()) -> None:
        self._builders: dict[str, AttachmentBuilder] = {}
        for feature_builders in builders:
            for kind, builder in feature_builders.items():
                if kind in self._builders:
                    raise ValueError(f"two features build attachments of kind {kind!r}")
                self._builders[kind] = builder

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._builders)

    async def build(
        self,
        db: AsyncSession,
        reference: str,
        *,
        user: User,
        address: str,
        translations: gettext.NullTranslations,
        base_url: str,
        sender: str,
        now: datetime,
    ) -> Attachment | None:
        """Make the file for ``reference``; :class:`UnknownAttachment` for a kind nobody
        registered (a mistake that retrying cannot fix)."""
        kind, key = split_reference(reference)
        builder = self._builders.get(kind)
        if builder is None:
            raise UnknownAttachment(f"no attachment builder for {kind!r}")
        request = AttachmentRequest(key, user, address, translations, base_url, sender, now)
        return await builder(db, request)
