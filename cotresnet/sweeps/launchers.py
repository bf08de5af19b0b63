"""What the launchers show while a sweep runs."""
from __future__ import annotations

import logging
import re
import sys


class _Once(logging.Filter):
    """Lets each message through once, its poll counter ("Call #12 - ") ignored."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = re.sub(r"^Call #\d+ - ", "", record.getMessage())
        if record.levelno >= logging.WARNING and text in self.seen:
            return False
        self.seen.add(text)
        return True


def submitit_warnings_once() -> None:
    """submitit logs each warning (a cluster without accounting: sacct fails at every poll) through its stdout
    and stderr handlers and Hydra's root handler, again at every poll: show each once, on stderr."""
    lg = logging.getLogger("submitit")
    if any(isinstance(f, _Once) for f in lg.filters):
        return
    lg.addFilter(_Once())
    lg.propagate = False
    for h in lg.handlers:
        if getattr(h, "stream", None) is sys.stdout:
            h.addFilter(lambda record: record.levelno < logging.WARNING)
