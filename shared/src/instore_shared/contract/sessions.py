"""Colleague session events (our own contract), on ``instore.session-events.v1``."""

from __future__ import annotations

import msgspec


class SessionStarted(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The gateway issued a user key for a colleague (an audit record; carries no secret).

    Attributes:
        event_id: a UUID4 for this event (each session is new, so nothing to deduplicate by content).
        type: always ``session-started``.
        user_id: the colleague (the IMS token's ``sub``).
        location_id, workstation_id: where, as the host app said.
        occurred_at: RFC 3339 UTC time the session was issued.
        expires_at: RFC 3339 UTC time the user access token expires.
    """

    event_id: str
    user_id: str
    location_id: str
    workstation_id: str
    occurred_at: str
    expires_at: str
    type: str = "session-started"


MESSAGE_TYPE = "session-started.v1"


def encode(event: SessionStarted) -> bytes:
    """JSON bytes of the event."""
    return msgspec.json.encode(event)
