"""Session pages over HTTP: scheduling from the case, the session page, reschedule, cancel."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select

from portal.db import utcnow
from portal.meetings.models import Meeting
from tests.conftest import log_in, post_form
from tests.meetings.conftest import build_cast

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(moment: datetime) -> str:
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


async def test_the_mediator_schedules_a_session_from_the_case(
    app: Any, client: httpx.AsyncClient
) -> None:
    cast = await build_cast(app)
    await log_in(client, cast.mediator.login, cast.mediator.password)
    case_page = await client.get(f"/cases/{cast.case_id}")
    assert f'hx-get="/cases/{cast.case_id}/meetings"' in case_page.text
    block = await client.get(f"/cases/{cast.case_id}/meetings", headers={"HX-Request": "true"})
    assert block.status_code == 200 and "<html" not in block.text
    assert f'href="/meetings/{cast.meeting_id}"' in block.text
    page = await client.get(f"/cases/{cast.case_id}/meetings")
    assert 'name="starts_at"' in page.text and "李观察员" in page.text

    past = await post_form(
        client,
        f"/cases/{cast.case_id}/meetings",
        {"starts_at": local(utcnow() - timedelta(days=1)), "duration": "45", "mode": "voice"},
    )
    assert past.status_code == 400 and "请选择一个尚未过去的时间" in past.text
    when = (utcnow() + timedelta(days=3)).replace(second=0, microsecond=0)
    done = await post_form(
        client,
        f"/cases/{cast.case_id}/meetings",
        {
            "starts_at": local(when),
            "duration": "45",
            "mode": "voice",
            "observers": str(cast.observer.id),
        },
    )
    assert done.status_code == 303
    found = re.fullmatch(r"/meetings/(\d+)", done.headers["location"])
    assert found
    async with app.starlette.state.db() as db:
        meeting = await db.scalar(select(Meeting).where(Meeting.id == int(found.group(1))))
    assert meeting is not None
    assert (meeting.starts_at, meeting.duration_minutes, meeting.mode) == (when, 45, "voice")


async def test_the_session_page_and_its_strings(app: Any, client: httpx.AsyncClient) -> None:
    cast = await build_cast(app)
    await log_in(client, cast.claimant.login, cast.claimant.password)
    page = await client.get(f"/meetings/{cast.meeting_id}")
    assert page.status_code == 200
    assert f'data-meeting-id="{cast.meeting_id}"' in page.text
    assert 'data-manage="0"' in page.text and 'data-side="claimant"' in page.text
    assert "meeting-controls" not in page.text and "/reschedule" not in page.text
    assert 'type="module" src="/static/js/meeting.js"></script>' in page.text
    found = re.search(
        r'<script type="application/json" id="meeting-strings">(.*?)</script>', page.text
    )
    assert found
    strings = json.loads(found.group(1))
    assert strings["waiting"] == "您在等候室，调解员会请您进入。"
    assert strings["typing"] == "{name} 正在输入…"
    assert strings["rooms"]["caucus_claimant"] == "申请人单独谈话室"
    script = await client.get("/static/js/meeting.js")
    assert script.status_code == 200 and "meeting.join" in script.text


async def test_rescheduling_and_cancelling_on_the_page(app: Any, client: httpx.AsyncClient) -> None:
    cast = await build_cast(app)
    await log_in(client, cast.mediator.login, cast.mediator.password)
    page = await client.get(f"/meetings/{cast.meeting_id}")
    assert 'data-manage="1"' in page.text and "/reschedule" in page.text
    when = (utcnow() + timedelta(days=5)).replace(second=0, microsecond=0)
    moved = await post_form(
        client,
        f"/meetings/{cast.meeting_id}/reschedule",
        {"starts_at": local(when), "duration": "90", "mode": "text"},
    )
    assert moved.status_code == 303
    refused = await post_form(client, f"/meetings/{cast.meeting_id}/cancel", {"reason": ""})
    assert refused.status_code == 303
    assert "请填写理由。" in (await client.get(refused.headers["location"])).text
    done = await post_form(client, f"/meetings/{cast.meeting_id}/cancel", {"reason": "双方已和解"})
    assert done.status_code == 303
    async with app.starlette.state.db() as db:
        meeting = await db.get(Meeting, cast.meeting_id)
    assert meeting is not None
    assert (meeting.status, meeting.mode, meeting.starts_at) == ("cancelled", "text", when)
    assert meeting.cancel_reason == "双方已和解"
    after = await client.get(f"/meetings/{cast.meeting_id}")
    assert "双方已和解" in after.text and "/reschedule" not in after.text
