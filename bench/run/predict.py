"""``bench predict``: a model's masks for whole scenes, written as cloud-optimised GeoTIFFs.

    from bench.run.predict import load_predictor, predict
    predictor = load_predictor(run="runs/results/samples_cross/unet_mnv2-percentile-none-s0-....json")
    predict(predictor, "T35VLC_20240816.SAFE.zip", "mask.tif", probabilities="probs.tif")

The model is a trained run (its result JSON, its model folder or ``model.pt``, with the normalizer fitted
for it), or a pretrained model of the zoo by name (zero-shot, with its own preprocessing). The scene is
read strip by strip and predicted through :mod:`bench.run.inference`, the path evaluation takes, so a
mask equals the evaluation's prediction for the same model, tiles and scene. Outputs are written under a
temporary name and renamed when complete: an interrupted prediction leaves nothing under the final name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.errors import ConfigError, DataError
from bench.core.labels import CLASSES, COLOURS, IGNORE
from bench.core.progress import Progress
from bench.core.registry import get_registry
from bench.core.results import read_result
from bench.data.normalizers import Normalizer
from bench.data.rasters import Raster, check_scene, open_scene
from bench.models.base import MASKS, TRAINED, Contract, SceneModel, contract_of
from bench.run.checkpoints import load_torch
from bench.run.inference import whole_pixels as whole_pixels_of
from bench.run.inference import (FastPaths, HeldRows, Tiling, class_batches, finite, model_tiling,
                                 predict_strips, scene_model_strips)
from bench.run.plan import MODEL_FILE, RunConfig, find_weights

NODATA = IGNORE  # 255 in the class mask and in uint8 probabilities
PROBABILITY_TYPES = ("uint8", "float32")  # uint8: percent 0-100
GDAL_CACHE_MB = 64
DEFAULT_TILE, DEFAULT_OVERLAP = 512, 32  # a model without an inference policy: measured (benchmarks/tile_size.py)


@dataclass
class Predictor:
    """A model ready to predict scenes: the network or scene model, its fitted normalizer, its bands."""

    name: str
    module: Any  # nn.Module or SceneModel
    normalizer: Normalizer
    bands: list[str]
    contract: Contract
    patch: int | None = None  # the tile size a patch-level normalizer was trained with
    source: dict[str, Any] = field(default_factory=dict)  # model, norm, mode, where it came from

    def exports(self) -> str | None:
        """The folder for this model's runtime exports: its own (a trained run), else None (the user cache)."""
        return str(Path(self.source["checkpoint"]).parent) if "checkpoint" in self.source else None


def load_predictor(model: str | None = None, run: str | Path | None = None, weights: str | None = None) -> Predictor:
    """A trained run (``run``: result JSON, model folder or ``model.pt``) or a pretrained model by name."""
    if (model is None) == (run is None):
        raise ConfigError("give a pretrained model's name (--model) or a trained run (--run), not both")
    return from_run(Path(run)) if run is not None else from_zoo(model, weights)


def from_zoo(name: str, weights: str | None = None) -> Predictor:
    """A pretrained model as it comes (zero-shot, ``native`` normalizer)."""
    entry = get_registry().get("model", name)
    contract = contract_of(entry)
    if contract.framework == TRAINED:
        raise ConfigError(f"model {name!r} is trained here, not pretrained: pass --run with one of its results "
                          f"(a result JSON or a model folder that `bench run --model {name}` wrote)")
    if contract.framework == MASKS:
        raise ConfigError(f"model {name!r} reads masks made by another tool; it has no pixels to predict: score "
                          "its masks with `bench score PRED REF`, or on a labelled scenario with `bench run`")
    files = find_weights(RunConfig(model=name, weights=weights), contract)
    runtime: dict[str, Any] = {"in_channels": len(contract.bands)}
    if files:
        runtime["weight_files"] = [str(f) for f in files]
    built = entry.build(**runtime)
    norm = get_registry().get("norm", "native").build()
    return Predictor(name, built.module, norm, list(contract.bands), contract,
                     source={"model": name, "norm": "native", "mode": "zero-shot", "weights": built.weights})


def model_file(run: Path) -> tuple[Path, dict[str, Any] | None]:
    """``model.pt`` of a result JSON, a model folder or the file itself, and the result if one was given."""
    if not run.exists():
        raise DataError(f"--run {run}: no such file or folder")
    if run.is_dir():
        return run / MODEL_FILE, None
    if run.suffix == ".json":
        result = read_result(run)
        if result is None:
            raise DataError(f"--run {run}: not a result JSON (it was set aside as damaged)")
        return Path(result["checkpoint"]), result
    return run, None


