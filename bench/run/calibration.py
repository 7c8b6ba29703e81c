"""A run's label-free record: calibrate its model once, then collect the signals of each evaluation.

:class:`FreeOfLabels` calibrates the run's model on the scenario's validation split (a pretrained model
run zero-shot too, where that split has its bands) and keeps the calibration beside the model
(``calibration-<key>.json`` and ``.npz`` in the model folder), so a model evaluated on many scenarios is
calibrated once. It gives each evaluation its accumulators, adds each test set's input shift against the
training inputs (the sanity gate's percentiles), and pools a shift's severities into the headline record.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from bench.core.errors import ConfigError, DataError
from bench.core.results import key, write_json
from bench.data.sanity import band_stats, normalized, shift_of
from bench.data.splits import Split
from bench.run.evaluate import Evaluation, predicted_strips, scene_inputs
from bench.run.inference import FastPaths, model_tiling
from bench.run.label_free import (VERSION, LabelFree, calibrate, load_predictions, never_predicted, pooled,
                                  save_predictions)
from bench.run.plan import Plan, data_identity
from bench.run.training import Trained


class FreeOfLabels:
    """The label-free side of one run's evaluation (see the module docstring)."""

    def __init__(self, p: Plan, trained: Trained, module: Any, device: str, fast: FastPaths,
                 sanity: dict[str, Any]) -> None:
        self.p, self.trained, self.module, self.device, self.fast = p, trained, module, device, fast
        if hasattr(module, "eval"):  # a torch module: BatchNorm on its running statistics, as evaluation has it
            module.eval()
        self.evaluations: list[LabelFree] = []
        self.shifts: list[dict[str, Any] | None] = []
        self.calibration, self.skipped, val_maps = self.calibrated()
        self.maps = {f"val/{k}": v for k, v in val_maps.items()}
        train = sanity.get("train") or {}
        self.reference = train.get("quantiles") or self.calibration_quantiles()

    def strips(self, scene):  # noqa: ANN001, ANN201 - a scene's outputs with probabilities
        """The outputs of the run's model over ``scene``, with class probabilities."""
        p, norm = self.p, self.trained.normalizer
        tile_fn = (lambda t: norm.transform(t)) if norm.level == "patch" else None
        return predicted_strips(self.module, scene, model_tiling(p.contract, p.recipe.patch_size), p.recipe.batch_size, self.device,
                                self.fast, tile_fn, p.contract, probabilities=True)

    def cache_key(self) -> str:
        """What decides the calibration: the model, the validation data, the label space, the precision."""
        p = self.p
        return key({"train": p.train_key, "val": data_identity(p.scenario, p.splits, "val"),
                    "space": p.space.to_dict(), "fast": self.fast.identity(), "version": VERSION})

    def calibrated(self) -> tuple[dict[str, Any] | None, str | None, dict[str, np.ndarray]]:
        """The calibration (from the model folder if it was made before), why there is none, the val maps."""
        if "val" not in self.p.splits:
            return None, "no validation split with the model's bands to calibrate on", {}
        val: Split = self.p.splits["val"]
        path = self.p.train_dir / f"calibration-{self.cache_key()[:12]}.json"
        if path.exists() and path.with_suffix(".npz").exists():
            return json.loads(path.read_text()), None, load_predictions(path.with_suffix(".npz"))
        scenes = scene_inputs(val, self.trained.normalizer, model_tiling(self.p.contract, self.p.recipe.patch_size))
        try:
            result, maps = calibrate(scenes, self.strips, self.p.space, val.labels)
        except (ValueError, ConfigError, DataError) as e:
            return None, str(e), {}
        cal = {"source": {"scenario": self.p.scenario.name, "split": "val", "dataset": val.dataset},
               "space": self.p.space.to_dict(), **result}
        save_predictions(path.with_suffix(".npz"), maps)
        write_json(path, cal)
        return cal, None, maps

    def calibration_quantiles(self) -> list | None:
        """The inputs' percentiles of the calibration split, where no training split was read (zero-shot)."""
        if "val" not in self.p.splits:
            return None
        return band_stats(normalized(self.p.splits["val"], self.trained.normalizer))["quantiles"]

    def evaluation(self) -> LabelFree:
        """Fresh accumulators for the next evaluation."""
        self.evaluations.append(LabelFree(self.p.space, self.calibration, self.p.cfg.consistency,
                                          never_predicted(self.p.space, self.p.contract)))
        return self.evaluations[-1]

    def add(self, ev: Evaluation, split: Split, severity: int | None) -> None:
        """Complete the evaluation's record with its input shift; keep its predicted maps."""
        shift = (shift_of(self.reference, split, self.trained.normalizer, list(self.p.bands))
                 if self.reference else None)
        self.shifts.append(shift)
        ev.label_free["signals"]["input_shift"] = shift
        prefix = "test/" if severity is None else f"test/{severity}/"
        self.maps.update({prefix + s: m for s, m in ev.predictions.items()})

    def record(self) -> dict[str, Any]:
        """The run's record: one evaluation's, or a shift's severities pooled (per scene and input shift
        of the strongest, as the run's per-scene scores are)."""
        last = self.evaluations[-1].record()
        rec = last if len(self.evaluations) == 1 else {**pooled(self.evaluations), "per_scene": last["per_scene"]}
        rec["signals"]["input_shift"] = self.shifts[-1]
        return {**rec, "calibration": self.calibration,
                **({"calibration_skipped": self.skipped} if self.skipped else {})}
