"""The AIMTP processes of one scenario, as real subprocesses on their own ports.

Each scenario gets fresh processes, its own topics, consumer group and leader-lock
names on the benchmark database, so nothing left over by one scenario (a Kafka backlog,
a committed offset, a held lock) leaks into the next, and nothing collides with a stack
from ``make run`` or the test suites on the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench import procfs

log = logging.getLogger(__name__)

ROOT: Final = Path(__file__).resolve().parents[1]
AIMTP: Final = [sys.executable, "-m", "aimtp.cli"]

TENANT: Final = "bench"
# Credentials of the throwaway benchmark stack on loopback, not secrets.
TOKEN: Final = "bench-token"  # noqa: S105
CONTROLLER_TOKEN: Final = "bench-controller-token"  # noqa: S105
CALLBACK_TOKEN: Final = "bench-callback-token"  # noqa: S105
LIST_TENANTS: Final = tuple(f"list-{i}" for i in range(10))


def list_token(tenant: str) -> str:
    return f"bench-{tenant}-token"


# Settings every benchmark stack runs with where they differ from the defaults; each
# with the reason, stored in the results so that a reader knows what was measured.
TUNED: Final[dict[str, tuple[str, str]]] = {
    "AIMTP_RATE_LIMIT_PER_SECOND": (
        "0",
        "the default 200 req/s per tenant and process would answer 429 to the single "
        "benchmark tenant; the rate limit is a policy, not a cost being measured",
    ),
    "AIMTP_LOG_LEVEL": (
        "WARNING",
        "per-event INFO lines are not part of the work measured (production would ship "
        "them asynchronously)",
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ProcessStats:
    """What one process cost: its peak memory and CPU, read just before it stopped."""

    name: str
    peak_rss_mb: float | None
    cpu_seconds: float | None
    exit_code: int | None


class Process:
    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
                [*AIMTP, *self.args], env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def cpu_seconds(self) -> float | None:
        return procfs.cpu_seconds(self.pid) if self.alive() else None

    async def kill(self) -> None:
        """SIGKILL, as a crashed node or an OOM kill would: no drain, no cleanup."""
        if self.popen is not None and self.alive():
            self.popen.kill()
            await asyncio.to_thread(self.popen.wait, 10)

    async def wait_healthy(self, http: aiohttp.ClientSession, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy at {url} within {timeout:g}s:\n{self.tail()}")

    async def stop(self, timeout: float = 30.0) -> ProcessStats:
        """SIGTERM (graceful drain), reading peak memory and CPU first; SIGKILL if stuck."""
        stats = ProcessStats(self.name, None, None, None)
        if self.popen is None:
            return stats
        if self.alive():
            stats.peak_rss_mb = procfs.peak_rss_mb(self.pid)
            stats.cpu_seconds = procfs.cpu_seconds(self.pid)
            self.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %gs; killing it", self.name, timeout)
            self.popen.kill()
            self.popen.wait(10)
        stats.exit_code = self.popen.returncode
        return stats

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass(frozen=True)
class Environment:
    """What every stack of one run shares: database, broker, where logs go, run id."""

    run_id: str
    database_url: str
    kafka_bootstrap: str
    partitions: int
    log_dir: Path
    topics: list[str] = field(default_factory=list)
    """Every topic created in this run, deleted at the end."""

    def shared_settings(self, topic: str, dlq_topic: str, controller_url: str) -> dict[str, str]:
        """The AIMTP_* settings every process of one stack shares: this run's database
        and broker, the stack's topics, loopback only, its reference Controller."""
        return {
            "AIMTP_DATABASE_URL": self.database_url,
            "AIMTP_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "AIMTP_KAFKA_TOPIC": topic,
            "AIMTP_KAFKA_DLQ_TOPIC": dlq_topic,
            "AIMTP_KAFKA_PARTITIONS": str(self.partitions),
            "AIMTP_HTTP_HOST": "127.0.0.1",
            "AIMTP_CONTROLLER_URL": controller_url,
        }


