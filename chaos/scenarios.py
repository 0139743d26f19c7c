"""The faults, one per scenario, and the run that wraps each in load and an audit.

Every scenario: a fresh topology and chaos database, continuous submission by a retrying
client, one fault injected ``fault_at`` seconds into the load, then a wait for
quiescence (every accepted DAG terminal, the outbox drained, the topic read to its end)
and the audit of ``chaos.audit``. A fault is always undone in ``finally``, so a broken
scenario never leaves the broker or the database stopped for the next one.
"""

from __future__ import annotations

import asyncio
import random
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aimtp.db import schema_statements
from aimtp.states import TERMINAL_STATES, DagState
from bench.dags import BODY
from bench.db import PRODUCT_TABLES, Database, execute, fetch, scalar
from bench.stack import ROOT, Environment
from chaos.audit import DagOutcome, TopicRecorder, Verdict, judge_delivery, judge_order
from chaos.load import Submissions, Submitter
from chaos.topology import TENANT, TOKEN, Topology

INFRA: Final = ROOT / "infra" / "local"
RESTART_AFTER: Final = 3.0
"""Seconds a killed process stays down before it is restarted, as a pod would be."""
# The reference Controller runs the tasks' annotated durations 10x faster, so a DAG is
# RUNNING for about a second and every scenario ends with its DAGs in terminal states.
SIM_ARGS: Final = ("--time-scale", "0.1")


@dataclass(frozen=True)
class Params:
    count: int
    rate: float
    fault_at: float
    outage_scale: float
    """Applied to each timed fault's outage (broker, database, Controller)."""
    quiesce_timeout: float


PARAMS: Final = {
    False: Params(count=2000, rate=50, fault_at=10, outage_scale=1.0, quiesce_timeout=420),
    True: Params(count=300, rate=50, fault_at=2, outage_scale=0.25, quiesce_timeout=240),
}


@dataclass
class Run:
    """What a fault acts on, and where it writes what it observed."""

    topology: Topology
    outage: float
    """Seconds the timed fault lasts in this run."""
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    inject: Callable[[Run], Awaitable[None]]
    """Injects the fault and returns once it is over (a kill: once it was dealt)."""
    outage: float = 0.0
    """Seconds a timed fault lasts in a full run; 0 for a kill."""
    setup: dict[str, Any] = field(default_factory=dict)
    """Controller faults in force for the whole scenario (the condition the fault needs)."""


# ------------------------------------------------------------------ the faults


async def _kill_leader(run: Run, kind: str, label: str) -> None:
    """kill -9 the active ``kind``; note how long until a standby led; restart it."""
    topology = run.topology
    leaders = await _wait(lambda: topology.active(kind), timeout=30, what=f"an active {kind}")
    victim = leaders[0]
    await topology.kill(victim)
    killed = time.monotonic()
    await _wait(
        lambda: _others(topology.active(kind), victim), timeout=60, what=f"a standby {kind}"
    )
    run.notes[f"{label}_takeover_s"] = round(time.monotonic() - killed, 2)
    run.notes.setdefault("killed", []).append(victim)
    await asyncio.sleep(RESTART_AFTER)
    await topology.restart(victim)


async def kill_relay_twice(run: Run) -> None:
    # Both kills at random moments: the first 0-5 s after the fault time, the second
    # 2-8 s after the restart of the first victim.
    await asyncio.sleep(random.uniform(0, 5))
    await _kill_leader(run, "relay", "first")
    await asyncio.sleep(random.uniform(2, 8))
    await _kill_leader(run, "relay", "second")


async def _kill_one(run: Run, kind: str) -> None:
    """kill -9 one ``kind`` process chosen at random; restart it as its pod would be."""
    victim = random.choice(run.topology.of_kind(kind)).name
    await run.topology.kill(victim)
    run.notes["killed"] = [victim]
    await asyncio.sleep(RESTART_AFTER)
    await run.topology.restart(victim)


