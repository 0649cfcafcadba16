"""Shared fixtures: paths to the reference material beside the repo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (REPO_ROOT / ".." / "shared").resolve()
EXAMPLES = REFERENCE / "commercetools" / "examples"


def load_example(name: str) -> dict[str, Any]:
    """An official commercetools example resource from ``../shared/commercetools/examples``.

    Fails (never skips) when the reference folder is absent.
    """
    path = EXAMPLES / name
    if not path.is_file():
        pytest.fail(f"reference example {path} is missing: ../shared must sit beside the repository")
    return json.loads(path.read_text())
