"""Catalogues are complete; money and dates are formatted for China."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from portal.i18n import Msg, format_datetime, format_money, load_catalogues

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "portal" / "locale" / "zh_CN" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)s")


def test_every_source_string_is_translated_to_chinese(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    CommandLineInterface().run(
        [
            "pybabel",
            "-q",
            "extract",
            "-F",
            str(ROOT / "babel.cfg"),
            "-k",
            "_l",
            "-k",
            "_",
            "--ignore-dirs",
            ".* __pycache__ var node_modules",
            "-o",
            str(pot),
            "--no-location",
            str(ROOT),
        ]
    )
    with pot.open("rb") as fh:
        source = {m.id for m in read_po(fh) if m.id}
    with PO.open("rb") as fh:
        catalogue = read_po(fh, locale="zh_CN")
    assert len(source) > 150
    missing = sorted(
        msgid for msgid in source if not (catalogue.get(msgid) and catalogue.get(msgid).string)
    )
    assert not missing, f"untranslated (run `make messages` and translate): {missing}"
    for message in catalogue:
        if not message.id:
            continue
        assert "fuzzy" not in message.flags, message.id
        assert sorted(PLACEHOLDER.findall(str(message.id))) == sorted(
            PLACEHOLDER.findall(str(message.string))
        ), message.id


def test_catalogues_load_and_translate() -> None:
    catalogues = load_catalogues()
    assert catalogues["zh_CN"].gettext("Log in") == "登录"
    assert catalogues["en"].gettext("Log in") == "Log in"
    message = Msg("Use at least {count} characters for your password.", {"count": 10})
    assert "10" in message.render(catalogues["zh_CN"])
    assert message.render(catalogues["en"]) == "Use at least 10 characters for your password."


def test_money_is_exact_cny() -> None:
    assert format_money(123450) == "¥1,234.50"
    assert format_money(123450, "en") == "¥1,234.50"
    assert format_money(5) == "¥0.05"
    assert format_money(0) == "¥0.00"
    assert format_money(-99) == "-¥0.99"
    assert format_money(1_000_000_000_000) == "¥10,000,000,000.00"
    assert format_money(None) == ""


def test_dates_shown_in_shanghai_time() -> None:
    moment = datetime(2026, 1, 31, 16, 30, tzinfo=UTC)
    assert format_datetime(moment, "zh_CN", "Asia/Shanghai") == "2026-02-01 00:30"
    assert format_datetime(moment, "en", "Asia/Shanghai") == "1 Feb 2026, 00:30"
