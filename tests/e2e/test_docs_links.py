"""Every relative link in README.md and docs/**/*.md leads somewhere.

A link's path must exist in the repository (a file, or a folder GitHub shows as a listing);
an anchor (`file.md#section`, `#section`) must name a heading of that Markdown file, made into
an anchor as GitHub does.  Links inside code (fenced blocks, `inline code`) are not links, and
absolute URLs (`https:`, `mailto:`) are left alone: this checks the repository, not the web.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
# [text](target "title") and ![alt](target); the text may hold `code` and nested [brackets].
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
_EXPLICIT_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)


def prose(text: str) -> str:
    """The text without code, which may show link-like things that are not links."""
    text = _FENCE.sub("", text)
    return _CODE_SPAN.sub("", text)


def links(text: str) -> list[str]:
    body = prose(text)
    return _INLINE.findall(body) + _REFERENCE.findall(body)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set(_EXPLICIT_ANCHOR.findall(text))
    for heading in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def problems(document: Path) -> list[str]:
    found = []
    for target in links(document.read_text(encoding="utf-8")):
        if not target or _SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path = (document.parent / unquote(path_part)).resolve() if path_part else document
        shown = f"{document.relative_to(ROOT)}: {target}"
        if not path.is_relative_to(ROOT):
            found.append(f"{shown} leads out of the repository")
        elif not path.exists():
            found.append(f"{shown}: no such file")
        elif anchor and path.suffix == ".md" and unquote(anchor) not in anchors(path):
            found.append(f"{shown}: no heading #{anchor} in {path.relative_to(ROOT)}")
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert problems(document) == []


def test_the_readme_links_every_document() -> None:
    readme = ROOT / "README.md"
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in links(readme.read_text(encoding="utf-8"))
        if not _SCHEME.match(target)
    }
    top_level = sorted(p for p in (ROOT / "docs").glob("*.md"))
    missing = [str(p.relative_to(ROOT)) for p in top_level if p.resolve() not in linked]
    assert missing == [], f"README.md does not link {missing}"
    assert (ROOT / "docs" / "adr" / "README.md").resolve() in linked


def test_the_checker_finds_what_it_should(tmp_path: Path) -> None:
    text = (
        "# Title\n## Two words, `code`\n"
        "[ok](#title) [ok](#two-words-code) [bad](#nope) [web](https://example.com)\n"
        "```\n[not a link](nowhere.md)\n```\n`[nor this](nowhere.md)`\n"
        "[ref]: missing.md\n"
    )
    assert links(text) == [
        "#title",
        "#two-words-code",
        "#nope",
        "https://example.com",
        "missing.md",
    ]
    assert slug("Health, readiness, metrics") == "health-readiness-metrics"
    assert slug("`jobd migrate` and [ADR 11](adr/0011.md)") == "jobd-migrate-and-adr-11"
