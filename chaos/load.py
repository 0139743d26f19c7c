"""The continuous submission of a chaos scenario, by a client that follows the README.

One ``Idempotency-Key`` per DAG; a request that may not have been answered (connection
refused or reset, timeout, ``5xx``, ``429``) is retried with the same key and body, on the
next server, after a capped exponential backoff. A DAG counts as accepted only once a
server answered 202 with its id: that is the promise the audit holds AIMTP to.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from aimtp.backoff import backoff_delay

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Accepted:
    dag_id: str
    at: float
    """Wall time of the 202."""
    tries: int


@dataclass
class Submissions:
    """What the client saw, by Idempotency-Key."""

    accepted: dict[str, Accepted] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """A 4xx that is not worth retrying: the client's mistake, never expected here."""
    abandoned: dict[str, str] = field(default_factory=dict)
    """Still not answered when the client gave up: never accepted, so never owed."""
    retries: Counter[str] = field(default_factory=Counter)
    """Why requests had to be sent again: ``HTTP 503``, ``ServerDisconnectedError``, …"""

    def accepted_ids(self, before: float | None = None) -> list[str]:
        return [a.dag_id for a in self.accepted.values() if before is None or a.at <= before]


class Submitter:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        api_urls: Sequence[str],
        token: str,
        body: bytes,
        *,
        give_up_after: float = 180.0,
        max_in_flight: int = 256,
    ) -> None:
        self._http = http
        self._urls = list(api_urls)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._body = body
        self._give_up_after = give_up_after
        self._slots = asyncio.Semaphore(max_in_flight)
        self.result = Submissions()

    async def run(self, count: int, rate: float) -> Submissions:
        """Submit ``count`` DAGs at ``rate`` per second (open loop), each until answered."""
        started = time.monotonic()
        tasks = []
        for n in range(count):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._slots.acquire()
            tasks.append(asyncio.create_task(self._submit(n)))
        await asyncio.gather(*tasks)
        return self.result

    async def _submit(self, n: int) -> None:
        key = str(uuid.uuid4())
        headers = {**self._headers, "Idempotency-Key": key}
        deadline = time.monotonic() + self._give_up_after
        tries = 0
        last = "not sent"
        try:
            while time.monotonic() < deadline:
                url = self._urls[(n + tries) % len(self._urls)]
                tries += 1
                try:
                    async with self._http.post(
                        f"{url}/v1/dags", data=self._body, headers=headers
                    ) as response:
                        if response.status == 202:
                            body = await response.json()
                            self.result.accepted[key] = Accepted(body["id"], time.time(), tries)
                            return
                        last = f"HTTP {response.status}"
                        if response.status not in _RETRYABLE_STATUS:
                            detail = (await response.text())[:200]
                            self.result.refused[key] = f"{last}: {detail}"
                            return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = type(exc).__name__
                self.result.retries[last] += 1
                await asyncio.sleep(backoff_delay(tries, base=0.2, cap=2.0))
            self.result.abandoned[key] = last
        finally:
            self._slots.release()
