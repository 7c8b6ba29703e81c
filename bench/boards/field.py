"""The field's scores on a scenario's board, beside mean IoU (:mod:`bench.core.metrics` defines them).

Four metric sets, each a table with the board's rows (model x normalizer x adapter x settings):

* ``field``: per group producer's accuracy (PA), user's accuracy (UA) and F1; for cloud against not
  cloud (and shadow against the rest, where the label space has a shadow group) the balanced overall
  accuracy (BOA), omission and commission errors; ``BOA vs best``, the same hierarchical bootstrap as
  mIoU's ``vs best`` (:mod:`bench.boards.stats`) in BOA;
* ``boundary``: mIoU and cloud BOA with the pixels within k px of a reference boundary left out;
* ``cover``: the mean absolute error and bias of each test scene's predicted cloud fraction, and mIoU
  in CloudSEN12's cloud-cover bins;
* ``probabilities`` (models that give them): the expected calibration error and the cloud BOA at
  thresholds of the cloud probability, with the best threshold.

Each figure is the mean over runs (seeds) with the half-width of its 95 % interval where it has one. A
result older than these scores (format 1) still shows: PA, UA, F1, BOA and cloud cover come from the
confusion matrices it stores (overall and per scene); the boundary and probability sets stay blank.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from bench.boards.render import fmt
from bench.boards.stats import blocks_of, hierarchical_bootstrap, seed_interval
from bench.core.metrics import COVER_BINS, boa, cover_summary, positive_groups, scores, threshold_scores

METRIC_SETS = {"iou": "IoU", "field": "PA, UA, BOA", "boundary": "boundary tolerance", "cover": "cloud cover",
               "probabilities": "probabilities"}
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # cloud-probability thresholds shown
SCAN = tuple(np.round(np.arange(0.01, 1.0, 0.01), 2))  # thresholds searched for the best BOA


def field_metrics(r: dict[str, Any]) -> dict[str, Any]:
    """A result's ``metrics.field``, computed from its confusion matrix where it predates them."""
    m = r["metrics"]
    if m.get("field") or "confusion" not in m:  # stored, or a result too old to have a confusion matrix
        return m.get("field") or {}
    return scores(m["confusion"], m["classes"], m.get("label_space") or {})["field"]


def cover_of(r: dict[str, Any]) -> dict[str, Any] | None:
    """A result's cloud cover per scene: stored, or from its per-scene confusion matrices."""
    m = r["metrics"]
    if "cloud_cover" in m:
        return m["cloud_cover"]
    per_scene = {s: v for s, v in (r.get("per_scene") or {}).items() if "confusion" in v}
    return cover_summary(per_scene, m.get("label_space") or {}, m["classes"]) if per_scene else None


