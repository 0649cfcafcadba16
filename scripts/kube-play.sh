#!/usr/bin/env bash
# The Kubernetes Deployments of a kustomize overlay started with `podman kube play` and checked
# (commands, env, probes, read-only root filesystem, non-root user), then each CronJob's pod run
# once and checked (exit code, command, user, its run's last log line): see scripts/kube_play.py.
#
#   bash scripts/kube-play.sh [OVERLAY]      default deploy/k8s/overlays/test
#
# Needs podman, kustomize (.local/bin/kustomize from make install, or on PATH) and the images of
# `make images` (localhost/instore-*:$IMAGE_TAG: the services, Kafka, the mock). The pods share the
# host's network: what the overlay's ConfigMaps point at must be free loopback ports, and so must
# the services' own ports (8080-8084).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/container-engine.sh
source scripts/container-engine.sh
CONTAINER_ENGINE=podman container_engine_setup "$REPO"

overlay="${1:-deploy/k8s/overlays/test}"
[[ -e "$overlay" ]] || { echo "kube-play.sh: no kustomization at $overlay" >&2; exit 2; }
kustomize="$REPO/.local/bin/kustomize"
[[ -x "$kustomize" ]] || kustomize="$(command -v kustomize)" \
  || { echo "kube-play.sh: kustomize is missing: make install (or go install sigs.k8s.io/kustomize/kustomize/v5)" >&2; exit 1; }
exec "${PYTHON:-$REPO/.venv/bin/python}" scripts/kube_play.py --kustomize "$kustomize" "$overlay" "${@:2}"
