"""Every kind of bad submission: a 4xx problem+json naming the field, nothing written."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app import create_app
from tests.services import row_counts

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "examples" / "dag.json").read_text()
)
AUTH = {"Authorization": "Bearer tenant-a-token"}
JSON = {**AUTH, "Content-Type": "application/json"}


def edited(change: Callable[[dict[str, Any]], None]) -> bytes:
    dag = copy.deepcopy(EXAMPLE)
    change(dag)
    return json.dumps(dag).encode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(dag: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = dag
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def change(dag: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = dag
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        del node[last]

    return change


def _many_tasks(count: int) -> Callable[[dict[str, Any]], None]:
    def change(dag: dict[str, Any]) -> None:
        dag["tasks"] = [{"name": f"t{i}", "image": "busybox:1"} for i in range(count)]

    return change


# (id, body, expected status, a field path the problem must name, or None)
CASES: list[tuple[str, bytes, int, str | None]] = [
    ("not-json", b"{this is not json", 400, ""),
    ("invalid-utf8", b'{"name": "\xff\xfe"}', 400, ""),
    ("array-body", b"[]", 422, ""),
    ("name-wrong-type", edited(_set("name", 5)), 422, "name"),
    ("gpu-wrong-type", edited(_set("tasks.1.resources.gpu", "8")), 422, "tasks[1].resources.gpu"),
    ("missing-tasks", edited(_delete("tasks")), 422, "tasks"),
    ("missing-image", edited(_delete("tasks.0.image")), 422, "tasks[0].image"),
    ("unknown-field", edited(_set("priority", "high")), 422, "priority"),
    ("unknown-task-field", edited(_set("tasks.2.gpus", 1)), 422, "tasks[2].gpus"),
    (
        "cycle",
        edited(_set("tasks.0.depends_on", [EXAMPLE["tasks"][-1]["name"]])),
        422,
        "tasks",
    ),
    (
        "self-dependency",
        edited(_set("tasks.1.depends_on", [EXAMPLE["tasks"][1]["name"]])),
        422,
        "tasks[1].depends_on[0]",
    ),
    (
        "unknown-dependency",
        edited(_set("tasks.1.depends_on", ["nope"])),
        422,
        "tasks[1].depends_on[0]",
    ),
    (
        "duplicate-task-name",
        edited(_set("tasks.2.name", EXAMPLE["tasks"][1]["name"])),
        422,
        "tasks[2].name",
    ),
    ("no-tasks", edited(_set("tasks", [])), 422, "tasks"),
    ("501-tasks", edited(_many_tasks(501)), 422, "tasks"),
    ("uppercase-name", edited(_set("name", "Train-LLM")), 422, "name"),
    ("underscore-name", edited(_set("tasks.0.name", "prepare_data")), 422, "tasks[0].name"),
    ("64-char-name", edited(_set("name", "a" * 64)), 422, "name"),
    ("negative-gpu", edited(_set("tasks.1.resources.gpu", -1)), 422, "tasks[1].resources.gpu"),
    (
        "memory-lots",
        edited(_set("tasks.1.resources.memory", "lots")),
        422,
        "tasks[1].resources.memory",
    ),
    ("bad-label", edited(_set("labels", {"team": "nlp!"})), 422, "labels"),
    ("timeout-zero", edited(_set("timeout_seconds", 0)), 422, "timeout_seconds"),
]


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app()) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "status", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_dag_is_refused_and_nothing_is_written(
    client: AsyncTestClient[Any],
    engine: AsyncEngine,
    body: bytes,
    status: int,
    field: str | None,
) -> None:
    before = await row_counts(engine)

    response = await client.post("/v1/dags", content=body, headers=JSON)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    if field is not None:
        fields = [error["field"] for error in problem["errors"]]
        assert any(f == field or f.startswith(field) for f in fields), fields
        assert all(error["message"] for error in problem["errors"])
    assert await row_counts(engine) == before


async def test_body_over_the_limit_is_413(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    before = await row_counts(engine)
    huge = edited(_set("annotations", {"blob": "x" * (2 * 1024 * 1024)}))
    response = await client.post("/v1/dags", content=huge, headers=JSON)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await row_counts(engine) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_wrong_content_type_is_415(
    client: AsyncTestClient[Any], engine: AsyncEngine, content_type: str
) -> None:
    before = await row_counts(engine)
    response = await client.post(
        "/v1/dags",
        content=json.dumps(EXAMPLE).encode(),
        headers={**AUTH, "Content-Type": content_type},
    )
    assert response.status_code == 415
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await row_counts(engine) == before


async def test_unknown_dag_id_is_404_problem(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/dags/does-not-exist", headers=AUTH)
    assert response.status_code == 404
    assert response.json()["type"].endswith("not-found")
