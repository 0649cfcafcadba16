"""Routes the gateway's edge layer serves below Litestar (the hot paths of issue 14), and what they share.

Litestar's routing, request, guard and response objects cost ~0.2 ms of CPU per request
(py-spy, issue 14): more than half of what a webhook costs. The routes InStore calls most —
webhooks, the cart callbacks, payment-extension requests and prompt answers — are therefore
also served as plain ASGI apps by :func:`instore_gateway.app.edge_middleware`, with the
same checks, problem bodies and metrics; their Litestar routes stay, document them (OpenAPI)
and serve them when tracing is on (the OpenTelemetry plugin gives Litestar's requests their
server spans). The unit tests run every such route both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.types import ASGIApp, Receive, Scope


@dataclass(frozen=True, slots=True)
class RawRoute:
    """A route served by the edge layer below Litestar, with the error handling and HTTP metrics Litestar's routes get.

    ``path`` is matched exactly (``segments`` 0), or as the start of a path followed by exactly
    ``segments`` non-empty segments; ``template`` is the ``path`` label of the metrics (Litestar's
    route template of the same route, so dashboards see one series)."""

    method: str
    path: str
    template: str
    app: ASGIApp
    segments: int = 0

    def matches(self, method: str, path: str) -> bool:
        """True when this route serves ``method`` ``path``."""
        if method != self.method:
            return False
        if not self.segments:
            return path == self.path
        if not path.startswith(self.path):
            return False
        parts = path[len(self.path) :].split("/")
        return len(parts) == self.segments and all(parts)


def header_values(scope: Scope, name: bytes) -> list[str]:
    """The values of header ``name`` (lower case) in ``scope``, latin-1 decoded as Litestar does."""
    return [value.decode("latin-1") for key, value in scope["headers"] if key == name]


class ClientGone(Exception):
    """The client disconnected before its body was complete: nothing is answered, nothing published."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is (or says it is) larger than ``limit`` bytes.

    Raises :class:`ClientGone` when the client disconnects before the end of the body."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
