"""Figures of leaderboards: mIoU against the severity of a controlled shift."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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
