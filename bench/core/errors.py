"""User-facing errors: each says what is wrong and how to fix it; the CLI prints them without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Base of every error the CLI reports as ``error: <message>`` with exit code 2."""


class UnknownNameError(BenchError, KeyError):
    """A plugin, key or band name that is not known; the message suggests the closest known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(BenchError):
    """Two plugins of one kind registered under the same name."""


class ConfigError(BenchError):
    """A TOML file that cannot be parsed or does not validate."""


class DataError(BenchError):
    """Input data that cannot be used as it is (band count, NaN, label codes, units, missing files)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` did you mean 'x'?`` for the closest known names, else the list of what exists."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"; known: {', '.join(known) if known else '(none)'}"


def unknown(what: str, name: str, known: Iterable[str]) -> UnknownNameError:
    """Build ``unknown normalizer 'percentil'; did you mean 'percentile'?``."""
    return UnknownNameError(f"unknown {what} {name!r}{did_you_mean(name, known)}")
