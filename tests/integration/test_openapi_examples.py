"""The OpenAPI document shows an example of every body it documents, and the examples
are true: the request examples are accepted, the response examples read back as the
types the API answers with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from aimtp.controller import StatusReport
from app import create_app, examples
from app.problems import Problem
from app.schemas import DagHistory, DagPage, DagView, Health
from tests.conftest import TENANT_TOKENS

METHODS = ("get", "post", "put", "patch", "delete")
A = {"Authorization": f"Bearer {next(iter(TENANT_TOKENS))}"}


@pytest.fixture
async def document() -> AsyncIterator[dict[str, Any]]:
    async with AsyncTestClient(app=create_app()) as client:
        response = await client.get("/docs/openapi.json")
        assert response.status_code == 200
        yield response.json()


def _examples(media: dict[str, Any]) -> list[Any]:
    found = media.get("examples") or media.get("schema", {}).get("examples") or {}
    values = found.values() if isinstance(found, dict) else found
    return [v["value"] if isinstance(v, dict) and "value" in v else v for v in values]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


async def test_every_body_the_document_describes_has_an_example(
    document: dict[str, Any],
) -> None:
    missing = []
    for method, path, operation in _operations(document):
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            if not _examples(media):
                missing.append(f"{method} {path} request {media_type}")
        for status, response in operation["responses"].items():
            for media_type, media in (response.get("content") or {}).items():
                if not _examples(media):
                    missing.append(f"{method} {path} {status} {media_type}")
    assert not missing, missing


async def test_error_examples_are_problem_documents(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            media = (response.get("content") or {}).get("application/problem+json")
            if media is None:
                continue
            for value in _examples(media):
                problem = msgspec.convert(value, Problem)
                assert problem.status == int(status), f"{method} {path} {status}"


def _without_nulls(value: Any) -> Any:
    """What Litestar writes into the document: it leaves out null members of examples."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("method", "path", "status", "kind", "instance"),
    [
        ("POST", "/v1/dags", "202", DagView, examples.ACCEPTED),
        ("GET", "/v1/dags", "200", DagPage, examples.PAGE),
        ("GET", "/v1/dags/{dag_id}", "200", DagView, examples.DAG),
        ("POST", "/v1/dags/{dag_id}/cancel", "202", DagView, examples.CANCELLING),
        ("POST", "/v1/dags/{dag_id}/retry", "202", DagView, examples.RETRIED),
        ("GET", "/v1/dags/{dag_id}/events", "200", DagHistory, examples.HISTORY),
        ("GET", "/readyz", "503", Health, examples.UNHEALTHY),
    ],
)
async def test_response_examples_are_instances_of_the_answered_type(
    document: dict[str, Any],
    method: str,
    path: str,
    status: str,
    kind: type[Any],
    instance: msgspec.Struct,
) -> None:
    media = document["paths"][path][method.lower()]["responses"][status]["content"]
    [value] = _examples(media["application/json"])
    assert isinstance(instance, kind)
    assert value == _without_nulls(msgspec.to_builtins(instance))


async def test_the_request_examples_are_accepted(document: dict[str, Any]) -> None:
    submit = document["paths"]["/v1/dags"]["post"]["requestBody"]["content"]
    [spec] = _examples(submit["application/json"])
    status = document["paths"]["/v1/dags/{dag_id}/status"]["post"]["requestBody"]["content"]
    [report] = _examples(status["application/json"])
    msgspec.convert(report, StatusReport, strict=False)

    async with AsyncTestClient(app=create_app()) as client:
        response = await client.post("/v1/dags", json=spec, headers=A)
    assert response.status_code == 202, response.text
    assert response.json()["spec"] == msgspec.to_builtins(examples.SPEC)
