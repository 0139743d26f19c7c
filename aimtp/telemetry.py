"""Optional OpenTelemetry trace export, off by default.

It turns on when an OTLP endpoint is configured with the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) and the
``otel`` extra is installed (``pip install aimtp[otel]``); every other ``OTEL_*``
variable (headers, sampler, batch delays, ...) is read by the SDK itself. Without it,
``span`` only passes the W3C ``traceparent`` through, which AIMTP always carries from
the HTTP request to the Controller.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

_tracer: Any = None


def enabled_by_environment() -> bool:
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return (
        exporter != "none" and bool(endpoint) and os.environ.get("OTEL_SDK_DISABLED", "") != "true"
    )


def configure_tracing(service_name: str) -> None:
    """Install the OTLP exporter for this process if the environment asks for it."""
    global _tracer
    if not enabled_by_environment():
        return
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for trace export but the otel extra is not installed")
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)  # flushes at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("aimtp")
    log.info("exporting traces over OTLP", extra={"service": service_name})


@contextmanager
def span(name: str, traceparent: str | None, **attributes: str | int) -> Iterator[str | None]:
    """A span continuing ``traceparent``; yields the traceparent to hand downstream.

    Without export, the given traceparent is yielded unchanged.
    """
    if _tracer is None:
        yield traceparent
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    parent = propagator.extract({"traceparent": traceparent} if traceparent else {})
    with _tracer.start_as_current_span(name, context=parent, attributes=attributes):
        carrier: dict[str, str] = {}
        propagator.inject(carrier)
        yield carrier.get("traceparent", traceparent)
