"""The operators' observability files agree with the metrics the services really expose.

Checked here: the Grafana dashboard (deploy/observability/grafana-dashboard.json), the alert rules
(deploy/observability/alerts.yml, and the PrometheusRule generated from it), the
ServiceMonitor/PodMonitor (deploy/k8s/monitoring), docker compose's Prometheus
(deploy/observability/prometheus.yml) and the operators' page docs/operations.md.

Every PromQL expression may name only metric series the services' ``GET /metrics`` serves
(:func:`exposed_families` builds the four apps in this process with fakes and reads their
/metrics), and only labels those series carry — or that Prometheus adds (``job``, ``instance``;
``namespace``, ``pod`` in Kubernetes). Label values in selectors are never ids.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litestar.testing import TestClient
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from instore_cart_mapping.app import create_app as cart_mapping_app
from instore_gateway.app import Ports
from instore_gateway.app import create_app as gateway_app
from instore_gateway.settings import GatewaySettings
from instore_gateway.vault import InMemoryTokenVault
from instore_order_finalization.app import create_app as order_finalization_app
from instore_payment_extension.app import create_app as payment_extension_app
from instore_refund.app import create_app as refund_app
from tests.fakes.commerce import InMemoryCommerce

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
ALERTS = OBSERVABILITY / "alerts.yml"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus.yml"
K8S = ROOT / "deploy" / "k8s"
MONITORING = K8S / "monitoring"
COMPOSE = ROOT / "docker-compose.yml"
OPERATIONS_PAGE = ROOT / "docs" / "operations.md"

# service -> the port serving /healthz, /readyz and /metrics (deploy/k8s, docker compose)
SERVICES = {"gateway": 8080, "cart-mapping": 8081, "order-finalization": 8082, "refund": 8083, "payment-extension": 8084}
KAFKA_SERVICES = ("cart-mapping", "order-finalization", "refund", "payment-extension")
# Labels Prometheus attaches at scrape time (Kubernetes service discovery: namespace, pod).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})


# -- the metrics the code exposes ---------------------------------------------------------------
@dataclass
class Family:
    """One metric family of the /metrics output: its name (counters without ``_total``), its
    type and every label name it carries (from its samples, or as declared when it has none yet)."""

    name: str
    type: str
    labels: set[str] = field(default_factory=set)

    def series(self) -> set[str]:
        """The series names PromQL can select (``_created`` left out: nobody graphs it)."""
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["", "_sum", "_count"],
            "info": ["_info"],
            "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
        }.get(self.type, [""])
        return {self.name + s for s in suffixes}

    def series_labels(self, series: str) -> set[str]:
        """The label names of one of :meth:`series` (``le`` only on histogram buckets)."""
        labels = set(self.labels)
        if self.type in ("histogram", "gaugehistogram") and series.endswith("_bucket"):
            labels.add("le")
        if self.type == "summary" and series == self.name:
            labels.add("quantile")
        return labels


def _declared_labels() -> dict[str, set[str]]:
    """Label names of the registered metric objects, by family name.

    A labelled metric no code path has touched yet prints only its HELP and TYPE lines, so its
    labels are read from the object (prometheus_client keeps them in ``_labelnames``).
    """
    declared: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):  # private: no public way to list collectors
        if isinstance(collector, MetricWrapperBase):
            declared[collector._name] = set(collector._labelnames)
    return declared


def parse_exposition(text: str) -> dict[str, Family]:
    """The families of a Prometheus text exposition (``GET /metrics``)."""
    families: dict[str, Family] = {}
    declared = _declared_labels()
    for parsed in text_string_to_metric_families(text):
        family = families.setdefault(parsed.name, Family(parsed.name, parsed.type))
        for sample in parsed.samples:
            family.labels |= set(sample.labels) - {"le", "quantile"}
        family.labels |= declared.get(parsed.name, set())
    return families


class _Lookups:
    """Cart lookups that fail like a bug: the callback answers 500."""

    async def lookup(self, *args: Any) -> Any:
        raise RuntimeError("a failing lookup (test_observability_artifacts)")

    async def ready(self) -> bool:
        return True


class _Events:
    async def publish(
        self,
        topic: str,
        key: str | None,
        value: bytes,
        *,
        message_type: str,
        timeout_s: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        raise AssertionError("nothing is published in this test")


@cache
def exposed_families() -> dict[str, dict[str, Family]]:
    """What each service's ``GET /metrics`` serves, by service, then by family name.

    Builds the gateway (fake ports; a refused webhook and a callback answered 500, as Litestar
    creates its HTTP families on the first request and its error counter on the first 5xx) and
    cart-mapping, order-finalization and refund (in-memory Composable Commerce; their brokers are
    not started) in this process, then reads each app's /metrics. They share prometheus_client's
    default registry, so each output holds every family registered so far: the union is what the
    services expose.
    """
    outputs: dict[str, str] = {}
    settings = GatewaySettings(instore_callback_api_key="k" * 20, instore_webhook_secret="s" * 32)
    gateway = gateway_app(
        settings,
        Ports(
            cart_lookups=_Lookups(),
            events=_Events(),  # type: ignore[arg-type]
            vault=InMemoryTokenVault(),
        ),
    )
    with TestClient(gateway) as client:
        refused = client.post(
            "/instore/webhooks", content=b"{}", headers={"Content-Type": "application/json", "X-Signature": "0" * 64}
        )
        assert refused.status_code == 401, refused.text
        failed = client.get("/instore/callbacks/carts/a-cart", headers={"X-Api-Key": "k" * 20})
        assert failed.status_code == 500, failed.text
        assert client.get("/healthz").status_code == 200
        response = client.get("/metrics")
        assert response.status_code == 200, "the gateway serves GET /metrics"
        outputs["gateway"] = response.text

    async def scrape(app: Any) -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as http:
            response = await http.get("/metrics")
            assert response.status_code == 200, f"GET /metrics answered {response.status_code}"
            return response.text

    import asyncio

    for name, factory in (
        ("cart-mapping", cart_mapping_app),
        ("order-finalization", order_finalization_app),
        ("refund", refund_app),
        ("payment-extension", payment_extension_app),
    ):
        outputs[name] = asyncio.run(scrape(factory(commerce=InMemoryCommerce())))
    # the reconciler: what it pushes to the Pushgateway (or serves on RECONCILER_METRICS_PORT) after a run
    from prometheus_client import generate_latest

    from instore_order_finalization.reconciler.__main__ import Metrics
    from instore_order_finalization.reconciler.run import RunReport

    reconciler = Metrics()
    reconciler.record(RunReport(dry_run=False, window_from="", window_to=""))
    outputs["reconciler"] = generate_latest(reconciler.registry).decode()
    return {name: parse_exposition(text) for name, text in outputs.items()}


@cache
def all_families() -> dict[str, Family]:
    """Every family any service exposes."""
    merged: dict[str, Family] = {}
    for families in exposed_families().values():
        for name, family in families.items():
            merged.setdefault(name, Family(name, family.type)).labels |= family.labels
    return merged


@cache
def series_labels() -> dict[str, set[str]]:
    """Every selectable series name -> its label names (plus ``up``, which Prometheus writes per target)."""
    known = {series: family.series_labels(series) for family in all_families().values() for series in family.series()}
    return known | {"up": set()}


# -- a small PromQL reader ---------------------------------------------------------------------
AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group"}
)
FUNCTIONS = AGGREGATIONS | frozenset(
    {
        "rate",
        "irate",
        "increase",
        "delta",
        "idelta",
        "deriv",
        "predict_linear",
        "histogram_quantile",
        "abs",
        "absent",
        "absent_over_time",
        "ceil",
        "floor",
        "round",
        "clamp",
        "clamp_min",
        "clamp_max",
        "changes",
        "resets",
        "sort",
        "sort_desc",
        "scalar",
        "vector",
        "time",
        "timestamp",
        "label_replace",
        "label_join",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "last_over_time",
        "quantile_over_time",
        "present_over_time",
        "exp",
        "ln",
        "log2",
        "log10",
        "sqrt",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})
_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<var>\$\{?\w+\}?)
  | (?P<number>\d+(?:\.\d+)?(?:ms|[smhdwy])?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}])
  | (?P<space>\s+)
""",
    re.VERBOSE,
)


