"""``bench predict`` over many scenes: files, folders, globs and list files in, one mask per scene out.

    from bench.run.predict import load_predictor
    from bench.run.predict_many import predict_many, scene_paths
    outcomes = predict_many(load_predictor(model="ukis_csmask_6b_l1c"), scene_paths(["scenes/"]), "masks/")

Each scene's mask is ``<out dir>/<stem>.tif`` (probabilities, if asked, ``<stem>_probabilities.tif``). A
mask is renamed into place only when it is complete, so a scene whose mask exists is done: it is skipped
unless ``overwrite``, and the same command resumes an interrupted batch. One progress display counts the
tiles of every scene, with an ETA. A scene that fails is reported and the others go on.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError, ConfigError, DataError
from bench.core.progress import Progress
from bench.data.rasters import open_scene, scene_stem
from bench.run.inference import Tiling
from bench.run.predict import Predictor, predict, predict_tiling

SCENE_SUFFIXES = (".tif", ".tiff", ".zip")  # and .SAFE folders


@dataclass
class Outcome:
    """What happened to one scene: ``written``, ``skipped`` (its mask exists) or ``failed``."""

    scene: Path
    mask: Path
    status: str
    seconds: float = 0.0
    detail: str = ""  # the error of a failed scene; the cloud percentage of a written one

    def row(self) -> list[Any]:
        """The summary table's row."""
        return [self.scene.name, self.status, f"{self.seconds:.1f}" if self.seconds else "", self.detail]


def scene_paths(inputs: list[str]) -> list[Path]:
    """The scenes ``inputs`` name, in order, each once: a GeoTIFF or L1C product (``.SAFE`` folder or zip), a
    folder of them, a glob pattern, or a list file (``@scenes.txt``: one path per line, relative to the
    file; ``#`` starts a comment). Refuses an input that names nothing."""
    found: list[Path] = []
    for item in inputs:
        if item.startswith("@"):
            listed = Path(item[1:]).expanduser()
            if not listed.is_file():
                raise DataError(f"{item}: no such list file")
            lines = [line.split("#")[0].strip() for line in listed.read_text().splitlines()]
            paths = [p if p.is_absolute() else listed.parent / p for p in map(Path, filter(None, lines))]
        elif any(ch in item for ch in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(str(Path(item).expanduser())))]
        elif Path(item).expanduser().is_dir() and not item.rstrip("/").upper().endswith(".SAFE"):
            folder = Path(item).expanduser()
            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in SCENE_SUFFIXES or p.suffix.upper() == ".SAFE")
        else:
            paths = [Path(item).expanduser()]
        if not paths:
            raise DataError(f"{item}: names no scene (GeoTIFF, .SAFE folder or zip)")
        found += [p for p in paths if p not in found]
    return found


def mask_path(out_dir: Path, scene: Path, suffix: str = "") -> Path:
    """``<out_dir>/<stem><suffix>.tif`` of a scene (a .SAFE's name without .SAFE / .zip)."""
    return out_dir / f"{scene_stem(scene)}{suffix}.tif"


def skipped(scenes: list[Path], out_dir: Path, overwrite: bool) -> dict[Path, Outcome]:
    """The scenes whose complete mask is there already (none with ``overwrite``), as skipped outcomes."""
    return {s: Outcome(s, mask_path(out_dir, s), "skipped", detail="its mask exists (--overwrite replaces it)")
            for s in scenes if not overwrite and mask_path(out_dir, s).exists()}


def predict_one(predictor: Predictor, scene: Path, out_dir: Path, probabilities: bool, overwrite: bool,
                progress: bool, bar: Progress | None, options: dict[str, Any]) -> Outcome:
    """One scene's mask under ``out_dir``: written (with its cloud percentage) or failed (with the error)."""
    t0, mask = time.perf_counter(), mask_path(out_dir, scene)
    try:
        prob = mask_path(out_dir, scene, "_probabilities") if probabilities else None
        predict(predictor, scene, mask, prob, overwrite=overwrite, progress=progress, bar=bar, **options)
        return Outcome(scene, mask, "written", time.perf_counter() - t0, cloud_of(mask))
    except (BenchError, OSError, ValueError) as err:
        return Outcome(scene, mask, "failed", time.perf_counter() - t0, str(err))


def tile_count(scene: Path, tiling: Tiling, bands: list[str] | None, predictor: Predictor) -> int:
    """How many tiles a scene takes (0 where it cannot be opened: it fails later, with its reason)."""
    try:
        with open_scene(scene, bands).select(predictor.bands) as raster:
            return sum(len(list(tiling.tiles(r0, r1, raster.height, raster.width)))
                       for r0, r1 in tiling.strips(raster.height, raster.width))
    except (BenchError, OSError):
        return 0


