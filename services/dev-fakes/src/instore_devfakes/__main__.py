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

from instore_devfakes.settings import DevFakesSettings

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


def _simulate(args: argparse.Namespace) -> int:
    """Run the simulator; the callback key, webhook secret and CTP_* settings come from the environment."""
    import asyncio

    from instore_devfakes.simulator import SimulatorConfig, StepFailed, simulate
    from instore_shared.logging import configure_logging
    from instore_shared.settings import CommercetoolsSettings, load_settings

    # stdout carries the steps and the summary; the libraries' own lines (warnings) go to stderr
    configure_logging("simulator", os.environ.get("SIMULATOR_LOG_LEVEL", "WARNING"), json=False, stream=sys.stderr)

    for var in ("INSTORE_CALLBACK_API_KEY", "INSTORE_WEBHOOK_SECRET", "CTP_CLIENT_ID"):
        if not os.environ.get(var):
            print(f"instore-devfakes simulate: {var} is not set (make demo and make run set it)", file=sys.stderr)
            return 2
    config = SimulatorConfig(
        gateway_url=args.gateway.rstrip("/"),
        ims_url=args.ims.rstrip("/"),
        callback_api_key=os.environ["INSTORE_CALLBACK_API_KEY"],
        webhook_secret=os.environ["INSTORE_WEBHOOK_SECRET"],
        kafka_bootstrap_servers=args.kafka,
        commerce=load_settings(CommercetoolsSettings, "instore-devfakes simulate"),
        colleague=args.user,
        currency=os.environ.get("INSTORE_CURRENCY", "EUR"),
        timeout_seconds=args.timeout,
    )
    try:
        summary = asyncio.run(simulate(config, sys.stdout))
    except StepFailed as exc:
        print(f"\nsimulate: FAILED at step {exc.step!r}: {exc.reason}", file=sys.stderr)
        return 1
    print("\nsimulate: OK\n" + "\n".join("  " + line for line in summary.lines()))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Serve (no sub-command) or run ``token``."""
    parser = argparse.ArgumentParser(prog="instore-devfakes", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the fakes (the default)")
    token = commands.add_parser("token", help="mint a colleague token from a running local IMS; prints only the JWT")
    token.add_argument("--user", required=True, help="the colleague's user id (the token's sub)")
    token.add_argument("--url", default=_default_url(), help="base URL of the running fakes (default: %(default)s)")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="lifetime in seconds (default: %(default)s)")
    token.add_argument("--audience", default=None, help="aud claim (default: the fake's DEVFAKES_AUDIENCE)")
    token.add_argument("--name", default=None, help="name claim (default: the user id)")
    env = os.environ.get
    simulate = commands.add_parser("simulate", help="play InStore against a running stack (make demo)")
    simulate.add_argument(
        "--gateway",
        default=f"http://127.0.0.1:{env('GATEWAY_HTTP_PORT', '8080')}",
        help="gateway base URL (default: %(default)s, from GATEWAY_HTTP_PORT)",
    )
    simulate.add_argument("--ims", default=_default_url(), help="dev fakes base URL (default: %(default)s)")
    simulate.add_argument(
        "--kafka",
        default=env("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{env('KAFKA_PORT', '9092')}",
        help="Kafka bootstrap servers (default: %(default)s, from KAFKA_BOOTSTRAP_SERVERS or KAFKA_PORT)",
    )
    simulate.add_argument("--timeout", type=float, default=30.0, help="seconds each step may take (default: %(default)s)")
    simulate.add_argument("--user", default="colleague-42", help="the colleague's user id (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.command == "simulate":
        raise SystemExit(_simulate(args))
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
