"""Logging set-up of every command and of the extraction workers (a leaf module): text or JSON
lines on stderr, the same in spawned and forked workers."""

from __future__ import annotations

import logging
import os

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str, fmt: str) -> None:
    """Text or JSON lines on stderr. In JSON, a record's ``extra`` fields topic/partition/
    offset/url/reason/stage/host become fields. The choice is also put in the environment, so
    spawned extraction workers log the same way (see :func:`spawned_child_logging`)."""
    os.environ["COPYDESK_LOG_FORMAT"] = fmt
    os.environ["COPYDESK_LOG_LEVEL"] = level
    logging.captureWarnings(True)  # warnings.warn(...) as log records, not raw stderr lines
    if fmt == "json":
        import orjson

        class _Json(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                doc = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
                       "message": record.getMessage()}
                for key in ("topic", "partition", "offset", "url", "reason", "stage", "host"):
                    if hasattr(record, key):
                        doc[key] = getattr(record, key)
                if record.exc_info:
                    doc["exc"] = self.formatException(record.exc_info)
                return orjson.dumps(doc).decode()

        handler = logging.StreamHandler()
        handler.setFormatter(_Json())
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    else:
        logging.basicConfig(level=level.upper(), format=_LOG_FORMAT, force=True)
    # kafka-python logs every reconnect attempt at ERROR; the pipeline reports what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL if level.upper() != "DEBUG" else logging.DEBUG)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.getLogger("PrismRunner").setLevel(logging.WARNING)  # its "pipeline is running" every few seconds
    logging.getLogger("trafilatura").setLevel(logging.ERROR)
    logging.getLogger("htmldate").setLevel(logging.ERROR)


def spawned_child_logging() -> None:
    """In a spawned child (the extraction pool's workers), set logging up as the parent did
    before anything else is imported: ``spawn`` re-imports the parent's main module (the CLI
    module, or the console script that imports it, which calls this) before it unpickles the worker, whose
    imports (Beam, trafilatura) log at import time. Without this those lines would be plain
    text in the middle of ``--log-format json`` output."""
    import multiprocessing

    fmt = os.environ.get("COPYDESK_LOG_FORMAT")
    # parent_process() is set only after the main module is imported; the name is set before
    if fmt in ("text", "json") and multiprocessing.current_process().name != "MainProcess":
        setup_logging(os.environ.get("COPYDESK_LOG_LEVEL") or "info", fmt)
