"""The allow-list of addresses a payment extension may call back (``statusUrl``, ``callbackUrl``): SSRF protection.

Both URLs come from the request body, so without a check anyone who can get a request signed
(or a bug upstream) could make the service POST to any address it can reach — the
Kubernetes API, a cloud metadata endpoint, Kafka's admin port. Only a URL whose scheme, host
and port match an entry is ever called; redirects are never followed (the clients set
``follow_redirects=False``), so an allowed host cannot bounce us elsewhere.

An entry is ``scheme://host[:port]``; a host ``*.example.com`` matches every subdomain of
example.com (not example.com itself); a missing port means the scheme's default (443 for
https, 80 for http). URLs with user info (``https://a@b``), without a host, or with a
scheme other than http/https never match. Our own code: the rule is small and the
standard library's parser does the hard part (:func:`urllib.parse.urlsplit`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}
_HOST = re.compile(r"[a-z0-9.-]{1,253}|[0-9a-f:.]{2,45}", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Entry:
    scheme: str
    host: str  # lower case; "*.x" for subdomains of x
    port: int

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host


class InvalidAllowList(ValueError):
    """An entry of the allow-list setting is not ``scheme://host[:port]``."""


def _split(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return None
    if any(ch in url for ch in "\\\r\n\t ") or not _HOST.fullmatch(parts.hostname):
        return None  # ASCII host names and IP literals only: no IDNA mapping between our check and the connection
    return scheme, parts.hostname.lower().rstrip("."), port if port is not None else _DEFAULT_PORTS[scheme]


class UrlAllowList:
    """Parsed from a comma-separated setting, e.g. ``https://*.commercetools.com,http://127.0.0.1:8090``."""

    def __init__(self, setting: str) -> None:
        self.entries: list[_Entry] = []
        for raw in (item.strip() for item in setting.split(",")):
            if not raw:
                continue
            split = _split(raw.replace("*.", "wildcard-placeholder.", 1))
            path = urlsplit(raw).path
            if split is None or path not in ("", "/"):
                raise InvalidAllowList(f"not scheme://host[:port]: {raw!r}")
            scheme, host, port = split
            self.entries.append(_Entry(scheme, host.replace("wildcard-placeholder.", "*.", 1), port))

    def allows(self, url: str) -> bool:
        """True when ``url``'s scheme, host and port match an entry."""
        split = _split(url)
        return split is not None and any(entry.matches(*split) for entry in self.entries)

    def __repr__(self) -> str:
        return "UrlAllowList(" + ", ".join(f"{e.scheme}://{e.host}:{e.port}" for e in self.entries) + ")"
