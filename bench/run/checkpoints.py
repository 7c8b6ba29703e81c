"""Torch files on disk: written atomically, read with ``weights_only=True``, set aside when damaged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bench.core.results import atomic, set_aside


def save_torch(path: str | Path, obj: Any) -> Path:
    """``torch.save`` atomically."""
    with atomic(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path: Path) -> dict[str, Any] | None:
    """A checkpoint loaded with ``weights_only=True``; a damaged one is set aside and None returned."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle opcode, unexpected global
        set_aside(path, f"{type(err).__name__}: {str(err)[:200]}")
        return None
