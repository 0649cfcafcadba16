"""`make run`'s banner (scripts/run-local.sh) expands in bash without errors.

The banner is a here-document printed only after every service is ready, so a bash expansion
error in it (a quote inside ``${…}`` once broke it: "bad substitution") stopped the whole
stack — and `make demo` — after a clean start. This runs exactly that part of the script, in
bash, with the variables run-local.sh sets before it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run-local.sh"


def _banner_source() -> str:
    text = SCRIPT.read_text()
    start = text.index('GW="http://127.0.0.1:$GATEWAY_HTTP_PORT"')
    end = re.search(r"^MSG$", text[start:], re.MULTILINE)
    assert end is not None, "the banner's here-document (cat <<MSG … MSG) was not found"
    return text[start : start + end.end()] + "\n"


@pytest.mark.parametrize(
    "otel",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:18090", "FAKES": "http://127.0.0.1:18090"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "FAKES": "http://127.0.0.1:18090"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
    ],
    ids=["dev-fakes", "tracing-off", "own-collector"],
)
def test_banner_expands(otel: dict[str, str]) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GATEWAY_HTTP_PORT": "18080",
        "CART_MAPPING_HTTP_PORT": "18081",
        "ORDER_FINALIZATION_HTTP_PORT": "18082",
        "REFUND_HTTP_PORT": "18083",
        "PAYMENT_EXTENSION_HTTP_PORT": "18084",
        "DEVFAKES_HTTP_PORT": "18090",
        "CTP_MOCK_PORT": "18989",
        "KAFKA_PORT": "19092",
        "KAFKA_CONTROLLER_PORT": "19093",
        "INSTORE_CALLBACK_API_KEY": "local-dev-callback-key",
        "INSTORE_WEBHOOK_SECRET": "local-dev-webhook-secret",
        "HOST_PAGE_SHOWN": "",
        "SALE_PAYMENT_ID": "pay-1",
        "RECONCILER_INTERVAL_SECONDS": "10",
        "RECONCILER_GRACE_SECONDS": "5",
        **otel,
    }
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _banner_source()],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "The InStore integration stack is up." in proc.stdout
    assert "http://127.0.0.1:18080/metrics" in proc.stdout
    assert "The reconciler runs every 10s (grace 5s)" in proc.stdout
    traces = next(line for line in proc.stdout.splitlines() if "Traces (OpenTelemetry" in line)
    if otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == "":
        assert "off" in traces
    elif "FAKES" in otel:
        assert "http://127.0.0.1:18090/otlp" in traces
    else:
        assert "http://collector:4318" in traces
