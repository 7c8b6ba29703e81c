"""A figure per run: for each test scene, RGB composite | reference | prediction | errors (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from bench.data.splits import Split  # noqa: E402
from bench.run.evaluate import Evaluation  # noqa: E402
from bench.core.labels import COLOURS, IGNORE, EvalSpace  # noqa: E402

#: groups without a colour of their own (:data:`bench.core.labels.COLOURS`) take the fallback cycle.
FALLBACK = ["#e6550d", "#fdae6b", "#31a354", "#756bb1"]
NODATA = "#000000"


def rgb(image: np.ndarray, bands: list[str]) -> np.ndarray:
    """A (H, W, 3) display composite from B04/B03/B02 (or the first three bands), 2-98 % stretched."""
    idx = [bands.index(b) for b in ("B04", "B03", "B02")] if {"B02", "B03", "B04"} <= set(bands) else [0, 1, 2]
    x = np.nan_to_num(image[idx].transpose(1, 2, 0).astype(np.float64))
    lo, hi = np.percentile(x, 2), np.percentile(x, 98)
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def run_figure(path: Path, test: Split, ev: Evaluation, space: EvalSpace, bands: list[str], title: str,
               max_scenes: int = 8) -> Path:
    """Draw ``path``: one row per test scene (at most ``max_scenes``), RGB | reference | prediction | errors."""
    names = space.names
    colours = [COLOURS.get(n, FALLBACK[i % len(FALLBACK)]) for i, n in enumerate(names)]
    cmap = ListedColormap([*colours, NODATA])
    scenes = test.scenes[:max_scenes]
    fig, axes = plt.subplots(len(scenes), 4, figsize=(12, 3 * len(scenes)), squeeze=False)
    for row, scene in zip(axes, scenes):
        ref, pred = ev.references[scene.id], ev.predictions[scene.id]
        shown = lambda a: np.where(a == IGNORE, len(names), a)  # noqa: E731 - nodata drawn black
        err = np.where(ref == IGNORE, 2, (ref != pred).astype(np.uint8))
        s = ev.per_scene[scene.id]
        miou = "n/a" if s["miou"] is None else f"{s['miou']:.2f}"
        row[0].imshow(rgb(scene.image, bands))
        date = (scene.meta.get("acquired") or "")[:10]
        row[0].set_title(scene.id if date in ("", scene.id) else f"{scene.id} ({date})", fontsize=9)
        row[1].imshow(shown(ref), cmap=cmap, vmin=0, vmax=len(names), interpolation="nearest")
        row[1].set_title(f"reference ({test.reference})", fontsize=9)
        row[2].imshow(shown(pred), cmap=cmap, vmin=0, vmax=len(names), interpolation="nearest")
        row[2].set_title(f"prediction  mIoU {miou}", fontsize=9)
        row[3].imshow(err, cmap=ListedColormap(["#d9d9d9", "#d7301f", NODATA]), vmin=0, vmax=2,
                      interpolation="nearest")
        row[3].set_title(f"errors (red)  acc {s['accuracy']:.2f}" if s["accuracy"] is not None else "errors",
                         fontsize=9)
        for ax in row:
            ax.set_axis_off()
    fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, names)] + [Patch(color=NODATA, label="nodata")],
               loc="lower center", ncol=len(names) + 1, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
