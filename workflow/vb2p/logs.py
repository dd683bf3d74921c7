"""Logging for workflow jobs: to the rule's log file and to stderr, including the error that ends a job."""

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
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w"))
    logging.basicConfig(level=logging.INFO, format=FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
