"""The one-click mediation link a firm puts in its app or website (the CSRC plan's embedded
link): it opens the filing wizard with the firm as respondent, and the category if the firm
chose one. Signed with the portal's secret, so nobody can make a link that names another firm
as the one that sent the claimant."""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

from portal.crypto import derive_key
from portal.orgs.categories import CATEGORIES
from portal.settings import Settings


@dataclass(frozen=True)
class FirmLink:
    firm_id: int
    category: str = ""


def _serializer(settings: Settings) -> URLSafeSerializer:
    key = derive_key(settings.secret_key, "jiefen/firm-link").hex()
    return URLSafeSerializer(key, salt="firm-link")


def sign_link(settings: Settings, link: FirmLink) -> str:
    data: dict[str, object] = {"f": link.firm_id}
    if link.category:
        data["c"] = link.category
    return _serializer(settings).dumps(data)


def read_link(settings: Settings, token: str) -> FirmLink | None:
    """The link's firm and category, or None when the token is damaged or not ours."""
    if len(token) > 200:
        return None
    try:
        data = _serializer(settings).loads(token)
        firm_id, category = data["f"], data.get("c", "")
    except (BadSignature, KeyError, TypeError, ValueError, AttributeError):
        return None
    if not isinstance(firm_id, int) or not isinstance(category, str):
        return None
    if category and category not in CATEGORIES:
        category = ""
    return FirmLink(firm_id=firm_id, category=category)


def link_url(settings: Settings, link: FirmLink) -> str:
    return f"{settings.base_url}/m/{sign_link(settings, link)}"
