"""A small OTLP/HTTP trace receiver that keeps the last spans in memory — **development and tests only**.

Point a service at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:8090`` (the
OpenTelemetry SDK appends ``/v1/traces``) and look at the traces without running a
collector. It has no authentication, keeps everything in one process's memory and forgets
it at restart: never expose it beyond 127.0.0.1 and never point a production service at it.

- ``POST /v1/traces`` — an OTLP ``ExportTraceServiceRequest``
  (https://opentelemetry.io/docs/specs/otlp/#otlphttp), ``Content-Type`` either
  ``application/x-protobuf`` (what the SDK's OTLP/HTTP exporter sends) or ``application/json``
  (OTLP/JSON: hex trace and span ids, enums as integers), ``Content-Encoding`` ``gzip``,
  ``deflate`` (zlib) or none (``OTEL_EXPORTER_OTLP_COMPRESSION``). Answers 200 with an
  ``ExportTraceServiceResponse`` in the request's encoding: empty when every span was kept,
  else ``partial_success`` counting the spans refused (a trace id that is not 16 bytes, a
  span id that is not 8, a parent span id that is neither empty nor 8). A body — or what it
  decompresses to — larger than ``DEVFAKES_OTLP_MAX_BODY_BYTES`` is 413; a body that does not
  decode is 400; another media type or encoding is 415 (RFC 9457 problem bodies,
  ``application/problem+json``).
- ``GET /otlp/spans?traceId=&service=`` → the spans held (optionally of one trace, one
  service), oldest start first, each flattened to :func:`flatten` 's shape.
- ``GET /otlp/traces?limit=100`` → one summary per trace held, newest start first:
  ``{"traceId", "rootName", "rootService", "services", "spanCount", "errorCount",
  "startTimeUnixNano", "durationMs"}``; ``rootName``/``rootService`` are null while the root
  span (the one without a parent) has not arrived — it ends last, so it is exported last.
  ``durationMs`` spans the earliest start to the latest end of the spans held.
- ``DELETE /otlp/spans`` → ``{"deleted": n}``: forget every span (tests start from a clean slate).
- ``GET /otlp`` → a plain HTML page: the traces, and one trace's spans as an indented tree
  (``?traceId=``), for a person with a browser.

Only the last ``DEVFAKES_OTLP_MAX_SPANS`` spans are kept (oldest dropped first), so a
long-running ``make run`` does not grow without bound.
"""

from __future__ import annotations

import base64
import html
import json
import re
import zlib
from collections import OrderedDict
from typing import Annotated, Any

from google.protobuf import json_format  # type: ignore[import-untyped]  # protobuf ships no type information
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from litestar import Request, Response, Router, delete, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromQuery, QueryParameter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from instore_shared.logging import get_logger

log = get_logger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:instore-integration:problem:"

KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: "UNSPECIFIED",
    Span.SPAN_KIND_INTERNAL: "INTERNAL",
    Span.SPAN_KIND_SERVER: "SERVER",
    Span.SPAN_KIND_CLIENT: "CLIENT",
    Span.SPAN_KIND_PRODUCER: "PRODUCER",
    Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
"""``Span.kind`` as text; a value this table does not know is shown as its number."""

STATUS_CODES = {Status.STATUS_CODE_UNSET: "UNSET", Status.STATUS_CODE_OK: "OK", Status.STATUS_CODE_ERROR: "ERROR"}
"""``Span.status.code`` as text."""

_HEX_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")

TraceIdQuery = Annotated[str | None, QueryParameter(name="traceId", max_length=64)]
"""The ``?traceId=`` query parameter (hex, any case)."""


class OtlpError(Exception):
    """A refused export request: answered with an RFC 9457 problem body."""

    def __init__(self, status: int, slug: str, title: str, detail: str) -> None:
        super().__init__(f"{status} {slug}: {detail}")
        self.status, self.slug, self.title, self.detail = status, slug, title, detail


