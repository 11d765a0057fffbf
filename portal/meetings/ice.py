"""The ICE servers a participant's browser uses for a session's media.

STUN servers are listed as configured. TURN servers get time-limited credentials in the form
coturn checks with ``use-auth-secret`` (the "TURN REST API" draft,
draft-uberti-behave-turn-rest-00 §2.2): the username is ``<expiry>:<user-id>`` (expiry in Unix
seconds) and the password is the base64 HMAC-SHA1 of that username with the secret shared with
coturn (``static-auth-secret``). Nothing is stored: coturn recomputes the password, and refuses
the username once the expiry has passed. Each participant gets their own username, so coturn's
logs say whose relay was used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from portal.settings import Settings


@dataclass(frozen=True)
class TurnCredential:
    username: str
    password: str
    expires: int  # Unix seconds


def turn_credential(secret: str, user_id: int, expires: int) -> TurnCredential:
    username = f"{expires}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires)


def ice_servers(settings: Settings, user_id: int, now: datetime) -> dict[str, Any]:
    """The ``RTCConfiguration.iceServers`` for one participant, and when TURN access ends."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    expires: int | None = None
    if settings.turn_urls and settings.turn_secret:
        expires = int(now.timestamp()) + settings.turn_ttl_seconds
        credential = turn_credential(settings.turn_secret, user_id, expires)
        servers.append(
            {
                "urls": list(settings.turn_urls),
                "username": credential.username,
                "credential": credential.password,
            }
        )
    return {"iceServers": servers, "expires": expires}


def recorder_ice_servers(settings: Settings, now: datetime) -> list[Any]:
    """The server-side recorder's ICE servers (aiortc's ``RTCIceServer``): the same STUN and
    TURN servers as browsers, with TURN credentials of its own (user 0), so that a recorder
    behind NAT is reachable through the relay like any participant."""
    from aiortc import RTCIceServer

    return [
        RTCIceServer(
            urls=server["urls"],
            username=server.get("username"),
            credential=server.get("credential"),
        )
        for server in ice_servers(settings, 0, now)["iceServers"]
    ]
