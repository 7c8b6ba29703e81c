"""How runs talk: warnings as one line (``warning: ...``, no source line), and the notes of the libraries
underneath (Lightning's tips, known deprecation chatter) filtered; ``quiet`` keeps only warnings."""

from __future__ import annotations

import logging
import warnings

from bench.models.smp import RandomWeights as RandomWeightsWarning

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
#: the loggers of Lightning's rank-zero notes ("GPU available", "Using bfloat16 AMP", "`Trainer.fit` stopped")
RANK_ZERO = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
             "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
CHATTER = ("GPU available", "TPU available", "HPU available", "`Trainer.fit` stopped")
NOISE = (".*does not have many workers.*", ".*LeafSpec.*", ".*exists and is not empty.*")


def short_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """Warnings as ``warning: <message>``, without the source line that raised them."""
    return f"warning: {message}\n"


def configure_output(quiet: bool = False) -> None:
    """Set up warnings and library logging for a command line process (``bench``, a sweep's worker)."""
    warnings.formatwarning = short_warning
    for pattern in NOISE:
        warnings.filterwarnings("ignore", pattern)
    for name in RANK_ZERO:  # Lightning's notes that tell a run nothing its progress display does not
        logging.getLogger(name).addFilter(lambda r: not r.getMessage().startswith(CHATTER) and "litlogger" not in r.getMessage())
    if quiet:  # Lightning's notes (GPU available, AMP, max_epochs reached) and what results record anyway
        for name in LIGHTNING_LOGGERS + RANK_ZERO:  # Lightning sets its top loggers' level when imported:
            logging.getLogger(name).setLevel(logging.WARNING)  # the modules that log keep this one
        warnings.filterwarnings("ignore", category=RandomWeightsWarning)
