"""OpenTelemetry tracing: one trace from InStore's HTTP request through Kafka into the services.

Off unless an OTLP endpoint is configured by the standard OpenTelemetry environment
variables (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set, and neither
``OTEL_SDK_DISABLED=true`` nor ``OTEL_TRACES_EXPORTER=none``. Then :func:`configure_tracing`
installs the SDK's tracer provider with a batch span processor and the OTLP/HTTP
(protobuf) exporter, which read the rest of their configuration themselves
(``OTEL_EXPORTER_OTLP_HEADERS``, ``_COMPRESSION``, ``_TIMEOUT``, ``OTEL_BSP_*``,
``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``).

Context crosses Kafka as the W3C ``traceparent`` (and ``tracestate``) message header: written by
:func:`inject` (the gateway's own producer) and by FastStream's telemetry middleware (the
services' publishes), read by that middleware in every consumer.

Log lines carry ``trace_id`` and ``span_id`` (hex, as in the exported spans) whenever a
span is current: :func:`add_trace_ids` is a structlog processor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import MutableMapping
from typing import Any

from opentelemetry import propagate, trace

TRACER_NAME = "instore_integration"

_provider: Any = None


def tracing_enabled() -> bool:
    """True when the environment asks for OTLP trace export (module doc)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").strip().lower() == "none":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing(service: str) -> bool:
    """Install the SDK tracer provider exporting over OTLP/HTTP when :func:`tracing_enabled`; returns whether it did.

    ``service`` is the ``service.name`` resource attribute unless ``OTEL_SERVICE_NAME`` sets it.
    Idempotent within a process. :func:`shutdown_tracing` flushes at exit.
    """
    global _provider
    if not tracing_enabled():
        return False
    if _provider is not None:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    return True


def active() -> bool:
    """True once :func:`configure_tracing` installed the exporting provider (spans are worth making)."""
    return _provider is not None


SHUTDOWN_FLUSH_SECONDS = 2.0
"""How long stopping a process waits for its last spans to be exported."""


def shutdown_tracing(timeout_s: float = SHUTDOWN_FLUSH_SECONDS) -> None:
    """Export what is buffered and stop the exporter, waiting at most ``timeout_s`` s (no-op when tracing is off).

    An OTLP endpoint that hangs would otherwise hold the shutdown for the exporter's timeout per
    batch: the spans not exported by then are dropped, the process stops.
    """
    if _provider is None:
        return
    stopper = threading.Thread(target=_provider.shutdown, name="otel-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout_s)


_TRACER = trace.get_tracer(TRACER_NAME)  # a proxy: it uses the SDK's provider once one is installed


def tracer() -> trace.Tracer:
    """The integration's tracer (a no-op one when tracing is off). One object per process: asking the
    API for it per call cost as much CPU as FastStream's Prometheus middleware (py-spy, cart-mapping)."""
    return _TRACER


def inject(headers: MutableMapping[str, str]) -> None:
    """Write the current trace context into ``headers`` (``traceparent``/``tracestate``); nothing when no span is recording."""
    propagate.inject(headers)


def add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` (32 hex) and ``span_id`` (16 hex) of the current span, when there is one."""
    if _provider is None:  # tracing off: no span can be current (one check instead of a context lookup per line)
        return event
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event
