"""The gRPC API of a real aimtp-server process, with DAGs driven through the reference
Controller by the real relay and trigger."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from aimtp.v1 import dags_pb2 as pb
from aimtp.v1 import dags_pb2_grpc
from tests.e2e.conftest import EXAMPLE, TENANT_TOKEN, Stack
from tests.processes import AIMTP, ROOT, Process, free_port

pytestmark = pytest.mark.e2e

STACK_SIM_ARGS = ["--default-task-seconds", "0.05", "--time-scale", "0.05"]
AUTH = (("authorization", f"Bearer {TENANT_TOKEN}"),)
LIFE = [pb.DAG_STATE_PENDING, pb.DAG_STATE_TRIGGERING, pb.DAG_STATE_RUNNING]


async def test_watch_sees_every_transition_in_order_across_a_reconnect(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = dags_pb2_grpc.DagServiceStub(channel)
        submitted = await stub.SubmitDag(
            pb.SubmitDagRequest(spec_json=json.dumps(EXAMPLE).encode()), metadata=AUTH
        )
        dag_id = submitted.dag.id

        call = stub.WatchDag(pb.WatchDagRequest(id=dag_id), metadata=AUTH)
        stream = aiter(call)
        first = await anext(stream)
        assert first.dag.id == dag_id
        seen: list[pb.DagTransition] = []
        while len(seen) < 2:  # the DAG comes again when its task phases change
            item = await anext(stream)
            if item.HasField("transition"):
                seen.append(item.transition)
        call.cancel()  # a dropped connection: resume after the last transition seen

        async for item in stub.WatchDag(
            pb.WatchDagRequest(id=dag_id, after=seen[-1].id), metadata=AUTH
        ):
            if item.HasField("transition"):
                seen.append(item.transition)
            else:
                assert item.dag.id == dag_id

        assert [t.to_state for t in seen] == [*LIFE, pb.DAG_STATE_SUCCEEDED], stack.logs()
        assert [t.actor for t in seen] == ["server", "trigger", "trigger", "controller"]
        assert [t.id for t in seen] == sorted({t.id for t in seen})
        history = await stub.ListDagEvents(pb.ListDagEventsRequest(id=dag_id), metadata=AUTH)
        assert list(history.events) == seen
        final = await stub.GetDag(pb.GetDagRequest(id=dag_id), metadata=AUTH)
        assert final.state == pb.DAG_STATE_SUCCEEDED
        assert {task.phase for task in final.tasks.values()} == {"Succeeded"}


async def test_cancel_over_grpc_reaches_the_controller(stack: Stack) -> None:
    slow = json.loads(json.dumps(EXAMPLE))
    for task in slow["tasks"]:
        task["annotations"]["sim.aimtp.io/duration-seconds"] = "600"
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = dags_pb2_grpc.DagServiceStub(channel)
        dag = (
            await stub.SubmitDag(
                pb.SubmitDagRequest(spec_json=json.dumps(slow).encode()), metadata=AUTH
            )
        ).dag
        states = []
        async for item in stub.WatchDag(pb.WatchDagRequest(id=dag.id), metadata=AUTH):
            if not item.HasField("transition"):
                continue
            states.append(item.transition.to_state)
            if item.transition.to_state == pb.DAG_STATE_RUNNING:
                await stub.CancelDag(pb.CancelDagRequest(id=dag.id), metadata=AUTH)
        assert states == [*LIFE, pb.DAG_STATE_CANCELLING, pb.DAG_STATE_CANCELLED]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AIMTP_URL": stack.api_url, "AIMTP_TOKEN": TENANT_TOKEN}
    env.pop("AIMTP_GRPC_URL", None)
    return subprocess.run(
        [*AIMTP, "submit", str(ROOT / "examples" / "dag.json"), "--wait", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_cli_submit_wait_follows_the_watch_stream(stack: Stack) -> None:
    result = await asyncio.to_thread(_cli, stack, "--grpc", stack.grpc_target)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()[1:]
    states = [line for line in lines if not line.startswith(" ")]
    tasks = [line.split() for line in lines if line.startswith(" ")]
    # Only the stream knows who made each change; polling cannot print "by ...".
    assert [line.split()[0] for line in states] == [
        "PENDING",
        "TRIGGERING",
        "RUNNING",
        "SUCCEEDED",
    ], result.stdout
    assert states[-1].endswith("by controller"), result.stdout
    # The task phases as they change, ending with every task done.
    assert tasks, result.stdout
    assert all(row[0] == "tasks" for row in tasks), result.stdout
    names = sorted(task["name"] for task in EXAMPLE["tasks"])
    assert sorted(tasks[-1][1:]) == [f"{name}=Succeeded" for name in names], result.stdout
    assert "polling" not in result.stderr


async def test_cli_submit_wait_polls_when_grpc_is_unreachable(stack: Stack) -> None:
    result = await asyncio.to_thread(_cli, stack, "--grpc", f"127.0.0.1:{free_port()}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "polling instead" in result.stderr
    assert result.stdout.splitlines()[-1].startswith("SUCCEEDED")
    assert " by " not in result.stdout


async def test_sigterm_ends_watches_with_a_resume_point_and_exits_0(tmp_path: Path) -> None:
    http, grpc_port = free_port(), free_port()
    env = {"AIMTP_HTTP_PORT": str(http), "AIMTP_GRPC_PORT": str(grpc_port)}
    server = Process("server", ["server"], env, tmp_path).start()
    try:
        await server.wait_http(f"http://127.0.0.1:{http}/readyz")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = dags_pb2_grpc.DagServiceStub(channel)
            dag = (
                await stub.SubmitDag(
                    pb.SubmitDagRequest(spec_json=json.dumps(EXAMPLE).encode()), metadata=AUTH
                )
            ).dag
            stream = aiter(stub.WatchDag(pb.WatchDagRequest(id=dag.id), metadata=AUTH))
            await anext(stream)
            last = (await anext(stream)).transition  # no trigger runs: it stays PENDING

            exiting = asyncio.ensure_future(server.terminate(timeout=30))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await anext(stream)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"after={last.id}" in (info.value.details() or "")
            assert await exiting == 0, server.tail()
    finally:
        server.kill()