async def kill_trigger(run: Run) -> None:
    # The Controller answers in 300 ms (setup), so calls are in flight when it dies.
    await _kill_one(run, "trigger")


async def kill_watcher(run: Run) -> None:
    await _kill_leader(run, "watcher", "watcher")


async def kill_server(run: Run) -> None:
    await _kill_one(run, "server")


def _stop_service(script: str, port: int) -> Callable[[Run], Awaitable[None]]:
    """Stop a service that ``infra/local/<script>`` started, for ``params.outage`` s."""

    async def inject(run: Run) -> None:
        await _script(script, "down")
        try:
            if _port_open(port):
                raise RuntimeError(
                    f"port {port} still answers after `{script} down`: the service was not "
                    "started by this checkout's infra/local scripts, so it cannot be stopped"
                )
            await asyncio.sleep(run.outage)
        finally:
            await _script(script, "up")

    return inject


async def controller_unavailable(run: Run) -> None:
    await run.topology.set_faults(unavailable_for_seconds=run.outage)
    await asyncio.sleep(run.outage)


async def controller_hangs(run: Run) -> None:
    await run.topology.set_faults(hang=True)
    try:
        await asyncio.sleep(run.outage)
    finally:
        await run.topology.clear_faults()  # releases the requests it held


FAULTS: Final = {
    f.name: f
    for f in (
        Fault("relay-kill", "kill -9 the active relay, twice", kill_relay_twice),
        Fault(
            "trigger-kill",
            "kill -9 a trigger with Controller calls in flight",
            kill_trigger,
            setup={"latency_ms": 300},
        ),
        Fault("kafka-stop", "stop the Kafka broker", _stop_service("kafka.sh", 9092), 20),
        Fault("mariadb-stop", "stop MariaDB", _stop_service("mariadb.sh", 3306), 10),
        Fault("controller-503", "the Controller answers 503", controller_unavailable, 30),
        Fault("controller-hang", "the Controller accepts and never answers", controller_hangs, 30),
        Fault("watcher-kill", "kill -9 the active watcher", kill_watcher),
        Fault("server-kill", "kill -9 a server with requests in flight", kill_server),
    )
}


# ------------------------------------------------------------------ one scenario


@dataclass
class ScenarioReport:
    name: str
    title: str
    verdict: Verdict | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.verdict is not None and self.verdict.ok


async def run_scenario(
    fault: Fault, environment: Environment, db: Database, params: Params
) -> ScenarioReport:
    report = ScenarioReport(fault.name, fault.title)
    await reset_database(db)
    topology = Topology(environment, fault.name, sim_args=SIM_ARGS)
    recorder = TopicRecorder(environment.kafka_bootstrap, topology.topic, environment.partitions)
    run = Run(topology, fault.outage * params.outage_scale)
    exit_codes: dict[str, int | None] = {}
    try:
        await topology.start()
        if fault.setup:
            await topology.set_faults(**fault.setup)
        await recorder.start()
        submitter = Submitter(topology.http, topology.api_urls, TOKEN, BODY)
        load = asyncio.create_task(submitter.run(params.count, params.rate), name="load")
        await asyncio.sleep(params.fault_at)
        fault_started = time.monotonic()
        await fault.inject(run)
        fault_over = time.time()
        report.figures["fault_s"] = round(time.monotonic() - fault_started, 1)
        report.figures["recover_s"] = await _recovery(db, fault_over, params.quiesce_timeout)
        submissions = await load
        report.figures["quiet_s"] = await _quiescence(db, recorder, submissions, params)
        report.verdict = await _audit(db, topology, recorder, submissions)
        report.figures.update(_submission_figures(submissions))
        report.figures.update(run.notes)
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        report.figures["logs"] = topology.logs()
    finally:
        await recorder.stop()
        exit_codes = await topology.stop()
    report.figures["exit_codes"] = exit_codes
    return report


