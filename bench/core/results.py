"""Results on disk: run identities, atomic files, provenance, and reading results back (no torch here:
checkpoints are :mod:`bench.run.checkpoints`).

Layout under the output folder (``--out``, default ``runs/``)::

    models/<model>-<norm>-s<seed>-<train key>/   one trained model
        model.pt                                 final weights + normalizer state (weights_only loadable)
        checkpoints/last.ckpt, best.ckpt         Lightning checkpoints (resume, early stopping)
        logs/version_N/metrics.csv               Lightning's CSV log (one version per start or resume)
        wandb/offline-run-*                      the wandb run (offline unless --wandb online)
        train.json                               the training record
    models/<same>.lock                           held while training (parallel sweeps never train twice)
    results/<scenario>/<model>-<norm>-<adapt>-s<seed>-<eval key>.json   one evaluation
    results/<scenario>/<same>.png                its figure
    sweeps/<sweep key>/                          a sweep's cell list and its workers' logs

Every file is written atomically (temporary file, then rename), so a reader never sees half a result,
and a damaged file is set aside as ``*.corrupt``, never used or deleted.

The train key hashes what determines training (model, normalizer, training and validation data with
their checksums, bands, recipe, seed); the eval key adds the test data, label space and adapter. So a
trained model is reused by every scenario that shares its training data.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

#: version of the result document: 2 added the field's scores (PA, UA, F1, BOA), boundary tolerance,
#: cloud cover and probability calibration to the metrics, and predicts with tiles flush with the scene's
#: edges (a scene smaller than a tile as one tile)
RESULT_FORMAT = 2
PACKAGES = ("cloudbench", "torch", "torchvision", "segmentation-models-pytorch", "pytorch-lightning", "timm",
            "numpy", "rasterio", "pandas")


def key(obj: Any) -> str:
    """sha256 of a JSON-able object's canonical form."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _clean(obj: Any) -> Any:
    """NaN / inf -> None, tuples -> lists, Paths -> str, recursively (strict JSON)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


@contextmanager
def atomic(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write in the ``with`` block; renamed over ``path`` when the block
    ends, removed if it fails. A reader never sees half a file, even after a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> Path:
    """Write strict JSON atomically (and synced to disk)."""
    with atomic(path) as tmp, open(tmp, "w") as f:
        json.dump(_clean(obj), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block. The kernel drops it
    when the holder exits, even on SIGKILL, so a killed process never leaves a stale lock."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process that holds {path} ...", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically."""
    with atomic(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged file to ``<name>.corrupt`` (never silently used or deleted) and warn."""
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    warnings.warn(f"{path} is unreadable ({why}); set aside as {target.name}", stacklevel=2)
    return target


def read_result(path: Path) -> dict[str, Any] | None:
    """A result JSON, or None (set aside) if it is truncated or not a result."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "metrics" not in data:
            raise ValueError("no 'metrics' in it")
        return data
    except (ValueError, UnicodeDecodeError) as err:
        set_aside(path, str(err)[:200])
        return None


def load_results(out: str | Path, scenario: str | None = None) -> list[dict[str, Any]]:
    """Every readable result under ``<out>/results`` (of one scenario, if given)."""
    root = Path(out) / "results"
    pattern = f"{scenario}/*.json" if scenario else "*/*.json"
    results = []
    for p in sorted(root.glob(pattern)):
        r = read_result(p)
        if r is not None:
            r["_path"] = str(p)
            results.append(r)
    return results


def versions() -> dict[str, str | None]:
    """Versions of Python and of the packages that decide results."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_state(where: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag (tracked files changed, leaderboards aside) of the checkout that holds the
    code (None outside a git checkout)."""
    where = where or Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    # generated leaderboards are tracked but are output, not code: rewriting them does not make a run dirty
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)leaderboards") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cloudbench"
SHA_CACHE = CACHE / "sha256.json"
_sha_memo: dict[str, str] = {}


def sha256(path: str | Path) -> str:
    """sha256 of a file; cached on disk per (path, size, mtime) so that multi-GB files are hashed once."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    if key in _sha_memo:
        return _sha_memo[key]
    big = st.st_size > 64 << 20
    if big and SHA_CACHE.exists():
        try:
            _sha_memo.update(json.loads(SHA_CACHE.read_text()))
        except ValueError:
            pass
        if key in _sha_memo:
            return _sha_memo[key]
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    _sha_memo[key] = h.hexdigest()
    if big:  # only large files are worth a disk cache
        write_json(SHA_CACHE, {k: v for k, v in _sha_memo.items()})
    return _sha_memo[key]
