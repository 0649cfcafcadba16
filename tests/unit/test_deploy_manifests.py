"""The deployment files (deploy/k8s, docker-compose.yml, the Dockerfile) agree with the settings classes.

Every environment variable handed to a service must be a field of its settings class: the
settings ignore unknown names (``extra="ignore"``), so a misspelled variable would be
silently dropped at run time. These tests catch it instead. The Kubernetes checks run on what
``kustomize build`` renders for the base and for every overlay (tests/support/k8s.py), so a patch
in an overlay is checked too; tests/unit/test_k8s_overlays.py validates the rendered objects and
checks autoscaling, NetworkPolicies and KafkaTopics. The dev fakes (``services/dev-fakes``) run in
docker compose only, never in Kubernetes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, SecretStr

from instore_cart_mapping.settings import CartMappingSettings
from instore_devfakes.settings import DevFakesSettings
from instore_gateway.session_settings import SessionSettings
from instore_gateway.settings import GatewaySettings
from instore_order_finalization.reconciler.settings import ReconcilerSettings
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_payment_extension.settings import PaymentExtensionSettings
from instore_refund.settings import RefundSettings
from instore_shared.settings import BaseServiceSettings, CommercetoolsSettings
from tests.support.k8s import K8S, render

ROOT = Path(__file__).resolve().parents[2]
BASE = K8S / "base"
# what kustomize renders: the base and each overlay (one InStore tenant environment each; test: CI's podman kube play)
RENDERED = ("base", "overlays/dev", "overlays/prod", "overlays/test")
COMPOSE = ROOT / "docker-compose.yml"
PLACEHOLDER = "CHANGE-ME"


def _env_names(model: type, name: str, prefix: str) -> set[str]:
    """The variables that set field ``name``: prefix + NAME, or the aliases (no prefix) if it has any."""
    alias = model.model_fields[name].validation_alias
    if alias is None:
        return {prefix + name.upper()}
    choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
    assert all(isinstance(c, str) for c in choices), f"{model.__name__}.{name}: alias paths are not env vars"
    return {c.upper() for c in choices}


def _names(model: type, prefix: str = "") -> set[str]:
    return {var for name in model.model_fields for var in _env_names(model, name, prefix)}


def _secret_names(model: type, prefix: str = "") -> set[str]:
    return {var for name, f in model.model_fields.items() if f.annotation is SecretStr for var in _env_names(model, name, prefix)}


BASE_VARS = _names(BaseServiceSettings)
CTP_VARS = _names(CommercetoolsSettings, "CTP_")
GATEWAY_VARS = _names(GatewaySettings)
CART_MAPPING_VARS = _names(CartMappingSettings) | CTP_VARS
ORDER_FINALIZATION_VARS = _names(OrderFinalizationSettings) | CTP_VARS
REFUND_VARS = _names(RefundSettings) | CTP_VARS
PAYMENT_EXTENSION_VARS = _names(PaymentExtensionSettings) | CTP_VARS
RECONCILER_VARS = _names(ReconcilerSettings) | CTP_VARS
# Composable Commerce scopes order-finalization and refund need (their API clients must have exactly these).
ORDER_FINALIZATION_SCOPES = ("manage_orders", "view_orders", "view_payments", "manage_key_value_documents")
REFUND_SCOPES = ("manage_orders", "view_orders", "manage_payments", "manage_key_value_documents")
PAYMENT_EXTENSION_SCOPES = ("manage_payments", "manage_key_value_documents")
DEVFAKES_PREFIX = "DEVFAKES_"
DEVFAKES_VARS = _names(DevFakesSettings, DEVFAKES_PREFIX)
# Values that must never be written into a manifest: SecretStr fields, plus the API client id.
SECRET_VARS = (
    _secret_names(GatewaySettings)
    | _secret_names(CommercetoolsSettings, "CTP_")
    | {"CTP_CLIENT_ID"}
    | _secret_names(DevFakesSettings, DEVFAKES_PREFIX)
    | _secret_names(PaymentExtensionSettings)
)
# Secrets only the gateway reads (cart-mapping, order-finalization and refund must never get them).
GATEWAY_SECRET_VARS = (
    _secret_names(GatewaySettings) - CART_MAPPING_VARS - ORDER_FINALIZATION_VARS - REFUND_VARS - PAYMENT_EXTENSION_VARS
)
# The services that call Composable Commerce (and only them get CTP_*).
COMMERCE_SERVICES = ("cart-mapping", "order-finalization", "refund", "payment-extension")

# service name (Deployment / compose service) -> allowed variables, probe port
SERVICES: dict[str, tuple[set[str], int]] = {
    "gateway": (GATEWAY_VARS, GatewaySettings.model_fields["gateway_http_port"].default),
    "cart-mapping": (CART_MAPPING_VARS, CartMappingSettings.model_fields["cart_mapping_http_port"].default),
    "order-finalization": (
        ORDER_FINALIZATION_VARS,
        OrderFinalizationSettings.model_fields["order_finalization_http_port"].default,
    ),
    "refund": (REFUND_VARS, RefundSettings.model_fields["refund_http_port"].default),
    "payment-extension": (PAYMENT_EXTENSION_VARS, PaymentExtensionSettings.model_fields["payment_extension_http_port"].default),
}

# docker compose services built from this repository -> allowed variables (the Deployments, plus the dev fakes)
COMPOSE_SERVICES: dict[str, set[str]] = {name: allowed for name, (allowed, _) in SERVICES.items()} | {
    "dev-fakes": DEVFAKES_VARS,
}


class Image:
    """What a service's Dockerfile must say."""

    def __init__(self, package: str, module: str, env_prefix: str, allowed: set[str], port: int, health: str) -> None:
        self.package, self.module, self.env_prefix = package, module, env_prefix
        self.allowed, self.port, self.health = allowed, port, health


