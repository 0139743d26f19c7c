"""The gRPC API against a real grpc.aio server (started by the app's lifespan) and MariaDB.

Every RPC, every error class, tenant isolation, the bad-input corpus, and a DAG
submitted over gRPC stored exactly like one submitted over HTTP.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc
import msgspec
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.records import DagRecord
from aimtp.events import Actor
from aimtp.lifecycle import transition
from aimtp.settings import DatabaseSettings, ServerSettings, load
from aimtp.states import DagState
from aimtp.v1 import dags_pb2 as pb
from aimtp.v1 import dags_pb2_grpc
from app import create_app
from tests.integration.test_bad_input import CASES, EXAMPLE
from tests.services import row_counts

TOKEN_A = (("authorization", "Bearer tenant-a-token"),)
TOKEN_B = (("authorization", "Bearer tenant-b-token"),)
EXAMPLE_JSON = json.dumps(EXAMPLE).encode()


class Api:
    """A running app (HTTP in-process, gRPC on a real port) and clients of both."""

    def __init__(self, http: AsyncTestClient[Litestar], channel: grpc.aio.Channel) -> None:
        self.http = http
        self.channel = channel
        self.stub = dags_pb2_grpc.DagServiceStub(channel)

    async def submit(self, spec: bytes = EXAMPLE_JSON, metadata: Any = TOKEN_A) -> pb.Dag:
        response = await self.stub.SubmitDag(pb.SubmitDagRequest(spec_json=spec), metadata=metadata)
        return response.dag


async def _start(
    settings: ServerSettings | None = None, database: DatabaseSettings | None = None
) -> AsyncIterator[Api]:
    app = create_app(server=settings, database=database, grpc_port=0)
    async with (
        AsyncTestClient(app=app) as http,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel,
    ):
        yield Api(http, channel)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async for running in _start():
        yield running


async def _error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def _details(error: grpc.aio.AioRpcError, kind: type[Any]) -> Any:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "the error carries no google.rpc.Status"
    for packed in status.details:
        if packed.Is(kind.DESCRIPTOR):
            detail = kind()
            packed.Unpack(detail)
            return detail
    raise AssertionError(f"no {kind.__name__} in {status.details}")


async def _drive(engine: AsyncEngine, dag_id: str, *states: DagState) -> None:
    """Move the DAG as the trigger and the Controller would."""
    for state in states:
        async with engine.begin() as conn:
            row = (await conn.execute(QUERIES["get_dag"], {"id": dag_id})).one()
            moved = await transition(conn, DagRecord.from_row(row), state, actor=Actor.TRIGGER)
            assert moved is not None


# ---------------------------------------------------------------- every RPC


async def test_submit_get_list_and_events(api: Api) -> None:
    dag = await api.submit()

    assert dag.state == pb.DAG_STATE_PENDING
    assert dag.name == EXAMPLE["name"]
    assert dict(dag.labels) == EXAMPLE["labels"]
    assert json.loads(dag.spec_json)["tasks"][1]["resources"]["gpu"] == 8
    assert (await api.stub.GetDag(pb.GetDagRequest(id=dag.id), metadata=TOKEN_A)) == dag

    page = await api.stub.ListDags(
        pb.ListDagsRequest(states=[pb.DAG_STATE_PENDING], labels=["team=nlp"]), metadata=TOKEN_A
    )
    assert [d.id for d in page.dags] == [dag.id]
    assert page.next_page_token == ""
    none = await api.stub.ListDags(
        pb.ListDagsRequest(states=[pb.DAG_STATE_RUNNING]), metadata=TOKEN_A
    )
    assert list(none.dags) == []

    history = await api.stub.ListDagEvents(pb.ListDagEventsRequest(id=dag.id), metadata=TOKEN_A)
    assert [(e.from_state, e.to_state, e.actor) for e in history.events] == [
        (pb.DAG_STATE_UNSPECIFIED, pb.DAG_STATE_PENDING, "server")
    ]
    assert history.events[0].id > 0


async def test_list_pages_through_every_dag_once(api: Api) -> None:
    ids = {(await api.submit()).id for _ in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page = await api.stub.ListDags(
            pb.ListDagsRequest(page_size=2, page_token=token), metadata=TOKEN_A
        )
        seen += [d.id for d in page.dags]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids)
    assert seen == sorted(seen, reverse=True)  # newest first: UUIDv7 ids order by time


async def test_cancel_and_retry(api: Api, engine: AsyncEngine) -> None:
    dag = await api.submit()

    cancelling = await api.stub.CancelDag(pb.CancelDagRequest(id=dag.id), metadata=TOKEN_A)
    assert cancelling.state == pb.DAG_STATE_CANCELLING
    again = await api.stub.CancelDag(pb.CancelDagRequest(id=dag.id), metadata=TOKEN_A)
    assert again.state == pb.DAG_STATE_CANCELLING  # idempotent
    await _drive(engine, dag.id, DagState.CANCELLED)

    retried = await api.stub.RetryDag(pb.RetryDagRequest(id=dag.id), metadata=TOKEN_A)
    assert (retried.state, retried.attempt) == (pb.DAG_STATE_PENDING, 2)
    history = await api.stub.ListDagEvents(pb.ListDagEventsRequest(id=dag.id), metadata=TOKEN_A)
    assert [e.to_state for e in history.events] == [
        pb.DAG_STATE_PENDING,
        pb.DAG_STATE_CANCELLING,
        pb.DAG_STATE_CANCELLED,
        pb.DAG_STATE_PENDING,
    ]


async def test_health_and_reflection(api: Api) -> None:
    # The health and reflection stubs are typed for the sync channel only.
    health: Any = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "aimtp.v1.DagService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    reflection: Any = reflection_pb2_grpc.ServerReflectionStub(cast(Any, api.channel))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names: set[str] = set()
    async for answer in reflection.ServerReflectionInfo(iter([request])):
        names |= {s.name for s in answer.list_services_response.service}
    assert {"aimtp.v1.DagService", "grpc.health.v1.Health"} <= names


# ---------------------------------------------------------------- WatchDag


async def test_watch_sends_state_then_each_transition_and_resumes(
    api: Api, engine: AsyncEngine
) -> None:
    dag = await api.submit()
    call = api.stub.WatchDag(pb.WatchDagRequest(id=dag.id), metadata=TOKEN_A)
    stream = aiter(call)
    first = await anext(stream)
    assert first.dag.id == dag.id
    assert first.dag.state == pb.DAG_STATE_PENDING
    submitted = (await anext(stream)).transition
    assert submitted.to_state == pb.DAG_STATE_PENDING

    await _drive(engine, dag.id, DagState.TRIGGERING)
    triggering = (await asyncio.wait_for(anext(stream), 5)).transition
    assert (triggering.from_state, triggering.to_state) == (
        pb.DAG_STATE_PENDING,
        pb.DAG_STATE_TRIGGERING,
    )
    assert triggering.id > submitted.id
    call.cancel()  # the client goes away; it comes back with the last id it saw

    await _drive(engine, dag.id, DagState.RUNNING, DagState.SUCCEEDED)
    resumed = [
        item
        async for item in api.stub.WatchDag(
            pb.WatchDagRequest(id=dag.id, after=triggering.id), metadata=TOKEN_A
        )
    ]
    assert resumed[0].dag.state == pb.DAG_STATE_SUCCEEDED
    assert [i.transition.to_state for i in resumed[1:]] == [
        pb.DAG_STATE_RUNNING,
        pb.DAG_STATE_SUCCEEDED,
    ]  # nothing repeated, nothing missed, and the stream ended at the terminal state


async def test_watch_of_a_finished_dag_ends_after_its_history(
    api: Api, engine: AsyncEngine
) -> None:
    dag = await api.submit()
    await _drive(engine, dag.id, DagState.FAILED)
    items = [i async for i in api.stub.WatchDag(pb.WatchDagRequest(id=dag.id), metadata=TOKEN_A)]
    assert items[0].dag.state == pb.DAG_STATE_FAILED
    assert [i.transition.to_state for i in items[1:]] == [
        pb.DAG_STATE_PENDING,
        pb.DAG_STATE_FAILED,
    ]


async def test_watch_ends_unavailable_with_the_resume_point_at_shutdown() -> None:
    async for api in _start():
        dag = await api.submit()
        call = api.stub.WatchDag(pb.WatchDagRequest(id=dag.id), metadata=TOKEN_A)
        stream = aiter(call)
        await anext(stream)
        last = (await anext(stream)).transition
        # Leaving the app's lifespan stops the gRPC server as a SIGTERM would.
        stopping = asyncio.ensure_future(api.http.__aexit__(None, None, None))
        error = await _error(anext(stream))
        await stopping
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert f"after={last.id}" in (error.details() or "")
        break


# ---------------------------------------------------------------- errors


RPCS: dict[str, Callable[[dags_pb2_grpc.DagServiceAsyncStub, str, Any], Awaitable[Any]]] = {
    "GetDag": lambda s, i, m: s.GetDag(pb.GetDagRequest(id=i), metadata=m),
    "CancelDag": lambda s, i, m: s.CancelDag(pb.CancelDagRequest(id=i), metadata=m),
    "RetryDag": lambda s, i, m: s.RetryDag(pb.RetryDagRequest(id=i), metadata=m),
    "ListDagEvents": lambda s, i, m: s.ListDagEvents(pb.ListDagEventsRequest(id=i), metadata=m),
    "WatchDag": lambda s, i, m: anext(aiter(s.WatchDag(pb.WatchDagRequest(id=i), metadata=m))),
}


@pytest.mark.parametrize("rpc", RPCS)
async def test_unknown_dag_is_not_found(api: Api, rpc: str) -> None:
    error = await _error(RPCS[rpc](api.stub, "0190aaaa-0000-7000-8000-000000000000", TOKEN_A))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("rpc", RPCS)
async def test_another_tenants_dag_is_not_found(api: Api, rpc: str) -> None:
    dag = await api.submit(metadata=TOKEN_A)
    error = await _error(RPCS[rpc](api.stub, dag.id, TOKEN_B))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    page = await api.stub.ListDags(pb.ListDagsRequest(), metadata=TOKEN_B)
    assert list(page.dags) == []
    mine = await api.stub.GetDag(pb.GetDagRequest(id=dag.id), metadata=TOKEN_A)
    assert mine.state == pb.DAG_STATE_PENDING  # tenant-b changed nothing


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer nope"),), (("authorization", "Basic tenant-a-token"),)],
    ids=["missing", "unknown-token", "wrong-scheme"],
)
@pytest.mark.parametrize("rpc", [*RPCS, "SubmitDag", "ListDags"])
async def test_no_valid_token_is_unauthenticated(
    api: Api, engine: AsyncEngine, rpc: str, metadata: Any
) -> None:
    dag = await api.submit()
    before = await row_counts(engine)
    call: Awaitable[Any]
    if rpc == "SubmitDag":
        call = api.stub.SubmitDag(pb.SubmitDagRequest(spec_json=EXAMPLE_JSON), metadata=metadata)
    elif rpc == "ListDags":
        call = api.stub.ListDags(pb.ListDagsRequest(), metadata=metadata)
    else:
        call = RPCS[rpc](api.stub, dag.id, metadata)
    error = await _error(call)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await row_counts(engine) == before


async def test_wrong_state_is_failed_precondition(api: Api, engine: AsyncEngine) -> None:
    dag = await api.submit()
    error = await _error(api.stub.RetryDag(pb.RetryDagRequest(id=dag.id), metadata=TOKEN_A))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION

    await _drive(engine, dag.id, DagState.TRIGGERING, DagState.RUNNING, DagState.SUCCEEDED)
    before = await row_counts(engine)
    error = await _error(api.stub.CancelDag(pb.CancelDagRequest(id=dag.id), metadata=TOKEN_A))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    failure = _details(error, error_details_pb2.PreconditionFailure)
    assert [(v.type, v.description) for v in failure.violations] == [("STATE", "SUCCEEDED")]
    assert await row_counts(engine) == before


async def test_idempotency_key_replays_and_refuses_another_body(
    api: Api, engine: AsyncEngine
) -> None:
    keyed = (*TOKEN_A, ("idempotency-key", "build-42"))
    first = await api.stub.SubmitDag(pb.SubmitDagRequest(spec_json=EXAMPLE_JSON), metadata=keyed)
    replay = await api.stub.SubmitDag(pb.SubmitDagRequest(spec_json=EXAMPLE_JSON), metadata=keyed)
    assert (first.replayed, replay.replayed) == (False, True)
    assert replay.dag.id == first.dag.id
    before = await row_counts(engine)

    other = copy.deepcopy(EXAMPLE)
    other["retries"] = 0
    error = await _error(
        api.stub.SubmitDag(
            pb.SubmitDagRequest(spec_json=json.dumps(other).encode()), metadata=keyed
        )
    )
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first.dag.id in (error.details() or "")
    assert await row_counts(engine) == before
    assert before["dags"] == 1


@pytest.mark.parametrize(
    ("body", "field"), [(c[1], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_corpus_is_invalid_argument_and_writes_nothing(
    api: Api, engine: AsyncEngine, body: bytes, field: str | None
) -> None:
    before = await row_counts(engine)
    error = await _error(api.submit(body))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details()
    violations = _details(error, error_details_pb2.BadRequest).field_violations
    assert violations
    assert all(v.description for v in violations)
    if field:
        fields = [v.field for v in violations]
        assert any(f == field or f.startswith(field) for f in fields), fields
    assert await row_counts(engine) == before


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListDagsRequest(page_size=501), "page_size"),
        (pb.ListDagsRequest(page_size=-1), "page_size"),
        (pb.ListDagsRequest(labels=["team"]), "labels"),
        (pb.ListDagsRequest(page_token="not-a-token"), "page_token"),
        (pb.ListDagsRequest(states=[pb.DAG_STATE_UNSPECIFIED]), None),
    ],
    ids=["page-too-large", "negative-page", "bad-label", "bad-token", "unspecified-state"],
)
async def test_bad_list_request_is_invalid_argument(
    api: Api, request_: pb.ListDagsRequest, field: str | None
) -> None:
    error = await _error(api.stub.ListDags(request_, metadata=TOKEN_A))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    if field is not None:
        violations = _details(error, error_details_pb2.BadRequest).field_violations
        assert [v.field for v in violations] == [field]


async def test_message_over_the_body_limit_is_resource_exhausted(
    api: Api, engine: AsyncEngine
) -> None:
    before = await row_counts(engine)
    huge = copy.deepcopy(EXAMPLE)
    huge["annotations"] = {"blob": "x" * (2 * 1024 * 1024)}
    error = await _error(api.submit(json.dumps(huge).encode()))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await row_counts(engine) == before


async def test_over_the_rate_limit_is_resource_exhausted() -> None:
    settings = dataclasses.replace(load(ServerSettings), rate_limit_per_second=3)
    async for api in _start(settings):
        answers = await asyncio.gather(
            *(api.stub.ListDags(pb.ListDagsRequest(), metadata=TOKEN_A) for _ in range(3)),
            return_exceptions=True,
        )
        assert not [a for a in answers if isinstance(a, BaseException)]
        error = await _error(api.stub.ListDags(pb.ListDagsRequest(), metadata=TOKEN_A))
        # Another tenant has its own budget.
        await api.stub.ListDags(pb.ListDagsRequest(), metadata=TOKEN_B)
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            # The one-second window turned between the calls; the next burst must hit it.
            await asyncio.gather(
                *(api.stub.ListDags(pb.ListDagsRequest(), metadata=TOKEN_A) for _ in range(2)),
                return_exceptions=True,
            )
            error = await _error(api.stub.ListDags(pb.ListDagsRequest(), metadata=TOKEN_A))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = _details(error, error_details_pb2.RetryInfo)
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 1


async def test_an_unreachable_database_is_unavailable_with_retry_info(
    engine: AsyncEngine,
) -> None:
    """As over HTTP (503 with Retry-After): retryable, never INTERNAL, nothing written."""
    unreachable = dataclasses.replace(
        load(DatabaseSettings),
        database_url="mysql+asyncmy://aimtp:aimtp@127.0.0.1:1/aimtp",
        database_pool_timeout=1.0,
    )
    before = await row_counts(engine)
    async for api in _start(database=unreachable):
        error = await _error(api.submit())
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "idempotency-key" in (error.details() or "")
        retry = _details(error, error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToTimedelta().total_seconds() == 1
    assert await row_counts(engine) == before


# ---------------------------------------------------------------- one service, two transports


_STORED = text("SELECT spec, labels, name, tenant, state, attempt FROM dags WHERE id = :id")
_LABEL_ROWS = text("SELECT label_key, label_value FROM dag_labels WHERE dag_id = :id ORDER BY 1")
_HISTORY = text(
    "SELECT from_state, to_state, attempt, actor, reason FROM dag_transitions "
    "WHERE dag_id = :id ORDER BY id"
)
_OUTBOX = text("SELECT event_type, source, payload, traceparent FROM outbox WHERE dag_id = :id")


async def _stored(engine: AsyncEngine, dag_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (await conn.execute(_STORED, {"id": dag_id})).one()
        events = []
        for event in (await conn.execute(_OUTBOX, {"id": dag_id})).all():
            payload = msgspec.json.decode(event.payload)
            for varying in ("event_id", "dag_id", "occurred_at"):
                payload.pop(varying)
            events.append((event.event_type, event.source, payload, bool(event.traceparent)))
        return {
            "spec": json.loads(row.spec),
            "labels": json.loads(row.labels),
            "row": (row.name, row.tenant, row.state, row.attempt),
            "label_rows": (await conn.execute(_LABEL_ROWS, {"id": dag_id})).all(),
            "history": (await conn.execute(_HISTORY, {"id": dag_id})).all(),
            "events": events,
        }


async def test_a_dag_submitted_over_grpc_is_stored_like_one_over_http(
    api: Api, engine: AsyncEngine
) -> None:
    over_grpc = await api.submit()
    response = await api.http.post(
        "/v1/dags",
        content=EXAMPLE_JSON,
        headers={"Authorization": "Bearer tenant-a-token", "Content-Type": "application/json"},
    )
    assert response.status_code == 202, response.text
    over_http = response.json()

    assert await _stored(engine, over_grpc.id) == await _stored(engine, over_http["id"])
    # And both transports show it the same way.
    shown = await api.stub.GetDag(pb.GetDagRequest(id=over_http["id"]), metadata=TOKEN_A)
    assert json.loads(shown.spec_json) == over_http["spec"]
