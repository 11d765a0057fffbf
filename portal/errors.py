"""Domain errors that services raise and views show in the user's language."""

from __future__ import annotations

from portal.i18n import Msg


class DomainError(Exception):
    """A refusal the user can act on. ``field`` ties it to a form field when there is one."""

    def __init__(self, message: Msg, field: str | None = None) -> None:
        super().__init__(message.msgid)
        self.message = message
        self.field = field


class NotFound(Exception):
    """The object does not exist (or, to this user, may as well not)."""
