"""The agreement PDF: exact Chinese text, real glyphs, an embedded font subset, the same bytes
every time, the signature block and the receipt's QR code."""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from itertools import combinations

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
import segno
from fontTools.ttLib import TTFont
from PIL import Image, ImageChops, ImageStat
from pypdf import PdfReader

from portal.agreements.pdf import (
    AgreementDocument,
    Signature,
    chinese_numeral,
    drawn_strokes,
    render_agreement,
)
from tests.conftest import ARTIFACTS, ROOT

VERIFY_URL = (
    "https://jiefen.example.cn/evidence/receipts/EV-2026-00004567-8f3a2c91"
    "/verify?case=JF-2026-000123&version=2&digest=5d41402abc4b2a76b9719d911017c592"
)
CLAUSES = (
    "被申请人李四于2027年1月15日前向申请人张三支付货款人民币 12,345.67 元，付款方式为银行转账，"
    "收款账户以申请人书面指定的账户为准；逾期未付的，按照全国银行间同业拆借中心公布的一年期"
    "贷款市场报价利率（LPR）计付逾期利息。",
    "申请人张三于收到前款全部款项之日起三个工作日内，向被申请人返还其于2026年6月1日出具的"
    "收条原件，并配合办理相关手续。",
    "被申请人李四按以下期限分两期支付前款货款：\n（一）2027年1月15日前支付人民币 6,000.00 元；"
    "\n（二）2027年2月15日前支付人民币 6,345.67 元。",
    "被申请人李四自愿承担本案鉴定费人民币 3,600.00 元，已于2026年11月28日预交，申请人无需返还。",
    "双方确认，除本协议约定的事项外，双方就本案买卖合同纠纷再无其他争议，任何一方不得再就同一"
    "事实向人民法院提起诉讼或者申请仲裁。",
    "双方同意，可以自本协议生效之日起三十日内共同向有管辖权的人民法院申请司法确认；经司法确认"
    "的，一方拒绝履行或者未全部履行的，对方可以向人民法院申请强制执行。",
    "本协议经双方当事人签名、调解员签名后生效，一式三份，双方当事人各执一份，人民调解委员会"
    "留存一份，每份具有同等法律效力。",
    "证人刘䶮（身份证号 440***********5678）到场见证调解过程，对本协议内容无异议。",
)
SIGNATURES = (
    Signature("申请人", "张三", "2026-12-03 16:40 (UTC+8)", "密码＋短信验证码＋输入姓名"),
    Signature("被申请人", "李四", "2026-12-03 17:02 (UTC+8)", "密码＋短信验证码＋输入姓名"),
)


def unsigned_document() -> AgreementDocument:
    """A realistic agreement, as sent out for signing."""
    return AgreementDocument(
        title="调解协议书",
        case_number="JF-2026-000123",
        version=2,
        parties=(
            (
                "申请人",
                "张三，男，1985年3月2日出生，汉族，身份证号 110***********1234，"
                "住北京市朝阳区建国路88号，联系电话 138****0000。",
            ),
            (
                "被申请人",
                "李四，女，1990年7月18日出生，汉族，身份证号 320***********4321，"
                "住江苏省南京市鼓楼区中山路100号。",
            ),
            ("调解员", "王五，北京市朝阳区人民调解委员会调解员"),
        ),
        preamble=(
            "申请人张三与被申请人李四因买卖合同纠纷，于2026年11月20日向解纷在线调解平台申请调解。"
            "经调解员主持调解，双方在平等自愿、互谅互让的基础上，就纠纷的解决自愿达成如下协议："
        ),
        clauses=CLAUSES,
        closing=(
            "双方当事人已认真阅读本协议全部条款，确认本协议是双方真实意思表示，内容不违反法律、"
            "行政法规的强制性规定，不损害国家利益、社会公共利益和他人合法权益。"
        ),
        required_signers=("申请人", "被申请人", "调解员"),
        created_at=datetime(2026, 12, 3, 8, 40, tzinfo=UTC),
        footer="解纷 · 在线调解平台",
    )


def signed_document() -> AgreementDocument:
    """The executed copy: two of three signatures and the evidence receipt."""
    return replace(
        unsigned_document(),
        signatures=SIGNATURES,
        receipt_id="EV-2026-00004567-8f3a2c91",
        verify_url=VERIFY_URL,
    )


def pdf_text(data: bytes) -> str:
    """All text extracted from a PDF, page after page."""
    reader = PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def squash(text: str) -> str:
    """Text without any whitespace: line breaks and spacing are layout, not content."""
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def unsigned_pdf() -> bytes:
    return render_agreement(unsigned_document())


@pytest.fixture(scope="module")
def signed_pdf() -> bytes:
    started = time.perf_counter()
    data = render_agreement(signed_document())
    elapsed = time.perf_counter() - started
    print(f"\nagreement PDF: {len(data) / 1024:.1f} KiB, rendered in {elapsed:.2f} s")
    return data


