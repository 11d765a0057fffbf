"""The settlement agreement (调解协议书) as a PDF: A4, Chinese text, deterministic bytes.

Parties sign the SHA-256 of the exact bytes, so the same document must always give the same
PDF: the creation date comes from the document, the file ID is a hash of the content, and the
embedded font subset has a fixed tag. Other fpdf2, fontTools, zlib or font versions may lay out
or compress differently, so store the bytes that were signed; never re-render to check a hash.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

FONT_FILE = (
    Path(__file__).resolve().parents[2]
    / "static"
    / "vendor"
    / "noto-sans-sc-2.004"
    / "NotoSansSC_400Regular.ttf"
)
FONT = "NotoSansSC"

MARGIN = 20.0  # mm, left, right and top
BOTTOM = 22.0  # mm kept free above the page's bottom edge; the footer sits inside it
BODY_SIZE = 11.0  # pt
LEADING = 6.6  # mm between baselines of body text
SMALL_SIZE = 9.0
SMALL_LEADING = 5.0
TITLE_SIZE = 22.0
PARAGRAPH_GAP = 2.0
INDENT_EMS = 2  # first-line indent of a Chinese paragraph, in characters
QR_SIDE = 28.0  # mm, including the four-module quiet zone
GREY = (90, 90, 90)
LIGHT_GREY = (170, 170, 170)

_DIGITS = "零一二三四五六七八九"


@dataclass(frozen=True)
class Signature:
    """One party's electronic signature, as printed in the signature block."""

    party: str
    name: str
    signed_at: str
    method: str
    # A hand-drawn mark, as an SVG path of M/L commands in a 300 × 100 box (see drawn_strokes).
    drawn: str | None = None


@dataclass(frozen=True)
class AgreementDocument:
    """Everything printed in an agreement; rendering it twice gives the same bytes."""

    title: str
    case_number: str
    version: int
    parties: Sequence[tuple[str, str]]
    preamble: str
    clauses: Sequence[str]
    closing: str
    required_signers: Sequence[str]
    created_at: datetime
    signatures: Sequence[Signature] = ()
    receipt_id: str | None = None
    verify_url: str | None = None  # only printed (and encoded in the QR code) with a receipt_id
    footer: str = ""

    def __post_init__(self) -> None:
        if self.receipt_id is not None and not self.verify_url:
            raise ValueError("receipt_id needs verify_url (the QR code encodes it)")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        if self.version < 1:
            raise ValueError("version starts at 1")


def chinese_numeral(n: int) -> str:
    """1 -> 一, 10 -> 十, 21 -> 二十一 (1 to 99), for clause numbers."""
    if not 1 <= n <= 99:
        raise ValueError(f"clause number out of range: {n}")
    tens, ones = divmod(n, 10)
    head = "" if tens == 0 else ("十" if tens == 1 else _DIGITS[tens] + "十")
    return head + (_DIGITS[ones] if ones else "")


DRAWN_BOX = (300, 100)  # the units of a drawn signature's path
DRAWN_WIDTH = 45.0  # mm on the page
DRAWN_HEIGHT = DRAWN_WIDTH * DRAWN_BOX[1] / DRAWN_BOX[0]
_DRAWN_COMMAND = re.compile(r"([ML])(\d{1,3}) (\d{1,3})")
MAX_DRAWN_POINTS = 2000


def drawn_strokes(path: str) -> list[list[tuple[int, int]]]:
    """The strokes of a drawn signature ("M x y L x y … M x y …": whole units in the 300 ×
    100 box, one space between numbers and between commands); ValueError for anything else."""
    tokens = path.split(" ")
    if len(tokens) % 2 or not 2 <= len(tokens) <= 2 * MAX_DRAWN_POINTS:
        raise ValueError("not a drawn signature path")
    strokes: list[list[tuple[int, int]]] = []
    for head, tail in zip(tokens[::2], tokens[1::2], strict=True):
        found = _DRAWN_COMMAND.fullmatch(f"{head} {tail}")
        if found is None:
            raise ValueError("not a drawn signature path")
        kind, x, y = found.group(1), int(found.group(2)), int(found.group(3))
        if x > DRAWN_BOX[0] or y > DRAWN_BOX[1]:
            raise ValueError("a drawn signature's point lies outside its box")
        if kind == "M":
            strokes.append([(x, y)])
        elif not strokes:
            raise ValueError("a drawn signature's path must start with M")
        else:
            strokes[-1].append((x, y))
    return strokes


@functools.cache
def _font_codepoints() -> frozenset[int]:
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    with TTFont(FONT_FILE, lazy=True) as font:
        return frozenset(font.getBestCmap())


def unprintable(text: str) -> list[str]:
    """The characters of ``text`` the agreement's font has no glyph for (newlines aside)."""
    have = _font_codepoints()
    return sorted({ch for ch in text if ch != "\n" and ord(ch) not in have})


def render_agreement(doc: AgreementDocument) -> bytes:
    """The agreement as PDF bytes (CPU-bound, about half a second: run it in a worker thread)."""
    from portal.agreements.pdf_render import render  # fpdf2 is loaded on first use

    return render(doc)
