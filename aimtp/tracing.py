"""W3C trace context: the ``traceparent`` carried from the HTTP request to the Controller."""

from __future__ import annotations

import os
import re

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def valid_traceparent(value: str | None) -> str | None:
    """The header if it is a well-formed version-00 traceparent with non-zero ids."""
    if value is None or not (match := _TRACEPARENT.match(value.strip().lower())):
        return None
    trace_id, span_id, _ = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return match.group(0)


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def child_traceparent(parent: str | None) -> str:
    """Continue ``parent``'s trace with a new span id, or start a new trace."""
    if (valid := valid_traceparent(parent)) is None:
        return new_traceparent()
    _, trace_id, _, flags = valid.split("-")
    return f"00-{trace_id}-{os.urandom(8).hex()}-{flags}"


def trace_id_of(traceparent: str | None) -> str | None:
    valid = valid_traceparent(traceparent)
    return None if valid is None else valid.split("-")[1]