def best_threshold(probs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cloud scores at the threshold of the cloud probability with the highest BOA."""
    cp = (probs or {}).get("cloud_probability")
    if not cp:
        return None
    scanned = [s for s in threshold_scores(cp["cloud"], cp["not_cloud"], SCAN) if s["boa"] is not None]
    return max(scanned, key=lambda s: s["boa"]) if scanned else None


def run_values(r: dict[str, Any]) -> dict[str, float | None]:
    """Every field column of one result (None where it does not apply or was not stored)."""
    f, m = field_metrics(r), r["metrics"]
    out: dict[str, float | None] = {}
    for score in ("pa", "ua", "f1"):
        out.update({f"{score.upper()} {g}": v for g, v in (f.get(score) or {}).items()})
    for kind in ("cloud", "shadow"):
        for score in ("boa", "omission", "commission", "f1"):
            out[f"{score if score != 'boa' else 'BOA'} {kind}"] = (f.get(kind) or {}).get(score)
    for px, b in (m.get("boundary") or {}).items():
        out[f"mIoU k{px}"], out[f"BOA cloud k{px}"] = b.get("miou"), b.get("boa_cloud")
    cover = cover_of(r)
    if cover:
        out["cover MAE"], out["cover bias"] = cover["mae"], cover["bias"]
        out.update({f"mIoU {name}": b.get("miou") for name, b in cover["by_bin"].items()})
        out.update({f"scenes {name}": b.get("scenes") for name, b in cover["by_bin"].items()})
    probs = m.get("probabilities")
    if probs:
        out["ECE"] = probs["calibration"]["ece"]
        cp = probs.get("cloud_probability")
        if cp:
            out.update({f"BOA p≥{t:.1f}": s["boa"] for t, s in
                        zip(THRESHOLDS, threshold_scores(cp["cloud"], cp["not_cloud"], THRESHOLDS))})
            best = best_threshold(probs)
            out["best threshold"], out["BOA best threshold"] = (best["threshold"], best["boa"]) if best else (None, None)
    return out


def add_field_columns(df: pd.DataFrame, groups: dict[tuple, list[dict[str, Any]]], keys: list[str]) -> None:
    """Add each field column (mean over a row's runs, with ``<column> ci95``) and ``BOA vs best`` to a
    leaderboard ``df`` whose rows are ``groups`` (by ``keys``)."""
    per_row = [[run_values(r) for r in groups[tuple(df.loc[i, keys])]] for i in range(len(df))]
    columns = list(dict.fromkeys(c for runs in per_row for v in runs for c in v))
    for c in columns:
        stats = [seed_interval([np.nan if v.get(c) is None else float(v[c]) for v in runs]) for runs in per_row]
        df[c] = [s[0] for s in stats]
        df[f"{c} ci95"] = [s[1] for s in stats]
    boa_versus_best(df, groups, keys)


def boa_versus_best(df: pd.DataFrame, groups: dict[tuple, list[dict[str, Any]]], keys: list[str]) -> None:
    """Column ``BOA vs best``: this row's cloud BOA minus the best row's (the row with the highest BOA), with
    the interval of the hierarchical bootstrap over seeds and test blocks; ``tied`` when it reaches 0."""
    if "BOA cloud" not in df or df["BOA cloud"].isna().all():
        return
    cloud = positive_groups(groups[tuple(df.loc[0, keys])][0]["metrics"].get("label_space") or {}, "cloud")
    ranked = df.index[df["ranked"] & df["BOA cloud"].notna()] if "ranked" in df else df.index
    if not cloud or not len(ranked):
        return
    best = df.loc[ranked, "BOA cloud"].astype(float).idxmax()
    base = blocks_of(groups[tuple(df.loc[best, keys])])
    cells = pd.Series([""] * len(df), dtype=object)
    if base is not None:
        cells[best] = "best"
        for i in ranked:
            other = blocks_of(groups[tuple(df.loc[i, keys])], base[0]) if i != best else None
            if other is not None:
                c = hierarchical_bootstrap(other[1], base[1], stat=partial(boa, positive=cloud))
                cells[i] = (f"tied, {c.diff:+.3f}" if c.low <= 0 <= c.high else f"{c.diff:+.3f}") + \
                    f" [{c.low:+.3f}, {c.high:+.3f}]"
    df["BOA vs best"] = cells


def field_tables(df: pd.DataFrame, row_columns: list[str]) -> dict[str, pd.DataFrame]:
    """The shown tables of each metric set that has a value on this board (formatted, means ± ci95),
    each starting with the board's ``row_columns``."""
    def shown(columns: list[str], extra: list[str] = ()) -> pd.DataFrame | None:
        columns = [c for c in columns if c in df and df[c].notna().any()]
        if not columns:
            return None
        out = df[row_columns].copy()
        for c in columns:
            out[c] = [fmt(m, h) for m, h in zip(df[c], df.get(f"{c} ci95", pd.Series([np.nan] * len(df))))]
        for c in extra:
            if c in df:
                out[c] = df[c]
        return out

    groups = [c[3:] for c in df.columns if c.startswith("PA ") and not c.endswith(" ci95")]
    pick = lambda prefix: [c for c in df.columns if c.startswith(prefix) and not c.endswith(" ci95")]  # noqa: E731
    tables = {
        "field": shown([*(f"{s} {g}" for g in groups for s in ("PA", "UA", "F1")),
                        *(f"{s} {k}" for k in ("cloud", "shadow") for s in ("BOA", "omission", "commission"))],
                       ["BOA vs best"]),
        "boundary": shown(sorted(pick("mIoU k"), key=lambda c: int(c[6:])) +
                          sorted(pick("BOA cloud k"), key=lambda c: int(c[11:]))),
        "cover": shown(["cover MAE", "cover bias", *(f"mIoU {name}" for name, _, _ in COVER_BINS)]),
        "probabilities": shown(["ECE", *(f"BOA p≥{t:.1f}" for t in THRESHOLDS), "best threshold",
                                "BOA best threshold"]),
    }
    return {k: v for k, v in tables.items() if v is not None}


def cover_scenes(df: pd.DataFrame) -> dict[str, int]:
    """How many test scenes fall in each cloud-cover bin (of the first row that has them)."""
    out = {}
    for name, _, _ in COVER_BINS:
        c = f"scenes {name}"
        if c in df and df[c].notna().any():
            out[name] = int(df[c].dropna().iloc[0])
    return out
