"""Label-free signals and estimates, computed in the same inference pass as evaluation.

A model is first *calibrated* once on a labelled split it was not tested on (:func:`calibrate`: its own
validation split, or for a pretrained model a declared source): the temperature, the ATC threshold and the
in-distribution accuracy and mIoU (:class:`bench.core.label_free.Calibrator`). Every evaluation then
accumulates, per scene and without looking at the reference, the signals of
:class:`bench.core.label_free.Signals` over the pixels it scores, so that each estimate sits beside the
actual figure it estimates in the result JSON (``label_free``), and ``bench assess`` runs the same code on
scenes that have no labels.

The result schema (``label_free``)::

    {"version": 1, "calibration": {source, temperature, atc_threshold, accuracy, miou, iou, confidence, pixels},
     "signals": {pixels, confidence, entropy, atc_fraction, cloud_fraction, consistency, input_shift},
     "estimates": {"accuracy": {method: value}, "miou": {method: value}, "iou": {"calibrated": {group: value}}},
     "per_scene": {scene: {"signals": ..., "estimates": ...}}, "predictions": "<result>.npz"}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.label_free import Calibrator, Signals
from bench.core.labels import IGNORE, N_CLASSES, EvalSpace
from bench.core.results import atomic
from bench.models.base import Contract
from bench.data.splits import reference_groups

VERSION = 2  # 2: calibration in eval mode, groups never predicted count as IoU 0
CLOUD_CLASSES = (1, 2)  # thick and thin cloud: what the predicted cloud fraction counts


def never_predicted(space: EvalSpace, contract: Contract | None) -> tuple[int, ...]:
    """The groups of ``space`` that no output of a model with ``contract`` stands for (none for a model
    trained here, which predicts all four classes)."""
    if contract is None or not contract.pretrained:
        return ()
    lut, classes = space.class_lut(), contract.class_of_code()[:len(contract.output_names)]
    predicted = {int(lut[c]) for c in classes if c < N_CLASSES}
    return tuple(g for g in range(len(space.names)) if g not in predicted)


def cloud_groups(space: EvalSpace) -> list[int]:
    """The groups of ``space`` that hold a cloud class."""
    lut = space.class_lut()
    return sorted({int(lut[c]) for c in CLOUD_CLASSES})


@dataclass
class SceneSignals:
    """One scene's signals: the confidence signals of a model that gives probabilities, or only the
    predicted groups of one that does not."""

    signals: Signals
    consistency: bool = False  # the outputs end in the flip-consistency channel
    consistent: int = 0  # pixels whose prediction held under the flip
    compared: int = 0

    def add(self, outputs: np.ndarray, predicted: np.ndarray, keep: np.ndarray) -> None:
        """``outputs`` (1 or 1 + 4, h, W; one more with ``consistency``): class, then class probabilities,
        then flip agreement; ``predicted`` (h, W) groups; ``keep``: the pixels that count."""
        if self.consistency and len(outputs) in (2, 2 + N_CLASSES):
            self.consistent += int(outputs[-1][keep].sum())
            self.compared += int(keep.sum())
        if len(outputs) >= 1 + N_CLASSES:
            self.signals.add(outputs[1:1 + N_CLASSES][:, keep], predicted[keep])
        else:
            self.signals.add_classes(predicted[keep])

    def flip_agreement(self) -> float | None:
        """The fraction of pixels whose prediction held when the input was flipped (None: not measured)."""
        return self.consistent / self.compared if self.compared else None


@dataclass
class LabelFree:
    """The label-free accumulators of one evaluation (one test set) in ``space``."""

    space: EvalSpace
    calibration: dict[str, Any] | None
    consistency: bool = False  # one more pass with the input flipped (torch models)
    never: tuple[int, ...] = ()  # groups the model cannot predict (:func:`never_predicted`)
    scenes: dict[str, SceneSignals] = field(default_factory=dict)

    def signals(self) -> Signals:
        """An empty accumulator of this evaluation's groups and calibration."""
        return Signals(len(self.space.names), self.space.class_lut(), self.calibration, self.never)

    def scene(self, scene_id: str) -> SceneSignals:
        """A fresh accumulator for the scene ``scene_id``."""
        self.scenes[scene_id] = SceneSignals(self.signals(), self.consistency)
        return self.scenes[scene_id]

    def flip_agreement(self) -> float | None:
        """The flip consistency over all scenes (None: not measured)."""
        n = sum(s.compared for s in self.scenes.values())
        return sum(s.consistent for s in self.scenes.values()) / n if n else None

    def total(self) -> Signals:
        """Every scene's signals added up."""
        total = self.signals()
        for s in self.scenes.values():
            total.merge(s.signals)
        return total

    def record(self) -> dict[str, Any]:
        """Signals and estimates over all scenes and per scene (JSON-ready)."""
        return {"version": VERSION, **summary(self.total(), self.space, self.flip_agreement()),
                "per_scene": {k: summary(s.signals, self.space, s.flip_agreement()) for k, s in self.scenes.items()}}


def summary(signals: Signals, space: EvalSpace, consistency: float | None = None) -> dict[str, Any]:
    """``{"signals", "estimates"}`` of one accumulator (``consistency``: its flip agreement, if measured)."""
    return {"signals": {**signals.signals(cloud_groups(space)), "consistency": consistency},
            "estimates": signals.estimates(space.names)}


def pooled(evaluations: list[LabelFree]) -> dict[str, Any]:
    """The record of several evaluations' pixels together (a shift's severities)."""
    first = evaluations[0]
    total = first.signals()
    for ev in evaluations:
        total.merge(ev.total())
    n = sum(s.compared for ev in evaluations for s in ev.scenes.values())
    agree = sum(s.consistent for ev in evaluations for s in ev.scenes.values())
    return {"version": VERSION, **summary(total, first.space, agree / n if n else None)}


Strips = Callable[[Any], Any]  # scene -> (row0, row1, outputs) strips with probabilities


def calibrate(scenes, strips: Strips, space: EvalSpace, labels) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # noqa: ANN001
    """Calibration on labelled ``scenes`` (:class:`bench.run.evaluate.SceneInput`) whose outputs
    ``strips(scene)`` gives: the :meth:`Calibrator.result` dict, and each scene's predicted groups."""
    lut = space.class_lut()
    cal, predictions = Calibrator(len(space.names), lut), {}
    for scene in scenes:
        pred = np.full((scene.height, scene.width), IGNORE, dtype=np.uint8)
        for r0, r1, out in strips(scene):
            codes, valid = scene.labels(r0, r1)
            ref = reference_groups(codes, valid, labels, space)
            p = np.where(valid, lut[out[0].astype(np.uint8)], IGNORE)
            pred[r0:r1] = p
            keep = ref != IGNORE
            if len(out) >= 1 + N_CLASSES:
                cal.add(out[1:1 + N_CLASSES][:, keep], ref[keep], p[keep])
            else:
                cal.add_classes(ref[keep], p[keep])
        predictions[scene.id] = pred
    if not cal.pixels:
        raise ValueError("the calibration split has no labelled pixel")
    return cal.result(space.names), predictions


def save_predictions(path: Path, maps: dict[str, np.ndarray]) -> Path:
    """The predicted group maps (``"val/<scene>"``, ``"test/<scene>"``, ``"test/<severity>/<scene>"``) as
    one compressed .npz, written atomically."""
    with atomic(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **maps)
    return path


def load_predictions(path: Path) -> dict[str, np.ndarray]:
    """The maps :func:`save_predictions` wrote."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
