"""Start the Kubernetes Deployments of a kustomize overlay with ``podman kube play``, prove they run, run each CronJob's pod once.

Run by scripts/kube-play.sh (which sets podman up and finds kustomize)::

    bash scripts/kube-play.sh deploy/k8s/overlays/test

What it does, in order:

1. renders the overlay (``kustomize build``) and keeps what podman kube play runs — Deployments,
   ConfigMaps, Secrets — and the CronJobs, listing what it leaves out; each Deployment gets one
   replica, each CronJob becomes the ``kind: Pod`` one of its Jobs would run (its ``jobTemplate``'s
   pod template, ``restartPolicy: Never``; podman runs no CronJob nor Job, and the schedule is not
   exercised); the images are the locally built ``localhost/instore-<service>:<tag>`` (never pulled).
2. adapts what podman 4.3 cannot take as written, and nothing else: the pods share the host's network
   (``--network host``), where podman refuses ``containerPort`` entries, so they are dropped and the
   probes' named ports replaced by their numbers; a Secret is handed to podman as a podman secret
   (``podman secret create`` with the ``{key: base64}`` JSON its kube play reads), not inside the YAML.
3. starts what the overlay's ConfigMaps point at, on the loopback addresses they name, from the same
   local images: Apache Kafka (``KAFKA_BOOTSTRAP_SERVERS``), the commercetools mock (``CTP_API_URL``)
   and the dev fakes (``IMS_JWKS_URL``); an address off loopback is an error.
4. ``podman kube play --network host`` and then checks every Deployment's container: it runs, with
   the root filesystem read-only (a write to / fails, one to /tmp — the emptyDir — works), as the
   manifest's non-root ``runAsUser``, with the manifest's command and args (or the image's entry point
   when it gives none), with every variable of ``env`` and ``envFrom`` set, and each HTTP probe
   (startup, readiness, liveness) answers 200 within ``--timeout`` seconds. podman itself does not run
   the probes here (it would from systemd timers), so this script does, from the host.
5. then, with the Deployments, Kafka, the mock and the dev fakes up, plays each CronJob's Pod (with the
   same ConfigMaps and podman secret), waits up to ``--timeout`` seconds until its container exited,
   and checks it: exit code 0, the manifest's command and args, the manifest's ``runAsUser`` (the
   user podman ran it as: ``podman inspect``, the container is gone by then), the read-only root
   filesystem, every variable of ``env`` and ``envFrom`` set, and the line :data:`FINISHED_LINES` names
   for that CronJob in its log (``podman logs``): the run ended, not just the process.
6. tears everything down (``podman kube down`` of each played file, the dependencies, the podman secret).

Exit code 0 when every check held, 1 otherwise (each failure on stderr), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

PLAYED_KINDS = {"Deployment", "ConfigMap", "Secret", "CronJob"}
# CronJob -> what its container logs when one run ended (the last line of a run, docs/reconciler.md);
# a CronJob not named here fails step 5: say what proves its run.
FINISHED_LINES = {"reconciler": '"reconcile.run_finished"'}
LOOPBACK = {"127.0.0.1", "localhost"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
ROOT = Path(__file__).resolve().parents[1]


class Failed(Exception):
    """A check did not hold."""


def podman(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run podman (its configuration: CONTAINERS_CONF, set by scripts/kube-play.sh)."""
    result = subprocess.run(["podman", *args], capture_output=True, text=True, input=stdin, check=False)
    if check and result.returncode != 0:
        raise Failed(f"podman {' '.join(args[:3])} …: {result.stderr.strip()[-800:]}")
    return result


