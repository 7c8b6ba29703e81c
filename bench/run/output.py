"""How runs talk: warnings as one line (``warning: ...``, no source line), and the notes of the libraries
underneath (Lightning's tips, known deprecation chatter) filtered; ``quiet`` keeps only warnings."""

from __future__ import annotations

import logging
import warnings

LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")
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
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda r: "litlogger" not in r.getMessage())
    if quiet:  # Lightning's notes (GPU available, max_epochs reached) too
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
