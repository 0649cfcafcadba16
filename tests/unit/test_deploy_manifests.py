"""The deployment files (deploy/k8s/*.yaml, docker-compose.yml) agree with the settings classes.

Every environment variable handed to a service must be a field of its settings class: the
settings ignore unknown names (``extra="ignore"``), so a misspelled variable would be
silently dropped at run time. These tests catch it instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from instore_cart_mapping.settings import CartMappingSettings
from instore_gateway.settings import GatewaySettings
from instore_shared.settings import BaseServiceSettings, CommercetoolsSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
PLACEHOLDER = "CHANGE-ME"


def _names(model: type, prefix: str = "") -> set[str]:
    return {prefix + name.upper() for name in model.model_fields}


def _secret_names(model: type, prefix: str = "") -> set[str]:
    return {prefix + name.upper() for name, f in model.model_fields.items() if f.annotation is SecretStr}


BASE_VARS = _names(BaseServiceSettings)
CTP_VARS = _names(CommercetoolsSettings, "CTP_")
GATEWAY_VARS = _names(GatewaySettings)
CART_MAPPING_VARS = _names(CartMappingSettings) | CTP_VARS
# Values that must never be written into a manifest: SecretStr fields, plus the API client id.
SECRET_VARS = _secret_names(GatewaySettings) | _secret_names(CommercetoolsSettings, "CTP_") | {"CTP_CLIENT_ID"}

# service name (Deployment / compose service) -> allowed variables, probe port
SERVICES: dict[str, tuple[set[str], int]] = {
    "gateway": (GATEWAY_VARS, GatewaySettings.model_fields["gateway_http_port"].default),
    "cart-mapping": (CART_MAPPING_VARS, CartMappingSettings.model_fields["cart_mapping_http_port"].default),
}


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {p.name: _load(p) for p in sorted(K8S.glob("*.y*ml"))}


def _kustomization() -> dict[str, Any]:
    (doc,) = _load(K8S / "kustomization.yaml")
    return doc


def _resources() -> list[dict[str, Any]]:
    """The documents kustomize applies (the files listed in kustomization.yaml)."""
    return [doc for name in _kustomization()["resources"] for doc in _load(K8S / name)]


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _example_secret() -> dict[str, Any]:
    (doc,) = _load(K8S / "secret.example.yaml")
    return doc


def _deployments() -> dict[str, dict[str, Any]]:
    return _of_kind(_resources(), "Deployment")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _container_env_names(container: dict[str, Any]) -> set[str]:
    """Every variable the container gets: ``env`` entries and the keys of envFrom sources."""
    configmaps = _of_kind(_resources(), "ConfigMap")
    secret = _example_secret()
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert "prefix" not in source, "envFrom prefixes would rename the settings"
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            assert ref in configmaps, f"envFrom names ConfigMap {ref!r}, not in the kustomization"
            names |= set(configmaps[ref].get("data", {}))
        elif "secretRef" in source:
            ref = source["secretRef"]["name"]
            assert ref == secret["metadata"]["name"], f"envFrom names Secret {ref!r}, not secret.example.yaml"
            names |= set(secret.get("stringData", {})) | set(secret.get("data", {}))
        else:  # pragma: no cover - only the two kinds exist
            pytest.fail(f"unknown envFrom source {source}")
    return names


# -- sanity: the YAML parses ------------------------------------------------------------------
def test_all_yaml_parses() -> None:
    docs = _k8s_docs()
    assert {"kustomization.yaml", "namespace.yaml", "configmap.yaml", "secret.example.yaml",
            "kafka-topics.yaml", "gateway.yaml", "cart-mapping.yaml"} <= set(docs)
    for name, file_docs in docs.items():
        assert file_docs, f"{name} is empty"
        for doc in file_docs:
            assert isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc, name
    assert _load(COMPOSE)


def test_the_field_name_sets_are_what_the_tests_assume() -> None:
    """Guards the tests themselves: a renamed field must not make them vacuous."""
    assert {"KAFKA_BOOTSTRAP_SERVERS", "LOG_JSON"} <= BASE_VARS <= GATEWAY_VARS & CART_MAPPING_VARS
    assert "INSTORE_CALLBACK_API_KEY" in GATEWAY_VARS - CART_MAPPING_VARS
    assert {"CTP_PROJECT_KEY", "CTP_CLIENT_SECRET", "INSTORE_CURRENCY"} <= CART_MAPPING_VARS - GATEWAY_VARS
    assert {"INSTORE_CALLBACK_API_KEY", "CTP_CLIENT_SECRET"} <= SECRET_VARS


# -- kustomization ----------------------------------------------------------------------------
def test_kustomization_lists_only_existing_files() -> None:
    kustomization = _kustomization()
    for name in kustomization["resources"]:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which does not exist"
    assert "secret.example.yaml" not in kustomization["resources"]
    assert "kafka-topics.yaml" not in kustomization["resources"]
    assert kustomization["namespace"] == "instore-integration"
    assert set(_deployments()) == set(SERVICES)


def test_namespace() -> None:
    namespaces = _of_kind(_resources(), "Namespace")
    assert set(namespaces) == {"instore-integration"}


def test_strimzi_topics_match_the_topic_registry() -> None:
    from instore_shared.kafka.topics import ALL_TOPICS

    topics = _of_kind(_load(K8S / "kafka-topics.yaml"), "KafkaTopic")
    assert {t["spec"].get("topicName", n) for n, t in topics.items()} == {t.name for t in ALL_TOPICS}
    for topic in topics.values():
        assert topic["spec"]["partitions"] == 6
        assert topic["spec"]["replicas"] == 3


# -- env vars are settings fields -------------------------------------------------------------
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_env_vars_are_settings_fields(service: str) -> None:
    allowed, _ = SERVICES[service]
    names = _container_env_names(_container(_deployments()[service]))
    unknown = names - allowed
    assert not unknown, f"{service} gets variables that are no settings field: {sorted(unknown)}"
    assert "KAFKA_BOOTSTRAP_SERVERS" in names


def test_gateway_gets_no_commercetools_settings() -> None:
    names = _container_env_names(_container(_deployments()["gateway"]))
    assert not {n for n in names if n.startswith("CTP_")}
    assert "INSTORE_CALLBACK_API_KEY" in names


def test_cart_mapping_gets_the_commercetools_credentials() -> None:
    names = _container_env_names(_container(_deployments()["cart-mapping"]))
    assert {"CTP_PROJECT_KEY", "CTP_CLIENT_ID", "CTP_CLIENT_SECRET", "CTP_AUTH_URL", "CTP_API_URL"} <= names
    assert "INSTORE_CALLBACK_API_KEY" not in names


def test_configmaps_hold_only_settings_fields_and_no_secrets() -> None:
    for name, configmap in _of_kind(_resources(), "ConfigMap").items():
        keys = set(configmap.get("data", {}))
        assert not keys - (GATEWAY_VARS | CART_MAPPING_VARS), f"{name}: {sorted(keys - GATEWAY_VARS - CART_MAPPING_VARS)}"
        assert not keys & SECRET_VARS, f"{name} holds secrets {sorted(keys & SECRET_VARS)}"
        for key, value in configmap.get("data", {}).items():
            assert isinstance(value, str), f"{name}.{key} must be a string (quote it)"


def test_secret_refs_point_at_keys_of_the_example_secret() -> None:
    secret = _example_secret()
    keys = set(secret["stringData"])
    for service, deployment in _deployments().items():
        for entry in _container(deployment).get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            assert ref["name"] == secret["metadata"]["name"], service
            assert ref["key"] in keys, f"{service}: secret key {ref['key']} is not in secret.example.yaml"


def test_kafka_settings_for_managed_topics() -> None:
    common = _of_kind(_resources(), "ConfigMap")["instore-integration-common"]["data"]
    assert common["KAFKA_CREATE_TOPICS"] == "false"
    assert common["KAFKA_TOPIC_REPLICATION_FACTOR"] == "3"
    assert common["LOG_JSON"] == "true"


# -- no secret values -------------------------------------------------------------------------
def test_example_secret_holds_only_placeholders() -> None:
    secret = _example_secret()
    assert secret["kind"] == "Secret"
    assert "data" not in secret, "use stringData with CHANGE-ME placeholders"
    assert set(secret["stringData"]) == {"INSTORE_CALLBACK_API_KEY", "CTP_CLIENT_ID", "CTP_CLIENT_SECRET"}
    assert all(v == PLACEHOLDER for v in secret["stringData"].values())


def test_no_secret_values_in_the_manifests() -> None:
    for file_name, docs in _k8s_docs().items():
        for doc in docs:
            if doc.get("kind") == "Secret":
                values = list((doc.get("stringData") or {}).values()) + list((doc.get("data") or {}).values())
                assert all(v == PLACEHOLDER for v in values), f"{file_name}: a Secret with real values"
            if doc.get("kind") == "ConfigMap":
                assert not set(doc.get("data", {})) & SECRET_VARS, file_name
    for service, deployment in _deployments().items():
        for entry in _container(deployment).get("env", []):
            if entry["name"] in SECRET_VARS:
                assert "value" not in entry, f"{service}: {entry['name']} must come from the Secret"


# -- probes, ports, hardening -----------------------------------------------------------------
def _resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return match


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_probes(service: str) -> None:
    _, default_port = SERVICES[service]
    container = _container(_deployments()[service])
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    port_var = f"{service.upper().replace('-', '_')}_HTTP_PORT"
    host_var = f"{service.upper().replace('-', '_')}_HTTP_HOST"
    listening = int(env.get(port_var) or default_port)
    assert listening == {"gateway": 8080, "cart-mapping": 8081}[service]
    assert env.get(host_var) == "0.0.0.0", f"{service} must bind all interfaces in a pod"
    assert [p["containerPort"] for p in container["ports"]] == [listening]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert _resolve_port(container, http["port"]) == listening


def test_gateway_service_targets_the_container_port() -> None:
    container = _container(_deployments()["gateway"])
    service = _of_kind(_resources(), "Service")["gateway"]
    (port,) = service["spec"]["ports"]
    assert _resolve_port(container, port["targetPort"]) == 8080
    assert service["spec"]["selector"].items() <= _deployments()["gateway"]["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_hardening(service: str) -> None:
    deployment = _deployments()[service]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["terminationGracePeriodSeconds"] == 30
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "128Mi"}
    assert resources["limits"] == {"cpu": "1", "memory": "256Mi"}
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_gateway_drains_before_sigterm() -> None:
    container = _container(_deployments()["gateway"])
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    pdbs = _of_kind(_resources(), "PodDisruptionBudget")
    assert pdbs["gateway"]["spec"]["minAvailable"] == 1


# -- docker compose ---------------------------------------------------------------------------
def _compose_environment(service: str) -> dict[str, Any]:
    (compose,) = _load(COMPOSE)
    env = compose["services"][service].get("environment", {})
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return env


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_compose_env_vars_are_settings_fields(service: str) -> None:
    allowed, _ = SERVICES[service]
    env = _compose_environment(service)
    unknown = set(env) - allowed
    assert not unknown, f"compose {service} gets variables that are no settings field: {sorted(unknown)}"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for name in set(env) & SECRET_VARS:
        assert str(env[name]).startswith("${"), f"compose {service}: {name} must be overridable from the shell"


def test_compose_wiring() -> None:
    (compose,) = _load(COMPOSE)
    services = compose["services"]
    assert services["kafka"]["image"] == "apache/kafka:4.1.0"
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not {n for n in _compose_environment("gateway") if n.startswith("CTP_")}
    assert _compose_environment("gateway")["INSTORE_CALLBACK_API_KEY"] == "${INSTORE_CALLBACK_API_KEY:-local-dev-callback-key}"
    cart_env = _compose_environment("cart-mapping")
    assert cart_env["CTP_API_URL"] == cart_env["CTP_AUTH_URL"] == "http://ct-mock:8989"
    assert services["ct-mock"]["environment"]["CTP_MOCK_HOST"] == "0.0.0.0"
    assert "8080:8080" in services["gateway"]["ports"]
    for service, needs in {"gateway": {"kafka", "cart-mapping"}, "cart-mapping": {"kafka", "ct-mock"}}.items():
        depends = services[service]["depends_on"]
        assert set(depends) == needs
        assert all(d["condition"] == "service_healthy" for d in depends.values())
        assert (ROOT / services[service]["build"]["dockerfile"]).is_file()
        assert services[service]["build"]["context"] == "."
    for name in ("kafka", "ct-mock"):
        assert "healthcheck" in services[name]


# -- Dockerfiles ------------------------------------------------------------------------------
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_dockerfile_env_and_ports(service: str) -> None:
    allowed, default_port = SERVICES[service]
    text = (ROOT / "services" / service / "Dockerfile").read_text(encoding="utf-8")
    module = "instore_" + service.replace("-", "_")
    assert f'ENTRYPOINT ["/app/.venv/bin/python", "-m", "{module}"]' in text
    assert f"--package instore-{service}" in text
    assert f"EXPOSE {default_port}" in text
    prefix = service.upper().replace("-", "_")
    assert f"{prefix}_HTTP_HOST=0.0.0.0" in text
    assert f"{prefix}_HTTP_PORT" in allowed
    assert "USER 10001" in text
