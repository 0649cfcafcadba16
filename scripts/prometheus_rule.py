"""Writes deploy/k8s/monitoring/prometheus-rule.yaml from deploy/observability/alerts.yml.

The alert rules live once, in the plain Prometheus rules file (docker compose's Prometheus loads
it); the Prometheus Operator's ``PrometheusRule`` carries the same ``groups`` under ``spec``.
Run after editing alerts.yml::

    uv run --frozen python scripts/prometheus_rule.py           # rewrite the PrometheusRule
    uv run --frozen python scripts/prometheus_rule.py --check   # exit 1 when it is stale

tests/unit/test_observability_artifacts.py checks the committed file against :func:`render`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "deploy" / "observability" / "alerts.yml"
TARGET = ROOT / "deploy" / "k8s" / "monitoring" / "prometheus-rule.yaml"

HEADER = """\
# GENERATED from deploy/observability/alerts.yml by scripts/prometheus_rule.py: edit that file,
# then run `uv run --frozen python scripts/prometheus_rule.py`. Applied by deploy/k8s/monitoring
# (kubectl apply -k deploy/k8s/monitoring), which needs the Prometheus Operator's CRDs.
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the longer expressions) as literal blocks, as in the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(groups: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule (monitoring.coreos.com/v1) whose ``spec`` is the rules file ``groups``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "instore-integration",
            "labels": {"app.kubernetes.io/name": "instore-integration", "app.kubernetes.io/component": "alerts"},
        },
        "spec": groups,
    }


def render(source: Path = SOURCE) -> str:
    """The text of prometheus-rule.yaml for the rules file at ``source``."""
    groups = yaml.safe_load(source.read_text(encoding="utf-8"))
    body = yaml.dump(prometheus_rule(groups), Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + body


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET.relative_to(ROOT)} is stale: run `uv run --frozen python scripts/prometheus_rule.py`")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
