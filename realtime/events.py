"""Typed real-time payloads: small dataclasses, serialised with ``payload()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Welcome:
    """Sent to a socket once it is authenticated."""

    user_id: int
    role: str
    display_name: str

    EVENT = "welcome"

    def payload(self) -> dict[str, Any]:
        return asdict(self)
