"""``bench score PRED.tif REF.tif``: masks made by any tool scored against reference masks, with evaluation's
metrics.

    from bench.run.score import pairs_of, score, table
    report = score(pairs_of(["sen2cor/T33_SCL.tif", "labels/T33.tif"]), "masks_sen2cor_scl", "masks_cloudsen12")
    print(table(report)); report["pooled"]["miou"]

Each side's codes are read through a code table (:class:`bench.models.masks.CodeTable`): a ``masks`` preset of
the registry by name (its ``codes``, ``bits`` and ``band``), a TOML or JSON file with those keys (or the code
table alone), or inline ``0=clear,1=cloud,255=nodata`` (``+`` joins classes). The label space is the finest
partition of the four classes in which every code of both tables lies inside one group
(:meth:`bench.core.labels.LabelMap.finest_space` over both); both sides fold code -> group. A pixel is left
out where either side is nodata (a code mapped to nodata, or the file's nodata value / mask band). PRED must be
on REF's grid (shape, CRS, transform), else it is refused naming both files; ``reproject`` resamples PRED
onto REF's grid with nearest neighbour instead.

The report (``--json``): ``schema``, ``pred_codes`` and ``ref_codes`` (the specs and their tables),
``label_space``, ``reproject``, ``pairs`` (name -> ``pred``, ``ref`` and :func:`bench.core.metrics.scores` with
the field's scores) and ``pooled`` (the same over every pair's pixels, with ``boundary`` at each tolerance of
:data:`bench.core.metrics.BOUNDARY_PX` and ``cloud_cover`` over the pairs).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.config import check_keys, read_toml
from bench.core.errors import ConfigError, DataError, UnknownNameError, did_you_mean
from bench.core.labels import IGNORE, EvalSpace, LabelMap
from bench.core.metrics import BOUNDARY_PX, NAN_RULE, boundary_confusions, boundary_summary, confusion, cover_summary, scores
from bench.core.registry import get_registry
from bench.models.masks import TABLE_KEYS, CodeTable, grid_differences

SCHEMA = "cloudbench score 1"
DEFAULT_CODES = "masks_cloudbench"
MASK_SUFFIXES = (".tif", ".tiff")


def masks_presets() -> list[str]:
    """Names of the registry's ``masks`` models (their code tables)."""
    return [e.name for e in get_registry().entries("model") if e.builder.name == "masks"]


def code_table(spec: str, where: str = "--codes") -> CodeTable:
    """The code table ``spec`` names: inline ``0=clear,1=cloud``, a ``.toml`` / ``.json`` file, or a preset."""
    if "=" in spec:
        return inline_table(spec, where)
    if spec.endswith((".toml", ".json")):
        return table_file(Path(spec), where)
    reg = get_registry()
    if spec in reg.names("model") and reg.get("model", spec).builder.name != "masks":
        raise ConfigError(f"{where} {spec!r}: a model, not a masks preset (type masks); bench list models "
                          "'masks_*' shows the presets")
    if spec not in reg.names("model"):
        raise UnknownNameError(f"{where} {spec!r}: not a masks preset, a .toml / .json code table or an inline "
                               f"table CODE=CLASS,...{did_you_mean(spec, masks_presets())}")
    return CodeTable.from_settings(reg.get("model", spec).settings, f"{where} {spec}")


def inline_table(spec: str, where: str) -> CodeTable:
    """``0=clear,1=cloud,255=nodata`` (``3=clear+cloud_shadow`` for a set)."""
    codes = {}
    for item in spec.split(","):
        code, eq, names = item.partition("=")
        if not eq or not code.strip() or not names.strip():
            raise ConfigError(f"{where} {spec!r}: expected CODE=CLASS, comma-separated, e.g. 0=clear,1=cloud,255=nodata")
        codes[code.strip()] = [n.strip() for n in names.split("+")]
    return CodeTable.parse(codes, where=f"{where} {spec!r}")


def table_file(path: Path, where: str) -> CodeTable:
    """A TOML or JSON file: ``codes`` (with optional ``bits`` and ``band``), or the code table alone."""
    if not path.is_file():
        raise ConfigError(f"{where} {path}: no such file")
    try:
        doc = read_toml(path) if path.suffix == ".toml" else json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} {path}: malformed JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where} {path}: expected a table of codes")
    if "codes" not in doc:
        return CodeTable.parse(doc, where=f"{where} {path}")
    check_keys(doc, TABLE_KEYS, f"{where} {path}")
    return CodeTable.from_settings(doc, f"{where} {path}")


@dataclass(frozen=True)
class Pair:
    """A predicted mask file and its reference, under a name (the reference's stem)."""

    pred: Path
    ref: Path
    name: str


