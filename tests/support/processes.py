"""Real parts for integration and end-to-end tests, started as processes.

- Apache Kafka: ``KAFKA_BOOTSTRAP_SERVERS`` when set (CI starts one broker for the whole
  run), else a single KRaft node started by ``scripts/kafka.sh`` on free ports.
- Redis (the gateway's token vault): ``REDIS_URL`` when set, else ``redis-server`` from
  the distribution (``apt-get install redis-server``) on a free port, nothing persisted.
  (The session fixtures may start both as containers instead: ``tests/support/containers.py``;
  a test that needs a broker of its own always gets a process from :func:`start_kafka`.)
- Composable Commerce: the npm ``@labdigital/commercetools-mock`` server
  (``tools/ct-mock/server.mjs``), seeded, on a free port.
- Our services, as ``python -m`` processes with their settings in the environment.

Every wait is on a condition with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


FREE_PORTS = range(20000, 32000)
"""Where :func:`free_port` picks: below the kernel's ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``,
32768-60999 by default), so no client's outgoing connection can take a port a test server must
bind again — and a client retrying a stopped broker cannot connect to itself on the broker's
port (TCP simultaneous open), which then keeps the broker from starting again."""


def free_port() -> int:
    """A random TCP port of :data:`FREE_PORTS` that binds on 127.0.0.1 right now.

    Raises ``RuntimeError`` when 200 random tries found none free.
    """
    for _ in range(200):
        port = random.choice(FREE_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1}")


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true; raise ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class LoggedProcess:
    """A child process whose combined output is kept (and mirrored to a file) for assertions."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.log_path = Path(tempfile.gettempdir()) / f"instore-test-{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log_path.open("w") as f:
            for line in self.proc.stdout:
                f.write(line)
                f.flush()
                with self._lock:
                    self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        """Everything the process printed so far."""
        with self._lock:
            return "\n".join(self.lines)

    def find_line(self, predicate: Callable[[str], bool]) -> str | None:
        """The first printed line for which ``predicate`` is true."""
        with self._lock:
            return next((line for line in self.lines if predicate(line)), None)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout`` s); return the exit code."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode

    def describe(self, tail: int = 40) -> str:
        """The last ``tail`` lines, for failure messages."""
        with self._lock:
            return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(self.lines[-tail:])


@dataclass
class Kafka:
    """A reachable Kafka broker; ``stop`` ends it when this run started it."""

    bootstrap_servers: str
    home: Path | None = None
    controller_port: int | None = None

    def pause(self) -> None:
        """Stop the broker this run started, keeping its data (``resume`` starts it again)."""
        assert self.home is not None, "only a broker this run started can be paused"
        subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "kafka.sh"), "stop"],
            check=True,
            capture_output=True,
            env=_kafka_env(self.home, self.bootstrap_servers, self.controller_port),
        )

    def resume(self) -> None:
        """Start a paused broker again on the same ports and data; returns once it is ready."""
        assert self.home is not None
        result = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "kafka.sh"), "start"],
            capture_output=True,
            text=True,
            env=_kafka_env(self.home, self.bootstrap_servers, self.controller_port),
        )
        if result.returncode != 0:
            raise RuntimeError(f"Kafka did not restart:\n{result.stdout}\n{result.stderr}")

    def stop(self) -> None:
        """Stop and delete the broker this test run started (no-op for an external one)."""
        if self.home is not None:
            subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "kafka.sh"), "stop"],
                env=_kafka_env(self.home, self.bootstrap_servers),
                check=False,
                capture_output=True,
            )
            shutil.rmtree(self.home, ignore_errors=True)


