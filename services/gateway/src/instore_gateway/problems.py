"""RFC 9457 problem details: every error the gateway answers.

Body (``application/problem+json``): ``{"type", "title", "status", "detail"?, "instance"?}``
plus extension members (``reason`` for refused carts, ``correlationId``). ``type`` is a
stable URI per kind of problem; clients switch on it, never on the text.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec

from instore_shared.http_head import allow_with_head
from instore_shared.logging import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

_AFTER_TOKENS = re.compile(r"(/tokens/+).*", re.IGNORECASE)
_KEY_SHAPED = re.compile(r"[A-Za-z0-9_-]{43}")


def redact_path(path: str) -> str:
    """``path`` fit for logs and problem bodies: everything after a ``tokens/`` segment, and any
    segment shaped like a user key (43 of ``A-Za-z0-9_-``) anywhere, becomes ``***``."""
    return _KEY_SHAPED.sub("***", _AFTER_TOKENS.sub(r"\1***", path))


TYPE_BASE = "urn:instore-integration:problem:"


class Problem(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem details body (https://www.rfc-editor.org/rfc/rfc9457)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    reason: str | None = None
    correlationId: str | None = None
    errors: list[dict[str, str]] | None = None
    """For 400 validation errors: ``[{"key": field, "message": what is wrong}]`` (never the value sent)."""


def problem_spec(description: str) -> ResponseSpec:
    """An OpenAPI response whose body is a :class:`Problem` (``application/problem+json``)."""
    # No generated examples: they are random strings (a different document every time, and no help to a reader).
    return ResponseSpec(description=description, media_type=PROBLEM_JSON, data_container=Problem, generate_examples=False)


class ProblemError(Exception):
    """Raise from a handler to answer with a problem body.

    ``slug`` becomes the ``type`` (``urn:instore-integration:problem:<slug>``).
    """

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {slug}: {detail or title}")
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.reason = reason
        self.headers = headers or {}


def problem_response(request: Request[Any, Any, Any], problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    """A Litestar response carrying ``problem`` as ``application/problem+json``."""
    problem.instance = problem.instance or redact_path(request.scope["path"])
    problem.correlationId = request.scope.get("state", {}).get("correlation_id")
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def problem_of(exc: Exception) -> tuple[Problem, dict[str, str]]:
    """The problem body (without ``instance`` and ``correlationId``) and headers an exception raised by a route is
    answered with: a :class:`ProblemError` as it says, a :class:`RecursionError` (a body nested too deeply to parse)
    400, anything else 500 without internals (the caller logs it). Used by Litestar's exception handlers and by the
    edge layer's raw routes alike."""
    if isinstance(exc, ProblemError):
        return Problem(
            type=TYPE_BASE + exc.slug, title=exc.title, status=exc.status, detail=exc.detail, reason=exc.reason
        ), exc.headers
    if isinstance(exc, RecursionError):
        return Problem(
            type=TYPE_BASE + "bad-request", title="Bad request", status=400, detail="the body is nested too deeply"
        ), {}
    return Problem(
        type=TYPE_BASE + "internal-error",
        title="Internal error",
        status=500,
        detail="The gateway failed to handle this request; it was logged under the correlation id.",
    ), {}


def handle_problem(request: Request[Any, Any, Any], exc: ProblemError) -> Response[bytes]:
    """Exception handler for :class:`ProblemError`."""
    return problem_response(request, *problem_of(exc))


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
}


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown route, wrong method, validation) as problem bodies."""
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = exc.detail if exc.status_code < 500 else None
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # HEAD is served wherever GET is (the edge layer, instore_shared.http_head)
        headers = {k: allow_with_head(v) if k.lower() == "allow" else v for k, v in headers.items()}
    if exc.status_code == 429 and "retry-after" not in {k.lower() for k in headers}:
        reset = {k.lower(): v for k, v in headers.items()}.get("ratelimit-reset", "60")
        headers["Retry-After"] = str(reset)
    errors = None
    if exc.status_code == 400 and isinstance(exc.extra, list):
        errors = [
            {"key": str(e.get("key", "")), "message": str(e.get("message", ""))[:200]} for e in exc.extra if isinstance(e, dict)
        ] or None
    return problem_response(
        request,
        Problem(type=TYPE_BASE + slug, title=title, status=exc.status_code, detail=detail, errors=errors),
        headers,
    )


def handle_too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[bytes]:
    """A body nested too deeply to parse: 400, not a 500."""
    return problem_response(request, *problem_of(exc))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Anything else: logged with its stack, answered 500 with no internals."""
    log.exception("gateway.unhandled_error", error=type(exc).__name__)
    return problem_response(request, *problem_of(exc))
