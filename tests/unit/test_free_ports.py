"""Test servers take ports below the ephemeral range (issue 10 A7).

A port from the ephemeral range can be taken by any outgoing connection meanwhile, and a
client retrying a stopped broker on such a port can connect to itself (TCP simultaneous
open) and hold the port, so the broker cannot start again on it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support.processes import REPO_ROOT, free_port


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_free_ports_are_random_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(40)]
    assert all(20000 <= p < 32000 and p < _ephemeral_low() for p in ports), ports
    assert len(set(ports)) > 30  # random, not one port handed out again and again


def test_ci_run_picks_ports_below_the_ephemeral_range_too() -> None:
    script = (REPO_ROOT / ".ci" / "run").read_text()
    function = re.search(r"^free_port\(\) \{.*?^\}", script, re.S | re.M)
    assert function, "free_port() not found in .ci/run"
    out = subprocess.run(
        ["bash", "-c", function.group(0) + "\nfor _ in $(seq 20); do free_port; done"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(out) == 20 and all(20000 <= int(p) < 32000 and int(p) < _ephemeral_low() for p in out), out
