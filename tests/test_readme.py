"""The README and the committed boards agree: every result the README quotes is read from a board."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
BLOCK = re.compile(r"<!-- numbers from: (?P<boards>[^>]+?) -->(?P<body>.*?)<!-- end numbers -->", re.S)
NUMBER = re.compile(r"(?<![\w.])[-+]?\d\.\d+")  # 0.826, not a version such as 04.00
METRIC = re.compile(r"(?<![\w.])0\.\d{3}(?!\d)")  # how the boards print mIoU, IoU and accuracy


def blocks() -> list[tuple[list[Path], str]]:
    return [([REPO / b for b in m["boards"].split()], m["body"]) for m in BLOCK.finditer(README)]


def test_the_readme_quotes_committed_boards():
    assert len(blocks()) >= 3, "the README's result sections name the boards they quote"
    for boards, _ in blocks():
        for b in boards:
            assert b.exists(), f"the README quotes {b.relative_to(REPO)}, which is not committed"


def test_every_number_in_a_quoting_section_is_on_its_boards():
    for boards, body in blocks():
        text = "\n".join(b.read_text() for b in boards)
        missing = [n for n in NUMBER.findall(body) if n.lstrip("+") not in text]
        assert not missing, f"README numbers not on {[b.name for b in boards]}: {missing}"


def without_benchmarks(text: str) -> str:
    """The README less its Benchmarks section (speed ratios, not results)."""
    head, found, tail = text.partition("## Benchmarks")
    _, next_heading, rest = tail.partition("\n## ")
    return head + (next_heading + rest if found and next_heading else "") if found else text


def test_no_result_is_quoted_outside_those_sections():
    stray = METRIC.findall(without_benchmarks(BLOCK.sub("", README)))
    assert not stray, f"results in the README that no board backs: {stray}"
