"""``bench assess``: will this mask hold on my scenes? Label-free estimates for scenes without labels.

Each model (a pretrained one by name, or a run trained here) is calibrated on a labelled split: a run on
its own validation split (the calibration its evaluation stored beside the model), a pretrained model on
``calibrate_on`` (default: the first embedded scenario of :data:`CALIBRATION_SCENARIOS` whose validation
split has its bands; the calibration is cached in the user cache). The scenes are then read as ``bench
predict`` reads them (GeoTIFF or L1C ``.SAFE``, strip by strip) and pass through the same inference path
as evaluation, with the signals of :mod:`bench.run.label_free` accumulated over their valid pixels. No
reference is read, even for a scenario's test split.

Each row (model x normalizer) gets estimated accuracy and mIoU (``value`` from the first method of
:data:`PREFERRED` that has a figure, ``low`` / ``high`` the range of every estimator's figure), the
signals, the agreement with the other models (cloud against not cloud, the space they all share) and
agreement on the line among models calibrated on the same split in the same space, and a verdict.

The report (``bench assess --json``; a shift scenario gives ``{"schema", "severities": [report, ...]}``)::

    {"schema": 1, "severity": null | k, "scenes": [scene id, ...],
     "models": [{"name", "normalizer", "source": {...}, "calibration": {source, space, temperature, ...},
                 "estimates": {"accuracy": {"value", "low", "high", "method"}, "miou": {...},
                               "by_method": {"accuracy": {method: v}, "miou": {method: v}, "iou": {...}}},
                 "signals": {pixels, confidence, entropy, atc_fraction, cloud_fraction, consistency,
                             input_shift: {bands, outside, distance, flagged}},
                 "verdict": "holds | degraded | outside | unknown: why",
                 "per_scene": {scene: {"signals", "estimates"}}}, ...],
     "agreement": {"space": "cloud / not_cloud", "matrix": [[rate, ...], ...]},
     "recommended": index into models | null}
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import ConfigError, DataError
from bench.core.label_free import Signals, agreement_on_the_line, flagged_bands, input_shift, pixel_agreement
from bench.core.labels import EvalSpace
from bench.core.progress import Progress
from bench.core.registry import get_registry
from bench.core.results import CACHE, read_result
from bench.data.rasters import check_scene, open_scene
from bench.data.sanity import band_stats, normalized
from bench.data.scenarios import load_scenario
from bench.data.shifts import shifted
from bench.data.splits import load_split
from bench.run.calibration import FreeOfLabels
from bench.run.evaluate import SceneInput, predicted_strips
from bench.run.inference import FastPaths, HeldRows, Tiling, model_tiling
from bench.run.label_free import SceneSignals, cloud_groups, never_predicted, summary
from bench.models.base import MASKS, Contract, contract_of
from bench.run.plan import NATIVE, Plan, RunConfig, plan, zero_shot_splits
from bench.run.predict import Predictor, scene_reader
from bench.run.training import train_or_load

SCHEMA = 1
#: an estimated drop from the in-distribution figure below this is "holds"
HOLDS_BELOW = 0.05
#: the estimate each metric reports first, and the order the others back it up in: the order of their mean
#: absolute error across datasets on the committed board (leaderboards/label_free.md, the cross-dataset
#: family: scenes unlike the training data, what an assessment is for; across months mIoU's order is the same)
PREFERRED = {"accuracy": ("aol", "atc", "doc", "calibrated", "confidence"),
             "miou": ("calibrated", "confidence", "doc")}


@dataclass
class Row:
    """One model x normalizer on the assessed scenes."""

    predictor: Predictor
    calibration: dict[str, Any] | None
    reference_quantiles: list | None  # of the inputs it was trained (or calibrated) on
    id_maps: dict[str, np.ndarray] = field(default_factory=dict)  # predicted groups of the calibration split
    signals: dict[str, SceneSignals] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # predicted groups of each assessed scene
    samples: list[list[np.ndarray]] = field(default_factory=list)  # normalized input values per band
    fast: FastPaths | None = None  # how its model runs (a zoo model: fp32 under auto, as upstream)

    @property
    def space(self) -> EvalSpace:
        """The label space it was calibrated in (cloud / not cloud without a calibration)."""
        groups = (self.calibration or {}).get("space")
        return EvalSpace.parse(groups, "calibration space") if groups else CLOUD_SPACE


def scene_signals(row: Row, scene: SceneInput, tiling: Tiling, batch_size: int, device: str,
                  fast: FastPaths) -> None:
    """Predict ``scene`` and add its signals, predicted groups and input sample to ``row``."""
    norm, lut = row.predictor.normalizer, row.space.class_lut()
    held, read = HeldRows(), scene.read

    def reading(r0: int, r1: int) -> np.ndarray:
        x = read(r0, r1)
        held.keep(r0, np.isfinite(x).all(0))
        row.samples.append([v[::97] for v in x.reshape(len(x), -1)])
        return x

    tapped = SceneInput(scene.id, scene.height, scene.width, reading, None, scene.meta, scene.strips)
    tile_fn = (lambda t: norm.transform(t)) if norm.level == "patch" else None
    never = never_predicted(row.space, row.predictor.contract)
    acc = SceneSignals(Signals(len(row.space.names), lut, row.calibration, never))
    pred = np.full((scene.height, scene.width), 255, dtype=np.uint8)
    reads = not hasattr(row.predictor.module, "bind")  # masks from files read no pixels: their nodata is 255
    for r0, r1, out in predicted_strips(row.predictor.module, tapped, tiling, batch_size, device, fast, tile_fn,
                                        row.predictor.contract, probabilities=True):
        valid = held.take(r0, r1)[0] if reads else out[0] != 255
        pred[r0:r1] = np.where(valid, lut[out[0].astype(np.uint8)], 255)
        acc.add(out, pred[r0:r1], valid)
    row.signals[scene.id], row.maps[scene.id] = acc, pred


def row_record(row: Row, aol: float | None) -> dict[str, Any]:
    """The row's estimates, signals and verdict in the documented schema."""
    total = Signals(len(row.space.names), row.space.class_lut(), row.calibration,
                    never_predicted(row.space, row.predictor.contract))
    for s in row.signals.values():
        total.merge(s.signals)
    rec = summary(total, row.space)
    rec["estimates"]["accuracy"]["aol"] = aol
    shift = None
    if row.reference_quantiles is not None and row.samples:
        values = [np.concatenate([s[b] for s in row.samples]) for b in range(len(row.samples[0]))]
        shift = input_shift(np.array(row.reference_quantiles, dtype=float), values)
        shift = {**shift, "bands": row.predictor.bands, "flagged": flagged_bands(shift, row.predictor.bands)}
    rec["signals"]["input_shift"] = shift
    estimates = {m: headline(rec["estimates"][m], m) for m in ("accuracy", "miou")}
    p = row.predictor
    return {"name": p.name, "normalizer": p.source.get("norm"),
            "source": {k: str(v) for k, v in p.source.items()}, "calibration": row.calibration,
            "estimates": {**estimates, "by_method": rec["estimates"]}, "signals": rec["signals"],
            "verdict": verdict(estimates, row.calibration, shift, p.source.get("mode") != "zero-shot"),
            "per_scene": {k: summary(s.signals, row.space) for k, s in row.signals.items()}}


