"""schemathesis against the served OpenAPI document: the portal runs in this process (uvicorn
on loopback, in a thread of its own), the document is read from /api/v1/openapi.json, and
every operation gets generated requests, valid and invalid, with a real firm token. Each
answer must be one the document lists, with its content type and schema; invalid input must be
refused (4xx); the token is required (401 without it); nothing may answer 5xx."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from portal.api.views import ENDPOINTS
from portal.app import create_app
from portal.policy import Role
from tests.agreements.test_service import build, make_effective, terms
from tests.api.test_api import token_for
from tests.conftest import free_port, make_settings, truncate_all
from tests.factories import make_case


async def _seed(db_url: str, var: Path) -> tuple[str, int]:
    """A firm with cases (one with an agreement in effect) and a token with every scope."""
    app = create_app(make_settings(db_url, var))
    async with LifespanManager(app):
        w = await build(app)
        await make_effective(app, w, terms(amount_fen=300_000, parts=3))
        from portal.cases.models import Case
        from portal.orgs.models import Firm

        async with app.starlette.state.db() as db:
            case = await db.get(Case, w.case_id)
            assert case is not None
            firm = await db.get(Firm, case.respondent_firm_id)
        for _ in range(3):
            await make_case(app, w.claimant, firm)
        secret = await token_for(app, w.rep)
        assert Role.FIRM_REP
    return secret, w.case_id


@pytest.fixture(scope="module")
def served(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    var = tmp_path_factory.mktemp("schema-var")
    secret, case_id = asyncio.run(_seed(db_url, var))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(db_url, var, base_url=url))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.02)
    assert server.started
    try:
        yield {"url": url, "secret": secret, "case_id": case_id}
    finally:
        server.should_exit = True
        thread.join(10)
        asyncio.run(truncate_all(db_url))


@pytest.fixture(scope="module")
def api_schema(served: dict[str, Any]) -> Any:
    document = httpx.get(f"{served['url']}/api/v1/openapi.json").json()
    # The seeded case is the example of every case_id, so that generated requests reach real
    # objects (and not only 404s).
    for path in document["paths"].values():
        for operation in path.values():
            for param in operation["parameters"]:
                if param["name"] == "case_id":
                    param["schema"]["examples"] = [served["case_id"]]
    return schemathesis.openapi.from_dict(document)


OPERATIONS = [(e.method, e.path) for e in ENDPOINTS]


# schemathesis's own strategies draw from the random module in places, which Hypothesis flags
# as deprecated (sometimes, depending on the draw): not a fault of the API under test.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_keeps_to_the_document(
    api_schema: Any, served: dict[str, Any], method: str, path: str, mode: GenerationMode
) -> None:
    # (schemathesis's own pytest fixture loader does not run under pytest 9, so its strategy
    # for each operation is driven by Hypothesis here.)
    operation = api_schema[path][method]
    auth = {"Authorization": f"Bearer {served['secret']}"}
    base_url = f"{served['url']}/api/v1"

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(base_url=base_url, headers=auth)

    check()
