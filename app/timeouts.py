"""A deadline for every request, so a stuck dependency cannot pile up open requests."""

from __future__ import annotations

import asyncio

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import ProblemError


class RequestTimeoutMiddleware(ASGIMiddleware):
    """Cancels a request that runs longer than ``seconds`` and answers 503.

    Cancelling is safe: a transaction interrupted this way is rolled back, so nothing
    is half-written. A response already started is left to finish.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await next_app(scope, receive, tracking_send)
        except TimeoutError:
            if started:
                raise
            raise ProblemError(
                503,
                "timeout",
                f"the request did not complete within {self.seconds:g}s; retry it "
                "(with the same Idempotency-Key for submissions)",
            ) from None
