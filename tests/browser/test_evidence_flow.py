"""On a phone, the demo consumer adds evidence to a case, watches the upload's progress, opens
the file, its receipt and downloads both, then checks them offline with ``jiefen-verify``."""

from __future__ import annotations

import hashlib
import os
import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import BIN

VERIFY = BIN.parent / "jiefen-verify"
PHONE = {"width": 390, "height": 844}
NUMBER = re.compile(r"^[A-Z]+-\d{4}-\d{6}$")


def noisy_png(width: int, height: int) -> bytes:
    """A real PNG of random pixels: it does not compress, so it is about width*height*3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


def log_in(browser: Any, url: str, login: str) -> Any:
    page = browser.new_context(viewport=PHONE, accept_downloads=True).new_page()
    page.goto(url + "/accounts/login")
    page.fill("#f-login", login)
    page.fill("#f-password", "Jiefen-Demo-2026")
    page.click("button[type=submit].primary")
    page.wait_for_selector("[data-testid=welcome]")
    return page


def test_upload_preview_receipt_and_verify_offline(
    portal_url: str, browser: Any, shot: Any, tmp_path: Path
) -> None:
    page = log_in(browser, portal_url, "13800138000")
    page.goto(portal_url + "/cases")
    page.get_by_role("link", name=NUMBER).first.click()
    page.wait_for_selector("[data-testid=case-number]")
    number = page.inner_text("[data-testid=case-number]")
    case_url = page.url

    image = noisy_png(1100, 1000)  # about 3.3 MB
    assert len(image) > 3_000_000
    title = "还款记录截图（浏览器上传）"
    page.fill("#f-title", title)
    page.fill("#f-description", "2026年6月的还款记录")
    page.set_input_files(
        "[data-testid=evidence-file]",
        files=[{"name": "还款记录.png", "mimeType": "image/png", "buffer": image}],
    )
    # A slow phone connection (about 1.5 MB/s up), so the progress bar can be seen moving.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 20,
            "downloadThroughput": -1,
            "uploadThroughput": 1_500_000,
        },
    )
    progress = page.locator("[data-testid=upload-progress]")
    expect(progress).to_be_hidden()
    page.click("form.upload button[type=submit]")
    expect(progress).to_be_visible()
    page.wait_for_function(
        "() => { const bar = document.querySelector('[data-testid=upload-progress]');"
        " return bar !== null && bar.value > 0 && bar.value < 100; }"
    )
    expect(page.locator("form.upload button[type=submit]")).to_be_disabled()
    shot(page, "20-evidence-uploading-phone")
    page.wait_for_url(case_url, timeout=30_000)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    expect(page.locator("[data-testid=flash]")).to_have_text("文件已上传。")
    item = page.locator("[data-testid=evidence-list] li", has_text=title)
    expect(item).to_have_count(1)
    expect(item).to_contain_text("2026年6月的还款记录")
    shot(page, "21-evidence-listed-phone")

    # The preview: the image opens in a new tab, shown inline.
    link = item.locator("a").first
    href = link.get_attribute("href")
    assert href and re.fullmatch(r"/cases/\d+/materials/\d+", href)
    with page.context.expect_page() as opened:
        link.click()
    preview = opened.value
    preview.wait_for_load_state()
    assert preview.url == portal_url + href
    shown = preview.evaluate(
        "() => { const img = document.querySelector('img');"
        " return img ? [img.naturalWidth, img.naturalHeight] : null; }"
    )
    assert shown == [1100, 1000]
    preview.close()
    served = page.request.get(portal_url + href)
    assert served.status == 200
    assert served.headers["content-type"] == "image/png"
    assert served.headers["content-disposition"].startswith("inline;")
    assert served.body() == image

    # The receipt page.
    item.locator("[data-testid=receipt-link]").click()
    page.wait_for_selector("[data-testid=receipt]")
    expect(page.locator("[data-testid=file-sha]")).to_have_text(hashlib.sha256(image).hexdigest())
    expect(page.locator("[data-testid=receipt]")).to_contain_text(number)
    qr = page.locator("figure.qr img")
    expect(qr).to_be_visible()
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml")
    assert page.evaluate("() => document.querySelector('figure.qr img').naturalWidth") > 0
    shot(page, "22-evidence-receipt-phone")

    # Download the receipt and the file, as the consumer would keep them.
    with page.expect_download() as receipt_download:
        page.click("[data-testid=receipt-json]")
    receipt = receipt_download.value
    assert receipt.suggested_filename.startswith(f"receipt-{number}-")
    receipt_path = tmp_path / receipt.suggested_filename
    receipt.save_as(receipt_path)
    with page.expect_download() as file_download:
        page.evaluate(
            "url => { const a = document.createElement('a'); a.href = url;"
            " document.body.appendChild(a); a.click(); a.remove(); }",
            href + "?download=1",
        )
    evidence = file_download.value
    assert evidence.suggested_filename == "还款记录.png"
    file_path = tmp_path / evidence.suggested_filename
    evidence.save_as(file_path)
    assert file_path.read_bytes() == image

    # Offline, with the key the committee publishes.
    key = page.request.get(portal_url + "/evidence/key?format=text")
    assert key.status == 200
    vkey = key.text().strip()
    result = subprocess.run(
        [str(VERIFY), str(receipt_path), str(file_path), "--key", vkey],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "验证通过：该文件与调解委员会存证日志" in result.stdout
    assert number in result.stdout
    # Another file with this receipt: refused.
    other = tmp_path / "other.png"
    other.write_bytes(image[:-1] + bytes([image[-1] ^ 1]))
    result = subprocess.run(
        [str(VERIFY), str(receipt_path), str(other), "--key", vkey],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "文件与日志记录不符" in result.stdout
    page.context.close()


def test_the_receipt_page_fits_a_phone(portal_url: str, browser: Any) -> None:
    page = log_in(browser, portal_url, "13800138000")
    try:
        page.goto(portal_url + "/cases")
        page.get_by_role("link", name=NUMBER).first.click()
        page.locator("[data-testid=receipt-link]").first.click()
        page.wait_for_selector("[data-testid=receipt]")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width} px wide"
    finally:
        page.context.close()