# -- flattening ---------------------------------------------------------------------------
def _value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as plain JSON: str/bool/int/float, a list, a dict, bytes as hex, unset as None."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def _attributes(pairs: Any) -> dict[str, Any]:
    """Repeated ``KeyValue`` → ``{key: value}`` (a repeated key: the last one wins)."""
    return {kv.key: _value(kv.value) for kv in pairs}


def _service(resource_attributes: list[KeyValue]) -> str:
    """The resource's ``service.name`` (``""`` when it has none)."""
    value = _attributes(resource_attributes).get("service.name")
    return value if isinstance(value, str) else ""


def _id_problem(span: Span) -> str | None:
    """Why ``span``'s ids are unusable, or None when they are fine (OTLP: 16-byte trace, 8-byte span ids)."""
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return "trace id is not 16 bytes (or all zero)"
    if len(span.span_id) != 8 or not any(span.span_id):
        return "span id is not 8 bytes (or all zero)"
    if len(span.parent_span_id) not in (0, 8):
        return "parent span id is neither empty nor 8 bytes"
    return None


def flatten(request: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], int, str | None]:
    """The spans of ``request`` as plain dicts, how many were refused, and why the first one was.

    Each span: ``{"traceId", "spanId", "parentSpanId"`` (lowercase hex; ``parentSpanId`` is
    ``""`` for a root), ``"name", "kind"`` (SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL or
    UNSPECIFIED), ``"service"`` (the resource's ``service.name``), ``"scope"`` (the
    instrumentation scope's name), ``"startTimeUnixNano", "endTimeUnixNano"`` (int, ns since
    the epoch), ``"durationMs"`` (float), ``"attributes"`` (``{key: value}``), ``"statusCode"``
    (UNSET, OK or ERROR), ``"statusMessage"``, ``"events"`` (``[{"name", "timeUnixNano",
    "attributes"}]``), ``"links"`` (``[{"traceId", "spanId", "attributes"}]``)}``.
    """
    spans: list[dict[str, Any]] = []
    refused, reason = 0, None
    for resource_spans in request.resource_spans:
        service = _service(list(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                problem = _id_problem(span)
                if problem is not None:
                    refused += 1
                    reason = reason or problem
                    continue
                spans.append(
                    {
                        "traceId": span.trace_id.hex(),
                        "spanId": span.span_id.hex(),
                        "parentSpanId": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": KINDS.get(span.kind, str(span.kind)),
                        "service": service,
                        "scope": scope,
                        "startTimeUnixNano": span.start_time_unix_nano,
                        "endTimeUnixNano": span.end_time_unix_nano,
                        "durationMs": max(span.end_time_unix_nano - span.start_time_unix_nano, 0) / 1e6,
                        "attributes": _attributes(span.attributes),
                        "statusCode": STATUS_CODES.get(span.status.code, str(span.status.code)),
                        "statusMessage": span.status.message,
                        "events": [
                            {"name": e.name, "timeUnixNano": e.time_unix_nano, "attributes": _attributes(e.attributes)}
                            for e in span.events
                        ],
                        "links": [
                            {
                                "traceId": link.trace_id.hex(),
                                "spanId": link.span_id.hex(),
                                "attributes": _attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                    }
                )
    return spans, refused, reason


# -- the store ----------------------------------------------------------------------------
class SpanStore:
    """The last ``max_spans`` flattened spans, oldest dropped first (one event loop: no lock).

    A span received again (same trace and span id: an exporter's retry) replaces the one held.
    """

    def __init__(self, max_spans: int) -> None:
        self._max = max_spans
        self._spans: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def add(self, spans: list[dict[str, Any]]) -> None:
        """Keep ``spans`` (dropping the oldest beyond the bound)."""
        for span in spans:
            key = (span["traceId"], span["spanId"])
            self._spans.pop(key, None)
            self._spans[key] = span
        while len(self._spans) > self._max:
            self._spans.popitem(last=False)

    def spans(self, trace_id: str | None = None, service: str | None = None) -> list[dict[str, Any]]:
        """The spans held, of ``trace_id`` and ``service`` when given, oldest start first."""
        found = [
            s
            for s in self._spans.values()
            if (trace_id is None or s["traceId"] == trace_id) and (service is None or s["service"] == service)
        ]
        return sorted(found, key=lambda s: (s["startTimeUnixNano"], s["endTimeUnixNano"]))

    def traces(self, limit: int) -> list[dict[str, Any]]:
        """One summary per trace held (see the module docstring), newest start first, at most ``limit``."""
        by_trace: dict[str, list[dict[str, Any]]] = {}
        for span in self._spans.values():
            by_trace.setdefault(span["traceId"], []).append(span)
        summaries = [_summary(trace_id, spans) for trace_id, spans in by_trace.items()]
        summaries.sort(key=lambda t: t["startTimeUnixNano"], reverse=True)
        return summaries[:limit]

    def clear(self) -> int:
        """Forget every span; return how many there were."""
        count = len(self._spans)
        self._spans.clear()
        return count

    def __len__(self) -> int:
        return len(self._spans)


def _summary(trace_id: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    roots = sorted((s for s in spans if not s["parentSpanId"]), key=lambda s: s["startTimeUnixNano"])
    start = min(s["startTimeUnixNano"] for s in spans)
    end = max(s["endTimeUnixNano"] for s in spans)
    return {
        "traceId": trace_id,
        "rootName": roots[0]["name"] if roots else None,
        "rootService": roots[0]["service"] if roots else None,
        "services": sorted({s["service"] for s in spans}),
        "spanCount": len(spans),
        "errorCount": sum(1 for s in spans if s["statusCode"] == "ERROR"),
        "startTimeUnixNano": start,
        "durationMs": max(end - start, 0) / 1e6,
    }


# -- decoding -----------------------------------------------------------------------------
def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decoded per ``Content-Encoding``; never more than ``limit`` bytes out (413 beyond)."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpError(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"Content-Encoding {encoding!r} is not gzip, deflate or identity",
        )
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpError(400, "invalid-otlp-body", "Invalid OTLP body", f"the {encoding} body does not decompress") from exc
    if len(out) > limit:
        raise OtlpError(
            413,
            "payload-too-large",
            "Payload too large",
            f"the body decompresses to more than {limit} bytes (DEVFAKES_OTLP_MAX_BODY_BYTES)",
        )
    if not inflater.eof:
        raise OtlpError(400, "invalid-otlp-body", "Invalid OTLP body", f"the {encoding} body is truncated")
    return out


def _hex_to_base64(container: dict[str, Any], field: str) -> None:
    value = container.get(field)
    if value is None:
        return
    if not isinstance(value, str) or (value and not _HEX_ID.fullmatch(value.lower())):
        raise OtlpError(400, "invalid-otlp-body", "Invalid OTLP body", f"{field} is not a hex trace or span id")
    container[field] = base64.b64encode(bytes.fromhex(value)).decode("ascii")


def _parse_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON → the request; ids are hex there (not protobuf JSON's base64), so they are turned first."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise OtlpError(400, "invalid-otlp-body", "Invalid OTLP body", "the body is not JSON") from exc
    if not isinstance(document, dict):
        raise OtlpError(400, "invalid-otlp-body", "Invalid OTLP body", "the body is not a JSON object")
    try:
        for resource_spans in document.get("resourceSpans") or []:
            for scope_spans in resource_spans.get("scopeSpans") or []:
                for span in scope_spans.get("spans") or []:
                    for field in ("traceId", "spanId", "parentSpanId"):
                        _hex_to_base64(span, field)
                    for link in span.get("links") or []:
                        _hex_to_base64(link, "traceId")
                        _hex_to_base64(link, "spanId")
        request = ExportTraceServiceRequest()
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
        return request
    except (AttributeError, TypeError, json_format.ParseError, RecursionError) as exc:
        raise OtlpError(
            400, "invalid-otlp-body", "Invalid OTLP body", "the JSON is not an OTLP ExportTraceServiceRequest"
        ) from exc


def _parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OtlpError(
            400, "invalid-otlp-body", "Invalid OTLP body", "the body is not a protobuf ExportTraceServiceRequest"
        ) from exc
    return request


def _response(media_type: str, refused: int, reason: str | None) -> Response[bytes]:
    answer = ExportTraceServiceResponse()
    if refused:
        answer.partial_success.CopyFrom(ExportTracePartialSuccess(rejected_spans=refused, error_message=reason or ""))
    if media_type == JSON:
        return Response(json_format.MessageToJson(answer, indent=None).encode(), media_type=JSON)
    return Response(answer.SerializeToString(), media_type=PROTOBUF)


def _problem(request: Request[Any, Any, Any], status: int, slug: str, title: str, detail: str) -> Response[bytes]:
    body = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.scope["path"],
    }
    return Response(json.dumps(body).encode(), status_code=status, media_type=PROBLEM_JSON)


def _on_refused(request: Request[Any, Any, Any], exc: OtlpError) -> Response[bytes]:
    log.warning("otlp.export_refused", status=exc.status, reason=exc.slug, detail=exc.detail)
    return _problem(request, exc.status, exc.slug, exc.title, exc.detail)


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
}


def _on_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own refusals on these routes (a body over the limit, a bad query parameter) as problem bodies."""
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    return _problem(request, exc.status_code, slug, title, str(exc.detail))


# -- the routes ---------------------------------------------------------------------------
def otlp_router(store: SpanStore, max_body_bytes: int) -> Router:
    """The receiver's routes (see the module docstring) over ``store``; bodies up to ``max_body_bytes``."""

    @post("/v1/traces", status_code=200, request_max_body_size=max_body_bytes)
    async def export_traces(request: Request[Any, Any, Any]) -> Response[bytes]:
        """OTLP/HTTP trace export: decode, flatten, keep."""
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in (PROTOBUF, JSON):
            raise OtlpError(415, "unsupported-media-type", "Unsupported media type", f"Content-Type must be {PROTOBUF} or {JSON}")
        encoding = request.headers.get("content-encoding", "").strip().lower()
        body = _decompress(await request.body(), encoding, max_body_bytes)
        parsed = _parse_json(body) if media_type == JSON else _parse_protobuf(body)
        spans, refused, reason = flatten(parsed)
        store.add(spans)
        if refused:
            log.warning("otlp.spans_refused", refused=refused, reason=reason)
        log.debug("otlp.export_received", spans=len(spans), held=len(store))
        return _response(media_type, refused, reason)

    @get("/otlp/spans", sync_to_thread=False)
    def list_spans(trace_id: TraceIdQuery = None, service: FromQuery[str | None] = None) -> list[dict[str, Any]]:
        """The spans held (``?traceId=`` one trace, ``?service=`` one service), oldest start first."""
        return store.spans(trace_id.lower() if trace_id else None, service)

    @get("/otlp/traces", sync_to_thread=False)
    def list_traces(limit: Annotated[int, QueryParameter(ge=1)] = 100) -> list[dict[str, Any]]:
        """A summary per trace held, newest start first."""
        return store.traces(limit)

    @delete("/otlp/spans", status_code=200, sync_to_thread=False)
    def clear_spans() -> dict[str, int]:
        """Forget every span held."""
        return {"deleted": store.clear()}

    @get("/otlp", sync_to_thread=False)
    def view(trace_id: TraceIdQuery = None) -> Response[str]:
        """The traces (or, with ``?traceId=``, one trace's span tree) as a plain HTML page."""
        page = _trace_page(store, trace_id.lower()) if trace_id else _traces_page(store)
        return Response(page, media_type="text/html; charset=utf-8")

    return Router(
        path="/",
        route_handlers=[export_traces, list_spans, list_traces, clear_spans, view],
        exception_handlers={OtlpError: _on_refused, HTTPException: _on_http_error},
    )


# -- the HTML view ------------------------------------------------------------------------
_STYLE = (
    "<style>body{font:14px system-ui,sans-serif;margin:1.5em}table{border-collapse:collapse}"
    "td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}.e{color:#b00}"
    "code{font-size:12px}</style>"
)


def _page(title: str, body: str) -> str:
    return f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>{_STYLE}<h1>{html.escape(title)}</h1>{body}"


def _traces_page(store: SpanStore) -> str:
    rows = "".join(
        f"<tr><td><a href='/otlp?traceId={t['traceId']}'><code>{t['traceId']}</code></a></td>"
        f"<td>{html.escape(t['rootName'] or '(root not received yet)')}</td>"
        f"<td>{html.escape(', '.join(t['services']))}</td><td>{t['spanCount']}</td>"
        f"<td class={'e' if t['errorCount'] else ''}>{t['errorCount']}</td><td>{t['durationMs']:.1f}</td></tr>"
        for t in store.traces(200)
    )
    return _page(
        f"Traces ({len(store)} spans held)",
        "<p>Newest first; development only. JSON: <code>/otlp/traces</code>, <code>/otlp/spans?traceId=</code>.</p>"
        "<table><tr><th>trace</th><th>root</th><th>services</th><th>spans</th><th>errors</th><th>ms</th></tr>"
        f"{rows}</table>",
    )


def _trace_page(store: SpanStore, trace_id: str) -> str:
    spans = store.spans(trace_id)
    if not spans:
        return _page(
            "Trace not found", f"<p>No span of <code>{html.escape(trace_id)}</code> is held. <a href='/otlp'>All traces</a></p>"
        )
    start = spans[0]["startTimeUnixNano"]
    rows = "".join(_span_row(span, depth, start) for span, depth in _tree(spans))
    return _page(
        f"Trace {trace_id}",
        "<p><a href='/otlp'>All traces</a></p><table><tr><th>span</th><th>service</th><th>kind</th>"
        f"<th>start ms</th><th>ms</th><th>status</th><th>attributes</th></tr>{rows}</table>",
    )


def _tree(spans: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """``spans`` (oldest start first) in depth-first order with their depth; a span whose parent is not
    held starts a tree of its own, and a span caught in a parent cycle is shown once, at the top level."""
    ids = {s["spanId"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        children.setdefault(span["parentSpanId"] if span["parentSpanId"] in ids else "", []).append(span)
    ordered: list[tuple[dict[str, Any], int]] = []
    shown: set[str] = set()
    tops = children.get("", [])
    for top in [*tops, *spans]:  # the spans after the tops: only those no walk reached (a cycle)
        stack = [(top, 0)]
        while stack:
            span, depth = stack.pop()
            if span["spanId"] in shown:
                continue
            shown.add(span["spanId"])
            ordered.append((span, depth))
            stack.extend((child, depth + 1) for child in reversed(children.get(span["spanId"], [])))
    return ordered


def _span_row(span: dict[str, Any], depth: int, start: int) -> str:
    attributes = html.escape(", ".join(f"{k}={v}" for k, v in span["attributes"].items()))
    status = " class=e" if span["statusCode"] == "ERROR" else ""
    return (
        f"<tr{status}><td style='padding-left:{0.8 + 1.2 * depth:.1f}em'>{html.escape(span['name'])}</td>"
        f"<td>{html.escape(span['service'])}</td><td>{span['kind']}</td>"
        f"<td>+{(span['startTimeUnixNano'] - start) / 1e6:.1f}</td><td>{span['durationMs']:.1f}</td>"
        f"<td>{span['statusCode']}</td><td><code>{attributes}</code></td></tr>"
    )
