"""The API documents as committed in ``docs/api/``: ``openapi.json`` (the gateway's HTTP API) and ``asyncapi.json``
(every Kafka topic).

``python -m instore_gateway.api_docs`` (``make api-docs``) writes both; ``--check`` only compares and exits 1
when a committed copy differs from what the code generates (a unit test does the same). The documents are
those a gateway with the default settings serves at ``/schema/openapi.json`` and ``/asyncapi.json`` — the
environment is not read, so the copy does not depend on who generates it (a deployment that changes
``INSTORE_WEBHOOK_SIGNATURE_HEADERS`` or the body limits serves its own values).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from litestar.serialization import encode_json

DOCS_DIR = Path(__file__).resolve().parents[4] / "docs" / "api"
"""``docs/api`` of the repository this module is in."""


@contextmanager
def _no_environment() -> Iterator[None]:
    """The process environment emptied for the duration (settings take their defaults)."""
    with mock.patch.dict(os.environ, clear=True):
        yield


def openapi_document() -> dict[str, Any]:
    """The gateway's OpenAPI document under the default settings, as ``/schema/openapi.json`` serves it."""
    from instore_gateway.app import Ports, create_app
    from instore_gateway.openapi import finish
    from instore_gateway.settings import GatewaySettings

    with _no_environment():
        settings = GatewaySettings(instore_callback_api_key="document-generation-only")
    # The ports are never used: the lifespan does not run, only the routes are read.
    app = create_app(settings, Ports(cart_lookups=object(), events=object(), vault=object(), ims=object(), instore_auth=object()))  # type: ignore[arg-type]
    generated = json.loads(encode_json(app.openapi_schema.to_schema()))
    finished: dict[str, Any] = finish(generated, settings)
    return finished


def asyncapi_document() -> dict[str, Any]:
    """The integration's AsyncAPI document, as the gateway's ``/asyncapi.json`` serves it."""
    from instore_shared.kafka.asyncapi import document

    return document()


def render(doc: dict[str, Any]) -> str:
    """``doc`` as committed: JSON, 2-space indent, keys in generation order, non-ASCII kept, final newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def documents() -> dict[str, str]:
    """File name in ``docs/api`` → its content."""
    return {"openapi.json": render(openapi_document()), "asyncapi.json": render(asyncapi_document())}


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` compare) ``docs/api/openapi.json`` and ``docs/api/asyncapi.json``; exit 1 when
    ``--check`` finds a stale copy."""
    parser = argparse.ArgumentParser(prog="python -m instore_gateway.api_docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a committed copy is stale")
    parser.add_argument("--dir", type=Path, default=DOCS_DIR, help=f"where the documents go (default {DOCS_DIR})")
    args = parser.parse_args(argv)
    stale = []
    for name, content in documents().items():
        path: Path = args.dir / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            print(f"{path}: up to date")
        elif args.check:
            stale.append(path)
            print(f"{path}: stale (run `make api-docs`)", file=sys.stderr)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            print(f"{path}: written")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
