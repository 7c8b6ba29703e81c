"""Reading TOML: parse errors name the file and line; unknown keys name the closest known key."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.errors import ConfigError, did_you_mean


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse ``path``; a syntax error becomes ``ConfigError('<file>: <what> (at line L, column C)')``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None


def check_keys(table: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Refuse keys of ``table`` that are not in ``known``, suggesting the closest known key."""
    known = set(known)
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}")


def require(table: Mapping[str, Any], key: str, where: str) -> Any:
    """``table[key]``, or a ConfigError naming the missing key."""
    if key not in table:
        raise ConfigError(f"{where}: missing required key {key!r}")
    return table[key]
