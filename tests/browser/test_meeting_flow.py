"""A live session in two real browsers: the mediator on a computer, the consumer on a phone.

Both use Chromium's fake camera and microphone. The mediator schedules the session, both check
their devices and join, the mediator admits the consumer, and each browser decodes the other's
video (asserted with ``getStats``). Moving the consumer into their private room closes the
connection; the mediator following them there opens a new one. Screenshots are kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from tests.browser.test_case_flow import DESKTOP, PHONE, log_in


class Browser:
    """One participant's page, with what its console said (for the failure messages)."""

    def __init__(self, name: str, page: Any) -> None:
        self.name, self.page = name, page
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))


def stats(page: Any) -> list[dict[str, Any]]:
    """Each of the page's peer connections: what it has received and decoded, its signaling
    and ICE states, and the trace of its negotiation."""
    found: list[dict[str, Any]] = page.evaluate(
        'async () => await document.getElementById("meeting").meetingStats()'
    )
    return found


def brief(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in s.items() if k != "trace"} for s in found]


def explain(browsers: list[Browser]) -> str:
    """What each page knows of its connections, and the end of its console."""
    parts = []
    for b in browsers:
        try:
            found = stats(b.page)
        except Exception as exc:  # the page itself may be what went wrong
            found = [{"error": repr(exc)}]
        parts.append(f"--- {b.name}: {json.dumps(brief(found))}")
        for s in found:
            parts.append(f"  the connection to {s.get('user_id')}:")
            parts += [f"    {line}" for line in s.get("trace", [])]
        parts.append(f"  console ({len(b.console)} lines, the last 40):")
        parts += [f"    {line}" for line in b.console[-40:]]
    return "\n".join(parts)


def wait_stats(
    page: Any,
    ready: Callable[[list[dict[str, Any]]], bool],
    browsers: list[Browser] | None = None,
    timeout: float = 45.0,
) -> list[dict[str, Any]]:
    """Poll the page's statistics until ``ready(stats)`` (getStats is asynchronous, which
    ``wait_for_function`` does not wait for)."""
    deadline = time.monotonic() + timeout
    while True:
        found = stats(page)
        if ready(found):
            return brief(found)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the media did not arrive: {brief(found)}\n{explain(browsers or [])}"
            )
        page.wait_for_timeout(500)


def wait_decoding(
    page: Any, browsers: list[Browser], peers: int = 1, frames: int = 15
) -> list[dict[str, Any]]:
    return wait_stats(
        page,
        lambda found: (
            len(found) == peers
            and all(
                s["state"] == "connected" and s["framesDecoded"] >= frames and s["audioBytes"] > 0
                for s in found
            )
        ),
        browsers,
    )


def wait_no_peers(page: Any, browsers: list[Browser]) -> None:
    wait_stats(page, lambda found: not found, browsers, timeout=15.0)


def test_two_browsers_see_each_other(portal_url: str, browser: Any, shot: Any) -> None:
    mediator = log_in(browser, portal_url, "mediator@jiefen.example", DESKTOP)
    both = [Browser("mediator", mediator)]

    mediator.goto(portal_url + "/cases/1/meetings")
    tomorrow = datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)
    mediator.fill("#f-starts_at", tomorrow.strftime("%Y-%m-%dT10:00"))
    mediator.select_option("#f-mode", "video")
    mediator.click("[data-testid=schedule]")

    # Before joining: the camera preview, the devices, and the round trip to the server.
    expect(mediator.locator("[data-testid=connectivity]")).to_contain_text("毫秒", timeout=15_000)
    expect(mediator.locator("#meeting-camera option")).not_to_have_count(0)
    mediator.wait_for_function(
        '() => document.getElementById("meeting-preview").videoWidth > 0', timeout=15_000
    )
    shot(mediator, "40-meeting-prejoin-desktop")
    mediator.click("[data-testid=join]")
    expect(mediator.locator("[data-testid=room-name]")).to_have_text("联合调解室")
    room_url = mediator.url

    consumer = log_in(browser, portal_url, "13800138000", PHONE)
    both.append(Browser("consumer", consumer))
    consumer.goto(room_url)
    expect(consumer.locator("[data-testid=join]")).to_be_enabled(timeout=15_000)
    consumer.click("[data-testid=join]")
    expect(consumer.locator("[data-testid=meeting-notice]")).to_contain_text("等候室")
    shot(consumer, "41-meeting-waiting-phone")

    mediator.click("[data-testid=waiting-list] button[data-action='meeting.admit']")
    expect(consumer.locator("[data-testid=room-name]")).to_have_text("联合调解室")

    # Each browser decodes the other's video and receives their audio.
    seen_by_mediator = wait_decoding(mediator, both)
    seen_by_consumer = wait_decoding(consumer, both)
    print("mediator receives", json.dumps(seen_by_mediator))
    print("consumer receives", json.dumps(seen_by_consumer))
    # Capped for phones: nobody sends more than 360 lines.
    assert 0 < seen_by_mediator[0]["frameHeight"] <= 360
    assert 0 < seen_by_consumer[0]["frameHeight"] <= 360
    shot(mediator, "42-meeting-video-desktop")
    shot(consumer, "43-meeting-video-phone")

    # The mediator mutes the consumer: the consumer's microphone goes off and they are told.
    mediator.click("[data-testid=roster] button[data-media='mute_audio']")
    expect(consumer.locator("#meeting-media-notice")).to_contain_text("静音")
    expect(consumer.locator("[data-testid=mic-toggle]")).to_have_attribute("aria-pressed", "true")
    mediator.click("[data-testid=roster] button[data-media='ask_unmute']")
    consumer.click("#meeting-unmute")
    expect(consumer.locator("[data-testid=mic-toggle]")).to_have_attribute("aria-pressed", "false")

    # The consumer's side goes to its private room: the connection between them closes...
    mediator.click("button[data-move-side=claimant]")
    expect(consumer.locator("[data-testid=room-name]")).to_have_text("申请人单独谈话室")
    wait_no_peers(mediator, both)
    wait_no_peers(consumer, both)
    # ...and a new one opens when the mediator joins them there.
    mediator.click("button[data-move-self][data-room=caucus_claimant]")
    wait_decoding(mediator, both)
    wait_decoding(consumer, both)
    shot(consumer, "44-meeting-caucus-phone")
    mediator.context.close()
    consumer.context.close()
