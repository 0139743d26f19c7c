"""A production-like topology: two of every AIMTP process and the reference Controller.

Every instance is a real subprocess on ports of its own, against the chaos database and
topics of the scenario, with leader-lock names and a consumer group of its own, so one
scenario's leftovers (a held lock, a committed offset, a backlog) never reach the next.
A killed instance is restarted the way Kubernetes would restart its pod.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

from bench.stack import Environment, Process, create_topics, free_port, inherited_environ

KINDS: Final = ("server", "relay", "trigger", "watcher")
"""Started in this order (after the Controller), stopped in the reverse one."""

TENANT: Final = "chaos"
# Credentials of a throwaway stack on loopback, not secrets.
TOKEN: Final = "chaos-token"  # noqa: S105
CONTROLLER_TOKEN: Final = "chaos-controller-token"  # noqa: S105
CALLBACK_TOKEN: Final = "chaos-callback-token"  # noqa: S105

# Each kind's setting for the port its /metrics, /healthz and /readyz answer on.
_METRICS_PORT: Final = {
    "relay": "AIMTP_RELAY_METRICS_PORT",
    "trigger": "AIMTP_TRIGGER_METRICS_PORT",
    "watcher": "AIMTP_WATCHER_METRICS_PORT",
}


@dataclass
class Instance:
    kind: str
    index: int
    port: int
    """HTTP API port of a server, metrics port of the others."""
    env: dict[str, str]
    log_path: Path
    process: Process | None = None
    restarts: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = Process(self.name, [self.kind], self.env, self.log_path)
        self.process.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


class Topology:
    def __init__(
        self,
        environment: Environment,
        scenario: str,
        *,
        replicas: int = 2,
        env: Mapping[str, str] | None = None,
        sim_args: Sequence[str] = (),
    ) -> None:
        self.environment = environment
        self.scenario = scenario
        tag = f"{environment.run_id.lower().replace('t', '-')}-{scenario}"
        self.topic = f"aimtp.chaos.{tag}"
        self.dlq_topic = f"{self.topic}.dlq"
        self.controller_port = free_port()
        self.controller_url = f"http://127.0.0.1:{self.controller_port}"
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.common: dict[str, str] = {
            **inherited_environ(),
            **environment.shared_settings(self.topic, self.dlq_topic, self.controller_url),
            "AIMTP_API_TOKENS": f"{TOKEN}:{TENANT}",
            "AIMTP_CONTROLLER_TOKEN": CONTROLLER_TOKEN,
            "AIMTP_CONTROLLER_CALLBACK_TOKEN": CALLBACK_TOKEN,
            "AIMTP_RELAY_LOCK_NAME": f"chaos-relay-{tag}",
            "AIMTP_TRIGGER_GROUP": f"chaos-trigger-{tag}",
            "AIMTP_WATCHER_LOCK_NAME": f"chaos-watcher-{tag}",
            "AIMTP_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.instances: dict[str, Instance] = {}
        servers = [free_port() for _ in range(replicas)]
        for kind in KINDS:
            for index in range(replicas):
                own: dict[str, str] = {}
                if kind == "server":
                    port = servers[index]
                    own = {"AIMTP_HTTP_PORT": str(port), "AIMTP_GRPC_PORT": str(free_port())}
                else:
                    port = free_port()
                    own = {_METRICS_PORT[kind]: str(port)}
                # Each process hands the Controller a callback URL; spread them as a
                # Service would, so losing one server loses only some callbacks.
                own["AIMTP_PUBLIC_URL"] = f"http://127.0.0.1:{servers[index]}"
                instance = Instance(
                    kind,
                    index,
                    port,
                    {**self.common, **own},
                    environment.log_dir / f"{scenario}.{kind}-{index}.log",
                )
                self.instances[instance.name] = instance
        self.controller = Process(
            "controller-sim",
            [
                "controller-sim",
                "--port",
                str(self.controller_port),
                "--token",
                CONTROLLER_TOKEN,
                "--callback-token",
                CALLBACK_TOKEN,
                "--log-level",
                "WARNING",
                *sim_args,
            ],
            self.common,
            environment.log_dir / f"{scenario}.controller-sim.log",
        )

    @property
    def api_urls(self) -> list[str]:
        return [i.url for i in self.of_kind("server")]

    def of_kind(self, kind: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.kind == kind]

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await create_topics(self.environment, [self.topic, self.dlq_topic])
        self.controller.start()
        await self.controller.wait_healthy(self.http, f"{self.controller_url}/healthz", 60)
        for instance in self.instances.values():
            instance.start()
        for instance in self.instances.values():
            await self.wait_healthy(instance)

    async def wait_healthy(self, instance: Instance, timeout: float = 90.0) -> None:
        assert instance.process is not None
        await instance.process.wait_healthy(self.http, f"{instance.url}/healthz", timeout)

    async def kill(self, name: str) -> None:
        process = self.instances[name].process
        if process is not None:
            await process.kill()

    async def restart(self, name: str) -> None:
        """Start a killed instance again, as its pod would be restarted."""
        instance = self.instances[name]
        instance.restarts += 1
        instance.start()
        await self.wait_healthy(instance)

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM everything (graceful drain); each instance's exit code."""
        codes: dict[str, int | None] = {}
        for kind in reversed(KINDS):
            stopped = await asyncio.gather(
                *(self._stop(i) for i in self.of_kind(kind)), return_exceptions=False
            )
            codes.update(dict(stopped))
        codes["controller-sim"] = (await self.controller.stop()).exit_code
        await self.http.close()
        return codes

    async def _stop(self, instance: Instance) -> tuple[str, int | None]:
        if instance.process is None:
            return instance.name, None
        return instance.name, (await instance.process.stop()).exit_code

    # ------------------------------------------------------------ observation

    async def active(self, kind: str) -> list[str]:
        """Instances of ``kind`` (relay or watcher) whose leadership gauge reads 1."""
        leaders = []
        for instance in self.of_kind(kind):
            if not instance.alive():
                continue
            try:
                async with self.http.get(f"{instance.url}/metrics") as response:
                    text = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                continue
            if f"aimtp_{kind}_active 1.0" in text.splitlines():
                leaders.append(instance.name)
        return leaders

    async def creations(self) -> dict[str, int]:
        """DAG id -> how many times the reference Controller created its workload."""
        async with self.http.get(f"{self.controller_url}/admin/creations") as response:
            response.raise_for_status()
            data: dict[str, int] = await response.json()
            return data

    async def set_faults(self, **faults: object) -> None:
        async with self.http.post(f"{self.controller_url}/admin/faults", json=faults) as response:
            response.raise_for_status()

    async def clear_faults(self) -> None:
        async with self.http.delete(f"{self.controller_url}/admin/faults") as response:
            response.raise_for_status()

    def logs(self, lines: int = 8) -> str:
        parts = [f"--- controller-sim\n{self.controller.tail(lines)}"]
        for instance in self.instances.values():
            if instance.process is not None:
                parts.append(f"--- {instance.name}\n{instance.process.tail(lines)}")
        return "\n".join(parts)


__all__ = ["KINDS", "TENANT", "TOKEN", "Instance", "Topology"]
