"""The README's configuration table is the one the settings classes generate."""

from __future__ import annotations

from pathlib import Path

from instore_shared.settings_doc import render

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_readme_settings_table_matches_the_settings_classes() -> None:
    text = README.read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    block = text[text.index(begin) + len(begin) : text.index(end)]
    assert block == render(), "README.md is stale: paste `uv run python -m instore_shared.settings_doc` between the markers"


def test_readme_names_the_two_commands_ci_uses() -> None:
    text = README.read_text()
    assert "make install run" in text and "make install test" in text
    assert "make install test" in (README.parent / ".ci" / "run").read_text()


def test_a_variable_listed_under_several_services_has_one_default() -> None:
    """A variable several services read (e.g. INSTORE_FIELD_PURCHASE_*) is one value in `make run`'s
    environment: its tables must not disagree on the default."""
    import re

    defaults: dict[str, set[str]] = {}
    for match in re.finditer(r"^\| `([A-Z0-9_]+)` \| (.*?) \| ", render(), re.MULTILINE):
        defaults.setdefault(match[1], set()).add(match[2])
    assert {name: d for name, d in defaults.items() if len(d) > 1} == {}
    assert "INSTORE_FIELD_PURCHASE_ORDER_ID" in defaults


def test_every_relative_link_in_the_readme_and_docs_points_at_a_file() -> None:
    import re

    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.name}: link to {target} points at nothing"
    for required in ("LICENSE", "CONTRIBUTING.md", "SECURITY.md", "CHANGELOG.md"):
        assert (ROOT / required).is_file(), required
