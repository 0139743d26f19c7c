"""A hostile corpus over HTTP: what an attacker or a broken client sends.

Free-text fields (annotation values, env values, command, args) take any text and give it
back verbatim; every structured field (names, labels, keys, images, quantities) refuses it
by its syntax rules. Whatever is refused is a 4xx problem+json, and nothing is written.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from app import create_app
from tests.conftest import CONTROLLER_CALLBACK_TOKEN
from tests.services import row_counts

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "examples" / "dag.json").read_text()
)
AUTH = {"Authorization": "Bearer tenant-a-token"}
JSON = {**AUTH, "Content-Type": "application/json"}
CONTROLLER = {
    "Authorization": f"Bearer {CONTROLLER_CALLBACK_TOKEN}",
    "Content-Type": "application/json",
}

HOSTILE: dict[str, str] = {
    "sql-quote": "'; DROP TABLE dags; --",
    "sql-or": '" OR 1=1 /* */ UNION SELECT * FROM outbox',
    "sql-like": "%_\\%\\_",
    "backslashes": "\\\\' \\\" \\n",
    "cjk-emoji": "训练模型 🚀🔥",
    "bidi-zero-width": "\u202etxt.exe\u200b\u200d\ufeff",
    "combining": "e\u0301\u0301\u0301 Z\u0351\u0352\u0353",
    "four-byte": "\U0001f9ec\U00010348\U0001d11e",
    "control-chars": "\x01\x07\x1b[31m\x7f\r\n\t",
    "json-in-string": '{"name": "x", "tasks": []}',
    "html": "<script>alert(1)</script>",
    "long-60k": "é" * 30_000,  # 60,000 bytes; free text is capped at 64 KiB
}
NUL = "before\x00after"


def _with_text(text: str) -> dict[str, Any]:
    """The example DAG with ``text`` in every free-text field of the DAG and a task."""
    dag = copy.deepcopy(EXAMPLE)
    dag["annotations"]["example.com/hostile"] = text
    task = dag["tasks"][0]
    task["annotations"]["example.com/hostile"] = text
    task["env"]["HOSTILE"] = text
    task["command"] = [*task["command"], text]
    task["args"] = [*task["args"], text]
    return dag


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app()) as client:
        yield client


async def _refused(
    client: AsyncTestClient[Any],
    engine: AsyncEngine,
    body: bytes,
    status: int,
    headers: dict[str, str] | None = None,
    path: str = "/v1/dags",
) -> dict[str, Any]:
    """POSTs ``body``; asserts a ``status`` problem+json and no row written. The problem."""
    before = await row_counts(engine)
    response = await client.post(path, content=body, headers=headers or JSON)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    assert await row_counts(engine) == before
    return problem


def _fields(problem: dict[str, Any]) -> list[str]:
    return [error["field"] for error in problem.get("errors") or []]


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_free_text_is_stored_and_returned_verbatim(
    client: AsyncTestClient[Any], text: str
) -> None:
    sent = _with_text(text)
    # Raw UTF-8 on the wire, not \u escapes: the bytes a non-Python client sends.
    body = json.dumps(sent, ensure_ascii=False).encode()
    response = await client.post("/v1/dags", content=body, headers=JSON)
    assert response.status_code == 202, response.text[:500]

    got = await client.get(response.headers["location"], headers=AUTH)

    assert got.status_code == 200
    spec = got.json()["spec"]
    task = spec["tasks"][0]
    assert spec["annotations"]["example.com/hostile"] == text
    assert task["annotations"]["example.com/hostile"] == text
    assert task["env"]["HOSTILE"] == text
    assert task["command"][-1] == text
    assert task["args"][-1] == text
    # The rest of the DAG is untouched by its neighbour's payload.
    assert spec["name"] == EXAMPLE["name"]
    assert [t["name"] for t in spec["tasks"]] == [t["name"] for t in EXAMPLE["tasks"]]


async def test_nul_bytes_in_free_text_are_refused_by_field(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    problem = await _refused(client, engine, json.dumps(_with_text(NUL)).encode(), 422)
    fields = _fields(problem)
    for field in ("tasks[0].command[3]", "tasks[0].args[4]", 'tasks[0].env["HOSTILE"]'):
        assert field in fields, fields


STRUCTURED: list[tuple[str, str]] = [
    # (a path in the DAG, the field the problem must name)
    ("name", "name"),
    ("tasks.0.name", "tasks[0].name"),
    ("tasks.1.depends_on.0", "tasks[1].depends_on[0]"),
    ("labels.team", "labels"),
    ("tasks.0.resources.cpu", "tasks[0].resources.cpu"),
    ("tasks.0.resources.memory", "tasks[0].resources.memory"),
]


def _put(dag: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = dag
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize(("path", "field"), STRUCTURED, ids=[s[0] for s in STRUCTURED])
@pytest.mark.parametrize("text", [*HOSTILE.values(), NUL], ids=[*HOSTILE, "nul"])
async def test_structured_fields_refuse_hostile_text(
    client: AsyncTestClient[Any], engine: AsyncEngine, path: str, field: str, text: str
) -> None:
    dag = copy.deepcopy(EXAMPLE)
    _put(dag, path, text)
    problem = await _refused(client, engine, json.dumps(dag).encode(), 422)
    assert any(f == field or f.startswith(field) for f in _fields(problem)), _fields(problem)


@pytest.mark.parametrize("text", [*HOSTILE.values(), NUL], ids=[*HOSTILE, "nul"])
async def test_hostile_keys_are_refused(
    client: AsyncTestClient[Any], engine: AsyncEngine, text: str
) -> None:
    dag = copy.deepcopy(EXAMPLE)
    dag["labels"] = {text: "x"}
    dag["annotations"] = {text: "x"}
    dag["tasks"][0]["env"] = {text: "x"}
    problem = await _refused(client, engine, json.dumps(dag).encode(), 422)
    fields = _fields(problem)
    for prefix in ("labels", "annotations", "tasks[0].env"):
        assert any(f.startswith(prefix) for f in fields), (prefix, fields)


@pytest.mark.parametrize(
    "image", ["busy box:1", "busybox:1\n", "\tbusybox", "busybox\x00:1", "busybox:1 ; rm -rf /"]
)
async def test_images_with_whitespace_or_nul_are_refused(
    client: AsyncTestClient[Any], engine: AsyncEngine, image: str
) -> None:
    dag = copy.deepcopy(EXAMPLE)
    dag["tasks"][0]["image"] = image
    problem = await _refused(client, engine, json.dumps(dag).encode(), 422)
    assert "tasks[0].image" in _fields(problem)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 422),
        (b'{"name": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", 422),
        (b'{"annotations": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_001, 422),
        (b'{"name": "\\ud800"}', 400),  # a lone surrogate is not text
        (json.dumps(EXAMPLE).encode() + b" " * 1000 + b"}}}}", 400),
        (b"\x00\x00\x00\x00", 400),
        (b"", 400),
        (b'\xef\xbb\xbf{"name": "x"}', 400),  # a byte-order mark is not JSON
    ],
    ids=[
        "deep-array",
        "deep-field",
        "deep-object",
        "lone-surrogate",
        "trailing-garbage",
        "nul-body",
        "empty",
        "bom",
    ],
)
async def test_malformed_and_deeply_nested_bodies_are_refused(
    client: AsyncTestClient[Any], engine: AsyncEngine, body: bytes, status: int
) -> None:
    await _refused(client, engine, body, status)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "json",
        "application/x-www-form-urlencoded",
    ],
)
async def test_wrong_content_types_are_415(
    client: AsyncTestClient[Any], engine: AsyncEngine, content_type: str
) -> None:
    await _refused(
        client,
        engine,
        json.dumps(EXAMPLE).encode(),
        415,
        headers={**AUTH, "Content-Type": content_type},
    )


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 8 * 1024 * 1024])
async def test_oversized_bodies_are_413(
    client: AsyncTestClient[Any], engine: AsyncEngine, size: int
) -> None:
    body = json.dumps(EXAMPLE).encode()
    padded = body[:-1] + b', "pad": "' + b"x" * (size - len(body)) + b'"}'
    assert len(padded) > 1024 * 1024
    await _refused(client, engine, padded, 413)


def _chain(count: int) -> dict[str, Any]:
    """``count`` tasks in one long dependency chain plus a fan-in at the end."""
    tasks: list[dict[str, Any]] = [{"name": "t0", "image": "busybox:1"}]
    tasks += [
        {"name": f"t{i}", "image": "busybox:1", "depends_on": [f"t{i - 1}"]}
        for i in range(1, count - 1)
    ]
    tasks.append(
        {"name": "fan-in", "image": "busybox:1", "depends_on": [f"t{i}" for i in range(count - 1)]}
    )
    return {"name": "enormous", "tasks": tasks}


async def test_500_task_chain_is_accepted_fast(client: AsyncTestClient[Any]) -> None:
    dag = _chain(500)
    started = time.monotonic()
    response = await client.post("/v1/dags", content=json.dumps(dag).encode(), headers=JSON)
    elapsed = time.monotonic() - started

    assert response.status_code == 202, response.text[:500]
    assert elapsed < 2.0, f"a 500-task DAG took {elapsed:.2f}s to accept"
    got = await client.get(response.headers["location"], headers=AUTH)
    assert [t["name"] for t in got.json()["spec"]["tasks"]] == [t["name"] for t in dag["tasks"]]


async def test_501_tasks_are_refused(client: AsyncTestClient[Any], engine: AsyncEngine) -> None:
    problem = await _refused(client, engine, json.dumps(_chain(501)).encode(), 422)
    assert "tasks" in _fields(problem)


async def _submitted(client: AsyncTestClient[Any]) -> str:
    response = await client.post("/v1/dags", content=json.dumps(EXAMPLE).encode(), headers=JSON)
    assert response.status_code == 202
    dag_id: str = response.json()["id"]
    return dag_id


def _report(dag_id: str, phase: str = "Succeeded") -> bytes:
    report = {
        "dag_id": dag_id,
        "attempt": 1,
        "reference": "wl-1",
        "phase": phase,
        "tasks": {},
        "observed_at": "2026-01-01T00:00:00Z",
    }
    return json.dumps(report).encode()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({**JSON}, 401),  # a tenant token is not the Controller's credential
        ({"Content-Type": "application/json"}, 401),
        ({"Authorization": "Bearer not-the-controller", "Content-Type": "application/json"}, 401),
        ({"Authorization": f"Basic {CONTROLLER_CALLBACK_TOKEN}"}, 401),
    ],
    ids=["tenant-token", "no-token", "wrong-token", "basic-scheme"],
)
async def test_forged_status_callbacks_are_refused(
    client: AsyncTestClient[Any], engine: AsyncEngine, headers: dict[str, str], status: int
) -> None:
    dag_id = await _submitted(client)
    await _refused(
        client, engine, _report(dag_id), status, headers=headers, path=f"/v1/dags/{dag_id}/status"
    )
    got = await client.get(f"/v1/dags/{dag_id}", headers=AUTH)
    assert got.json()["state"] == "PENDING"


async def test_status_callback_for_another_dag_id_is_refused(
    client: AsyncTestClient[Any], engine: AsyncEngine
) -> None:
    dag_id = await _submitted(client)
    other = await _submitted(client)
    # The body names one DAG, the path another: refused, neither changes.
    await _refused(
        client, engine, _report(other), 400, headers=CONTROLLER, path=f"/v1/dags/{dag_id}/status"
    )
    # A DAG that does not exist: 404.
    missing = "01a00000-0000-7000-8000-000000000000"
    await _refused(
        client, engine, _report(missing), 404, headers=CONTROLLER, path=f"/v1/dags/{missing}/status"
    )
    for some in (dag_id, other):
        assert (await client.get(f"/v1/dags/{some}", headers=AUTH)).json()["state"] == "PENDING"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"dag_id": 5}',
        b'{"dag_id": "x", "attempt": "one", "phase": "Succeeded"}',
        b'{"dag_id": "x", "attempt": 1, "phase": "Exploded"}',
        b"[" * 50_000 + b"]" * 50_000,
    ],
    ids=["not-json", "wrong-type", "attempt-string", "unknown-phase", "deep"],
)
async def test_malformed_status_reports_are_400(
    client: AsyncTestClient[Any], engine: AsyncEngine, body: bytes
) -> None:
    dag_id = await _submitted(client)
    await _refused(client, engine, body, 400, headers=CONTROLLER, path=f"/v1/dags/{dag_id}/status")


@pytest.mark.parametrize(
    "dag_id",
    ["训练", "'; DROP TABLE dags; --", "%", "a" * 5000, "..%2F..%2Fetc%2Fpasswd", "\u202e"],
)
async def test_hostile_dag_ids_are_404(client: AsyncTestClient[Any], dag_id: str) -> None:
    for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
        response = await client.request(method, f"/v1/dags/{dag_id}{suffix}", headers=AUTH)
        assert response.status_code == 404, (method, suffix, response.text[:300])
        assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "params",
    [
        {"name_prefix": "训练"},
        {"name_prefix": "%"},
        {"label": "team=训练"},
        {"label": "'; DROP TABLE dags; --=x"},
        {"state": "PENDING' OR '1'='1"},
        {"created_after": "yesterday"},
        {"created_after": "-0.5"},
        {"created_before": "9999-12-31T23:59:59-23:59"},
        {"created_after": "0001-01-01T00:00:00+23:59"},
        {"limit": "0"},
        {"page_token": "'; DROP TABLE dags; --"},
    ],
    ids=lambda params: "=".join(next(iter(params.items()))),
)
async def test_hostile_list_queries_are_4xx_and_harmless(
    client: AsyncTestClient[Any], engine: AsyncEngine, params: dict[str, str]
) -> None:
    await _submitted(client)
    before = await row_counts(engine)
    response = await client.get("/v1/dags", params=params, headers=AUTH)
    if response.status_code == 200:
        # A well-formed filter that matches nothing: an empty page, not everything.
        assert response.json()["items"] == []
    else:
        assert response.status_code == 400, response.text[:300]
        assert response.headers["content-type"].startswith("application/problem+json")
    assert await row_counts(engine) == before
