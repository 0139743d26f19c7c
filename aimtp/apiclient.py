"""A small client of the AIMTP HTTP API (and of gRPC ``WatchDag``), used by the ``aimtp``
user commands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp
import grpc
import msgspec

from aimtp.backoff import backoff_delay
from aimtp.v1 import dags_pb2, dags_pb2_grpc


class ApiError(Exception):
    """The server answered with a problem document (4xx/5xx)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        lines = [f"{detail} (HTTP {status})"]
        for error in problem.get("errors") or []:
            field = error.get("field") or "<body>"
            lines.append(f"  {field}: {error.get('message')}")
        super().__init__("\n".join(lines))


class Unreachable(Exception):
    """No answer from the server at all."""


_RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


class AimtpClient:
    def __init__(self, base_url: str, token: str, *, timeout_seconds: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers={"Authorization": f"Bearer {self._token}"}
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def submit(
        self, spec_json: bytes, *, idempotency_key: str | None = None, attempts: int = 4
    ) -> dict[str, Any]:
        """Submit, retrying timeouts and 5xx with one Idempotency-Key so that a retry
        can never create a second DAG."""
        key = idempotency_key or str(uuid.uuid4())
        for attempt in range(1, attempts + 1):
            try:
                return await self._request(
                    "POST",
                    "/v1/dags",
                    data=spec_json,
                    headers={"Content-Type": "application/json", "Idempotency-Key": key},
                )
            except (Unreachable, ApiError) as exc:
                retryable = isinstance(exc, Unreachable) or exc.status in _RETRYABLE_STATUS
                if not retryable or attempt == attempts:
                    raise
                await asyncio.sleep(backoff_delay(attempt, base=0.5, cap=5.0))
        raise AssertionError("unreachable")  # pragma: no cover

    async def get(self, dag_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/dags/{dag_id}")

    async def list(
        self,
        *,
        states: Sequence[str] = (),
        labels: Sequence[str] = (),
        name_prefix: str | None = None,
        limit: int = 50,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        params: list[tuple[str, str]] = [("limit", str(limit))]
        params += [("state", state) for state in states]
        params += [("label", label) for label in labels]
        if name_prefix:
            params.append(("name_prefix", name_prefix))
        if page_token:
            params.append(("page_token", page_token))
        return await self._request("GET", "/v1/dags", params=params)

    async def cancel(self, dag_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/v1/dags/{dag_id}/cancel")

    async def retry(self, dag_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/v1/dags/{dag_id}/retry")

    async def events(self, dag_id: str) -> dict[str, Any]:
        return await self._request("GET", f"/v1/dags/{dag_id}/events")

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        assert self._session is not None, "use AimtpClient as an async context manager"
        try:
            async with self._session.request(method, self.base_url + path, **kwargs) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise Unreachable(f"cannot reach the AIMTP server at {self.base_url}: {exc}") from exc
        try:
            document: dict[str, Any] = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError:
            document = {"detail": body.decode(errors="replace")[:500]}
        if status >= 400:
            raise ApiError(status, document)
        return document


class WatchUnavailable(Exception):
    """The gRPC API cannot be reached (or lacks WatchDag); the caller polls instead."""


# Codes after which a watch is worth resuming: the server went away or restarted.
_RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


async def watch_dag(
    target: str, token: str, dag_id: str, *, reconnects: int = 5
) -> AsyncIterator[dict[str, Any]]:
    """Every transition of the DAG from the gRPC ``WatchDag`` stream, in order, until it
    ends, with the task phases each time they change.

    Yields ``{"kind": "transition", ...}`` per transition and ``{"kind": "tasks",
    "tasks": {name: phase}}`` when the server sends the DAG again. ``target`` is
    ``host:port``. A dropped stream is resumed after the last transition received, so
    none is missed or repeated. Raises ``WatchUnavailable`` when no stream could be
    opened at all.
    """
    metadata = (("authorization", f"Bearer {token}"),)
    cursor, failures, received = 0, 0, False
    async with grpc.aio.insecure_channel(target.removeprefix("grpc://")) as channel:
        stub = dags_pb2_grpc.DagServiceStub(channel)
        while True:
            try:
                async for item in stub.WatchDag(
                    dags_pb2.WatchDagRequest(id=dag_id, after=cursor), metadata=metadata
                ):
                    received = True
                    failures = 0
                    if item.HasField("transition"):
                        cursor = item.transition.id
                        yield _transition_dict(item.transition)
                    else:
                        phases = {name: task.phase for name, task in item.dag.tasks.items()}
                        yield {"kind": "tasks", "tasks": phases}
                return
            except grpc.aio.AioRpcError as exc:
                if not received and exc.code() in (*_RESUMABLE, grpc.StatusCode.UNIMPLEMENTED):
                    raise WatchUnavailable(f"gRPC API at {target}: {exc.details()}") from exc
                failures += 1
                if exc.code() not in _RESUMABLE or failures > reconnects:
                    raise Unreachable(f"lost the watch of DAG {dag_id}: {exc.details()}") from exc
                await asyncio.sleep(backoff_delay(failures, base=0.5, cap=5.0))


def _transition_dict(transition: dags_pb2.DagTransition) -> dict[str, Any]:
    def state(value: int) -> str | None:
        name = dags_pb2.DagState.Name(dags_pb2.DagState.ValueType(value))
        return None if value == dags_pb2.DAG_STATE_UNSPECIFIED else name.removeprefix("DAG_STATE_")

    return {
        "kind": "transition",
        "id": transition.id,
        "from_state": state(transition.from_state),
        "to_state": state(transition.to_state),
        "attempt": transition.attempt,
        "actor": transition.actor,
        "reason": transition.reason if transition.HasField("reason") else None,
        "at": transition.at.ToDatetime().isoformat() + "Z",
    }
