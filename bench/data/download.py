"""``bench data``: what data is where (info), getting it (download), checking it (verify, check).

Downloads use each source's own library: huggingface_hub for the CloudSEN12+ TACO files (resumable, with
progress bars; sha256 of every file checked against the hub's and written to ``SHA256SUMS``), torchgeo
for Copernicus-Bench Cloud-S2 (md5-checked archive), sentinelhub-py for Sentinel Hub scenes.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from bench.core.results import sha256
from bench.data.datasets import Dataset, data_root, load_dataset
from bench.core.errors import BenchError, DataError
from bench.core.registry import get_registry

#: where the published CloudSEN12+ files are (Hugging Face dataset repository and file pattern).
CLOUDSEN12_REPO = "tacofoundation/cloudsen12"
CLOUDSEN12_FILES = "cloudsen12-l1c.*.part.taco"
MANIFEST = "SHA256SUMS"
REVISION = "REVISION"  # the hub commit a download took its files from; later downloads resume at it
#: the CloudSEN12 paper's figure-4 patches: pinned commit of github.com/cloudsen12/figures and their sha256
FIGURE04_BASE = ("https://raw.githubusercontent.com/cloudsen12/figures/f66e5378da48be606aacd0367e3e68249f22b030/"
                 "figure04/figures/")
FIGURE04_SUMS = Path(__file__).resolve().parent / "manifests" / "cloudsen12_figure04.sha256"


def _root(root: str | None) -> Path:
    path = Path(root).expanduser() if root else data_root()
    if path is None:
        raise BenchError("no data root: pass --data-root DIR or set CLOUDBENCH_DATA")
    return path


def download(name: str, root: str | None = None, revision: str | None = None) -> list[Path]:
    """Fetch dataset ``name`` into the data root; returns the files written or found complete. ``revision``:
    the CloudSEN12+ hub commit to take (default: the one an earlier download recorded, else the newest)."""
    root_path = _root(root)
    root_path.mkdir(parents=True, exist_ok=True)
    if name in ("cloudsen12", "cloudsen12_l1c"):
        return _download_cloudsen12(root_path / "cloudsen12", revision)
    if name.startswith("cloudsen12_figure04"):
        return _download_figure04(root_path / "cloudsen12_figure04")
    if name == "copernicus_cloud_s2":
        from torchgeo.datasets import CopernicusBenchCloudS2

        try:
            CopernicusBenchCloudS2(root=str(root_path / "copernicus_bench"), download=True, checksum=True)
        except Exception as err:
            raise DataError(f"downloading Copernicus-Bench Cloud-S2 failed ({type(err).__name__}: {err}); "
                            "this needs internet") from None
        return sorted((root_path / "copernicus_bench").rglob("*.csv"))
    ds = load_dataset(name)
    if hasattr(ds, "fetch"):
        import os

        os.environ["CLOUDBENCH_DATA"] = str(root_path)
        return [ds.fetch()]
    raise BenchError(f"dataset {name!r} has nothing to download (it is embedded or read from your own files)")


def dry_run(name: str, revision: str | None = None) -> str:
    """What ``bench data download NAME`` would fetch, without fetching: files and sizes (CloudSEN12+, which
    asks the hub for the listing), the pinned archive (Copernicus-Bench), or the full request JSON with its
    evalscript (Sentinel Hub; the body holds no credentials)."""
    import json

    if name in ("cloudsen12", "cloudsen12_l1c"):
        revision = cloudsen12_revision(None, revision)
        files = _cloudsen12_listing(revision)
        total = sum(size for _, size, _ in files)
        lines = [f"{path}  {size / 1e9:.2f} GB  sha256 {sha}" for path, size, sha in files]
        return "\n".join([f"{CLOUDSEN12_REPO} (Hugging Face dataset) at commit {revision}, {len(files)} files, "
                          f"{total / 1e9:.1f} GB:", *lines])
    if name.startswith("cloudsen12_figure04"):
        return "\n".join(f"{url}  sha256 {sha}" for _, url, sha in figure04_files())
    if name == "copernicus_cloud_s2":
        from torchgeo.datasets import CopernicusBenchCloudS2 as C

        return f"{C.url}\n  md5 {C.md5}, unpacked into <data root>/copernicus_bench/{C.directory}"
    ds = load_dataset(name)
    if not hasattr(ds, "request"):
        raise BenchError(f"dataset {name!r} has nothing to download (it is embedded or read from your own files)")
    from sentinelhub import SHConfig

    config = SHConfig()
    request = ds.request(config).download_list[0]
    rule = f"pinned date {ds.date}" if ds.date else (f"Catalog API: acquisitions in {'/'.join(ds.time_interval)} with "
                                                     f"cloud cover in {list(ds.cloud_cover)} %, closest to {ds.target_date}")
    return "\n".join([f"acquisition: {rule} (the request below then covers that day only)",
                      f"POST {request.url}", json.dumps(request.post_values, indent=2),
                      "evalscript, as the service reads it:", request.post_values["evalscript"]])


def cloudsen12_revision(folder: Path | None, revision: str | None) -> str:
    """The hub commit to download: ``revision`` if given, else the one recorded in ``folder`` by an earlier
    download (a resumed or repeated download never mixes files of two commits), else the repository's
    newest, resolved to its commit hash now."""
    if revision:
        return revision
    if folder is not None and (folder / REVISION).exists():
        return (folder / REVISION).read_text().strip()
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(CLOUDSEN12_REPO).sha
    except Exception as err:
        raise DataError(f"asking the Hugging Face hub for the newest commit of {CLOUDSEN12_REPO} failed "
                        f"({type(err).__name__}); this needs internet") from None


def _cloudsen12_listing(revision: str) -> list[tuple[str, int, str]]:
    """(path, bytes, sha256) of every CloudSEN12+ file the download takes; none matching is an error."""
    from huggingface_hub import HfApi

    try:
        tree = HfApi().list_repo_tree(CLOUDSEN12_REPO, repo_type="dataset", revision=revision)
        files = [(p.path, p.size, p.lfs.sha256) for p in tree
                 if getattr(p, "lfs", None) and Path(p.path).match(CLOUDSEN12_FILES)]
    except Exception as err:
        raise DataError(f"listing {CLOUDSEN12_REPO} on the Hugging Face hub failed ({type(err).__name__}); "
                        "this needs internet") from None
    if not files:
        raise DataError(f"no file of {CLOUDSEN12_REPO} matches {CLOUDSEN12_FILES!r}: the repository's layout changed")
    return sorted(files)


def figure04_files() -> list[tuple[str, str, str]]:
    """(local path, URL at the pinned commit, sha256) of the 31 figure-4 files. Upstream keeps ROI_1746's
    acquisitions one level deeper, under ``high/``."""
    rows = []
    for line in FIGURE04_SUMS.read_text().splitlines():
        sha, path = line.split(maxsplit=1)
        remote = path.replace("ROI_1746/", "ROI_1746/high/", 1)
        rows.append((path, FIGURE04_BASE + remote, sha))
    if not rows:
        raise DataError(f"{FIGURE04_SUMS} lists no files")
    return rows


def _download_figure04(folder: Path) -> list[Path]:
    """Fetch the figure-4 files from the pinned commit; each is checked against its sha256 before it is kept."""
    import urllib.request

    written = []
    for path, url, sha in figure04_files():
        target = folder / path
        if not (target.exists() and sha256(target) == sha):
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_suffix(".part")
            try:
                with urllib.request.urlopen(url, timeout=30) as response, open(part, "wb") as out:
                    out.write(response.read())
            except OSError as err:
                raise DataError(f"downloading {url} failed ({err}); this needs internet. Run it again to resume") from None
            if sha256(part) != sha:
                part.unlink()
                raise DataError(f"{url}: sha256 differs from the pinned {sha}; nothing kept")
            part.replace(target)
        written.append(target)
    (folder / MANIFEST).write_text(FIGURE04_SUMS.read_text())
    return written


def _download_cloudsen12(folder: Path, revision: str | None = None) -> list[Path]:
    from huggingface_hub import HfApi, snapshot_download

    revision = cloudsen12_revision(folder, revision)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REVISION).write_text(revision + "\n")
    try:
        snapshot_download(CLOUDSEN12_REPO, repo_type="dataset", revision=revision, allow_patterns=[CLOUDSEN12_FILES],
                          local_dir=folder)
        remote = {p.path: p.lfs.sha256 for p in HfApi().list_repo_tree(CLOUDSEN12_REPO, repo_type="dataset",
                                                                      revision=revision)
                  if getattr(p, "lfs", None) and Path(p.path).match(CLOUDSEN12_FILES)}
    except Exception as err:
        raise DataError(f"downloading CloudSEN12+ from the Hugging Face repository {CLOUDSEN12_REPO} failed "
                        f"({type(err).__name__}); this needs internet. Run it again to resume.") from None
    files = sorted(folder.glob(CLOUDSEN12_FILES))
    if not files or not remote:
        raise DataError(f"the download of {CLOUDSEN12_REPO} matched no file {CLOUDSEN12_FILES!r} in {folder}; "
                        "nothing was fetched (the repository's layout changed?)")
    sums = {}
    for f in files:
        sums[f.name] = sha256(f)
        if f.name in remote and remote[f.name] != sums[f.name]:
            raise DataError(f"{f}: sha256 {sums[f.name]} differs from the hub's {remote[f.name]}; delete it and "
                            "run the download again")
    (folder / MANIFEST).write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    return files


def verify(name: str, root: str | None = None) -> list[dict[str, Any]]:
    """Check a downloaded dataset's files against their ``SHA256SUMS`` (or that every file opens)."""
    folder = _root(root) / ("cloudsen12" if name in ("cloudsen12", "cloudsen12_l1c") else
                            "cloudsen12_figure04" if name.startswith("cloudsen12_figure04") else name)
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise DataError(f"no {MANIFEST} in {folder}: download the dataset with `bench data download {name}` first")
    lines = [line for line in manifest.read_text().splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{manifest} lists no files: the download fetched nothing; run it again")
    rows = []
    for line in lines:
        expected, fname = line.split(maxsplit=1)
        path = folder / fname
        status = "missing" if not path.exists() else ("ok" if sha256(path) == expected else "CHECKSUM MISMATCH")
        rows.append({"file": fname, "status": status})
    return rows


def info() -> list[dict[str, Any]]:
    """Every registered dataset: type, reference, and whether its data can be found now."""
    rows = []
    for entry in get_registry().entries("dataset"):
        where, scenes = "", ""
        try:
            ds = load_dataset(entry.name)
            where = ds.available()
            scenes = str(len(ds.scene_ids()))
        except BenchError as err:
            where = "missing: " + str(err).split(";")[0].split(". ")[0].split(f"{entry.name!r}", 1)[-1].lstrip(": ")
        rows.append({"dataset": entry.name, "type": entry.builder.name, "reference": entry.settings.get("reference"),
                     "scenes": scenes, "where": where})
    return rows


def check(toml: str, strict: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """Validate every scene of a dataset TOML: bands, shape and CRS of image and mask, label codes, nodata."""
    ds: Dataset = load_dataset(toml)
    rows, ok = [], True
    for sid in ds.scene_ids():
        row: dict[str, Any] = {"scene": sid}
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                scene = ds.read(sid, ds.bands, strict=strict)
            codes, counts = np.unique(scene.codes[scene.valid], return_counts=True)
            row.update({"size": "x".join(map(str, scene.image.shape[1:])), "bands": len(ds.bands),
                        "crs": scene.meta.get("crs") or "-", "acquired": scene.meta.get("acquired") or "-",
                        "codes": " ".join(f"{c}:{n}" for c, n in zip(codes, counts)),
                        "nodata %": f"{100 * (1 - scene.valid.mean()):.1f}",
                        "status": "; ".join(str(w.message) for w in caught) or "ok"})
        except BenchError as err:
            ok = False
            row["status"] = f"ERROR: {err}"
        rows.append(row)
    return rows, ok


def print_table(rows: list[dict[str, Any]]) -> None:
    """Print rows (dicts with the same keys) as a plain table."""
    print(tabulate(rows, headers="keys", tablefmt="github") if rows else "(nothing)", file=sys.stdout)