def _kafka_env(home: Path, bootstrap: str, controller_port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_HOME"] = str(home)
    env["KAFKA_LIBS"] = str(REPO_ROOT / ".local" / "kafka" / "libs")
    env["KAFKA_PORT"] = bootstrap.rsplit(":", 1)[1]
    if controller_port:
        env["KAFKA_CONTROLLER_PORT"] = str(controller_port)
    return env


def start_kafka(port: int | None = None, controller_port: int | None = None) -> Kafka:
    """The broker named by ``KAFKA_BOOTSTRAP_SERVERS``, else a fresh local KRaft node.

    With ``port``, always a fresh local node on that port (for tests that need their own
    broker). Raises ``RuntimeError`` with the script's output when the local broker cannot
    start (no Java 17, jars not installed: run ``make install``).
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external and port is None:
        return Kafka(external)
    port, controller = port or free_port(), controller_port or free_port()
    home = Path(tempfile.mkdtemp(prefix="instore-kafka-"))
    bootstrap = f"127.0.0.1:{port}"
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "kafka.sh"), "start"],
        env=_kafka_env(home, bootstrap, controller),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"local Kafka did not start:\n{result.stdout}\n{result.stderr}")
    return Kafka(bootstrap, home, controller)


@dataclass
class RedisServer:
    """A reachable Redis; ``stop`` ends it when this run started it."""

    url: str
    process: LoggedProcess | None = None

    def stop(self) -> None:
        """Stop the server this test run started (no-op for an external one)."""
        if self.process is not None:
            self.process.stop()


def _redis_answers(port: int) -> bool:
    """True when a Redis on 127.0.0.1:``port`` answers PING (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(timeout: float = 20) -> RedisServer:
    """The Redis named by ``REDIS_URL``, else a fresh ``redis-server`` on a free port.

    The local one binds 127.0.0.1, persists nothing (``--save '' --appendonly no``) and is
    ready when it answers PING. Raises ``RuntimeError`` when ``redis-server`` is not
    installed or exits, ``TimeoutError`` after ``timeout`` s without a PONG.
    """
    external = os.environ.get("REDIS_URL")
    if external:
        return RedisServer(external)
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: run `make install` as root, "
            "or `apt-get install redis-server` (or set REDIS_URL to a Redis)"
        )
    port = free_port()
    process = LoggedProcess(
        "redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], dict(os.environ)
    )

    def ready() -> bool:
        if not process.alive():
            raise RuntimeError(process.describe())
        return _redis_answers(port)

    try:
        wait_until(ready, timeout, "redis-server to answer PING")
    except BaseException:
        process.stop()
        raise
    return RedisServer(f"redis://127.0.0.1:{port}/0", process)


@dataclass
class CtMock:
    """A running commercetools mock server and what its seed created."""

    process: LoggedProcess
    url: str
    seed: dict[str, Any] = field(default_factory=dict)

    def settings_env(self) -> dict[str, str]:
        """The ``CTP_*`` environment that points a service at this server."""
        return {
            "CTP_PROJECT_KEY": self.seed.get("projectKey", "instore-demo"),
            "CTP_CLIENT_ID": "test-client",
            "CTP_CLIENT_SECRET": "test-secret",
            "CTP_AUTH_URL": self.url,
            "CTP_API_URL": self.url,
        }


def start_ct_mock(project_key: str = "instore-demo", timeout: float = 60) -> CtMock:
    """Start ``tools/ct-mock/server.mjs --seed`` on a free port and wait for its ready line."""
    if not (REPO_ROOT / "tools" / "ct-mock" / "node_modules").is_dir():
        raise RuntimeError("tools/ct-mock/node_modules is missing: run `make install`")
    port = free_port()
    env = dict(os.environ, CTP_PROJECT_KEY=project_key)
    process = LoggedProcess("ct-mock", ["node", "tools/ct-mock/server.mjs", "--port", str(port), "--seed"], env)
    try:
        wait_until(
            lambda: process.find_line(lambda s: s.startswith("ct-mock ready")) is not None or not process.alive(),
            timeout,
            "the commercetools mock",
        )
    except TimeoutError:
        process.stop()
        raise
    if not process.alive():
        raise RuntimeError(process.describe())
    seed_line = process.find_line(lambda s: s.startswith("SEED "))
    seed = json.loads(seed_line[5:]) if seed_line else {}
    return CtMock(process, f"http://127.0.0.1:{port}", seed)


def service_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a service process: ours, plus ``extra``, logging as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTP_", "INSTORE_", "CART_MAPPING_"))}
    env.update({"LOG_JSON": "true", "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


@dataclass
class Service:
    """A service process and its HTTP base URL."""

    process: LoggedProcess
    url: str

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop the process; return its exit code."""
        return self.process.stop(sig)


def start_service(
    name: str, module: str, env: dict[str, str], port: int, ready_path: str = "/readyz", timeout: float = 60
) -> Service:
    """Run ``python -m module`` and wait until ``GET ready_path`` answers 200."""
    process = LoggedProcess(name, [sys.executable, "-m", module], service_env(env))
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not process.alive():
            raise RuntimeError(process.describe())
        try:
            return httpx.get(url + ready_path, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout, f"{name} to be ready", interval=0.1)
    except BaseException:
        process.stop()
        raise
    return Service(process, url)