@dataclass
class Selector:
    """One vector selector: its metric name and its matchers (label, operator, value)."""

    metric: str | None
    matchers: list[tuple[str, str, str]]


@dataclass
class Query:
    """What :func:`read_promql` found in an expression."""

    selectors: list[Selector]
    grouping: set[str]  # labels of by / without / on / ignoring / group_left / group_right
    aggregated: bool


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos : pos + 30]!r} in {expr!r}")
        pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
    return tokens


def read_promql(expr: str) -> Query:
    """The selectors, grouping labels and aggregation of a PromQL expression (Grafana's ``$variables``
    allowed); raises ValueError on an unknown function or a selector without a metric name."""
    tokens = _tokens(expr)
    query = Query([], set(), False)
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "op" and text == "{":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        if kind != "ident":
            i += 1
            continue
        if text in GROUPING:
            query.aggregated |= text in ("by", "without")
            i += 1
            if following == "(":
                i += 1
                while tokens[i][1] != ")":
                    if tokens[i][0] == "ident":
                        query.grouping.add(tokens[i][1])
                    i += 1
            continue
        if text in AGGREGATIONS and following in ("by", "without"):  # sum by (x) (...)
            query.aggregated = True
            i += 1
            continue
        if following == "(":
            if text not in FUNCTIONS:
                raise ValueError(f"unknown function {text!r} in {expr!r}")
            query.aggregated |= text in AGGREGATIONS
            i += 1
            continue
        if text in KEYWORDS:
            i += 2 if text == "offset" else 1
            continue
        matchers: list[tuple[str, str, str]] = []
        i += 1
        if following == "{":
            i += 1
            while tokens[i][1] != "}":
                (label_kind, label), (_, operator), (value_kind, value) = tokens[i : i + 3]
                if label_kind != "ident" or operator not in ("=", "!=", "=~", "!~") or value_kind != "string":
                    raise ValueError(f"cannot read the matchers of {text} in {expr!r}")
                matchers.append((label, operator, value[1:-1]))
                i += 3
                if tokens[i][1] == ",":
                    i += 1
            i += 1
        query.selectors.append(Selector(text, matchers))
    return query


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and labels excluded)."""
    return {s.metric for s in read_promql(expr).selectors if s.metric is not None}


def test_promql_reader() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, path) (rate(instore_http_request_duration_seconds_bucket"
        '{job=~"$job", status_code=~"5.."}[$__rate_interval]))) / on (path) group_left sum(up) or vector(0)'
    )
    query = read_promql(expr)
    assert promql_metric_names(expr) == {"instore_http_request_duration_seconds_bucket", "up"}
    assert query.selectors[0].matchers == [("job", "=~", "$job"), ("status_code", "=~", "5..")]
    assert query.grouping == {"le", "path"} and query.aggregated
    assert promql_metric_names("x unless x offset 10m or increase(y_total[10m]) > 0") == {"x", "y_total"}
    assert not read_promql("instore_ready == 0").aggregated
    with pytest.raises(ValueError, match="unknown function"):
        read_promql("sum_of(x)")
    with pytest.raises(ValueError, match="without a metric name"):
        read_promql('{__name__="x"}')


# -- the artifacts -----------------------------------------------------------------------------
def _yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_targets() -> Iterator[tuple[str, str, str]]:
    """(panel title, expr, legendFormat) of every dashboard query."""
    for panel in dashboard()["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"], target.get("legendFormat", "")


def alert_rules() -> list[dict[str, Any]]:
    (doc,) = _yaml(ALERTS)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def all_expressions() -> list[tuple[str, str]]:
    """(where, expr) of every dashboard query and alert rule."""
    return [(f"dashboard panel {title!r}", expr) for title, expr, _ in dashboard_targets()] + [
        (f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()
    ]


def _variable_queries() -> list[tuple[str, str]]:
    """(variable, metric selector) of the dashboard's label_values(...) variables."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query}"
            found.append((match[2], match[1]))
    return found


