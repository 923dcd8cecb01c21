"""README.md and docs/*.md: every relative link leads somewhere, and the sections that commands write live on the
pages those commands name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# marker name -> (page, the command that rewrites it, as its section's first line quotes it)
GENERATED = {
    "results": ("docs/results.md", "thce report runs/demo-6seeds --readme docs/results.md"),
    "paper-configs": ("docs/results.md", "python benchmarks/paper_configs.py ... --readme docs/results.md"),
    "sweeps": ("docs/results.md", "python benchmarks/sweep_tables.py --readme docs/results.md"),
    "embedding-scaling": ("docs/benchmarks.md", "python benchmarks/embedding_scaling.py ... --readme docs/benchmarks.md"),
}


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` whose file, or whose #anchor in that file, does not exist."""
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            broken.append(target)
        elif fragment and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"), re.M)
            if fragment not in {anchor(h) for h in headings}:
                broken.append(target)
    return broken


def test_anchor_follows_github():
    assert anchor("Detection, evaluation, export") == "detection-evaluation-export"
    assert anchor("The `quick` config: 2 s") == "the-quick-config-2-s"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [no](gone.md) [no](there.md#b) [web](https://x.org/y)\n")
    assert broken_links(page) == ["gone.md", "there.md#b"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links"


@pytest.mark.parametrize("marker", sorted(GENERATED))
def test_generated_sections_live_on_the_page_their_command_names(marker):
    page, command = GENERATED[marker]
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    text = (ROOT / page).read_text(encoding="utf-8")
    assert text.count(start) == 1 and text.count(end) == 1
    assert f"`{command}`" in text.split(start, 1)[1].split(end, 1)[0].strip().splitlines()[0]
    assert start not in (ROOT / "README.md").read_text(encoding="utf-8")  # README leads with use (issue 32)
