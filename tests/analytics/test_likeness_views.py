"""Template complaints over HTTP: the case page's panel, the side-by-side view and the
administrators' clusters, for each role."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from portal.analytics import library
from portal.analytics.likeness import LikenessIndex
from portal.policy import Role
from tests.analytics.test_likeness import claimant, file, independent_texts, template_texts
from tests.conftest import log_in
from tests.factories import Person, make_case, make_committee, make_firm, make_user, verify_phone


@asynccontextmanager
async def browser(app: Any, person: Person | None) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        if person is not None:
            await log_in(client, person.login, person.password)
        yield client


PHONE = "13912345678"


async def world(app: Any) -> dict[str, Any]:
    """Committee A (cards) with a template campaign of four filings, one of them assigned to a
    mediator; committee B (insurance) with a campaign of two; independent filings besides."""
    committee_a = await make_committee(app, categories=["credit_card"])
    committee_b = await make_committee(app, categories=["insurance"])
    firm = await make_firm(app)
    people = {
        "consumer": await claimant(app),
        "firm_rep": await make_user(app, Role.FIRM_REP, firm=firm),
        "mediator": await make_user(app, Role.MEDIATOR, committee=committee_a),
        "committee_admin": await make_user(app, Role.COMMITTEE_ADMIN, committee=committee_a),
        "admin_b": await make_user(app, Role.COMMITTEE_ADMIN, committee=committee_b),
        "platform_admin": await make_user(app, Role.PLATFORM_ADMIN),
    }
    cards = template_texts(4, seed=31)
    target = await make_case(
        app,
        people["consumer"],
        firm,
        status="assigned",
        mediator_id=people["mediator"].id,
        facts=cards[0],
    )
    # One of them with its claimant's phone number in the facts.
    phoned = await make_user(app, Role.CONSUMER, phone=PHONE)
    await verify_phone(app, phoned)
    alike = [await file(app, phoned, cards[1] + f"我的手机号是{PHONE}。", firm=firm)]
    alike += [await file(app, await claimant(app), t, firm=firm) for t in cards[2:]]
    insured = [
        await file(app, await claimant(app), t, category="insurance")
        for t in template_texts(2, seed=32, topic="insurance", number=1)
    ]
    unrelated = [await file(app, await claimant(app), t) for t in independent_texts(3, seed=33)]
    # The process's index, as the app's lifespan makes it: built, then everything compared
    # (the filings above were made without one, as the command line makes them).
    index = LikenessIndex(app.starlette.state.db)
    app.starlette.state.likeness = index
    await index.rebuild()
    while await index.run_once():
        pass
    return {
        "people": people,
        "target": target,
        "alike": alike,
        "insured": insured,
        "unrelated": unrelated,
        "committee_b": committee_b,
    }


def ids_in(html: str) -> set[str]:
    return set(re.findall(r'data-testid="([^"]+)"', html))


def plain(html: str) -> str:
    """The page without the marks around copied passages."""
    return html.replace("<mark>", "").replace("</mark>", "")


def value(html: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}">([^<]*)<', html)
    assert found, testid
    return found.group(1)


STAFF = ("mediator", "committee_admin", "platform_admin")
PARTIES = ("consumer", "firm_rep")


async def test_staff_see_the_panel_and_the_side_by_side_view_parties_do_not(app: Any) -> None:
    w = await world(app)
    target = w["target"]
    for who in STAFF:
        async with browser(app, w["people"][who]) as client:
            page = await client.get(f"/cases/{target.id}")
            assert page.status_code == 200
            assert {"likeness-panel", "likeness-summary", "likeness-link"} <= ids_in(page.text)
            assert f"/cases/{target.id}/likeness" in page.text
            compare = await client.get(f"/cases/{target.id}/likeness")
            assert compare.status_code == 200, who
            ids = ids_in(compare.text)
            assert {f"likeness-near-{c.id}" for c in w["alike"]} <= ids, who
            assert not {f"likeness-near-{c.id}" for c in w["unrelated"]} & ids
            assert value(compare.text, "likeness-filings") == "3"
            assert value(compare.text, "likeness-claimants") == "3"
            assert "<mark>" in compare.text
            # Each near filing's facts beside this one's.
            assert w["alike"][0].facts[:30] in plain(compare.text)
            assert target.facts[:30] in plain(compare.text)
    for who in PARTIES:
        async with browser(app, w["people"][who]) as client:
            page = await client.get(f"/cases/{target.id}")
            assert page.status_code == 200
            assert not {"likeness-panel", "likeness-link"} & ids_in(page.text)
            assert (await client.get(f"/cases/{target.id}/likeness")).status_code == 404
    async with browser(app, w["people"]["admin_b"]) as client:
        assert (await client.get(f"/cases/{target.id}/likeness")).status_code == 404
        insured = w["insured"][0]
        mine = await client.get(f"/cases/{insured.id}/likeness")
        assert value(mine.text, "likeness-filings") == "1"
    async with browser(app, None) as client:
        anonymous = await client.get(f"/cases/{target.id}/likeness")
        assert anonymous.status_code == 303 and "/accounts/login" in anonymous.headers["location"]
    async with browser(app, w["people"]["committee_admin"]) as client:
        assert (await client.get("/cases/999999/likeness")).status_code == 404


async def test_a_mediator_sees_other_filings_anonymised_and_without_a_link(app: Any) -> None:
    """The mediator of the target case may not open the other filings: their facts are shown
    as the case library shows them (the template's wording, not the claimant's phone)."""
    w = await world(app)
    other = w["alike"][0]
    async with browser(app, w["people"]["mediator"]) as client:
        compare = await client.get(f"/cases/{w['target'].id}/likeness")
    text = plain(compare.text)
    assert f"likeness-near-{other.id}" in ids_in(compare.text)
    assert PHONE not in text and "【手机号】" in text
    assert library.anonymise(other.facts)[:30] in text
    assert "<mark>" in compare.text  # the copied passages are still marked
    assert f'href="/cases/{other.id}"' not in compare.text
    async with browser(app, w["people"]["committee_admin"]) as client:
        compare = await client.get(f"/cases/{w['target'].id}/likeness")
    assert f'href="/cases/{other.id}"' in compare.text
    assert PHONE in plain(compare.text)  # an administrator may open the case anyway


async def test_clusters_by_scope(app: Any) -> None:
    w = await world(app)
    campaign = {w["target"].id, *(c.id for c in w["alike"])}
    insured = {c.id for c in w["insured"]}

    def clusters(html: str) -> list[set[int]]:
        return [
            {int(i) for i in re.findall(r'href="/cases/(\d+)"', block)}
            for block in html.split('data-testid="likeness-cluster"')[1:]
        ]

    async with browser(app, w["people"]["committee_admin"]) as client:
        page = await client.get("/admin/likeness?min=2")
        assert page.status_code == 200
        assert clusters(page.text) == [campaign]
    async with browser(app, w["people"]["admin_b"]) as client:
        assert clusters((await client.get("/admin/likeness?min=2")).text) == [insured]
        assert clusters((await client.get("/admin/likeness")).text) == []  # 3 or more
    async with browser(app, w["people"]["platform_admin"]) as client:
        assert clusters((await client.get("/admin/likeness?min=2")).text) == [campaign, insured]
        only_b = await client.get(f"/admin/likeness?min=2&committee={w['committee_b'].id}")
        assert clusters(only_b.text) == [insured]
    for who in ("consumer", "firm_rep", "mediator"):
        async with browser(app, w["people"][who]) as client:
            assert (await client.get("/admin/likeness")).status_code == 404
    async with browser(app, None) as client:
        assert (await client.get("/admin/likeness")).status_code == 303


async def test_bad_filters_answer_a_clear_error(app: Any) -> None:
    w = await world(app)
    async with browser(app, w["people"]["platform_admin"]) as client:
        for query in (
            "from=2026-13-01",
            "to=yesterday",
            "from=2026-06-02&to=2026-06-01",
            "min=1",
            "min=abc",
            "min=5000",
            "committee=999999",
            "committee=x",
        ):
            page = await client.get(f"/admin/likeness?{query}")
            assert page.status_code == 400, query
            assert "likeness-errors" in ids_in(page.text), query
            assert "likeness-cluster" not in ids_in(page.text), query
        ok = await client.get("/admin/likeness?from=2020-01-01&to=2020-01-31&min=2")
        assert ok.status_code == 200 and "likeness-no-clusters" in ids_in(ok.text)
