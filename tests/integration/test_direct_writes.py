"""Lifecycle writes go straight to the driver: same transaction, same exceptions."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db import QUERIES
from aimtp.db.direct import execute_write
from aimtp.db.records import DagRecord
from aimtp.lifecycle import submit_dag


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar_one())


async def _submit(engine: AsyncEngine, idempotency_key: str | None = None) -> DagRecord:
    async with engine.begin() as conn:
        return await submit_dag(
            conn,
            tenant="t1",
            name="d",
            spec_json=b'{"name":"d","tasks":[]}',
            labels={"team": "nlp"},
            idempotency_key=idempotency_key,
            request_hash=idempotency_key and "hash",
        )


async def test_writes_on_a_fresh_connection_are_covered_by_its_commit(
    engine: AsyncEngine,
) -> None:
    # No SQLAlchemy statement ran first, so nothing auto-began: the write must begin.
    async with engine.connect() as conn:
        dag = await submit_dag(
            conn, tenant="t1", name="d", spec_json=b'{"name":"d","tasks":[]}', labels={}
        )
        await conn.commit()
    async with engine.connect() as conn:
        row = (await conn.execute(QUERIES["get_dag"], {"id": dag.id})).first()
    assert row is not None
    assert await _count(engine, "outbox") == 1


async def test_a_rolled_back_transaction_takes_the_writes_with_it(engine: AsyncEngine) -> None:
    async with engine.connect() as conn, conn.begin() as transaction:
        await submit_dag(
            conn,
            tenant="t1",
            name="d",
            spec_json=b'{"name":"d","tasks":[]}',
            labels={"team": "nlp"},
        )
        await transaction.rollback()
    for table in ("dags", "dag_labels", "dag_transitions", "outbox"):
        assert await _count(engine, table) == 0, table


async def test_a_driver_error_is_sqlalchemys_exception_and_writes_nothing(
    engine: AsyncEngine,
) -> None:
    await _submit(engine, idempotency_key="k1")
    with pytest.raises(IntegrityError) as caught:
        await _submit(engine, idempotency_key="k1")
    assert caught.value.orig is not None
    assert caught.value.orig.args[0] == 1062  # duplicate key, the driver's own error
    assert "[parameters:" not in str(caught.value)  # a DAG's spec is not echoed into logs
    assert await _count(engine, "dags") == 1
    assert await _count(engine, "outbox") == 1


async def test_the_affected_row_count_comes_back(engine: AsyncEngine) -> None:
    dag = await _submit(engine)
    params = dag.to_params() | {"expected_state": "RUNNING", "expected_version": 1}
    async with engine.begin() as conn:
        assert await execute_write(conn, "update_dag", params) == 0
        params["expected_state"] = dag.state.value
        assert await execute_write(conn, "update_dag", params) == 1
