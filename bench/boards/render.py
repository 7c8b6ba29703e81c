"""Rendering boards from the Jinja2 templates and static files kept in `templates/` (package files)."""

from __future__ import annotations

import functools
from importlib import resources
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
