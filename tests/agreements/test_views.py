"""The agreement page over HTTP: the mediator's editor keeps what was typed and says what is
wrong in Chinese when terms are refused (nothing saved); a good save makes a version whose
clauses the parties read; the PDF served is the one whose hash the page shows."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx

from portal.agreements import service as agreements
from tests.agreements.test_service import build
from tests.conftest import log_in, post_form


async def test_editor_refuses_bad_terms_in_chinese_and_keeps_them(
    app: Any, client: httpx.AsyncClient
) -> None:
    w = await build(app)
    base = f"/cases/{w.case_id}/agreement"
    await log_in(client, w.mediator.login, w.mediator.password)
    page = await client.get(f"/cases/{w.case_id}")
    assert 'data-testid="agreement-link"' in page.text
    assert (await post_form(client, f"{base}/start")).status_code == 303
    bad = {
        "refund": "5000",
        "payment_amount_1": "3000",
        "payment_due_1": "2030-01-15",
        "other": "删除不良征信记录",
    }
    refused = await post_form(client, f"{base}/versions", bad)
    assert refused.status_code == 400
    assert "各期付款合计 3,000.00 元，但退款与补偿合计为 5,000.00 元" in refused.text
    assert 'value="3000"' in refused.text and "删除不良征信记录" in refused.text
    async with app.starlette.state.db() as db:
        found = await agreements.access(db, w.case_id)
        assert found.agreement is not None and found.agreement.current_version == 1
    good = {**bad, "payment_amount_1": "2000", "payment_amount_2": "3000"}
    good["payment_due_2"] = "2030-02-15"
    assert (await post_form(client, f"{base}/versions", good)).status_code == 303
    shown = await client.get(base)
    assert (
        "分二期支付" in shown.text and "第二期于2030年2月15日前支付人民币3,000.00元" in shown.text
    )
    assert "删除不良征信记录" in shown.text
    digest = re.search(r'data-testid="agreement-sha256">([0-9a-f]{64})<', shown.text)
    assert digest is not None
    pdf = await client.get(f"{base}/v2.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(pdf.content).hexdigest() == digest.group(1)
    # Not in effect: no signed copy to download.
    assert (await client.get(f"{base}/signed.pdf")).status_code == 404

    # The claimant reads it, comments; an empty comment is refused and changes nothing.
    await client.post("/accounts/logout", data={"csrf_token": ""})
    client.cookies.clear()
    await log_in(client, w.claimant.login, w.claimant.password)
    read = await client.get(base)
    assert read.status_code == 200 and "人民币5,000.00元" in read.text
    assert 'data-testid="agreement-editor"' not in read.text
    assert (
        await post_form(client, f"{base}/comments", {"version": "2", "body": " "})
    ).status_code == 400
    assert (
        await post_form(client, f"{base}/comments", {"version": "2", "body": "请写明到账账户"})
    ).status_code == 303
    assert "请写明到账账户" in (await client.get(base)).text
    # Not up for signature yet: asking for a code is refused, in Chinese.
    early = await post_form(client, f"{base}/code")
    assert early.status_code == 400 and "调解协议尚未提交签署" in early.text
