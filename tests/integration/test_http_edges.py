"""The HTTP edge of the real server processes (uvicorn as ``serve()`` configures it), over raw sockets.

- ``X-Forwarded-For`` sets the client address (the ``POST /sessions`` rate-limit bucket) only
  when the TCP peer is one of ``GATEWAY_TRUSTED_PROXIES`` (issue 10 B1);
- request heads are bounded in size, field count and time (issue 10 B2) on the gateway and
  the dev fakes (every HTTP port goes through ``instore_shared.service.serve``).

The gateway runs without Kafka (``/healthz`` answers; nothing here needs the broker).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.support.processes import Kafka, Service, free_port, start_service

API_KEY = "edges-callback-key-" + uuid.uuid4().hex
RATE = 5
PROBLEM = "urn:instore-integration:problem:"


def _gateway(name: str, **env: str) -> Service:
    port = free_port()
    return start_service(
        name,
        "instore_gateway",
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "KAFKA_CREATE_TOPICS": "false",
            "GATEWAY_HTTP_PORT": str(port),
            "INSTORE_CALLBACK_API_KEY": API_KEY,
            "SESSIONS_RATE_LIMIT_PER_MINUTE": str(RATE),
            "HTTP_HEADER_TIMEOUT_SECONDS": "1",
            "HTTP_BODY_TIMEOUT_SECONDS": "2",
            "INSTORE_WEBHOOK_SECRET": "edges-webhook-secret",
            "IMS_JWKS_URL": f"http://127.0.0.1:{free_port()}/jwks.json",
            **env,
        },
        port,
        ready_path="/healthz",
    )


@pytest.fixture(scope="module")
def gateway() -> Iterator[Service]:
    service = _gateway("gateway-edges")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def proxied_gateway() -> Iterator[Service]:
    service = _gateway("gateway-edges-proxied", GATEWAY_TRUSTED_PROXIES="127.0.0.0/8, ::1")
    yield service
    service.stop()


def _session(service: Service, forwarded_for: str | None) -> int:
    headers = {"Authorization": "Bearer not-a-jwt"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.post(
        service.url + "/sessions", json={"locationId": "l", "workstationId": "w"}, headers=headers, timeout=5
    ).status_code


# -- B1: X-Forwarded-For ------------------------------------------------------------------
def test_forged_forwarded_for_does_not_escape_the_sessions_rate_limit(gateway: Service) -> None:
    statuses = [_session(gateway, f"198.51.100.{i}") for i in range(RATE + 3)]
    assert 429 not in statuses[:RATE], statuses
    assert statuses[RATE:] == [429] * 3, f"each forged address got its own bucket: {statuses}"


def test_behind_a_trusted_proxy_the_limit_counts_the_address_it_reports(proxied_gateway: Service) -> None:
    # one bucket per reported client: 2 × RATE requests from distinct clients are all let through to the guard
    distinct = [_session(proxied_gateway, f"198.51.100.{i}") for i in range(2 * RATE)]
    assert 429 not in distinct, distinct
    # the proxy appends the peer it saw; whatever the client put to the left of it is not believed
    same = [_session(proxied_gateway, f"10.{i}.0.1, 203.0.113.7") for i in range(RATE + 2)]
    assert 429 not in same[:RATE] and same[RATE:] == [429] * 2, same


# -- B2: bounded request heads --------------------------------------------------------------
def _exchange(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` (tolerating a peer that stops reading) and return all it answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return _read_all(sock)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def _problem(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return json.loads(body)


def _port(service: Service) -> int:
    return int(service.url.rsplit(":", 1)[1])


def test_an_oversized_header_is_answered_431(gateway: Service) -> None:
    answer = _exchange(_port(gateway), b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
    assert _status(answer) == 431
    assert _problem(answer)["type"] == PROBLEM + "headers-too-large"


def test_too_many_header_fields_are_answered_431(gateway: Service) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(150))
    answer = _exchange(_port(gateway), b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert _status(answer) == 431


def test_heads_within_the_limits_and_large_bodies_pass(gateway: Service) -> None:
    close = b"Connection: close\r\n"
    answer = _exchange(
        _port(gateway),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + close
        + b"X-Big: "
        + b"a" * 30 * 1024
        + b"\r\n"
        + b"".join(b"X-F%d: v\r\n" % i for i in range(90))
        + b"\r\n",
    )
    assert _status(answer) == 200
    # a body far larger than the head limit arrives in the same reads as the head: not a head
    body = json.dumps({"locationId": "l" * 200_000, "workstationId": "w"}).encode()
    answer = _exchange(
        _port(gateway),
        b"POST /sessions HTTP/1.1\r\nHost: x\r\n"
        + close
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    assert _status(answer) not in (408, 431), answer[:300]


def test_unfinished_16_mb_headers_on_8_connections_do_not_grow_the_process(gateway: Service) -> None:
    process = psutil.Process(gateway.process.proc.pid)
    before = process.memory_info().rss
    piece = b"a" * 256 * 1024
    socks = [socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) for _ in range(8)]
    try:
        answers = []
        for sock in socks:  # each: 16 MB of one header line, never finished
            sent = 0
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                while sent < 16 * 1024 * 1024:
                    sock.sendall(piece)
                    sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answers.append(_read_all(sock))
        grown = process.memory_info().rss - before
    finally:
        for sock in socks:
            sock.close()
    assert [_status(a) for a in answers] == [431] * 8
    assert grown < 20 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MB"


def test_a_head_that_trickles_in_is_cut_off_after_the_header_timeout(gateway: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = _read_all(sock)  # blocks until the server answers and closes (or the socket timeout)
        took = time.monotonic() - started
    assert _status(answer) == 408
    assert _problem(answer)["type"] == PROBLEM + "request-timeout"
    assert 0.9 <= took < 5, took


def test_the_next_head_on_a_kept_alive_connection_has_the_same_deadline(gateway: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        assert _status(first) == 200
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # the next request's head, never finished
        answer = _read_all(sock)
        took = time.monotonic() - started
    assert _status(answer) == 408
    assert 0.9 <= took < 5, took


def test_a_webhook_body_that_trickles_in_is_cut_off_after_the_body_timeout(gateway: Service) -> None:
    # Found by an adversarial pass: bodies sent at 1 byte/s held their connections (and up to their
    # Content-Length of memory) without end; the signature is only checked once the body is in.
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        sock.sendall(
            b"POST /instore/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Signature: 00\r\nContent-Length: 100000\r\n\r\n{"
        )
        started = time.monotonic()
        sock.settimeout(0.3)
        answer = b""
        while time.monotonic() - started < 8:  # keep trickling, as the attacker does
            try:
                sock.sendall(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
        took = time.monotonic() - started
    assert _status(answer) == 408, answer[:200]
    assert _problem(answer)["type"] == PROBLEM + "request-timeout"
    assert 1.9 <= took < 6, took


def test_a_body_within_the_body_timeout_is_taken(gateway: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        sock.sendall(
            b"POST /instore/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Signature: 00\r\nContent-Length: 2\r\n\r\n{"
        )
        time.sleep(1.2)  # a slow client within the 2 s body timeout (the pause is the input, not synchronisation)
        sock.sendall(b"}")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert _status(answer) == 401  # read whole, then refused for its signature — not a 408


def test_a_request_that_is_not_valid_http_gets_a_problem_body(gateway: Service) -> None:
    # Found by the OpenAPI fuzz test: uvicorn answered a malformed Transfer-Encoding with text/plain.
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: %^E\r\n\r\n")
        answer = _read_all(sock)
    assert _status(answer) == 400
    assert _problem(answer)["type"] == PROBLEM + "invalid-http"


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(gateway: Service) -> None:
    with socket.create_connection(("127.0.0.1", _port(gateway)), timeout=10) as sock:
        started = time.monotonic()
        assert _read_all(sock) == b""
        assert time.monotonic() - started < 5


def test_the_dev_fakes_bound_request_heads_too() -> None:
    port = free_port()
    fakes = start_service("dev-fakes-edges", "instore_devfakes", {"DEVFAKES_HTTP_PORT": str(port)}, port, ready_path="/healthz")
    try:
        answer = _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
        assert _status(answer) == 431
    finally:
        fakes.stop()


# -- B3: the Callback API Key as the HTTP parser hands it over ----------------------------------
def test_whitespace_around_the_callback_api_key_is_one_rule_on_the_wire(gateway: Service) -> None:
    """httptools drops the leading whitespace of a field value and keeps the trailing: both must pass."""
    path = b"/instore/callbacks/tokens/" + b"A" * 43
    for value in (API_KEY.encode(), b" " + API_KEY.encode(), API_KEY.encode() + b" ", b"\t" + API_KEY.encode() + b" \t"):
        answer = _exchange(
            _port(gateway), b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: " + value + b"\r\n\r\n"
        )
        assert _status(answer) == 404, (value, answer[:300])
    answer = _exchange(
        _port(gateway),
        b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Api-Key: " + API_KEY.encode() + b" x\r\n\r\n",
    )
    assert _status(answer) == 401


def test_a_kafka_service_health_port_bounds_heads_by_its_settings(kafka: Kafka) -> None:
    """cart-mapping (as order-finalization and refund) serves its health port through the same serve()."""
    port = free_port()
    service = start_service(
        "cart-mapping-edges",
        "instore_cart_mapping",
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "CART_MAPPING_HTTP_PORT": str(port),
            "CART_MAPPING_CONSUMER_GROUP": f"edges-{uuid.uuid4().hex[:8]}",
            "HTTP_MAX_HEADER_BYTES": "4096",
        },
        port,
        ready_path="/healthz",
    )
    try:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: "
        assert _status(_exchange(port, head + b"a" * 2048 + b"\r\n\r\n")) == 200
        assert _status(_exchange(port, head + b"a" * 8192 + b"\r\n\r\n")) == 431
    finally:
        service.stop()
