"""The reference Controller served on an ephemeral port, driven through ControllerClient."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from aimtp.controller import (
    ControllerClient,
    ControllerRejected,
    ControllerUnavailable,
    Phase,
    StatusReport,
    Workload,
    WorkloadRequest,
)
from controller_sim import DURATION_ANNOTATION, ControllerSim, FaultConfig, SimConfig, cli
from controller_sim.faults import FaultError

TOKEN = "controller-secret"
CALLBACK_TOKEN = "callback-secret"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Receiver:
    """Records the StatusReports POSTed to it, with their auth and trace headers."""

    url: str = ""
    reports: list[StatusReport] = field(default_factory=list)
    headers: list[tuple[str | None, str | None]] = field(default_factory=list)
    fail_first: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        self.reports.append(msgspec.json.decode(await request.read(), type=StatusReport))
        self.headers.append(
            (request.headers.get("Authorization"), request.headers.get("traceparent"))
        )
        self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, phase: Phase, within: float = 5.0) -> StatusReport:
        async with asyncio.timeout(within):
            while not self.reports or self.reports[-1].phase != phase:
                self.changed.clear()
                await self.changed.wait()
        return self.reports[-1]


@asynccontextmanager
async def _receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/callbacks", receiver.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/callbacks"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@dataclass
class Harness:
    sim: ControllerSim
    client: ControllerClient
    http: aiohttp.ClientSession

    async def admin(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else msgspec.json.encode(body)
        async with self.http.request(method, self.sim.url + path, data=data) as resp:
            assert resp.status == 200, await resp.text()
            return msgspec.json.decode(await resp.read())

    async def wait_phase(self, dag_id: str, phase: Phase, within: float = 5.0) -> Workload:
        async with asyncio.timeout(within):
            while True:
                workload = await self.client.get_workload(dag_id)
                if workload is not None and workload.phase == phase:
                    return workload
                await asyncio.sleep(0.01)


@asynccontextmanager
async def _harness(
    faults: FaultConfig | None = None, *, token: str = TOKEN, client_timeout: float = 5.0
) -> AsyncIterator[Harness]:
    config = SimConfig(
        token=TOKEN,
        callback_token=CALLBACK_TOKEN,
        default_task_seconds=0.01,
        time_scale=1.0,
        faults=faults or FaultConfig(),
        callback_backoff_seconds=0.01,
    )
    async with (
        ControllerSim(config, shutdown_timeout=0.5) as sim,
        aiohttp.ClientSession() as http,
        ControllerClient(sim.url, token, timeout_seconds=client_timeout) as client,
    ):
        yield Harness(sim=sim, client=client, http=http)


def _set(moment: datetime | None) -> datetime:
    assert moment is not None
    return moment


def _task(name: str, *deps: str, seconds: float | None = None, image: str = "img:1") -> Any:
    task: dict[str, Any] = {"name": name, "image": image, "depends_on": list(deps)}
    if seconds is not None:
        task["annotations"] = {DURATION_ANNOTATION: str(seconds)}
    return task


def _request(
    dag_id: str,
    *tasks: dict[str, Any],
    attempt: int = 1,
    callback_url: str = "http://127.0.0.1:1/unused",
) -> WorkloadRequest:
    return WorkloadRequest(
        dag_id=dag_id,
        attempt=attempt,
        spec={"name": dag_id, "tasks": list(tasks) or [_task("only")]},
        callback_url=callback_url,
        traceparent=TRACEPARENT,
    )


async def test_put_is_idempotent_by_dag_id() -> None:
    async with _harness() as h:
        before = time.time()
        first = await h.client.put_workload(_request("dag-1"))
        second = await h.client.put_workload(_request("dag-1"))

        assert first.created is True
        assert second.created is False
        assert second.workload.reference == first.workload.reference
        assert first.workload.reference.startswith("wl-")
        assert await h.admin("GET", "/admin/creations") == {"dag-1": 1}
        assert await h.admin("GET", "/admin/requests") == {"dag-1": 2}
        first_put = await h.admin("GET", "/admin/first-put")
        assert before <= first_put["dag-1"] <= time.time()


async def test_tasks_follow_dependencies_and_callbacks_report_progress() -> None:
    async with _receiver() as receiver, _harness() as h:
        req = _request(
            "diamond",
            _task("a", seconds=0.03),
            _task("b", "a", seconds=0.03),
            _task("c", "a", seconds=0.05),
            _task("d", "b", "c", seconds=0.02),
            callback_url=receiver.url,
        )
        await h.client.put_workload(req)
        final = await receiver.wait_for("Succeeded")

        assert {auth for auth, _ in receiver.headers} == {f"Bearer {CALLBACK_TOKEN}"}
        assert {trace for _, trace in receiver.headers} == {TRACEPARENT}
        assert receiver.reports[0].phase == "Running"
        assert all(r.reference == final.reference and r.attempt == 1 for r in receiver.reports)
        for report in receiver.reports:
            tasks = report.tasks
            if tasks["b"].phase != "Pending" or tasks["c"].phase != "Pending":
                assert tasks["a"].phase == "Succeeded"
            if tasks["d"].phase != "Pending":
                assert tasks["b"].phase == tasks["c"].phase == "Succeeded"
        assert all(t.phase == "Succeeded" for t in final.tasks.values())
        started = {name: _set(t.started_at) for name, t in final.tasks.items()}
        finished = {name: _set(t.finished_at) for name, t in final.tasks.items()}
        assert started["b"] >= finished["a"]
        assert started["c"] >= finished["a"]
        assert started["d"] >= max(finished["b"], finished["c"])
        # b and c ran in parallel.
        assert started["c"] < finished["b"]
        assert [r.observed_at for r in receiver.reports] == sorted(
            r.observed_at for r in receiver.reports
        )
        workload = await h.client.get_workload("diamond")
        assert workload is not None
        assert workload.phase == "Succeeded"


async def test_failed_callbacks_are_retried() -> None:
    async with _receiver() as receiver, _harness() as h:
        receiver.fail_first = 2
        await h.client.put_workload(_request("retry-cb", callback_url=receiver.url))
        await receiver.wait_for("Succeeded")
        stats = await h.admin("GET", "/admin/callbacks")
        assert stats["delivered"] == len(receiver.reports)
        assert stats["dropped"] == 0


async def test_unreachable_callback_is_dropped_without_harm() -> None:
    async with _harness() as h:
        await h.client.put_workload(_request("no-receiver"))
        await h.wait_phase("no-receiver", "Succeeded")
        # The sim retries the unreachable URL with backoff, then gives up.
        for _ in range(250):
            stats = await h.admin("GET", "/admin/callbacks")
            if not stats["pending"]:
                break
            await asyncio.sleep(0.02)
        assert stats["pending"] == 0
        assert stats["dropped"] >= 1


async def test_fail_task_fails_the_workload_and_leaves_the_rest_pending() -> None:
    async with _harness(FaultConfig(fail_task="b")) as h:
        await h.client.put_workload(_request("fails", _task("a"), _task("b", "a"), _task("c", "b")))
        workload = await h.wait_phase("fails", "Failed")

        assert workload.tasks["a"].phase == "Succeeded"
        assert workload.tasks["b"].phase == "Failed"
        assert workload.tasks["b"].message == "simulated failure"
        assert workload.tasks["c"].phase == "Pending"
        assert "'b'" in workload.message


async def test_higher_attempt_recreates_a_failed_workload_only() -> None:
    async with _harness(FaultConfig(fail_task="x")) as h:
        await h.client.put_workload(_request("retry", _task("x")))
        failed = await h.wait_phase("retry", "Failed")
        await h.admin("DELETE", "/admin/faults")

        same = await h.client.put_workload(_request("retry", _task("x"), attempt=1))
        assert same.created is False
        again = await h.client.put_workload(_request("retry", _task("x"), attempt=2))
        assert again.created is True
        assert again.workload.reference != failed.reference
        assert (await h.wait_phase("retry", "Succeeded")).attempt == 2
        # A higher attempt for a workload that is not Failed changes nothing.
        third = await h.client.put_workload(_request("retry", _task("x"), attempt=3))
        assert third.created is False
        assert await h.admin("GET", "/admin/creations") == {"retry": 2}


async def test_reject_image_pattern_answers_422() -> None:
    async with _harness(FaultConfig(reject_image_pattern=r"^evil/")) as h:
        with pytest.raises(ControllerRejected) as info:
            await h.client.put_workload(
                _request("bad", _task("ok"), _task("train", image="evil/miner:1"))
            )
        assert info.value.status == 422
        assert "'train'" in info.value.detail
        assert "evil/miner:1" in info.value.detail
        assert await h.admin("GET", "/admin/creations") == {}


async def test_invalid_spec_answers_422() -> None:
    async with _harness() as h:
        with pytest.raises(ControllerRejected, match="cycle") as info:
            await h.client.put_workload(_request("cyclic", _task("a", "b"), _task("b", "a")))
        assert info.value.status == 422


async def test_unavailable_for_seconds_answers_503_then_recovers() -> None:
    async with _harness() as h:
        await h.admin("POST", "/admin/faults", {"unavailable_for_seconds": 0.3})
        with pytest.raises(ControllerUnavailable) as info:
            await h.client.put_workload(_request("outage"))
        assert info.value.status == 503
        assert info.value.retry_after == 1.0

        await asyncio.sleep(0.35)
        assert (await h.client.put_workload(_request("outage"))).created is True
        assert await h.admin("GET", "/admin/requests") == {"outage": 2}


async def test_error_rate_one_answers_500() -> None:
    async with _harness(FaultConfig(error_rate=1.0)) as h:
        with pytest.raises(ControllerUnavailable) as info:
            await h.client.list_workloads()
        assert info.value.status == 500


async def test_latency_is_added() -> None:
    async with _harness(FaultConfig(latency_ms=100)) as h:
        started = time.perf_counter()
        assert await h.client.get_workload("none") is None
        assert time.perf_counter() - started >= 0.1


async def test_hang_holds_requests_until_faults_are_cleared() -> None:
    async with _harness() as h:
        await h.admin("POST", "/admin/faults", {"hang": True})
        pending = asyncio.create_task(h.client.put_workload(_request("hung")))
        await asyncio.sleep(0.3)
        assert not pending.done()
        assert await h.admin("GET", "/admin/creations") == {}

        cleared = await h.admin("DELETE", "/admin/faults")
        assert cleared["hang"] is False
        async with asyncio.timeout(2):
            result = await pending
        assert result.created is True


async def test_hang_makes_a_short_client_timeout_fire() -> None:
    async with _harness(client_timeout=0.2) as h:
        await h.admin("POST", "/admin/faults", {"hang": True})
        with pytest.raises(ControllerUnavailable, match="timed out"):
            await h.client.get_workload("x")
        await h.admin("DELETE", "/admin/faults")


async def test_hang_for_seconds_ends_by_itself() -> None:
    async with _harness() as h:
        await h.admin("POST", "/admin/faults", {"hang_for_seconds": 0.2})
        started = time.perf_counter()
        assert await h.client.get_workload("x") is None
        assert time.perf_counter() - started >= 0.19
        assert (await h.admin("GET", "/admin/faults"))["hang_remaining_seconds"] == 0


async def test_max_creations_per_second_caps_creations_only() -> None:
    async with _harness(FaultConfig(max_creations_per_second=2)) as h:
        created = 0
        limited: list[ControllerUnavailable] = []
        for i in range(5):
            try:
                result = await h.client.put_workload(_request(f"rate-{i}"))
            except ControllerUnavailable as exc:
                limited.append(exc)
            else:
                created += result.created
        assert created == 2
        assert len(limited) == 3
        assert all(e.status == 503 and (e.retry_after or 0) >= 1 for e in limited)
        # Idempotent PUTs of existing workloads are not creations, so never capped.
        assert (await h.client.put_workload(_request("rate-0"))).created is False
        assert sum((await h.admin("GET", "/admin/creations")).values()) == 2


async def test_delete_stops_the_simulation_and_is_idempotent() -> None:
    async with _harness() as h:
        await h.client.put_workload(_request("long", _task("sleepy", seconds=30)))
        await h.wait_phase("long", "Running")
        sim_workload = h.sim.state.store.get("long")
        assert sim_workload is not None
        assert sim_workload.runner is not None
        runner = sim_workload.runner

        assert await h.client.delete_workload("long") is True
        await asyncio.wait([runner], timeout=1)
        assert runner.cancelled()
        assert await h.client.get_workload("long") is None
        assert await h.client.delete_workload("long") is False
        assert await h.client.delete_workload("never-existed") is False


async def test_forget_loses_the_workload_and_a_retry_recreates_it() -> None:
    async with _harness() as h:
        await h.client.put_workload(_request("lost", _task("t", seconds=30)))
        assert await h.admin("POST", "/admin/forget/lost") == {
            "dag_id": "lost",
            "forgotten": True,
        }
        assert await h.client.get_workload("lost") is None
        assert await h.client.list_workloads() == []

        again = await h.client.put_workload(_request("lost", attempt=2))
        assert again.created is True
        assert await h.admin("GET", "/admin/creations") == {"lost": 2}
        async with h.http.post(h.sim.url + "/admin/forget/unknown") as resp:
            assert resp.status == 404


async def test_list_workloads_returns_all() -> None:
    async with _harness() as h:
        for dag_id in ("x", "y"):
            await h.client.put_workload(_request(dag_id))
        assert sorted(w.dag_id for w in await h.client.list_workloads()) == ["x", "y"]


@pytest.mark.parametrize("token", ["", "wrong"])
async def test_auth_is_enforced_on_v1_only(token: str) -> None:
    async with _harness(token=token) as h:
        with pytest.raises(ControllerRejected) as info:
            await h.client.put_workload(_request("auth"))
        assert info.value.status == 401
        assert await h.admin("GET", "/admin/creations") == {}
        assert await h.admin("GET", "/healthz") == {"status": "ok"}


async def test_body_must_match_path_and_contract() -> None:
    async with _harness() as h:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        url = h.sim.url + "/v1/workloads/one"
        body = msgspec.json.encode(_request("other"))
        async with h.http.put(url, data=body, headers=headers) as resp:
            assert resp.status == 400
            assert resp.content_type == "application/problem+json"
        async with h.http.put(url, data=b'{"dag_id": "one"}', headers=headers) as resp:
            assert resp.status == 400


async def test_admin_faults_merge_validate_and_clear() -> None:
    async with _harness(FaultConfig(latency_ms=1)) as h:
        merged = await h.admin("POST", "/admin/faults", {"fail_task": "t", "error_rate": 0.5})
        assert (merged["latency_ms"], merged["fail_task"], merged["error_rate"]) == (1, "t", 0.5)
        assert (await h.admin("GET", "/admin/faults"))["fail_task"] == "t"

        for bad in ({"error_rate": 2}, {"nope": 1}, {"reject_image_pattern": "("}, [1]):
            async with h.http.post(h.sim.url + "/admin/faults", data=msgspec.json.encode(bad)) as r:
                assert r.status == 400, bad
        assert (await h.admin("GET", "/admin/faults"))["error_rate"] == 0.5

        cleared = await h.admin("DELETE", "/admin/faults")
        assert cleared["latency_ms"] == 0
        assert cleared["fail_task"] is None


async def test_shutdown_answers_hung_requests_instead_of_waiting() -> None:
    sim = ControllerSim(SimConfig(faults=FaultConfig(hang=True)), shutdown_timeout=30)
    await sim.start()
    async with ControllerClient(sim.url, "") as client:
        pending = asyncio.create_task(client.get_workload("x"))
        await asyncio.sleep(0.1)
        assert not pending.done()
        async with asyncio.timeout(5):
            await sim.stop()
            assert await pending is None


def test_cli_builds_config_from_flags_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMTP_CONTROLLER_PORT", "9123")
    monkeypatch.setenv("AIMTP_CONTROLLER_TOKEN", "env-token")
    monkeypatch.delenv("AIMTP_CONTROLLER_CALLBACK_TOKEN", raising=False)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)

    args = parser.parse_args(["--time-scale", "0.1", "--fail-task", "t", "--reject-image", "x"])
    config = cli.config_from_args(args)
    assert (args.host, args.port) == ("127.0.0.1", 9123)
    assert (config.token, config.callback_token) == ("env-token", "env-token")
    assert config.time_scale == 0.1
    assert config.faults == FaultConfig(fail_task="t", reject_image_pattern="x")

    args = parser.parse_args(["--callback-token", "cb", "--error-rate", "2"])
    assert args.callback_token == "cb"
    with pytest.raises(FaultError):
        cli.config_from_args(args)