def headline(by_method: dict[str, float | None], metric: str) -> dict[str, Any]:
    """``{value, low, high, method}``: the preferred method's figure, and the range of all of them."""
    found = [(m, by_method.get(m)) for m in PREFERRED[metric] if by_method.get(m) is not None]
    if not found:
        return {"value": None, "low": None, "high": None, "method": None}
    values = [v for _, v in found]
    return {"value": found[0][1], "low": min(values), "high": max(values), "method": found[0][0]}


def verdict(estimates: dict[str, dict[str, Any]], calibration: dict[str, Any] | None,
            shift: dict[str, Any] | None, trained_here: bool = True) -> str:
    """``holds``, ``degraded``, ``outside`` or ``unknown``, with the reason after a colon.

    ``outside`` is for a model trained here, whose training inputs are known: bands whose values lie
    outside its training P1-P99 far more often than the 2 % expected. For a pretrained model the reference
    is only its calibration split, so such bands are named as a caveat, not as the verdict."""
    flagged = (shift or {}).get("flagged") or []
    worst = max((o for o in (shift or {}).get("outside", []) if o is not None), default=0.0)
    where = f"bands {', '.join(flagged)}: up to {worst:.0%} of values outside P1-P99, 2 % expected"
    if flagged and trained_here:
        return f"outside: the inputs lie outside what it was trained on ({where}): retrain, or use another row"
    caveat = f"; inputs differ from its calibration split ({where})" if flagged else ""
    est, base = estimates["miou"]["value"], (calibration or {}).get("miou")
    if est is None or base is None:
        return "unknown: no calibrated estimate (the model gives no probabilities or was not calibrated)" + caveat
    drop = base - est
    kind = "holds" if drop < HOLDS_BELOW else "degraded"
    return f"{kind}: estimated mIoU {est:.3f}, {drop:+.3f} below its in-distribution {base:.3f}{caveat}"


