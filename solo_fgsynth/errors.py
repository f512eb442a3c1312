"""The one exception type for mistakes a user can fix, and how the command line reports it.

A :class:`UserError` ends a command with one line, ``solo-fgsynth <command>: error: ...``, and
exit code 2; the traceback is printed only with ``--debug`` (or ``SOLO_FGSYNTH_DEBUG=1``).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import ParamSpec, TypeVar

DEBUG_ENV = "SOLO_FGSYNTH_DEBUG"
USER_ERROR_EXIT_CODE = 2

_P = ParamSpec("_P")
_R = TypeVar("_R")


class UserError(Exception):
    """A value, name or file given by the user that cannot be used.

    The message names the bad value and what is allowed, in one line. ``details`` are lines
    printed before that line, for the rare error whose fix takes several lines.
    """

    details: tuple[str, ...] = ()
    exit_code: int = USER_ERROR_EXIT_CODE

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        if details:  # else the class's own details, if it has any
            self.details = tuple(details)


class ConfigValueError(UserError, ValueError):
    """A config value outside what is allowed; also a ValueError, for callers that catch those."""


class LaunchError(ConfigValueError):
    """A config value the launcher cannot run with; the message names it and what is allowed."""


class DataError(UserError, ValueError):
    """A dataset that cannot be used as given; the message names the file or folder and why."""


class MissingDataError(DataError, FileNotFoundError):
    """A data path that does not exist; the message names it and what was expected there."""


def debug_enabled() -> bool:
    """Whether tracebacks of user errors are wanted: ``--debug`` or ``$SOLO_FGSYNTH_DEBUG``."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def error_line(command: str, error: BaseException) -> str:
    """``solo-fgsynth <command>: error: <message>``, the message's lines joined into one."""
    message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return f"solo-fgsynth {command}: error: {message}"


def report_user_error(command: str, error: UserError) -> int:
    """Print ``error`` for the user (its traceback too when debugging); return its exit code.

    The command line's one place that prints a :class:`UserError` (2, unless the error's class
    says otherwise).
    """
    if debug_enabled():
        traceback.print_exception(error)
    for line in error.details:
        print(line, file=sys.stderr)
    print(error_line(command, error), file=sys.stderr)
    return error.exit_code


def concise_user_errors(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Raise ``function``'s :class:`UserError` without the frames under the call, so a Python
    caller's traceback is its own call and the one-line message the command line prints; the
    full traceback when debugging (``$SOLO_FGSYNTH_DEBUG``)."""

    @functools.wraps(function)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except UserError as error:
            if debug_enabled():
                raise
            raise error.with_traceback(None) from error.__cause__

    return call