async def _recovery(db: Database, fault_over: float, timeout: float) -> float | None:
    """Seconds from the end of the fault until every DAG accepted before it got past
    TRIGGERING (reached the Controller, or FAILED): how long the fault held work up."""
    started = time.monotonic()

    async def recovered() -> bool:
        stuck = await _query_scalar(
            db,
            "SELECT COUNT(*) FROM dags WHERE tenant = %s AND state IN (%s, %s) "
            "AND created_at <= FROM_UNIXTIME(%s)",
            [TENANT, DagState.PENDING.value, DagState.TRIGGERING.value, fault_over],
        )
        return bool(stuck == 0)

    try:
        await _wait(recovered, timeout=timeout, what="recovery")
    except TimeoutError:
        return None
    return round(time.monotonic() - started, 1)


async def _quiescence(
    db: Database, recorder: TopicRecorder, submissions: Submissions, params: Params
) -> float | None:
    """Seconds until every accepted DAG is terminal, the outbox is drained and the
    recorder has read the topic to its end; None if that did not happen in time."""
    started = time.monotonic()
    terminal = [s.value for s in TERMINAL_STATES]
    marks = ", ".join(["%s"] * len(terminal))

    async def quiet() -> bool:
        live = await _query_scalar(
            db,
            f"SELECT COUNT(*) FROM dags WHERE tenant = %s AND state NOT IN ({marks})",
            [TENANT, *terminal],
        )
        pending = await _query_scalar(
            db, "SELECT COUNT(*) FROM outbox WHERE status = 'pending'", []
        )
        return bool(live == 0 and pending == 0) and await recorder.caught_up()

    try:
        await _wait(quiet, timeout=params.quiesce_timeout, what="quiescence")
    except TimeoutError:
        return None
    return round(time.monotonic() - started, 1)


async def _audit(
    db: Database, topology: Topology, recorder: TopicRecorder, submissions: Submissions
) -> Verdict:
    creations = await topology.creations()
    conn = await db.connect()
    try:
        rows = await fetch(conn, "SELECT id, state, error FROM dags WHERE tenant = %s", [TENANT])
        outbox = await fetch(conn, "SELECT dag_id, event_id FROM outbox ORDER BY id")
    finally:
        await conn.ensure_closed()
    outcomes = {r[0]: DagOutcome(DagState(r[1]), r[2]) for r in rows}
    committed: dict[str, list[str]] = {}
    for dag_id, event_id in outbox:
        committed.setdefault(dag_id, []).append(event_id)
    verdict = judge_delivery(submissions.accepted_ids(), creations, outcomes)
    return judge_order(verdict, committed, recorder.events)


def _submission_figures(submissions: Submissions) -> dict[str, Any]:
    return {
        "client_retries": dict(submissions.retries.most_common()),
        "refused": len(submissions.refused),
        "abandoned": len(submissions.abandoned),
        "refusals": sorted(set(submissions.refused.values()))[:5],
    }


# ------------------------------------------------------------------ plumbing


async def reset_database(db: Database) -> None:
    """Recreate the product tables from db/schema.sql: each scenario starts empty."""
    conn = await db.connect()
    try:
        await execute(conn, "SET SESSION sql_notes = 0")
        for table in PRODUCT_TABLES:
            await execute(conn, f"DROP TABLE IF EXISTS {table}")
        for statement in schema_statements():
            await execute(conn, statement.rstrip(";"))
    finally:
        await conn.ensure_closed()


async def _query_scalar(db: Database, sql: str, args: list[Any]) -> Any:
    """One value; None while the database cannot be reached (it may be the fault)."""
    try:
        conn = await db.connect()
    except Exception:
        return None
    try:
        return await scalar(conn, sql, args)
    finally:
        await conn.ensure_closed()


async def _wait(check: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{what}: not reached within {timeout:g}s")


async def _others(leaders: Awaitable[list[str]], victim: str) -> list[str]:
    return [name for name in await leaders if name != victim]


async def _script(name: str, action: str) -> None:
    await asyncio.to_thread(
        subprocess.run,
        ["bash", str(INFRA / name), action],
        check=True,
        capture_output=True,
    )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
