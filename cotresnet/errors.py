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


def input_error(e: BaseException) -> str:
    """One line for an exception Hydra or OmegaConf raised about the user's configuration (a value of the
    wrong type, an unset interpolation): the key it names and the first line of the reason."""
    key = getattr(e, "full_key", None)
    lines = [line for line in (str(e).splitlines() or [type(e).__name__]) if line.strip()]
    cause = e.__cause__ and str(e.__cause__).splitlines()[0]
    text = (lines[0] if lines else type(e).__name__) + (f" ({cause})" if cause and cause not in lines[0] else "")
    return f"{key}: {text}" if key and key not in text else text


def run_check(fn, *args):
    """Run a check: a ConfigError or a RunDirError (a malformed file in a run directory it reuses) is a
    refusal (exit 2), and so is an error Hydra or OmegaConf raise about the configuration (the user's input);
    any other exception is a bug (traceback, exit 1). Neither becomes a warning (Hydra turns exceptions
    raised in callbacks into warnings)."""
    try:
        return fn(*args)
    except (ConfigError, RunDirError) as e:  # a value, or a file of an existing run directory, the user gave
        refuse(str(e))
    except Exception as e:
        if type(e).__module__.split(".")[0] in ("omegaconf", "hydra"):
            refuse(input_error(e))
        traceback.print_exc()
        print("cotresnet: internal error while checking the configuration (a bug: please report the traceback "
              "above); nothing was launched", file=sys.stderr)
        sys.exit(1)