# directory under services/ -> its image
IMAGES: dict[str, Image] = {
    "gateway": Image("instore-gateway", "instore_gateway", "GATEWAY_", GATEWAY_VARS, SERVICES["gateway"][1], "/readyz"),
    "cart-mapping": Image(
        "instore-cart-mapping", "instore_cart_mapping", "CART_MAPPING_", CART_MAPPING_VARS, SERVICES["cart-mapping"][1], "/readyz"
    ),
    "order-finalization": Image(
        "instore-order-finalization",
        "instore_order_finalization",
        "ORDER_FINALIZATION_",
        ORDER_FINALIZATION_VARS,
        SERVICES["order-finalization"][1],
        "/readyz",
    ),
    "refund": Image("instore-refund", "instore_refund", "REFUND_", REFUND_VARS, SERVICES["refund"][1], "/readyz"),
    "payment-extension": Image(
        "instore-payment-extension",
        "instore_payment_extension",
        "PAYMENT_EXTENSION_",
        PAYMENT_EXTENSION_VARS,
        SERVICES["payment-extension"][1],
        "/readyz",
    ),
    "dev-fakes": Image(
        "instore-devfakes",
        "instore_devfakes",
        DEVFAKES_PREFIX,
        DEVFAKES_VARS,
        DevFakesSettings.model_fields["http_port"].default,
        "/healthz",
    ),
}


def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def _k8s_docs() -> dict[str, list[dict[str, Any]]]:
    """Every YAML file under deploy/k8s (relative path -> documents), the CRD schemas left out."""
    return {str(p.relative_to(K8S)): _load(p) for p in sorted(K8S.rglob("*.y*ml")) if p.relative_to(K8S).parts[0] != "schemas"}


def _kustomization() -> dict[str, Any]:
    (doc,) = _load(BASE / "kustomization.yaml")
    return doc


def _resources(rendered: str = "base") -> list[dict[str, Any]]:
    """The objects ``kustomize build deploy/k8s/<rendered>`` applies."""
    return render(rendered)


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _example_secret() -> dict[str, Any]:
    (doc,) = _load(K8S / "secret.example.yaml")
    return doc


def _deployments(rendered: str = "base") -> dict[str, dict[str, Any]]:
    return _of_kind(_resources(rendered), "Deployment")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _container_env_names(container: dict[str, Any], rendered: str = "base") -> set[str]:
    """Every variable the container gets: ``env`` entries and the keys of envFrom sources."""
    configmaps = _of_kind(_resources(rendered), "ConfigMap")
    secret = _example_secret()
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        assert "prefix" not in source, "envFrom prefixes would rename the settings"
        if "configMapRef" in source:
            ref = source["configMapRef"]["name"]
            assert ref in configmaps, f"envFrom names ConfigMap {ref!r}, not in {rendered}"
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
    assert {
        "base/kustomization.yaml",
        "base/namespace.yaml",
        "base/configmap.yaml",
        "base/gateway.yaml",
        "base/cart-mapping.yaml",
        "base/order-finalization.yaml",
        "base/refund.yaml",
        "base/payment-extension.yaml",
        "base/scaled-objects.yaml",
        "base/network-policy.yaml",
        "secret.example.yaml",
        "kafka-topics/kafka-topics.yaml",
        *(f"overlays/{env}/kustomization.yaml" for env in ("dev", "prod", "test")),
    } <= set(docs)
    for name, file_docs in docs.items():
        assert file_docs, f"{name} is empty"
        for doc in file_docs:
            assert isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc, name
    assert _load(COMPOSE)


