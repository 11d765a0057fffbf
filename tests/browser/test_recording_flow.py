"""Recording a session in two real browsers (fake microphones): the mediator asks, the
consumer is asked on their phone and agrees, everyone sees that the room is recorded and the
recorder among the room's members, the mediator stops, and plays the sealed recording from the
minutes page. Screenshots are kept."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from tests.browser.test_case_flow import DESKTOP, PHONE, log_in
from tests.browser.test_meeting_flow import wait_stats


def test_recording_with_consent_and_playback(portal_url: str, browser: Any, shot: Any) -> None:
    mediator = log_in(browser, portal_url, "mediator@jiefen.example", DESKTOP)
    mediator.goto(portal_url + "/cases/1/meetings")
    tomorrow = datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=2)
    mediator.fill("#f-starts_at", tomorrow.strftime("%Y-%m-%dT15:00"))
    mediator.select_option("#f-mode", "voice")
    mediator.click("[data-testid=schedule]")
    expect(mediator.locator("[data-testid=join]")).to_be_enabled(timeout=15_000)
    mediator.click("[data-testid=join]")
    expect(mediator.locator("[data-testid=room-name]")).to_have_text("联合调解室")
    room_url = mediator.url

    consumer = log_in(browser, portal_url, "13800138000", PHONE)
    consumer.goto(room_url)
    expect(consumer.locator("[data-testid=join]")).to_be_enabled(timeout=15_000)
    consumer.click("[data-testid=join]")
    mediator.click("[data-testid=waiting-list] button[data-action='meeting.admit']")
    expect(consumer.locator("[data-testid=room-name]")).to_have_text("联合调解室")

    # The mediator asks; the consumer is asked in their own client and nothing records yet.
    mediator.click("[data-testid=record]")
    expect(consumer.locator("[data-testid=consent-yes]")).to_be_visible()
    expect(mediator.locator("[data-testid=recording-text]")).to_contain_text("请求对本调解室录音")
    expect(mediator.locator("#meeting-recording-detail")).to_contain_text("张先生")
    shot(consumer, "50-recording-consent-phone")
    consumer.click("[data-testid=consent-yes]")

    # Recording: the indicator for both, the recorder among the room's members, and each
    # browser connected to the recorder (a second peer connection, besides the other person).
    for page in (mediator, consumer):
        expect(page.locator("[data-testid=recording]")).to_have_attribute(
            "data-status", "recording"
        )
        expect(page.locator("[data-testid=recording-text]")).to_contain_text("正在录音")
        expect(page.locator("[data-testid=recorder-member]")).to_be_visible()
        wait_stats(
            page,
            lambda found: any(s["user_id"] == 0 and s["state"] == "connected" for s in found),
        )
    expect(consumer.locator("[data-testid=consent-withdraw]")).to_be_visible()
    shot(consumer, "51-recording-indicator-phone")
    shot(mediator, "52-recording-indicator-desktop")
    mediator.wait_for_timeout(4000)
    mediator.click("[data-testid=record-stop]")
    expect(consumer.locator("[data-testid=recording]")).to_be_hidden()

    # Sealed: the minutes page lists the files; the mediator plays the room's mix.
    minutes_url = room_url.rstrip("/") + "/minutes"
    deadline = time.monotonic() + 60
    while True:
        mediator.goto(minutes_url)
        if mediator.locator("[data-testid=recording-file-mix]").count():
            break
        assert time.monotonic() < deadline, "the recording was not sealed"
        mediator.wait_for_timeout(1000)
    expect(mediator.locator("[data-testid=recordings]")).to_contain_text("已存证")
    expect(mediator.locator("[data-testid=recording-file-audio]")).to_have_count(2)
    played = mediator.evaluate(
        """async () => {
            const audio = document.querySelector("[data-testid=recording-audio-mix]");
            audio.muted = true;
            await audio.play();
            await new Promise((done) => setTimeout(done, 1500));
            return {duration: audio.duration, time: audio.currentTime, error: audio.error};
        }"""
    )
    assert played["error"] is None, played
    assert played["duration"] > 3 and played["time"] > 0.5, played
    shot(mediator, "53-recording-minutes-desktop")
    mediator.context.close()
    consumer.context.close()
