"""How a run ends on an error: the product's validation errors in one line, bugs with their traceback.

`ValidationError` is the product's own "bad input" error: a flag, a config field, a file or a
record the user gave failed our validation, and the message names which. It subclasses
`ValueError`, so code catching `ValueError` still catches it. Any other `ValueError` (from
Keras, NumPy, TensorFlow or our own code) is a bug until proven otherwise and keeps its
traceback.

`exit_on_expected_errors(main, program=...)` wraps an absl `main`: an expected error
(`is_expected_error`) ends the run with one line, `program: error: message (log: path)`, and
exit status 1; any other exception propagates with its traceback. With `--verbosity=1` every
error keeps its traceback. This module imports only the standard library (and absl when a
binary has it), so every package may raise `ValidationError`.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from cxr_cli import verbosity

# Raised by TensorFlow for unreadable or missing files; expected like a validation error.
_EXPECTED_TF_ERRORS = ("DataLossError", "NotFoundError")
_EXPECTED_OS_ERRORS = FileNotFoundError | NotADirectoryError | IsADirectoryError | PermissionError


class ValidationError(ValueError):
    """A flag, config field, file or record the user gave failed the product's validation."""


def is_expected_error(error: BaseException) -> bool:
    """Whether `error` is bad input or a bad flag rather than a bug.

    Expected: `ValidationError` and its subclasses (`ManifestError`, `InputError`, ...), missing
    or unreadable paths, TensorFlow's `DataLossError` (corrupt records) and `NotFoundError`,
    and `FloatingPointError` (a diverged loss, reported with advice). A plain `ValueError` is
    not: it comes from a library or from a bug, and keeps its traceback.
    """
    if isinstance(error, ValidationError | FloatingPointError | _EXPECTED_OS_ERRORS):
        return True
    return any(
        cls.__name__ in _EXPECTED_TF_ERRORS and cls.__module__.startswith("tensorflow")
        for cls in type(error).__mro__
    )


def error_line(program: str, error: BaseException, *, log_file: str | None = None) -> str:
    """The one line a failed run ends with: `program: error: message (log: path)`."""
    message = " ".join(str(error).split()) or type(error).__name__
    if type(error).__module__.startswith("tensorflow"):
        message = f"{type(error).__name__}: {message}"
    line = f"{program}: error: {message}"
    if log_file:
        line += f" (log: {log_file})"
    return line


def log_file() -> str | None:
    """The file this process logs to, when absl or a logging handler writes to one."""
    try:
        from absl import logging as absl_logging

        absl_handler = absl_logging.get_absl_handler()
        name = getattr(absl_handler.python_handler.stream, "name", None)
        if absl_handler in logging.getLogger().handlers and isinstance(name, str):
            if name != os.devnull and not name.startswith("<"):  # Not <stderr>.
                return name
    except (ImportError, AttributeError):
        pass
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.baseFilename != os.devnull:
            return handler.baseFilename
    return None


def command_name(module: str) -> str:
    """The command the user typed: the console script's name (`cxr-train`), else `module`.

    `python -m trainer.train` puts the module's file in `sys.argv[0]`; the module's dotted name
    is what the user typed after `-m`.
    """
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return module if not name or name.endswith(".py") or name == "-c" else name


def exit_on_expected_errors(
    main: Callable[..., Any], *, program: str, log_path: Callable[[], str | None] | str | None = None
) -> Callable[..., Any]:
    """Wraps an absl `main` so that an expected error ends the run with one line.

    Args:
      main: the binary's `main(argv)`.
      program: the name in the error line: the command the user typed (`command_name`).
      log_path: where the run's log is (a path, or a function returning one when the error
        happens); default: the file absl or logging writes to, if any.

    Returns:
      The wrapped `main`: expected errors (`is_expected_error`) exit with status 1 and
      `error_line`, unless the verbosity is 1 or more (then they keep their traceback); Ctrl-C
      exits with status 130 and one line; others propagate unchanged.
    """

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write(f"\n{program}: interrupted\n")
            sys.exit(130)
        except Exception as error:
            if not is_expected_error(error) or verbosity.is_verbose():
                raise
            path = log_path() if callable(log_path) else log_path
            sys.stderr.write(error_line(program, error, log_file=path or log_file()) + "\n")
            sys.exit(1)

    return wrapped