def pairs_of(files: Sequence[str] = (), pred_dir: str | None = None, ref_dir: str | None = None,
             pairs_file: str | None = None) -> list[Pair]:
    """Pairs from ``PRED REF`` paths, from folders matched by file stem, or from a list file, one way only."""
    ways = [bool(files), bool(pred_dir or ref_dir), bool(pairs_file)]
    if sum(ways) != 1:
        raise ConfigError("give the masks to score one way: PRED REF pairs, --pred DIR --ref DIR, or --pairs FILE")
    if pairs_file:
        return list_pairs(Path(pairs_file))
    if pred_dir or ref_dir:
        if not (pred_dir and ref_dir):
            raise ConfigError("--pred DIR and --ref DIR go together")
        return folder_pairs(Path(pred_dir), Path(ref_dir))
    if len(files) % 2:
        raise ConfigError(f"files come in pairs, PRED REF [PRED REF ...]; got {len(files)}")
    return named([(Path(p), Path(r)) for p, r in zip(files[::2], files[1::2])])


def named(paths: list[tuple[Path, Path]]) -> list[Pair]:
    """Each pair named by its reference's stem (its path where two stems are alike); missing files refused."""
    for path in (p for pair in paths for p in pair):
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    stems = [r.stem for _, r in paths]
    return [Pair(p, r, r.stem if stems.count(r.stem) == 1 else str(r)) for p, r in paths]


def folder_pairs(pred_dir: Path, ref_dir: Path) -> list[Pair]:
    """The GeoTIFFs of two folders matched by file stem; a file without its match on the other side is refused."""
    found = []
    for folder in (pred_dir, ref_dir):
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder")
        found.append({p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in MASK_SUFFIXES})
    preds, refs = found
    for a, b, side in ((refs, preds, pred_dir), (preds, refs, ref_dir)):
        unmatched = sorted(set(a) - set(b))
        if unmatched:
            raise DataError(f"{side} has no mask for {', '.join(unmatched)} (files are matched by stem)")
    if not refs:
        raise DataError(f"{ref_dir}: no GeoTIFF (.tif) to score")
    return named([(preds[s], refs[s]) for s in sorted(refs)])


def list_pairs(path: Path) -> list[Pair]:
    """A list file: one ``PRED REF`` pair a line (relative to the file), ``#`` comments and blank lines skipped."""
    if not path.is_file():
        raise ConfigError(f"--pairs {path}: no such file")
    paths = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise ConfigError(f"{path}:{n}: expected PRED REF, got {line!r}")
        paths.append(tuple(path.parent / p for p in parts))
    if not paths:
        raise ConfigError(f"{path}: no pairs")
    return named(paths)


def label_space(a: LabelMap, b: LabelMap) -> EvalSpace:
    """The finest partition of the four classes in which every code of ``a`` and of ``b`` lies in one group."""
    return LabelMap(dict(enumerate([*a.codes.values(), *b.codes.values()]))).finest_space()


def grid_of(src: Any) -> tuple[tuple[int, int], Any, Any]:
    """``(shape, crs, transform)`` of an open rasterio dataset."""
    return (src.height, src.width), src.crs, src.transform


def read_on(pair: Pair, table: CodeTable, grid: tuple, reproject: bool) -> tuple[np.ndarray, np.ndarray]:
    """(codes, valid) of ``pair.pred`` on the reference's ``grid``: as it is where the grids agree, resampled
    with nearest neighbour with ``reproject``, else refused naming both files."""
    import rasterio

    with rasterio.open(pair.pred) as src:
        differ = grid_differences(grid_of(src), grid)
        if not differ:
            return table.read(src, str(pair.pred))
        if not reproject:
            raise DataError(f"{pair.pred} is not on the grid of {pair.ref}: {'; '.join(differ)} (PRED vs REF); "
                            "pass --reproject to resample PRED onto REF's grid (nearest neighbour)")
        if src.crs is None or grid[1] is None:
            raise DataError(f"cannot reproject {pair.pred} onto {pair.ref}: "
                            f"{pair.pred if src.crs is None else pair.ref} has no CRS")
        values = warped(src, table.band, grid, str(pair.pred))
    return table.decode(values, ~np.isnan(values), str(pair.pred))


def warped(src: Any, band: int, grid: tuple, where: str) -> np.ndarray:
    """float64 values of ``band`` resampled onto ``grid`` with nearest neighbour; NaN where the file has no
    valid pixel (outside it, or its nodata value / mask band)."""
    from rasterio.warp import Resampling, reproject

    if band > src.count:
        raise DataError(f"{where}: the code table reads band {band}; the file has {src.count}")
    values = src.read(band).astype(np.float64)
    values[src.read_masks(band) == 0] = np.nan
    out = np.full(grid[0], np.nan)
    reproject(values, out, src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
              dst_transform=grid[2], dst_crs=grid[1], dst_nodata=np.nan, resampling=Resampling.nearest)
    return out


