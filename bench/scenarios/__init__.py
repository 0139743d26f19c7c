"""The benchmark scenarios, in the order a full run executes them."""

from __future__ import annotations

from bench.scenarios.base import Context, Scenario
from bench.scenarios.burst import BURST
from bench.scenarios.e2e import E2E
from bench.scenarios.listing import LISTING
from bench.scenarios.memory import MEMORY
from bench.scenarios.outbox_lag import OUTBOX_LAG
from bench.scenarios.relay_drain import RELAY_DRAIN
from bench.scenarios.submit import SUBMIT, SUBMIT_LATENCY
from bench.scenarios.trigger import TRIGGER

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        SUBMIT,
        SUBMIT_LATENCY,
        RELAY_DRAIN,
        OUTBOX_LAG,
        E2E,
        BURST,
        TRIGGER,
        LISTING,
        MEMORY,
    )
}

__all__ = ["SCENARIOS", "Context", "Scenario"]
