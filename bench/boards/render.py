"""Rendering boards from the Jinja2 templates and static files kept in `templates/` (package files)."""

from __future__ import annotations

import functools
import math
import re
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

#: files the HTML site links to, copied beside its pages so that it opens from disk
STATIC = ("style.css", "board.js")


@functools.cache
def environment(html: bool) -> jinja2.Environment:
    """Templates from this folder; ``html`` turns autoescaping on."""
    return jinja2.Environment(loader=jinja2.PackageLoader("bench.boards", "templates"), autoescape=html,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined)


def render(template: str, **context: Any) -> str:
    """Render ``template`` (``*.html.j2`` autoescaped) with ``context``."""
    return environment(template.endswith(".html.j2")).get_template(template).render(**context)


def static(name: str) -> str:
    """The text of a static file of the site (``style.css``, ``board.js``)."""
    return resources.files("bench.boards").joinpath("templates", name).read_text()


def warn_if_shrinks(path: Path, pattern: str, count: int, what: str) -> None:
    """Warn before a generated file is replaced by one made from fewer ``what`` (results, scenarios) than it
    was: a single run's board written over a sweep's is almost always a mistake. ``pattern`` finds the old
    count in the old file (its first group)."""
    if not path.exists():
        return
    m = re.search(pattern, path.read_text(errors="replace"))
    if m and count < int(m.group(1)):
        warnings.warn(f"{path} was generated from {m.group(1)} {what}; it is replaced by one from {count} "
                      f"(`git checkout {path}` brings a committed one back)", stacklevel=3)


def fmt(mean: float, half: float = math.nan) -> str:
    """``0.620 ± 0.048`` (half-width of the 95 % interval), ``0.620`` for one run, blank for none."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    return f"{mean:.3f}" if half is None or math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def markdown_table(df) -> str:  # noqa: ANN001 - a pandas DataFrame
    """``df`` as a Markdown table, its cells as formatted (tabulate would re-parse ``1.000`` as 1 and
    ``+0.053`` as 0.053), blank where missing."""
    return df.to_markdown(index=False, missingval="", disable_numparse=True)
