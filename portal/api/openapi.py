"""The OpenAPI 3.1 document of ``/api/v1``, made from the endpoints and their pydantic models
(whose JSON Schema 2020-12 is OpenAPI 3.1's own)."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from portal.api import schemas
from portal.api.service import SCOPES
from portal.api.views import ENDPOINTS, PREFIX, TITLES

REF = "#/components/schemas/{model}"
VERSION = "1.0.0"
JSON = "application/json"
PROBLEM = "application/problem+json"


def _schemas() -> dict[str, Any]:
    models = [(m, mode) for m in schemas.MODELS for mode in ("validation", "serialization")]
    _, top = models_json_schema(models, ref_template=REF)  # type: ignore[arg-type]
    return dict(top.get("$defs", {}))


def _ref(model: type) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": TITLES[status].msgid,
        "content": {PROBLEM: {"schema": _ref(schemas.Problem)}},
    }


@cache
def build(server_url: str = "") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        responses: dict[str, Any] = {
            str(endpoint.status): {
                "description": "OK",
                "content": {JSON: {"schema": _ref(endpoint.response)}},
            },
            "401": {
                **_problem(401),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            },
            "403": _problem(403),
            "429": {
                **_problem(429),
                "headers": {
                    "Retry-After": {
                        "description": "Seconds to wait",
                        "schema": {"type": "integer"},
                    }
                },
            },
        }
        for status in endpoint.errors:
            responses[str(status)] = _problem(status)
        operation: dict[str, Any] = {
            "operationId": endpoint.name.replace("api.", ""),
            "summary": endpoint.summary,
            "description": endpoint.description,
            "security": [{"token": [endpoint.scope]}],
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.where == "path",
                    "description": p.description,
                    "schema": p.schema,
                }
                for p in endpoint.params
            ],
            "responses": responses,
            "x-scope": endpoint.scope,
        }
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": _ref(endpoint.body)}},
            }
        elif endpoint.multipart:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "string",
                                        "contentMediaType": "application/octet-stream",
                                    },
                                },
                                "title": {"type": "string", "maxLength": 200},
                                "description": {"type": "string", "maxLength": 2000},
                                "visibility": {"type": "string", "enum": ["parties", "mediator"]},
                            },
                        }
                    }
                },
            }
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Jiefen firm API",
            "version": VERSION,
            "description": (
                "For financial and consumer firms: read the cases filed against the firm, answer "
                "them, propose settlements, upload evidence, read agreements and record payments. "
                "Authenticate with a token a firm representative makes on the portal "
                "(Authorization: Bearer jfk_...). Errors are RFC 9457 problem details in the "
                "language of Accept-Language (zh-CN or en)."
            ),
        },
        "servers": [{"url": server_url + PREFIX}],
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "token": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Permissions: "
                    + "; ".join(f"{k}: {v.msgid}" for k, v in SCOPES.items()),
                }
            },
        },
    }
    return document


async def document(request: Request) -> Response:
    return JSONResponse(build(request.app.state.settings.base_url))
