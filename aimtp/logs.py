"""Structured logs: one JSON object per line, with the DAG id and trace id when known."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import msgspec

dag_id_var: ContextVar[str | None] = ContextVar("dag_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("trace_id", default=None)

# color_message: uvicorn's ANSI-coloured duplicate of msg.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "process": self._process,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (dag_id := getattr(record, "dag_id", None) or dag_id_var.get()) is not None:
            entry["dag_id"] = dag_id
        if (trace_id := trace_id_var.get()) is not None:
            entry["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


def configure_logging(process: str, level: str = "INFO") -> None:
    """Route every logger, the libraries' included, through the JSON formatter on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access log is served by metrics; keep noisy library loggers at warning.
    for noisy in ("aiokafka", "uvicorn.access", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
