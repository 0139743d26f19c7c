"""Helpers of the scenarios that submit DAGs and follow them to the Controller."""

from __future__ import annotations

import time
from typing import Final

from bench.dags import BODY
from bench.scenarios.base import wait_for
from bench.stack import TOKEN, Stack
from bench.vegeta import Outcome, Target

_LOCATION_PREFIX: Final = "/v1/dags/"


def submit_target(stack: Stack) -> Target:
    """``POST /v1/dags`` with the benchmark DAG, as the benchmark tenant."""
    return Target(
        "POST",
        f"{stack.api_url}/v1/dags",
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        BODY,
    )


def accepted(outcome: Outcome) -> dict[str, float]:
    """DAG id -> wall time the client received its 202 (the id is in ``Location``)."""
    ids: dict[str, float] = {}
    for hit in outcome.ok(202):
        if hit.location and hit.location.startswith(_LOCATION_PREFIX):
            ids[hit.location.removeprefix(_LOCATION_PREFIX)] = hit.answered
    return ids


async def first_puts(stack: Stack) -> dict[str, float]:
    """DAG id -> wall time the reference Controller received its first PUT."""
    data: dict[str, float] = await stack.get_json(f"{stack.controller_url}/admin/first-put")
    return data


async def creations(stack: Stack) -> dict[str, int]:
    data: dict[str, int] = await stack.get_json(f"{stack.controller_url}/admin/creations")
    return data


async def warm_pipeline(stack: Stack, timeout: float = 60.0) -> float:
    """Send one DAG through and wait for its PUT: the trigger has joined its group and
    every connection is open before anything is measured. Returns the seconds it took."""
    started = time.monotonic()
    async with stack.http.post(
        f"{stack.api_url}/v1/dags",
        data=BODY,
        headers={**stack.auth(), "Content-Type": "application/json"},
    ) as response:
        response.raise_for_status()
        dag_id = response.headers["Location"].removeprefix(_LOCATION_PREFIX)

    async def delivered() -> bool:
        return dag_id in await first_puts(stack)

    await wait_for(delivered, timeout=timeout, interval=0.1, what="the warm-up DAG's PUT")
    return time.monotonic() - started