def test_the_files_parse() -> None:
    assert dashboard()["panels"]
    assert alert_rules()
    assert _yaml(PROMETHEUS_CONFIG)
    for path in MONITORING.glob("*.yaml"):
        assert _yaml(path), path


# -- names and labels exist in the real /metrics output -----------------------------------------
def test_every_service_serves_metrics_with_the_process_families() -> None:
    for service, families in exposed_families().items():
        assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= set(families), service
        if service != "reconciler":  # a job: no /readyz, so no readiness gauge
            assert "instore_ready" in families, f"{service} exposes instore_ready"
    assert {"instore_http_requests", "instore_webhooks_refused"} <= set(exposed_families()["gateway"])
    for service in KAFKA_SERVICES:
        assert {"instore_received_messages", "instore_received_processed_messages"} <= set(exposed_families()[service])


@pytest.mark.parametrize("where, expr", all_expressions())
def test_promql_names_only_exposed_series_and_their_labels(where: str, expr: str) -> None:
    known = series_labels()
    query = read_promql(expr)
    used: set[str] = set()
    for selector in query.selectors:
        assert selector.metric in known, f"{where}: {selector.metric} is not in the services' /metrics output"
        labels = known[selector.metric] | TARGET_LABELS
        used |= labels
        unknown = {label for label, _, _ in selector.matchers} - labels
        assert not unknown, f"{where}: {selector.metric} has no label {sorted(unknown)}"
    unknown = query.grouping - used
    assert not unknown, f"{where}: grouping by {sorted(unknown)}, which none of its series carries"


