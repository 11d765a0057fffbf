"""Internationalisation: catalogues, translatable messages, locale-aware formatting.

Source strings are English; ``portal/locale/zh_CN/LC_MESSAGES/messages.po`` translates every one
of them (a test checks that no string is missing). Catalogues are compiled in memory at start-up,
so no binary ``.mo`` file is committed.
"""

from __future__ import annotations

import gettext as _gettext
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime as _babel_format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from portal.settings import SUPPORTED_LOCALES

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGE_NAMES = {"zh_CN": "中文", "en": "English"}
HTML_LANG = {"zh_CN": "zh-CN", "en": "en"}


@dataclass(frozen=True)
class Msg:
    """A message to translate later, in the reader's language (errors, flash messages)."""

    msgid: str
    params: dict[str, Any] = field(default_factory=dict)

    def render(self, translations: _gettext.NullTranslations) -> str:
        """Translate; a parameter given as {"msgid": ...} is itself translated first."""
        text = translations.gettext(self.msgid)
        if not self.params:
            return text
        lookup = translations.gettext  # (a plain name, so extraction does not see "msgid")
        params = {
            key: lookup(value["msgid"]) if isinstance(value, dict) and "msgid" in value else value
            for key, value in self.params.items()
        }
        return text.format(**params)


def _l(msgid: str, **params: Any) -> Msg:
    """Mark ``msgid`` for extraction and translate it when shown."""
    return Msg(msgid, params)


def load_catalogues(locale_dir: Path = LOCALE_DIR) -> dict[str, _gettext.NullTranslations]:
    catalogues: dict[str, _gettext.NullTranslations] = {}
    for locale in SUPPORTED_LOCALES:
        po_path = locale_dir / locale / "LC_MESSAGES" / "messages.po"
        if not po_path.exists():
            catalogues[locale] = _gettext.NullTranslations()
            continue
        with po_path.open("rb") as fh:
            catalog = read_po(fh, locale=locale)
        buf = BytesIO()
        write_mo(buf, catalog, use_fuzzy=False)
        buf.seek(0)
        catalogues[locale] = Translations(buf)
    return catalogues


def format_money(fen: int | None, locale: str = "zh_CN") -> str:
    """Integer fen as CNY: 123450 -> ¥1,234.50 (exact, no floating point)."""
    if fen is None:
        return ""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    # Both languages group by thousands with a comma (CLDR: zh_CN and en agree).
    return f"{sign}¥{yuan:,}.{cents:02d}"


@lru_cache(maxsize=16)
def _babel_locale(name: str) -> Locale:
    # Locale.parse scans the locale data directory; parse each name once per process.
    return Locale.parse(name)


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def format_datetime(value: datetime | None, locale: str, time_zone: str) -> str:
    if value is None:
        return ""
    pattern = "yyyy-MM-dd HH:mm" if locale == "zh_CN" else "d MMM yyyy, HH:mm"
    return str(
        _babel_format_datetime(
            value, pattern, tzinfo=_zone(time_zone), locale=_babel_locale(locale)
        )
    )


def negotiate_locale(*candidates: str | None, default: str) -> str:
    for candidate in candidates:
        if candidate:
            normalised = candidate.replace("-", "_")
            if normalised in SUPPORTED_LOCALES:
                return normalised
    return default
