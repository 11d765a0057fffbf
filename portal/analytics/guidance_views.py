"""Guidance for consumers, public: what mediation is and costs, what to prepare, why identity
checks and signed agreements matter, and how black-market "rights-protection" agents (黑维,
黑产代理) mislead people.

The page's frame and headings go through the catalogues; its prose is written in each language
in its own template (``analytics/guide_<locale>.html``), rather than as dozens of catalogue
strings that a translator would have to keep in step paragraph by paragraph.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from portal.web import locale_of, render

BODIES = {"zh_CN": "analytics/guide_zh_CN.html", "en": "analytics/guide_en.html"}


async def guide(request: Request) -> Response:
    body = BODIES.get(locale_of(request), BODIES["zh_CN"])
    return render(request, "analytics/guide.html", {"body": body})


routes: list[BaseRoute] = [Route("/guide", guide, name="guidance.index")]
