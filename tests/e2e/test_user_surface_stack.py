"""What a user does with a DAG, end to end through the running stack and the Controller:
cancel in every state, retry, history, and the ``aimtp`` command line.

One stack serves the module; each test clears the reference Controller's faults first.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.conftest import EXAMPLE, TENANT_TOKEN, Stack
from tests.polling import wait_until
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.e2e

STACK_ENV = {
    "AIMTP_WATCHER_INTERVAL_SECONDS": "1",
    "AIMTP_CANCELLING_DEADLINE_SECONDS": "2",
}
# Simulated seconds run 50x faster: the example DAG (10 s of tasks) takes 0.2 s.
TIME_SCALE = 0.02
STACK_SIM_ARGS = ["--default-task-seconds", "0.05", "--time-scale", str(TIME_SCALE)]
EXAMPLE_FILE = ROOT / "examples" / "dag.json"


def long_dag() -> dict[str, Any]:
    """A single-task DAG that runs for two minutes at the Controller."""
    spec: dict[str, Any] = copy.deepcopy(EXAMPLE)
    task = spec["tasks"][0]
    task["annotations"] = {"sim.aimtp.io/duration-seconds": str(120 / TIME_SCALE)}
    spec["tasks"] = [task]
    return spec


async def api(stack: Stack, method: str, path: str) -> tuple[int, dict[str, Any]]:
    async with stack.http.request(
        method, f"{stack.api_url}{path}", headers={"Authorization": f"Bearer {TENANT_TOKEN}"}
    ) as response:
        body: dict[str, Any] = await response.json(content_type=None)
        return response.status, body


async def cancel(stack: Stack, dag_id: str) -> dict[str, Any]:
    status, body = await api(stack, "POST", f"/v1/dags/{dag_id}/cancel")
    assert status == 202, body
    return body


async def trigger_events(stack: Stack, event_type: str, result: str) -> float:
    """The running trigger's ``aimtp_trigger_events_total`` for one type and result."""
    url = f"http://127.0.0.1:{stack.ports['trigger']}/metrics"
    series = f'aimtp_trigger_events_total{{event_type="{event_type}",result="{result}"}} '
    async with stack.http.get(url) as response:
        for line in (await response.text()).splitlines():
            if line.startswith(series):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---------------------------------------------------------------- cancel


