"""A whole AIMTP stack as real processes: server, reference Controller, relay, trigger,
watcher.

``Stack`` gives each process free ports and the stack its own topics, consumer group
and leader lock, on the test database, so it collides with nothing else running.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import CONTROLLER_CALLBACK_TOKEN, TENANT_TOKENS
from tests.polling import wait_until
from tests.processes import ROOT, Process, free_port
from tests.services import create_topic, truncate_all, unique_topic

EXAMPLE: dict[str, Any] = json.loads((ROOT / "examples" / "dag.json").read_text())
TENANT_TOKEN = next(iter(TENANT_TOKENS))
CONTROLLER_TOKEN = "e2e-controller-token"

_STATES = text("SELECT state, COUNT(*) FROM dags WHERE id IN :ids GROUP BY state").bindparams(
    bindparam("ids", expanding=True)
)


class Stack:
    """The processes of one stack, their addresses, and clients for the API and the sim."""

    ORDER = ("server", "controller-sim", "relay", "trigger", "watcher")

    def __init__(
        self,
        log_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        sim_args: Iterable[str] = (),
        partitions: int = 6,
    ) -> None:
        self.log_dir = log_dir
        self.topic = unique_topic("aimtp.e2e")
        self.dlq_topic = f"{self.topic}.dlq"
        self.partitions = partitions
        self.group = f"e2e-trigger-{uuid.uuid4().hex[:8]}"
        self.ports = {
            "server": free_port(),
            "grpc": free_port(),
            "controller-sim": free_port(),
            "relay": free_port(),
            "trigger": free_port(),
            "watcher": free_port(),
        }
        self.api_url = f"http://127.0.0.1:{self.ports['server']}"
        self.grpc_target = f"127.0.0.1:{self.ports['grpc']}"
        self.controller_url = f"http://127.0.0.1:{self.ports['controller-sim']}"
        self.env = {
            "AIMTP_KAFKA_TOPIC": self.topic,
            "AIMTP_KAFKA_DLQ_TOPIC": self.dlq_topic,
            "AIMTP_HTTP_PORT": str(self.ports["server"]),
            "AIMTP_GRPC_PORT": str(self.ports["grpc"]),
            "AIMTP_PUBLIC_URL": self.api_url,
            "AIMTP_CONTROLLER_URL": self.controller_url,
            "AIMTP_CONTROLLER_TOKEN": CONTROLLER_TOKEN,
            "AIMTP_CONTROLLER_CALLBACK_TOKEN": CONTROLLER_CALLBACK_TOKEN,
            "AIMTP_RELAY_METRICS_PORT": str(self.ports["relay"]),
            "AIMTP_RELAY_LOCK_NAME": f"e2e-relay-{uuid.uuid4().hex[:8]}",
            "AIMTP_TRIGGER_METRICS_PORT": str(self.ports["trigger"]),
            "AIMTP_TRIGGER_GROUP": self.group,
            "AIMTP_WATCHER_METRICS_PORT": str(self.ports["watcher"]),
            "AIMTP_WATCHER_LOCK_NAME": f"e2e-watcher-{uuid.uuid4().hex[:8]}",
            "AIMTP_LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.commands = {
            "server": ["server"],
            "controller-sim": [
                "controller-sim",
                "--port",
                str(self.ports["controller-sim"]),
                "--token",
                CONTROLLER_TOKEN,
                "--callback-token",
                CONTROLLER_CALLBACK_TOKEN,
                *sim_args,
            ],
            "relay": ["relay"],
            "trigger": ["trigger"],
            "watcher": ["watcher"],
        }
        self.health = {
            "server": f"{self.api_url}/readyz",
            "controller-sim": f"{self.controller_url}/healthz",
            "relay": f"http://127.0.0.1:{self.ports['relay']}/healthz",
            "trigger": f"http://127.0.0.1:{self.ports['trigger']}/readyz",
            "watcher": f"http://127.0.0.1:{self.ports['watcher']}/readyz",
        }
        self.processes: dict[str, Process] = {}
        self._starts: dict[str, int] = {}
        self.http = aiohttp.ClientSession()

    # ------------------------------------------------------------ processes

    async def start(self) -> None:
        await create_topic(self.topic, partitions=self.partitions)
        await create_topic(self.dlq_topic, partitions=1)
        for name in self.ORDER:
            self.start_process(name)
        for name in self.ORDER:
            await self.processes[name].wait_http(self.health[name], timeout=60)

    def start_process(self, name: str) -> Process:
        """Start (or start again) one process; each run logs to its own file."""
        run = self._starts[name] = self._starts.get(name, 0) + 1
        label = name if run == 1 else f"{name}-{run}"
        process = Process(label, self.commands[name], self.env, self.log_dir).start()
        self.processes[name] = process
        return process

    async def restart(self, name: str) -> Process:
        process = self.start_process(name)
        await process.wait_http(self.health[name], timeout=60)
        return process

    async def stop(self) -> dict[str, int]:
        """SIGTERM every process, last started first; their exit codes."""
        codes: dict[str, int] = {}
        for name in reversed(self.ORDER):
            process = self.processes.get(name)
            if process is not None and process.alive():
                codes[name] = await process.terminate(timeout=30)
        await self.http.close()
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{process.tail(15)}" for name, process in self.processes.items()
        )

    # ------------------------------------------------------------ the API

    async def submit(self, spec: dict[str, Any] | None = None) -> str:
        async with self.http.post(
            f"{self.api_url}/v1/dags",
            json=spec or EXAMPLE,
            headers={"Authorization": f"Bearer {TENANT_TOKEN}"},
        ) as response:
            assert response.status == 202, await response.text()
            dag_id: str = (await response.json())["id"]
            return dag_id

    async def submit_many(self, count: int, concurrency: int = 16) -> list[str]:
        limit = asyncio.Semaphore(concurrency)

        async def one() -> str:
            async with limit:
                return await self.submit()

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def dag(self, dag_id: str) -> dict[str, Any]:
        async with self.http.get(
            f"{self.api_url}/v1/dags/{dag_id}",
            headers={"Authorization": f"Bearer {TENANT_TOKEN}"},
        ) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body

    async def history(self, dag_id: str) -> list[dict[str, Any]]:
        """The DAG's transitions, from ``GET /v1/dags/{id}/events``."""
        async with self.http.get(
            f"{self.api_url}/v1/dags/{dag_id}/events",
            headers={"Authorization": f"Bearer {TENANT_TOKEN}"},
        ) as response:
            assert response.status == 200, await response.text()
            events: list[dict[str, Any]] = (await response.json())["events"]
            return events

    # ------------------------------------------------------------ the reference Controller

    async def workload_status(self, dag_id: str) -> int:
        """HTTP status of GET /v1/workloads/{dag_id} at the Controller (200 or 404)."""
        async with self.http.get(
            f"{self.controller_url}/v1/workloads/{dag_id}",
            headers={"Authorization": f"Bearer {CONTROLLER_TOKEN}"},
        ) as response:
            return response.status

    async def put_requests(self) -> dict[str, int]:
        """PUTs the Controller received per DAG, counted on arrival (hung ones included)."""
        async with self.http.get(f"{self.controller_url}/admin/requests") as response:
            body: dict[str, int] = await response.json()
            return body

    async def set_faults(self, **faults: Any) -> None:
        async with self.http.post(f"{self.controller_url}/admin/faults", json=faults) as response:
            assert response.status == 200, await response.text()

    async def clear_faults(self) -> None:
        async with self.http.delete(f"{self.controller_url}/admin/faults") as response:
            assert response.status == 200

    async def creations(self) -> dict[str, int]:
        async with self.http.get(f"{self.controller_url}/admin/creations") as response:
            body: dict[str, int] = await response.json()
            return body

    # ------------------------------------------------------------ the database

    @staticmethod
    async def states(engine: AsyncEngine, dag_ids: list[str]) -> dict[str, int]:
        async with engine.connect() as conn:
            rows = await conn.execute(_STATES, {"ids": dag_ids})
            return {row[0]: row[1] for row in rows}

    async def wait_all(
        self, engine: AsyncEngine, dag_ids: list[str], state: str, timeout: float
    ) -> float:
        """Seconds until every DAG is in ``state``; fails with the processes' logs."""
        expected = {state: len(dag_ids)}

        async def reached() -> bool:
            return await self.states(engine, dag_ids) == expected

        try:
            return await wait_until(reached, timeout=timeout, interval=0.2)
        except TimeoutError:
            seen = await self.states(engine, dag_ids)
            raise AssertionError(f"expected {expected}, got {seen}\n{self.logs()}") from None


@pytest.fixture(scope="module")
async def stack(
    request: pytest.FixtureRequest, engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """One running stack per test module, on emptied tables.

    A module tunes it with ``STACK_ENV`` (extra AIMTP_* variables) and ``STACK_SIM_ARGS``
    (reference Controller options).
    """
    await truncate_all(engine)
    stack = Stack(
        tmp_path_factory.mktemp("stack"),
        env=getattr(request.module, "STACK_ENV", {}),
        sim_args=getattr(request.module, "STACK_SIM_ARGS", ()),
    )
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()
