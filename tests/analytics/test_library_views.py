"""The case library's pages over HTTP, on both databases: the pages show outcomes, rounded
amounts and agreed terms and none of the seeded personal data; who may see what (parties get a
404, anonymous visitors the login page, the similar cases only with the case); bad input is
refused in the reader's language and nothing changes."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from portal.accounts.models import User
from portal.analytics.library_models import LibraryEntry
from tests.analytics.test_library import World, assert_clean, build, sync
from tests.conftest import log_in
from tests.factories import Person


async def _entry_ids(app: Any) -> dict[int, int]:
    async with app.starlette.state.db() as db:
        return {
            case_id: id_
            for id_, case_id in await db.execute(select(LibraryEntry.id, LibraryEntry.case_id))
        }


async def _as(client: httpx.AsyncClient, person: Person | None) -> None:
    client.cookies.clear()
    if person is not None:
        await log_in(client, person.login, person.password)


async def test_pages_show_outcomes_and_terms_and_no_personal_data(
    app: Any, client: httpx.AsyncClient
) -> None:
    w = await build(app)
    await sync(app)
    ids = await _entry_ids(app)
    await _as(client, w.mediator)

    listing = await client.get("/library")
    assert listing.status_code == 200
    assert listing.text.count('data-testid="library-entry"') == 3
    assert "3 条" in listing.text or "3 entries" in listing.text
    assert_clean(listing.text, "the library page")

    found = await client.get("/library", params={"q": "账单分期"})
    assert found.status_code == 200 and found.text.count('data-testid="library-entry"') == 2
    assert_clean(found.text, "search results")
    for name in ("张伟", "刘洋", "赵敏"):
        none = await client.get("/library", params={"q": name})
        assert none.status_code == 200
        assert 'data-testid="library-entry"' not in none.text

    settled = await client.get(f"/library/{ids[w.cases['settled']]}")
    assert settled.status_code == 200
    assert_clean(settled.text, "the settled case's entry")
    assert "¥12,000" in settled.text  # the amount claimed, rounded
    assert 'data-testid="entry-terms"' in settled.text
    assert "被申请人于2024年5月前电话（【手机号】）告知申请人处理结果" in settled.text
    for case in ("transferred", "withdrawn"):
        page = await client.get(f"/library/{ids[w.cases[case]]}")
        assert page.status_code == 200
        assert_clean(page.text, f"the {case} case's entry")

    similar = await client.get(f"/cases/{w.cases['open']}/similar")
    assert similar.status_code == 200
    assert similar.text.count('data-testid="similarity"') >= 2
    assert_clean(similar.text.replace(str(w.cases["open"]), ""), "the similar cases page")

    # An htmx update gets the results only.
    partial = await client.get("/library", params={"q": "理赔"}, headers={"HX-Request": "true"})
    assert partial.status_code == 200 and "<html" not in partial.text
    assert partial.text.count('data-testid="library-entry"') == 1


async def test_who_may_see_the_library(app: Any, client: httpx.AsyncClient) -> None:
    w: World = await build(app)
    await sync(app)
    entry = (await _entry_ids(app))[w.cases["settled"]]
    case = w.cases["open"]
    paths = ["/library", f"/library/{entry}", f"/cases/{case}/similar"]
    expected: list[tuple[Person | None, list[int]]] = [
        (w.claimant, [404, 404, 404]),  # a party, even of the case
        (w.rep, [404, 404, 404]),
        (w.mediator, [200, 200, 200]),  # the case's mediator
        (w.other_mediator, [200, 200, 404]),  # another committee's mediator: not the case
        (w.admin, [200, 200, 200]),
        (w.platform, [200, 200, 200]),
    ]
    for person, codes in expected:
        await _as(client, person)
        got = [(await client.get(path)).status_code for path in paths]
        assert got == codes, (person and person.user.display_name, got)
    await _as(client, w.admin)
    assert (await client.get("/library/999999")).status_code == 404
    assert (await client.get("/cases/999999/similar")).status_code == 404
    await _as(client, None)
    for path in paths:
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/accounts/login?next=")


async def test_bad_input_is_refused_and_changes_nothing(
    app: Any, client: httpx.AsyncClient
) -> None:
    w = await build(app)
    await sync(app)
    await _as(client, w.mediator)

    async def count() -> int:
        async with app.starlette.state.db() as db:
            return int(await db.scalar(select(func.count()).select_from(LibraryEntry)) or 0)

    before = await count()
    long = await client.get("/library", params={"q": "分" * 201})
    assert long.status_code == 400 and "最多200个字符。" in long.text
    assert 'data-testid="library-entry"' not in long.text
    # In English, the mediator's chosen language.
    async with app.starlette.state.db() as db:
        user = await db.get(User, w.mediator.id)
        assert user is not None
        user.locale = "en"
        await db.commit()
    for params, message in [
        ({"q": "分"}, "Enter at least two characters to search."),
        ({"category": "crypto"}, "There is no such category. Choose one from the list."),
        ({"outcome": "won"}, "There is no such outcome. Choose one from the list."),
        ({"page": "0"}, "Enter a page number from 1 to 50."),
        ({"page": "abc"}, "Enter a page number from 1 to 50."),
        ({"page": "51"}, "Enter a page number from 1 to 50."),
    ]:
        refused = await client.get("/library", params=params)
        assert refused.status_code == 400, params
        assert message in refused.text, params
        assert 'data-testid="library-entry"' not in refused.text
    # A page past the last is empty, not an error.
    empty = await client.get("/library", params={"page": "7"})
    assert empty.status_code == 200 and 'data-testid="library-entry"' not in empty.text
    assert await count() == before
