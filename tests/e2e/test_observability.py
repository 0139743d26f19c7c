"""The operators' view, proven: a real Prometheus scrapes the running processes, and
every dashboard panel's query and every alert's measure returns series."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from aimtp.settings import KafkaSettings, load
from tests.e2e.conftest import Stack
from tests.polling import wait_until
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.e2e

PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "aimtp.json"
STACK_ENV = {"AIMTP_WATCHER_INTERVAL_SECONDS": "1"}
# A comparison followed by a threshold; `bool` turns it into a 0/1 series.
_COMPARISON = re.compile(r"(?<![=!<>~])(>=|<=|==|!=|>|<)(?=\s)")


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def alert_measures() -> list[tuple[str, str]]:
    """Each alert expression with its comparisons made `bool`: a series whether or not
    the alert fires, so an expression over a missing metric cannot hide."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [
        (rule["alert"], _COMPARISON.sub(r"\1 bool", rule["expr"]))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


@pytest.fixture(scope="module")
async def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is installed by `make infra` (Debian package prometheus)"
    workdir = tmp_path_factory.mktemp("prometheus")
    targets = {
        "aimtp-server": stack.ports["server"],
        "aimtp-relay": stack.ports["relay"],
        "aimtp-trigger": stack.ports["trigger"],
        "aimtp-watcher": stack.ports["watcher"],
    }
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                try:
                    async with http.get(f"{url}/-/ready") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(ready, timeout=30)
        yield url
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


async def query(http: aiohttp.ClientSession, url: str, expr: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/v1/query", params={"query": expr}) as response:
        body: dict[str, Any] = await response.json()
        return body


@pytest.mark.timeout(180)
async def test_every_panel_and_alert_returns_series(
    stack: Stack, prometheus: str, engine: AsyncEngine
) -> None:
    # Traffic through every part: DAGs to SUCCEEDED, a garbage record to the DLQ.
    dags = await stack.submit_many(20)
    producer = AIOKafkaProducer(bootstrap_servers=load(KafkaSettings).kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(stack.topic, b"\x00 not an event", key=b"garbage")
    finally:
        await producer.stop()
    await stack.wait_all(engine, dags, "SUCCEEDED", timeout=90)

    expressions = panel_queries() + alert_measures()
    assert len(expressions) > 30
    empty: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:

        async def all_have_series() -> bool:
            empty.clear()
            for name, expr in expressions:
                result = await query(http, prometheus, expr)
                if result.get("status") != "success":
                    raise AssertionError(f"{name}: {expr} failed: {result.get('error')}")
                if not result["data"]["result"]:
                    empty[name] = expr
            return not empty

        try:
            await wait_until(all_have_series, timeout=60, interval=2)
        except TimeoutError:
            raise AssertionError(f"no series for: {json.dumps(empty, indent=2)}") from None


def test_promtool_accepts_the_config_and_rules_and_the_rules_fire() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make infra` (Debian package prometheus)"
    for args in (
        ["check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
        ["check", "rules", str(PROMETHEUS_DIR / "alerts.yml")],
        ["test", "rules", str(PROMETHEUS_DIR / "alerts.test.yml")],
    ):
        result = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_provisioning_ready() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert dashboard["panels"][1]["title"].startswith("Oldest unpublished outbox row")


def test_alert_measures_keep_label_matchers_intact() -> None:
    measures = dict(alert_measures())
    assert 'status=~"5..|timeout|error"' in measures["AimtpControllerErrors"]
    assert (
        measures["AimtpOutboxLagHigh"] == "max(aimtp_outbox_oldest_pending_age_seconds) > bool 60"
    )
