"""docker-compose.yml is a valid Compose file, every image in it can be replaced from the environment,
Kafka is the version of the local jars, and the services are built from the one Dockerfile.

The file is loaded by compose-validate (tools/compose-validate, built by ``make install``): docker
compose's own loader, compose-go, which checks the Compose Specification's JSON schema, interpolates
the variables and checks the model (a ``depends_on`` naming no service, a bad boolean, …) — what
``docker compose config`` does, without a Docker engine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
VALIDATOR = ROOT / ".local" / "bin" / "compose-validate"
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file())
# images of the registry that CI replaces with stand-ins built by scripts/images.sh
STANDINS = {"kafka": "KAFKA_IMAGE", "redis": "REDIS_IMAGE", "ct-mock": "CT_MOCK_IMAGE"}
KEY = "a2V5LWZvci10aGUtY29tcG9zZS10ZXN0LW9ubHktMzI="  # any value: the file only needs one set


def _image_variable(service: str) -> str:
    """The variable that replaces a service's image (the rule scripts/compose.sh exports them by)."""
    return service.upper().replace("-", "_") + "_IMAGE"


def _load(path: Path, **env: str) -> dict[str, Any]:
    """The resolved model of a Compose file, as docker compose sees it with ``env`` set."""
    assert VALIDATOR.exists(), f"{VALIDATOR} is missing: run make install (needs Go)"
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_IMAGE") and not k.endswith("_HOST_PORT")}
    result = subprocess.run(
        [str(VALIDATOR), *[f"-env={k}={v}" for k, v in {"TOKEN_VAULT_ENCRYPTION_KEYS": KEY, **env}.items()], str(path)],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def _raw() -> dict[str, Any]:
    with COMPOSE.open(encoding="utf-8") as fh:
        doc: dict[str, Any] = yaml.safe_load(fh)
    return doc


def test_the_compose_file_loads_as_docker_compose_loads_it() -> None:
    model = _load(COMPOSE)
    assert set(model["services"]) == {"kafka", "ct-mock", "redis", "prometheus", *SERVICES}


HEALTHY = "        condition: service_healthy\n"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda s: s.replace("    healthcheck:\n", "    healthchecks:\n", 1), "healthchecks"),
        (lambda s: s.replace("read_only: true", "read_only: sometimes", 1), "read_only"),
        (lambda s: s.replace(f"      redis:\n{HEALTHY}", f"      valkey:\n{HEALTHY}"), "valkey"),
    ],
    ids=["unknown-key", "bad-boolean", "unknown-dependency"],
)
def test_the_validator_refuses_a_broken_file(tmp_path: Path, change: Any, error: str) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(change(COMPOSE.read_text(encoding="utf-8")), encoding="utf-8")
    assert broken.read_text(encoding="utf-8") != COMPOSE.read_text(encoding="utf-8")
    result = subprocess.run(
        [str(VALIDATOR), f"-env=TOKEN_VAULT_ENCRYPTION_KEYS={KEY}", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and error in result.stderr, result.stderr


def test_the_gateway_needs_a_token_vault_key_from_the_shell() -> None:
    result = subprocess.run([str(VALIDATOR), str(COMPOSE)], capture_output=True, text=True, env={"PATH": "/usr/bin"}, check=False)
    assert result.returncode == 1 and "TOKEN_VAULT_ENCRYPTION_KEYS" in result.stderr


def test_kafka_is_the_version_of_the_local_jars() -> None:
    pom = ET.parse(ROOT / "tools" / "kafka" / "pom.xml").getroot()
    version = pom.findtext("{http://maven.apache.org/POM/4.0.0}properties/{http://maven.apache.org/POM/4.0.0}kafka.version")
    assert version and re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert _load(COMPOSE)["services"]["kafka"]["image"] == f"apache/kafka:{version}"


def test_every_image_can_be_replaced_from_the_environment() -> None:
    raw = _raw()["services"]
    variables = {name: _image_variable(name) for name in raw}
    for name, variable in variables.items():
        assert re.fullmatch(rf"\$\{{{variable}:-[^}}]+\}}", raw[name]["image"]), f"{name}: image {raw[name]['image']!r}"
    replaced = {variable: f"localhost/instore-{name}:ci" for name, variable in variables.items()}
    model = _load(COMPOSE, **replaced)
    assert {name: s["image"] for name, s in model["services"].items()} == {
        name: f"localhost/instore-{name}:ci" for name in variables
    }
    assert STANDINS.items() <= variables.items()


def test_the_services_are_built_from_the_one_dockerfile() -> None:
    model = _load(COMPOSE)["services"]
    for service in SERVICES:
        build = model[service]["build"]
        assert build["context"] == "." and build.get("dockerfile", "Dockerfile") == "Dockerfile", service
        assert build["args"] == {
            "SERVICE": service,
            "PYTHON_IMAGE": "python:3.11-slim",
            "UV_IMAGE": "ghcr.io/astral-sh/uv:0.13.9",
        }
        # as in Kubernetes: read-only root filesystem, /tmp writable, the image's non-root user
        assert model[service]["read_only"] is True and model[service]["tmpfs"] == ["/tmp"], service
        assert "user" not in model[service], f"{service}: the image's uid 10001 applies"
    local = _load(COMPOSE, PYTHON_IMAGE="localhost/python:3.11-debian", UV_IMAGE="localhost/uv:0.13.9")["services"]
    assert {local[s]["build"]["args"]["PYTHON_IMAGE"] for s in SERVICES} == {"localhost/python:3.11-debian"}
    assert {local[s]["build"]["args"]["UV_IMAGE"] for s in SERVICES} == {"localhost/uv:0.13.9"}


def test_the_uv_image_is_the_makefiles_uv() -> None:
    version = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
    assert version
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert f"ARG UV_IMAGE=ghcr.io/astral-sh/uv:{version[1]}\n" in dockerfile
    assert _load(COMPOSE)["services"]["gateway"]["build"]["args"]["UV_IMAGE"] == f"ghcr.io/astral-sh/uv:{version[1]}"


def test_host_ports_move_together() -> None:
    """A moved Kafka host port is also the one Kafka advertises to clients on the host."""
    kafka = _load(COMPOSE, KAFKA_HOST_PORT="25001")["services"]["kafka"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in kafka["ports"]] == [("127.0.0.1", "25001", 29092)]
    assert "PLAINTEXT_HOST://localhost:25001" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]


def test_images_sh_builds_every_service_and_the_stand_ins() -> None:
    script = (ROOT / "scripts" / "images.sh").read_text(encoding="utf-8")
    listed = re.search(r"^SERVICES=\(([^)]*)\)$", script, re.M)
    standins = re.search(r"^STANDINS=\(([^)]*)\)$", script, re.M)
    assert listed and standins
    assert sorted(listed[1].split()) == SERVICES
    assert set(standins[1].split()) == set(STANDINS)
    compose_sh = (ROOT / "scripts" / "compose.sh").read_text(encoding="utf-8")
    assert f"for service in {' '.join([*listed[1].split(), *standins[1].split()])}; do" in compose_sh
