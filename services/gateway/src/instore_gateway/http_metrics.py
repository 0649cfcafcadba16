"""HTTP metrics of the gateway: the ``instore_http_*`` families, written by one lean ASGI middleware.

Same families, labels and semantics as Litestar's ``PrometheusMiddleware`` (which wrote them
before issue 14), so dashboards and alerts are unchanged: ``instore_http_requests_total``,
``instore_http_request_duration_seconds`` (histogram, seconds until the last body part was
handed to the server; counted then, so a client that has its answer sees it counted), ``instore_http_requests_in_progress`` and
``instore_http_requests_error_total`` (answers ≥ 500), labelled ``method``, ``path`` (the
route template, never the raw path: cart ids and user keys stay out of label values),
``status_code`` and ``app_name``.

Why our own: the plugin's middleware built a ``Request``, a ``URL`` and four label dicts per
request and looked every child up with ``labels()``; py-spy showed ~10 % of the gateway's CPU
per webhook there. This one caches the label children per (method, route, status).
"""

from __future__ import annotations

import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

from instore_shared.metrics import PREFIX

APP_NAME = "gateway"
NO_ANSWER = 499
"""The ``status_code`` of a request that got no answer (the client left first; nginx's convention): never counted
as a 200."""
_LABELS = ["method", "path", "status_code", "app_name"]
REQUESTS = Counter(f"{PREFIX}_http_requests", "Total requests", _LABELS)
DURATION = Histogram(f"{PREFIX}_http_request_duration_seconds", "Request duration, in seconds", _LABELS)
IN_PROGRESS = Gauge(
    f"{PREFIX}_http_requests_in_progress", "Total requests currently in progress", _LABELS, multiprocess_mode="livesum"
)
ERRORS = Counter(f"{PREFIX}_http_requests_error_total", "Total errors in requests", _LABELS)

_done: dict[tuple[str, str, int], tuple[Any, Any, Any | None]] = {}
_busy: dict[tuple[str, str], Any] = {}


def _children(method: str, path: str, status: int) -> tuple[Any, Any, Any | None]:
    key = (method, path, status)
    found = _done.get(key)
    if found is None:
        values = (method, path, status, APP_NAME)
        found = _done[key] = (
            REQUESTS.labels(*values),
            DURATION.labels(*values),
            ERRORS.labels(*values) if status >= 500 else None,
        )
    return found


def http_metrics_middleware(excluded: frozenset[str]) -> Any:
    """A Litestar middleware factory (runs after routing, so ``path_template`` is known).

    ``excluded``: route templates not measured (the probes and ``/metrics``)."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            template = scope.get("path_template") or ""
            if scope["type"] != ScopeType.HTTP or template in excluded:
                await app(scope, receive, send)
                return
            method = scope["method"]
            busy = _busy.get((method, template))
            if busy is None:
                # in progress is labelled like the plugin did it: the status is not known yet (200)
                busy = _busy[(method, template)] = IN_PROGRESS.labels(method, template, 200, APP_NAME)
            started = time.perf_counter()
            status = NO_ANSWER
            counted = False

            def count() -> None:
                nonlocal counted
                counted = True
                requests, histogram, errors = _children(method, template, status)
                if errors is not None:
                    errors.inc()
                requests.inc()
                histogram.observe(time.perf_counter() - started)

            async def send_wrapper(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message["type"] == "http.response.body" and not message.get("more_body", False):
                    count()  # before the last part leaves: whoever got the answer sees it counted
                await send(message)

            busy.inc()
            try:
                await app(scope, receive, send_wrapper)
            finally:
                busy.dec()
                if not counted:  # no complete answer: the client left (499), or an error no layer answered
                    count()

        return middleware

    return factory
