"""InStore's browser events, forwarded by the host app: ``POST /host/events`` → ``instore.host-events.v1``.

Documented (https://docs.commercetools.com/instore/ — embedding InStore as a federated component;
../shared/reference/instore-contract.md §8): the component dispatches window events —
``mistStatus`` (``detail``: ``process`` = checkout | refund | deviceregistration | cashmanagement,
``status`` = success | cancelled | error | activated, ``message`` when error),
``inStoreCore-Alert`` (a localized message for a toast) and ``inStoreCore-receiptChoice``
(print, email or SMS). The server never sees them unless the host app forwards them.

OURS (assumed where the docs are silent): the batch body, the per-event envelope
(``type``, ``detail``, ``occurredAt``, ``cartId``, ``id``) and the event we publish. Known types
are checked for the documented fields; unknown types and extra fields are kept raw (InStore may
add them). The colleague, location and workstation come from the IMS token and the session,
never from the body.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

MESSAGE_TYPE = "host-event.v1"
_NAMESPACE = uuid.UUID("0d7f1e2a-6a43-5c55-8f0e-5b1c9d3e4a71")

MIST_STATUS = "mistStatus"
ALERT = "inStoreCore-Alert"
RECEIPT_CHOICE = "inStoreCore-receiptChoice"

PROCESSES = frozenset({"checkout", "refund", "deviceregistration", "cashmanagement"})
STATUSES = frozenset({"success", "cancelled", "error", "activated"})

Short = Annotated[str, msgspec.Meta(max_length=256)]


class BrowserEvent(msgspec.Struct, frozen=True):
    """One window event as the host app forwards it: ``{"type", "detail"?, "occurredAt"?, "cartId"?, "id"?}``.
    ``id`` (the helper's own, per event) makes a retried batch deduplicable downstream."""

    type: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
    detail: Any = None
    occurredAt: Short | None = None
    cartId: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{2,256}$")] | None = None
    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._:-]{1,128}$")] | None = None


class EventBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /host/events`` body: ``{"events": [BrowserEvent, ...]}``."""

    events: list[BrowserEvent]


def detail_problem(event: BrowserEvent) -> str | None:
    """What is wrong with a known event's ``detail`` (a sentence), or None. Unknown types are not checked."""
    detail = event.detail
    if event.type == MIST_STATUS:
        if not isinstance(detail, dict):
            return "mistStatus needs a detail object"
        if detail.get("process") not in PROCESSES:
            return f"mistStatus detail.process must be one of {sorted(PROCESSES)}"
        if detail.get("status") not in STATUSES:
            return f"mistStatus detail.status must be one of {sorted(STATUSES)}"
        if "message" in detail and not isinstance(detail["message"], str):
            return "mistStatus detail.message must be a string"
    elif event.type == ALERT:
        if not (isinstance(detail, str) or (isinstance(detail, dict) and isinstance(detail.get("message"), str))):
            return "inStoreCore-Alert needs a message (detail as a string, or detail.message)"
    elif event.type == RECEIPT_CHOICE and not isinstance(detail, str | dict):
        return "inStoreCore-receiptChoice needs a detail (the choice, or an object)"
    return None


class HostEvent(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``instore.host-events.v1`` (our contract, for downstream teams): one browser event, keyed by ``cartId`` when the
    event names one, else the workstation. ``event_id``: derived from the session and the helper's ``id`` when given
    (a retried batch repeats it: deduplicate by it), else random. ``detail`` is kept as sent."""

    event_id: str
    type: str
    detail: Any
    cart_id: str | None
    colleague_id: str
    location_id: str
    workstation_id: str
    occurred_at: str | None
    received_at: str
    kind: str = "host-event"


def event_id(session_ref: str, client_id: str | None) -> str:
    """UUID5 of the session reference and the helper's event id; a random UUID4 without one."""
    if client_id is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_NAMESPACE, f"{session_ref}:{client_id}"))