def from_run(run: Path) -> Predictor:
    """A model trained or fine-tuned here, with the normalizer fitted for it."""
    path, result = model_file(run)
    if result is not None and result["model"].get("mode") == "zero-shot":
        return from_zoo(result["config"]["model"], None)
    state = load_torch(path) if path.exists() else None
    if state is None:
        raise DataError(f"--run {run}: no finished model at {path} (is the training done? `bench run` resumes it)")
    reg = get_registry()
    entry = reg.get("model", state["model"])
    if "encoder_weights" in entry.settings:  # the trained weights replace them: nothing to look for
        entry = replace(entry, settings={**entry.settings, "encoder_weights": None})
    contract = contract_of(entry)
    runtime: dict[str, Any] = {"in_channels": state["in_channels"]}
    if contract.weights:  # fine-tuned: the pretrained file gives the architecture
        runtime["weight_files"] = [str(f) for f in find_weights(RunConfig(model=state["model"]), contract)]
    built = entry.build(**runtime)
    built.module.load_state_dict(state["state_dict"])
    normalizer = reg.get("norm", state["norm"]).build().load_state_dict(state["normalizer"])
    patch = trained_patch(path)
    return Predictor(state["model"], built.module, normalizer, list(state["bands"]), contract, patch,
                     source={"model": state["model"], "norm": state["norm"], "mode": state.get("mode", "trained"),
                             "checkpoint": str(path)})


