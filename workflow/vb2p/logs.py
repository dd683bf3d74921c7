"""Logging for workflow jobs: to the rule's log file, including the error that ends a job."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from vb2p.errors import Vb2pError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _log_uncaught(kind, error, traceback) -> None:
    logger = logging.getLogger("vb2p")
    if issubclass(kind, Vb2pError):
        logger.error("%s", error)  # bad input: the message says what and where; a traceback adds nothing
    else:
        logger.critical("job failed", exc_info=(kind, error, traceback))


def log_to(path: str | Path | None) -> None:
    """A rule's job logs to its log file only: Snakemake shows that file once when the job fails (show-failed-logs);
    writing to stderr as well would print every message twice. Without a path (by hand), to stderr."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, mode="w")
    else:
        handler = logging.StreamHandler()
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=[handler], force=True)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
