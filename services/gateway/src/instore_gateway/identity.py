"""Who the colleague is: the retailer's identity system (IMS) JWT, checked against its JWKS.

The host app sends ``Authorization: Bearer <IMS token>`` to ``POST /sessions``; only a
token that passes every check here lets the gateway ask InStore for a user access token
(https://docs.commercetools.com/instore/ — "only after the retailer's identity system
authenticated the colleague"; the JWT details are ours, see instore-contract.md §2).

Checks (PyJWT): the signature with a key of the IMS's JWKS chosen by ``kid``; the
algorithm from an allow-list (never ``none``, never a symmetric one — a public key must
not double as an HMAC secret); ``iss``, ``aud``, ``exp``, ``nbf`` with a small leeway;
``sub`` present. The JWKS is fetched asynchronously, cached, and fetched again at most
every ``refetch_interval`` seconds when a token names an unknown ``kid`` (key rotation).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from instore_shared.logging import get_logger

log = get_logger(__name__)

_SUBJECT = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


class InvalidIdentity(Exception):
    """The IMS token is missing, malformed, expired, not yet valid, for another audience or
    issuer, signed with an unknown key or a forbidden algorithm. ``reason`` is a short code
    for logs (never the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityProviderUnavailable(Exception):
    """The IMS's JWKS could not be fetched (and no cached key fits)."""


@dataclass(frozen=True, slots=True)
class Colleague:
    """The authenticated colleague: ``user_id`` is the token's ``sub``; ``name`` its ``name`` claim, if any."""

    user_id: str
    name: str | None


class ImsVerifier:
    """Verifies IMS JWTs.

    Args:
        jwks_url: the IMS's JWKS document.
        issuer: the exact ``iss`` expected.
        audience: the ``aud`` expected (this integration's client id at the IMS).
        algorithms: allowed ``alg`` values; symmetric ones and ``none`` are refused at construction.
        leeway_seconds: clock skew allowed on ``exp``, ``nbf``, ``iat``.
        cache_seconds: how long a fetched JWKS is trusted.
        refetch_interval: the least time between two fetches (failed ones included).
        max_stale_seconds: keys not refreshed for this long are no longer trusted (IMS down).
        clock: monotonic seconds (tests pass a fake).
        transport: httpx transport (tests).
    """

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway_seconds: float = 30,
        cache_seconds: float = 300,
        refetch_interval: float = 30,
        transport: httpx.AsyncBaseTransport | None = None,
        max_stale_seconds: float = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not algorithms:
            raise ValueError(f"IMS algorithms must be asymmetric JWS algorithms; refused: {bad or 'empty list'}")
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._algorithms = list(algorithms)
        self._leeway = leeway_seconds
        self._cache_seconds = cache_seconds
        self._refetch_interval = refetch_interval
        self._http = httpx.AsyncClient(timeout=5.0, transport=transport)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._clock = clock
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._max_stale_seconds = max_stale_seconds
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    async def verify(self, token: str) -> Colleague:
        """The colleague the token names. Raises :class:`InvalidIdentity` or :class:`IdentityProviderUnavailable`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidIdentity("malformed") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            raise InvalidIdentity("algorithm-not-allowed")
        if not isinstance(kid, str) or not kid:
            raise InvalidIdentity("no-kid")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_nbf": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidIdentity("expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidIdentity("not-yet-valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidIdentity("wrong-audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidIdentity("wrong-issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidIdentity("bad-signature") from exc
        except jwt.PyJWTError as exc:
            raise InvalidIdentity("invalid") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not _SUBJECT.fullmatch(sub):
            # It becomes InStore's user id, a Kafka key and a log field: printable, no spaces, bounded.
            raise InvalidIdentity("bad-subject")
        name = claims.get("name")
        return Colleague(user_id=sub, name=name if isinstance(name, str) else None)

    async def _key(self, kid: str) -> jwt.PyJWK:
        key = self._keys.get(kid)
        if key is not None and self._clock() - self._fetched_at < self._cache_seconds:
            return key
        async with self._lock:
            now = self._clock()
            key = self._keys.get(kid)
            # At most one fetch per refetch_interval, failed ones included: an IMS that is
            # down or hanging is not asked again by every request.
            may_fetch = now - self._attempted_at >= self._refetch_interval
            stale = now - self._fetched_at >= self._cache_seconds
            if may_fetch and (key is None or stale):
                await self._fetch()
                key = self._keys.get(kid)
            if self._clock() - self._fetched_at > self._max_stale_seconds:
                # keys this old may have been revoked: refuse rather than trust them
                raise IdentityProviderUnavailable("IMS keys are too old and cannot be refreshed")
        if key is None:
            raise InvalidIdentity("unknown-key")
        return key

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            jwks = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("ims.jwks_unavailable", url=self._jwks_url, error=type(exc).__name__)
            if not self._keys:
                raise IdentityProviderUnavailable(f"JWKS at {self._jwks_url} unavailable") from exc
            return  # keep serving with the keys we have, up to max_stale_seconds
        self._keys = {k.key_id: k for k in jwks.keys if k.key_id}
        self._fetched_at = self._clock()
        log.info("ims.jwks_fetched", keys=len(self._keys))
