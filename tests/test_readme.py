"""The pages and the committed boards agree: every result the README or a documentation page quotes is
read from a board.

A page quotes results only inside a block that names its boards, ``<!-- numbers from: BOARD ... -->`` ...
``<!-- end numbers -->``, and every number in the block is on those boards. Outside the blocks a page
quotes no result, with two exceptions: speed ratios (the Benchmarks page, and a Benchmarks section), and a
tested example (``<!-- example -->`` ... ``<!-- end example -->``), whose output ``tests/test_docs.py``
runs and compares line by line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
BENCHMARK_PAGES = {DOCS / "benchmarks.md"}  # speed ratios, not results
README_MAX_BYTES = 10 * 1024  # the front door; the manual is the site

BLOCK = re.compile(r"<!-- numbers from: (?P<boards>[^>]+?) -->(?P<body>.*?)<!-- end numbers -->", re.S)
EXAMPLE = re.compile(r"<!-- example -->.*?<!-- end example -->", re.S)
NUMBER = re.compile(r"(?<![\w.])[-+]?\d\.\d+")  # 0.826, not a version such as 04.00
METRIC = re.compile(r"(?<![\w.])0\.\d{3}(?!\d)")  # how the boards print mIoU, IoU and accuracy


def name(page: Path) -> str:
    return str(page.relative_to(REPO))


def blocks(page: Path) -> list[tuple[list[Path], str]]:
    return [([REPO / b for b in m["boards"].split()], m["body"]) for m in BLOCK.finditer(page.read_text())]


def quoting_pages() -> list[Path]:
    return [p for p in PAGES if blocks(p)]


def test_the_readme_is_the_front_door():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, more than {README_MAX_BYTES}: move text to docs/"


def test_the_readme_and_the_site_quote_committed_boards():
    assert blocks(README), "the README's headline names the boards it quotes"
    site = [b for p in PAGES if p != README for b in blocks(p)]
    assert len(site) >= 3, "the site's result sections name the boards they quote"
    for page in quoting_pages():
        for boards, _ in blocks(page):
            for b in boards:
                assert b.exists(), f"{name(page)} quotes {b.relative_to(REPO)}, which is not committed"


@pytest.mark.parametrize("page", quoting_pages(), ids=name)
def test_every_number_in_a_quoting_section_is_on_its_boards(page):
    for boards, body in blocks(page):
        text = "\n".join(b.read_text() for b in boards)
        missing = [n for n in NUMBER.findall(body) if n.lstrip("+") not in text]
        assert not missing, f"{name(page)}: numbers not on {[b.name for b in boards]}: {missing}"


def without_benchmarks(text: str) -> str:
    """The text less its Benchmarks section (speed ratios, not results)."""
    head, found, tail = text.partition("## Benchmarks")
    _, next_heading, rest = tail.partition("\n## ")
    return head + (next_heading + rest if found and next_heading else "") if found else text


@pytest.mark.parametrize("page", [p for p in PAGES if p not in BENCHMARK_PAGES], ids=name)
def test_no_result_is_quoted_outside_those_sections(page):
    text = EXAMPLE.sub("", BLOCK.sub("", page.read_text()))
    stray = METRIC.findall(without_benchmarks(text))
    assert not stray, f"results in {name(page)} that no board backs: {stray}"
