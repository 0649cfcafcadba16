"""The README and the pages under docs/ say what the code and CI do, and their links resolve.

The README is the short way in (the two commands CI uses); the reference lives in docs/*.md —
the settings table in docs/configuration.md is the one the settings classes generate.
"""

from __future__ import annotations

import re
from pathlib import Path

from instore_shared.settings_doc import render

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
# Every page whose links are checked: the README, each docs page (docs/_incoming/ and docs/api/
# hold other helpers' drafts and generated documents, not pages), the contributor files.
PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "CONTRIBUTING.md", ROOT / "SECURITY.md"]


def test_configuration_settings_table_matches_the_settings_classes() -> None:
    text = CONFIGURATION.read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    block = text[text.index(begin) + len(begin) : text.index(end)]
    assert block == render(), (
        "docs/configuration.md is stale: paste `uv run python -m instore_shared.settings_doc` between the markers"
    )


def test_readme_names_the_two_commands_ci_uses() -> None:
    text = README.read_text()
    assert "make install run" in text and "make install test" in text
    assert "make install test" in (README.parent / ".ci" / "run").read_text()


def test_a_variable_listed_under_several_services_has_one_default() -> None:
    """A variable several services read (e.g. INSTORE_FIELD_PURCHASE_*) is one value in `make run`'s
    environment: its tables must not disagree on the default."""
    defaults: dict[str, set[str]] = {}
    for match in re.finditer(r"^\| `([A-Z0-9_]+)` \| (.*?) \| ", render(), re.MULTILINE):
        defaults.setdefault(match[1], set()).add(match[2])
    assert {name: d for name, d in defaults.items() if len(d) > 1} == {}
    assert "INSTORE_FIELD_PURCHASE_ORDER_ID" in defaults


def _anchors(page: Path) -> set[str]:
    """The `#fragment`s GitHub makes of a Markdown page's headings (outside code fences): lower
    case, every character but letters, digits, `_`, `-` and spaces dropped, spaces → `-`; a
    repeated heading gets `-1`, `-2`, …"""
    anchors: set[str] = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (heading := re.match(r"^#{1,6} (.+)$", line)):
            anchor = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            unique, n = anchor, 0
            while unique in anchors:
                n += 1
                unique = f"{anchor}-{n}"
            anchors.add(unique)
    return anchors


def test_every_relative_link_in_the_readme_and_docs_points_at_a_file_and_anchor() -> None:
    checked = 0
    for page in PAGES:
        for link in re.findall(r"\]\(([^)\s]*)\)", page.read_text()):
            if "://" in link or link.startswith("mailto:"):
                continue
            target, _, fragment = link.partition("#")
            path = (page.parent / target) if target else page
            assert path.exists(), f"{page.relative_to(ROOT)}: link to {target} points at nothing"
            if fragment and path.suffix == ".md":
                assert fragment in _anchors(path), f"{page.relative_to(ROOT)}: {link} — no such heading in {path.name}"
            checked += 1
    assert checked > 50  # the pages link to each other: a regex that finds nothing would pass silently
    for required in ("LICENSE", "CONTRIBUTING.md", "SECURITY.md", "CHANGELOG.md"):
        assert (ROOT / required).is_file(), required


def test_every_docs_page_says_what_it_is_for_and_links_back_to_the_readme() -> None:
    pages = sorted(DOCS.glob("*.md"))
    index = (DOCS / "README.md").read_text()
    for page in pages:
        title, blank, purpose, *_ = page.read_text().splitlines()
        assert title.startswith("# ") and blank == "", f"{page.name}: a `# Title` line, then a blank line"
        assert "](../README.md)" in purpose, f"{page.name}: the line under the title says what it is for and links to the README"
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not list {page.name}"
    assert "](docs/README.md)" in README.read_text()


def test_runbook_links_point_at_the_operations_page() -> None:
    """The alerts' runbook_url anchors are checked against docs/operations.md's headings in
    test_observability_artifacts; here: nothing still points at a README section that moved."""
    for path in (ROOT / "deploy").rglob("*"):
        if path.is_file() and path.suffix in (".yml", ".yaml", ".json"):
            assert "README.md#" not in path.read_text(), f"{path.relative_to(ROOT)} links to a README anchor"
