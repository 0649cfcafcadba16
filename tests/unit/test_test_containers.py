"""Where the test run's Kafka and Redis come from (tests/support/containers.py), without Docker."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.support import containers
from tests.support.containers import (
    Choice,
    ContainersUnavailable,
    Mode,
    Source,
    choose,
    container_host,
    kafka_container_env,
    kafka_env_name,
    parse_mode,
)
from tests.support.processes import REPO_ROOT


def probe(answer: bool, calls: list[str], name: str) -> Callable[[], bool]:
    def ask() -> bool:
        calls.append(name)
        return answer

    return ask


@pytest.mark.parametrize(
    ("external", "mode", "api", "image", "source", "asked"),
    [
        # 1. an explicit address wins, and nothing asks Docker
        ("127.0.0.1:9092", Mode.ON, True, True, Source.EXTERNAL, []),
        ("127.0.0.1:9092", Mode.AUTO, True, True, Source.EXTERNAL, []),
        # 2. auto: a container only when the API answers and the image is there
        (None, Mode.AUTO, True, True, Source.CONTAINER, ["api", "image"]),
        (None, Mode.AUTO, True, False, Source.PROCESS, ["api", "image"]),
        (None, Mode.AUTO, False, True, Source.PROCESS, ["api"]),
        ("", Mode.AUTO, False, True, Source.PROCESS, ["api"]),  # set but empty = unset
        # on: a container whenever the API answers (a missing image is pulled)
        (None, Mode.ON, True, False, Source.CONTAINER, ["api"]),
        # off: processes, without asking Docker
        (None, Mode.OFF, True, True, Source.PROCESS, []),
    ],
)
def test_precedence_external_then_container_then_process(
    external: str | None, mode: Mode, api: bool, image: bool, source: Source, asked: list[str]
) -> None:
    calls: list[str] = []
    choice = choose(external, mode, probe(api, calls, "api"), probe(image, calls, "image"))
    assert choice.source is source
    assert calls == asked


def test_containers_required_without_a_docker_api_fail_instead_of_falling_back() -> None:
    with pytest.raises(ContainersUnavailable, match="podman system service"):
        choose(None, Mode.ON, lambda: False, lambda: True)


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        *[(None, Mode.AUTO), ("", Mode.AUTO), ("auto", Mode.AUTO)],
        *[(" 1 ", Mode.ON), ("TRUE", Mode.ON), ("on", Mode.ON)],
        *[("0", Mode.OFF), ("false", Mode.OFF), ("No", Mode.OFF), ("off", Mode.OFF)],
    ],
)
def test_mode_values(value: str | None, mode: Mode) -> None:
    assert parse_mode(value) is mode


@pytest.mark.parametrize("value", ["2", "podman", "enabled"])
def test_an_unknown_mode_is_an_error_not_auto(value: str) -> None:
    with pytest.raises(ValueError, match="INSTORE_TEST_CONTAINERS"):
        parse_mode(value)


def test_the_fixture_entry_uses_an_explicit_broker_without_asking_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_docker() -> None:
        raise AssertionError("Docker was asked although KAFKA_BOOTSTRAP_SERVERS is set")

    monkeypatch.setattr(containers, "_docker", no_docker)
    monkeypatch.setattr(containers, "CHOICES", {})  # not this run's choice
    env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092", "INSTORE_TEST_CONTAINERS": "1"}
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9092")  # processes.start_kafka reads os.environ
    assert containers.kafka_for_run(env).bootstrap_servers == "kafka.example:9092"
    assert containers.CHOICES["kafka"] == Choice(Source.EXTERNAL, "set in the environment")


def test_the_fixture_entry_fails_when_containers_are_required_and_no_api_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    containers._docker.cache_clear()
    try:
        with pytest.raises(ContainersUnavailable):
            containers.redis_for_run({"INSTORE_TEST_CONTAINERS": "1"})
    finally:
        containers._docker.cache_clear()


@pytest.mark.parametrize(
    ("env", "host"),
    [
        ({}, "127.0.0.1"),
        ({"DOCKER_HOST": "unix:///tmp/podman.sock"}, "127.0.0.1"),
        ({"DOCKER_HOST": "tcp://docker.internal:2375"}, "docker.internal"),
        ({"DOCKER_HOST": "tcp://docker.internal:2375", "TESTCONTAINERS_HOST_OVERRIDE": "10.0.0.5"}, "10.0.0.5"),
    ],
)
def test_container_host(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], host: str) -> None:
    for name in ("DOCKER_HOST", "TESTCONTAINERS_HOST_OVERRIDE", "TC_HOST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert container_host() == host


def decode(name: str) -> str:
    """The official apache/kafka image's rule (and the local stand-in's): variable → property."""
    key = name.removeprefix("KAFKA_").lower()
    return key.replace("___", "-").replace("__", "@").replace("_", ".").replace("@", "_")


@pytest.mark.parametrize("key", ["log.retention.hours", "share.coordinator.state.topic.min.isr", "a_b.c-d", "num.io.threads"])
def test_kafka_variable_names_decode_to_the_property(key: str) -> None:
    assert decode(kafka_env_name(key)) == key


def kafka_sh_properties() -> dict[str, str]:
    """The server.properties scripts/kafka.sh writes (its heredoc), variables left as written."""
    script = (REPO_ROOT / "scripts" / "kafka.sh").read_text()
    body = re.search(r'cat > "\$PROPS" <<EOF\n(.*?)\nEOF\n', script, re.S)
    assert body, "scripts/kafka.sh no longer writes its properties in one heredoc"
    lines = [line for line in body.group(1).splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


ADDRESSES = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}


def test_the_container_broker_has_the_local_scripts_settings() -> None:
    env = kafka_container_env("127.0.0.1", 24001, "MkU3OEVBNTcwNTJENDM2Qk")
    in_container = {decode(k): v for k, v in env.items() if k.startswith("KAFKA_") and not k.endswith("_OPTS")}
    local = kafka_sh_properties()
    assert {k: v for k, v in in_container.items() if k not in ADDRESSES} == {k: v for k, v in local.items() if k not in ADDRESSES}
    assert in_container["auto.create.topics.enable"] == "false"
    assert in_container["advertised.listeners"] == "PLAINTEXT://127.0.0.1:24001"
    assert in_container["listeners"].startswith("PLAINTEXT://:24001,")  # the same port inside as outside


def test_the_container_broker_has_the_local_scripts_jvm_options() -> None:
    script = (REPO_ROOT / "scripts" / "kafka.sh").read_text()
    for name, value in containers.KAFKA_JVM.items():
        assert f'{name}="${{{name}:-{value}}}"' in script
