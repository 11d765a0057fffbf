"""Laying out the agreement PDF with fpdf2 (see :mod:`portal.agreements.pdf`).

Apart from the document's data so that fpdf2 (about 40 MB with what it imports) is loaded by
the first process that renders an agreement, not by every worker at start.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import UTC

import segno
from fpdf import FPDF
from fpdf.fonts import TTFFont

from portal.agreements.pdf import (
    BODY_SIZE,
    BOTTOM,
    DRAWN_BOX,
    DRAWN_HEIGHT,
    DRAWN_WIDTH,
    FONT,
    FONT_FILE,
    GREY,
    INDENT_EMS,
    LEADING,
    LIGHT_GREY,
    MARGIN,
    PARAGRAPH_GAP,
    QR_SIDE,
    SMALL_LEADING,
    SMALL_SIZE,
    TITLE_SIZE,
    AgreementDocument,
    Signature,
    chinese_numeral,
    drawn_strokes,
)

# Line-breaking rules (避头尾): these never start a line / never end one.
_NO_LINE_START = frozenset("，。、；：？！）》」』】〕〉’”…—～·％,.;:?!)]}%")
_NO_LINE_END = frozenset("（《「『【〔〈‘“([{")


def render(doc: AgreementDocument) -> bytes:
    """The agreement as PDF bytes (CPU-bound, about half a second: run it in a worker thread)."""
    pdf = _AgreementPDF(doc)
    probe: _AgreementPDF | None = None
    try:
        _Writer(pdf).check_coverage(*_all_text(doc))
        probe = copy.deepcopy(pdf)  # a first pass counts the pages for "共 y 页"
        _layout(probe, doc)
        pdf.total_pages = probe.pages_count
        _layout(pdf, doc)
        return bytes(pdf.output())
    finally:
        for used in (probe, pdf):
            _close_fonts(used)


def _close_fonts(pdf: FPDF | None) -> None:
    """fontTools reads the font lazily and keeps its file open: close it once done."""
    for font in pdf.fonts.values() if pdf is not None else ():
        ttfont = getattr(font, "ttfont", None)
        if ttfont is not None:
            ttfont.close()


def _layout(pdf: _AgreementPDF, doc: AgreementDocument) -> None:
    writer = _Writer(pdf)
    pdf.add_page()
    writer.heading(doc)
    writer.parties(doc.parties)
    writer.paragraph(doc.preamble, indent=True)
    for number, clause in enumerate(doc.clauses, start=1):
        writer.paragraph(f"{chinese_numeral(number)}、{clause}", indent=True)
    writer.paragraph(doc.closing, indent=True)
    writer.signatures(doc.required_signers, doc.signatures)
    if doc.receipt_id is not None and doc.verify_url:
        writer.receipt(doc.receipt_id, doc.verify_url)


class _AgreementPDF(FPDF):
    """FPDF set up for an agreement, with its footer on every page."""

    def __init__(self, doc: AgreementDocument) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.footer_text = doc.footer
        self.version_text = f"{doc.case_number} · 第 {doc.version} 版"
        self.total_pages = 0  # known on the second pass
        self.set_creation_date(doc.created_at.astimezone(UTC))
        self.set_title(doc.title)
        self.set_subject("调解协议书")
        self.set_creator("Jiefen")
        self.set_lang("zh-CN")
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(True, BOTTOM)
        self.c_margin = 0
        self.add_font(FONT, fname=FONT_FILE)
        self.set_font(FONT, size=BODY_SIZE)

    def footer(self) -> None:
        """Footer text, case number and version, and "第 x 页 / 共 y 页" on every page."""
        width = self.w - self.l_margin - self.r_margin
        y = self.h - 14
        self.set_draw_color(*LIGHT_GREY)
        self.set_line_width(0.2)
        self.line(self.l_margin, y - 1.5, self.w - self.r_margin, y - 1.5)
        self.set_font(FONT, size=SMALL_SIZE)
        self.set_text_color(*GREY)
        self.set_xy(self.l_margin, y)
        if self.footer_text:
            self.cell(w=width, h=SMALL_LEADING, text=self.footer_text, align="L")
        self.set_xy(self.l_margin, y)
        self.cell(w=width, h=SMALL_LEADING, text=self.version_text, align="C")
        self.set_xy(self.l_margin, y)
        pages = f"第 {self.page_no()} 页 / 共 {self.total_pages} 页"
        self.cell(w=width, h=SMALL_LEADING, text=pages, align="R")


def _all_text(doc: AgreementDocument) -> tuple[str, str]:
    """The text of the paragraphs (newlines allowed), and of the one-line fields."""
    paragraphs = [doc.preamble, doc.closing, *doc.clauses, *(text for _, text in doc.parties)]
    fields = [doc.title, doc.case_number, doc.footer, *doc.required_signers]
    fields += [label for label, _ in doc.parties]
    for signature in doc.signatures:
        fields += [signature.party, signature.name, signature.signed_at, signature.method]
    fields += [doc.receipt_id or "", doc.verify_url or ""]
    return "".join(paragraphs).replace("\n", ""), "".join(fields)


class _Writer:
    """Lays out text line by line on an FPDF, with CJK line breaking and justification."""

    def __init__(self, pdf: _AgreementPDF) -> None:
        self.pdf = pdf
        self._widths: dict[tuple[str, float], float] = {}

    @property
    def width(self) -> float:
        return self.pdf.w - self.pdf.l_margin - self.pdf.r_margin

    def check_coverage(self, *texts: str) -> None:
        """Refuse text the font cannot show: a box instead of a party's name is no agreement."""
        font = self.pdf.fonts[FONT.lower()]
        if not isinstance(font, TTFFont):
            raise TypeError(f"{FONT} is not a TrueType font")
        missing = sorted({ch for text in texts for ch in text if ord(ch) not in font.cmap})
        if missing:
            listed = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in missing)
            raise ValueError(f"the agreement font has no glyph for {listed}")

    # -- measuring and breaking ------------------------------------------------------------

    def measure(self, text: str) -> float:
        size = self.pdf.font_size_pt
        total = 0.0
        for ch in text:
            key = (ch, size)
            if key not in self._widths:
                self._widths[key] = self.pdf.get_string_width(ch)
            total += self._widths[key]
        return total

    def wrap(self, text: str, width: float, first_width: float | None = None) -> list[str]:
        """Break one paragraph (no newlines) into lines no wider than width."""
        lines: list[str] = []
        units = _units(text)
        line: list[str] = []
        used = 0.0
        limit = width if first_width is None else first_width
        i = 0
        while i < len(units):
            unit = units[i]
            i += 1
            if unit == " ":
                if line:
                    line.append(unit)
                    used += self.measure(unit)
                continue
            size = self.measure(unit)
            if used + size <= limit + 1e-6:
                line.append(unit)
                used += size
                continue
            if line:
                lines.append("".join(line).rstrip(" "))
                line, used, limit = [], 0.0, width
            if size <= limit + 1e-6:
                line, used = [unit], size
            elif len(unit) > 1:
                units[i:i] = list(unit)  # too long for any line (a URL, a hash): break anywhere
            else:
                line, used = [unit], size  # one glyph wider than the line: let it overflow
        if line:
            lines.append("".join(line).rstrip(" "))
        return lines or [""]

    # -- drawing ---------------------------------------------------------------------------

    def lines(
        self,
        lines: Sequence[str],
        x: float,
        width: float,
        leading: float,
        *,
        first_x: float | None = None,
        justify: bool = True,
    ) -> None:
        """Draw lines; all but the last are justified to width by spacing the characters."""
        pdf = self.pdf
        for n, text in enumerate(lines):
            left = first_x if n == 0 and first_x is not None else x
            avail = width - (left - x)
            spacing = 0.0
            if justify and n < len(lines) - 1 and len(text) > 1:
                spacing = (avail - self.measure(text)) / (len(text) - 1) * pdf.k
                if not 0 < spacing <= 0.25 * pdf.font_size_pt:
                    spacing = 0.0  # nothing to fill, or a gap too wide to spread nicely
            pdf.set_char_spacing(spacing)
            pdf.set_x(left)
            pdf.cell(w=avail, h=leading, text=text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_char_spacing(0)

    def paragraph(self, text: str, *, indent: bool = False, gap: float = PARAGRAPH_GAP) -> None:
        """A body paragraph; a newline starts a new indented line."""
        pdf = self.pdf
        x = pdf.l_margin
        first_x = x + (INDENT_EMS * self.measure("中") if indent else 0.0)
        for chunk in text.split("\n"):
            lines = self.wrap(chunk, self.width, self.width - (first_x - x))
            self.lines(lines, x, self.width, LEADING, first_x=first_x)
        pdf.ln(gap)

    def heading(self, doc: AgreementDocument) -> None:
        pdf = self.pdf
        pdf.set_font(FONT, size=TITLE_SIZE)
        for line in self.wrap(doc.title, self.width):
            pdf.cell(w=self.width, h=12, text=line, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(FONT, size=BODY_SIZE - 1)
        pdf.set_text_color(*GREY)
        meta = f"案号：{doc.case_number}　　版本：第 {doc.version} 版"
        pdf.cell(w=self.width, h=7, text=meta, align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)
        pdf.ln(2)
        pdf.set_draw_color(*LIGHT_GREY)
        pdf.set_line_width(0.3)
        pdf.line(pdf.l_margin, pdf.y, pdf.w - pdf.r_margin, pdf.y)
        pdf.set_draw_color(0)
        pdf.ln(5)
        pdf.set_font(FONT, size=BODY_SIZE)

    def parties(self, parties: Sequence[tuple[str, str]]) -> None:
        """One row per party: the label, then its text wrapped under itself."""
        if not parties:
            return
        pdf = self.pdf
        label_width = max(self.measure(f"{label}：") for label, _ in parties)
        label_width = max(label_width, self.measure("被申请人："))
        text_x = pdf.l_margin + label_width
        text_width = self.width - label_width
        for label, text in parties:
            lines = [self.wrap(chunk, text_width) for chunk in text.split("\n")]
            flat = [line for chunk in lines for line in chunk]
            if pdf.will_page_break(LEADING * min(len(flat), 2)):
                pdf.add_page()
            pdf.cell(w=label_width, h=LEADING, text=f"{label}：")  # x moves to text_x
            for chunk in lines:
                self.lines(chunk, text_x, text_width, LEADING)
            pdf.ln(1.5)
        pdf.ln(PARAGRAPH_GAP + 1)

    def signatures(self, required: Sequence[str], signatures: Sequence[Signature]) -> None:
        """One line per required signer (signed or blank), then any other signatures."""
        pdf = self.pdf
        rows: list[tuple[str, Signature | None]] = []
        for label in required:
            signed = [s for s in signatures if s.party == label]
            rows += [(label, s) for s in signed] or [(label, None)]
        rows += [(s.party, s) for s in signatures if s.party not in required]
        if not rows:
            return
        height = 8.0 + sum(
            12.0
            if s is None
            else LEADING + SMALL_LEADING * 2 + 3.0 + (DRAWN_HEIGHT + 2 if s.drawn else 0)
            for _, s in rows
        )
        needed = min(height, pdf.h - MARGIN - BOTTOM - 1)
        if pdf.will_page_break(needed):
            # Signatures alone on the next page: close the text so nothing can be added.
            self.paragraph("（以下无正文）", indent=True, gap=0)
        if pdf.will_page_break(needed):
            pdf.add_page()
        else:
            pdf.ln(8)
        for label, signature in rows:
            if signature is None:
                text = f"{label}（签名）__________  日期：______"
                pdf.cell(w=self.width, h=12, text=text, new_x="LMARGIN", new_y="NEXT")
                continue
            line = f"{label}（签名）：{signature.name}"
            pdf.cell(w=self.width, h=LEADING, text=line, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font(FONT, size=SMALL_SIZE)
            pdf.set_text_color(*GREY)
            detail = f"签署时间：{signature.signed_at}　　签署方式：{signature.method}"
            indent = self.measure("中" * INDENT_EMS)
            lines = self.wrap(detail, self.width - indent)
            self.lines(lines, pdf.l_margin + indent, self.width - indent, SMALL_LEADING)
            pdf.set_text_color(0)
            pdf.set_font(FONT, size=BODY_SIZE)
            if signature.drawn:
                self.drawn(signature.drawn, pdf.l_margin + indent, pdf.get_y() + 1)
                pdf.set_y(pdf.get_y() + DRAWN_HEIGHT + 2)
            pdf.ln(3)

    def drawn(self, path: str, x: float, y: float) -> None:
        """A drawn signature, scaled from its 300 × 100 box into DRAWN_WIDTH × DRAWN_HEIGHT."""
        pdf = self.pdf
        scale = DRAWN_WIDTH / DRAWN_BOX[0]
        pdf.set_draw_color(20, 20, 90)
        pdf.set_line_width(0.35)
        for stroke in drawn_strokes(path):
            points = [(x + px * scale, y + py * scale) for px, py in stroke]
            if len(points) == 1:
                points.append((points[0][0] + 0.2, points[0][1]))
            pdf.polyline(points)
        pdf.set_draw_color(0)

    def receipt(self, receipt_id: str, verify_url: str) -> None:
        """A framed box: the QR code of verify_url, the receipt number and the address."""
        pdf = self.pdf
        pad = 3.0
        text_x = pdf.l_margin + pad + QR_SIDE + 4
        text_width = pdf.w - pdf.r_margin - pad - text_x
        pdf.set_font(FONT, size=BODY_SIZE)
        id_lines = self.wrap(f"存证回执编号：{receipt_id}", text_width)
        pdf.set_font(FONT, size=SMALL_SIZE)
        url_lines = self.wrap(verify_url, text_width)
        hint_lines = self.wrap("扫码或访问以上地址核验", text_width)
        text_height = LEADING * len(id_lines) + SMALL_LEADING * (len(url_lines) + len(hint_lines))
        height = max(QR_SIDE, text_height + 2) + 2 * pad

        pdf.ln(6)
        if pdf.will_page_break(height):
            pdf.add_page()
        top = pdf.y
        pdf.set_draw_color(*LIGHT_GREY)
        pdf.set_line_width(0.3)
        pdf.rect(pdf.l_margin, top, self.width, height)
        pdf.set_draw_color(0)
        _draw_qr(pdf, verify_url, pdf.l_margin + pad, top + pad, QR_SIDE)

        pdf.set_y(top + pad + 2)
        pdf.set_font(FONT, size=BODY_SIZE)
        self.lines(id_lines, text_x, text_width, LEADING, justify=False)
        pdf.set_font(FONT, size=SMALL_SIZE)
        pdf.set_text_color(*GREY)
        self.lines(url_lines, text_x, text_width, SMALL_LEADING, justify=False)
        self.lines(hint_lines, text_x, text_width, SMALL_LEADING, justify=False)
        pdf.set_text_color(0)
        pdf.set_font(FONT, size=BODY_SIZE)
        pdf.set_y(top + height)


def _units(text: str) -> list[str]:
    """Split text into unbreakable pieces: one CJK character, one Latin word or number, or " ".

    Punctuation that may not start a line sticks to the piece before it; an opening bracket
    sticks to the piece after it.
    """
    units: list[str] = []
    for ch in text:
        if ch == " ":
            units.append(ch)
            continue
        prev = units[-1] if units else " "
        if prev != " " and (
            (_is_word(ch) and _is_word(prev[-1]))
            or ch in _NO_LINE_START
            or prev[-1] in _NO_LINE_END
        ):
            units[-1] = prev + ch
        else:
            units.append(ch)
    return units


def _is_word(ch: str) -> bool:
    """Latin, Greek, Cyrillic letters, digits and ASCII punctuation: no break inside a run."""
    return ord(ch) < 0x2000 and not ch.isspace()


def _draw_qr(pdf: FPDF, text: str, x: float, y: float, side: float) -> None:
    """A QR code of text as filled rectangles, one per horizontal run of dark modules."""
    qr = segno.make_qr(text, error="m")
    border = 4
    matrix = qr.matrix
    count = len(matrix) + 2 * border
    module = side / count
    pdf.set_fill_color(0)
    for row, cells in enumerate(matrix):
        col = 0
        while col < len(cells):
            if not cells[col]:
                col += 1
                continue
            start = col
            while col < len(cells) and cells[col]:
                col += 1
            pdf.rect(
                x + (start + border) * module,
                y + (row + border) * module,
                (col - start) * module,
                module,
                style="F",
            )
