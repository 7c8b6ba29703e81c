"""Running: plan a run, train it with Lightning (or reuse it), evaluate, record and publish
(:mod:`~bench.run.runner`). Imports :mod:`bench.core`, :mod:`bench.data`, :mod:`bench.models` and
:mod:`bench.boards`."""
