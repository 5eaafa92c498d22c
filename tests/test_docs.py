"""The README stays short, and every relative link in README.md and docs/*.md resolves.

A link is ``[text](path)``, ``[text](path#anchor)``, ``[text](#anchor)`` or an image
``![alt](path)``; links to other sites (``https:``, ``mailto:``) are not followed. The
path must name an existing file or folder, relative to the page that links to it; an
anchor must be the GitHub-style slug of a heading in the target page. Links inside code
(fenced blocks and inline code spans) are not links and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # https:, mailto:, ...


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str, keep_code: bool = False) -> list[tuple[int, str]]:
    """``(line number, line)`` outside fenced code blocks, with inline code removed
    (unless ``keep_code``: headings keep it in their anchors)."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if m and m.group(1).startswith(fence):
                fence = None
            continue
        lines.append((number, line if keep_code else INLINE_CODE.sub("", line)))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation other
    than ``-`` and ``_`` dropped, each space a ``-``."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"[*~]|(?<!\w)_|_(?!\w)", "", text)  # emphasis markers
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in ``page``; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(page.read_text(encoding="utf-8"), keep_code=True):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` that does not resolve, as ``page:line: link: why``."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for number, line in prose_lines(text):
        for m in LINK.finditer(line):
            target = m.group(1)
            if EXTERNAL.match(target):
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.name}:{number}: {target}"
            if not dest.exists():
                problems.append(f"{where}: no such file {dest}")
                continue
            if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def test_there_are_pages_with_links():
    assert (REPO / "README.md").is_file()
    assert len(pages()) > 1, "docs/*.md pages are missing"
    links = [
        m
        for page in pages()
        for _, line in prose_lines(page.read_text(encoding="utf-8"))
        for m in LINK.finditer(line)
    ]
    assert links, "no links found: the link pattern is broken"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it at most {README_MAX_LINES} and move "
        "details to a page under docs/"
    )


def test_the_checker_finds_broken_links(tmp_path):
    """The checks above can fail: a missing file, a missing heading, a wrong image."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Title\n\n## Set up `--now`\n\ntext\n", encoding="utf-8")
    (docs / "pic.png").write_bytes(b"")
    page = tmp_path / "README.md"
    page.write_text(
        "# Top\n\n"
        "[ok](docs/a.md) [ok](docs/a.md#set-up---now) [ok](#top) ![ok](docs/pic.png)\n"
        "[web](https://example.com) `[code](missing.md)`\n"
        "```\n[in a fence](missing.md)\n```\n"
        "[gone](docs/b.md) [no heading](docs/a.md#install) ![gone](docs/pic.jpg) [x](#nope)\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert [p.split(": ")[1] for p in problems] == [
        "docs/b.md",
        "docs/a.md#install",
        "docs/pic.jpg",
        "#nope",
    ], problems


def test_slugs_follow_github():
    assert slug("Set up") == "set-up"
    assert slug("Interruption and `--resume`") == "interruption-and---resume"
    assert slug("The book's experiments") == "the-books-experiments"
    assert slug("Speed, results and memory") == "speed-results-and-memory"
    assert (
        slug("`util`: helpers with no knowledge of GPT-2")
        == "util-helpers-with-no-knowledge-of-gpt-2"
    )
