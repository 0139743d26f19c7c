"""A cap on requests in flight, so overload is answered at once instead of queued.

Past the cap, each request more would wait behind all the others for the database: its
latency grows with the queue until the request timeout, and so does the server's memory.
Shedding it with a 503 and ``Retry-After`` keeps both bounded; the clients' retries (with
their Idempotency-Key) come back when there is room.
"""

from __future__ import annotations

import re

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.problems import ProblemError

RETRY_AFTER_SECONDS = 1


class ConcurrencyLimitMiddleware(ASGIMiddleware):
    """Answers 503 to a request arriving while ``limit`` others are being served.

    Unlike most middleware it keeps state across requests on purpose: the count is the
    process's, and the event loop runs one request's code at a time.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, limit: int, exclude: list[str]) -> None:
        self.limit = limit
        self.in_flight = 0
        excluded = re.compile("|".join(exclude))
        # Probes, metrics and the API documentation always answer.
        self.should_bypass_for_scope = lambda scope: excluded.match(scope["path"]) is not None

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if self.in_flight >= self.limit:
            raise ProblemError(
                503,
                "overloaded",
                f"the server is serving {self.limit} requests already; retry after "
                f"{RETRY_AFTER_SECONDS}s (with the same Idempotency-Key for submissions)",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.in_flight += 1
        try:
            await next_app(scope, receive, send)
        finally:
            self.in_flight -= 1
