"""The scripts CI runs outside pytest (scripts/*.py, bench/, faults/) import names that exist.

They run late in .ci/run (the compose smoke after the image builds), so a name moved in a
package would otherwise fail there, minutes into CI, rather than here.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = sorted(p for d in ("scripts", "bench", "faults") for p in (REPO / d).rglob("*.py"))


def _exists(module: object, name: str) -> bool:
    """``name`` is an attribute of ``module`` or a submodule of its package."""
    if hasattr(module, name):
        return True
    try:
        importlib.import_module(f"{module.__name__}.{name}")  # type: ignore[attr-defined]
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_project_import_of_a_script_resolves(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    missing = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("instore_"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if a.name != "*" and not _exists(module, a.name)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("instore_"):
                    importlib.import_module(alias.name)
    assert not missing, f"{path.relative_to(REPO)} imports names that do not exist: {missing}"


def test_the_scripts_are_found() -> None:
    assert REPO / "scripts" / "compose_smoke.py" in FILES


def test_no_two_test_files_share_a_name() -> None:
    """pytest imports test modules by basename (no packages under tests/): a second file of the same
    name stops the whole run at collection, which running one tier at a time does not show."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
