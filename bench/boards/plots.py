"""Figures of leaderboards: mIoU against the severity of a controlled shift; the reliability of a model's
probabilities and its cloud BOA by threshold."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def severity_columns(df: pd.DataFrame) -> list[str]:
    """``mIoU s0`` ... ``mIoU s5`` columns of a leaderboard, in severity order."""
    return sorted((c for c in df.columns if re.fullmatch(r"mIoU s\d+", c)), key=lambda c: int(c[6:]))


def severity_plot(df: pd.DataFrame, path: Path, name: str, scenario: dict) -> Path:
    """mIoU against shift severity, one line per model x normalizer x adapter (mean over seeds)."""
    cols = severity_columns(df)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    norms = sorted(df["norm"].unique())
    colours = {n: plt.cm.tab10(i % 10) for i, n in enumerate(norms)}  # colour: normalizer
    styles = {"none": "-", "adabn": "--", "tent": ":"}  # line style: adapter
    for _, row in df.iterrows():
        label = f"{row['norm']}" + (f" + {row['adapt']}" if row["adapt"] != "none" else "")
        if df["model"].nunique() > 1:
            label = f"{row['model']}: {label}"
        ax.plot([int(c[6:]) for c in cols], [row[c] for c in cols], marker="o", markersize=4,
                color=colours[row["norm"]], linestyle=styles.get(row["adapt"], "-."), label=label)
    shift = (scenario.get("definition") or {}).get("shift") or {}
    ax.set_xlabel(f"severity of the {shift.get('type', '')} shift")
    ax.set_ylabel("mean IoU")
    ax.set_title(f"{name}: mIoU against severity", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def probability_plot(rows: list[tuple[str, dict]], path: Path, name: str) -> Path:
    """The reliability diagram (accuracy against confidence, per confidence bin) and the cloud BOA against
    the cloud-probability threshold, one line per board row (``(row name, metrics.probabilities)``, the
    counts of the row's first run)."""
    from bench.core.metrics import threshold_scores

    fig, (rel, thr) = plt.subplots(1, 2, figsize=(10, 4.2))
    rel.plot([0, 1], [0, 1], color="#999", linewidth=1, linestyle="--", label="perfectly calibrated")
    for i, (label, probs) in enumerate(rows):
        colour = plt.cm.tab10(i % 10)
        cal = probs["calibration"]
        n, conf, ok = (np.asarray(cal[k], dtype=float) for k in ("count", "confidence", "correct"))
        seen = n > 0
        rel.plot(conf[seen] / n[seen], ok[seen] / n[seen], marker="o", markersize=3, color=colour,
                 label=f"{label} (ECE {cal['ece']:.3f})")
        cp = probs.get("cloud_probability")
        if cp:
            ts = np.round(np.arange(0.01, 1.0, 0.01), 2)
            thr.plot(ts, [s["boa"] for s in threshold_scores(cp["cloud"], cp["not_cloud"], ts)], color=colour, label=label)
    rel.set(xlabel="confidence of the predicted group", ylabel="share correct", xlim=(0, 1), ylim=(0, 1),
            title="reliability")
    thr.set(xlabel="cloud-probability threshold", ylabel="cloud BOA", xlim=(0, 1), title="cloud BOA by threshold")
    for ax in (rel, thr):
        ax.grid(alpha=0.3)
    rel.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{name}: the models' probabilities against the reference", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