def render(kustomize: str, overlay: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kustomize, "build", str(overlay)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise Failed(f"kustomize build {overlay}: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def local_image(image: str, tag: str) -> str:
    """``…/instore-<service>[:x]`` → ``localhost/instore-<service>:<tag>``; other images unchanged."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return f"localhost/{name}:{tag}" if name.startswith("instore-") else image


def prepare(docs: list[dict[str, Any]], tag: str) -> tuple[list[dict[str, Any]], list[str]]:
    """What podman kube play gets (step 1 and 2 of the module doc), and the kinds/names left out.

    Deployments, ConfigMaps and Secrets are kept in their order; each CronJob is replaced by its
    :func:`job_pod` (``kind: Pod``), played after the Deployments.
    """
    kept, left_out = [], []
    for doc in docs:
        if doc["kind"] not in PLAYED_KINDS:
            left_out.append(f"{doc['kind']}/{doc['metadata']['name']}")
            continue
        if doc["kind"] == "Deployment":
            doc["spec"]["replicas"] = 1
            _adapt(doc["spec"]["template"]["spec"], tag)
        if doc["kind"] == "CronJob":
            doc = job_pod(doc, tag)
        kept.append(doc)
    return kept, left_out


def job_pod(cronjob: dict[str, Any], tag: str) -> dict[str, Any]:
    """The ``kind: Pod`` one Job of the CronJob runs: its ``jobTemplate``'s pod template, named ``<cronjob>-job``.

    Labels and annotations are the template's, the namespace the CronJob's; ``restartPolicy: Never``
    (one run, as a Job with ``backoffLimit: 0``); containers adapted as a Deployment's (:func:`_adapt`).
    The CronJob is not changed. Job-level fields (``backoffLimit``, ``activeDeadlineSeconds``) and the
    schedule have no Pod equivalent and are not exercised: the caller bounds the run itself.
    """
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"]["spec"]["template"])
    metadata: dict[str, Any] = {"name": f"{cronjob['metadata']['name']}-job"}
    if "namespace" in cronjob["metadata"]:
        metadata["namespace"] = cronjob["metadata"]["namespace"]
    for key in ("labels", "annotations"):
        if key in template.get("metadata", {}):
            metadata[key] = template["metadata"][key]
    spec = template["spec"]
    spec["restartPolicy"] = "Never"
    _adapt(spec, tag)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _adapt(pod: dict[str, Any], tag: str) -> None:
    """Step 2 for a pod spec, in place: local images never pulled, no ``containerPort``, probes by port number."""
    for container in pod["containers"]:
        container["image"] = local_image(container["image"], tag)
        container["imagePullPolicy"] = "Never"
        ports = {p.get("name"): p["containerPort"] for p in container.pop("ports", [])}
        for probe in PROBES:
            get = container.get(probe, {}).get("httpGet")
            if get and isinstance(get["port"], str):
                get["port"] = ports[get["port"]]


def config_values(docs: list[dict[str, Any]]) -> dict[str, str]:
    """Every ConfigMap entry of the rendered overlay (the names are unique across them here)."""
    values: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            values.update({k: str(v) for k, v in (doc.get("data") or {}).items()})
    return values


def secret_values(doc: dict[str, Any]) -> dict[str, str]:
    values = {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
    values.update({k: str(v) for k, v in (doc.get("stringData") or {}).items()})
    return values


def loopback_port(value: str, what: str) -> int:
    """The port of a loopback ``host:port`` or URL; :class:`Failed` when it is not on loopback."""
    parts = urlsplit(value if "://" in value else f"tcp://{value}")
    if parts.hostname not in LOOPBACK or parts.port is None:
        raise Failed(f"{what} is {value!r}: this script runs the dependencies on 127.0.0.1 only (set it in the overlay)")
    return parts.port


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_for(what: str, seconds: float, probe: Any) -> None:
    """Poll ``probe()`` every 0.5 s until it is true; :class:`Failed` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.5)


class Run:
    """One run: the dependencies, the played pods, the podman secrets; :meth:`down` removes them."""

    def __init__(self, tag: str, timeout: float) -> None:
        self.tag, self.timeout = tag, timeout
        self.prefix = f"kube-play-{os.getpid()}"
        self.containers: list[str] = []
        self.secrets: list[str] = []
        self.played: list[Path] = []

    def dependency(self, name: str, image: str, env: dict[str, str]) -> str:
        container = f"{self.prefix}-{name}"
        args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        podman("run", "-d", "--pull", "never", "--name", container, "--network", "host", *args, image)
        self.containers.append(container)
        return container

    def dependencies(self, config: dict[str, str], secrets: dict[str, str]) -> None:
        kafka = loopback_port(config.get("KAFKA_BOOTSTRAP_SERVERS", ""), "KAFKA_BOOTSTRAP_SERVERS")
        mock = loopback_port(config.get("CTP_API_URL", ""), "CTP_API_URL")
        fakes_url = config.get("IMS_JWKS_URL", "")
        fakes = loopback_port(fakes_url, "IMS_JWKS_URL")
        controller = free_port()
        broker = self.dependency(
            "kafka",
            f"localhost/instore-kafka:{self.tag}",
            {
                "KAFKA_LISTENERS": f"PLAINTEXT://127.0.0.1:{kafka},CONTROLLER://127.0.0.1:{controller}",
                "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{kafka}",
                "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@127.0.0.1:{controller}",
                "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
            },
        )
        self.dependency(
            "ct-mock",
            f"localhost/instore-ct-mock:{self.tag}",
            {
                "CTP_MOCK_HOST": "127.0.0.1",
                "CTP_MOCK_PORT": str(mock),
                "CTP_PROJECT_KEY": config.get("CTP_PROJECT_KEY", "instore-demo"),
            },
        )
        fakes_env = {
            "DEVFAKES_HTTP_HOST": "127.0.0.1",
            "DEVFAKES_HTTP_PORT": str(fakes),
            "DEVFAKES_ISSUER": config.get("IMS_ISSUER", f"http://127.0.0.1:{fakes}/ims"),
        }
        # the fake InStore auth API accepts what the gateway will send
        if "INSTORE_TENANT_ID" in config:
            fakes_env["DEVFAKES_TENANT_ID"] = config["INSTORE_TENANT_ID"]
        if "INSTORE_CONNECTION_KEY" in secrets:
            fakes_env["DEVFAKES_CONNECTION_KEY"] = secrets["INSTORE_CONNECTION_KEY"]
        self.dependency("dev-fakes", f"localhost/instore-dev-fakes:{self.tag}", fakes_env)

        def kafka_answers() -> bool:
            probe = ["/opt/kafka/bin/kafka-broker-api-versions.sh", "--bootstrap-server", f"127.0.0.1:{kafka}"]
            return podman("exec", broker, *probe, check=False).returncode == 0

        wait_for(f"Kafka on 127.0.0.1:{kafka}", self.timeout, kafka_answers)
        wait_for(f"the mock on 127.0.0.1:{mock}", self.timeout, lambda: _answers(f"http://127.0.0.1:{mock}/"))
        wait_for(f"the dev fakes on 127.0.0.1:{fakes}", self.timeout, lambda: http_ok(f"http://127.0.0.1:{fakes}/healthz"))
        print(f"kube-play: Kafka 127.0.0.1:{kafka}, mock 127.0.0.1:{mock}, dev fakes 127.0.0.1:{fakes} (host network)")

    def play(self, docs: list[dict[str, Any]], workdir: Path, name: str = "play") -> None:
        """``podman kube play --network host`` of ``docs`` (written to ``<workdir>/<name>.yaml``), Secrets as podman secrets."""
        for doc in docs:
            if doc["kind"] == "Secret":
                name = doc["metadata"]["name"]
                podman("secret", "rm", name, check=False)
                encoded = {k: base64.b64encode(v.encode()).decode() for k, v in secret_values(doc).items()}
                file = workdir / f"{name}.json"
                file.write_text(json.dumps(encoded), encoding="utf-8")
                podman("secret", "create", name, str(file))
                file.unlink()
                self.secrets.append(name)
        played = workdir / f"{name}.yaml"
        played.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"]), encoding="utf-8")
        self.played.append(played)
        podman("kube", "play", "--network", "host", str(played))

    def down(self) -> None:
        for played in reversed(self.played):
            podman("kube", "down", str(played), check=False)
        for container in reversed(self.containers):
            podman("rm", "-f", "-t", "2", container, check=False)
        for name in self.secrets:
            podman("secret", "rm", name, check=False)


def _answers(url: str) -> bool:
    """Any HTTP answer (the mock answers / with 4xx)."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


def check_deployment(
    deployment: dict[str, Any], config: dict[str, Any], secrets: dict[str, dict[str, str]], timeout: float
) -> list[str]:
    """The checks of step 4 for one Deployment's containers; returns what held, raises :class:`Failed` otherwise."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    held = []
    for container in pod["containers"]:
        ctr = f"{name}-pod-0-{container['name']}"
        info = json.loads(podman("inspect", ctr).stdout)[0]
        if info["State"]["Status"] != "running":
            raise Failed(f"{ctr}: {info['State']['Status']}: {podman('logs', '--tail', '20', ctr, check=False).stderr}")
        security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        running = _check_command(ctr, info, container)
        # read-only root filesystem, writable /tmp (the emptyDir)
        if security.get("readOnlyRootFilesystem"):
            if not info["HostConfig"]["ReadonlyRootfs"]:
                raise Failed(f"{ctr}: the root filesystem is writable")
            if podman("exec", ctr, "touch", "/kube-play-probe", check=False).returncode == 0:
                raise Failed(f"{ctr}: a file could be written to /")
        for mount in container.get("volumeMounts", []):
            if podman("exec", ctr, "touch", f"{mount['mountPath']}/kube-play-probe", check=False).returncode != 0:
                raise Failed(f"{ctr}: {mount['mountPath']} is not writable")
        # the non-root user
        uid = podman("exec", ctr, "id", "-u").stdout.strip()
        if security.get("runAsNonRoot") and uid == "0":
            raise Failed(f"{ctr}: runs as root")
        if "runAsUser" in security and uid != str(security["runAsUser"]):
            raise Failed(f"{ctr}: runs as uid {uid}, the manifest says {security['runAsUser']}")
        wanted = _check_env(ctr, info, container, config, secrets)
        # the HTTP probes answer 200 (host network: on 127.0.0.1)
        probes = []
        for probe in PROBES:
            get = container.get(probe, {}).get("httpGet")
            if get:
                url = f"http://127.0.0.1:{get['port']}{get['path']}"
                wait_for(f"{ctr}: {probe} {url}", timeout, lambda url=url: http_ok(url))
                probes.append(f"{probe.removesuffix('Probe')} {get['path']}")
        held.append(
            f"{ctr}: running `{' '.join(running)}` as uid {uid}, read-only root: {info['HostConfig']['ReadonlyRootfs']}, "
            f"{len(wanted)} variables set, probes 200: {', '.join(probes) or 'none'}"
        )
    return held


def _check_command(ctr: str, info: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """The container runs (ran) the manifest's command and args, else the image's entry point; returns it."""
    image = json.loads(podman("image", "inspect", container["image"]).stdout)[0]["Config"]
    default_args = [] if "command" in container else image.get("Cmd") or []
    want = container.get("command", image.get("Entrypoint") or []) + container.get("args", default_args)
    running = [info["Path"], *info["Args"]]
    if running != want:
        raise Failed(f"{ctr}: runs {running}, the manifest says {want}")
    return running


def _check_env(
    ctr: str, info: dict[str, Any], container: dict[str, Any], config: dict[str, Any], secrets: dict[str, dict[str, str]]
) -> set[str]:
    """Every variable of the container's ``env`` and ``envFrom`` is set in it; returns their names."""
    present = {item.split("=", 1)[0] for item in info["Config"]["Env"]}
    wanted = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            wanted |= set(config[source["configMapRef"]["name"]])
        if "secretRef" in source:
            wanted |= set(secrets[source["secretRef"]["name"]])
    if missing := wanted - present:
        raise Failed(f"{ctr}: variables not set: {sorted(missing)}")
    return wanted


def check_job_pod(
    pod: dict[str, Any], cronjob: str, config: dict[str, Any], secrets: dict[str, dict[str, str]], timeout: float
) -> list[str]:
    """The checks of step 5 for one CronJob's played Pod; returns what held, raises :class:`Failed` otherwise."""
    name = pod["metadata"]["name"]
    if cronjob not in FINISHED_LINES:
        raise Failed(f"CronJob {cronjob}: no log line is known to prove its run ended (FINISHED_LINES)")
    held = []
    for container in pod["spec"]["containers"]:
        ctr = f"{name}-{container['name']}"

        def state(ctr: str = ctr) -> dict[str, Any]:
            info: dict[str, Any] = json.loads(podman("inspect", ctr).stdout)[0]
            return info

        wait_for(f"{ctr}: the run to end", timeout, lambda: state()["State"]["Status"] in {"exited", "stopped"})
        info = state()
        logs = podman("logs", ctr, check=False)
        log = logs.stdout + logs.stderr
        if info["State"]["ExitCode"] != 0:
            tail = "\n".join(log.splitlines()[-20:])
            raise Failed(f"{ctr}: exit code {info['State']['ExitCode']}:\n{tail}")
        running = _check_command(ctr, info, container)
        security = {**pod["spec"].get("securityContext", {}), **container.get("securityContext", {})}
        # the user it ran as: what podman handed the runtime ("uid" or "uid:gid")
        uid = str(info["Config"].get("User") or "0").split(":", 1)[0]
        if security.get("runAsNonRoot") and uid in {"0", "root"}:
            raise Failed(f"{ctr}: ran as root")
        if "runAsUser" in security and uid != str(security["runAsUser"]):
            raise Failed(f"{ctr}: ran as uid {uid}, the manifest says {security['runAsUser']}")
        if security.get("readOnlyRootFilesystem") and not info["HostConfig"]["ReadonlyRootfs"]:
            raise Failed(f"{ctr}: the root filesystem was writable")
        wanted = _check_env(ctr, info, container, config, secrets)
        finished = [line for line in log.splitlines() if FINISHED_LINES[cronjob] in line]
        if not finished:
            tail = "\n".join(log.splitlines()[-20:])
            raise Failed(f"{ctr}: exit code 0 but no {FINISHED_LINES[cronjob]} line in its log:\n{tail}")
        held.append(
            f"{ctr}: ran `{' '.join(running)}` once as uid {uid}, read-only root: {info['HostConfig']['ReadonlyRootfs']}, "
            f"{len(wanted)} variables set, exit code 0, logged {finished[-1].strip()}"
        )
    return held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlay", type=Path, help="the kustomization to render, e.g. deploy/k8s/overlays/test")
    parser.add_argument("--kustomize", default="kustomize", help="the kustomize binary (default: %(default)s)")
    parser.add_argument("--tag", default=os.environ.get("IMAGE_TAG", "ci"), help="tag of the local images (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each wait may take (default: %(default)s)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    run = Run(args.tag, args.timeout)
    workdir = Path(tempfile.mkdtemp(prefix="kube-play-"))
    try:
        rendered = render(args.kustomize, args.overlay)
        cronjobs = [d["metadata"]["name"] for d in rendered if d["kind"] == "CronJob"]
        docs, left_out = prepare(rendered, args.tag)
        deployments = [d for d in docs if d["kind"] == "Deployment"]
        job_pods = [d for d in docs if d["kind"] == "Pod"]
        if not deployments:
            raise Failed(f"{args.overlay} renders no Deployment")
        skipped = ", ".join(left_out) or "nothing"
        print(
            f"kube-play: {args.overlay}: {len(deployments)} Deployments, {len(job_pods)} CronJobs "
            f"(one run each, as a Pod); left out (podman kube play runs none): {skipped}"
        )
        config = {d["metadata"]["name"]: (d.get("data") or {}) for d in docs if d["kind"] == "ConfigMap"}
        secrets = {d["metadata"]["name"]: secret_values(d) for d in docs if d["kind"] == "Secret"}
        run.dependencies(config_values(docs), {k: v for s in secrets.values() for k, v in s.items()})
        run.play([d for d in docs if d["kind"] != "Pod"], workdir)
        for deployment in deployments:
            for line in check_deployment(deployment, config, secrets, args.timeout):
                print(f"kube-play: OK {line}")
        configmaps = [d for d in docs if d["kind"] == "ConfigMap"]
        for cronjob, pod in zip(cronjobs, job_pods, strict=True):
            run.play([*configmaps, pod], workdir, pod["metadata"]["name"])
            for line in check_job_pod(pod, cronjob, config, secrets, args.timeout):
                print(f"kube-play: OK {line}")
    except Failed as exc:
        print(f"kube-play: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        run.down()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"kube-play: every Deployment started and every CronJob's run ended, all passed their checks "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
