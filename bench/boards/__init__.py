"""Leaderboards: tables with statistics over seeds and test blocks, generated from stored results as
Markdown, CSV and a static HTML site (templates in ``templates/``). Imports :mod:`bench.core` only, and
never torch."""