def pair_groups(pair: Pair, pred: CodeTable, ref: CodeTable, space: EvalSpace,
                reproject: bool) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) predicted and reference groups of one pair on the reference's grid, IGNORE where either side is
    nodata."""
    import rasterio

    with rasterio.open(pair.ref) as src:
        ref_codes, ref_valid = ref.read(src, str(pair.ref))
        grid = grid_of(src)
    pred_codes, pred_valid = read_on(pair, pred, grid, reproject)
    keep = ref_valid & pred_valid
    pred_groups = np.where(keep, pred.labels.reference_groups(np.where(keep, pred_codes, 0), space), IGNORE)
    ref_groups = np.where(keep, ref.labels.reference_groups(np.where(keep, ref_codes, 0), space), IGNORE)
    return pred_groups.astype(np.uint8), ref_groups.astype(np.uint8)


def score(pairs: Sequence[Pair], pred_codes: str = DEFAULT_CODES, ref_codes: str = DEFAULT_CODES,
          reproject: bool = False, boundary_px: tuple[int, ...] = BOUNDARY_PX) -> dict[str, Any]:
    """The report of ``pairs`` scored (see the module docstring for its keys)."""
    pred, ref = code_table(pred_codes, "--pred-codes"), code_table(ref_codes, "--ref-codes")
    space = label_space(pred.labels, ref.labels)
    names, groups, k = space.names, space.to_dict(), len(space.names)
    total, near, per_pair = np.zeros((k, k), dtype=np.int64), {}, {}
    for pair in pairs:
        p, r = pair_groups(pair, pred, ref, space, reproject)
        cm = confusion(r, p, k)
        total += cm
        for px, c in boundary_confusions(r, p, k, boundary_px).items():
            near[px] = near.get(px, 0) + c
        per_pair[pair.name] = {"pred": str(pair.pred), "ref": str(pair.ref), **scores(cm, names, groups)}
    pooled = {**scores(total, names, groups), "boundary": boundary_summary(near, int(total.sum()), names, groups),
              "cloud_cover": cover_summary(per_pair, groups, names), "nan_rule": NAN_RULE}
    return {"schema": SCHEMA, "pred_codes": {"spec": pred_codes, "codes": pred.labels.to_dict(), "bits": list(pred.bits)},
            "ref_codes": {"spec": ref_codes, "codes": ref.labels.to_dict(), "bits": list(ref.bits)},
            "label_space": groups, "reproject": reproject, "pairs": per_pair, "pooled": pooled}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def table(report: dict[str, Any]) -> str:
    """The report as text: a row per pair and the pooled row (pixels, mIoU, accuracy, IoU per group, cloud and
    shadow BOA), then the pooled scores at each boundary tolerance and the cloud-cover error."""
    from tabulate import tabulate

    groups = list(report["label_space"])
    rows = [[name, *score_cells(m, groups)] for name, m in report["pairs"].items()]
    rows.append(["pooled", *score_cells(report["pooled"], groups)])
    headers = ["pair", "pixels", "mIoU", "accuracy", *[f"IoU {g}" for g in groups], "BOA cloud", "BOA shadow"]
    space = "; ".join(f"{g} = {' + '.join(c)}" for g, c in report["label_space"].items())
    lines = [f"label space: {space}", tabulate(rows, headers=headers, disable_numparse=True)]
    bounds = [[f"{px} px", _fmt(b["kept"]), _fmt(b["miou"]), _fmt(b["accuracy"]), _fmt(b["boa_cloud"])]
              for px, b in report["pooled"]["boundary"].items()]
    lines += ["", tabulate(bounds, headers=["boundary", "kept", "mIoU", "accuracy", "BOA cloud"], disable_numparse=True)]
    cover = report["pooled"]["cloud_cover"]
    if cover:
        lines += ["", f"cloud cover (predicted - reference, fraction of a pair's valid pixels): mean absolute "
                      f"error {cover['mae']:.3f}, bias {cover['bias']:+.3f} over {cover['scenes']} pairs"]
    return "\n".join(lines)


def score_cells(m: dict[str, Any], groups: list[str]) -> list[str]:
    """A row's cells: pixels, mIoU, accuracy, IoU of each group, cloud and shadow BOA."""
    binary = [(m["field"].get(kind) or {}).get("boa") for kind in ("cloud", "shadow")]
    return [str(m["n_pixels"]), _fmt(m["miou"]), _fmt(m["accuracy"]), *[_fmt(m["iou"][g]) for g in groups],
            *[_fmt(b) for b in binary]]