def inherited_environ() -> dict[str, str]:
    """This shell's variables less every AIMTP_* one: an inherited setting would change
    what a run's processes do behind its back."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIMTP_")}


class Stack:
    ORDER: Final = ("server", "controller-sim", "relay", "trigger", "watcher")

    def __init__(
        self,
        environment: Environment,
        scenario: str,
        processes: Sequence[str],
        *,
        env: Mapping[str, tuple[str, str]] | None = None,
        sim_args: Sequence[str] = (),
    ) -> None:
        unknown = set(processes) - set(self.ORDER)
        if unknown:
            raise ValueError(f"unknown processes {sorted(unknown)}")
        self.environment = environment
        self.scenario = scenario
        self.names = [name for name in self.ORDER if name in processes]
        tag = f"{environment.run_id.lower().replace('t', '-')}-{scenario}"
        self.topic = f"aimtp.bench.{tag}"
        self.dlq_topic = f"{self.topic}.dlq"
        self.ports = {name: free_port() for name in self.ORDER}
        self.api_url = f"http://127.0.0.1:{self.ports['server']}"
        self.controller_url = f"http://127.0.0.1:{self.ports['controller-sim']}"
        self.tuned = {**TUNED, **(env or {})}
        tokens = [f"{TOKEN}:{TENANT}"] + [f"{list_token(t)}:{t}" for t in LIST_TENANTS]
        self.env: dict[str, str] = {
            **environment.shared_settings(self.topic, self.dlq_topic, self.controller_url),
            "AIMTP_HTTP_PORT": str(self.ports["server"]),
            "AIMTP_PUBLIC_URL": self.api_url,
            "AIMTP_API_TOKENS": ",".join(tokens),
            "AIMTP_CONTROLLER_TOKEN": CONTROLLER_TOKEN,
            "AIMTP_CONTROLLER_CALLBACK_TOKEN": CALLBACK_TOKEN,
            "AIMTP_RELAY_METRICS_PORT": str(self.ports["relay"]),
            "AIMTP_RELAY_LOCK_NAME": f"bench-relay-{tag}",
            "AIMTP_TRIGGER_METRICS_PORT": str(self.ports["trigger"]),
            "AIMTP_TRIGGER_GROUP": f"bench-trigger-{tag}",
            "AIMTP_WATCHER_METRICS_PORT": str(self.ports["watcher"]),
            "AIMTP_WATCHER_LOCK_NAME": f"bench-watcher-{tag}",
            **{name: value for name, (value, _) in self.tuned.items()},
        }
        self.sim_args = list(sim_args)
        self.processes: dict[str, Process] = {}
        self.stats: dict[str, ProcessStats] = {}
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=30)
        )

    # ------------------------------------------------------------ processes

    def _args(self, name: str) -> list[str]:
        if name == "controller-sim":
            return [
                "controller-sim",
                "--port",
                str(self.ports[name]),
                "--token",
                CONTROLLER_TOKEN,
                "--callback-token",
                CALLBACK_TOKEN,
                "--log-level",
                "WARNING",
                *self.sim_args,
            ]
        return [name]

    def health_url(self, name: str) -> str:
        if name == "server":
            return f"{self.api_url}/readyz"
        if name == "controller-sim":
            return f"{self.controller_url}/healthz"
        return f"http://127.0.0.1:{self.ports[name]}/readyz"

    def metrics_url(self, name: str) -> str:
        if name == "server":
            return f"{self.api_url}/metrics"
        return f"http://127.0.0.1:{self.ports[name]}/metrics"

    async def start(self) -> None:
        await create_topics(self.environment, [self.topic, self.dlq_topic])
        base = inherited_environ()
        for name in self.names:
            log_path = self.environment.log_dir / f"{self.scenario}.{name}.log"
            process = Process(name, self._args(name), {**base, **self.env}, log_path)
            process.start()
            self.processes[name] = process
        for name in self.names:
            await self.processes[name].wait_healthy(self.http, self.health_url(name), timeout=90)

    async def stop(self) -> dict[str, ProcessStats]:
        """Stop in reverse order (callers of a process stop before it does)."""
        for name in reversed(self.names):
            process = self.processes.get(name)
            if process is not None:
                self.stats[name] = await process.stop()
        await self.http.close()
        return self.stats

    def cpu_seconds(self) -> dict[str, float | None]:
        return {name: p.cpu_seconds() for name, p in self.processes.items()}

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.tail(12)}" for n, p in self.processes.items())

    def settings(self) -> dict[str, Any]:
        """The effective AIMTP_* settings (credentials masked) and what was tuned, and why."""
        shown = {k: ("<set>" if "TOKEN" in k and v else v) for k, v in sorted(self.env.items())}
        return {
            "processes": self.names,
            "env": shown,
            "tuned": {k: {"value": v, "why": why} for k, (v, why) in self.tuned.items()},
            "controller_sim_args": self.sim_args,
        }

    # ------------------------------------------------------------ HTTP helpers

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get_json(self, url: str, token: str | None = None) -> Any:
        headers = self.auth(token) if token else {}
        async with self.http.get(url, headers=headers) as response:
            response.raise_for_status()
            return await response.json()

    async def set_faults(self, **faults: Any) -> None:
        async with self.http.post(f"{self.controller_url}/admin/faults", json=faults) as response:
            response.raise_for_status()

    async def wait_relay_active(self, timeout: float = 30.0) -> None:
        """Until the relay leads: its start-up must not count as drain or lag time."""
        deadline = time.monotonic() + timeout
        while await self.metric("relay", "aimtp_relay_active") != 1.0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the relay did not take the lead within {timeout:g}s")
            await asyncio.sleep(0.1)

    async def metric(self, name: str, metric: str) -> float | None:
        """One unlabelled sample from a process's /metrics page."""
        async with self.http.get(self.metrics_url(name)) as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
        return None

    async def metric_samples(self, name: str, prefix: str) -> dict[str, float]:
        """Every sample whose name starts with ``prefix`` (labels kept in the key)."""
        async with self.http.get(self.metrics_url(name)) as response:
            text = await response.text()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(prefix) and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples


async def create_topics(environment: Environment, names: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=environment.kafka_bootstrap, client_id="aimtp-bench"
    )
    await asyncio.wait_for(admin.start(), timeout=30)
    try:
        await admin.create_topics([NewTopic(n, environment.partitions, 1) for n in names])
        environment.topics.extend(names)
    finally:
        await admin.close()


async def delete_topics(environment: Environment) -> None:
    """Remove this run's topics from the shared broker."""
    if not environment.topics:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=environment.kafka_bootstrap, client_id="aimtp-bench"
    )
    await asyncio.wait_for(admin.start(), timeout=30)
    try:
        await admin.delete_topics(environment.topics)
        environment.topics.clear()
    finally:
        await admin.close()