def _output_labels(expr: str) -> set[str]:
    """The labels an expression's result can carry (the grouping of an aggregation, else all)."""
    query = read_promql(expr)
    if query.aggregated:
        return query.grouping - {"le"}
    known = series_labels()
    return set().union(*(known.get(s.metric or "", set()) for s in query.selectors)) | TARGET_LABELS


def test_dashboard_legends_name_labels_of_their_query() -> None:
    for title, expr, legend in dashboard_targets():
        missing = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)) - _output_labels(expr)
        assert not missing, f"panel {title!r}: the legend names {sorted(missing)}, not in the result of {expr}"


def test_alert_annotations_name_labels_of_their_rule() -> None:
    for rule in alert_rules():
        text = " ".join(rule["annotations"].values())
        missing = set(re.findall(r"\$labels\.(\w+)", text)) - _output_labels(rule["expr"])
        assert not missing, f"{rule['alert']}: annotations name {sorted(missing)}, not in its result"


def test_dashboard_variables_read_exposed_labels() -> None:
    known = series_labels()
    variables = _variable_queries()
    assert {name for name, _ in variables} == {"namespace", "job"}
    for label, selector in variables:
        (metric,) = promql_metric_names(selector)
        assert metric in known
        assert label in known[metric] | TARGET_LABELS
        (job,) = [value for name, _, value in read_promql(selector).selectors[0].matchers if name == "job"]
        assert set(job.split("|")) == set(SERVICES), f"variable {label}: every service, not {job!r}"


# -- label values are never ids ----------------------------------------------------------------
# What selectors may match per label (alternatives of a regex split on |); other labels: only
# Grafana variables. Ids (cart ids, order numbers, user ids) never appear in a label at all.
ALLOWED_VALUES: dict[str, set[str]] = {
    "job": {"$job", *SERVICES},
    "namespace": {"$namespace"},
    "app_name": set(SERVICES),
    "status_code": {"5.."},
    "status": {"error", "nacked", "rejected", "429", "5..", "failed", "timed-out"},
    "action": {"handed", "reported"},
    "kind": {"refund-without-return", "unordered-cart", "unannounced-order"},
    "outcome": {"504"},
    "path": {"/healthz", "/readyz", "/metrics"},
}
_ID_SHAPES = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}|\d{5,}|[0-9a-fA-F]{16,}|store-|colleague-")


@pytest.mark.parametrize("where, expr", all_expressions())
def test_label_values_are_never_ids(where: str, expr: str) -> None:
    for selector in read_promql(expr).selectors:
        for label, _, value in selector.matchers:
            assert not _ID_SHAPES.search(value), f"{where}: {label}={value!r} looks like an id"
            alternatives = set(value.split("|"))
            allowed = ALLOWED_VALUES.get(label, set())
            assert alternatives <= allowed, f"{where}: {label} matches {sorted(alternatives - allowed)}, not a known value"


