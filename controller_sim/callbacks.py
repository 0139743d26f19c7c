"""Delivery of status callbacks: ordered per workload, retried a little, then dropped."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Final

import aiohttp

log = logging.getLogger(__name__)

# 4xx answers that still mean "try again later".
_RETRYABLE_4XX: Final = frozenset({408, 429})


@dataclass(slots=True, frozen=True)
class _Report:
    url: str
    body: bytes
    traceparent: str | None


@dataclass(slots=True, eq=False)
class _Chain:
    """Reports of one workload waiting to be sent, and the task sending them in order."""

    queue: deque[_Report] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class CallbackSender:
    """POSTs encoded StatusReports through one shared, connection-limited session.

    Reports of one key (dag id) are sent one at a time, in order, so the receiver never sees
    a newer state overtaken by an older one. Failures are retried with backoff and then
    dropped: the platform polls the Controller as a fallback.
    """

    def __init__(
        self,
        token: str,
        *,
        attempts: int = 4,
        backoff_seconds: float = 0.2,
        timeout_seconds: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._attempts = max(1, attempts)
        self._backoff = backoff_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._chains: dict[str, _Chain] = {}
        self.delivered = 0
        self.dropped = 0

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        """Stop every pending delivery and close the session."""
        tasks = [chain.task for chain in self._chains.values() if chain.task is not None]
        self._chains.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def pending(self) -> int:
        return sum(len(chain.queue) for chain in self._chains.values())

    def send(self, key: str, url: str, body: bytes, traceparent: str | None = None) -> None:
        """Queue ``body`` for ``url`` behind earlier reports of the same key."""
        chain = self._chains.get(key)
        if chain is None:
            chain = self._chains[key] = _Chain()
        chain.queue.append(_Report(url, body, traceparent))
        if chain.task is None:
            chain.task = asyncio.create_task(self._drain(key, chain))

    def discard(self, key: str) -> None:
        """Forget the reports not yet sent for ``key`` (its workload is gone)."""
        chain = self._chains.pop(key, None)
        if chain is not None and chain.task is not None:
            chain.task.cancel()

    async def _drain(self, key: str, chain: _Chain) -> None:
        try:
            while chain.queue:
                await self._deliver(chain.queue.popleft())
        finally:
            # No await between the empty check and here, so no report can be stranded.
            if self._chains.get(key) is chain:
                del self._chains[key]

    async def _deliver(self, report: _Report) -> None:
        if self._session is None:
            self.dropped += 1
            return
        headers = self._headers
        if report.traceparent:
            headers = {**headers, "traceparent": report.traceparent}
        reason = ""
        for attempt in range(self._attempts):
            if attempt:
                # Jittered exponential backoff so a recovering receiver is not stampeded.
                delay = self._backoff * 2 ** (attempt - 1) * (0.5 + random.random())
                await asyncio.sleep(delay)
            try:
                async with self._session.post(report.url, data=report.body, headers=headers) as r:
                    if r.status < 300:
                        self.delivered += 1
                        return
                    reason = f"HTTP {r.status}"
                    if r.status < 500 and r.status not in _RETRYABLE_4XX:
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                # Never let a bad URL or similar kill the delivery chain.
                reason = f"{type(exc).__name__}: {exc}"
                break
        self.dropped += 1
        log.warning("callback dropped", extra={"url": report.url, "reason": reason})