def trained_patch(path: Path) -> int | None:
    """The training patch size recorded beside ``model.pt`` (``train.json``), if any."""
    try:
        return int(json.loads((path.parent / "train.json").read_text())["identity"]["recipe"]["patch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Written:
    """What ``predict`` wrote, and how fast."""

    mask: Path
    probabilities: Path | None
    height: int
    width: int
    tiles: int
    seconds: float
    fast_paths: dict[str, Any] | None
    nodata_pixels: int

    def summary(self) -> str:
        """One line for the terminal."""
        rate = f", {self.tiles / self.seconds:.1f} tiles/s" if self.tiles and self.seconds else ""
        return (f"wrote {self.mask} ({self.height} x {self.width} px, {self.seconds:.1f} s{rate}"
                f"{', ' + str(self.probabilities) if self.probabilities else ''})")


def predict(predictor: Predictor, source: str | Path, out: str | Path, probabilities: str | Path | None = None,
            bands: list[str] | None = None, scale: float | None = None, offset: float = 0.0,
            tile: int | None = None, overlap: int | None = None, blend: str | None = None, batch_size: int = 2, device: str = "cpu", fast: FastPaths | None = None,
            probability_type: str = "uint8", overwrite: bool = False, progress: bool = True,
            whole_pixels: int | None = None, bar: Progress | None = None) -> Written:
    """Predict the scene at ``source`` and write its class mask to ``out`` (see the module docstring);
    ``bar``: a progress display of several scenes to count this one's tiles in (else its own)."""
    t0 = time.perf_counter()
    outputs = [Path(p) for p in (out, probabilities) if p is not None]
    check_outputs(outputs, overwrite, probability_type, predictor, probabilities, source)
    tiling, fast = predict_tiling(predictor, tile, overlap, blend), fast or FastPaths()
    with gdal_cache(), open_scene(source, bands, scale, offset).select(predictor.bands) as raster:
        check_scene(raster)
        whole = whole_pixels if whole_pixels is not None else whole_pixels_of(len(predictor.bands))
        strips = tiling.strips(raster.height, raster.width, whole_pixels=whole)
        reader = scene_reader(raster, predictor.normalizer, strips, progress, counts=not tiling.shift_nodata)
        with MaskWriter(Path(out), raster, predictor, tiling, fast, probabilities, probability_type) as writer:
            n_tiles = sum(len(list(tiling.tiles(r0, r1, raster.height, raster.width))) for r0, r1 in strips)
            own = bar is None
            shown = Progress(n_tiles, "tiles", f"predict {Path(source).name}", enabled=progress) if own else bar
            first = shown.done
            for r0, r1, outputs_ in scene_strips(predictor, reader, raster, tiling, strips, batch_size, device, fast,
                                                 probabilities is not None, shown):
                writer.write(r0, r1, outputs_, reader[1](r0, r1))
                rate = (shown.done - first) / max(time.perf_counter() - t0, 1e-9)
                shown.update(0, status=f"{rate:.1f} tiles/s", desc=None if own else f"predict {Path(source).name}")
            if own:
                shown.close()
    return Written(Path(out), Path(probabilities) if probabilities else None, raster.height, raster.width,
                   n_tiles, time.perf_counter() - t0,
                   fast.describe() if isinstance(predictor.module, nn.Module) else None, writer.nodata)


def predict_tiling(predictor: Predictor, tile: int | None = None, overlap: int | None = None,
                   blend: str | None = None) -> Tiling:
    """The tiling of ``bench predict``: the model's inference policy (:func:`bench.run.inference.model_tiling`)
    unless ``tile``, ``overlap`` or ``blend`` is given, 512 px tiles with 32 px overlap where neither says; a
    patch-level normalizer keeps the tile the model was trained with (its statistics are each tile's)."""
    if predictor.normalizer.level == "patch" and predictor.patch:
        tile = predictor.patch
    explicit = (tile, overlap, blend) != (None, None, None)
    tile, overlap, blend = tile or DEFAULT_TILE, DEFAULT_OVERLAP if overlap is None else overlap, blend or "crop"
    return Tiling(tile, overlap, blend) if explicit else model_tiling(predictor.contract, tile, overlap, blend)


def is_same_path(out: Path, source: Path) -> bool:
    """``out`` is ``source`` or lies inside it (a .SAFE folder), after links and ``..`` are resolved."""
    out, source = out.expanduser().resolve(), source.expanduser().resolve()
    return out == source or source in out.parents


def gdal_cache():  # noqa: ANN201 - a rasterio.Env
    """GDAL's block cache held to :data:`GDAL_CACHE_MB`: by default it grows to 5 % of the machine's memory
    with blocks of the scene read and the mask written, which a strip-by-strip pass never reads again."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def check_outputs(outputs: list[Path], overwrite: bool, probability_type: str, predictor: Predictor,
                  probabilities: str | Path | None, source: str | Path | None = None) -> None:
    """Refuse what cannot be written before anything is read: an output that is (or resolves to) the input
    is never written, even with ``overwrite``."""
    for p in outputs:
        if source is not None and is_same_path(p, Path(source)):
            raise ConfigError(f"{p} is the input scene {source}; write the mask elsewhere")
        if p.exists() and not overwrite:
            raise ConfigError(f"{p} exists; pass --overwrite to replace it")
    if probability_type not in PROBABILITY_TYPES:
        raise ConfigError(f"probabilities are written as {' or '.join(PROBABILITY_TYPES)}, got {probability_type!r}")
    if probabilities is not None and not isinstance(predictor.module, nn.Module):
        raise ConfigError(f"model {predictor.name!r} ({predictor.contract.framework}) gives classes, not "
                          "probabilities; leave out --probabilities")


def scene_reader(raster: Raster, normalizer: Normalizer, strips: list[tuple[int, int]], progress: bool,
                 counts: bool = False):  # noqa: ANN201
    """``read(r0, r1)``: rows, ``nodata(r0, r1)``: where a band of them is nodata, and ``normalize``: the
    scene's normalization. A scene read whole is normalized whole (a scene-level normalizer sees all of it);
    read in strips, a scene-level normalizer takes its statistics from a first streamed pass, and
    ``normalize`` is pointwise (it may be applied to tiles, so a strip is held once, unnormalized). With
    ``counts``, ``read`` gives the file's values (:meth:`bench.data.rasters.Raster.read_counts`: half the
    memory for uint16) and ``normalize`` makes them reflectance first, of a tile (a torch model) or of a
    strip (a scene model)."""
    if normalizer.level == "scene" and len(strips) > 1:
        bar = Progress(len(strips), "strips", "scene statistics", enabled=progress)

        def passing():  # noqa: ANN202
            for r0, r1 in strips:
                yield raster.read(r0, r1)
                bar.update(1)

        normalize = normalizer.scene_function(passing())
        bar.close()
    else:
        normalize = normalizer.scene_function([]) if normalizer.level != "scene" else normalizer.transform
    counts = counts and len(strips) > 1
    held = HeldRows()  # the nodata mask of each strip read, until its rows are written

    def read(r0: int, r1: int) -> np.ndarray:
        x = raster.read_counts(r0, r1) if counts else raster.read(r0, r1)
        held.keep(r0, raster.nodata(x))
        return x

    if counts:
        normalize = looked_up(raster, normalize)
    return read, (lambda r0, r1: held.take(r0, r1)[0]), normalize


def looked_up(raster: Raster, pointwise: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``pointwise(raster.reflectance(counts))`` of a window of :meth:`Raster.read_counts`: for 8- and 16-bit
    unsigned counts, a table of every value each band can hold, made once, so a tile is one look-up per
    band instead of eight passes (conversion, offset, scale, nodata, normalization); the same float32
    values as computing them. Its ``into(counts, out)`` writes them into ``out`` with NaN and inf as 0 (a
    model's input, :func:`bench.run.inference.input_batches`)."""
    tables: dict[tuple[np.dtype, bool], np.ndarray] = {}

    def looked(counts: np.ndarray, out: np.ndarray, nan_as_0: bool) -> np.ndarray:
        key = (counts.dtype, nan_as_0)
        if key not in tables:
            every = np.arange(np.iinfo(counts.dtype).max + 1, dtype=counts.dtype)
            every = np.ascontiguousarray(np.broadcast_to(every, (len(counts), 1, every.size)))
            table = np.array(pointwise(raster.reflectance(every)), dtype=np.float32)[:, 0]
            tables[key] = finite(table) if nan_as_0 else table
        for band, c, o in zip(tables[key], counts, out):
            np.take(band, c, out=o, mode="clip")  # every index is in range; clip writes out directly
        return out

    def into(counts: np.ndarray, out: np.ndarray) -> None:
        if counts.dtype in (np.uint8, np.uint16):
            looked(counts, out, True)
            return
        np.copyto(out, apply(counts), casting="unsafe")
        finite(out)

    def apply(counts: np.ndarray) -> np.ndarray:
        if counts.dtype not in (np.uint8, np.uint16):
            return pointwise(raster.reflectance(counts))
        return looked(counts, np.empty(counts.shape, dtype=np.float32), False)

    apply.into = into
    return apply


def scene_strips(predictor: Predictor, reader, raster: Raster, tiling: Tiling, strips: list[tuple[int, int]],  # noqa: ANN001
                 batch_size: int, device: str, fast: FastPaths, probabilities: bool, bar: Progress):  # noqa: ANN201
    """``(row0, row1, outputs)`` per strip: (1, ...) project class, then 4 probabilities if asked."""
    h, w = raster.height, raster.width
    read, _, normalize = reader
    patch = predictor.normalizer.transform if predictor.normalizer.level == "patch" else None
    if not isinstance(predictor.module, nn.Module):
        model: SceneModel = predictor.module
        yield from scene_model_strips(lambda r0, r1: normalize(read(r0, r1)), h, w, tiling, model,
                                      predictor.contract, strips,
                                      lambda rows: bar.update(-(-rows // tiling.stride) * -(-w // tiling.stride)),
                                      scene=(raster.path.stem, raster.scene_meta()))
        return
    predictor.module.eval()
    run = class_batches(fast, fast.prepare(predictor.module, device), device, probabilities)
    if len(strips) == 1:  # the whole scene, normalized as a whole
        yield from predict_strips(lambda r0, r1: normalize(read(r0, r1)), h, w, tiling, run, batch_size, patch,
                                  strips, bar.update)
        return
    per_tile = (lambda t: patch(normalize(t))) if patch else normalize
    yield from predict_strips(read, h, w, tiling, run, batch_size, per_tile, strips, bar.update)


class MaskWriter:
    """The class mask (and probabilities) written strip by strip into temporary tiled GeoTIFFs beside the
    outputs, then converted to cloud-optimised GeoTIFFs (DEFLATE, overviews) and renamed into place."""

    def __init__(self, out: Path, raster: Raster, predictor: Predictor, tiling: Tiling, fast: FastPaths,
                 probabilities: str | Path | None, probability_type: str) -> None:
        self.out, self.raster, self.prob_path = out, raster, Path(probabilities) if probabilities else None
        self.prob_type, self.nodata, self.counts = probability_type, 0, np.zeros(len(CLASSES), dtype=np.int64)
        self.fast = fast
        self.tags = {"model": predictor.name, **{k: str(v) for k, v in predictor.source.items()},
                     "bands": ",".join(predictor.bands), "source": str(raster.path),
                     "tile": str(tiling.tile), "overlap": str(tiling.overlap), "blend": tiling.blend,
                     "classes": json.dumps(dict(enumerate(CLASSES))), "nodata": str(NODATA),
                     "fast_paths": json.dumps(fast.describe()), "software": "cloudbench"}

    def __enter__(self) -> "MaskWriter":
        import rasterio

        self.parts: list[tuple[Path, Path]] = []
        self.mask = self._open(rasterio, self.out, 1, "uint8", NODATA)
        self.mask.write_colormap(1, colour_table())
        self.mask.set_band_description(1, "class")
        self.probs = None
        if self.prob_path is not None:
            nodata = NODATA if self.prob_type == "uint8" else float("nan")
            self.probs = self._open(rasterio, self.prob_path, len(CLASSES), self.prob_type, nodata)
            for i, name in enumerate(CLASSES, 1):
                self.probs.set_band_description(i, f"{name} probability" + (" (percent)" if self.prob_type == "uint8" else ""))
        return self

    def _open(self, rasterio, final: Path, count: int, dtype: str, nodata: float):  # noqa: ANN001, ANN202
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(f".{final.name}.partial")
        self.parts.append((part, final))
        dst = rasterio.open(part, "w", driver="GTiff", height=self.raster.height, width=self.raster.width,
                            count=count, dtype=dtype, crs=self.raster.crs, transform=self.raster.transform,
                            nodata=nodata, tiled=True, blockxsize=512, blockysize=512, BIGTIFF="IF_SAFER")
        dst.update_tags(**self.tags)
        return dst

    def write(self, r0: int, r1: int, outputs: np.ndarray, nodata: np.ndarray) -> None:
        """Rows ``r0:r1``: classes (and probabilities); ``nodata`` pixels get the nodata value."""
        from rasterio.windows import Window

        window = Window(0, r0, self.raster.width, r1 - r0)
        self.nodata += int(nodata.sum())
        classes = outputs[0].astype(np.uint8)
        classes[nodata] = NODATA
        self.counts += np.bincount(classes.ravel(), minlength=256)[:len(CLASSES)]
        self.mask.write(classes, 1, window=window)
        if self.probs is not None:
            p = outputs[1:]
            p = np.round(p * 100).astype(np.uint8) if self.prob_type == "uint8" else p.astype(np.float32)
            p[:, nodata] = NODATA if self.prob_type == "uint8" else np.nan
            self.probs.write(p, window=window)

    def __exit__(self, kind, error, trace) -> None:  # noqa: ANN001
        from rasterio.shutil import copy as copy_raster

        if kind is None:  # the share of each class among the valid pixels, what a catalogue's cloud cover reads
            self.mask.update_tags(**class_percentages(self.counts))
            for dst in filter(None, (self.mask, self.probs)):  # the runtime that ran, known once a batch has
                dst.update_tags(fast_paths=json.dumps(self.fast.describe()))
        for dst in (self.mask, self.probs):
            if dst is not None:
                dst.close()
        try:
            if kind is None:
                for (part, final), resampling in zip(self.parts, ["MODE", "AVERAGE"]):
                    cog = final.with_name(f".{final.name}.cog")
                    copy_raster(part, cog, driver="COG", compress="DEFLATE", blocksize=512, NUM_THREADS="ALL_CPUS",
                                overview_resampling=resampling, BIGTIFF="IF_SAFER")
                    os.replace(cog, final)
        finally:
            for part, final in self.parts:
                part.unlink(missing_ok=True)
                final.with_name(f".{final.name}.cog").unlink(missing_ok=True)


def class_percentages(counts: np.ndarray) -> dict[str, str]:
    """Tags ``<class>_percent`` (of the valid pixels, 2 decimals) and ``cloud_percent`` (thick + thin)."""
    total = max(int(counts.sum()), 1)
    tags = {f"{name}_percent": f"{100 * n / total:.2f}" for name, n in zip(CLASSES, counts)}
    return {**tags, "cloud_percent": f"{100 * (counts[1] + counts[2]) / total:.2f}"}


def colour_table() -> dict[int, tuple[int, int, int, int]]:
    """Class code -> RGBA, nodata transparent."""
    table = {i: (*(int(COLOURS[n][k:k + 2], 16) for k in (1, 3, 5)), 255) for i, n in enumerate(CLASSES)}
    return {**table, NODATA: (0, 0, 0, 0)}


def default_device() -> str:
    """cuda where there is a GPU, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"
