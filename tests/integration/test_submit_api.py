"""The submission write path over HTTP against the real MariaDB."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db.records import utcnow
from aimtp.events import SCHEMA_VERSION, EventType, decode_event
from aimtp.settings import ServerSettings, load
from app import create_app
from tests.services import row_counts

EXAMPLE = json.loads((Path(__file__).parents[2] / "examples" / "dag.json").read_text())
A = {"Authorization": "Bearer tenant-a-token"}
B = {"Authorization": "Bearer tenant-b-token"}


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app()) as client:
        yield client


async def test_submit_answers_202_and_writes_dag_and_outbox_row(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    response = await client.post("/v1/dags", json=EXAMPLE, headers=A)

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["state"] == "PENDING"
    assert body["name"] == EXAMPLE["name"]
    assert response.headers["location"] == f"/v1/dags/{body['id']}"

    fetched = await client.get(response.headers["location"], headers=A)
    assert fetched.status_code == 200
    assert fetched.json()["id"] == body["id"]
    assert fetched.json()["spec"]["tasks"][1]["resources"]["gpu"] == 8

    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT * FROM outbox"))).all()
        history = (await conn.execute(text("SELECT * FROM dag_transitions"))).all()
    assert len(rows) == 1
    row = rows[0]._mapping
    assert (row["dag_id"], row["event_type"], row["status"]) == (
        body["id"],
        "dag.submitted",
        "pending",
    )
    event = decode_event(row["payload"])
    assert event.type is EventType.SUBMITTED
    assert event.schema_version == SCHEMA_VERSION
    assert (event.dag_id, event.tenant, event.attempt) == (body["id"], "tenant-a", 1)
    assert event.event_id == row["event_id"]
    assert row["traceparent"].startswith("00-")
    assert [(h.from_state, h.to_state, h.actor) for h in history] == [(None, "PENDING", "server")]


async def test_traceparent_from_the_request_is_kept(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = await client.post(
        "/v1/dags", json=EXAMPLE, headers={**A, "traceparent": traceparent}
    )
    assert response.status_code == 202
    async with engine.connect() as conn:
        stored = (await conn.execute(text("SELECT traceparent FROM outbox"))).scalar_one()
    assert stored == traceparent


async def test_other_tenants_dag_is_not_found(client: AsyncTestClient[Any]) -> None:
    created = (await client.post("/v1/dags", json=EXAMPLE, headers=A)).json()

    response = await client.get(f"/v1/dags/{created['id']}", headers=B)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVuYW50LWEtdG9rZW4="}],
    ids=["no-token", "unknown-token", "wrong-scheme"],
)
async def test_requests_without_a_valid_token_are_refused(
    client: AsyncTestClient[Any], engine: AsyncEngine, headers: dict[str, str]
) -> None:
    before = await row_counts(engine)
    response = await client.post("/v1/dags", json=EXAMPLE, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "tenant-a-token" not in response.text
    assert await row_counts(engine) == before


async def test_controller_credential_is_not_a_tenant_token(client: AsyncTestClient[Any]) -> None:
    response = await client.post(
        "/v1/dags",
        json=EXAMPLE,
        headers={"Authorization": "Bearer test-controller-callback-token"},
    )
    assert response.status_code == 401


async def test_outbox_failure_leaves_no_dag_row(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    """DAG row and outbox row are one transaction: a failing outbox insert undoes both."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TRIGGER outbox_refuses BEFORE INSERT ON outbox FOR EACH ROW "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'outbox unavailable'"
            )
        )
    try:
        response = await client.post("/v1/dags", json=EXAMPLE, headers=A)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER IF EXISTS outbox_refuses"))

    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "outbox unavailable" not in response.text
    assert "Traceback" not in response.text
    counts = await row_counts(engine)
    assert counts["dags"] == 0
    assert counts["dag_transitions"] == 0


async def test_same_idempotency_key_and_body_returns_the_same_dag(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    headers = {**A, "Idempotency-Key": "build-1234"}
    first = await client.post("/v1/dags", json=EXAMPLE, headers=headers)
    second = await client.post("/v1/dags", json=EXAMPLE, headers=headers)

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert (await row_counts(engine))["dags"] == 1


async def test_an_expired_idempotency_key_starts_a_new_dag(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    headers = {**A, "Idempotency-Key": "nightly-2026-12-03"}
    first = await client.post("/v1/dags", json=EXAMPLE, headers=headers)
    window = load(ServerSettings).idempotency_window_seconds
    async with engine.begin() as conn:  # the first submission is now past the window
        await conn.execute(
            text("UPDATE dags SET created_at = :t WHERE id = :id"),
            {"t": utcnow() - timedelta(seconds=window + 1), "id": first.json()["id"]},
        )

    again = await client.post("/v1/dags", json=EXAMPLE, headers=headers)
    replay = await client.post("/v1/dags", json=EXAMPLE, headers=headers)

    assert again.status_code == 202
    assert "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    assert replay.json()["id"] == again.json()["id"]  # the key now names the new DAG
    assert (await row_counts(engine))["dags"] == 2


async def test_same_idempotency_key_with_another_body_is_a_conflict(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    headers = {**A, "Idempotency-Key": "build-1234"}
    await client.post("/v1/dags", json=EXAMPLE, headers=headers)
    other = {**EXAMPLE, "name": "another-pipeline"}

    response = await client.post("/v1/dags", json=other, headers=headers)

    assert response.status_code == 409
    assert response.json()["type"].endswith("idempotency-key-reused")
    assert (await row_counts(engine))["dags"] == 1


async def test_idempotency_keys_are_per_tenant(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    a = await client.post("/v1/dags", json=EXAMPLE, headers={**A, "Idempotency-Key": "k"})
    b = await client.post("/v1/dags", json=EXAMPLE, headers={**B, "Idempotency-Key": "k"})
    assert a.json()["id"] != b.json()["id"]
    assert (await row_counts(engine))["dags"] == 2


async def test_concurrent_requests_with_one_key_create_one_dag(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    headers = {**A, "Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(client.post("/v1/dags", json=EXAMPLE, headers=headers) for _ in range(10))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    counts = await row_counts(engine)
    assert (counts["dags"], counts["outbox"]) == (1, 1)


async def test_openapi_documents_the_dag_body(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    document = response.json()
    body = document["paths"]["/v1/dags"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]
    assert "422" in document["paths"]["/v1/dags"]["post"]["responses"]
    docs_page = await client.get("/docs")
    assert docs_page.status_code == 200


async def test_health_and_readiness_need_no_token(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


def _problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return msgspec.json.decode(response.content, type=dict[str, Any])


async def test_database_unavailable_is_a_retryable_503(engine: AsyncEngine) -> None:
    """A server that cannot reach its database answers 503 with Retry-After, not 500."""
    import dataclasses

    from aimtp.settings import DatabaseSettings, load

    unreachable = dataclasses.replace(
        load(DatabaseSettings),
        database_url="mysql+asyncmy://aimtp:aimtp@127.0.0.1:1/aimtp",
        database_pool_timeout=1.0,
    )
    before = await row_counts(engine)
    async with AsyncTestClient(app=create_app(database=unreachable)) as client:
        response = await client.post("/v1/dags", json=EXAMPLE, headers=A)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await row_counts(engine) == before