def predict_many(predictor: Predictor, scenes: list[Path], out_dir: str | Path, probabilities: bool = False,
                 overwrite: bool = False, progress: bool = True, **options: Any) -> list[Outcome]:
    """Each scene's mask under ``out_dir`` (see the module docstring); ``options`` go to :func:`predict`."""
    out_dir = Path(out_dir)
    if any(out_dir.resolve() == s.resolve() for s in scenes):
        raise ConfigError(f"--out-dir {out_dir} is one of the inputs")
    outcomes = skipped(scenes, out_dir, overwrite)
    todo = [s for s in scenes if s not in outcomes]
    tiling = predict_tiling(predictor, options.get("tile"), options.get("overlap"), options.get("blend"))
    total = sum(tile_count(s, tiling, options.get("bands"), predictor) for s in todo)
    bar = Progress(total, "tiles", f"{len(todo)} scenes", enabled=progress)
    for scene in todo:
        outcomes[scene] = predict_one(predictor, scene, out_dir, probabilities, overwrite, progress, bar, options)
    bar.close()
    return [outcomes[s] for s in scenes]


_worker: dict[str, Any] = {}  # the predictor of a --jobs worker process, loaded once


def _load_worker(model: str | None, run: str | None, weights: str | None, threads: int) -> None:
    import torch

    from bench.run.predict import load_predictor

    torch.set_num_threads(threads)
    _worker["predictor"] = load_predictor(model, run, weights)


def _predict_in_worker(scene: Path, out_dir: Path, probabilities: bool, overwrite: bool,
                       options: dict[str, Any]) -> Outcome:
    return predict_one(_worker["predictor"], scene, out_dir, probabilities, overwrite, False, None, options)


def predict_in_processes(model: str | None, run: str | None, weights: str | None, scenes: list[Path],
                         out_dir: str | Path, jobs: int, probabilities: bool = False, overwrite: bool = False,
                         progress: bool = True, **options: Any) -> list[Outcome]:
    """:func:`predict_many` with ``jobs`` local worker processes, each with its share of the CPU's threads
    and the model loaded once; the progress display counts scenes."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    out_dir = Path(out_dir)
    outcomes = skipped(scenes, out_dir, overwrite)
    todo = [s for s in scenes if s not in outcomes]
    bar = Progress(len(todo), "scenes", f"{len(todo)} scenes, {jobs} jobs", enabled=progress)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp.get_context("spawn"), _load_worker, (model, run, weights, threads)) as pool:
        futures = {pool.submit(_predict_in_worker, s, out_dir, probabilities, overwrite, options): s for s in todo}
        try:
            for future in futures:
                outcomes[futures[future]] = future.result()
                bar.update(1, status=futures[future].name)
        except KeyboardInterrupt:
            pool.shutdown(cancel_futures=True)  # finished masks stay; the same command resumes
            raise
    bar.close()
    return [outcomes[s] for s in scenes]


def predict_chunk(model: str | None, run: str | None, weights: str | None, scenes: list[Path], out_dir: Path,
                  probabilities: bool, overwrite: bool, options: dict[str, Any]) -> list[Outcome]:
    """One submitted job's scenes, the model loaded once (a picklable top-level function for submitit)."""
    from bench.run.predict import load_predictor

    predictor = load_predictor(model, run, weights)
    return [predict_one(predictor, s, out_dir, probabilities, overwrite, False, None, options) for s in scenes]


def predict_submitted(executor: Any, model: str | None, run: str | None, weights: str | None, scenes: list[Path],
                      out_dir: str | Path, jobs: int, probabilities: bool = False, overwrite: bool = False,
                      progress: bool = True, **options: Any) -> list[Outcome]:
    """:func:`predict_many` as ``jobs`` jobs of a submitit ``executor`` (Slurm, or submitit's local one), each
    with every ``jobs``-th scene left to do; the progress display counts scenes as jobs finish. A job that
    fails marks its scenes failed with its error, and the others go on."""
    out_dir = Path(out_dir)
    outcomes = skipped(scenes, out_dir, overwrite)
    todo = [s for s in scenes if s not in outcomes]
    chunks = [todo[i::jobs] for i in range(min(jobs, len(todo)))]
    submitted = [executor.submit(predict_chunk, model, run, weights, chunk, out_dir, probabilities, overwrite,
                                 options) for chunk in chunks]
    bar = Progress(len(todo), "scenes", f"{len(todo)} scenes, {len(chunks)} jobs", enabled=progress)
    for job, chunk in zip(submitted, chunks):
        try:
            done = job.result()
        except Exception as err:  # noqa: BLE001 - the job's error, reported for each of its scenes
            done = [Outcome(s, out_dir / f"{scene_stem(s)}.tif", "failed", detail=f"job {job.job_id}: {err}".splitlines()[0])
                    for s in chunk]
        for o in done:
            outcomes[o.scene] = o
        bar.update(len(chunk))
    bar.close()
    return [outcomes[s] for s in scenes]


def cloud_of(mask: Path) -> str:
    """``cloud 12.34 %`` from a written mask's tags."""
    import rasterio

    with rasterio.open(mask) as m:
        return f"cloud {m.tags().get('cloud_percent', '?')} %"
