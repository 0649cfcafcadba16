"""The rendered Kubernetes overlays (deploy/k8s): they build, validate offline, and scale and isolate as designed.

Every kustomization is rendered with ``kustomize build`` and every object validated against the
Kubernetes JSON schemas of a pinned version and the CRD schemas kept in deploy/k8s/schemas
(tests/support/k8s.py). Then, per InStore tenant environment (overlay):

- the KafkaTopics are exactly the topic registry's topics (dead-letter and reply topics included)
  with the overlay's KAFKA_TOPIC_PREFIX;
- each KEDA ScaledObject watches the topic and consumer group its service really subscribes to
  (read from the service's FastStream broker), prefixed, and never allows more replicas than
  that topic has partitions;
- the gateway's HorizontalPodAutoscaler, the NetworkPolicies, the test overlay for podman kube play.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from faststream.kafka import KafkaBroker

from instore_cart_mapping.app import create_broker as cart_mapping_broker
from instore_cart_mapping.settings import CartMappingSettings
from instore_gateway.settings import GatewaySettings
from instore_order_finalization.app import create_broker as order_finalization_broker
from instore_order_finalization.reconciler.settings import ReconcilerSettings
from instore_order_finalization.settings import OrderFinalizationSettings
from instore_payment_extension.app import create_broker as payment_extension_broker
from instore_payment_extension.settings import PaymentExtensionSettings
from instore_refund.app import create_broker as refund_broker
from instore_refund.settings import RefundSettings
from instore_shared.kafka.dlq import DLQ_SUFFIX, dlq_topic
from instore_shared.kafka.topics import ALL_TOPICS, CART_REPLIES
from instore_shared.settings import CommercetoolsSettings
from tests.support.k8s import K8S, KUSTOMIZE_VERSION, ROOT, render, validation_errors

# Every kustomization an operator applies.
KUSTOMIZATIONS = (
    "base",
    "kafka-topics",
    "monitoring",
    *(f"overlays/{env}{sub}" for env in ("dev", "prod") for sub in ("", "/kafka-topics", "/monitoring")),
    "overlays/test",
)
# InStore tenant environments: app overlay -> its KafkaTopics (base: the unprefixed defaults).
ENVIRONMENTS = {
    "base": "kafka-topics",
    "overlays/dev": "overlays/dev/kafka-topics",
    "overlays/prod": "overlays/prod/kafka-topics",
}
KAFKA_SERVICES = ("cart-mapping", "order-finalization", "refund", "payment-extension")
SERVICES = ("gateway", *KAFKA_SERVICES)

# service -> its broker, built with default settings (no Kafka is contacted)
BROKERS: dict[str, Callable[[], KafkaBroker]] = {
    "cart-mapping": lambda: cart_mapping_broker(CartMappingSettings(), None),  # type: ignore[arg-type]
    "order-finalization": lambda: order_finalization_broker(OrderFinalizationSettings(), None),  # type: ignore[arg-type]
    "refund": lambda: refund_broker(RefundSettings(), None),  # type: ignore[arg-type]
    "payment-extension": lambda: payment_extension_broker(PaymentExtensionSettings(), None, None, None, None),  # type: ignore[arg-type]
}


def _of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _prefix(env: str) -> str:
    common = _of_kind(render(env), "ConfigMap")["instore-integration-common"]["data"]
    return str(common.get("KAFKA_TOPIC_PREFIX", ""))


def _consumed(service: str) -> tuple[str, str]:
    """(topic, consumer group) the service's consumer group reads, from its FastStream subscriber."""
    grouped = [(s, s.group_id) for s in BROKERS[service]().subscribers if s.group_id]
    assert len(grouped) == 1, f"{service}: expected one consumer group subscriber, found {len(grouped)}"
    subscriber, group = grouped[0]
    (topic,) = subscriber.topic_names
    return str(topic), str(group)


# -- render and validate ----------------------------------------------------------------------
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders_and_validates(kustomization: str) -> None:
    objects = render(kustomization)
    assert objects, f"{kustomization} renders nothing"
    errors = [error for obj in objects for error in validation_errors(obj)]
    assert not errors, f"deploy/k8s/{kustomization} does not validate:\n" + "\n".join(errors)


