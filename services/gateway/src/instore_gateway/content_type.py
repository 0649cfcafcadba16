"""``Content-Type`` of the host app's JSON bodies: JSON or 415 (RFC 9110 §15.5.16).

Applies to the routes a host app calls with a JSON body (``POST /sessions``, ``POST /host/events``),
never to InStore's signed calls (webhooks, payment-extension requests, prompt answers): there the
HMAC authenticates the exact bytes, whatever their label, and refusing over a header would drop a
real webhook that InStore will not send differently.

Accepted: ``application/json`` and any ``application/<name>+json`` (the structured syntax suffix,
RFC 6839 §3.1), compared case-insensitively (RFC 9110 §8.3.1), with any parameters (``charset`` —
JSON is UTF-8 whatever it says, RFC 8259 §8.1 — or others). Missing, repeated or anything else: 415
``unsupported-media-type`` with ``Accept-Post: application/json`` naming what is taken (the field
RFC 9110 §15.5.16 points to for POST).
"""

from __future__ import annotations

import re
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from instore_gateway.problems import ProblemError

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_JSON_MEDIA_TYPE = re.compile(rf"application/(?:{_TOKEN}\+)?json", re.IGNORECASE)

ACCEPT_POST = "application/json"
"""What the 415 answer says is taken (``Accept-Post``)."""


def is_json(content_type: str) -> bool:
    """True when the ``Content-Type`` value ``content_type`` is JSON: its media type (before any ``;``, without
    surrounding whitespace) is ``application/json`` or ``application/*+json``, in any case."""
    return bool(_JSON_MEDIA_TYPE.fullmatch(content_type.split(";", 1)[0].strip(" \t")))


def require_json(given: list[str]) -> None:
    """Raise the 415 problem unless ``given`` (the request's ``Content-Type`` values) is exactly one JSON type."""
    if len(given) != 1 or not is_json(given[0]):
        raise ProblemError(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "the body must be JSON: Content-Type application/json (parameters such as charset allowed) "
            "or an application/*+json type",
            headers={"Accept-Post": ACCEPT_POST},
        )


async def json_body_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Litestar guard: :func:`require_json` over the request's ``Content-Type``."""
    require_json(connection.headers.getall("content-type", []))