@pytest.mark.timeout(60)
async def test_cancel_of_a_pending_dag_never_reaches_the_controller(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    assert await stack.processes["trigger"].terminate() == 0
    dag_id = await stack.submit()

    assert (await cancel(stack, dag_id))["state"] == "CANCELLING"
    await stack.wait_all(engine, [dag_id], "CANCELLED", timeout=20)
    # A trigger that comes back finds the DAG's dag.submitted and leaves it alone.
    await stack.restart("trigger")

    async def submitted_event_seen() -> bool:
        return await trigger_events(stack, "dag.submitted", "stale") >= 1

    await wait_until(submitted_event_seen, timeout=30)
    assert dag_id not in await stack.put_requests()
    assert (await stack.dag(dag_id))["state"] == "CANCELLED"


@pytest.mark.timeout(60)
async def test_cancel_of_a_triggering_dag_deletes_the_workload_its_call_created(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    await stack.set_faults(hang=True)
    dag_id = await stack.submit()

    async def call_in_flight() -> bool:
        return (await stack.put_requests()).get(dag_id, 0) >= 1

    await wait_until(call_in_flight, timeout=20)
    assert (await cancel(stack, dag_id))["state"] == "CANCELLING"
    await stack.clear_faults()  # the hung PUT goes through: the workload is created

    await stack.wait_all(engine, [dag_id], "CANCELLED", timeout=30)

    assert (await stack.creations()).get(dag_id) == 1
    assert await stack.workload_status(dag_id) == 404


@pytest.mark.timeout(60)
async def test_a_cancel_finished_while_the_trigger_still_retries_leaves_no_workload(
    stack: Stack, engine: AsyncEngine
) -> None:
    """The Controller asks the trigger to come back in 6 s; meanwhile the user cancels and
    the watcher finds nothing to delete, so the DAG is CANCELLED before the trigger's
    retry creates the workload."""
    await stack.clear_faults()
    await stack.set_faults(unavailable_for_seconds=6)
    dag_id = await stack.submit(long_dag())

    async def call_refused() -> bool:
        return (await stack.put_requests()).get(dag_id, 0) >= 1

    await wait_until(call_refused, timeout=20)
    await cancel(stack, dag_id)
    await stack.clear_faults()
    await stack.wait_all(engine, [dag_id], "CANCELLED", timeout=20)

    async def created_by_the_retry() -> bool:
        return (await stack.creations()).get(dag_id) == 1

    await wait_until(created_by_the_retry, timeout=20)

    async def nothing_left_running() -> bool:
        return await stack.workload_status(dag_id) == 404

    await wait_until(nothing_left_running, timeout=10)
    assert (await stack.dag(dag_id))["state"] == "CANCELLED"


@pytest.mark.timeout(60)
async def test_cancel_of_a_running_dag_deletes_its_workload(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    dag_id = await stack.submit(long_dag())
    await stack.wait_all(engine, [dag_id], "RUNNING", timeout=20)
    assert await stack.workload_status(dag_id) == 200

    await cancel(stack, dag_id)
    await stack.wait_all(engine, [dag_id], "CANCELLED", timeout=20)

    assert await stack.workload_status(dag_id) == 404
    assert (await stack.creations()).get(dag_id) == 1
    events = await stack.history(dag_id)
    assert [(e["to_state"], e["actor"]) for e in events[-2:]] == [
        ("CANCELLING", "server"),
        ("CANCELLED", "trigger"),
    ]


@pytest.mark.timeout(60)
async def test_cancel_of_an_ended_dag_is_a_conflict_naming_its_state(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    dag_id = await stack.submit()
    await stack.wait_all(engine, [dag_id], "SUCCEEDED", timeout=30)

    status, problem = await api(stack, "POST", f"/v1/dags/{dag_id}/cancel")

    assert (status, problem["status"], problem["state"]) == (409, 409, "SUCCEEDED")
    assert "cannot cancel a DAG in state SUCCEEDED" in problem["detail"]
    assert (await stack.dag(dag_id))["state"] == "SUCCEEDED"


# ---------------------------------------------------------------- retry and history


@pytest.mark.timeout(60)
async def test_retry_of_a_failed_dag_succeeds_as_attempt_2(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    await stack.set_faults(reject_image_pattern="/nlp/trainer:")
    dag_id = await stack.submit()
    await stack.wait_all(engine, [dag_id], "FAILED", timeout=30)
    assert "is not allowed" in (await stack.dag(dag_id))["error"]
    await stack.clear_faults()

    status, retried = await api(stack, "POST", f"/v1/dags/{dag_id}/retry")
    assert status == 202, retried
    assert (retried["state"], retried["attempt"], retried["error"]) == ("PENDING", 2, None)
    await stack.wait_all(engine, [dag_id], "SUCCEEDED", timeout=30)

    view = await stack.dag(dag_id)
    assert (view["attempt"], view["error"]) == (2, None)
    assert {task["phase"] for task in view["tasks"].values()} == {"Succeeded"}
    assert (await stack.creations()).get(dag_id) == 1  # attempt 1 was refused
    assert [(e["to_state"], e["attempt"]) for e in await stack.history(dag_id)] == [
        ("PENDING", 1),
        ("TRIGGERING", 1),
        ("FAILED", 1),
        ("PENDING", 2),
        ("TRIGGERING", 2),
        ("RUNNING", 2),
        ("SUCCEEDED", 2),
    ]


@pytest.mark.timeout(60)
async def test_history_of_a_succeeded_dag_names_each_step_and_who_made_it(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    dag_id = await stack.submit()
    await stack.wait_all(engine, [dag_id], "SUCCEEDED", timeout=30)

    events = await stack.history(dag_id)

    assert [(e["from_state"], e["to_state"]) for e in events] == [
        (None, "PENDING"),
        ("PENDING", "TRIGGERING"),
        ("TRIGGERING", "RUNNING"),
        ("RUNNING", "SUCCEEDED"),
    ]
    actors = [e["actor"] for e in events]
    # RUNNING is recorded by whoever learns first: the trigger from the Controller's
    # answer, or the Controller's callback overtaking it.
    assert actors[:2] == ["server", "trigger"]
    assert actors[2] in {"trigger", "controller"}
    assert actors[3] == "controller"
    assert {e["attempt"] for e in events} == {1}
    times = [e["at"] for e in events]
    assert times == sorted(times)


# ---------------------------------------------------------------- the aimtp command


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def aimtp(stack: Stack, *args: str, server: str | None = None) -> Run:
    """Run the ``aimtp`` command line against the stack, as a user would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimtp.cli",
        *args,
        "--server",
        server or stack.api_url,
        "--token",
        TENANT_TOKEN,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@pytest.mark.timeout(90)
async def test_cli_submit_wait_follows_a_dag_to_success_and_shows_its_tasks(
    stack: Stack,
) -> None:
    await stack.clear_faults()

    run = await aimtp(stack, "submit", str(EXAMPLE_FILE), "--wait", "--interval", "0.2")

    assert run.code == 0, run
    lines = run.out.splitlines()
    submitted = re.fullmatch(r"submitted (\S+) \(llm-finetune\)", lines[0])
    assert submitted, run.out
    dag_id = submitted[1]
    final = lines[-1].split()
    assert final[:3] == ["SUCCEEDED", "attempt", "1"]
    assert sorted(final[3:]) == sorted(f"{task['name']}=Succeeded" for task in EXAMPLE["tasks"])
    assert (await stack.dag(dag_id))["state"] == "SUCCEEDED"


@pytest.mark.timeout(90)
async def test_cli_submit_wait_exits_non_zero_when_the_dag_fails(stack: Stack) -> None:
    await stack.clear_faults()
    await stack.set_faults(fail_task="train")

    run = await aimtp(stack, "submit", str(EXAMPLE_FILE), "--wait", "--interval", "0.2")

    assert run.code == 1, run
    assert run.out.splitlines()[-2].startswith("FAILED ")
    assert "train=Failed" in run.out.splitlines()[-2]
    assert run.out.splitlines()[-1] == "error: task 'train' failed: simulated failure"


@pytest.mark.timeout(90)
async def test_cli_get_list_and_events_print_json_for_scripts(
    stack: Stack, engine: AsyncEngine
) -> None:
    await stack.clear_faults()
    dag_id = await stack.submit()
    await stack.wait_all(engine, [dag_id], "SUCCEEDED", timeout=30)

    got, listed, events = await asyncio.gather(
        aimtp(stack, "get", dag_id, "--output", "json"),
        aimtp(stack, "list", "--state", "SUCCEEDED", "--limit", "500", "--output", "json"),
        aimtp(stack, "events", dag_id, "--output", "json"),
    )

    assert (got.code, listed.code, events.code) == (0, 0, 0), (got, listed, events)
    dag = got.json()
    assert (dag["id"], dag["state"], dag["name"]) == (dag_id, "SUCCEEDED", EXAMPLE["name"])
    assert {task["phase"] for task in dag["tasks"].values()} == {"Succeeded"}
    items = listed.json()["items"]
    assert dag_id in [item["id"] for item in items]
    assert {item["state"] for item in items} == {"SUCCEEDED"}
    history = events.json()
    assert history["dag_id"] == dag_id
    assert [e["to_state"] for e in history["events"]] == [
        "PENDING",
        "TRIGGERING",
        "RUNNING",
        "SUCCEEDED",
    ]


@pytest.mark.timeout(60)
async def test_cli_says_clearly_when_the_server_is_unreachable(stack: Stack) -> None:
    address = f"http://127.0.0.1:{free_port()}"

    run = await aimtp(stack, "list", server=address)

    assert run.code == 2, run
    assert run.out == ""
    assert run.err.startswith(f"error: cannot reach the AIMTP server at {address}")
    assert "Traceback" not in run.err


@pytest.mark.timeout(60)
async def test_cli_shows_the_problem_detail_of_a_refused_request(
    stack: Stack, engine: AsyncEngine, tmp_path: Path
) -> None:
    invalid: dict[str, Any] = copy.deepcopy(EXAMPLE)
    invalid["tasks"][0]["resources"]["memory"] = "lots"
    spec_file = tmp_path / "invalid.json"
    spec_file.write_text(json.dumps(invalid))
    await stack.clear_faults()
    done = await stack.submit()
    await stack.wait_all(engine, [done], "SUCCEEDED", timeout=30)

    refused, conflict = await asyncio.gather(
        aimtp(stack, "submit", str(spec_file)), aimtp(stack, "cancel", done)
    )

    assert refused.code == 1, refused
    assert "(HTTP 422)" in refused.err
    assert "tasks[0].resources.memory:" in refused.err
    assert conflict.code == 1, conflict
    assert "cannot cancel a DAG in state SUCCEEDED" in conflict.err
    assert "(HTTP 409)" in conflict.err
    assert "Traceback" not in refused.err + conflict.err