def cloud_maps(row: Row) -> Iterator[tuple[str, np.ndarray]]:
    """Each assessed scene's prediction as cloud (1) / not cloud (0), 255 where not predicted."""
    cloud = np.zeros(256, dtype=np.uint8)
    cloud[255] = 255
    cloud[cloud_groups(row.space)] = 1
    for k, m in row.maps.items():
        yield k, cloud[m]


def agreement_matrix(rows: list[Row]) -> list[list[float | None]]:
    """Pixel agreement (cloud / not cloud) of every pair of rows over the assessed scenes."""
    maps = [dict(cloud_maps(r)) for r in rows]
    return [[agreement_rate(a, b) for b in maps] for a in maps]


def aol_estimates(rows: list[Row]) -> list[float | None]:
    """Agreement on the line among the rows calibrated on the same split in the same label space (ID:
    their calibration maps)."""
    out: list[float | None] = [None] * len(rows)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.calibration and r.id_maps:
            groups.setdefault(repr((sorted(r.calibration["source"].items()), r.space.names)), []).append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        pairs = [(a, b) for n, a in enumerate(members) for b in members[n + 1:]]
        rates = [[agreement_rate(rows[a].id_maps, rows[b].id_maps), agreement_rate(rows[a].maps, rows[b].maps)]
                 for a, b in pairs]
        rates = np.array([r for r in rates if None not in r])
        if not len(rates):
            continue
        acc = np.array([rows[i].calibration["accuracy"] for i in members])
        for i, v in zip(members, agreement_on_the_line(rates[:, 0], rates[:, 1], acc)):
            out[i] = float(v)
    return out


