"""The two kinds of user error, and how a command refuses: one line, exit 2, before any file.

ConfigError: a configuration value (or the data, a checkpoint, a run directory it names) is not allowed.
RunDirError: a run directory's file is missing or malformed. Both messages name the field or the file.
"""
from __future__ import annotations

import sys
import traceback


class ConfigError(ValueError):
    """A configuration value is not allowed. The message names the field and what is allowed."""


class RunDirError(ValueError):
    """A run directory file is missing or malformed. The message names the file and what is wrong."""


def refuse(message: str) -> None:
    """Exit 2 with the message (one line per refused job). SystemExit passes through Hydra's callback
    and error wrappers (they catch Exception), so nothing is created after it."""
    print(f"cotresnet: invalid configuration: {message}", file=sys.stderr)
    sys.exit(2)


def run_check(fn, *args):
    """Run a check: a ConfigError is a refusal (exit 2), any other exception a bug (traceback, exit 1);
    neither becomes a warning (Hydra turns exceptions raised in callbacks into warnings)."""
    try:
        return fn(*args)
    except ConfigError as e:
        refuse(str(e))
    except Exception:
        traceback.print_exc()
        print("cotresnet: internal error while checking the configuration (a bug: please report the traceback "
              "above); nothing was launched", file=sys.stderr)
        sys.exit(1)
