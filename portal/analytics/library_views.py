"""The similar-case library's pages: search, one entry, and the entries most like a case.

Mediators, committee administrators and platform administrators may search the library
(``analytics.policy.LIBRARY``); the entries most like a case are shown only to those who may
also see that case (its mediator, its committee's administrators, platform administrators).
Everyone else gets a 404, anonymous visitors the login page.

The pages only read. New entries come from :class:`portal.analytics.library.LibraryLoop`
(every few minutes, and at start-up), not from a search: a GET must not write, and a case
closed a few minutes ago can wait that long to appear.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from portal.analytics import library
from portal.analytics.library_models import Outcome
from portal.analytics.policy import LIBRARY
from portal.cases import service as cases
from portal.i18n import _l
from portal.orgs.categories import CATEGORIES
from portal.validators import clean_text
from portal.web import Form, db_session, render, require

OUTCOME_BADGES = {
    Outcome.FULFILLED.value: "status-fulfilled",
    Outcome.FAILED.value: "status-failed",
    Outcome.TRANSFERRED.value: "status-transferred_to_litigation",
    Outcome.WITHDRAWN.value: "status-withdrawn",
}


def _context() -> dict[str, Any]:
    return {
        "categories": CATEGORIES,
        "outcome_labels": library.OUTCOME_LABELS,
        "outcome_badges": OUTCOME_BADGES,
        "claim_labels": cases.OUTCOMES,
        "approx": library.approx_yuan,
    }


class LibrarySearchForm(Form):
    """The search's query string: words, category, outcome, page. Bad values are refused
    with a message, and nothing is searched."""

    def validate(self) -> bool:
        q = self.clean("q", clean_text, max_length=library.MAX_QUERY, required=False)
        if q is not None and len(library.search_form(q)) == 1:
            self.add_error("q", _l("Enter at least two characters to search."))
        category = self.value("category")
        if category and category not in CATEGORIES:
            self.add_error("category", _l("There is no such category. Choose one from the list."))
        outcome = self.value("outcome")
        if outcome and outcome not in library.OUTCOME_LABELS:
            self.add_error("outcome", _l("There is no such outcome. Choose one from the list."))
        page = self.value("page", "1").strip() or "1"
        if not page.isdigit() or not 1 <= int(page) <= library.MAX_PAGE:
            self.add_error(
                None, _l("Enter a page number from 1 to {count}.", count=library.MAX_PAGE)
            )
        self.cleaned.update(
            category=category, outcome=outcome, page=int(page) if page.isdigit() else 1
        )
        return self.valid

    def query(self) -> library.LibraryQuery:
        return library.LibraryQuery(
            q=self.cleaned.get("q") or "",
            category=self.cleaned["category"],
            outcome=self.cleaned["outcome"],
            page=self.cleaned["page"],
        )


async def search(request: Request) -> Response:
    require(request, "search", LIBRARY)
    form = LibrarySearchForm(request.query_params)
    entries: list[Any] = []
    total = 0
    query = library.LibraryQuery()
    if form.validate():
        query = form.query()
        async with db_session(request) as db:
            entries, total = await library.search_library(db, query)
    kept = {"q": query.q, "category": query.category, "outcome": query.outcome}
    pages = min(library.MAX_PAGE, -(-min(total, library.COUNT_CAP) // query.per_page))
    return render(
        request,
        "analytics/library_search.html",
        {
            **_context(),
            "form": form,
            "query": query,
            "entries": entries,
            "total": total,
            "capped": total > library.COUNT_CAP,
            "pages": pages,
            "base": "?" + urlencode({k: v for k, v in kept.items() if v}),
        },
        status_code=200 if form.valid else 400,
        block="results",
    )


async def entry(request: Request) -> Response:
    require(request, "search", LIBRARY)
    async with db_session(request) as db:
        found = await library.get_entry(db, request.path_params["entry_id"])
    return render(request, "analytics/library_entry.html", {**_context(), "entry": found})


async def similar(request: Request) -> Response:
    require(request, "search", LIBRARY)
    async with db_session(request) as db:
        case = await cases.get_case(db, request.path_params["case_id"])
        require(request, "view", case)
        result = await library.similar_entries(db, request.app.state.vault, case)
    return render(
        request,
        "analytics/library_similar.html",
        {**_context(), "case": case, "result": result},
    )


routes: list[BaseRoute] = [
    Route("/library", search, name="library.search"),
    Route("/library/{entry_id:int}", entry, name="library.entry"),
    Route("/cases/{case_id:int}/similar", similar, name="library.similar"),
]
