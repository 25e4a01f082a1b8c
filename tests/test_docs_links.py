"""Every relative link in the README and the docs leads to a file of the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "training" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def broken_links(document: Path, root: Path = ROOT) -> list[str]:
    """The relative link targets in a Markdown file (fenced code left out) that name no file or folder
    under `root`; anchors and web addresses are not checked."""
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.S | re.M)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or not path.is_relative_to(root):
            broken.append(target)
    return broken


def test_the_check_finds_a_broken_link_and_passes_good_ones(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("x")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#part) ![pic](docs/a.md) [web](https://example.org/x) [here](#top)\n"
                    "[gone](docs/missing.md) ![gone too](../outside.png)\n```\n[in code](nowhere.md)\n```\n")
    assert broken_links(page, tmp_path) == ["docs/missing.md", "../outside.png"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(document):
    assert broken_links(document) == []


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = next(line.strip() for line in ci if line.startswith("python3 -m venv"))
    assert command.endswith("python -m pytest -q")
    assert f"    {command}\n" in (ROOT / "README.md").read_text()
