"""Every Markdown page renders as written: its code fences pair up as the author meant, read by a CommonMark
parser (markdown-it-py, in CommonMark mode, as GitHub's renderer follows the CommonMark spec for fences)."""
import hashlib
import re
import subprocess
from xml.etree import ElementTree

import pytest
from markdown_it import MarkdownIt

from support import REPO

PAGES = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True,
                       check=True).stdout.split()


def fence_problems(text):
    """What is wrong with the fenced code blocks of a Markdown text, as a CommonMark parser reads it."""
    lines = text.splitlines()
    problems = []
    for token in MarkdownIt("commonmark").parse(text):
        if token.type != "fence":
            continue
        start, end = token.map
        where = f"line {start + 1}"
        closing = lines[end - 1].strip() if end - 1 > start else ""
        if not (closing and set(closing) == {token.markup[0]} and len(closing) >= len(token.markup)):
            problems.append(f"{where}: the fence opened here is never closed (it runs to line {end})")
        for offset, line in enumerate(token.content.splitlines(), start + 2):
            if line.lstrip().startswith(token.markup) and line.strip(token.markup[0]).strip():
                problems.append(f"{where}: line {offset} opens a fence inside this block: a fence is missing")
    return problems


def test_the_pages_are_found():
    assert "README.md" in PAGES and "docs/cluster/03-deploy.md" in PAGES and len(PAGES) > 20


@pytest.mark.parametrize("page", PAGES)
def test_every_fence_is_balanced(page):
    assert fence_problems((REPO / page).read_text()) == []


def test_a_stray_fence_is_caught():
    # docs/cluster/03-deploy.md as it was: a stray closing fence turned a paragraph and a command into one block.
    text = "Expected:\n\n```text\nout\n```\n\nprose\n```\n\n(more prose)\n\n```sh\nkubectl logs\n```\n"
    problems = fence_problems(text)
    assert any("line 12 opens a fence inside this block" in p for p in problems), problems
    assert any("never closed" in p for p in fence_problems("```bash\nmake demo\n"))
    assert fence_problems("```bash\nmake demo\n```\n\n````text\n```\n````\n") == []


def test_the_overview_picture_is_drawn_from_its_source_as_it_is_now():
    source, picture = REPO / "docs/images/overview.dot", REPO / "docs/images/overview.svg"
    recorded = re.search(r"<!-- drawn by make overview from docs/images/overview\.dot, sha256 (\w+) -->",
                         picture.read_text())
    assert recorded, f"{picture} was not drawn by make overview"
    assert recorded[1] == hashlib.sha256(source.read_bytes()).hexdigest(), \
        f"{source} changed since {picture} was drawn: run make overview and commit both"
    root = ElementTree.parse(picture).getroot()  # well-formed, an SVG (what GitHub shows)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "](docs/images/overview.svg)" in (REPO / "README.md").read_text()
