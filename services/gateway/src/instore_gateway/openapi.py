"""The gateway's OpenAPI 3.1 document: what Litestar generates from the routes, finished here.

Litestar derives paths, parameters, responses and the per-operation ``security`` declared on the
route decorators. :func:`finish` adds what it cannot see (it runs once, on the generated dict):

- the ``requestBody`` of the routes that read their body raw (webhooks, payment-extension requests,
  prompt answers — they check a signature over the exact bytes, so Litestar never parses them — and
  the host app's event batches):
  content type, schema (msgspec's JSON Schema of what the gateway reads, or a documented opaque
  JSON object for webhooks) and the size limit (``x-max-body-bytes``, bytes, from settings);
- ``security: []`` on the public operations (health, metrics, the documents), so every operation
  states its authentication — a test fails on one that states nothing;
- ``GET /metrics`` and ``GET /schema/openapi.json`` (served outside Litestar's documented routes);
- a ``HEAD`` operation beside every ``GET`` (served by the edge layer, :mod:`instore_shared.http_head`):
  the same parameters, security and status codes, no content.

The security schemes (:func:`security_schemes`): ``CallbackApiKey`` (``X-Api-Key``), ``ImsBearer``
(the colleague's IMS token), ``SessionUserKey`` (``X-User-Key``) and one ``apiKey`` scheme per
configured signature header (``INSTORE_WEBHOOK_SIGNATURE_HEADERS``, named ``Signature-<header>``;
any one of them signs a request: they are alternatives in each operation's ``security``).

Served at ``/schema/openapi.json`` and committed as ``docs/api/openapi.json`` (``make api-docs``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import msgspec
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin
from litestar.openapi.spec import Components, Reference, SecurityScheme

from instore_gateway.settings import GatewaySettings
from instore_shared.contract import host_events, payment_extensions

SCHEMA_PATH = "/schema"
"""Where the document and its viewer are served (``/schema/openapi.json``, ``/schema``)."""

PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/asyncapi.json",
        "/schemas/host-events-batch.json",
        "/schemas/host-event.json",
        SCHEMA_PATH + "/openapi.json",
    }
)
"""Operations anyone may call (``security: []``)."""

SIGNATURE_DESCRIPTION = (
    "HMAC-SHA256 of the exact request body bytes under the shared webhook secret (INSTORE_WEBHOOK_SECRET), as "
    "InStore sends it: hex (either case) or base64 (standard or URL-safe, padding optional), optionally prefixed "
    "`sha256=`. Checked in constant time over the bytes as received, whatever their Content-Type. Any one of the "
    "configured signature headers may carry it."
)


def signature_scheme(header: str) -> str:
    """The security scheme name of signature header ``header``: ``Signature-<header>`` (characters outside
    ``A-Za-z0-9._-``, which OpenAPI component names cannot hold, as ``_``)."""
    return "Signature-" + re.sub(r"[^A-Za-z0-9._-]", "_", header)


def signature_headers(setting: str) -> list[str]:
    """The signature header names of ``INSTORE_WEBHOOK_SIGNATURE_HEADERS`` (comma-separated), as written."""
    return [name.strip() for name in setting.split(",") if name.strip()]


def signature_security(headers: Sequence[str]) -> list[dict[str, list[str]]]:
    """An operation's ``security``: any one of the signature headers (alternatives)."""
    return [{signature_scheme(name.strip()): []} for name in headers if name.strip()]


def security_schemes(headers: Sequence[str]) -> dict[str, SecurityScheme | Reference]:
    """Every security scheme of the gateway (see the module), the signature ones after ``headers``."""
    schemes: dict[str, SecurityScheme | Reference] = {
        "CallbackApiKey": SecurityScheme(
            type="apiKey",
            name="X-Api-Key",
            security_scheme_in="header",
            description="The Callback API Key registered in InStore Center (INSTORE_CALLBACK_API_KEY); InStore sends "
            "it on every callback. Compared in constant time; exactly one header.",
        ),
        "ImsBearer": SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="JWT",
            description="The colleague's identity token from the IMS (issuer, audience and keys: IMS_* settings), "
            "sent by the host app.",
        ),
        "SessionUserKey": SecurityScheme(
            type="apiKey",
            name="X-User-Key",
            security_scheme_in="header",
            description="The user key POST /sessions answered (43 of A-Z a-z 0-9 _ -); the session must be the "
            "colleague's and not expired.",
        ),
    }
    for name in headers:
        if name.strip():
            schemes[signature_scheme(name.strip())] = SecurityScheme(
                type="apiKey", name=name.strip(), security_scheme_in="header", description=SIGNATURE_DESCRIPTION
            )
    return schemes


class _FinishedJson(JsonRenderPlugin):
    """``/schema/openapi.json``: Litestar's document passed through :func:`finish` (once; the result is cached)."""

    def __init__(self, settings: GatewaySettings) -> None:
        super().__init__()
        self._settings = settings
        self._finished: dict[str, Any] | None = None

    def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
        if self._finished is None:
            self._finished = finish(openapi_schema, self._settings)
        return super().render(request, self._finished)