def test_catalogue_labels_carry_no_ids() -> None:
    """No exposed instore_* family has a label named like an id."""
    for family in all_families().values():
        if family.name.startswith("instore_"):
            ids = {label for label in family.labels if re.search(r"(^|_)(id|key|number|user|cart)$", label)}
            assert not ids, f"{family.name} has id labels {sorted(ids)}"


# -- the dashboard -----------------------------------------------------------------------------
def test_dashboard_shape() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    for title, expr, _ in dashboard_targets():
        for selector in read_promql(expr).selectors:
            assert ("job", "=~", "$job") in selector.matchers, f"panel {title!r}: {selector.metric} ignores $job"
            assert ("namespace", "=~", "$namespace") in selector.matchers, f"panel {title!r}: {selector.metric}"


def test_dashboard_covers_the_issue() -> None:
    """Golden signals of each service, webhook-to-Order latency, lag, dead letters, cart lookups,
    Composable Commerce, webhooks accepted/refused, the token vault, payment-extension results, provider calls and
    POSTs to InStore."""
    used = set().union(*(promql_metric_names(expr) for _, expr, _ in dashboard_targets()))
    families = {name.removesuffix("_bucket").removesuffix("_total") for name in used}
    assert {
        "up",
        "instore_ready",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "instore_http_requests",
        "instore_http_request_duration_seconds",
        "instore_http_requests_in_progress",
        "instore_received_messages",
        "instore_received_processed_messages",
        "instore_received_processed_messages_duration_seconds",
        "instore_received_messages_in_process",
        "instore_published_messages",
        "instore_webhook_to_event_seconds",
        "instore_kafka_consumer_lag",
        "instore_dead_letters",
        "instore_cart_lookups",
        "instore_cart_lookup_round_trip_seconds",
        "instore_commerce_requests",
        "instore_commerce_request_duration_seconds",
        "instore_outage_retries",
        "instore_webhooks_accepted",
        "instore_webhooks_refused",
        "instore_token_vault_operations",
        "instore_payment_extension_results",
        "instore_payment_provider_calls",
        "instore_instore_posts",
    } <= families


