"""Reading configuration: TOML files (with ``include``) and keyword arguments checked against a signature.

* :func:`read_toml` parses a file; a syntax error names the file, line and column. A file may say
  ``include = "base.toml"`` (or a list): the included files, relative to it, are read first and the
  file's own tables are merged over them key by key, as lm-eval's task files do. Configs stay data:
  there is no templating.
* :func:`check_arguments` validates settings against a builder's signature and type annotations
  (pydantic, strict: ``low = "1"`` is refused where a float is expected, an int is accepted for a float);
  unknown keys name the closest known key.
"""

from __future__ import annotations

import functools
import inspect
import tomllib
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError, did_you_mean

INCLUDE = "include"


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse ``path`` and the files it includes; errors name the file (and line, for syntax errors)."""
    return _read(Path(path), ())


def _read(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: include cycle: {cycle}")
    doc = _parse(path)
    includes = doc.pop(INCLUDE, [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: 'include' must be a file name or a list of them, got {includes!r}")
    merged: dict[str, Any] = {}
    for name in includes:
        base = path.parent / name
        if not base.exists():
            raise ConfigError(f"{path}: included file {base} does not exist")
        merged = merge(merged, _read(base, (*chain, path.resolve())))
    return merge(merged, doc)


def _parse(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: malformed TOML: {err}") from None


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: tables are merged key by key, any other value replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


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


def parameters(fn: Callable) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a function or class (``__init__``, following ``**kwargs`` up the bases)."""
    out: dict[str, inspect.Parameter] = {}
    for f in _signature_sources(fn):
        for p in inspect.signature(f).parameters.values():
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                out.setdefault(p.name, p)
    return out


def _signature_sources(fn: Callable) -> list[Callable]:
    if not isinstance(fn, type):
        return [fn]
    sources = []
    for cls in fn.__mro__:
        init = vars(cls).get("__init__")
        if init is None or cls is object:
            continue
        sources.append(init)
        if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(init).parameters.values()):
            break
    return sources


def accepts_any_keyword(fn: Callable) -> bool:
    """True if ``fn`` ends its chain of signatures in ``**kwargs`` (then unknown keys cannot be told)."""
    sources = _signature_sources(fn)
    last = sources[-1] if sources else fn
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(last).parameters.values())


@functools.lru_cache(maxsize=None)
def _model(fn: Callable, skip: frozenset[str]):  # noqa: ANN202 - a pydantic model class
    from pydantic import ConfigDict, create_model

    hints: dict[str, Any] = {}
    for f in reversed(_signature_sources(fn)):
        try:
            hints.update(typing.get_type_hints(f))
        except Exception:  # noqa: BLE001 - an annotation that does not resolve is not checked
            pass
    fields = {name: (hints.get(name, Any), ... if p.default is p.empty else p.default)
              for name, p in parameters(fn).items() if name not in skip}
    config = ConfigDict(strict=True, extra="ignore", arbitrary_types_allowed=True)
    return create_model(f"{getattr(fn, '__name__', 'builder')}_settings", __config__=config, **fields)


def check_arguments(fn: Callable, settings: Mapping[str, Any], where: str, skip: Iterable[str] = (),
                    extra: Iterable[str] = ()) -> dict[str, Any]:
    """Validate ``settings`` as keyword arguments of ``fn``: no unknown key (``extra`` keys are allowed
    besides the parameters), no missing required one (``skip``: parameters given at run time), each value
    of its annotated type. Returns the settings that are parameters, converted as validated."""
    from pydantic import ValidationError

    skip = frozenset(skip)
    params = parameters(fn)
    if not accepts_any_keyword(fn):
        check_keys(settings, set(params) - skip | set(extra), where)
    given = {k: v for k, v in settings.items() if k in params and k not in skip}
    try:
        validated = _model(fn, skip)(**given)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "missing":
            raise ConfigError(f"{where}: missing required key {key!r}") from None
        raise ConfigError(f"{where}: {key} = {e.get('input')!r}: {e['msg'].lower()}") from None
    return {k: getattr(validated, k) for k in given}
