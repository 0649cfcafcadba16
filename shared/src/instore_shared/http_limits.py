"""Bounds on what an HTTP client may make a server hold before its request is even routed.

Every HTTP server of the integration (the gateway, the Kafka services' health ports, the
dev fakes) is uvicorn with httptools. Neither bounds the request head: httptools keeps
appending an unfinished header line to a buffer (a 16 MB header was read and answered;
8 connections each holding an unfinished 16 MB header took the gateway from 100 to 278 MB
RSS), and uvicorn has no deadline for a head that trickles in (slowloris) nor for a
connection that never sends a byte. uvicorn offers ``h11_max_incomplete_event_size``, but
only for its h11 protocol — pure Python, slower per request than httptools, and still
without a header deadline or count. So this module subclasses uvicorn's httptools protocol
(our own code, kept to the head of each request):

- at most ``max_header_bytes`` of request line plus header fields (431 beyond, RFC 6585 §5)
  — counted per received chunk while the head is unfinished, so memory stays below the
  limit plus one read (≤ 256 KiB), and measured exactly once the head is complete;
- at most ``max_headers`` header fields (431 beyond);
- the whole head within ``header_timeout_seconds`` of the connection opening or the next
  request's first byte (408, RFC 9110 §15.5.9; a connection that sent nothing is closed);
- the whole body within ``body_timeout_seconds`` of the head's end (408 when the application
  has not answered yet, and the application sees the client disconnect: a webhook whose body
  trickles in is never published; found by an adversarial pass: 400 connections sending a
  999,000-byte body at 2 KB/s were all held open).

A refused request is answered with an RFC 9457 problem body and ``Connection: close``;
what the client still sends is read and dropped for :data:`LINGER_SECONDS` so the answer
reaches it before the socket closes (closing with unread data would reset the connection
and discard the answer). The cost per request is a clock read (one timer per connection,
re-armed as it fires) and, on a head larger than one read, one pass over its headers.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

LINGER_SECONDS = 2.0
"""After refusing a request, how long the connection drains (and drops) what the client still sends before it closes."""

PROBLEM_TYPE_BASE = "urn:instore-integration:problem:"


@dataclass(frozen=True)
class HttpLimits:
    """Bounds on a request head: bytes of request line + header fields, header count, seconds to receive it."""

    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> HttpLimits:
        """The limits named by ``settings`` (``http_max_header_bytes``, ``http_max_headers``, ``http_header_timeout_seconds``)."""
        return cls(
            settings.http_max_header_bytes,
            settings.http_max_headers,
            settings.http_header_timeout_seconds,
            settings.http_body_timeout_seconds,
        )


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was already answered."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HttpLimits` on every request head (see the module docstring)."""

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_head = True  # between requests and while a request line/headers arrive
        self._head_bytes = 0  # bytes received since the head began (an upper bound of its size)
        self._head_started: float | None = None  # loop time the head's clock started; None between requests
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_started: float | None = None  # loop time the head ended while its body is unfinished
        self._refused = False

    # -- connection ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # One timer per connection, re-armed as it fires (a timer per request cost ~5 µs per request).
        self._head_started = self.loop.time()  # the first head's clock runs from the connection on
        self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._check_head)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received`` plus the head accounting; a refused connection drops what arrives."""
        if self._refused:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
            if self._head_started is None:  # the first bytes of the next request on a kept-alive connection
                self._head_started = self.loop.time()
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refused:  # a callback below answered already and stopped the parser
                return
            # uvicorn would answer text/plain; every answer of ours is an RFC 9457 problem (found by the fuzz test:
            # a request with a malformed Transfer-Encoding header).
            self._refuse(400, "invalid-http", "Bad request", "the request is not valid HTTP/1.1")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._awaiting_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(
                431,
                "headers-too-large",
                "Request header fields too large",
                f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
            )

    # -- parser callbacks ------------------------------------------------------------
    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        if len(self.headers) > self.limits.max_headers:
            self._refuse(
                431, "headers-too-large", "Request header fields too large", f"more than {self.limits.max_headers} header fields"
            )
            raise _Refused
        # What arrived is an upper bound of the head's size: measure exactly only when it is over the limit.
        if self._head_bytes > self.limits.max_header_bytes and (
            len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers) > self.limits.max_header_bytes
        ):
            self._refuse(
                431,
                "headers-too-large",
                "Request header fields too large",
                f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
            )
            raise _Refused
        self._body_started = self.loop.time()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head, self._head_bytes, self._head_started, self._body_started = True, 0, None, None

    # -- refusing ----------------------------------------------------------------------
    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check_head(self) -> None:
        """The connection's timer: a head unfinished ``header_timeout_seconds`` after its clock started ends it."""
        self._head_timer = None
        if self.transport.is_closing() or self._refused:
            return
        timeout = self.limits.header_timeout_seconds
        if not self._awaiting_head and self._body_started is not None:  # the body of a request is arriving
            body_deadline = self._body_started + self.limits.body_timeout_seconds
            if self.loop.time() < body_deadline:
                self._head_timer = self.loop.call_at(min(body_deadline, self.loop.time() + timeout), self._check_head)
            else:
                self._body_too_slow()
            return
        if not self._awaiting_head or self._head_started is None:  # a request in flight, or idle between requests
            self._head_timer = self.loop.call_later(timeout, self._check_head)
            return
        deadline = self._head_started + timeout
        if self.loop.time() < deadline:
            self._head_timer = self.loop.call_at(deadline, self._check_head)
        elif self._head_bytes == 0:
            self.transport.close()  # never sent a byte of a request: nothing to answer
        else:
            self._refuse(
                408, "request-timeout", "Request timeout", f"the request line and headers did not arrive within {timeout} s"
            )

    def _body_too_slow(self) -> None:
        """The body did not arrive within ``body_timeout_seconds``: the application sees a disconnect;
        408 when it has not started answering, else the connection just closes."""
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.disconnected = True  # its receive() now says http.disconnect, its send() is dropped
            cycle.message_event.set()
        detail = f"the request body did not arrive within {self.limits.body_timeout_seconds} s"
        if answered:
            self.logger.warning("Request timeout: %s", detail)
            self.transport.close()
        else:
            self._refuse(408, "request-timeout", "Request timeout", detail)

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        """Answer ``status`` with a problem body, half-close, drain for :data:`LINGER_SECONDS`, close."""
        self._refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        self.logger.warning("%s: %s", title, detail)
        body = json.dumps({"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}).encode()
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        self.transport.write(b"".join(head))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)


def bounded_protocol(limits: HttpLimits) -> type[BoundedHttpToolsProtocol]:
    """A :class:`BoundedHttpToolsProtocol` subclass with ``limits`` (uvicorn's ``Config(http=...)``)."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"limits": limits})
