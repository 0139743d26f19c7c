"""The user surface over HTTP: list/search, cancel, retry, history, limits, isolation."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.records import DagRecord
from aimtp.events import Actor
from aimtp.lifecycle import transition
from aimtp.settings import ServerSettings, load
from aimtp.states import DagState
from app import create_app
from app.listing import DagFilter, build_list_query

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "examples" / "dag.json").read_text()
)
A = {"Authorization": "Bearer tenant-a-token"}
B = {"Authorization": "Bearer tenant-b-token"}


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app()) as client:
        yield client


async def submit(
    client: AsyncTestClient[Any],
    name: str = "llm-finetune",
    headers: dict[str, str] = A,
    **extra: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/dags", json={**EXAMPLE, "name": name, **extra}, headers=headers
    )
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


async def force_state(engine: AsyncEngine, dag_id: str, *path: DagState) -> None:
    """Walk a DAG through ``path`` as the trigger / Controller would."""
    async with engine.begin() as conn:
        dag = DagRecord.from_row((await conn.execute(QUERIES["get_dag"], {"id": dag_id})).one())
        for state in path:
            moved = await transition(conn, dag, state, actor=Actor.TRIGGER, reason="test")
            assert moved is not None
            dag = moved


async def walk(client: AsyncTestClient[Any], query: str, limit: int) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        url = f"/v1/dags?limit={limit}{query}" + (f"&page_token={token}" if token else "")
        page = (await client.get(url, headers=A)).json()
        ids += [item["id"] for item in page["items"]]
        token = page["next_page_token"]
        if token is None:
            return ids


# ---------------------------------------------------------------- list / search


async def test_list_is_newest_first_and_pages_walk_every_row_once_while_inserts_happen(
    client: AsyncTestClient[Any],
) -> None:
    created = [(await submit(client, f"dag-{i}"))["id"] for i in range(23)]

    ids: list[str] = []
    token = None
    while True:
        url = "/v1/dags?limit=5" + (f"&page_token={token}" if token else "")
        page = (await client.get(url, headers=A)).json()
        ids += [item["id"] for item in page["items"]]
        await submit(client, "arrives-meanwhile")  # newer: never shows up mid-walk
        token = page["next_page_token"]
        if token is None:
            break

    assert ids == list(reversed(created))


async def test_filters_by_state_label_name_prefix_and_time(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    nlp = await submit(client, "nlp-one", labels={"team": "nlp", "env": "prod"})
    vision = await submit(client, "vision-one", labels={"team": "vision"})
    running = await submit(client, "nlp-two", labels={"team": "nlp", "env": "dev"})
    await force_state(engine, running["id"], DagState.TRIGGERING, DagState.RUNNING)
    failed = await submit(client, "other", labels={})
    await force_state(engine, failed["id"], DagState.FAILED)

    async def ids(query: str) -> list[str]:
        return await walk(client, query, limit=2)

    assert await ids("&state=RUNNING") == [running["id"]]
    assert await ids("&state=RUNNING&state=FAILED") == [failed["id"], running["id"]]
    assert await ids("&state=PENDING") == [vision["id"], nlp["id"]]
    assert await ids("&label=team=nlp") == [running["id"], nlp["id"]]
    assert await ids("&label=team=nlp,env=prod") == [nlp["id"]]
    assert await ids("&label=team=nlp&label=env=dev") == [running["id"]]
    assert await ids("&label=team=nlp&state=PENDING") == [nlp["id"]]
    assert await ids("&name_prefix=nlp-") == [running["id"], nlp["id"]]
    assert await ids("&name_prefix=%25") == []  # LIKE wildcards are literal
    after = datetime.fromisoformat(vision["created_at"]) - timedelta(microseconds=1)
    before = datetime.fromisoformat(failed["created_at"])
    window = f"&created_after={after.isoformat()}&created_before={before.isoformat()}"
    assert await ids(window.replace("+", "%2B")) == [running["id"], vision["id"]]


async def test_list_validates_its_parameters(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/v1/dags?limit=501", headers=A)).status_code == 400
    assert (await client.get("/v1/dags?limit=0", headers=A)).status_code == 400
    assert (await client.get("/v1/dags?state=DONE", headers=A)).status_code == 400
    bad_label = await client.get("/v1/dags?label=team", headers=A)
    assert bad_label.status_code == 400
    assert bad_label.headers["content-type"].startswith("application/problem+json")
    forged = await client.get("/v1/dags?page_token=bm90LWEtdG9rZW4", headers=A)
    assert forged.status_code == 400
    assert forged.json()["errors"][0]["field"] == "page_token"


async def test_page_token_is_bound_to_its_filters(client: AsyncTestClient[Any]) -> None:
    for i in range(3):
        await submit(client, f"dag-{i}")
    token = (await client.get("/v1/dags?limit=1", headers=A)).json()["next_page_token"]
    response = await client.get(f"/v1/dags?limit=1&state=FAILED&page_token={token}", headers=A)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (DagFilter(labels=(("team", "nlp"),)), "PRIMARY"),
        (DagFilter(states=(DagState.RUNNING, DagState.FAILED)), "ix_dags_tenant_state_created"),
        (DagFilter(), "ix_dags_tenant_created"),
    ],
    ids=["label", "states", "plain"],
)
async def test_each_list_shape_is_served_by_an_index(
    engine: AsyncEngine, filters: DagFilter, index: str
) -> None:
    sql, params = build_list_query("tenant-a", filters, 10, None)
    async with engine.connect() as conn:
        plan = [dict(row._mapping) for row in await conn.execute(text("EXPLAIN " + sql), params)]
    driving = next(row for row in plan if row["table"] in ("l", "d"))
    assert driving["key"] == index, plan


# ---------------------------------------------------------------- cancel / retry


@pytest.mark.parametrize(
    "path",
    [(), (DagState.TRIGGERING,), (DagState.TRIGGERING, DagState.RUNNING)],
    ids=["PENDING", "TRIGGERING", "RUNNING"],
)
async def test_cancel_moves_a_live_dag_to_cancelling_idempotently(
    client: AsyncTestClient[Any], engine: AsyncEngine, path: tuple[DagState, ...]
) -> None:
    dag = await submit(client)
    await force_state(engine, dag["id"], *path)

    first = await client.post(f"/v1/dags/{dag['id']}/cancel", headers=A)
    second = await client.post(f"/v1/dags/{dag['id']}/cancel", headers=A)

    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["state"] == second.json()["state"] == "CANCELLING"
    async with engine.connect() as conn:
        events = (
            (
                await conn.execute(
                    text("SELECT event_type FROM outbox WHERE dag_id = :id ORDER BY id"),
                    {"id": dag["id"]},
                )
            )
            .scalars()
            .all()
        )
    assert events.count("dag.cancel_requested") == 1


@pytest.mark.parametrize("terminal", [DagState.FAILED, DagState.TIMED_OUT])
async def test_cancel_of_an_ended_dag_is_a_conflict_naming_its_state(
    client: AsyncTestClient[Any], engine: AsyncEngine, terminal: DagState
) -> None:
    dag = await submit(client)
    path = (DagState.TRIGGERING, DagState.RUNNING, terminal)
    await force_state(engine, dag["id"], *path)

    response = await client.post(f"/v1/dags/{dag['id']}/cancel", headers=A)

    assert response.status_code == 409
    assert response.json()["state"] == terminal.value


async def test_retry_starts_a_new_attempt_of_an_ended_dag(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await submit(client)
    await force_state(engine, dag["id"], DagState.TRIGGERING, DagState.FAILED)

    response = await client.post(f"/v1/dags/{dag['id']}/retry", headers=A)

    assert response.status_code == 202
    assert (response.json()["state"], response.json()["attempt"]) == ("PENDING", 2)
    again = await client.post(f"/v1/dags/{dag['id']}/retry", headers=A)
    assert again.status_code == 409
    assert again.json()["state"] == "PENDING"


async def test_history_lists_every_transition_with_actor_and_reason(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag = await submit(client)
    await force_state(engine, dag["id"], DagState.TRIGGERING, DagState.FAILED)
    await client.post(f"/v1/dags/{dag['id']}/retry", headers=A)

    response = await client.get(f"/v1/dags/{dag['id']}/events", headers=A)

    assert response.status_code == 200
    events = response.json()["events"]
    assert [(e["from_state"], e["to_state"], e["actor"], e["attempt"]) for e in events] == [
        (None, "PENDING", "server", 1),
        ("PENDING", "TRIGGERING", "trigger", 1),
        ("TRIGGERING", "FAILED", "trigger", 1),
        ("FAILED", "PENDING", "server", 2),
    ]
    assert events[-1]["reason"] == "retry requested by tenant-a"
    times = [datetime.fromisoformat(e["at"]) for e in events]
    assert times == sorted(times)
    assert all(t.tzinfo == UTC for t in times)


# ---------------------------------------------------------------- isolation and limits


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("POST", "/cancel"), ("POST", "/retry"), ("GET", "/events")],
)
async def test_another_tenants_dag_is_a_404_on_every_endpoint(
    client: AsyncTestClient[Any], engine: AsyncEngine, method: str, suffix: str
) -> None:
    dag = await submit(client)
    await force_state(engine, dag["id"], DagState.FAILED)  # retryable, so only tenancy refuses

    response = await client.request(method, f"/v1/dags/{dag['id']}{suffix}", headers=B)

    assert response.status_code == 404
    listed = (await client.get("/v1/dags", headers=B)).json()["items"]
    assert dag["id"] not in [item["id"] for item in listed]
    async with engine.connect() as conn:
        state = (
            await conn.execute(text("SELECT state FROM dags WHERE id = :id"), {"id": dag["id"]})
        ).scalar_one()
    assert state == "FAILED"


async def test_rate_limit_answers_429_with_retry_after() -> None:
    settings = dataclasses.replace(load(ServerSettings), rate_limit_per_second=5)
    async with AsyncTestClient(app=create_app(server=settings)) as limited:
        responses = await asyncio.gather(*(limited.get("/v1/dags", headers=A) for _ in range(12)))
        other_tenant = await limited.get("/v1/dags", headers=B)
        health = await limited.get("/healthz")

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 5
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == 7
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].headers["content-type"].startswith("application/problem+json")
    assert other_tenant.status_code == 200  # limits are per tenant
    assert health.status_code == 200
