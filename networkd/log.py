"""Logging: one line per event on stderr (journald) or in -log.file, reopened on USR1.

Lines read ``<worker> <LEVEL> <stable phrase> key=value ...``; under journald (detected
by ``JOURNAL_STREAM``) the timestamp is left to the journal.
"""

import logging
import os
import sys
from typing import Optional

from networkd.config import Config

_handler: Optional[logging.Handler] = None
_path = ""


def _formatter(name: str) -> logging.Formatter:
    if os.environ.get("JOURNAL_STREAM"):
        return logging.Formatter(f"{name} %(levelname)s %(message)s")
    return logging.Formatter(f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s")


def setup(config: Config, name: str) -> None:
    """Configure the root networkd logger for this process."""
    global _handler, _path
    root = logging.getLogger("networkd")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    _path = config.log_file
    new: logging.Handler
    if _path:
        new = logging.FileHandler(_path, encoding="utf-8")
    else:
        new = logging.StreamHandler(sys.stderr)
    new.setFormatter(_formatter(name))
    root.addHandler(new)
    root.setLevel(logging.DEBUG if config.verbose else logging.INFO)
    root.propagate = False
    _handler = new


def reopen() -> None:
    """Reopen the log file (after logrotate moved it); stderr needs nothing.

    A worker that dropped root may not be allowed to create the new file: it then keeps
    writing to the file it has open (use logrotate's copytruncate, or journald).
    """
    if not isinstance(_handler, logging.FileHandler):
        return
    _handler.acquire()
    try:
        try:
            stream = _handler._open()
        except OSError as exc:
            failed = exc
        else:
            old = _handler.stream
            _handler.stream = stream
            if old is not None:
                old.close()
            return
    finally:
        _handler.release()
    logging.getLogger("networkd").warning(
        "log reopen failed path=%s reason=%s", _path, failed.strerror
    )
