"""Typed Composable Commerce errors, mapped from the API's error body.

Error body (https://docs.commercetools.com/api/errors):
``{"statusCode": int, "message": str, "errors": [{"code": str, "message": str, ...}]}``.
"""

from __future__ import annotations

from typing import Any

import msgspec


class CommercetoolsError(Exception):
    """Any error answer of Composable Commerce.

    Attributes:
        status: HTTP status code.
        code: the first error's ``code`` (e.g. ``InvalidOperation``), or ``""``.
        message: the API's message.
        errors: the raw ``errors`` list.
    """

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []


class NotFound(CommercetoolsError):
    """404 ``ResourceNotFound``: no resource with that id or key."""


class ConcurrentModification(CommercetoolsError):
    """409 ``ConcurrentModification``; ``current_version`` is the resource's version now (or None)."""

    def __init__(self, *args: Any, current_version: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.current_version = current_version


class DuplicateField(CommercetoolsError):
    """400 ``DuplicateField``: ``field`` already holds ``duplicate_value`` elsewhere (e.g. an orderNumber)."""

    def __init__(self, *args: Any, field: str | None = None, duplicate_value: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.field = field
        self.duplicate_value = duplicate_value


class InvalidInput(CommercetoolsError):
    """400 (``InvalidInput``, ``InvalidOperation``, ``InvalidJsonInput``, ...): will never succeed as sent."""


class AuthenticationFailed(CommercetoolsError):
    """The OAuth token endpoint refused the client credentials (or answered nonsense)."""


class TransientError(CommercetoolsError):
    """429, 5xx or a network failure that outlived the bounded retries."""


def error_from_response(status: int, body: bytes) -> CommercetoolsError:
    """Map a non-2xx answer to the most specific :class:`CommercetoolsError` subclass."""
    try:
        payload = msgspec.json.decode(body) if body else {}
    except msgspec.DecodeError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    errors = payload.get("errors") if isinstance(payload.get("errors"), list) else []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    code = str(first.get("code", ""))
    message = str(payload.get("message") or first.get("message") or "")
    if status == 404:
        return NotFound(status, code or "ResourceNotFound", message, errors)
    if status == 409 or code == "ConcurrentModification":
        current = first.get("currentVersion")
        return ConcurrentModification(
            status,
            code or "ConcurrentModification",
            message,
            errors,
            current_version=current if isinstance(current, int) else None,
        )
    if code == "DuplicateField":
        return DuplicateField(
            status,
            code,
            message,
            errors,
            field=first.get("field"),
            duplicate_value=first.get("duplicateValue"),
        )
    if status == 429 or status >= 500:
        return TransientError(status, code, message, errors)
    return InvalidInput(status, code, message, errors)
