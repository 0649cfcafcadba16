"""Kafka and Redis for the test run: an external one, a container (testcontainers), or a process.

Precedence, decided once per part (Kafka, Redis) by :func:`choose`:

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` set → that broker / server (CI's main run, a
   developer's own stack). An explicit address always wins.
2. ``INSTORE_TEST_CONTAINERS`` (``auto`` when unset):

   - ``1`` (``true``/``yes``/``on``): a container, required — no Docker-compatible API answering
     fails the fixture instead of quietly testing something else (CI's container step uses this);
     a missing image is pulled.
   - ``auto``: a container when a Docker-compatible API answers *and* the image is already there
     (``make images`` / ``bash scripts/images.sh kafka redis``); never pulls, never fails because
     of containers — anything else falls through to 3.
   - ``0`` (``false``/``no``/``off``): never a container.

   Any other value is an error (a typo must not silently become ``auto``).
3. A process, as before: ``scripts/kafka.sh`` with the jars in ``.local/kafka``, ``redis-server``
   (:mod:`tests.support.processes`).

The Docker API is the one testcontainers uses: ``DOCKER_HOST`` (podman's API socket:
``podman system service --time=0 unix:///PATH/podman.sock``), else the default socket.
Images: ``INSTORE_TEST_KAFKA_IMAGE`` (default ``localhost/instore-kafka:ci``) and
``INSTORE_TEST_REDIS_IMAGE`` (default ``localhost/instore-redis:ci``). Nothing here depends on
how they were built; the Kafka image must follow the official ``apache/kafka`` image's interface
(every ``KAFKA_<NAME>`` variable is the property ``<name>``, ``CLUSTER_ID``) and the Redis image
the official ``redis`` one (``redis-server [options]`` as the command), so ``apache/kafka:4.1.0``
and ``redis:7`` work too where a registry is reachable.

Testcontainers' reaper (Ryuk) is off unless ``TESTCONTAINERS_RYUK_DISABLED`` says otherwise: its
image cannot be pulled everywhere (not in CI). The fixtures remove their containers at the end of
the run; a run killed before that leaves them, labelled ``io.instore.tests=true``
(``podman rm -f $(podman ps -aq --filter label=io.instore.tests=true)``).
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tests.support.processes import Kafka, RedisServer, free_port, start_kafka, start_redis, wait_until

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

MODE_ENV = "INSTORE_TEST_CONTAINERS"
KAFKA_IMAGE_ENV = "INSTORE_TEST_KAFKA_IMAGE"
REDIS_IMAGE_ENV = "INSTORE_TEST_REDIS_IMAGE"
DEFAULT_KAFKA_IMAGE = "localhost/instore-kafka:ci"
DEFAULT_REDIS_IMAGE = "localhost/instore-redis:ci"
LABEL = "io.instore.tests"

KAFKA_SETTINGS: dict[str, str] = {
    "num.partitions": "3",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "3",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
    "delete.topic.enable": "true",
    "num.network.threads": "1",
    "num.io.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "log.retention.hours": "24",
}
"""The broker settings of ``scripts/kafka.sh`` other than addresses and paths (a unit test keeps
the two equal): a containerised broker behaves as the local one — no auto-created topics, three
partitions, one replica, no rebalance delay."""

KAFKA_JVM = {"KAFKA_HEAP_OPTS": "-Xms256m -Xmx512m", "KAFKA_JVM_PERFORMANCE_OPTS": "-XX:+UseSerialGC"}
"""The JVM options of ``scripts/kafka.sh`` (not properties: both images read them as such)."""


class Source(enum.Enum):
    """Where a part of the test run comes from."""

    EXTERNAL = "external"
    CONTAINER = "container"
    PROCESS = "process"


class Mode(enum.Enum):
    """``INSTORE_TEST_CONTAINERS``: see the module docstring."""

    ON = "on"
    AUTO = "auto"
    OFF = "off"


_MODES = {
    "": Mode.AUTO,
    "auto": Mode.AUTO,
    **dict.fromkeys(("1", "true", "yes", "on"), Mode.ON),
    **dict.fromkeys(("0", "false", "no", "off"), Mode.OFF),
}


class ContainersUnavailable(RuntimeError):
    """Containers were required (``INSTORE_TEST_CONTAINERS=1``) but no Docker API answers."""


def parse_mode(value: str | None) -> Mode:
    """The mode named by ``value`` (case and surrounding blanks ignored; unset = ``auto``).

    Raises ``ValueError`` naming the accepted values for anything else.
    """
    try:
        return _MODES[(value or "").strip().lower()]
    except KeyError:
        raise ValueError(f"{MODE_ENV}={value!r}: expected 1/true/yes/on, auto, or 0/false/no/off") from None


@dataclass(frozen=True)
class Choice:
    """Where a part comes from, and why (printed in pytest's summary)."""

    source: Source
    reason: str


def choose(external: str | None, mode: Mode, api_answers: Callable[[], bool], image_present: Callable[[], bool]) -> Choice:
    """Apply the precedence of the module docstring to one part.

    ``external`` is ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL``; ``api_answers`` and
    ``image_present`` are asked only when the rule needs them (in that order). Raises
    :class:`ContainersUnavailable` when ``mode`` is ``ON`` and no Docker API answers.
    """
    if external:
        return Choice(Source.EXTERNAL, "set in the environment")
    if mode is Mode.OFF:
        return Choice(Source.PROCESS, f"{MODE_ENV}=0")
    if not api_answers():
        if mode is Mode.ON:
            raise ContainersUnavailable(
                f"{MODE_ENV}=1 but no Docker-compatible API answers (DOCKER_HOST={os.environ.get('DOCKER_HOST')!r}); "
                "start one, e.g. `podman system service --time=0 unix:///tmp/podman.sock` and "
                "DOCKER_HOST=unix:///tmp/podman.sock"
            )
        return Choice(Source.PROCESS, "no Docker API answers")
    if mode is Mode.ON:
        return Choice(Source.CONTAINER, f"{MODE_ENV}=1")
    if not image_present():
        return Choice(Source.PROCESS, "Docker API answers, but the image is not there (auto never pulls)")
    return Choice(Source.CONTAINER, "Docker API answers and the image is there")


# -- the Docker side (testcontainers) ------------------------------------------------------------
@cache
def _docker() -> Any | None:
    """testcontainers' Docker client when its API answers a ping, else ``None`` (asked once)."""
    try:
        from testcontainers.core.docker_client import DockerClient

        client = DockerClient(timeout=5)
        client.client.ping()
    except Exception:  # no socket, refused, not a Docker API: all mean "no containers"
        return None
    return client


def _api_answers() -> bool:
    return _docker() is not None


def _image_present(image: str) -> bool:
    from docker.errors import DockerException

    client = _docker()
    if client is None:
        return False
    try:
        client.client.images.get(image)
    except DockerException:
        return False
    return True


def container_host() -> str:
    """The address where mapped ports are reached: ``TESTCONTAINERS_HOST_OVERRIDE`` (or ``TC_HOST``),
    else the host of a ``tcp://``/``ssh://`` ``DOCKER_HOST``, else ``127.0.0.1`` (a local socket:
    podman or Docker on this machine).

    Not testcontainers' own guess: inside a container (``/.dockerenv``, as in CI) it picks the
    network gateway, which podman's API does not report.
    """
    override = os.environ.get("TESTCONTAINERS_HOST_OVERRIDE") or os.environ.get("TC_HOST")
    if override:
        return override
    docker_host = urlparse(os.environ.get("DOCKER_HOST", ""))
    if docker_host.scheme in ("tcp", "ssh", "http", "https") and docker_host.hostname:
        return docker_host.hostname
    return "127.0.0.1"


def kafka_env_name(key: str) -> str:
    """The official Kafka image's variable for property ``key``: ``.`` → ``_``, ``_`` → ``__``,
    ``-`` → ``___``, upper case, ``KAFKA_`` prefix (``log.retention.hours`` → ``KAFKA_LOG_RETENTION_HOURS``)."""
    if not re.fullmatch(r"[a-z0-9._-]+", key):
        raise ValueError(f"not a Kafka property name: {key!r}")
    return "KAFKA_" + key.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def kafka_container_env(host: str, port: int, cluster_id: str) -> dict[str, str]:
    """The environment of a single KRaft node (broker and controller) reached at ``host:port``.

    The client listener binds the *same* port inside the container as it is mapped to outside,
    so the advertised address ``host:port`` is right for clients on the host and for the broker
    itself; the controller listens on 9093 inside only.
    """
    props = {
        "node.id": "1",
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://:{port},CONTROLLER://:9093",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "controller.quorum.voters": "1@localhost:9093",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": "/var/lib/kafka/data",
        **KAFKA_SETTINGS,
    }
    return {"CLUSTER_ID": cluster_id, **KAFKA_JVM, **{kafka_env_name(k): v for k, v in props.items()}}


def _cluster_id() -> str:
    """A fresh KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 characters)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _port_answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _start(container: DockerContainer, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Start ``container`` and wait for ``ready``; on failure remove it and raise with its log tail.

    Raises ``RuntimeError`` naming how to build the image when the engine has no such image
    (and could not pull it).
    """
    from docker.errors import ImageNotFound, NotFound

    try:
        container.start()
    except (ImageNotFound, NotFound) as exc:
        raise RuntimeError(
            f"no image {container.image} ({exc}): build it with `bash scripts/images.sh kafka redis`, "
            f"or name another in {KAFKA_IMAGE_ENV} / {REDIS_IMAGE_ENV}"
        ) from exc

    def check() -> bool:
        inner = container.get_wrapped_container()
        inner.reload()
        if inner.status not in ("created", "running"):
            raise RuntimeError(f"{what} exited ({inner.status}):\n{_log_tail(container)}")
        return ready()

    try:
        wait_until(check, timeout, what, interval=0.1)
    except TimeoutError as exc:
        log = _log_tail(container)
        container.stop()
        raise TimeoutError(f"{exc}\n{log}") from None
    except BaseException:
        container.stop()
        raise


def _logs(container: DockerContainer) -> str:
    """Everything the container printed so far (stdout and stderr), ``""`` when unreadable."""
    with contextlib.suppress(Exception):
        out, err = container.get_logs()
        return (out + err).decode(errors="replace")
    return ""


def _log_tail(container: DockerContainer, lines: int = 40) -> str:
    return "\n".join(_logs(container).splitlines()[-lines:]) or "(no log)"


def _container(image: str) -> DockerContainer:
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        testcontainers_config.ryuk_disabled = True
    return DockerContainer(image).with_kwargs(labels={LABEL: "true", f"{LABEL}.pid": str(os.getpid())})


@dataclass
class ContainerKafka(Kafka):
    """A broker in a container this run started; ``stop`` removes it (``pause`` is not offered)."""

    container: DockerContainer | None = None

    def stop(self) -> None:
        """Remove the container and its data."""
        if self.container is not None:
            self.container.stop()
            self.container = None


@dataclass
class ContainerRedis(RedisServer):
    """A Redis in a container this run started; ``stop`` removes it."""

    container: DockerContainer | None = None

    def stop(self) -> None:
        """Remove the container."""
        if self.container is not None:
            self.container.stop()
            self.container = None


def start_kafka_container(image: str, timeout: float = 90) -> ContainerKafka:
    """A single KRaft node from ``image`` on a free host port, ready when it logged
    ``Kafka Server started`` and its mapped port accepts connections (as ``scripts/kafka.sh``)."""
    host, port = container_host(), free_port()
    container = _container(image).with_bind_ports(port, port)
    for name, value in kafka_container_env(host, port, _cluster_id()).items():
        container.with_env(name, value)

    def ready() -> bool:
        return "Kafka Server started" in _logs(container) and _port_answers(host, port)

    _start(container, ready, timeout, f"Kafka ({image}) to be ready on {host}:{port}")
    return ContainerKafka(f"{host}:{port}", container=container)


def _redis_pong(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_container(image: str, timeout: float = 60) -> ContainerRedis:
    """``redis-server`` from ``image`` on a free host port, nothing persisted, ready on PONG."""
    host, port = container_host(), free_port()
    container = (
        _container(image)
        .with_bind_ports(6379, port)
        .with_command(["redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"])
    )
    _start(container, lambda: _redis_pong(host, port), timeout, f"Redis ({image}) to answer PING on {host}:{port}")
    return ContainerRedis(f"redis://{host}:{port}/0", container=container)


# -- the fixtures' entry points ------------------------------------------------------------------
CHOICES: dict[str, Choice] = {}
"""What each part of this run came from (``kafka``, ``redis``), for pytest's terminal summary."""


def _choose_for(part: str, external_var: str, image: str, env: Mapping[str, str]) -> Choice:
    choice = choose(env.get(external_var), parse_mode(env.get(MODE_ENV)), _api_answers, lambda: _image_present(image))
    CHOICES[part] = choice
    return choice


def kafka_for_run(env: Mapping[str, str] = os.environ) -> Kafka:
    """The run's broker by the precedence of the module docstring; ``stop()`` it at the end."""
    image = env.get(KAFKA_IMAGE_ENV) or DEFAULT_KAFKA_IMAGE
    choice = _choose_for("kafka", "KAFKA_BOOTSTRAP_SERVERS", image, env)
    if choice.source is Source.CONTAINER:
        kafka: Kafka = start_kafka_container(image)
        CHOICES["kafka"] = Choice(choice.source, f"{choice.reason}: {image} on {kafka.bootstrap_servers}")
        return kafka
    return start_kafka()


def redis_for_run(env: Mapping[str, str] = os.environ) -> RedisServer:
    """The run's Redis by the precedence of the module docstring; ``stop()`` it at the end."""
    image = env.get(REDIS_IMAGE_ENV) or DEFAULT_REDIS_IMAGE
    choice = _choose_for("redis", "REDIS_URL", image, env)
    if choice.source is Source.CONTAINER:
        redis: RedisServer = start_redis_container(image)
        CHOICES["redis"] = Choice(choice.source, f"{choice.reason}: {image} at {redis.url}")
        return redis
    return start_redis()