def test_the_field_name_sets_are_what_the_tests_assume() -> None:
    """Guards the tests themselves: a renamed field must not make them vacuous."""
    assert (
        {"KAFKA_BOOTSTRAP_SERVERS", "LOG_JSON"}
        <= BASE_VARS
        <= (GATEWAY_VARS & CART_MAPPING_VARS & ORDER_FINALIZATION_VARS & REFUND_VARS & PAYMENT_EXTENSION_VARS)
    )
    assert {
        "ORDER_FINALIZATION_CONSUMER_GROUP",
        "ORDER_FINALIZATION_HTTP_HOST",
        "ORDER_FINALIZATION_HTTP_PORT",
        "INSTORE_FIELD_ORDER_NUMBER",
        "CTP_SCOPES",
        "CTP_CLIENT_SECRET",
    } <= ORDER_FINALIZATION_VARS - GATEWAY_VARS
    # Each service's own settings are not the other's: a ConfigMap cannot be shared blindly.
    assert "CART_MAPPING_CONSUMER_GROUP" in CART_MAPPING_VARS - ORDER_FINALIZATION_VARS
    assert "ORDER_FINALIZATION_CONSUMER_GROUP" in ORDER_FINALIZATION_VARS - CART_MAPPING_VARS
    assert OrderFinalizationSettings.model_fields["order_finalization_http_port"].default == 8082
    assert {
        "REFUND_CONSUMER_GROUP",
        "REFUND_HTTP_HOST",
        "REFUND_HTTP_PORT",
        "INSTORE_FIELD_PURCHASE_ORDER_ID",
        "INSTORE_FIELD_RETURN_COMMENT",
        "CTP_SCOPES",
        "CTP_CLIENT_SECRET",
    } <= REFUND_VARS - GATEWAY_VARS
    assert "REFUND_CONSUMER_GROUP" in REFUND_VARS - ORDER_FINALIZATION_VARS - CART_MAPPING_VARS
    assert RefundSettings.model_fields["refund_http_port"].default == 8083
    assert {
        "PAYMENT_EXTENSION_CONSUMER_GROUP",
        "PAYMENT_EXTENSION_HTTP_HOST",
        "PAYMENT_EXTENSION_HTTP_PORT",
        "PAYMENT_EXTENSION_PROVIDER",
        "PAYMENT_EXTENSION_SIMULATOR_URL",
        "STRIPE_API_KEY",
        "STRIPE_API_BASE_URL",
        "CTP_SCOPES",
        "CTP_CLIENT_SECRET",
    } <= PAYMENT_EXTENSION_VARS - GATEWAY_VARS
    # one allow-list and one signing secret, read by both the gateway and payment-extension
    assert {"PAYMENT_EXTENSION_ALLOWED_URLS", "INSTORE_WEBHOOK_SECRET"} <= PAYMENT_EXTENSION_VARS & GATEWAY_VARS
    # the gateway's payment-extension settings are not payment-extension's (they stay out of its ConfigMap)
    assert {
        "PAYMENT_EXTENSION_PATH_PREFIX",
        "PAYMENT_EXTENSION_MAX_BODY_BYTES",
        "PAYMENT_EXTENSION_PUBLISH_TIMEOUT_SECONDS",
    } <= GATEWAY_VARS - PAYMENT_EXTENSION_VARS
    assert "PAYMENT_EXTENSION_CONSUMER_GROUP" in PAYMENT_EXTENSION_VARS - REFUND_VARS - ORDER_FINALIZATION_VARS
    assert PaymentExtensionSettings.model_fields["payment_extension_http_port"].default == 8084
    assert {"STRIPE_API_KEY", "INSTORE_WEBHOOK_SECRET"} <= SECRET_VARS
    assert "STRIPE_API_KEY" not in GATEWAY_SECRET_VARS and "INSTORE_WEBHOOK_SECRET" not in GATEWAY_SECRET_VARS
    assert "INSTORE_CALLBACK_API_KEY" in GATEWAY_VARS - CART_MAPPING_VARS
    assert {"CTP_PROJECT_KEY", "CTP_CLIENT_SECRET", "INSTORE_CURRENCY"} <= CART_MAPPING_VARS - GATEWAY_VARS
    assert {"INSTORE_CALLBACK_API_KEY", "CTP_CLIENT_SECRET"} <= SECRET_VARS
    session_vars = {
        "IMS_JWKS_URL",
        "IMS_ISSUER",
        "IMS_AUDIENCE",
        "INSTORE_AUTH_BASE_URL",
        "INSTORE_AUTH_TOKEN_PATH",
        "INSTORE_TENANT_ID",
        "INSTORE_CONNECTION_KEY",
    }
    assert session_vars == _names(SessionSettings) & session_vars
    vault_vars = {"TOKEN_VAULT_BACKEND", "TOKEN_VAULT_REDIS_URL", "TOKEN_VAULT_ENCRYPTION_KEYS"}
    assert session_vars | vault_vars <= GATEWAY_VARS - CART_MAPPING_VARS
    assert {
        "INSTORE_CALLBACK_API_KEY",
        "INSTORE_CONNECTION_KEY",
        "TOKEN_VAULT_REDIS_URL",
        "TOKEN_VAULT_ENCRYPTION_KEYS",
    } <= GATEWAY_SECRET_VARS
    assert DevFakesSettings.model_config["env_prefix"] == DEVFAKES_PREFIX
    assert {"DEVFAKES_HTTP_HOST", "DEVFAKES_HTTP_PORT", "DEVFAKES_ISSUER", "LOG_LEVEL", "LOG_JSON"} <= DEVFAKES_VARS
    assert "DEVFAKES_LOG_LEVEL" not in DEVFAKES_VARS  # an aliased field is read without the prefix
    assert "DEVFAKES_CONNECTION_KEY" in SECRET_VARS


# -- kustomization ----------------------------------------------------------------------------
def test_kustomization_lists_only_existing_files() -> None:
    kustomization = _kustomization()
    for name in kustomization["resources"]:
        assert (BASE / name).is_file(), f"base/kustomization.yaml lists {name}, which does not exist"
    # the Secret is created by the operator, the topics live in Kafka's namespace, monitoring needs the operator's CRDs
    assert not {"secret.example.yaml", "kafka-topics.yaml"} & {Path(n).name for n in kustomization["resources"]}
    assert not any("monitoring" in n or "kafka-topics" in n for n in kustomization["resources"])
    assert kustomization["namespace"] == "instore-integration"
    for rendered in RENDERED:
        assert set(_deployments(rendered)) == set(SERVICES), rendered


def test_namespace() -> None:
    namespaces = _of_kind(_resources(), "Namespace")
    assert set(namespaces) == {"instore-integration"}


def test_strimzi_topics_match_the_topic_registry() -> None:
    """The unprefixed KafkaTopics (the overlays add their prefix: test_k8s_overlays)."""
    from instore_shared.kafka.topics import ALL_TOPICS

    topics = _of_kind(_load(K8S / "kafka-topics" / "kafka-topics.yaml"), "KafkaTopic")
    assert {t["spec"].get("topicName", n) for n, t in topics.items()} == {t.name for t in ALL_TOPICS}
    for topic in topics.values():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1", "Strimzi 1.x serves v1 only"
        assert topic["spec"]["partitions"] == 6
        assert topic["spec"]["replicas"] == 3
        assert "retention.ms" in topic["spec"]["config"]