def test_validation_catches_what_an_api_server_refuses() -> None:
    """Guards the validator itself: a misspelled field, a wrong type and a bad name are each reported."""
    deployment = _of_kind(render("base"), "Deployment")["gateway"]
    deployment["spec"]["template"]["spec"]["containers"][0]["startupprobe"] = {}
    assert any("'startupprobe' was unexpected" in e for e in validation_errors(deployment))
    scaled = _of_kind(render("base"), "ScaledObject")["refund"]
    scaled["spec"]["maxReplicaCount"] = "6"
    assert any("is not of type 'integer' at spec.maxReplicaCount" in e for e in validation_errors(scaled))
    topic = next(iter(_of_kind(render("kafka-topics"), "KafkaTopic").values()))
    topic["metadata"]["name"] = "Instore_Webhooks"
    topic["spec"]["partition"] = 6
    errors = validation_errors(topic)
    assert any("metadata.name is not a valid Kubernetes name" in e for e in errors)
    assert any("'partition' was unexpected" in e for e in errors)
    assert validation_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_make_install_builds_the_kustomize_named_here() -> None:
    assert f"KUSTOMIZE_VERSION := {KUSTOMIZE_VERSION}\n" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_every_kustomization_is_rendered_here() -> None:
    on_disk = {str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml")}
    # topic-prefix: a transformer configuration (used by the overlays), not applied on its own
    on_disk = {k for k in on_disk if not k.endswith("/topic-prefix")}
    assert on_disk == set(KUSTOMIZATIONS)


# -- one InStore tenant environment per overlay -------------------------------------------------
def test_environments_are_separate() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")
    assert set(_of_kind(dev, "Namespace")) == {"instore-dev"} and set(_of_kind(prod, "Namespace")) == {"instore-prod"}
    for docs, namespace in ((dev, "instore-dev"), (prod, "instore-prod")):
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {namespace}
    assert _prefix("overlays/dev") == "dev." and _prefix("overlays/prod") == "prod."
    assert _prefix("base") == "" and _prefix("overlays/test") not in {"", "dev.", "prod."}
    for env in ("dev", "prod"):
        monitoring = render(f"overlays/{env}/monitoring")
        assert {d["metadata"]["namespace"] for d in monitoring} == {f"instore-{env}"}, "monitors next to the pods"
        images = {c["image"] for d in _of_kind(render(f"overlays/{env}"), "Deployment").values() for c in _containers(d)}
        assert images == {f"ghcr.io/example/instore-{s}:{'0.1.0-dev' if env == 'dev' else '0.1.0'}" for s in SERVICES}


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _memory_mi(quantity: str) -> int:
    assert quantity.endswith("Mi"), quantity
    return int(quantity[:-2])


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/prod"])
def test_no_disruption_budget_forbids_every_eviction_at_the_minimum_replicas(overlay: str) -> None:
    """At the autoscalers' minimum (the idle state) a node drain can still evict one pod of each service."""
    objects = render(overlay)
    minimum = {name: h["spec"]["minReplicas"] for name, h in _of_kind(objects, "HorizontalPodAutoscaler").items()}
    minimum |= {name: s["spec"]["minReplicaCount"] for name, s in _of_kind(objects, "ScaledObject").items()}
    budgets = _of_kind(objects, "PodDisruptionBudget")
    assert set(budgets) == set(_of_kind(objects, "Deployment"))
    for name, pdb in budgets.items():
        spec = pdb["spec"]
        allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else minimum[name] - spec["minAvailable"]
        assert allowed >= 1, f"{overlay} {name}: no eviction allowed at {minimum[name]} replica(s)"


def test_prod_is_stricter_than_dev() -> None:
    dev, prod = render("overlays/dev"), render("overlays/prod")
    assert (
        _of_kind(prod, "HorizontalPodAutoscaler")["gateway"]["spec"]["minReplicas"]
        > (_of_kind(dev, "HorizontalPodAutoscaler")["gateway"]["spec"]["minReplicas"])
    )
    for name, scaled in _of_kind(prod, "ScaledObject").items():
        assert scaled["spec"]["minReplicaCount"] >= 2 > _of_kind(dev, "ScaledObject")[name]["spec"]["minReplicaCount"], name
    assert _of_kind(prod, "PodDisruptionBudget")["gateway"]["spec"]["minAvailable"] == 2
    for name, deployment in _of_kind(prod, "Deployment").items():
        (container,) = _containers(deployment)
        resources = container["resources"]
        assert resources["requests"]["memory"] == resources["limits"]["memory"], f"{name}: guaranteed memory in prod"
        (dev_container,) = _containers(_of_kind(dev, "Deployment")[name])
        assert _memory_mi(resources["requests"]["memory"]) >= _memory_mi(dev_container["resources"]["requests"]["memory"])
        keys = {c["topologyKey"] for c in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        for constraint in deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
            assert constraint["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}, name
    common = _of_kind(dev, "ConfigMap")["instore-integration-common"]["data"]
    assert (
        common["LOG_LEVEL"] == "DEBUG"
        and _of_kind(prod, "ConfigMap")["instore-integration-common"]["data"]["LOG_LEVEL"] == "INFO"
    )


# -- Strimzi KafkaTopics: every topic of the registry -----------------------------------------
def test_the_registry_names_each_dead_letter_topic() -> None:
    """The registry holds the dead-letter topic of every topic a dead-lettering service consumes,
    and every registered dead-letter topic belongs to a registered topic (instore_shared.kafka.dlq)."""
    names = {t.name for t in ALL_TOPICS}
    for service in ("order-finalization", "refund", "payment-extension"):
        topic, _ = _consumed(service)
        assert dlq_topic(topic) in names, f"{service} dead-letters to {dlq_topic(topic)}, not in ALL_TOPICS"
    for name in names:
        if name.endswith(DLQ_SUFFIX):
            assert name.removesuffix(DLQ_SUFFIX) in names, name
    assert CART_REPLIES.name in names


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_kafka_topics_are_the_registry_with_the_prefix(env: str) -> None:
    prefix = _prefix(env)
    topics = _of_kind(render(ENVIRONMENTS[env]), "KafkaTopic")
    expected = {prefix + t.name for t in ALL_TOPICS}
    named = {t["spec"]["topicName"] for t in topics.values()}
    assert named == expected, f"missing: {sorted(expected - named)}, unknown: {sorted(named - expected)}"
    for name, topic in topics.items():
        spec = topic["spec"]
        assert name == spec["topicName"], "metadata.name is the topic name (all registry names are valid k8s names)"
        assert topic["metadata"]["namespace"] == "kafka" and topic["metadata"]["labels"]["strimzi.io/cluster"]
        assert spec["partitions"] >= 1 and spec["replicas"] == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name
        retention = int(spec["config"]["retention.ms"])
        assert 3_600_000 <= retention <= 90 * 86_400_000, f"{name}: retention.ms {retention}"
        if name.endswith(DLQ_SUFFIX):
            source = topics[name.removesuffix(DLQ_SUFFIX)]
            assert retention >= int(source["spec"]["config"]["retention.ms"]), f"{name}: kept at least as long as its source"


# -- KEDA ScaledObjects and the gateway's HPA --------------------------------------------------
ALLOWED_TRIGGER_METADATA = {
    "bootstrapServersFromEnv",
    "consumerGroup",
    "topic",
    "lagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
}


def test_services_consume_what_the_scaled_objects_assume() -> None:
    """The defaults the base's ScaledObjects name: read from the services' own subscribers."""
    assert {s: _consumed(s) for s in KAFKA_SERVICES} == {
        "cart-mapping": ("instore.cart-requests.v1", "cart-mapping"),
        "order-finalization": ("instore.webhooks.v1", "order-finalization"),
        "refund": ("instore.webhooks.v1", "refund"),
        "payment-extension": ("instore.payment-requests.v1", "payment-extension"),
    }


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_scaled_objects_follow_the_consumer_lag_within_the_partitions(env: str) -> None:
    docs = render(env)
    prefix = _prefix(env)
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in render(ENVIRONMENTS[env]) if t["kind"] == "KafkaTopic"}
    deployments = _of_kind(docs, "Deployment")
    scaled_objects = _of_kind(docs, "ScaledObject")
    assert set(scaled_objects) == set(KAFKA_SERVICES)
    configmaps = _of_kind(docs, "ConfigMap")
    for service in KAFKA_SERVICES:
        spec = scaled_objects[service]["spec"]
        assert spec["scaleTargetRef"] == {"name": service} and service in deployments
        assert "replicas" not in deployments[service]["spec"], f"{service}: KEDA owns the replica count"
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert set(metadata) <= ALLOWED_TRIGGER_METADATA, (
            f"{service}: unknown trigger metadata {set(metadata) - ALLOWED_TRIGGER_METADATA}"
        )
        topic, group = _consumed(service)
        assert metadata["topic"] == prefix + topic, service
        assert metadata["consumerGroup"] == prefix + group, service
        assert metadata["offsetResetPolicy"] == "earliest" and metadata["allowIdleConsumers"] == "false"
        assert int(metadata["lagThreshold"]) >= 1
        # the address KEDA reads from the Deployment's environment is there
        (container,) = _containers(deployments[service])
        refs = [s["configMapRef"]["name"] for s in container["envFrom"]]
        assert any(metadata["bootstrapServersFromEnv"] in configmaps[r]["data"] for r in refs), service
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert spec["maxReplicaCount"] <= partitions[metadata["topic"]], (
            f"{env}: {service} may scale to {spec['maxReplicaCount']} replicas, "
            f"but {metadata['topic']} has {partitions[metadata['topic']]} partitions (the rest would idle)"
        )


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_the_gateway_scales_on_cpu(env: str) -> None:
    docs = render(env)
    (hpa,) = _of_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}
    assert 2 <= spec["minReplicas"] < spec["maxReplicas"], "two replicas at least: the gateway is InStore's only way in"
    (metric,) = spec["metrics"]
    assert metric["resource"]["name"] == "cpu"
    (container,) = _containers(_of_kind(docs, "Deployment")["gateway"])
    assert container["resources"]["requests"]["cpu"], "a CPU utilisation target needs a CPU request"
    assert "replicas" not in _of_kind(docs, "Deployment")["gateway"]["spec"], "the HPA owns the replica count"
    assert _of_kind(docs, "ConfigMap")["instore-gateway-config"]["data"]["TOKEN_VAULT_BACKEND"] == "redis"


# -- NetworkPolicy ------------------------------------------------------------------------------
def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    assert not selector.get("matchExpressions")
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def _rules(docs: list[dict[str, Any]], service: str, direction: str) -> list[dict[str, Any]]:
    """The ingress or egress rules of every policy selecting ``service``'s pods."""
    labels = _of_kind(docs, "Deployment")[service]["spec"]["template"]["metadata"]["labels"]
    policies = [p for p in _of_kind(docs, "NetworkPolicy").values() if _selects(p, labels)]
    key = "ingress" if direction == "Ingress" else "egress"
    return [rule for p in policies if direction in p["spec"]["policyTypes"] for rule in p["spec"].get(key, [])]


def _ports(rule: dict[str, Any]) -> set[tuple[str, int | str]]:
    assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
    return {(p["protocol"], p["port"]) for p in rule["ports"]}


def _namespace_of(peer: dict[str, Any]) -> str:
    assert "ipBlock" not in peer and "podSelector" in peer, f"an ingress peer is a namespace's labelled pods: {peer}"
    (namespace,) = peer["namespaceSelector"]["matchLabels"].items()
    assert namespace[0] == "kubernetes.io/metadata.name", "the label Kubernetes sets itself"
    return str(namespace[1])


PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")]


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_network_policies_deny_by_default(env: str) -> None:
    docs = render(env)
    deny = _of_kind(docs, "NetworkPolicy")["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for service in SERVICES:
        port_name = "http"
        (container,) = _containers(_of_kind(docs, "Deployment")[service])
        assert [p["name"] for p in container["ports"]] == [port_name]
        # ingress: Prometheus on the http port, and for the gateway also the ingress controller
        sources = {
            (_namespace_of(peer), port)
            for rule in _rules(docs, service, "Ingress")
            for peer in rule["from"]
            for port in _ports(rule)
        }
        expected = {("monitoring", ("TCP", port_name))}
        if service == "gateway":
            expected.add(("ingress-nginx", ("TCP", port_name)))
        assert sources == expected, f"{service}: ingress {sources}"
        # egress: DNS, Kafka, HTTPS to public addresses; Redis for the gateway only
        egress = _rules(docs, service, "Egress")
        ports = set().union(*(_ports(rule) for rule in egress))
        wanted = {("UDP", 53), ("TCP", 53), ("TCP", 9092), ("TCP", 9093), ("TCP", 443)}
        if service == "gateway":
            wanted |= {("TCP", 6379), ("TCP", 6380)}
        assert ports == wanted, f"{service}: egress ports {ports}"
        for rule in egress:
            if ("TCP", 443) in _ports(rule):
                (peer,) = rule["to"]
                assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
                excluded = [ipaddress.ip_network(n) for n in peer["ipBlock"]["except"]]
                assert all(any(p.subnet_of(e) for e in excluded) for p in PRIVATE), "HTTPS only to public addresses"
            elif ("TCP", 53) in _ports(rule):
                assert [_namespace_of(peer) for peer in rule["to"]] == ["kube-system"]
            elif ("TCP", 9092) in _ports(rule):
                assert [_namespace_of(peer) for peer in rule["to"]] == ["kafka"]


# -- the test overlay: podman kube play ---------------------------------------------------------
def _env_of(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The environment the container gets: envFrom ConfigMaps, then env (values and secretKeyRefs)."""
    configmaps = _of_kind(docs, "ConfigMap")
    (secret,) = _of_kind(docs, "Secret").values()
    env: dict[str, str] = {}
    for source in container["envFrom"]:
        env |= configmaps[source["configMapRef"]["name"]]["data"]
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            env[entry["name"]] = secret["stringData"][ref["key"]]
    return env


SETTINGS: dict[str, type] = {
    "gateway": GatewaySettings,
    "cart-mapping": CartMappingSettings,
    "order-finalization": OrderFinalizationSettings,
    "refund": RefundSettings,
    "payment-extension": PaymentExtensionSettings,
}


def test_the_test_overlay_is_what_podman_kube_play_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("overlays/test")
    # scripts/kube_play.py plays the Deployments, then the CronJob's pod template once as a Pod
    assert {d["kind"] for d in docs} == {"ConfigMap", "Secret", "Deployment", "CronJob"}
    (secret,) = _of_kind(docs, "Secret").values()
    for key, value in secret["stringData"].items():
        shown = value if "fake" in value else base64.urlsafe_b64decode(value).decode()
        assert "fake" in shown, f"{key}: the test overlay's Secret holds obviously fake values only"
    for service, deployment in _of_kind(docs, "Deployment").items():
        assert "replicas" not in deployment["spec"]
        (container,) = _containers(deployment)
        assert container["image"] == f"localhost/instore-{service}:ci"
        assert container["imagePullPolicy"] == "Never"
        # the pod's settings validate: the service would start with exactly this environment
        env = _env_of(docs, container)
        for name in list(env):
            monkeypatch.setenv(name, env[name])
        settings = SETTINGS[service]()
        assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
        for name in env:
            monkeypatch.delenv(name)
    (cronjob,) = _of_kind(docs, "CronJob").values()
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/instore-order-finalization:ci"
    assert container["imagePullPolicy"] == "Never"
    # the reconciler's settings validate and point at the Kafka and the mock kube_play.py starts
    env = _env_of(docs, container)
    for name in list(env):
        monkeypatch.setenv(name, env[name])
    reconciler = ReconcilerSettings()
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == reconciler.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert reconciler.kafka_topic_prefix == "kube-test.", "it hands to the topic order-finalization's pod created"
    assert env["CTP_API_URL"] == CommercetoolsSettings().api_url == "http://127.0.0.1:8989"
    for name in env:
        monkeypatch.delenv(name)
    common = _of_kind(docs, "ConfigMap")["instore-integration-common"]["data"]
    assert common["KAFKA_CREATE_TOPICS"] == "true", "no Strimzi in CI: the services create their topics"
    assert _of_kind(docs, "ConfigMap")["instore-gateway-config"]["data"]["TOKEN_VAULT_BACKEND"] == "memory"