# -- the alert rules ---------------------------------------------------------------------------
def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("prometheus_rule", ROOT / "scripts" / "prometheus_rule.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheus_rule_holds_the_rules_of_alerts_yml() -> None:
    (rule,) = _yaml(MONITORING / "prometheus-rule.yaml")
    (groups,) = _yaml(ALERTS)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"] == groups
    assert (MONITORING / "prometheus-rule.yaml").read_text(encoding="utf-8") == _load_generator().render(), (
        "prometheus-rule.yaml is stale: uv run --frozen python scripts/prometheus_rule.py"
    )


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _operations_section() -> str:
    return OPERATIONS_PAGE.read_text(encoding="utf-8")


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    anchors = {_github_anchor(h) for h in re.findall(r"^#{2,6} (.+)$", _operations_section(), re.MULTILINE)}
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("https://") and "/docs/operations.md#" in url, url
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: docs/operations.md has no #{url.split('#')[1]}"
    exprs = " ".join(r["expr"] for r in rules)
    for needed in (
        "increase(instore_dead_letters_total[10m])",
        "instore_kafka_consumer_lag",
        'outcome="504"',
        'status_code=~"5.."',
        "instore_ready == 0",
        "up{",
        "instore_commerce_requests_total",
        "instore_outage_retries_total",
        'instore_payment_extension_results_total{status=~"failed|timed-out"}',
    ):
        assert needed in exprs, needed
    # every scraped service is in the `up` job regexes (InStoreTargetDown, InStoreServiceUnavailable)
    for rule in rules:
        for regex in re.findall(r'up\{job=~"([^"]+)"\}', rule["expr"]):
            assert set(regex.split("|")) == set(SERVICES), f"{rule['alert']}: up{{job=~{regex!r}}}"
    (failures,) = [r for r in rules if r["alert"] == "InStorePaymentExtensionFailures"]
    assert failures["for"] == "10m" and failures["labels"]["severity"] == "warning"


# -- Kubernetes: monitors match the Deployments ------------------------------------------------
def _k8s(name: str) -> list[dict[str, Any]]:
    return _yaml(K8S / "base" / name)


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_monitoring_is_its_own_kustomization() -> None:
    (base,) = _k8s("kustomization.yaml")
    assert not any(r.startswith("monitoring") for r in base["resources"]), "the base must apply without the operator"
    (monitoring,) = _yaml(MONITORING / "kustomization.yaml")
    assert monitoring["namespace"] == base["namespace"]
    assert sorted(monitoring["resources"]) == sorted(p.name for p in MONITORING.glob("*.yaml") if p.name != "kustomization.yaml")
    kinds = {doc["kind"] for name in monitoring["resources"] for doc in _yaml(MONITORING / name)}
    assert kinds == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_service_monitor_scrapes_the_gateway_service() -> None:
    (monitor,) = _yaml(MONITORING / "service-monitor.yaml")
    service = _kind(_k8s("gateway.yaml"), "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "gateway"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_pod_monitor_scrapes_the_kafka_services() -> None:
    (monitor,) = _yaml(MONITORING / "pod-monitor.yaml")
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    assert expression["operator"] == "In" and sorted(expression["values"]) == sorted(KAFKA_SERVICES)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    for service in KAFKA_SERVICES:
        pod = _kind(_k8s(f"{service}.yaml"), "Deployment")["spec"]["template"]
        assert pod["metadata"]["labels"][expression["key"]] == service
        assert pod["metadata"]["labels"][monitor["spec"]["jobLabel"]] == service
        (container,) = pod["spec"]["containers"]
        (port,) = [p for p in container["ports"] if p["name"] == endpoint["port"]]
        assert port["containerPort"] == SERVICES[service]


def test_pod_annotations_name_the_metrics_port() -> None:
    for service, port in SERVICES.items():
        pod = _kind(_k8s(f"{service}.yaml"), "Deployment")["spec"]["template"]
        assert pod["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
        }, service


# -- docker compose ----------------------------------------------------------------------------
def test_compose_prometheus_scrapes_every_service() -> None:
    (compose,) = _yaml(COMPOSE)
    prometheus = compose["services"]["prometheus"]
    assert re.fullmatch(r"\$\{PROMETHEUS_IMAGE:-prom/prometheus:v3\.\d+\.\d+\}", prometheus["image"])
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in prometheus["volumes"])
    assert mounts == {
        "./deploy/observability/prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./deploy/observability/alerts.yml": "/etc/prometheus/alerts.yml",
    }
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    (config,) = _yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(SERVICES)
    for service, port in SERVICES.items():
        assert service in compose["services"]
        assert jobs[service].get("metrics_path", "/metrics") == "/metrics"
        (discovery,) = jobs[service]["dns_sd_configs"]
        assert discovery == {"names": [service], "type": "A", "port": port}


# -- docs/operations.md ------------------------------------------------------------------------
def test_operations_page_documents_every_exposed_family() -> None:
    section = _operations_section()
    table = {m[1]: (m[2], m[3]) for m in re.finditer(r"^\| `(instore_\w+)` \| (\w+) \|([^|]*)\|", section, re.MULTILINE)}
    families = all_families()
    # The classic text format prints a counter's or histogram's creation time as a gauge family of its own.
    exposed = {
        f.name: f
        for f in families.values()
        if f.name.startswith("instore_") and not (f.name.endswith("_created") and f.name.removesuffix("_created") in families)
    }

    def documented_name(family: Family) -> str:
        return family.name + ("_total" if family.type == "counter" else "")

    assert set(table) == {documented_name(f) for f in exposed.values()}, "docs/operations.md's metric table and /metrics differ"
    for family in exposed.values():
        kind, labels = table[documented_name(family)]
        assert kind == family.type, family.name
        assert set(re.findall(r"`(\w+)`", labels)) == family.labels, f"{family.name}: labels {sorted(family.labels)}"
    for rule in alert_rules():
        assert re.search(rf"^#+ {rule['alert']}$", section, re.MULTILINE), f"docs/operations.md: no heading {rule['alert']}"
    for needle in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "trace_id",
        "span_id",
        "make replay-dlq",
        "/otlp/traces",
        "kubectl apply -k deploy/k8s/monitoring",
    ):
        assert needle in section, needle