# -- env vars are settings fields -------------------------------------------------------------
@pytest.mark.parametrize("rendered", RENDERED)
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_env_vars_are_settings_fields(service: str, rendered: str) -> None:
    allowed, _ = SERVICES[service]
    names = _container_env_names(_container(_deployments(rendered)[service]), rendered)
    unknown = names - allowed
    assert not unknown, f"{rendered}: {service} gets variables that are no settings field: {sorted(unknown)}"
    assert {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_PREFIX"} <= names


def test_gateway_gets_no_commercetools_settings() -> None:
    names = _container_env_names(_container(_deployments()["gateway"]))
    assert not {n for n in names if n.startswith("CTP_")}
    assert "INSTORE_CALLBACK_API_KEY" in names


@pytest.mark.parametrize("service", COMMERCE_SERVICES)
def test_commerce_services_get_the_commercetools_credentials(service: str) -> None:
    container = _container(_deployments()[service])
    names = _container_env_names(container)
    assert {"CTP_PROJECT_KEY", "CTP_CLIENT_ID", "CTP_CLIENT_SECRET", "CTP_AUTH_URL", "CTP_API_URL"} <= names
    assert not names & GATEWAY_SECRET_VARS, f"{service} gets gateway secrets {sorted(names & GATEWAY_SECRET_VARS)}"
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for name in ("CTP_CLIENT_ID", "CTP_CLIENT_SECRET"):
        assert secret_refs.get(name) == name, f"{service}: {name} must come from the Secret key {name}"
    # payment-extension also signs what it posts to InStore and calls the provider
    extra = {"INSTORE_WEBHOOK_SECRET", "STRIPE_API_KEY"} if service == "payment-extension" else set()
    assert set(secret_refs) == {"CTP_CLIENT_ID", "CTP_CLIENT_SECRET"} | extra, f"{service} reads only its secrets"


def _scopes_are(scopes: str, project_key: str, wanted: tuple[str, ...]) -> None:
    assert sorted(scopes.split()) == sorted(f"{s}:{project_key}" for s in wanted), scopes


# service -> (its own ConfigMap, its settings, the Composable Commerce scopes it needs)
OWN_CONFIG: dict[str, tuple[str, set[str], tuple[str, ...]]] = {
    "order-finalization": ("instore-order-finalization-config", ORDER_FINALIZATION_VARS, ORDER_FINALIZATION_SCOPES),
    "refund": ("instore-refund-config", REFUND_VARS, REFUND_SCOPES),
    "payment-extension": ("instore-payment-extension-config", PAYMENT_EXTENSION_VARS, PAYMENT_EXTENSION_SCOPES),
}


@pytest.mark.parametrize("service", sorted(OWN_CONFIG))
def test_service_has_its_own_config_and_scopes(service: str) -> None:
    name, allowed, scopes = OWN_CONFIG[service]
    refs = [s["configMapRef"]["name"] for s in _container(_deployments()[service]).get("envFrom", []) if "configMapRef" in s]
    assert refs == ["instore-integration-common", name]
    config = _of_kind(_resources(), "ConfigMap")[name]["data"]
    # PAYMENT_EXTENSION_ALLOWED_URLS: one allow-list both the gateway and payment-extension check
    assert set(config) <= allowed - (GATEWAY_VARS - {"PAYMENT_EXTENSION_ALLOWED_URLS"}), f"{name}: its own settings"
    assert {"CTP_PROJECT_KEY", "CTP_AUTH_URL", "CTP_API_URL", "CTP_SCOPES"} <= set(config)
    _scopes_are(config["CTP_SCOPES"], config["CTP_PROJECT_KEY"], scopes)


def test_gateway_gets_the_session_and_token_vault_settings() -> None:
    container = _container(_deployments()["gateway"])
    names = _container_env_names(container)
    assert {
        "TOKEN_VAULT_BACKEND",
        "TOKEN_VAULT_REDIS_URL",
        "TOKEN_VAULT_ENCRYPTION_KEYS",
        "IMS_JWKS_URL",
        "IMS_ISSUER",
        "IMS_AUDIENCE",
        "INSTORE_AUTH_BASE_URL",
        "INSTORE_AUTH_TOKEN_PATH",
        "INSTORE_TENANT_ID",
        "INSTORE_CONNECTION_KEY",
    } <= names
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for name in (
        "INSTORE_CALLBACK_API_KEY",
        "INSTORE_CONNECTION_KEY",
        "INSTORE_WEBHOOK_SECRET",
        "TOKEN_VAULT_REDIS_URL",
        "TOKEN_VAULT_ENCRYPTION_KEYS",
    ):
        assert secret_refs.get(name) == name, f"gateway: {name} must come from the Secret key {name}"
    config = _of_kind(_resources(), "ConfigMap")["instore-gateway-config"]["data"]
    # Two replicas need the shared vault: the in-memory one would lose tokens between pods.
    assert config["TOKEN_VAULT_BACKEND"] == "redis"
    assert _of_kind(_resources(), "HorizontalPodAutoscaler")["gateway"]["spec"]["minReplicas"] > 1
    assert set(config) <= GATEWAY_VARS - CART_MAPPING_VARS, "instore-gateway-config is for gateway-only settings"
    # The sample values are obviously placeholders, never the dev fakes' loopback defaults.
    for key in ("IMS_JWKS_URL", "IMS_ISSUER", "INSTORE_AUTH_BASE_URL"):
        assert config[key].startswith("https://"), key
        assert "example" in config[key], f"{key} should be an obvious placeholder"
        assert "127.0.0.1" not in config[key] and "dev-fakes" not in config[key], key


ALLOW_LIST = "PAYMENT_EXTENSION_ALLOWED_URLS"


def test_k8s_gateway_and_payment_extension_share_one_allow_list() -> None:
    """The gateway refuses a request whose statusUrl/callbackUrl is not on the list, payment-extension never calls one:
    both read PAYMENT_EXTENSION_ALLOWED_URLS, with the same value, and it parses."""
    configmaps = _of_kind(_resources(), "ConfigMap")
    gateway = configmaps["instore-gateway-config"]["data"][ALLOW_LIST]
    assert configmaps["instore-payment-extension-config"]["data"][ALLOW_LIST] == gateway
    for service in ("gateway", "payment-extension"):
        assert ALLOW_LIST in _container_env_names(_container(_deployments()[service])), service
    GatewaySettings(instore_callback_api_key="k" * 20, instore_webhook_secret="s" * 32, payment_extension_allowed_urls=gateway)
    assert all(url.startswith("https://") for url in gateway.split(",")), "production calls InStore over https"


def test_k8s_payment_extension_provider() -> None:
    config = _of_kind(_resources(), "ConfigMap")["instore-payment-extension-config"]["data"]
    assert config["PAYMENT_EXTENSION_PROVIDER"] == "stripe", "the simulator is for development only"
    assert "PAYMENT_EXTENSION_SIMULATOR_URL" not in config
    assert config["STRIPE_API_BASE_URL"] == "https://api.stripe.com"


@pytest.mark.parametrize("rendered", RENDERED)
def test_k8s_consumer_groups_are_the_defaults(rendered: str) -> None:
    """The KEDA ScaledObjects watch each service's default group with KAFKA_TOPIC_PREFIX in front:
    no ConfigMap may set another one."""
    for name, configmap in _of_kind(_resources(rendered), "ConfigMap").items():
        groups = {k for k in configmap.get("data", {}) if k.endswith("_CONSUMER_GROUP")}
        assert not groups, f"{rendered}: {name} sets {sorted(groups)}"


def test_compose_payment_extension_uses_the_dev_fakes() -> None:
    """In compose the dev fakes play the provider (/provider) and InStore's statusUrl/callbackUrl (/instore-sim):
    both the gateway and payment-extension allow their URL, and both sign with the same secret."""
    from instore_shared.url_allowlist import UrlAllowList

    base = f"http://dev-fakes:{IMAGES['dev-fakes'].port}"
    env = _compose_environment("payment-extension")
    gateway_env = _compose_environment("gateway")
    assert env["PAYMENT_EXTENSION_PROVIDER"] == "simulator"
    assert env["PAYMENT_EXTENSION_SIMULATOR_URL"] == f"{base}/provider"
    assert env[ALLOW_LIST] == gateway_env[ALLOW_LIST]
    assert UrlAllowList(env[ALLOW_LIST]).allows(f"{base}/instore-sim/callback/a-request")
    assert env["INSTORE_WEBHOOK_SECRET"] == gateway_env["INSTORE_WEBHOOK_SECRET"]
    PaymentExtensionSettings(**{k.lower(): str(v) for k, v in env.items() if not str(v).startswith("${")})


def test_only_the_gateway_reads_the_gateway_config() -> None:
    for service, deployment in _deployments().items():
        refs = {s["configMapRef"]["name"] for s in _container(deployment).get("envFrom", []) if "configMapRef" in s}
        assert ("instore-gateway-config" in refs) == (service == "gateway"), service


def test_dev_fakes_are_not_deployed_to_kubernetes() -> None:
    for file_name, docs in _k8s_docs().items():
        for doc in docs:
            text = yaml.safe_dump(doc)
            assert "devfakes" not in text and "dev-fakes" not in text, f"{file_name} mentions the dev fakes"


def test_configmaps_hold_only_settings_fields_and_no_secrets() -> None:
    every = GATEWAY_VARS | CART_MAPPING_VARS | ORDER_FINALIZATION_VARS | REFUND_VARS | PAYMENT_EXTENSION_VARS | RECONCILER_VARS
    for name, configmap in _of_kind(_resources(), "ConfigMap").items():
        keys = set(configmap.get("data", {}))
        assert not keys - every, f"{name}: {sorted(keys - every)}"
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
    assert set(secret["stringData"]) == {
        "INSTORE_CALLBACK_API_KEY",
        "INSTORE_CONNECTION_KEY",
        "INSTORE_WEBHOOK_SECRET",
        "TOKEN_VAULT_REDIS_URL",
        "TOKEN_VAULT_ENCRYPTION_KEYS",
        "CTP_CLIENT_ID",
        "CTP_CLIENT_SECRET",
        "STRIPE_API_KEY",
    }
    assert set(secret["stringData"]) <= SECRET_VARS
    assert all(v == PLACEHOLDER for v in secret["stringData"].values())


def test_no_secret_values_in_the_manifests() -> None:
    for file_name, docs in _k8s_docs().items():
        for doc in docs:
            if doc.get("kind") == "Secret":
                assert "data" not in doc, f"{file_name}: stringData only, readable placeholders"
                values = list((doc.get("stringData") or {}).values())
                if file_name == "overlays/test/secret.yaml":  # CI's podman kube play: obviously fake values
                    assert all(v.startswith(("fake-", "redis://fake-", "sk_test_fake", "ZmFrZS")) for v in values), file_name
                else:
                    assert all(v == PLACEHOLDER for v in values), f"{file_name}: a Secret with real values"
            if doc.get("kind") == "ConfigMap":
                assert not set(doc.get("data", {})) & SECRET_VARS, file_name
    for rendered in RENDERED:
        for service, deployment in _deployments(rendered).items():
            for entry in _container(deployment).get("env", []):
                if entry["name"] in SECRET_VARS:
                    assert "value" not in entry, f"{rendered}: {service}: {entry['name']} must come from the Secret"


# -- probes, ports, hardening -----------------------------------------------------------------
def _resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return match


@pytest.mark.parametrize("rendered", RENDERED)
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_probes(service: str, rendered: str) -> None:
    _, default_port = SERVICES[service]
    container = _container(_deployments(rendered)[service])
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    port_var = f"{service.upper().replace('-', '_')}_HTTP_PORT"
    host_var = f"{service.upper().replace('-', '_')}_HTTP_HOST"
    listening = int(env.get(port_var) or default_port)
    assert (
        listening
        == {"gateway": 8080, "cart-mapping": 8081, "order-finalization": 8082, "refund": 8083, "payment-extension": 8084}[service]
    )
    assert env.get(host_var) == "0.0.0.0", f"{service} must bind all interfaces in a pod"
    assert [p["containerPort"] for p in container["ports"]] == [listening]
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert _resolve_port(container, http["port"]) == listening
    # The port opens only once Kafka answered (the broker starts before uvicorn binds): the startup
    # probe waits minutes for a late broker; liveness, which runs only after it, needs no initial delay.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert "initialDelaySeconds" not in container["livenessProbe"]


def test_gateway_service_targets_the_container_port() -> None:
    container = _container(_deployments()["gateway"])
    service = _of_kind(_resources(), "Service")["gateway"]
    (port,) = service["spec"]["ports"]
    assert _resolve_port(container, port["targetPort"]) == 8080
    assert service["spec"]["selector"].items() <= _deployments()["gateway"]["spec"]["template"]["metadata"]["labels"].items()


def _quantity(value: str) -> float:
    """A Kubernetes CPU or memory quantity as a number (cores, bytes): "250m", "1", "128Mi"."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


@pytest.mark.parametrize("rendered", RENDERED)
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_hardening(service: str, rendered: str) -> None:
    deployment = _deployments(rendered)[service]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert "replicas" not in deployment["spec"], "the autoscaler owns the count (test: one pod each)"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # the only writable path: /tmp, a small emptyDir
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount == {"name": volume["name"], "mountPath": "/tmp"} and volume["emptyDir"]["sizeLimit"] == "16Mi"
    assert pod["terminationGracePeriodSeconds"] == 30
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert 0 < _quantity(resources["requests"][kind]) <= _quantity(resources["limits"][kind]), kind
    # peak RSS measured ~100 MB under load (docs/performance.md): room for twice that
    assert _quantity(resources["limits"]["memory"]) >= 256 * 2**20
    assert deployment["spec"]["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_k8s_pod_disruption_budgets(service: str) -> None:
    pdb = _of_kind(_resources(), "PodDisruptionBudget")[service]
    # the gateway keeps one pod serving (its autoscaler's minimum is 2); a Kafka service may lose one
    # pod at a time even at one replica (its minimum in dev), so drains never stall
    assert pdb["spec"] == {"selector": pdb["spec"]["selector"]} | (
        {"minAvailable": 1} if service == "gateway" else {"maxUnavailable": 1}
    )
    labels = _deployments()[service]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_stripe_key_is_optional_in_the_secret() -> None:
    """Only PAYMENT_EXTENSION_PROVIDER=stripe needs it (the service then refuses to start without it); a Secret
    without the key must not leave the pod in CreateContainerConfigError."""
    (entry,) = [e for e in _container(_deployments()["payment-extension"])["env"] if e["name"] == "STRIPE_API_KEY"]
    assert entry["valueFrom"]["secretKeyRef"]["optional"] is True


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


@pytest.mark.parametrize("service", sorted(COMPOSE_SERVICES))
def test_compose_env_vars_are_settings_fields(service: str) -> None:
    allowed = COMPOSE_SERVICES[service]
    env = _compose_environment(service)
    assert env, f"compose {service} has no environment"
    unknown = set(env) - allowed
    assert not unknown, f"compose {service} gets variables that are no settings field: {sorted(unknown)}"
    if service in SERVICES:
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    for name in set(env) & SECRET_VARS:
        assert str(env[name]).startswith("${"), f"compose {service}: {name} must be overridable from the shell"


def test_compose_wiring() -> None:
    (compose,) = _load(COMPOSE)
    services = compose["services"]
    assert services["kafka"]["image"].startswith("${KAFKA_IMAGE:-apache/kafka:")  # the version: test_compose.py
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert not {n for n in _compose_environment("gateway") if n.startswith("CTP_")}
    assert _compose_environment("gateway")["INSTORE_CALLBACK_API_KEY"] == "${INSTORE_CALLBACK_API_KEY:-local-dev-callback-key}"
    assert _compose_environment("gateway")["INSTORE_WEBHOOK_SECRET"] == "${INSTORE_WEBHOOK_SECRET:-local-dev-webhook-secret}"
    mock_project = services["ct-mock"]["environment"]["CTP_PROJECT_KEY"]
    for service in COMMERCE_SERVICES:
        env = _compose_environment(service)
        assert env["CTP_API_URL"] == env["CTP_AUTH_URL"] == "http://ct-mock:8989", service
        assert env["CTP_PROJECT_KEY"] == mock_project, service
        assert not set(env) & GATEWAY_SECRET_VARS, f"compose {service} gets gateway secrets"
    for service, (_, _, scopes) in OWN_CONFIG.items():
        _scopes_are(_compose_environment(service)["CTP_SCOPES"], mock_project, scopes)
    assert services["ct-mock"]["environment"]["CTP_MOCK_HOST"] == "0.0.0.0"
    # loopback only, as every published port: the development secrets are well known
    assert services["gateway"]["ports"] == ["127.0.0.1:${GATEWAY_HOST_PORT:-8080}:8080"]
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    for service, needs in {
        "gateway": {"kafka", "cart-mapping", "redis", "dev-fakes"},
        "cart-mapping": {"kafka", "ct-mock"},
        "order-finalization": {"kafka", "ct-mock"},
        "refund": {"kafka", "ct-mock"},
        "payment-extension": {"kafka", "ct-mock", "dev-fakes"},
    }.items():
        depends = services[service]["depends_on"]
        assert set(depends) == needs
        assert all(d["condition"] == "service_healthy" for d in depends.values())
    for service in COMPOSE_SERVICES:
        assert services[service]["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
        assert services[service]["build"]["args"]["SERVICE"] == service
        assert services[service]["build"]["context"] == "."
    for name in ("kafka", "ct-mock", "redis"):
        assert "healthcheck" in services[name]


def test_compose_redis_and_token_vault() -> None:
    (compose,) = _load(COMPOSE)
    redis = compose["services"]["redis"]
    assert redis["image"] == "${REDIS_IMAGE:-redis:7-alpine}"
    command = (
        redis["command"] if isinstance(redis["command"], str) else " ".join(f'"{a}"' if a == "" else a for a in redis["command"])
    )
    assert '--save ""' in command and "--appendonly no" in command, "the dev Redis keeps no data"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis
    env = _compose_environment("gateway")
    assert env["TOKEN_VAULT_BACKEND"] == "redis"
    assert env["TOKEN_VAULT_REDIS_URL"] == "${TOKEN_VAULT_REDIS_URL:-redis://redis:6379/0}"
    # No key committed: compose refuses to start without one from the shell.
    assert env["TOKEN_VAULT_ENCRYPTION_KEYS"].startswith("${TOKEN_VAULT_ENCRYPTION_KEYS:?")


def test_compose_gateway_trusts_the_dev_fakes() -> None:
    (compose,) = _load(COMPOSE)
    fakes = compose["services"]["dev-fakes"]
    fakes_env = _compose_environment("dev-fakes")
    gateway_env = _compose_environment("gateway")
    base = f"http://dev-fakes:{IMAGES['dev-fakes'].port}"
    assert fakes_env["DEVFAKES_ISSUER"] == gateway_env["IMS_ISSUER"] == f"{base}/ims"
    assert gateway_env["IMS_JWKS_URL"] == f"{base}/ims/.well-known/jwks.json"
    assert gateway_env["INSTORE_AUTH_BASE_URL"] == f"{base}/instore-auth"
    assert any(str(p).endswith(":-8090}:8090") for p in fakes["ports"]), "publish 8090 to mint tokens with curl"
    # What compose leaves to the defaults must agree on both sides (audience, tenant, connection key).
    gateway_defaults, fakes_defaults = SessionSettings.model_fields, DevFakesSettings.model_fields
    for gateway_field, fakes_field in (
        ("ims_audience", "audience"),
        ("instore_tenant_id", "tenant_id"),
        ("instore_connection_key", "connection_key"),
    ):
        gateway_var, fakes_var = gateway_field.upper(), DEVFAKES_PREFIX + fakes_field.upper()
        if gateway_var in gateway_env or fakes_var in fakes_env:
            assert gateway_env.get(gateway_var) == fakes_env.get(fakes_var), f"{gateway_var} != {fakes_var}"
            continue
        gateway_default, fakes_default = gateway_defaults[gateway_field].default, fakes_defaults[fakes_field].default
        if isinstance(gateway_default, SecretStr):
            gateway_default, fakes_default = gateway_default.get_secret_value(), fakes_default.get_secret_value()
        assert gateway_default == fakes_default, f"defaults of {gateway_var} and {fakes_var} differ"


# -- the Dockerfile ---------------------------------------------------------------------------
DOCKERFILE = ROOT / "Dockerfile"


def _stages() -> dict[str, str]:
    """The Dockerfile's stages by name (``FROM … AS name``), each the text up to the next ``FROM``."""
    stages: dict[str, str] = {}
    for chunk in re.split(r"^(?=FROM )", DOCKERFILE.read_text(encoding="utf-8"), flags=re.M)[1:]:
        name = re.match(r"FROM \S+(?: AS (\S+))?", chunk)
        assert name, chunk
        stages[name[1] or ""] = chunk
    return stages


def test_every_service_has_an_image_entry() -> None:
    services = {p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").is_file()}
    assert set(IMAGES) == services
    assert {name.removeprefix("service-") for name in _stages() if name.startswith("service-")} == services
    assert _stages()[""] == "FROM service-${SERVICE}\n", "the last stage picks the SERVICE build argument's"
    assert not list((ROOT / "services").glob("*/Dockerfile")), "one Dockerfile, at the repository root"
    assert set(COMPOSE_SERVICES) <= set(IMAGES)


# Variables a Dockerfile may set that are no settings field (besides uv's UV_*).
TOOLING_ENV = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


def _dockerfile_env_names(text: str) -> set[str]:
    """The names the ``ENV NAME=value ...`` instructions set (continuation lines included)."""
    names: set[str] = set()
    in_env = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if stripped.startswith("ENV "):
            in_env, stripped = True, stripped[4:]
        if in_env:
            body = stripped.rstrip("\\").strip()
            assert "=" in body, f"use ENV NAME=value: {line!r}"
            names |= {part.split("=", 1)[0] for part in body.split() if "=" in part}
            in_env = stripped.endswith("\\")
    return names


def test_dockerfile_env_parser() -> None:
    assert _dockerfile_env_names("ENV A=1 \\\n    B=2\nRUN x=3\nENV C=4\n") == {"A", "B", "C"}


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_dockerfile_env_and_ports(service: str) -> None:
    image = IMAGES[service]
    stages = _stages()
    text = stages[f"service-{service}"]
    assert text.startswith("FROM runtime AS ")
    assert f'ENTRYPOINT ["/app/.venv/bin/python", "-m", "{image.module}"]' in text
    assert (ROOT / "services" / service / "src" / image.module / "__main__.py").is_file()
    # the build stage installs the package its pyproject.toml names, from services/${SERVICE}
    assert f'name = "{image.package}"' in (ROOT / "services" / service / "pyproject.toml").read_text(encoding="utf-8")
    assert stages["build"].count('--package "$package"') == 2
    assert stages["build"].count('"services/${SERVICE}/pyproject.toml"') == 2
    assert "COPY services/${SERVICE}/ services/${SERVICE}/" in stages["build"]
    assert f"EXPOSE {image.port}" in text
    assert f"{image.env_prefix}HTTP_HOST=0.0.0.0" in text
    assert f"{image.env_prefix}HTTP_PORT={image.port}" in text
    assert {f"{image.env_prefix}HTTP_HOST", f"{image.env_prefix}HTTP_PORT"} <= image.allowed
    # Every variable an ENV instruction sets is a settings field, or belongs to the tooling
    # (uv in the build stage, Python and PATH at run time): a misspelled prefix is caught too.
    env_names = _dockerfile_env_names(text)
    assert {f"{image.env_prefix}HTTP_HOST", f"{image.env_prefix}HTTP_PORT"} <= env_names
    for name in env_names - image.allowed:
        assert name in TOOLING_ENV or name.startswith("UV_"), f"{service}/Dockerfile sets {name}, no settings field"
    assert "HEALTHCHECK" in text and f"'http://127.0.0.1:%s{image.health}'" in text
    assert "USER 10001:10001" in stages["runtime"]
    # the runtime gets the venv only: no uv, no build tools, no caches
    # (owned by root, so the user it runs as cannot rewrite its code)
    assert "COPY --from=build /app/.venv /app/.venv" in stages["runtime"] and "--chown" not in stages["runtime"]
    assert "COPY --from=uv" not in stages["runtime"] + text and "apt-get" not in stages["runtime"]


def test_the_manifests_scopes_are_what_the_services_ask_for() -> None:
    from instore_order_finalization.app import SCOPES as FINALIZATION_ASKS
    from instore_payment_extension.app import SCOPES as PAYMENT_EXTENSION_ASKS
    from instore_refund.app import SCOPES as REFUND_ASKS

    assert set(ORDER_FINALIZATION_SCOPES) == set(FINALIZATION_ASKS) and set(REFUND_SCOPES) == set(REFUND_ASKS)
    assert set(PAYMENT_EXTENSION_SCOPES) == set(PAYMENT_EXTENSION_ASKS)


# -- the reconciler CronJob -------------------------------------------------------------------
@pytest.mark.parametrize("rendered", ("base", "overlays/dev", "overlays/prod", "overlays/test"))
def test_the_reconciler_cronjob_runs_once_per_schedule_read_only_and_hardened(rendered: str) -> None:
    from instore_order_finalization.reconciler.__main__ import SCOPES as RECONCILER_ASKS

    docs = _resources(rendered)
    (cronjob,) = _of_kind(docs, "CronJob").values()
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # the order-finalization image (its package holds the reconciler), one run per Job
    assert container["image"] == _container(_deployments(rendered)["order-finalization"])["image"]
    assert container["command"] == ["instore-reconciler", "--once"]
    # it shares order-finalization's ConfigMap on purpose (one place for the currency, the Custom Field names,
    # ORDER_CREATION and the project): what it gets is order-finalization's or its own settings
    names = _container_env_names(container, rendered)
    unknown = names - RECONCILER_VARS - ORDER_FINALIZATION_VARS
    assert not unknown, f"{rendered}: no settings of the reconciler or order-finalization: {sorted(unknown)}"
    assert {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC_PREFIX", "CTP_PROJECT_KEY", "CTP_CLIENT_SECRET"} <= names
    # envFrom order: its own ConfigMap last, so its read-only CTP_SCOPES wins over order-finalization's
    refs = [s["configMapRef"]["name"] for s in container["envFrom"]]
    assert refs[-1] == "instore-reconciler-config"
    configmaps = _of_kind(docs, "ConfigMap")
    own = configmaps["instore-reconciler-config"]["data"]
    assert set(own) <= RECONCILER_VARS
    project = configmaps["instore-order-finalization-config"]["data"]["CTP_PROJECT_KEY"]
    _scopes_are(own["CTP_SCOPES"], project, tuple(RECONCILER_ASKS))
    assert all(not scope.startswith("manage_") for scope in RECONCILER_ASKS)
    assert pod["securityContext"]["runAsNonRoot"] and pod["restartPolicy"] == "Never"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
