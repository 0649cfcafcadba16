"""What every Kafka service process shares: health routes and the way it is served.

``/healthz`` answers while the process serves; ``/readyz`` pings the broker (Kafka answers
now) and otherwise answers an RFC 9457 problem body with 503. Served by uvicorn with
structlog logging, graceful shutdown on SIGTERM (10 s for in-flight work) and no server header.
"""

from __future__ import annotations

import json
from typing import Any

import uvicorn
from faststream.asgi import AsgiResponse, get
from faststream.kafka import KafkaBroker

_JSON = {"content-type": "application/json"}


def health_routes(broker: KafkaBroker) -> list[tuple[str, Any]]:
    """``[("/healthz", …), ("/readyz", …)]`` for ``AsgiFastStream(asgi_routes=...)``."""

    @get
    async def healthz(scope: object) -> AsgiResponse:
        return AsgiResponse(b'{"status":"ok"}', 200, headers=_JSON)

    @get
    async def readyz(scope: object) -> AsgiResponse:
        if await broker.ping(timeout=2.0):
            return AsgiResponse(b'{"status":"ready"}', 200, headers=_JSON)
        problem = {"type": "urn:instore-integration:problem:not-ready", "title": "Not ready", "status": 503,
                   "detail": "not connected to Kafka"}
        return AsgiResponse(json.dumps(problem).encode(), 503, headers={"content-type": "application/problem+json"})

    return [("/healthz", healthz), ("/readyz", readyz)]


def serve(app: Any, host: str, port: int) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT (logging is already configured by the caller)."""
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=10,
                server_header=False)
