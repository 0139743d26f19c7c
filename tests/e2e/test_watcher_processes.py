"""aimtp-watcher as real processes: --once, a single active sweeper, kill -9 takeover."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.db.records import utcnow
from aimtp.lifecycle import submit_dag
from controller_sim.server import ControllerSim, SimConfig
from tests.polling import wait_until
from tests.processes import ROOT, Process, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_tables")]

EXAMPLE = (ROOT / "examples" / "dag.json").read_bytes()


@pytest.fixture
async def controller_url() -> AsyncIterator[str]:
    sim = ControllerSim(SimConfig(token="ctl"))
    await sim.start()
    yield sim.url
    await sim.stop()


def watcher_env(controller_url: str, lock: str, port: int) -> dict[str, str]:
    return {
        "AIMTP_CONTROLLER_URL": controller_url,
        "AIMTP_CONTROLLER_TOKEN": "ctl",
        "AIMTP_WATCHER_LOCK_NAME": lock,
        "AIMTP_WATCHER_METRICS_PORT": str(port),
        "AIMTP_WATCHER_INTERVAL_SECONDS": "1",
        "AIMTP_LOG_LEVEL": "INFO",
    }


async def overdue_pending_dag(engine: AsyncEngine) -> str:
    async with engine.begin() as conn:
        dag = await submit_dag(conn, tenant="t", name="stuck", spec_json=EXAMPLE, labels={})
        await conn.execute(
            text("UPDATE dags SET deadline_at = :t WHERE id = :id"),
            {"t": utcnow(), "id": dag.id},
        )
    return dag.id


async def reemits(engine: AsyncEngine, dag_id: str) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT reemits FROM dags WHERE id = :id"), {"id": dag_id})
            ).scalar_one()
        )


def reemits_reach(engine: AsyncEngine, dag_id: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await reemits(engine, dag_id) >= count

    return check


def is_active(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return "aimtp_watcher_active 1.0" in r.read().decode()
    except OSError:
        return False


@pytest.mark.timeout(60)
async def test_once_sweeps_and_exits_zero(
    engine: AsyncEngine, controller_url: str, tmp_path: Path
) -> None:
    dag_id = await overdue_pending_dag(engine)
    lock = f"e2e-watcher-{uuid.uuid4().hex[:8]}"
    once = Process(
        "watcher-once",
        ["watcher", "--once"],
        watcher_env(controller_url, lock, free_port()),
        tmp_path,
    ).start()
    assert once.popen is not None
    code = await asyncio.to_thread(once.popen.wait, 30)
    assert code == 0, once.tail()
    assert await reemits(engine, dag_id) == 1


@pytest.mark.timeout(60)
async def test_once_exits_nonzero_when_the_database_cannot_be_reached(
    controller_url: str, tmp_path: Path
) -> None:
    env = watcher_env(controller_url, "e2e-watcher-unreachable", free_port())
    env["AIMTP_DATABASE_URL"] = f"mysql+asyncmy://aimtp:aimtp@127.0.0.1:{free_port()}/aimtp"
    once = Process("watcher-once-unreachable", ["watcher", "--once"], env, tmp_path).start()
    assert once.popen is not None
    code = await asyncio.to_thread(once.popen.wait, 30)
    assert code == 1, once.tail()
    assert "the sweep did not run" in once.tail()


@pytest.mark.timeout(90)
async def test_one_watcher_sweeps_and_a_standby_takes_over_after_kill_9(
    engine: AsyncEngine, controller_url: str, tmp_path: Path
) -> None:
    lock = f"e2e-watcher-{uuid.uuid4().hex[:8]}"
    ports = [free_port(), free_port()]
    watchers = [
        Process(
            f"watcher-{i}", ["watcher"], watcher_env(controller_url, lock, port), tmp_path
        ).start()
        for i, port in enumerate(ports)
    ]
    try:
        for watcher, port in zip(watchers, ports, strict=True):
            await watcher.wait_http(f"http://127.0.0.1:{port}/healthz")

        async def exactly_one_active() -> bool:
            return [is_active(p) for p in ports].count(True) == 1

        await wait_until(exactly_one_active, timeout=10)
        leader = next(i for i, p in enumerate(ports) if is_active(p))
        dag_id = await overdue_pending_dag(engine)
        await wait_until(reemits_reach(engine, dag_id, 1), timeout=10)

        watchers[leader].kill()
        killed = time.monotonic()
        standby = 1 - leader
        await wait_until(lambda: asyncio.to_thread(is_active, ports[standby]), timeout=10)
        takeover = time.monotonic() - killed
        assert takeover <= 2.5, f"standby took {takeover:.1f}s with a 1 s interval"

        # And it sweeps: the DAG, overdue again, is handled by the new leader.
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE dags SET deadline_at = :t WHERE id = :id"),
                {"t": utcnow(), "id": dag_id},
            )
        await wait_until(reemits_reach(engine, dag_id, 2), timeout=10)

        assert await watchers[standby].terminate(timeout=25) == 0
    finally:
        for watcher in watchers:
            watcher.kill()