@pytest.fixture(scope="module")
def signed_pages(signed_pdf: bytes) -> Iterator[pdfium.PdfDocument]:
    document = pdfium.PdfDocument(signed_pdf)
    yield document
    document.close()


def test_text_extracts_exactly(unsigned_pdf: bytes) -> None:
    text = pdf_text(unsigned_pdf)
    flat = squash(text)
    doc = unsigned_document()
    for phrase in (
        "调解协议书",
        "案号：JF-2026-000123",
        "版本：第 2 版",
        "申请人：",
        "被申请人：",
        doc.parties[0][1],
        doc.parties[1][1],
        doc.preamble,
        doc.closing,
        "人民币 12,345.67 元",
        "人民币 3,600.00 元",
        "刘䶮",
        "第 1 页 / 共 2 页",
        "第 2 页 / 共 2 页",
        "解纷 · 在线调解平台",
    ):
        assert squash(phrase) in flat, phrase
    for number, clause in enumerate(CLAUSES, start=1):
        assert squash(f"{chinese_numeral(number)}、{clause}") in flat
    for label in doc.required_signers:
        assert squash(f"{label}（签名）__________  日期：______") in flat
    # The long clauses wrapped, and no line starts with closing punctuation (避头).
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert not [line for line in lines if squash(CLAUSES[0]) in squash(line)]
    assert not [line for line in lines if line[0] in "，。、；：？！）》”"]


def test_lines_stay_inside_the_margins(unsigned_pdf: bytes, signed_pdf: bytes) -> None:
    for data in (unsigned_pdf, signed_pdf):
        document = pdfium.PdfDocument(data)
        for page in document:
            width, _ = page.get_size()
            textpage = page.get_textpage()
            for i in range(textpage.count_chars()):
                if chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i)).isspace():
                    continue
                left, _, right, _ = textpage.get_charbox(i)
                margin = 20 / 25.4 * 72
                assert margin - 1 <= left and right <= width - margin + 1, (i, left, right)
        document.close()


def test_chinese_glyphs_render_not_boxes(signed_pages: pdfium.PdfDocument) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    scale = 2
    for n, page in enumerate(signed_pages, start=1):
        page.render(scale=scale).to_pil().save(ARTIFACTS / f"agreement-pdf-page{n}.png")

    page = signed_pages[0]
    image = page.render(scale=scale, grayscale=True).to_pil().convert("L")
    _, height = page.get_size()
    textpage = page.get_textpage()
    first: dict[str, int] = {}
    for i in range(textpage.count_chars()):
        first.setdefault(chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i)), i)
    wanted = "调解协议书张李䶮款"
    assert set(wanted) <= set(first)

    crops = []
    for ch in wanted:
        left, bottom, right, top = textpage.get_charbox(first[ch], loose=True)
        box = (left * scale, (height - top) * scale, right * scale, (height - bottom) * scale)
        crops.append(image.crop(tuple(round(v) for v in box)))
    w = min(c.width for c in crops)
    h = min(c.height for c in crops)
    crops = [c.crop((0, 0, w, h)) for c in crops]
    for ch, crop in zip(wanted, crops, strict=True):
        ink = sum(crop.histogram()[:128])
        assert ink > 0.03 * w * h, ch
    for (a, crop_a), (b, crop_b) in combinations(zip(wanted, crops, strict=True), 2):
        diff = ImageStat.Stat(ImageChops.difference(crop_a, crop_b)).mean[0]
        assert diff > 8, (a, b, diff)  # the same box drawn for every character would be ~0


def test_font_is_embedded_as_a_subset(signed_pdf: bytes) -> None:
    assert len(signed_pdf) < 200 * 1024
    reader = PdfReader(io.BytesIO(signed_pdf))
    fonts = {}
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            fonts[font["/BaseFont"]] = font
    assert len(fonts) == 1
    (name, font), *_ = fonts.items()
    assert re.fullmatch(r"/[A-Z]{6}\+NotoSansSC", name)
    descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
    program = descriptor["/FontFile2"].get_object().get_data()
    subset = TTFont(io.BytesIO(program))
    assert "glyf" in subset
    assert subset["maxp"].numGlyphs < 1000  # the full font has 30,898
    assert len(program) < 500 * 1024


def test_metadata(signed_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(signed_pdf))
    info = reader.metadata
    assert info is not None
    assert info.title == "调解协议书"
    assert info.subject == "调解协议书"
    assert info.creator == "Jiefen"
    assert info["/CreationDate"] == "D:20261203084000Z"
    assert reader.trailer["/Root"]["/Lang"] == "zh-CN"
    assert len(reader.pages) == 2
    assert reader.pages[0].mediabox.width == pytest.approx(595.28, abs=0.01)  # A4


