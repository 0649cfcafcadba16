"""``HEAD`` wherever ``GET`` works, for every HTTP app of the integration (RFC 9110 §9.3.2).

A ``HEAD`` request is served as the ``GET`` of the same target — same routing, guards, status and
header fields (``Content-Type`` and ``Content-Length`` of the body a GET would get included) — and
the body is dropped on its way out. One rule for the gateway (its edge layer, so the routes served
below Litestar and Litestar's alike) and the Kafka services' ASGI apps (FastStream's routes and
prometheus_client's ``/metrics``), instead of a HEAD route per GET route.

A path without a GET answers HEAD as it answers GET: 404, or 405 with its ``Allow`` list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_head(scope: Scope) -> bool:
    """True for an HTTP ``HEAD`` request."""
    return bool(scope["type"] == "http" and scope["method"] == "HEAD")


def as_get(scope: Scope) -> Scope:
    """A copy of ``scope`` asking for ``GET`` (the original is left as it was, for logs)."""
    return {**scope, "method": "GET"}


def without_body(send: Send) -> Send:
    """``send`` passing the response start as it is and the body as one empty final message."""

    async def head_send(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return head_send


def head_as_get(app: ASGIApp) -> ASGIApp:
    """``app`` answering every ``HEAD`` request as its ``GET``, without the body."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if is_head(scope):
            await app(as_get(scope), receive, without_body(send))
        else:
            await app(scope, receive, send)

    return middleware


def allow_with_head(allow: str) -> str:
    """An ``Allow`` header value with ``HEAD`` added when it lists ``GET`` (the methods served as :func:`head_as_get`
    makes them), e.g. ``GET, OPTIONS`` → ``GET, HEAD, OPTIONS``."""
    methods = [m.strip() for m in allow.split(",") if m.strip()]
    if "GET" in methods and "HEAD" not in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")
    return ", ".join(methods)
