"""scripts/kube_play.py: what it hands to ``podman kube play`` (the run itself is CI's: make kube-play)."""

from __future__ import annotations

import copy
import inspect
from typing import Any

import pytest

from scripts.kube_play import FINISHED_LINES, Failed, job_pod, local_image, loopback_port, prepare
from tests.support.k8s import render

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

CRONJOB: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "CronJob",
    "metadata": {"name": "reconciler", "namespace": "instore-test", "labels": {"app.kubernetes.io/name": "reconciler"}},
    "spec": {
        "schedule": "*/5 * * * *",
        "concurrencyPolicy": "Forbid",
        "jobTemplate": {
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/component": "reconciler"}},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                        "containers": [
                            {
                                "name": "reconciler",
                                "image": "ghcr.io/example/instore-order-finalization:0.1.0",
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["instore-reconciler", "--once"],
                                "ports": [{"name": "metrics", "containerPort": 9100}],
                                "envFrom": [{"configMapRef": {"name": "instore-reconciler-config"}}],
                                "securityContext": {"readOnlyRootFilesystem": True},
                            }
                        ],
                        "volumes": [{"name": "tmp", "emptyDir": {}}],
                    },
                },
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
        copy.deepcopy(CRONJOB),
    ]
    kept, left_out = prepare(docs, "ci")
    # the CronJob is kept as the Pod one of its Jobs runs (played after the Deployments)
    assert [d["kind"] for d in kept] == ["Deployment", "ConfigMap", "Secret", "Pod"]
    assert kept[3] == job_pod(CRONJOB, "ci")
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


def test_a_cronjob_becomes_the_pod_one_of_its_jobs_runs() -> None:
    cronjob = copy.deepcopy(CRONJOB)
    pod = job_pod(cronjob, "ci")
    assert cronjob == CRONJOB, "the CronJob itself is left as it was"
    assert pod["apiVersion"] == "v1" and pod["kind"] == "Pod"
    assert pod["metadata"] == {
        "name": "reconciler-job",
        "namespace": "instore-test",
        "labels": {"app.kubernetes.io/component": "reconciler"},
    }
    spec = pod["spec"]
    # one run, never restarted (a Job's pod with backoffLimit 0), whatever the template said
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001}
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    (container,) = spec["containers"]
    # the same adaptations as a Deployment's: local image never pulled, no containerPort on the host network
    assert container["image"] == "localhost/instore-order-finalization:ci" and container["imagePullPolicy"] == "Never"
    assert "ports" not in container
    # what is checked stays the manifest's
    assert container["command"] == ["instore-reconciler", "--once"]
    assert container["envFrom"] == [{"configMapRef": {"name": "instore-reconciler-config"}}]
    assert container["securityContext"] == {"readOnlyRootFilesystem": True}
    # Job and CronJob fields have no Pod equivalent
    assert not {"schedule", "jobTemplate", "backoffLimit", "template"} & set(spec)


def test_every_cronjob_of_the_test_overlay_says_how_its_run_ends() -> None:
    """Step 5 fails a CronJob without a finished line; the reconciler's is the summary its run logs last."""
    from instore_order_finalization.reconciler import run

    cronjobs = {d["metadata"]["name"] for d in render("overlays/test") if d["kind"] == "CronJob"}
    assert cronjobs == set(FINISHED_LINES) == {"reconciler"}
    # the event of the JSON log line ("event": "reconcile.run_finished") the reconciler writes
    assert FINISHED_LINES["reconciler"] in inspect.getsource(run)
