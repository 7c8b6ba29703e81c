"""A sweep's job, run as a worker process (``python -m bench.sweep.worker <job.json>``) or a submitit
job: the cells of one trained model, one after the other, each as ``bench run`` would run it."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import torch

from bench.run.output import configure_output
from bench.run.runner import RunConfig, run
from bench.sweep.grid import cell_command


def run_spec(spec: Path) -> int:
    """The worker: run the cells listed in ``spec`` one after the other (they share one trained model).
    Returns the number of cells that failed; one failing cell does not stop the others."""
    if os.environ.get("CLOUDBENCH_THREADS"):
        torch.set_num_threads(int(os.environ["CLOUDBENCH_THREADS"]))
    cells = json.loads(Path(spec).read_text())["cells"]
    failed = 0
    for d in cells:
        cfg = RunConfig(**{k: v for k, v in d.items() if k in RunConfig.__dataclass_fields__})
        print(f"== {cell_command(cfg)}", flush=True)
        try:
            res = run(cfg)
            if res.metrics:
                print(f"mIoU {res.metrics.get('miou')}: {res.path}", flush=True)
        except KeyboardInterrupt:
            raise
        except Exception:  # noqa: BLE001 - reported in the log; the sweep reports the missing result
            traceback.print_exc()
            failed += 1
    return failed


if __name__ == "__main__":  # python -m bench.sweep.worker <job.json>
    configure_output()
    sys.exit(1 if run_spec(Path(sys.argv[1])) else 0)

