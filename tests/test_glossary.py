"""The glossary: its terms are linked from the chapters, and every link in
the book names a term it defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
GLOSSARY = BOOK / "glossary.md"
CHAPTERS = sorted(
    p
    for part in ("part1", "part2", "part3")
    for p in (BOOK / part).iterdir()
    if p.suffix == ".ipynb" or p.name == "overview.md"
)
MIN_LINKS = 3  # distinct glossary entries linked from every chapter
TERM_ROLE = re.compile(r"\{term\}`([^`]+)`")


def glossary_entries() -> list[list[str]]:
    """The glossary's entries, each the list of its terms (lower case)."""
    text = GLOSSARY.read_text(encoding="utf-8")
    body = text.split("```{glossary}", 1)[1].split("\n```", 1)[0]
    entries, current = [], []
    for line in body.splitlines():
        if not line.strip() or line.startswith(":"):
            continue
        if line[0].isspace():  # a definition line ends the run of terms
            if current:
                entries.append(current)
            current = []
        else:
            current.append(" ".join(line.split()).lower())
    return entries


def page_text(path: Path) -> str:
    """The Markdown of a page, or of a notebook's markdown cells."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    return "\n\n".join(
        "".join(c["source"]) for c in cells if c["cell_type"] == "markdown"
    )


def linked_terms(path: Path) -> set[str]:
    """The terms a page links with the ``term`` role (lower case)."""
    targets = set()
    for content in TERM_ROLE.findall(page_text(path)):
        match = re.search(r"<([^<>]+)>\s*$", content)
        target = match.group(1) if match else content
        targets.add(" ".join(target.split()).lower())
    return targets


ENTRIES = glossary_entries()
TERMS = {term: i for i, entry in enumerate(ENTRIES) for term in entry}
PAGES = sorted(
    p
    for p in BOOK.rglob("*")
    if p.suffix in {".md", ".ipynb"} and ".ipynb_checkpoints" not in p.parts
)


def test_glossary_size():
    assert 25 <= len(ENTRIES) <= 40, f"{len(ENTRIES)} glossary entries"
    assert len(TERMS) == sum(len(e) for e in ENTRIES), "a term defined twice"


@pytest.mark.parametrize(
    "path", PAGES, ids=[p.relative_to(BOOK).as_posix() for p in PAGES]
)
def test_links_name_defined_terms(path):
    unknown = linked_terms(path) - TERMS.keys()
    assert not unknown, f"{path.name} links undefined terms: {unknown}"


def test_every_entry_is_linked_from_the_book():
    linked = set()
    for path in PAGES:
        if path != GLOSSARY:
            linked |= {TERMS[t] for t in linked_terms(path) if t in TERMS}
    orphans = [ENTRIES[i][0] for i in range(len(ENTRIES)) if i not in linked]
    assert not orphans, f"glossary entries no page links to: {orphans}"


@pytest.mark.parametrize(
    "path", CHAPTERS, ids=[p.relative_to(BOOK).as_posix() for p in CHAPTERS]
)
def test_every_chapter_links_the_glossary(path):
    entries = {TERMS[t] for t in linked_terms(path) if t in TERMS}
    assert len(entries) >= MIN_LINKS, (
        f"{path.name} links {len(entries)} glossary entries, "
        f"expected at least {MIN_LINKS}"
    )