def agreement_rate(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float | None:
    """The fraction of pixels two sets of maps agree on, over their common scenes."""
    counts = [pixel_agreement(a[k], b[k]) for k in a if k in b]
    n = sum(c for _, c in counts)
    return sum(x for x, _ in counts) / n if n else None


def assess(rows: list[Row], scenes: Iterable[tuple[str, Any]], tile: int = 512, batch_size: int = 2,
           device: str = "cpu", fast: FastPaths | None = None, progress: bool = True) -> dict[str, Any]:
    """Every row on every scene (``(id, row -> SceneInput)``, as :func:`file_scenes` gives them); the
    report in the documented schema (``bench assess --json``)."""
    fast = fast or FastPaths()
    scenes = list(scenes)
    bar = Progress(len(scenes) * len(rows), "scene x model", "assess", enabled=progress)
    names = []
    for sid, scene_of in scenes:
        names.append(sid)
        for row in rows:
            tiling = model_tiling(row.predictor.contract, tile)
            scene_signals(row, scene_of(row), tiling, batch_size, device, row.fast or fast)
            bar.update(1, status=f"{sid} / {row.predictor.name}")
    bar.close()
    aol = aol_estimates(rows)
    models = [row_record(r, a) for r, a in zip(rows, aol)]
    return {"schema": SCHEMA, "scenes": names, "models": models,
            "agreement": {"space": "cloud / not_cloud", "matrix": agreement_matrix(rows)},
            "recommended": recommended(models)}


def recommended(models: list[dict[str, Any]]) -> int | None:
    """The index of the row to trust: the highest estimated mIoU among rows whose inputs are not outside
    what they were trained on (else among all)."""
    scored = [(i, m) for i, m in enumerate(models) if m["estimates"]["miou"]["value"] is not None]
    inside = [(i, m) for i, m in scored if not m["verdict"].startswith("outside")] or scored
    return max(inside, key=lambda im: im[1]["estimates"]["miou"]["value"])[0] if inside else None


CLOUD_SPACE = EvalSpace.parse({"cloud": ["cloud"], "not_cloud": ["not_cloud"]}, "cloud / not cloud")
#: embedded scenarios whose validation split calibrates a pretrained model, the first that has its bands
CALIBRATION_SCENARIOS = ("samples_intra", "samples_temporal")


def calibration_plan(model: str, scenario: str | None, bands: tuple[str, ...]) -> Plan:
    """The zero-shot run of ``model`` on ``scenario`` (default: the first of
    :data:`CALIBRATION_SCENARIOS` whose validation data has its bands), planned under the user cache."""
    names = [scenario] if scenario else list(CALIBRATION_SCENARIOS)
    for name in names:
        if "val" in zero_shot_splits(bands, load_scenario(name)):
            p = plan(RunConfig(model=model, scenario=name, out=str(CACHE / "assess"), figure=False,
                               leaderboards=False, wandb="off", progress=False))
            # a model that cannot predict every class of the scenario's space is scored in the one it can
            return replace(p, space=CLOUD_SPACE) if coarser_than(p.contract, p.space) else p
    raise ConfigError(f"model {model!r} needs bands {', '.join(bands)}: no validation split of "
                      f"{', '.join(names)} has them to calibrate on; pass --calibrate-on SCENARIO")


def coarser_than(contract: Contract, space: EvalSpace) -> bool:
    """Whether one of the model's outputs stands for classes of several groups of ``space`` (``not_cloud``
    in a space that tells clear from shadow): such a model is calibrated cloud against not cloud."""
    lut = space.class_lut()
    return any(len({int(lut[c]) for c in classes}) > 1 for classes in contract.outputs.codes.values())


def row_of(p: Plan, device: str, fast: FastPaths) -> Row:
    """A model ready to assess: loaded (or built), calibrated on ``p``'s validation split (cached)."""
    trained = train_or_load(p)
    fast = replace(fast, exports=p.exports, ran={})
    norm = trained.normalizer
    sanity = ({"train": band_stats(normalized(p.splits["train"], norm))} if "train" in p.splits else {})
    free = FreeOfLabels(p, trained, trained.module, device, fast, sanity)
    predictor = Predictor(p.cfg.model, trained.module, norm, list(p.bands), p.contract, p.recipe.patch_size,
                          source={"model": p.cfg.model, "norm": p.cfg.norm, "mode": p.mode,
                                  "calibrated_on": p.scenario.name})
    maps = {k[4:]: v for k, v in free.maps.items() if k.startswith("val/")}
    return Row(predictor, free.calibration, free.reference, maps, fast=fast)


def masks_row(model: str, root: str | None) -> Row:
    """A model of masks made by another tool (``--masks DIR``), on the assessed scenes: it takes part in the
    agreement between rows; with no probabilities and no calibration its estimates are unknown."""
    entry = get_registry().get("model", model).with_settings({"root": root} if root else {}, "--masks")
    built = entry.build(in_channels=0)
    norm = get_registry().get("norm", NATIVE).build()
    contract = contract_of(entry)
    return Row(Predictor(model, built.module, norm, [], contract, source={"model": model, "norm": NATIVE,
                                                                          "mode": "zero-shot"}), None, None)


def is_masks(model: str) -> bool:
    """Whether ``model`` reads masks made by another tool."""
    return contract_of(get_registry().get("model", model)).framework == MASKS


def run_plan(result_path: Path) -> Plan:
    """The plan of a stored result (``--run RESULT.json``): its model, normalizer, scenario and recipe."""
    result = read_result(result_path)
    if result is None:
        raise DataError(f"--run {result_path}: not a result JSON (a run's results/<scenario>/*.json)")
    c = result["config"]
    fields = {k: c[k] for k in ("model", "norm", "scenario", "adapt", "seed", "finetune", "weights", "recipe",
                                "data_root") if k in c}
    return plan(RunConfig(**fields, out=str(result_path.parents[2]), figure=False, leaderboards=False,
                          wandb="off", progress=False))


def file_scenes(paths: list[Path], bands: list[str] | None, scale: float | None, offset: float,
                tile: int) -> Iterator[tuple[str, Any]]:
    """``(scene id, input for a row)`` of each GeoTIFF or .SAFE, read as ``bench predict`` reads it."""
    for path in paths:
        def scene(row: Row, path: Path = path) -> SceneInput:
            raster = open_scene(path, bands, scale, offset).select(row.predictor.bands)
            if raster.wanted:  # a model of masks from files reads none of the scene's bands
                check_scene(raster)
            strips = model_tiling(row.predictor.contract, tile).strips(raster.height, raster.width)
            read, _, normalize = scene_reader(raster, row.predictor.normalizer, strips, False)
            return SceneInput(path.name, raster.height, raster.width, lambda r0, r1: normalize(read(r0, r1)),
                              None, raster.scene_meta(), strips)
        yield path.name, scene


def split_scenes(scenario: str, severity: int | None) -> Iterator[tuple[str, Any]]:
    """``(scene id, input for a row)`` of a scenario's test split (at a shift's severity); no reference
    is read."""
    sc = load_scenario(scenario)
    shift = get_registry().get("shift", sc.shift["type"]) if severity is not None else None
    ids = [s.id for s in load_split(sc, "test").scenes]
    for i, sid in enumerate(ids):
        def scene(row: Row, i: int = i) -> SceneInput:
            split = load_split(sc, "test", bands=row.predictor.bands)
            if shift is not None:
                split = shifted(split, shift, severity, row.predictor.bands)
            s, norm = split.scenes[i], row.predictor.normalizer
            image = s.image if norm.level == "patch" else norm.transform(s.image)
            return SceneInput(s.id, *image.shape[1:], lambda r0, r1: image[:, r0:r1], None, s.meta,
                              [(0, image.shape[1])])
        yield sid, scene


def model_bands(model: str) -> tuple[str, ...]:
    """The bands a pretrained model takes (its contract's); a model trained here is refused."""
    contract = contract_of(get_registry().get("model", model))
    if not contract.pretrained:
        raise ConfigError(f"model {model!r} is trained here, not pretrained: pass --run with one of its results")
    return tuple(contract.bands) if contract.framework != MASKS else ()


def severities(scenario: str | None) -> list[int | None]:
    """A shift scenario's severities; ``[None]`` for any other scenario or for scenes."""
    shift = load_scenario(scenario).shift if scenario else None
    return list(shift["severities"]) if shift else [None]


def _fmt(v: float | None, pct: bool = False) -> str:
    return "-" if v is None else f"{v:.0%}" if pct else f"{v:.3f}"


def table(report: dict[str, Any], severity: int | None = None) -> str:
    """The terminal table of a report: one row per model x normalizer, the recommendation below."""
    from tabulate import tabulate

    rows = []
    matrix = report["agreement"]["matrix"]
    for i, m in enumerate(report["models"]):
        e, s, cal = m["estimates"], m["signals"], m["calibration"] or {}
        others = [v for j, v in enumerate(matrix[i]) if j != i and v is not None]
        est = [f"{_fmt(e[k]['value'])} [{_fmt(e[k]['low'])}-{_fmt(e[k]['high'])}] {e[k]['method'] or ''}"
               for k in ("accuracy", "miou")]
        shift = s.get("input_shift") or {}
        rows.append([f"{m['name']}/{m['normalizer']}", *est, f"{_fmt(cal.get('accuracy'))} / {_fmt(cal.get('miou'))}",
                     _fmt(s.get("confidence")), _fmt(s.get("cloud_fraction"), True),
                     ",".join(shift.get("flagged") or []) or "-", _fmt(np.mean(others)) if others else "-",
                     m["verdict"].split(":")[0]])
    head = ["model/norm", "est. accuracy [range] method", "est. mIoU [range] method", "in-dist. acc / mIoU",
            "confidence", "cloud", "bands outside", "agreement", "verdict"]
    title = f"{len(report['scenes'])} scenes" + (f", severity {severity}" if severity is not None else "")
    best = report["recommended"]
    lines = [title, tabulate(rows, head, tablefmt="simple")]
    lines += [f"{m['name']}/{m['normalizer']}: {m['verdict']}" for m in report["models"]]
    lines.append("recommended: " + (f"{report['models'][best]['name']}/{report['models'][best]['normalizer']}"
                                    if best is not None else "none (no row has a calibrated estimate)"))
    return "\n".join(lines)
