"""``aimtp.v1.DagService``: authenticate, call ``app.service.DagService``, convert."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from aimtp.db.records import DagRecord
from aimtp.v1 import dags_pb2 as pb
from aimtp.v1 import dags_pb2_grpc
from app.auth import TokenRegistry
from app.grpc.convert import (
    dag_to_pb,
    state_from_pb,
    summary_to_pb,
    transition_to_pb,
)
from app.grpc.errors import RpcError, bad_request, from_service, rate_limited
from app.service import DEFAULT_PAGE_SIZE, DagService, dag_filter

log = logging.getLogger(__name__)

_R = TypeVar("_R")
Context = grpc.aio.ServicerContext[Any, Any]


class TenantRateLimiter:
    """Calls per tenant per one-second window, like the HTTP limiter, counted per process.

    The HTTP and gRPC listeners keep separate counts: each transport allows
    ``per_second`` calls to one tenant.
    """

    def __init__(self, per_second: int) -> None:
        self._limit = per_second
        self._windows: dict[str, tuple[int, int]] = {}

    def check(self, tenant: str) -> None:
        if self._limit <= 0:
            return
        now = time.monotonic()
        second = math.floor(now)
        window, count = self._windows.get(tenant, (second, 0))
        if window != second:
            window, count = second, 0
        if count >= self._limit:
            raise rate_limited(second + 1 - now)
        self._windows[tenant] = (window, count + 1)


class DagServicer(dags_pb2_grpc.DagServiceServicer):
    def __init__(
        self,
        service: DagService,
        registry: TokenRegistry,
        limiter: TenantRateLimiter,
        request_timeout: float,
        stopping: asyncio.Event,
    ) -> None:
        self._service = service
        self._registry = registry
        self._limiter = limiter
        self._timeout = request_timeout
        self._stopping = stopping

    # ------------------------------------------------------------ RPCs

    async def SubmitDag(
        self, request: pb.SubmitDagRequest, context: Context
    ) -> pb.SubmitDagResponse:
        key = _metadata(context, "idempotency-key")

        async def call(tenant: str) -> pb.SubmitDagResponse:
            submission = await self._service.submit(
                tenant,
                request.spec_json,
                idempotency_key=key,
                traceparent=_metadata(context, "traceparent"),
            )
            return pb.SubmitDagResponse(
                dag=dag_to_pb(submission.dag), replayed=not submission.created
            )

        return await self._unary(context, call)

    async def GetDag(self, request: pb.GetDagRequest, context: Context) -> pb.Dag:
        return await self._dag_call(context, lambda tenant: self._service.get(tenant, request.id))

    async def ListDags(self, request: pb.ListDagsRequest, context: Context) -> pb.ListDagsResponse:
        async def call(tenant: str) -> pb.ListDagsResponse:
            try:
                states = [state_from_pb(value) for value in request.states]
            except ValueError as exc:
                raise bad_request(str(exc), []) from None
            filters = dag_filter(
                states,
                list(request.labels),
                request.name_prefix or None,
                request.created_after.ToDatetime() if request.HasField("created_after") else None,
                request.created_before.ToDatetime() if request.HasField("created_before") else None,
            )
            dags, token = await self._service.search(
                tenant, filters, request.page_size or DEFAULT_PAGE_SIZE, request.page_token or None
            )
            return pb.ListDagsResponse(
                dags=[summary_to_pb(dag) for dag in dags], next_page_token=token or ""
            )

        return await self._unary(context, call)

    async def CancelDag(self, request: pb.CancelDagRequest, context: Context) -> pb.Dag:
        traceparent = _metadata(context, "traceparent")
        return await self._dag_call(
            context,
            lambda tenant: self._service.cancel(tenant, request.id, traceparent=traceparent),
        )

    async def RetryDag(self, request: pb.RetryDagRequest, context: Context) -> pb.Dag:
        traceparent = _metadata(context, "traceparent")
        return await self._dag_call(
            context,
            lambda tenant: self._service.retry(tenant, request.id, traceparent=traceparent),
        )

    async def ListDagEvents(
        self, request: pb.ListDagEventsRequest, context: Context
    ) -> pb.ListDagEventsResponse:
        async def call(tenant: str) -> pb.ListDagEventsResponse:
            history = await self._service.history(tenant, request.id)
            return pb.ListDagEventsResponse(
                dag_id=request.id, events=[transition_to_pb(request.id, t) for t in history]
            )

        return await self._unary(context, call)

    async def WatchDag(
        self, request: pb.WatchDagRequest, context: Context
    ) -> AsyncIterator[pb.WatchDagResponse]:
        # No request timeout: a watch lasts as long as the DAG runs.
        tenant = await self._authenticate(context)
        cursor = request.after
        terminal = False
        try:
            async for item in self._service.watch(
                tenant, request.id, request.after, stop=self._stopping
            ):
                if isinstance(item, DagRecord):
                    terminal = item.state.terminal
                    yield pb.WatchDagResponse(dag=dag_to_pb(item))
                else:
                    cursor, terminal = item.id, item.to_state.terminal
                    yield pb.WatchDagResponse(transition=transition_to_pb(request.id, item))
        except Exception as exc:
            await _abort(context, exc)
        if not terminal and self._stopping.is_set():
            await _abort(
                context,
                RpcError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the server is shutting down; watch again with after={cursor}",
                ),
            )

    # ------------------------------------------------------------ plumbing

    async def _authenticate(self, context: Context) -> str:
        scheme, _, token = (_metadata(context, "authorization") or "").partition(" ")
        tenant = None
        if scheme.lower() == "bearer" and token.strip():
            tenant = self._registry.tenant_for(token.strip())
        if tenant is None:
            return await _abort(
                context,
                RpcError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "missing or invalid bearer token: send 'authorization: Bearer <token>'",
                ),
            )
        try:
            self._limiter.check(tenant.name)
        except RpcError as exc:
            await _abort(context, exc)
        return tenant.name

    async def _unary(self, context: Context, call: Callable[[str], Awaitable[_R]]) -> _R:
        tenant = await self._authenticate(context)
        try:
            async with asyncio.timeout(self._timeout):
                return await call(tenant)
        except TimeoutError:
            error: Exception = RpcError(
                grpc.StatusCode.UNAVAILABLE,
                f"the request did not complete within {self._timeout:g}s; retry it "
                "(with the same idempotency-key for submissions)",
            )
        except Exception as exc:
            error = exc
        return await _abort(context, error)

    async def _dag_call(
        self, context: Context, call: Callable[[str], Awaitable[DagRecord]]
    ) -> pb.Dag:
        async def convert(tenant: str) -> pb.Dag:
            return dag_to_pb(await call(tenant))

        return await self._unary(context, convert)


def _metadata(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode()
    return None


async def _abort(context: Context, exc: Exception) -> NoReturn:
    """End the call with the status for ``exc``; a server fault is logged, not shown."""
    error = from_service(exc)
    if error is None:
        log.error("unhandled error in a gRPC call", exc_info=exc)
        error = RpcError(
            grpc.StatusCode.INTERNAL,
            "the server could not complete the request; it has been logged",
        )
    await context.abort_with_status(error.to_status())
