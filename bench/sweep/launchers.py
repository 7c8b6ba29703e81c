"""Where a sweep's jobs run. A job is one trained model and every evaluation that needs it: the worker
``python -m bench.sweep.worker <job.json>`` runs its cells one after the other (see :mod:`bench.sweep.worker`).

* ``local`` (default): worker processes on this machine, at most ``--jobs`` at a time; each dies with
  the sweep, so a killed sweep leaves nothing running behind it.
* ``slurm``: one Slurm job per model through submitit (``--partition``, ``--time``, ``--gpus-per-job``;
  with several GPUs, one task per GPU, which Lightning's DDP picks up from Slurm's environment).
* ``submitit_local``: the same submitit path on this machine (submitit's local executor), to try a
  Slurm sweep before sending it to a cluster.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.core.errors import ConfigError, unknown
from bench.sweep.worker import run_spec

LAUNCHERS = ("local", "slurm", "submitit_local")


class Job:
    """A started job: is it finished, did it succeed, and where is its log."""

    log: Path

    def done(self) -> bool:
        """True once the job has ended, well or not."""
        raise NotImplementedError

    def ok(self) -> bool:
        """True if the job ended without error."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the job to stop (it saves a checkpoint; the next sweep resumes)."""
        raise NotImplementedError


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalJob(Job):
    def __init__(self, spec: Path, log: Path, threads: int) -> None:
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "CLOUDBENCH_THREADS": str(threads)}
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.sweep.worker", str(spec)], stdout=f,
                                         stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def ok(self) -> bool:
        return self.proc.returncode == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Lightning saves and stops; the next sweep resumes


class SubmititJob(Job):
    def __init__(self, job: Any) -> None:
        self.job = job
        self.log = Path(job.paths.stdout)

    def done(self) -> bool:
        return self.job.done()

    def ok(self) -> bool:
        return self.job.state in ("DONE", "COMPLETED", "FINISHED") or (self.done() and self.job.exception() is None)

    def stop(self) -> None:
        self.job.cancel(check=False)


@dataclass
class Launcher:
    """Starts workers. ``jobs``: how many may run at once (for Slurm: submitted at once)."""

    kind: str = "local"
    jobs: int = 1
    folder: Path = Path("runs/sweeps")
    partition: str | None = None
    time_min: int = 60
    gpus_per_job: int = 0
    cpus_per_job: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in LAUNCHERS:
            raise unknown("launcher", self.kind, LAUNCHERS)
        self._executor = None

    def start(self, spec: Path, log: Path) -> Job:
        """Start the job of ``spec`` (a job JSON), logging to ``log``."""
        if self.kind == "local":
            return LocalJob(spec, log, threads=max(1, (os.cpu_count() or 1) // self.jobs))
        return SubmititJob(self.executor().submit(run_cells, str(spec)))

    def executor(self) -> Any:
        """submitit's executor for this launcher, made once (Slurm needs srun and sbatch here)."""
        if self._executor is None:
            import submitit

            cluster = "slurm" if self.kind == "slurm" else "local"
            try:
                ex = submitit.AutoExecutor(folder=self.folder / "submitit", cluster=cluster)
            except RuntimeError as err:  # no srun on this machine
                raise ConfigError(f"--launcher slurm needs Slurm's srun and sbatch here ({err}); run the sweep "
                                  "from a login node of the cluster, or try it with --launcher submitit_local") from None
            params: dict[str, Any] = {"timeout_min": self.time_min, "name": "cloudbench",
                                      "tasks_per_node": max(1, self.gpus_per_job), "nodes": 1}
            if self.gpus_per_job:
                params["gpus_per_node"] = self.gpus_per_job
            if self.cpus_per_job:
                params["cpus_per_task"] = self.cpus_per_job
            if self.kind == "slurm" and self.partition:
                params["slurm_partition"] = self.partition
            ex.update_parameters(**params)
            self._executor = ex
        return self._executor


def run_cells(spec: str) -> int:
    """A submitit job: run the cells of ``spec`` (a picklable top-level function)."""
    return run_spec(Path(spec))


__all__ = ["Launcher", "Job", "LAUNCHERS", "run_cells"]
