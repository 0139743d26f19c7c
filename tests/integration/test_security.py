"""Security properties of aimtp-server: authentication everywhere it is due, tenants kept
apart, the Controller's callback kept to the Controller, no secrets or internals leaked,
and safe defaults."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import app.service
from aimtp.db import QUERIES
from aimtp.logs import JsonFormatter
from aimtp.settings import DatabaseSettings, ServerSettings
from app import create_app
from app.auth import TokenRegistry
from tests.conftest import CONTROLLER_CALLBACK_TOKEN, TENANT_TOKENS
from tests.processes import free_port
from tests.services import row_counts

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "examples" / "dag.json").read_text()
)
TOKEN_A, TOKEN_B = TENANT_TOKENS
A = {"Authorization": f"Bearer {TOKEN_A}"}
B = {"Authorization": f"Bearer {TOKEN_B}"}
CONTROLLER = {"Authorization": f"Bearer {CONTROLLER_CALLBACK_TOKEN}"}
PUBLIC = re.compile(r"^/(healthz|readyz|metrics)$|^/docs")
PLACEHOLDER_ID = "01a00000-0000-7000-8000-000000000000"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app()) as client:
        yield client


async def _operations(client: AsyncTestClient[Any]) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation the OpenAPI document lists."""
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    paths: dict[str, dict[str, Any]] = response.json()["paths"]
    return [
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method in METHODS
    ]


async def _protected(client: AsyncTestClient[Any]) -> list[tuple[str, str]]:
    operations = [(m, p) for m, p in await _operations(client) if not PUBLIC.search(p)]
    # The document really lists the API; an empty list would prove nothing.
    assert {p for _, p in operations} >= {"/v1/dags", "/v1/dags/{dag_id}/status"}
    return operations


async def _submit(client: AsyncTestClient[Any], headers: dict[str, str] = A) -> str:
    response = await client.post(
        "/v1/dags",
        content=json.dumps(EXAMPLE).encode(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    dag_id: str = response.json()["id"]
    return dag_id


def _report(dag_id: str) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "attempt": 1,
        "reference": "wl-1",
        "phase": "Succeeded",
        "tasks": {},
        "observed_at": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": TOKEN_A},  # no scheme
        {"Authorization": f"Basic {TOKEN_A}"},
        {"Authorization": f"Bearer {TOKEN_A}x"},
        {"Authorization": f"Bearer {TOKEN_A[:-1]}"},
    ],
    ids=["none", "empty", "unknown", "no-scheme", "basic", "suffixed", "truncated"],
)
async def test_every_non_public_operation_requires_a_token(
    client: AsyncTestClient[Any], engine: AsyncEngine, headers: dict[str, str]
) -> None:
    dag_id = await _submit(client)
    before = await row_counts(engine)
    for method, template in await _protected(client):
        path = template.replace("{dag_id}", dag_id)
        response = await client.request(
            method, path, headers={**headers, "Content-Type": "application/json"}, content=b"{}"
        )
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert await row_counts(engine) == before


async def test_public_operations_need_no_token(client: AsyncTestClient[Any]) -> None:
    public = [(m, p) for m, p in await _operations(client) if PUBLIC.search(p)]
    assert {p for _, p in public} >= {"/healthz", "/readyz", "/metrics"}
    for method, path in public:
        response = await client.request(method, path)
        assert response.status_code == 200, (method, path, response.text)


