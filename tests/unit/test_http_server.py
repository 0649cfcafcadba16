"""Every HTTP port of the integration runs on uvicorn with httptools and uvloop (issue 14: checked, not assumed)."""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from instore_shared.service import http_config


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError


def test_http_ports_use_httptools_and_uvloop() -> None:
    config = http_config(_app, "127.0.0.1", 0)
    assert isinstance(config.http, type) and issubclass(config.http, HttpToolsProtocol)
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop"), type(loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
