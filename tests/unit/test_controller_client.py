"""ControllerClient against a small in-process aiohttp app."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp
import msgspec
import pytest
from aiohttp import web

from aimtp.controller import (
    ControllerClient,
    ControllerRejected,
    ControllerUnavailable,
    TaskStatus,
    Workload,
    WorkloadRequest,
    is_retryable,
)

TOKEN = "controller-secret"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


def _workload(dag_id: str = "dag-1", phase: str = "Pending") -> Workload:
    return msgspec.convert(
        {
            "dag_id": dag_id,
            "attempt": 1,
            "reference": "wl-123",
            "phase": phase,
            "tasks": {"train": {"phase": phase}},
            "created_at": NOW,
            "updated_at": NOW,
        },
        Workload,
    )


def _request(dag_id: str = "dag-1") -> WorkloadRequest:
    return WorkloadRequest(
        dag_id=dag_id,
        attempt=1,
        spec={"name": "p", "tasks": [{"name": "train", "image": "img:1"}]},
        callback_url="http://127.0.0.1:1/callbacks",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


@asynccontextmanager
async def _serve(*routes: Route) -> AsyncIterator[str]:
    """Serve ``routes`` on an ephemeral 127.0.0.1 port; yields the base URL."""
    app = web.Application()
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


Calls = list[tuple[str, str, float]]


@asynccontextmanager
async def _client(
    base_url: str, *, client_timeout: float = 2.0, calls: Calls | None = None
) -> AsyncIterator[ControllerClient]:
    """A client using an injected session, recording its on_call invocations."""
    recorded = calls if calls is not None else []
    async with aiohttp.ClientSession() as session:
        yield ControllerClient(
            base_url,
            TOKEN,
            timeout_seconds=client_timeout,
            session=session,
            on_call=lambda op, status, secs: recorded.append((op, status, secs)),
        )


async def test_put_maps_201_to_created_and_sends_auth_and_body() -> None:
    seen: list[tuple[str | None, str | None, WorkloadRequest, str]] = []

    async def put(request: web.Request) -> web.Response:
        body = msgspec.json.decode(await request.read(), type=WorkloadRequest)
        seen.append(
            (
                request.headers.get("Authorization"),
                request.headers.get("traceparent"),
                body,
                request.match_info["dag_id"],
            )
        )
        return _json(_workload(body.dag_id), 201 if len(seen) == 1 else 200)

    calls: Calls = []
    async with (
        _serve(("PUT", "/v1/workloads/{dag_id}", put)) as url,
        _client(url, calls=calls) as client,
    ):
        first = await client.put_workload(_request())
        second = await client.put_workload(_request())

    assert first.created is True
    assert second.created is False
    assert first.workload == _workload()
    assert first.workload.tasks["train"] == TaskStatus(phase="Pending")
    auth, traceparent, body, path_id = seen[0]
    assert auth == f"Bearer {TOKEN}"
    assert traceparent == _request().traceparent
    assert body == _request()
    assert path_id == "dag-1"
    assert [(op, status) for op, status, _ in calls] == [
        ("put_workload", "201"),
        ("put_workload", "200"),
    ]
    assert all(secs >= 0 for _, _, secs in calls)


async def test_dag_id_is_quoted_in_the_path() -> None:
    async def get(request: web.Request) -> web.Response:
        return _json(_workload(request.match_info["dag_id"]))

    async with _serve(("GET", "/v1/workloads/{dag_id}", get)) as url, _client(url) as client:
        workload = await client.get_workload("team a/dag?1")

    assert workload is not None
    assert workload.dag_id == "team a/dag?1"


async def test_4xx_problem_raises_rejected_with_detail() -> None:
    async def put(request: web.Request) -> web.Response:
        problem = {"title": "Unprocessable", "status": 422, "detail": "image 'x' not allowed"}
        return web.Response(
            body=msgspec.json.encode(problem),
            status=422,
            content_type="application/problem+json",
        )

    calls: Calls = []
    async with (
        _serve(("PUT", "/v1/workloads/{dag_id}", put)) as url,
        _client(url, calls=calls) as client,
    ):
        with pytest.raises(ControllerRejected) as info:
            await client.put_workload(_request())

    assert info.value.status == 422
    assert info.value.detail == "image 'x' not allowed"
    assert not is_retryable(info.value)
    assert [(op, status) for op, status, _ in calls] == [("put_workload", "422")]


async def test_4xx_without_problem_body_uses_body_text() -> None:
    async def put(request: web.Request) -> web.Response:
        return web.Response(text="no such thing", status=400)

    async with _serve(("PUT", "/v1/workloads/{dag_id}", put)) as url, _client(url) as client:
        with pytest.raises(ControllerRejected) as info:
            await client.put_workload(_request())

    assert info.value.status == 400
    assert info.value.detail == "no such thing"


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_5xx_and_429_raise_unavailable(status: int) -> None:
    async def put(request: web.Request) -> web.Response:
        return web.Response(text="busy", status=status, headers={"Retry-After": "3"})

    async with _serve(("PUT", "/v1/workloads/{dag_id}", put)) as url, _client(url) as client:
        with pytest.raises(ControllerUnavailable) as info:
            await client.put_workload(_request())

    assert info.value.status == status
    assert info.value.retry_after == 3.0
    assert is_retryable(info.value)


async def test_timeout_raises_unavailable_and_reports_timeout() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return _json(_workload())

    calls: Calls = []
    async with (
        _serve(("GET", "/v1/workloads/{dag_id}", slow)) as url,
        _client(url, client_timeout=0.2, calls=calls) as client,
    ):
        with pytest.raises(ControllerUnavailable) as info:
            await client.get_workload("dag-1")

    assert is_retryable(info.value)
    assert [(op, status) for op, status, _ in calls] == [("get_workload", "timeout")]
    assert calls[0][2] >= 0.2


async def test_connection_error_raises_unavailable_and_reports_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    calls: Calls = []
    async with _client(f"http://127.0.0.1:{port}", calls=calls) as client:
        with pytest.raises(ControllerUnavailable):
            await client.list_workloads()

    assert [(op, status) for op, status, _ in calls] == [("list_workloads", "error")]


async def test_get_404_returns_none_and_200_decodes() -> None:
    async def get(request: web.Request) -> web.Response:
        if request.match_info["dag_id"] == "known":
            return _json(_workload("known", "Running"))
        return web.Response(status=404, text="not found")

    async with _serve(("GET", "/v1/workloads/{dag_id}", get)) as url, _client(url) as client:
        assert await client.get_workload("unknown") is None
        workload = await client.get_workload("known")

    assert workload is not None
    assert workload.phase == "Running"
    assert workload.created_at == NOW


async def test_delete_maps_404_to_false_and_2xx_to_true() -> None:
    async def delete(request: web.Request) -> web.Response:
        if request.match_info["dag_id"] == "gone":
            return web.Response(status=404)
        return web.Response(status=202)

    route: Route = ("DELETE", "/v1/workloads/{dag_id}", delete)
    async with _serve(route) as url, _client(url) as client:
        assert await client.delete_workload("gone") is False
        assert await client.delete_workload("live") is True


async def test_list_workloads_decodes_list() -> None:
    async def listing(request: web.Request) -> web.Response:
        return _json([_workload("a"), _workload("b")])

    async with _serve(("GET", "/v1/workloads", listing)) as url, _client(url) as client:
        workloads = await client.list_workloads()

    assert [w.dag_id for w in workloads] == ["a", "b"]


async def test_malformed_success_body_is_retryable() -> None:
    async def get(request: web.Request) -> web.Response:
        return _json({"unexpected": True})

    async with _serve(("GET", "/v1/workloads/{dag_id}", get)) as url, _client(url) as client:
        with pytest.raises(ControllerUnavailable, match="malformed"):
            await client.get_workload("dag-1")


async def test_failing_on_call_hook_does_not_break_the_call() -> None:
    async def get(request: web.Request) -> web.Response:
        return _json(_workload())

    def broken_hook(operation: str, status: str, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    async with (
        _serve(("GET", "/v1/workloads/{dag_id}", get)) as url,
        aiohttp.ClientSession() as session,
    ):
        client = ControllerClient(url, TOKEN, session=session, on_call=broken_hook)
        assert await client.get_workload("dag-1") == _workload()


async def test_owned_session_lifecycle_and_injected_session_left_open() -> None:
    async def get(request: web.Request) -> web.Response:
        return _json(_workload())

    async with _serve(("GET", "/v1/workloads/{dag_id}", get)) as url:
        async with ControllerClient(url, TOKEN, max_connections=2) as client:
            assert await client.get_workload("dag-1") == _workload()
        with pytest.raises(RuntimeError, match="not started"):
            await client.get_workload("dag-1")

        async with aiohttp.ClientSession() as session:
            injected = ControllerClient(url, TOKEN, session=session)
            await injected.start()
            await injected.close()
            assert not session.closed


def test_is_retryable_classifies_raw_errors() -> None:
    assert is_retryable(TimeoutError())
    assert is_retryable(aiohttp.ClientConnectionError())
    assert not is_retryable(ValueError())
    assert not is_retryable(ControllerRejected(401, "bad token"))
