"""scripts/kube_play.py: what it hands to ``podman kube play`` (the run itself is CI's: make kube-play)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from scripts.kube_play import Failed, local_image, loopback_port, prepare

DEPLOYMENT: dict[str, Any] = {
    "kind": "Deployment",
    "metadata": {"name": "gateway"},
    "spec": {
        "replicas": 3,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "gateway",
                        "image": "ghcr.io/example/instore-gateway:0.1.0",
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                        "securityContext": {"readOnlyRootFilesystem": True},
                    }
                ]
            }
        },
    },
}


def test_prepare_keeps_what_kube_play_runs_and_adapts_the_deployments() -> None:
    docs = [
        copy.deepcopy(DEPLOYMENT),
        {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"A": "1"}},
        {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"B": "2"}},
        {"kind": "Service", "metadata": {"name": "gateway"}},
        {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "gateway"}},
    ]
    kept, left_out = prepare(docs, "ci")
    assert [d["kind"] for d in kept] == ["Deployment", "ConfigMap", "Secret"]
    assert left_out == ["Service/gateway", "HorizontalPodAutoscaler/gateway"]
    deployment = kept[0]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert container["image"] == "localhost/instore-gateway:ci" and container["imagePullPolicy"] == "Never"
    # host network: no containerPort entries (podman refuses them there), probes by number
    assert "ports" not in container
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert container["securityContext"] == {"readOnlyRootFilesystem": True}


@pytest.mark.parametrize(
    ("image", "local"),
    [
        ("ghcr.io/example/instore-refund:0.1.0", "localhost/instore-refund:ci"),
        ("localhost/instore-refund:ci", "localhost/instore-refund:ci"),
        ("registry.example.com/team/instore-cart-mapping@sha256:abc", "localhost/instore-cart-mapping:ci"),
        ("docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ],
)
def test_local_image(image: str, local: str) -> None:
    assert local_image(image, "ci") == local


def test_dependencies_run_on_loopback_only() -> None:
    assert loopback_port("127.0.0.1:9092", "KAFKA_BOOTSTRAP_SERVERS") == 9092
    assert loopback_port("http://localhost:8989", "CTP_API_URL") == 8989
    with pytest.raises(Failed, match=r"127\.0\.0\.1 only"):
        loopback_port("kafka-bootstrap.kafka.svc:9092", "KAFKA_BOOTSTRAP_SERVERS")
    with pytest.raises(Failed):
        loopback_port("https://api.europe-west1.gcp.commercetools.com", "CTP_API_URL")
