"""Errors that tsprune reports to a person.

`UserError` is raised for bad input (a file, an argument, a model directory).
The CLI prints its message on one line and exits with code 2, without a traceback.
Messages name the argument, the value received and what is allowed.
"""
from __future__ import annotations

import importlib.util
import sys


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def exit_status(job) -> int:
    """Run ``job()`` for a module entry point (``python -m tsprune.X``): 0 when it
    returns, 2 with the UserError's one line on stderr when the input was bad."""
    try:
        job()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def bad_arg(name: str, value, allowed: str) -> UserError:
    """Build a UserError that names the argument, the value and what is allowed.

    >>> str(bad_arg("--ratio", 1.5, "a number in (0, 1)"))
    '--ratio: got 1.5; expected a number in (0, 1)'
    """
    return UserError(f"{name}: got {value!r}; expected {allowed}")


def missing_extra(package: str, extra: str, error: BaseException | None = None,
                  module: str | None = None) -> ImportError:
    """ImportError for an optional dependency, naming the install command.

    "not installed" is said only when the top-level module (``module``, else the first
    word of ``package``) cannot be found at all. When it is installed but its import
    failed (``error``: a broken or incompatible release, a shadowing folder), the message
    says so and carries the underlying ImportError, which a reinstall would not fix.
    """
    top = (module or package.split()[0].split(">")[0].split("=")[0]).replace("-", "_")
    # the module the failed import looked for (a submodule may be the missing piece)
    missing = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
    try:
        installed = all(importlib.util.find_spec(m) is not None for m in {top, missing} if m)
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        installed = False
    if error is None or not installed:
        return ImportError(
            f"{package} is not installed; install it with: pip install 'tsprune[{extra}]'")
    return ImportError(
        f"{package} is installed but failed to import: {type(error).__name__}: {error}")
