"""``instore-devfakes``: serve the local IMS and the fake InStore auth API, or mint a token.

    python -m instore_devfakes                       # serve on DEVFAKES_HTTP_HOST:DEVFAKES_HTTP_PORT
    python -m instore_devfakes token --user colleague-42 [--url http://127.0.0.1:8090] [--ttl 900]
    python -m instore_devfakes simulate [--gateway URL] [--ims URL] [--timeout 30]

``token`` asks a running fake's ``POST /ims/token`` and prints only the JWT on stdout (so
``TOKEN=$(make -s token)`` works); errors go to stderr with exit code 1. ``simulate`` plays
InStore and the host app against a running stack (:mod:`instore_devfakes.simulator`), one
line per step; it exits 1 naming the step that failed. Its defaults come from the same
environment variables ``make run`` uses.
Development only: the local IMS mints a token for anyone who asks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from instore_devfakes.commands import SIMULATE_DESCRIPTION, add_simulate_arguments, run_simulate
from instore_devfakes.settings import DevFakesSettings
from instore_shared.entrypoint import settings_help

DEFAULT_TTL_SECONDS = 900


def serve() -> None:
    """Read settings from the environment, configure logging, serve until SIGTERM/SIGINT."""
    from instore_devfakes.app import create_app
    from instore_shared.logging import configure_logging
    from instore_shared.service import serve as serve_http
    from instore_shared.settings import load_settings

    settings = load_settings(DevFakesSettings, "instore-devfakes")
    configure_logging("dev-fakes", settings.log_level, settings.log_json)
    # the same server as every service: bounded request heads, no proxy headers, no server header
    serve_http(create_app(settings), settings.http_host, settings.http_port)


def mint_token(url: str, user: str, ttl: int, audience: str | None = None, name: str | None = None, timeout: float = 10) -> str:
    """``POST {url}/ims/token`` and return the JWT; raises ``RuntimeError`` with the reason."""
    body: dict[str, object] = {"userId": user, "ttlSeconds": ttl}
    if audience:
        body["audience"] = audience
    if name:
        body["name"] = name
    request = urllib.request.Request(
        url.rstrip("/") + "/ims/token",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    # a fake on this machine is reached directly, whatever HTTP(S)_PROXY says
    local = urllib.parse.urlsplit(url).hostname in {"127.0.0.1", "localhost", "::1"}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if local else urllib.request.build_opener()
    try:
        with opener.open(request, timeout=timeout) as response:
            return str(json.load(response)["idToken"])
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:500].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"cannot reach the dev fakes at {url} ({reason}); start them with `make run`") from None
    except (KeyError, ValueError) as exc:
        raise RuntimeError(f"{url} gave an unexpected answer ({exc})") from None


def _default_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('DEVFAKES_HTTP_PORT', '8090')}"


def main(argv: list[str] | None = None) -> None:
    """Serve (no sub-command or ``serve``), run ``token`` or ``simulate``; ``--help`` starts nothing."""
    parser = argparse.ArgumentParser(
        prog="instore-devfakes",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="The fakes (no sub-command, or serve) are configured by environment variables only:\n"
        + settings_help([DevFakesSettings]),
    )
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the fakes (the default)")
    token = commands.add_parser("token", help="mint a colleague token from a running local IMS; prints only the JWT")
    token.add_argument("--user", required=True, help="the colleague's user id (the token's sub)")
    token.add_argument("--url", default=_default_url(), help="base URL of the running fakes (default: %(default)s)")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds (default: %(default)s)")
    token.add_argument("--audience", default=None, help="aud claim (default: the fake's DEVFAKES_AUDIENCE)")
    token.add_argument("--name", default=None, help="name claim (default: the user id)")
    simulate = commands.add_parser(
        "simulate",
        help="play InStore against a running stack (make demo)",
        description=SIMULATE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_simulate_arguments(simulate)
    args = parser.parse_args(argv)

    if args.command == "simulate":
        raise SystemExit(run_simulate(args, "instore-devfakes simulate"))
    if args.command == "token":
        try:
            print(mint_token(args.url, args.user, args.ttl, args.audience, args.name))
        except RuntimeError as exc:
            print(f"instore-devfakes token: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        return
    serve()


if __name__ == "__main__":
    main()
