"""``bench assess``: will this mask hold on my scenes? Label-free estimates for scenes without labels.

Each model (a pretrained one by name, or a run trained here) is calibrated on a labelled split: a run on
its own validation split (the calibration its evaluation stored beside the model), a pretrained model on
``calibrate_on`` (default: the first embedded scenario of :data:`CALIBRATION_SCENARIOS` whose validation
split has its bands; the calibration is cached in the user cache). The scenes are then read as ``bench
predict`` reads them (GeoTIFF or L1C ``.SAFE``, strip by strip) and pass through the same inference path
as evaluation, with the signals of :mod:`bench.run.label_free` accumulated over their valid pixels. No
reference is read, even for a scenario's test split.

Each row (model x normalizer) gets estimated accuracy and mIoU (``value`` from the method that did best on
the committed label-free board, ``low`` / ``high`` the range of every estimator's figure), the signals,
the agreement with the other models (cloud against not cloud, the space they all share) and agreement on
the line among models calibrated on the same split, and a verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.label_free import Signals, agreement_on_the_line, pixel_agreement
from bench.core.labels import EvalSpace
from bench.data.sanity import band_samples
from bench.core.label_free import flagged_bands, input_shift
from bench.run.evaluate import SceneInput, predicted_strips
from bench.run.inference import FastPaths, HeldRows, Tiling
from bench.run.label_free import SceneSignals, cloud_groups, summary
from bench.run.predict import Predictor

SCHEMA = 1
#: an estimated drop from the in-distribution figure below this is "holds"
HOLDS_BELOW = 0.05
#: the estimate each metric reports first, and the order the others back it up in
PREFERRED = {"accuracy": ("aol", "atc", "calibrated", "doc", "confidence"),
             "miou": ("calibrated", "doc", "confidence")}


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

    @property
    def space(self) -> EvalSpace:
        """The label space it was calibrated in (cloud / not cloud without a calibration)."""
        groups = (self.calibration or {}).get("space") or {"cloud": ["cloud"], "not_cloud": ["not_cloud"]}
        return EvalSpace.parse(groups, "calibration space")


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
    acc = SceneSignals(Signals(len(row.space.names), lut, row.calibration))
    pred = np.full((scene.height, scene.width), 255, dtype=np.uint8)
    for r0, r1, out in predicted_strips(row.predictor.module, tapped, tiling, batch_size, device, fast, tile_fn,
                                        row.predictor.contract, probabilities=True):
        valid = held.take(r0, r1)[0]
        pred[r0:r1] = np.where(valid, lut[out[0].astype(np.uint8)], 255)
        acc.add(out, pred[r0:r1], valid)
    row.signals[scene.id], row.maps[scene.id] = acc, pred


def row_record(row: Row, aol: float | None) -> dict[str, Any]:
    """The row's estimates, signals and verdict in the documented schema."""
    total = Signals(len(row.space.names), row.space.class_lut(), row.calibration)
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
    return {"name": p.name, "normalizer": p.source.get("norm", p.normalizer.name if hasattr(p.normalizer, "name") else "?"),
            "source": {k: str(v) for k, v in p.source.items()}, "calibration": row.calibration,
            "estimates": {**estimates, "by_method": rec["estimates"]}, "signals": rec["signals"],
            "verdict": verdict(estimates, row.calibration, shift),
            "per_scene": {k: summary(s.signals, row.space) for k, s in row.signals.items()}}


def headline(by_method: dict[str, float | None], metric: str) -> dict[str, Any]:
    """``{value, low, high, method}``: the preferred method's figure, and the range of all of them."""
    found = [(m, by_method.get(m)) for m in PREFERRED[metric] if by_method.get(m) is not None]
    if not found:
        return {"value": None, "low": None, "high": None, "method": None}
    values = [v for _, v in found]
    return {"value": found[0][1], "low": min(values), "high": max(values), "method": found[0][0]}


def verdict(estimates: dict[str, dict[str, Any]], calibration: dict[str, Any] | None,
            shift: dict[str, Any] | None) -> str:
    """``holds``, ``degraded``, ``outside`` or ``unknown``, with the reason after a colon."""
    if shift and shift["flagged"]:
        worst = max(o for o in shift["outside"] if o is not None)
        return (f"outside: bands {', '.join(shift['flagged'])} lie outside the training P1-P99 (up to "
                f"{worst:.0%} of values, 2 % expected): retrain, or use another row")
    est, base = estimates["miou"]["value"], (calibration or {}).get("miou")
    if est is None or base is None:
        return "unknown: no calibrated estimate (the model gives no probabilities or was not calibrated)"
    drop = base - est
    if drop < HOLDS_BELOW:
        return f"holds: estimated mIoU {est:.3f}, {drop:+.3f} below its in-distribution {base:.3f}"
    return f"degraded: estimated mIoU {est:.3f}, {drop:.3f} below its in-distribution {base:.3f}"


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
    out = [[None] * len(rows) for _ in rows]
    for i, a in enumerate(maps):
        for j, b in enumerate(maps):
            agree = [pixel_agreement(a[k], b[k]) for k in a if k in b]
            n = sum(c for _, c in agree)
            out[i][j] = sum(x for x, _ in agree) / n if n else None
    return out


def aol_estimates(rows: list[Row]) -> list[float | None]:
    """Agreement on the line among the rows calibrated on the same split (ID: their calibration maps)."""
    out: list[float | None] = [None] * len(rows)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if r.calibration and r.id_maps:
            groups.setdefault(repr(sorted(r.calibration["source"].items())), []).append(i)
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


def assess(rows: list[Row], scenes: Iterable[SceneInput], tile: int = 512, batch_size: int = 4,
           device: str = "cpu", fast: FastPaths | None = None) -> dict[str, Any]:
    """Every row on every scene; the report in the documented schema (``bench assess --json``)."""
    fast, tiling = fast or FastPaths(), Tiling(tile)
    names = []
    for scene in scenes:
        names.append(scene.id)
        for row in rows:
            scene_signals(row, scene, tiling, batch_size, device, fast)
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