def openapi_config(settings: GatewaySettings, version: str) -> OpenAPIConfig:
    """The gateway's OpenAPI configuration: its security schemes, the finished JSON document and a viewer at
    ``/schema`` (Scalar, which reads ``/schema/openapi.json``; it loads its script from a CDN)."""
    return OpenAPIConfig(
        title="InStore integration gateway",
        version=version,
        description="The HTTP face of the commercetools InStore integration server: callbacks (guarded by the "
        "Callback API Key), signed webhooks and payment-extension requests, colleague sessions and browser events "
        "for the host app, operations endpoints. Every GET also answers HEAD (headers only). Errors are RFC 9457 "
        "problem bodies (application/problem+json).",
        path=SCHEMA_PATH,
        components=Components(security_schemes=security_schemes(signature_headers(settings.instore_webhook_signature_headers))),
        render_plugins=[
            _FinishedJson(settings),
            ScalarRenderPlugin(path="/"),
        ],
    )


def _body(description: str, schema: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"{description} At most {max_bytes} bytes (413 above).",
        "content": {"application/json": {"schema": schema}},
        "x-max-body-bytes": max_bytes,
    }


_WEBHOOK_BODY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": True,
    "description": "InStore's webhook, stored as received (its schema is InStore's). The gateway reads only what "
    "identifies the work: id, type, and one of cartId, returnCartId, orderNumber (top level or under data).",
    "properties": {
        "id": {"type": "string", "description": "InStore's event id (else the webhook id is sha256:<hash of the body>)"},
        "type": {"type": "string", "description": "e.g. payment.completed"},
        "cartId": {"type": "string"},
        "returnCartId": {"type": "string"},
        "orderNumber": {"type": "string"},
        "data": {"type": "object", "additionalProperties": True},
    },
}

_SIGNED_BYTES = "Signed: the signature covers these exact bytes, so the Content-Type is not checked (any, or none, is taken)."


def finish(doc: dict[str, Any], settings: GatewaySettings) -> dict[str, Any]:
    """The document Litestar generated (``doc``, left unchanged) with what it cannot see (see the module); the body
    limits and signature headers are those of ``settings``.

    Raises :class:`ValueError` when a request body schema would replace a different component of the same name."""
    doc = copy.deepcopy(doc)
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    structs = [payment_extensions.PaymentExtensionRequest, payment_extensions.PromptAnswer, host_events.EventBatch]
    refs, defs = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    for name, schema in defs.items():
        if components.get(name, schema) != schema:
            raise ValueError(f"component schema {name} is already defined differently")
        components[name] = schema
    bodies = {
        "receiveWebhook": _body(
            "An InStore webhook: a JSON object. " + _SIGNED_BYTES, _WEBHOOK_BODY_SCHEMA, settings.webhook_max_body_bytes
        ),
        "paymentExtensionRequest": _body(
            "A payment-extension request (its fields per action: see the description). " + _SIGNED_BYTES,
            refs[0],
            settings.payment_extension_max_body_bytes,
        ),
        "answerPaymentPrompt": _body(
            "The colleague's answer to a payment prompt. " + _SIGNED_BYTES, refs[1], settings.payment_extension_max_body_bytes
        ),
        "postHostEvents": _body(
            f"A batch of 1 to {settings.host_events_max_batch} browser events. Content-Type: application/json or an "
            "application/*+json type (else 415).",
            refs[2],
            settings.host_events_max_body_bytes,
        ),
    }
    paths: dict[str, Any] = doc.setdefault("paths", {})
    paths["/metrics"] = {
        "get": {
            "tags": ["Operations"],
            "summary": "Prometheus metrics of this process",
            "description": "Every metric family of this gateway process, in Prometheus' text exposition format.",
            "operationId": "getMetrics",
            "responses": {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    }
    paths[SCHEMA_PATH + "/openapi.json"] = {
        "get": {
            "tags": ["Operations"],
            "summary": "This OpenAPI 3.1 document",
            "operationId": "getOpenApi",
            "responses": {
                "200": {"description": "the document", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    }
    for path, item in paths.items():
        for method, operation in list(item.items()):
            if method not in {"get", "post"}:
                continue
            if operation.get("operationId") in bodies:
                operation["requestBody"] = bodies[operation["operationId"]]
            if path in PUBLIC_PATHS:
                operation["security"] = []
        if "get" in item and "head" not in item:
            item["head"] = _head_of(item["get"])
    return doc


def _head_of(get: dict[str, Any]) -> dict[str, Any]:
    head = {k: copy.deepcopy(v) for k, v in get.items() if k not in {"responses", "operationId", "summary", "description"}}
    head["summary"] = "HEAD: " + get.get("summary", "the GET's header fields")
    head["description"] = "The header fields the GET would answer (Content-Type, Content-Length included), no body."
    if "operationId" in get:
        head["operationId"] = get["operationId"] + "Head"
    head["responses"] = {
        status: {k: v for k, v in response.items() if k != "content"} for status, response in get["responses"].items()
    }
    return head
