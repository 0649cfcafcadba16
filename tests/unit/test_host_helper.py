"""The host app's browser helper (host/instore-host.js): its unit tests run with Node's own test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_browser_helpers_node_tests_pass() -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed (make install checks for it)"
    proc = subprocess.run([node, "--test", "host/"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout and "# pass " in proc.stdout


def test_the_helper_holds_no_secret_names() -> None:
    """It runs in the browser: it must not know any server-side secret."""
    text = (ROOT / "host" / "instore-host.js").read_text()
    for name in ("X-Api-Key", "INSTORE_CALLBACK_API_KEY", "WEBHOOK_SECRET", "CONNECTION_KEY", "CLIENT_SECRET"):
        assert name not in text