def test_same_bytes_every_time(signed_pdf: bytes) -> None:
    assert render_agreement(signed_document()) == signed_pdf
    digest = hashlib.sha256(signed_pdf).hexdigest()
    script = (
        "import hashlib, pickle, sys\n"
        "from portal.agreements.pdf import render_agreement\n"
        "data = render_agreement(pickle.load(sys.stdin.buffer))\n"
        "sys.stdout.write(hashlib.sha256(data).hexdigest())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps(signed_document()),
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # another process, other hash seeds
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.decode() == digest

    # The instant counts, not the time zone it is written in.
    beijing = signed_document().created_at.astimezone(timezone(timedelta(hours=8)))
    assert render_agreement(replace(signed_document(), created_at=beijing)) == signed_pdf


def test_signed_copy_shows_signatures_and_receipt(signed_pdf: bytes) -> None:
    flat = squash(pdf_text(signed_pdf))
    for signature in SIGNATURES:
        assert squash(f"{signature.party}（签名）：{signature.name}") in flat
        assert squash(f"签署时间：{signature.signed_at}") in flat
        assert squash(f"签署方式：{signature.method}") in flat
    assert squash("调解员（签名）__________  日期：______") in flat
    assert "申请人（签名）__________" not in flat
    assert "存证回执编号：EV-2026-00004567-8f3a2c91" in flat
    assert VERIFY_URL in flat  # wrapped across lines, joined again
    assert "扫码或访问以上地址核验" in flat
    assert "以下无正文" in flat  # the signatures moved to page 2, alone
    assert squash("第 2 页 / 共 2 页") in flat


def test_qr_code_encodes_the_verify_url(signed_pages: pdfium.PdfDocument) -> None:
    page = signed_pages[len(signed_pages) - 1]
    _, height = page.get_size()
    boxes = []
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH]):
        fill, stroke = ctypes.c_int(), pdfium_c.FPDF_BOOL()
        pdfium_c.FPDFPath_GetDrawMode(obj.raw, ctypes.byref(fill), ctypes.byref(stroke))
        if fill.value != pdfium_c.FPDF_FILLMODE_NONE:
            boxes.append(obj.get_bounds())
    assert boxes, "no filled modules drawn"
    left = min(b[0] for b in boxes)
    bottom = min(b[1] for b in boxes)
    right = max(b[2] for b in boxes)
    top = max(b[3] for b in boxes)

    matrix = segno.make_qr(VERIFY_URL, error="m").matrix
    size = len(matrix)
    assert right - left == pytest.approx(top - bottom, abs=0.5)
    scale = 4
    image: Image.Image = page.render(scale=scale, grayscale=True).to_pil().convert("L")
    module = (right - left) / size
    assert module * scale >= 3
    wrong = []
    for row in range(size):
        for col in range(size):
            x = (left + (col + 0.5) * module) * scale
            y = (height - top + (row + 0.5) * module) * scale
            dark = image.getpixel((round(x), round(y))) < 128
            if dark != bool(matrix[row][col]):
                wrong.append((row, col))
    assert not wrong


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="verify_url"):
        replace(unsigned_document(), receipt_id="EV-1")
    with pytest.raises(ValueError, match="timezone"):
        replace(unsigned_document(), created_at=datetime(2026, 12, 3, 8, 40))
    with pytest.raises(ValueError, match="U\\+20BB7"):
        render_agreement(replace(unsigned_document(), closing="吉与𠮷不同。"))
    broken_name = replace(SIGNATURES[0], name="张\n三")
    with pytest.raises(ValueError, match="U\\+000A"):  # newlines only inside paragraphs
        render_agreement(replace(signed_document(), signatures=[broken_name]))


def test_chinese_numerals() -> None:
    assert [chinese_numeral(n) for n in (1, 9, 10, 11, 20, 21, 99)] == [
        "一",
        "九",
        "十",
        "十一",
        "二十",
        "二十一",
        "九十九",
    ]
    with pytest.raises(ValueError, match="out of range"):
        chinese_numeral(100)


def test_a_drawn_signature_is_drawn_and_checked() -> None:
    drawn = replace(SIGNATURES[0], drawn="M20 60 L80 30 L140 70 M200 50 L260 40")
    with_mark = replace(signed_document(), signatures=[drawn, SIGNATURES[1]])
    first = render_agreement(with_mark)
    assert first == render_agreement(with_mark)
    assert first != render_agreement(signed_document())
    assert drawn_strokes("M1 2 L3 4 M5 6") == [[(1, 2), (3, 4)], [(5, 6)]]
    for bad in ("", "L1 2", "M1 2 L3", "M400 2", "M1 2  L3 4", "M-1 2"):
        with pytest.raises(ValueError, match="signature"):
            drawn_strokes(bad)
