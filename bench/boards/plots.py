"""Figures of leaderboards, drawn with matplotlib from a board's table: every row's mIoU with its interval
(a forest plot), in-distribution against here, mIoU against the severity of a controlled shift (small
multiples), and the reliability of a model's probabilities with its cloud BOA by threshold."""

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


MODE_COLOURS = {"trained": "#1f77b4", "zero-shot": "#d62728", "fine-tuned": "#2ca02c"}
ZOO = "pretrained models, zero-shot"  # the severity panel of every zoo model run as it comes
MAX_LINES = 8  # lines per severity panel: the leading rows of that family, the rest in grey


def _label(row: pd.Series, with_model: bool) -> str:
    """A board row's short name: ``norm + adapt [settings]``, with the model when panels mix models."""
    label = f"{row['norm']}" + (f" + {row['adapt']}" if row["adapt"] != "none" else "")
    label += f" [{row['recipe']}]" if row.get("recipe") else ""
    return f"{row['model']}: {label}" if with_model else label


def severity_plot(df: pd.DataFrame, path: Path, name: str, scenario: dict) -> Path:
    """mIoU against shift severity as small multiples: one panel per model trained or fine-tuned here (its
    normalizers and adapters as lines) and one for the zoo run zero-shot, each colour once per panel, the
    95 % interval over seeds as a band, the legend beside each panel; a panel's rows beyond
    :data:`MAX_LINES` are drawn thin and grey."""
    cols = severity_columns(df)
    x = [int(c[6:]) for c in cols]
    family = pd.Series([ZOO if m == "zero-shot" else model for model, m in zip(df["model"], df["mode"])], index=df.index)
    panels = list(dict.fromkeys(family))
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 0.4 + 2.7 * len(panels)), squeeze=False, sharex=True)
    for ax, model in zip(axes[:, 0], panels):
        rows = df[family == model]
        for i, (_, row) in enumerate(rows.iterrows()):
            y = np.array([row[c] for c in cols], dtype=float)
            if i >= MAX_LINES:
                ax.plot(x, y, color="#bbb", linewidth=0.8, zorder=1)
                continue
            colour = plt.cm.tab10(i % 10)
            ax.plot(x, y, marker="o", markersize=3.5, color=colour, label=_label(row, model == ZOO), zorder=3)
            half = np.array([row.get(f"{c} ci95", np.nan) for c in cols], dtype=float)
            if np.isfinite(half).any():
                ax.fill_between(x, y - half, y + half, color=colour, alpha=0.15, linewidth=0, zorder=2)
        extra = f" (+{len(rows) - MAX_LINES} more in grey)" if len(rows) > MAX_LINES else ""
        ax.set_title(f"{model}{extra}", fontsize=10, loc="left")
        ax.set_ylabel("mean IoU")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    shift = (scenario.get("definition") or {}).get("shift") or {}
    axes[-1, 0].set_xlabel(f"severity of the {shift.get('type', '')} shift")
    axes[-1, 0].set_xticks(x)
    fig.suptitle(f"{name}: mIoU against severity (bands: 95 % interval over seeds)", fontsize=11)
    return _save(fig, path, top=1 - 0.35 / fig.get_figheight())


def forest_plot(df: pd.DataFrame, path: Path, name: str) -> Path:
    """Every row's mIoU with its 95 % interval over seeds, in board order: the best row and the rows tied with
    it marked, trained, zero-shot and fine-tuned rows in their colours, unranked rows hollow."""
    n = len(df)
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.27 * n))
    ys = np.arange(n)[::-1]
    for y, (_, row) in zip(ys, df.iterrows()):
        colour = MODE_COLOURS.get(row["mode"], "#555")
        half = row.get("mIoU ci95", np.nan)
        if np.isfinite(half):
            ax.plot([row["mIoU"] - half, row["mIoU"] + half], [y, y], color=colour, linewidth=1.4)
        tied = row.get("tied") in ("best", "yes")
        ax.plot(row["mIoU"], y, marker="D" if row.get("tied") == "best" else "o", markersize=7 if tied else 5,
                color=colour, markerfacecolor=colour if row.get("ranked", True) else "white",
                markeredgecolor="black" if tied else colour)
    ax.set_yticks(ys, [_label(r, df["model"].nunique() > 1) for _, r in df.iterrows()], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("mean IoU (95 % interval over seeds)")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", linestyle="-", label=m) for m, c in MODE_COLOURS.items()
               if m in set(df["mode"])]
    handles += [plt.Line2D([], [], color="#555", marker="D", markeredgecolor="black", linestyle="", label="best"),
                plt.Line2D([], [], color="#555", marker="o", markeredgecolor="black", markersize=7, linestyle="",
                           label="tied with the best")]
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(f"{name}: mIoU of every row", fontsize=11, loc="left")
    return _save(fig, path)


def in_distribution_plot(df: pd.DataFrame, path: Path, name: str) -> Path | None:
    """Each row's in-distribution mIoU against its mIoU here, one point per row, with the y = x line (accuracy
    on the line: a row below it lost accuracy away from its training data); None without in-dist figures."""
    if "mIoU in-dist" not in df or df["mIoU in-dist"].isna().all():
        return None
    here = df["mIoU in-dist"] - df["drop"]  # the runs that have a counterpart; a shift's strongest severity
    fig, ax = plt.subplots(figsize=(5.6, 5))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1, label="y = x (no drop)")
    for mode, colour in MODE_COLOURS.items():
        pick = (df["mode"] == mode) & df["mIoU in-dist"].notna()
        if pick.any():
            ax.scatter(df.loc[pick, "mIoU in-dist"], here[pick], color=colour, s=28, label=mode, zorder=3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mIoU in distribution", ylabel=f"mIoU on {name}", aspect="equal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{name}: in distribution against here", fontsize=11, loc="left")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path, top: float = 1.0) -> Path:
    fig.tight_layout(rect=(0, 0, 1, top))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
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
    return _save(fig, path)
