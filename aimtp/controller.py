"""Controller HTTP contract: the typed messages and the client AIMTP uses to call it.

The Controller turns a DAG into Kubernetes resources. AIMTP talks to it over a small REST API
keyed by ``dag_id``, which makes every call idempotent and therefore safe to retry:

- ``PUT /v1/workloads/{dag_id}`` (``WorkloadRequest``) -> 201 created / 200 already exists
- ``GET /v1/workloads/{dag_id}`` -> ``Workload`` or 404
- ``DELETE /v1/workloads/{dag_id}`` -> 200/202 deleted, 404 already gone
- ``GET /v1/workloads`` -> list of ``Workload``

The Controller reports progress by POSTing ``StatusReport`` to the workload's callback URL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from aimtp import metrics
from aimtp.settings import ControllerSettings, load

__all__ = [
    "WORKLOADS_PATH",
    "ControllerClient",
    "ControllerError",
    "ControllerRejected",
    "ControllerUnavailable",
    "OnCall",
    "Phase",
    "Problem",
    "PutResult",
    "StatusReport",
    "TaskStatus",
    "Workload",
    "WorkloadRequest",
    "is_retryable",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

WORKLOADS_PATH: Final = "/v1/workloads"

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]


class TaskStatus(msgspec.Struct, kw_only=True):
    """Progress of one task of a workload."""

    phase: Phase = "Pending"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""


class WorkloadRequest(msgspec.Struct, kw_only=True):
    """Body of ``PUT /v1/workloads/{dag_id}``; ``spec`` is the DAG spec JSON object."""

    dag_id: str
    attempt: int
    spec: dict[str, Any]
    callback_url: str
    traceparent: str | None = None


class Workload(msgspec.Struct, kw_only=True):
    """The Controller's view of one DAG; ``reference`` is the Controller's own id."""

    dag_id: str
    attempt: int
    reference: str
    phase: Phase
    tasks: dict[str, TaskStatus]
    message: str = ""
    created_at: datetime
    updated_at: datetime


class StatusReport(msgspec.Struct, kw_only=True):
    """Body of the Controller's status callback to ``WorkloadRequest.callback_url``."""

    dag_id: str
    attempt: int
    reference: str
    phase: Phase
    tasks: dict[str, TaskStatus]
    message: str = ""
    observed_at: datetime


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details, the body of every Controller error response."""

    type: str = "about:blank"
    title: str = ""
    status: int | None = None
    detail: str = ""


class PutResult(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of ``put_workload``: ``created`` is False when the workload already existed."""

    created: bool
    workload: Workload


class ControllerError(Exception):
    """Base class of every error raised by ``ControllerClient``."""


class ControllerRejected(ControllerError):
    """The Controller refused the request (4xx): retrying the same request cannot succeed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"controller rejected the request (HTTP {status}): {detail}")
        self.status = status
        self.detail = detail


class ControllerUnavailable(ControllerError):
    """The call may or may not have taken effect (5xx, timeout, network error): retry it."""

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # Seconds the Controller asked us to wait (Retry-After), when it said so.
        self.retry_after = retry_after


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the failed Controller call later may succeed."""
    if isinstance(exc, ControllerError):
        return isinstance(exc, ControllerUnavailable)
    # Raw transport errors only escape when a caller bypasses the client's mapping.
    return isinstance(exc, TimeoutError | aiohttp.ClientError)


OnCall = Callable[[str, str, float], None]
"""Hook ``(operation, status, seconds)`` run after every call; status is the HTTP code as
text, or ``"timeout"`` / ``"error"`` when no response arrived."""

# 408 and 429 are 4xx codes that mean "not now" rather than "never": treating them as
# permanent would fail a DAG over a transient overload.
_RETRYABLE_4XX: Final = frozenset({408, 429})
_MAX_DETAIL_CHARS: Final = 500

_workload_decoder: Final = msgspec.json.Decoder(Workload)
_workload_list_decoder: Final = msgspec.json.Decoder(list[Workload])
_problem_decoder: Final = msgspec.json.Decoder(Problem)
_encoder: Final = msgspec.json.Encoder()


