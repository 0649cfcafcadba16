"""A fault-injecting HTTP proxy between the services and Composable Commerce (the mock).

The services' ``CTP_API_URL`` and ``CTP_AUTH_URL`` point at the proxy; it forwards every
call to the mock unchanged, except that — per :class:`Faults` — it answers a share of them
itself with one of:

- ``409`` with the official ``ConcurrentModification`` error body (``currentVersion``: the
  version the request named, i.e. the resource's version had the write gone through),
  https://docs.commercetools.com/api/errors#409-conflict — only for writes (``POST`` with a
  ``version``), where Composable Commerce can answer it;
- ``429`` (``TooManyRequests``) or ``503`` (``ServiceUnavailable``) error bodies;
- a hang: nothing is answered for ``hang_seconds`` (longer than the client timeout, so the
  client gives up first).

The OAuth token endpoint (``/oauth/token``) is faulted too (429, 503, hang), and
``token_ttl_seconds`` rewrites the token's ``expires_in`` so that clients fetch tokens
often enough for those faults to matter.

``marker_outage_until`` answers 503 to every "announced" marker write until that
``time.monotonic()`` instant (:func:`is_marker_write`) and forwards everything else.

Written here on aiohttp (a dev dependency already) rather than taken from a library: the
proxies on PyPI (mitmproxy, toxiproxy clients) either need a separate daemon or cannot
answer commercetools-shaped error bodies per request; this is ~150 lines.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "host",
        "upgrade",
        "proxy-connection",
        "te",
        "trailer",
    }
)

MARKER_ACTIONS = frozenset({"changeOrderState", "setReturnPaymentState"})
"""Update actions that only record "the event went out": the Order's changeOrderState (main
before issue 10) and the return items' setReturnPaymentState (the refund path)."""


def is_marker_write(method: str, path: str, body: Any) -> bool:
    """True for a write that records "the event went out": ``POST /{project}/custom-objects``
    setting an announcement marker ``published`` (the Custom Object marker of
    ``instore_shared.announcements``; its ``claimed`` write before publishing is not one —
    and a Custom Object without a ``state`` counts), or ``POST /{project}/orders/{id}`` whose
    actions are all :data:`MARKER_ACTIONS` (the marker as Order state, before issue 10)."""
    if method != "POST":
        return False
    parts = [p for p in path.split("/") if p]
    if len(parts) == 2 and parts[1] == "custom-objects":
        value = body.get("value") if isinstance(body, dict) else None
        return not (isinstance(value, dict) and value.get("state") not in (None, "published"))
    if len(parts) == 3 and parts[1] == "orders" and isinstance(body, dict):
        actions = body.get("actions")
        return (
            isinstance(actions, list)
            and bool(actions)
            and all(isinstance(a, dict) and a.get("action") in MARKER_ACTIONS for a in actions)
        )
    return False


@dataclass
class Faults:
    """What the proxy does; mutable while it runs (the harness changes it between phases)."""

    share: float = 0.0
    """Share of calls (0..1) answered with a fault instead of being forwarded."""
    kinds: tuple[str, ...] = ("409", "429", "503", "hang")
    """Faults drawn from, uniformly (a 409 drawn for a call that cannot have one becomes a 503)."""
    token_share: float | None = None
    """Share of token requests faulted (None: ``share``)."""
    hang_seconds: float = 3.0
    """How long a hang lasts before the connection is dropped (more than the client timeout)."""
    token_ttl_seconds: int | None = None
    """Rewrite the token answer's ``expires_in`` to this (None: as the mock says)."""
    marker_outage_until: float = 0.0
    """Until this ``time.monotonic()`` instant, every marker write is answered 503."""
    marker_delay_seconds: float = 0.0
    """Every marker write is forwarded this much later (a slow write widens the window between publishing and marking)."""
    seed: int | None = None


@dataclass
class Stats:
    """What the proxy did, by kind."""

    forwarded: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        inj = ", ".join(f"{k} {v}" for k, v in sorted(self.injected.items())) or "none"
        return f"forwarded {sum(self.forwarded.values())}, injected {sum(self.injected.values())} ({inj})"


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"statusCode": status, "message": message, "errors": [{"code": code, "message": message, **extra}]}
    return web.json_response(body, status=status)


class FaultProxy:
    """The proxy, served on ``127.0.0.1:port`` from its own thread and event loop."""

    def __init__(self, upstream: str, faults: Faults | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults or Faults()
        self.stats = Stats()
        self._random = random.Random(self.faults.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------
    def start(self, port: int) -> str:
        """Serve on ``127.0.0.1:port`` in a daemon thread; returns the base URL once listening."""
        self._thread = threading.Thread(target=self._run, args=(port,), daemon=True, name="fault-proxy")
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the fault proxy did not start")
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(10)

    def _run(self, port: int) -> None:
        asyncio.run(self._serve(port))

    async def _serve(self, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=50_000_000)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        async with aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)) as self._session:
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

    # -- one call ----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        is_token = path.rstrip("/").endswith("/oauth/token")
        try:
            payload = json.loads(body) if body and not is_token else None
        except ValueError:
            payload = None
        f = self.faults
        if f.marker_outage_until and time.monotonic() < f.marker_outage_until and is_marker_write(request.method, path, payload):
            self.stats.injected["marker-503"] += 1
            return _error(503, "ServiceUnavailable", "injected: marker write unavailable")
        if f.marker_delay_seconds and is_marker_write(request.method, path, payload):
            self.stats.injected["marker-delay"] += 1
            await asyncio.sleep(f.marker_delay_seconds)
            return await self._forward(request, body, is_token)
        share = f.token_share if (is_token and f.token_share is not None) else f.share
        if share > 0 and self._random.random() < share:
            kind = self._random.choice(f.kinds)
            version = payload.get("version") if isinstance(payload, dict) else None
            if kind == "409" and (request.method != "POST" or not isinstance(version, int) or is_token):
                kind = "503"
            self.stats.injected[f"{'token-' if is_token else ''}{kind}"] += 1
            if kind == "hang":
                # The client gives up first (its timeout is shorter) and aiohttp cancels this handler.
                await asyncio.sleep(f.hang_seconds)
                return _error(503, "ServiceUnavailable", "injected: answered after a hang")
            if kind == "409":
                return _error(
                    409,
                    "ConcurrentModification",
                    f"Object has a different version than expected. Expected: {version} - Actual: {version}.",
                    currentVersion=version,
                )
            if kind == "429":
                return _error(429, "TooManyRequests", "injected: too many requests")
            return _error(503, "ServiceUnavailable", "injected: service unavailable")
        return await self._forward(request, body, is_token)

    async def _forward(self, request: web.Request, body: bytes, is_token: bool) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body or None, headers=headers
        ) as upstream:
            content = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
            if is_token and upstream.status == 200 and self.faults.token_ttl_seconds is not None:
                token = json.loads(content)
                token["expires_in"] = self.faults.token_ttl_seconds
                content = json.dumps(token).encode()
            self.stats.forwarded["token" if is_token else request.method] += 1
            return web.Response(body=content, status=upstream.status, headers=out_headers)
