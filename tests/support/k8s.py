"""Render the kustomizations under deploy/k8s with kustomize and validate what they produce, offline.

:func:`render` runs ``kustomize build`` (the binary ``make install`` puts in ``.local/bin``, else
``$KUSTOMIZE``, else ``kustomize`` on ``PATH``) and returns the objects as dicts; a missing binary
fails the test with how to install it (CI must never skip this).

:func:`validation_errors` checks one rendered object against a schema, without a cluster:

- built-in kinds against the Kubernetes JSON schemas of :data:`KUBERNETES_VERSION` shipped by the
  ``kubernetes-validate`` package, in its strict mode (an unknown field is an error, as
  ``kubectl apply`` with server-side field validation says);
- custom resources against the ``openAPIV3Schema`` of their CustomResourceDefinition kept in
  ``deploy/k8s/schemas`` (KEDA, Strimzi, Prometheus Operator; see the README there), made strict
  the same way: an object schema with ``properties`` refuses other fields unless it says
  ``x-kubernetes-preserve-unknown-fields`` or ``additionalProperties``;
- every ``metadata.name`` is a DNS-1123 subdomain (Namespaces and Services a DNS-1123 label), as
  the API server requires;
- a kind with no schema at all is an error, never silently passed.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"

KUBERNETES_VERSION = "1.33"
"""The Kubernetes minor version the built-in kinds are validated for (kubernetes-validate's schemas)."""

KUSTOMIZE_VERSION = "v5.8.2"
"""The kustomize ``make install`` builds (``go install sigs.k8s.io/kustomize/kustomize/v5@…``)."""

INSTALL_HINT = (
    f"kustomize is needed to render deploy/k8s: run `make install`, or "
    f"`GOBIN=$PWD/.local/bin go install sigs.k8s.io/kustomize/kustomize/v5@{KUSTOMIZE_VERSION}` "
    "(or set KUSTOMIZE=/path/to/kustomize)"
)

_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_NAMED = frozenset({"Namespace", "Service"})


def kustomize() -> str:
    """The kustomize binary to run; fails the calling test with :data:`INSTALL_HINT` when there is none."""
    candidates = [os.environ.get("KUSTOMIZE", ""), str(ROOT / ".local" / "bin" / "kustomize"), shutil.which("kustomize") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(INSTALL_HINT, pytrace=False)


@functools.cache
def _build(path: str) -> tuple[str, str]:
    done = subprocess.run([kustomize(), "build", path], capture_output=True, text=True, timeout=120, check=False)
    return done.stdout, "" if done.returncode == 0 else done.stderr.strip() or f"exit code {done.returncode}"


def render(kustomization: str) -> list[dict[str, Any]]:
    """The objects ``kustomize build deploy/k8s/<kustomization>`` prints (a fresh copy on each call).

    Fails the test with kustomize's own message when the build fails.
    """
    out, error = _build(str(K8S / kustomization))
    if error:
        pytest.fail(f"kustomize build deploy/k8s/{kustomization} failed: {error}", pytrace=False)
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


def _strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever an object lists its properties and
    neither allows other fields nor preserves unknown ones (the API server would prune or refuse them)."""
    if isinstance(schema, dict):
        out = {key: _strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` → the strict JSON schema of every served version of the CRDs in deploy/k8s/schemas."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                    schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return schemas


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def validation_errors(obj: dict[str, Any]) -> list[str]:
    """Why ``obj`` would be refused by a Kubernetes :data:`KUBERNETES_VERSION` API server with the
    CRDs of deploy/k8s/schemas (empty when it validates). Each message names the kind, name and field."""
    kind, api_version = obj.get("kind", "?"), obj.get("apiVersion", "?")
    name = (obj.get("metadata") or {}).get("name", "")
    label = f"{kind} {name!r} ({api_version})"
    errors: list[str] = []
    pattern = _LABEL if kind in _LABEL_NAMED else _SUBDOMAIN
    limit = 63 if kind in _LABEL_NAMED else 253
    if not isinstance(name, str) or not pattern.fullmatch(name) or len(name) > limit:
        errors.append(f"{label}: metadata.name is not a valid Kubernetes name (lower-case letters, digits, '-', '.')")
    crd = crd_schemas().get((api_version, kind))
    if crd is not None:
        validator = jsonschema.Draft7Validator(crd)
        errors += [f"{label}: {e.message} at {_where(e.absolute_path)}" for e in validator.iter_errors(obj)]
        return errors
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        errors.append(
            f"{label}: no schema, neither a Kubernetes {KUBERNETES_VERSION} kind nor a CRD in deploy/k8s/schemas "
            "(add the CRD's released YAML there, see its README)"
        )
    except kubernetes_validate.ValidationError as e:  # a jsonschema.ValidationError: the first error found
        errors.append(f"{label}: {e.message} at {_where(e.absolute_path)}")
    return errors