class ControllerClient:
    """Async client for the Controller API; one pooled ``aiohttp.ClientSession`` per client.

    Use ``await start()`` / ``await close()`` or ``async with``. A session passed in is used
    as is and never closed by the client.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_seconds: float = 10.0,
        connect_timeout_seconds: float = 3.0,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Passed on every request so an injected session gets the same limits.
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=connect_timeout_seconds
        )
        self._max_connections = max_connections
        self._session = session
        self._owns_session = session is None
        self._on_call = on_call

    async def start(self) -> None:
        """Create the HTTP session (no-op when one was injected or already started)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector)
            self._owns_session = True

    async def close(self) -> None:
        """Close the session the client created; an injected session is left open."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def put_workload(self, req: WorkloadRequest) -> PutResult:
        """Create the workload for ``req.dag_id``, or return the existing one."""
        headers = {"Content-Type": "application/json"}
        if req.traceparent:
            headers["traceparent"] = req.traceparent
        status, body = await self._call(
            "put_workload", "PUT", self._url(req.dag_id), _encoder.encode(req), headers
        )
        if status not in (200, 201):
            raise _unexpected("put_workload", status)
        return PutResult(created=status == 201, workload=_decode(_workload_decoder, body))

    async def get_workload(self, dag_id: str) -> Workload | None:
        """The workload for ``dag_id``, or None when the Controller does not know it."""
        status, body = await self._call("get_workload", "GET", self._url(dag_id), ok={404})
        if status == 404:
            return None
        if status != 200:
            raise _unexpected("get_workload", status)
        return _decode(_workload_decoder, body)

    async def delete_workload(self, dag_id: str) -> bool:
        """Cancel the workload: True when deleted now, False when it was already gone."""
        status, _ = await self._call("delete_workload", "DELETE", self._url(dag_id), ok={404})
        if status == 404:
            return False
        if status not in (200, 202, 204):
            raise _unexpected("delete_workload", status)
        return True

    async def list_workloads(self) -> list[Workload]:
        """Every workload the Controller knows (used to find orphans)."""
        url = URL(self._base_url + WORKLOADS_PATH, encoded=True)
        status, body = await self._call("list_workloads", "GET", url)
        if status != 200:
            raise _unexpected("list_workloads", status)
        return _decode(_workload_list_decoder, body)

    def _url(self, dag_id: str) -> URL:
        # encoded=True keeps yarl from undoing the quoting of "/" inside a dag id.
        return URL(f"{self._base_url}{WORKLOADS_PATH}/{quote(dag_id, safe='')}", encoded=True)

    async def _call(
        self,
        operation: str,
        method: str,
        url: URL,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        ok: Collection[int] = (),
    ) -> tuple[int, bytes]:
        """Send one request; map transport failures and error statuses to ControllerError."""
        if self._session is None:
            raise RuntimeError("ControllerClient is not started; call start() first")
        all_headers = {**self._headers, **(headers or {})}
        outcome = "error"
        started = time.perf_counter()
        try:
            async with self._session.request(
                method, url, data=data, headers=all_headers, timeout=self._timeout
            ) as resp:
                body = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
                outcome = str(status)
        except TimeoutError as exc:
            outcome = "timeout"
            raise ControllerUnavailable(f"{operation}: controller timed out") from exc
        except aiohttp.ClientError as exc:
            raise ControllerUnavailable(f"{operation}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._report(operation, outcome, time.perf_counter() - started)
        if status >= 400 and status not in ok:
            raise _error_for(operation, status, body, retry_after)
        return status, body

    def _report(self, operation: str, outcome: str, seconds: float) -> None:
        if self._on_call is None:
            return
        try:
            self._on_call(operation, outcome, seconds)
        except Exception:
            # A broken metrics hook must never turn a good call into a failed one.
            log.exception("controller on_call hook failed")


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes) -> _T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        # Retryable: a malformed answer says nothing about whether the request was valid.
        raise ControllerUnavailable(f"malformed controller response: {exc}") from exc


def _unexpected(operation: str, status: int) -> ControllerUnavailable:
    return ControllerUnavailable(f"{operation}: unexpected HTTP {status}", status=status)


def _error_for(
    operation: str, status: int, body: bytes, retry_after: str | None
) -> ControllerError:
    detail = _detail(status, body)
    if status >= 500 or status in _RETRYABLE_4XX:
        return ControllerUnavailable(
            f"{operation}: HTTP {status}: {detail}",
            status=status,
            retry_after=_parse_retry_after(retry_after),
        )
    return ControllerRejected(status, detail)


def _detail(status: int, body: bytes) -> str:
    """The problem+json ``detail``, else the body text, else a generic message."""
    try:
        problem = _problem_decoder.decode(body)
    except msgspec.DecodeError:
        problem = None
    if problem is not None and problem.detail:
        return problem.detail
    text = body.decode("utf-8", errors="replace").strip()
    return text[:_MAX_DETAIL_CHARS] if text else f"HTTP {status}"


def _parse_retry_after(value: str | None) -> float | None:
    # Only the delay-seconds form: the Controller never sends an HTTP date.
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def controller_client(settings: ControllerSettings | None = None) -> ControllerClient:
    """The Controller client of a process, from settings, with call latency metrics attached."""
    settings = settings or load(ControllerSettings)

    def observe(operation: str, status: str, seconds: float) -> None:
        metrics.CONTROLLER_CALL_SECONDS.labels(operation, status).observe(seconds)

    return ControllerClient(
        settings.controller_url,
        settings.controller_token,
        timeout_seconds=settings.controller_timeout_seconds,
        connect_timeout_seconds=settings.controller_connect_timeout_seconds,
        max_connections=settings.controller_max_connections,
        on_call=observe,
    )