async def test_another_tenants_dag_is_404_on_every_endpoint(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag_id = await _submit(client, A)
    before = await row_counts(engine)
    tenant_paths = [
        (m, p) for m, p in await _protected(client) if "{dag_id}" in p and not p.endswith("/status")
    ]
    assert len(tenant_paths) >= 4
    for method, template in tenant_paths:
        response = await client.request(method, template.replace("{dag_id}", dag_id), headers=B)
        assert response.status_code == 404, (method, template, response.text)
        # The answer is the same as for a DAG that does not exist: nothing to tell them apart.
        missing = await client.request(
            method, template.replace("{dag_id}", PLACEHOLDER_ID), headers=B
        )
        assert missing.status_code == 404
        assert response.json()["title"] == missing.json()["title"]
    listing = await client.get("/v1/dags", headers=B)
    assert listing.status_code == 200
    assert listing.json()["items"] == []
    assert await row_counts(engine) == before
    mine = await client.get(f"/v1/dags/{dag_id}", headers=A)
    assert mine.json()["state"] == "PENDING"


@pytest.mark.parametrize(
    ("headers", "status"),
    [(A, 401), (B, 401), ({}, 401), (CONTROLLER, 204)],
    ids=["tenant-a", "tenant-b", "none", "controller"],
)
async def test_status_callback_accepts_only_the_controller_credential(
    client: AsyncTestClient[Any], engine: AsyncEngine, headers: dict[str, str], status: int
) -> None:
    dag_id = await _submit(client)
    async with engine.begin() as conn:  # the Controller reports on RUNNING DAGs
        await conn.execute(text("UPDATE dags SET state = 'RUNNING' WHERE id = :id"), {"id": dag_id})
    response = await client.post(f"/v1/dags/{dag_id}/status", json=_report(dag_id), headers=headers)
    assert response.status_code == status, response.text
    dag = await client.get(f"/v1/dags/{dag_id}", headers=A)
    assert dag.json()["state"] == ("SUCCEEDED" if status == 204 else "RUNNING")


def test_the_controller_credential_is_not_a_tenant_token() -> None:
    registry = TokenRegistry.parse(",".join(f"{t}:{n}" for t, n in TENANT_TOKENS.items()), "c")
    assert registry.tenant_for("c") is None
    assert not registry.is_controller(TOKEN_A)


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    """Every log record of the process, at DEBUG, formatted as the JSON lines it ships."""
    formatter = JsonFormatter("aimtp-server")
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Capture(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


async def test_tokens_are_never_logged(
    client: AsyncTestClient[Any],
    captured_logs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad_token = "bad-token-3f9c1e-never-log-me"
    await client.get("/v1/dags", headers={"Authorization": f"Bearer {bad_token}"})
    await client.get("/v1/dags", headers=A)
    dag_id = await _submit(client)
    await client.post(f"/v1/dags/{dag_id}/status", json=_report(dag_id), headers=CONTROLLER)
    # An unexpected failure logs its traceback; the request's token must not be in it.
    _break_dag_lookup(monkeypatch)
    failed = await client.get(f"/v1/dags/{dag_id}", headers=A)
    assert failed.status_code == 500

    output = "\n".join(captured_logs)
    assert "unhandled error" in output  # the capture did see the process's logs
    for token in (bad_token, TOKEN_A, CONTROLLER_CALLBACK_TOKEN):
        assert token not in output


async def test_a_requests_log_lines_carry_its_dag_and_trace_ids(
    client: AsyncTestClient[Any],
    captured_logs: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dag_id = await _submit(client)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    _break_dag_lookup(monkeypatch)
    failed = await client.post(
        f"/v1/dags/{dag_id}/cancel",
        headers={**A, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    assert failed.status_code == 500

    [entry] = [json.loads(line) for line in captured_logs if "unhandled error" in line]
    assert (entry["dag_id"], entry["trace_id"]) == (dag_id, trace_id)


def _break_dag_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = text("SELECT secret_column FROM no_such_table WHERE id = :id AND tenant = :tenant")
    monkeypatch.setattr(app.service, "QUERIES", {**QUERIES, "get_tenant_dag": broken})


LEAKS = ("Traceback", 'File "', ".py", "SELECT", "no_such_table", "sqlalchemy", "asyncmy")


async def test_a_database_error_leaks_no_sql_or_stack_trace(
    client: AsyncTestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    dag_id = await _submit(client)
    _break_dag_lookup(monkeypatch)

    response = await client.get(f"/v1/dags/{dag_id}", headers=A)

    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert set(response.json()) <= {"type", "title", "status", "detail", "instance"}
    for leak in LEAKS:
        assert leak not in response.text, leak


async def test_an_unreachable_database_leaks_nothing() -> None:
    port = free_port()  # nothing listens there
    database = DatabaseSettings(
        database_url=f"mysql+asyncmy://aimtp:secret-pw@127.0.0.1:{port}/aimtp",
        database_pool_timeout=1.0,
    )
    async with AsyncTestClient(app=create_app(database=database)) as client:
        ready = await client.get("/readyz")
        submitted = await client.post(
            "/v1/dags",
            content=json.dumps(EXAMPLE).encode(),
            headers={**A, "Content-Type": "application/json"},
        )
    assert ready.status_code == 503
    assert submitted.status_code >= 500
    assert submitted.headers["content-type"].startswith("application/problem+json")
    for leak in (*LEAKS, "secret-pw", str(port), "Errno", "Connection refused"):
        assert leak not in submitted.text, leak


def test_server_defaults_are_safe() -> None:
    defaults = ServerSettings()
    assert defaults.http_host == "127.0.0.1"
    assert defaults.max_body_bytes == 1024 * 1024
    assert defaults.api_tokens == ""
    assert defaults.controller_callback_token == ""


async def test_default_app_refuses_bodies_over_one_mib(client: AsyncTestClient[Any]) -> None:
    body = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    response = await client.post(
        "/v1/dags", content=body, headers={**A, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("path", ["/v1/dags", "/healthz", "/docs/openapi.json"])
async def test_cors_allows_no_origin(client: AsyncTestClient[Any], path: str) -> None:
    evil = "https://evil.example"
    preflight = await client.options(
        path,
        headers={
            "Origin": evil,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    simple = await client.get(path, headers={**A, "Origin": evil})
    for response in (preflight, simple):
        assert "access-control-allow-origin" not in response.headers, response.headers
        assert "access-control-allow-credentials" not in response.headers


def test_no_server_without_tokens_accepts_any_token() -> None:
    registry = TokenRegistry.parse("", "")
    assert registry.tenant_for("") is None
    assert registry.tenant_for("anything") is None
    assert not registry.is_controller("")
    assert not registry.is_controller("anything")


def _strings_in(value: Any, seen: set[int] | None = None) -> Iterator[str | bytes]:
    """Every str and bytes reachable from ``value``'s attributes and containers."""
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, str | bytes):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings_in(key, seen)
            yield from _strings_in(item, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings_in(item, seen)
    elif hasattr(value, "__dict__"):
        yield from _strings_in(vars(value), seen)


def test_token_registry_keeps_only_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = TokenRegistry.parse(
        f"{TOKEN_A}:tenant-a, {TOKEN_B}:tenant-b", CONTROLLER_CALLBACK_TOKEN
    )
    stored = list(_strings_in(registry))
    for token in (TOKEN_A, TOKEN_B, CONTROLLER_CALLBACK_TOKEN):
        assert not any(token in s if isinstance(s, str) else token.encode() in s for s in stored)
        assert hashlib.sha256(token.encode()).digest() in stored

    found = registry.tenant_for(TOKEN_A)
    assert found is not None
    assert found.name == "tenant-a"
    assert registry.tenant_for(TOKEN_A.upper()) is None
    assert registry.tenant_for(TOKEN_A + " ") is None

    # The Controller's credential is compared digest to digest, in constant time.
    compared: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("app.auth.hmac.compare_digest", spy)
    assert registry.is_controller(CONTROLLER_CALLBACK_TOKEN)
    assert not registry.is_controller(TOKEN_A)
    digest = hashlib.sha256(CONTROLLER_CALLBACK_TOKEN.encode()).digest()
    assert compared[0] == (digest, digest)
    assert all(len(a) == len(b) == 32 for a, b in compared)


@pytest.mark.parametrize("entry", ["no-separator", ":tenant", "token:", "a:b,,:c"])
def test_malformed_token_config_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="token:tenant"):
        TokenRegistry.parse(entry, "")
