r"""What a person sees on the terminal: quiet start-up, one progress display, one-line errors.

Verbosity. The binaries are quiet by default: TensorFlow's C++ start-up lines (oneDNN, CUDA
probing, CPU features, `cuInit` failures on machines without a GPU), Beam's worker lines and
the libraries' INFO logging are hidden; our own progress and results, Python warnings and
every library's WARNING and ERROR stay. One switch restores everything:

    python -m trainer.train --verbosity=1 ...     # or -v 1; absl's own flag, on every binary
    CXR_VERBOSITY=1 make train                    # the same, for every binary a command starts

TensorFlow reads `TF_CPP_MIN_LOG_LEVEL` once, when it loads, and several of its start-up lines
ignore it (they are printed before absl's C++ logging is initialized; Beam's local workers log
at INFO before they read any option), so in quiet mode `configure()` also filters a short list
of known noise lines out of the process's stderr, which its subprocesses inherit. A binary
calls `configure()` before anything imports TensorFlow, which is before absl parses the
flags; that is why `configure` reads `--verbosity`/`-v` from argv itself. An entry point
starts with

    from cxr_cli import console

    if __name__ == "__main__":
        console.configure()  # Before TensorFlow loads.

    from trainer.training import runner as train_lib  # Heavy imports after.

and, when imported (tests) instead of run, changes nothing. `configure` exports the chosen
verbosity in `CXR_VERBOSITY`, so subprocesses (Beam workers, other binaries) follow it.

Progress. `Progress` shows counts, rate and ETA on one line rewritten in place with `\r` when
stderr is a terminal, and as a plain line every `interval_s` seconds otherwise (logs, CI).

Errors. `exit_on_expected_errors(main, program=...)` wraps an absl `main`: an expected error
(bad input or flag: `ValueError` and its subclasses such as `ManifestError`, a missing path,
corrupt records) ends the run with one line, `program: error: message (log: path)`, and exit
status 1; any other exception keeps its traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

ENV_VAR = "CXR_VERBOSITY"
# absl's --verbosity: 0 (INFO) is its default, 1 is DEBUG. 1 and above restore every library's
# output here too, so the one flag means the same thing to absl and to us.
QUIET = 0
VERBOSE = 1
TF_LOG_ENV_VAR = "TF_CPP_MIN_LOG_LEVEL"
# TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no INFO/WARNING (runtime C++ warnings such as
# "Local rendezvous is aborting ... End of sequence" at the end of every tf.data epoch).
# C++ errors stay visible; TensorFlow raises the ones that stop a run as Python exceptions.
_TF_LOG_LEVEL = {QUIET: "2", VERBOSE: "0"}

# What quiet mode drops from stderr (see `configure`); every other line goes through.
TENSORFLOW_NOISE: tuple[str, ...] = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    # C++ INFO and WARNING lines, `I1126 09:00:00.000000  1234 port.cc:153] ...`; absl's Python
    # lines have the same prefix and a `.py:` location, and are kept.
    r"^[IW]\d{4} \S+ +\d+ \S+\.(cc|cpp|h):\d+\] ",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    # C++ errors that are not: CUDA probing on machines without a GPU, and a oneDNN notice.
    r"^E\d{4} .*(failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory)",
    r"^E\d{4} .*oneDNN supports DT_BOOL only on platforms with AVX-512",
)
# Beam's local worker processes configure Python logging at INFO before they read any
# pipeline option, so their start-up and shutdown lines (a dozen per worker) can only be
# dropped from the stderr they inherit; their other warnings and errors come through.
BEAM_WORKER_NOISE: tuple[str, ...] = (
    r"^INFO:",  # Python logging's default format, which the workers use.
    r"^WARNING:root:apitools not found",
    r"^WARNING:__main__:No semi_persistent_directory found",
)
STDERR_NOISE = TENSORFLOW_NOISE + BEAM_WORKER_NOISE
# Loggers quieted in quiet mode, with their level there; verbose mode sets them to INFO.
_QUIET_LOGGERS = {
    "apache_beam": logging.WARNING,
    # Relays every worker's log entries at their own severity; the workers' warnings are
    # start-up chatter, their errors still come through.
    "apache_beam.runners.portability.local_job_service": logging.ERROR,
    "tensorflow": logging.WARNING,
}
# Libraries whose INFO records quiet mode drops from absl's handler: TensorFlow and Keras log
# through absl too (e.g. "Function `serve_bytes` contains input name(s) ..." on every export),
# so the logger's level cannot tell them from ours; the file a record comes from can.
_QUIET_INFO_PACKAGES = ("tensorflow", "keras", "tensorboard", "apache_beam")
# Raised by TensorFlow for unreadable or missing files; expected like a ValueError.
_EXPECTED_TF_ERRORS = ("DataLossError", "NotFoundError")

_state: dict[str, Any] = {"verbosity": None, "interactive": None, "filter": None}


# ---------------------------------------------------------------------------------------------
# Verbosity.


def verbosity_from_argv(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The verbosity asked for: `--verbosity=N`/`-v N` in argv, else `$CXR_VERBOSITY`, else 0.

    Args:
      argv: the command line (default `sys.argv`); parsing stops at `--`.
      environ: the environment (default `os.environ`).

    Returns:
      The verbosity as an int (absl's scale: 0 INFO, 1 DEBUG).

    Raises:
      ValueError: the value is not an integer; the message names where it came from.
    """
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    value, source = None, None
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for name in ("--verbosity", "-v"):
            if arg == name and i + 1 < len(args):
                value, source = args[i + 1], name
            elif arg.startswith(name + "="):
                value, source = arg[len(name) + 1 :], name
            elif name == "-v" and re.fullmatch(r"-v-?\d+", arg):
                value, source = arg[2:], name
    if value is None and environ.get(ENV_VAR, "").strip():
        value, source = environ[ENV_VAR], f"${ENV_VAR}"
    if value is None:
        return QUIET
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{source} must be an integer (0: quiet, 1: everything), got {value!r}.") from None


def configure(
    verbosity: int | None = None,
    *,
    filter_stderr: bool = True,
    argv: Sequence[str] | None = None,
) -> int:
    """Sets how much the process and its subprocesses print; call it before TensorFlow loads.

    Quiet (verbosity 0 or below): `TF_CPP_MIN_LOG_LEVEL=2` unless already set, Beam and
    TensorFlow Python loggers at WARNING, and (with `filter_stderr`) the known noise lines
    (`STDERR_NOISE`: TensorFlow's start-up lines, which ignore TF_CPP_MIN_LOG_LEVEL, and
    Beam's worker chatter) dropped from this process's stderr and its subprocesses' until
    exit. Verbose (1 and above): `TF_CPP_MIN_LOG_LEVEL=0` unless set, those loggers at INFO,
    nothing filtered. Idempotent.

    Args:
      verbosity: None reads `--verbosity`/`-v` from argv, then `$CXR_VERBOSITY`.
      filter_stderr: install the stderr filter in quiet mode (binaries; not tests).
      argv: the command line to read; default `sys.argv`.

    Returns:
      The verbosity in effect.
    """
    if verbosity is None:
        try:
            verbosity = verbosity_from_argv(argv)
        except ValueError as error:
            sys.exit(f"{_program(argv)}: error: {error}")
    verbose = verbosity >= VERBOSE
    _state["verbosity"] = verbosity
    if _state["interactive"] is None:
        _state["interactive"] = _isatty(sys.stderr)  # Before stderr becomes the filter's pipe.
    os.environ[ENV_VAR] = str(verbosity)  # Subprocesses follow the same switch.
    os.environ.setdefault(TF_LOG_ENV_VAR, _TF_LOG_LEVEL[VERBOSE if verbose else QUIET])
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(logging.INFO if verbose else level)
    _filter_library_info(quiet=not verbose)
    if not verbose and filter_stderr and _state["filter"] is None:
        context = filtered_stderr(STDERR_NOISE)
        context.__enter__()
        _state["filter"] = context
        atexit.register(_remove_filter)  # Registered early, so it runs last.
    return verbosity


class LibraryInfoFilter(logging.Filter):
    """Drops records below WARNING logged from files inside the given directories."""

    def __init__(self, directories: Sequence[str]):
        super().__init__()
        self.directories = tuple(os.path.join(d, "") for d in directories)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.directories)


def _filter_library_info(*, quiet: bool) -> None:
    """Installs (quiet) or removes a `LibraryInfoFilter` on absl's handler."""
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    handler = absl_logging.get_absl_handler()
    for existing in [f for f in handler.filters if isinstance(f, LibraryInfoFilter)]:
        handler.removeFilter(existing)
    if quiet:
        directories = []
        for name in _QUIET_INFO_PACKAGES:
            spec = importlib.util.find_spec(name)  # Finds the package without importing it.
            directories += list(spec.submodule_search_locations or []) if spec else []
        handler.addFilter(LibraryInfoFilter(directories))


def _remove_filter() -> None:
    context, _state["filter"] = _state["filter"], None
    if context is not None:
        context.__exit__(None, None, None)


def is_verbose() -> bool:
    """Whether `configure` restored every library's output (verbosity 1 or more)."""
    verbosity = _state["verbosity"]
    if verbosity is None:
        verbosity = verbosity_from_argv([], os.environ)
    return verbosity >= VERBOSE


def interactive() -> bool:
    """Whether the process's stderr, as it was when `configure` ran, is a terminal."""
    if _state["interactive"] is None:
        return _isatty(sys.stderr)
    return bool(_state["interactive"])


_stderr_interactive = interactive  # For `Progress`, whose argument has the same name.


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # Replaced or closed streams.
        return False


# The filter runs in a child process of its own, so that what the parent writes just before it
# dies (a fatal error, faulthandler's dump) still comes through: the child reads until every
# writer has closed the pipe. It ignores Ctrl-C and SIGTERM, which the parent handles, so the
# parent's last lines are not lost. Stdlib only: it must start whatever the parent's sys.path.
# A "line" ends at a newline or a carriage return, so progress rewritten in place passes at once.
_FILTER_SCRIPT = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pattern = re.compile(sys.argv[1])

def forward(lines):
    kept = [l for l in lines if not pattern.search(l.decode("utf-8", "replace").rstrip("\r\n"))]
    if kept:
        os.write(1, b"".join(kept))

pending = b""
while chunk := os.read(0, 65536):
    *lines, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
    forward(lines)
forward([pending] if pending else [])
"""


@contextlib.contextmanager
def filtered_stderr(patterns: Sequence[str]) -> Iterator[None]:
    """Drops lines matching any of `patterns` (regexes) from file descriptor 2 while active.

    Works at the descriptor level, so it also filters C++ logging and the subprocesses
    started inside the block (they inherit the descriptor). Everything else is forwarded.
    """
    pattern = "|".join(f"(?:{p})" for p in patterns) or r"(?!)"
    sys.stderr.flush()
    saved = os.dup(2)
    forwarder = subprocess.Popen(
        [sys.executable, "-c", _FILTER_SCRIPT, pattern], stdin=subprocess.PIPE, stdout=saved, stderr=saved
    )
    os.dup2(forwarder.stdin.fileno(), 2)
    forwarder.stdin.close()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # Closes this process's write end of the pipe.
        os.close(saved)
        try:
            # Subprocesses still alive hold the write end open; do not wait for them forever.
            forwarder.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass


# ---------------------------------------------------------------------------------------------
# Progress.


def format_duration(seconds: float) -> str:
    """`H:MM:SS`; "unknown" for infinite or NaN."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "unknown"
    minutes, secs = divmod(int(round(max(0.0, seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class Progress:
    """Counts, rate and ETA of long work, on one line.

    On a terminal the line is rewritten in place (`\\r`) at most every `refresh_s` seconds; in
    logs and CI a plain line is written every `interval_s` seconds (through `logger` when one
    is given) and once at the end. Use as a context manager, or call `close()`.

    Example:
      with console.Progress(total=len(rows), description="render", unit="images") as progress:
          for row in rows:
              ...
              progress.advance()

    Args:
      total: the number of items, or None when unknown (no percentage or ETA then).
      description: the line's first word(s).
      unit: what is counted, e.g. "images", "steps".
      stream: where the line goes; default `sys.stderr` at the time of writing.
      interactive: rewrite in place (True) or write plain lines (False); default: whether
        stderr was a terminal when `configure` ran (`interactive()`).
      interval_s: seconds between plain lines.
      refresh_s: seconds between in-place rewrites.
      logger: plain lines go to `logger.info` instead of `stream` (binaries that log).
      clock: time source (tests).
      start: when the work started, on `clock`'s scale; default now.
      final_line: in logs, write the final line on `close` even when the work was short.
    """

    def __init__(
        self,
        total: int | None,
        *,
        description: str = "progress",
        unit: str = "items",
        stream: TextIO | None = None,
        interactive: bool | None = None,
        interval_s: float = 30.0,
        refresh_s: float = 0.2,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        final_line: bool = False,
    ):
        if total is not None and total < 0:
            raise ValueError(f"Progress.total must be >= 0 or None, got {total}.")
        if interval_s <= 0:
            raise ValueError(f"Progress.interval_s must be > 0, got {interval_s}.")
        self.total = total
        self.description = description
        self.unit = unit
        self._stream = stream
        self._interactive = _stderr_interactive() if interactive is None else interactive
        self._interval_s = interval_s
        self._refresh_s = refresh_s
        self._logger = logger
        self._clock = clock
        self._start = clock() if start is None else start  # Rates count from here.
        self._last_shown = None
        self._width = 0
        self._closed = False
        self._final_line = final_line
        self.done = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def advance(self, count: int = 1) -> None:
        """Adds `count` finished items."""
        self.update(self.done + count)

    def update(self, done: int, *, force: bool = False) -> None:
        """Sets the number of finished items and shows the line when it is due."""
        self.done = done
        now = self._clock()
        if self._interactive:
            due = self._last_shown is None or now - self._last_shown >= self._refresh_s
        else:
            due = (
                now - (self._last_shown if self._last_shown is not None else self._start) >= self._interval_s
            )
        if force or due:
            self._show(now)

    def line(self, now: float | None = None) -> str:
        """The progress text: `description: done/total unit (pct%), rate unit/s, ETA H:MM:SS`."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            text = f"{self.description}: {self.done:,}/{self.total:,} {self.unit} ({100.0 * self.done / self.total:.0f}%)"
        else:
            text = f"{self.description}: {self.done:,} {self.unit}"
        text += f", {_format_rate(rate)} {self.unit}/s"
        if self.total and self.done < self.total:
            text += f", ETA {format_duration((self.total - self.done) / rate if rate > 0 else float('inf'))}"
        else:
            text += f", {format_duration(elapsed)}"
        return text

    def close(self, message: str | None = None) -> None:
        """Ends the display with the final line (or `message`).

        In logs the final line is written only when a progress line was (the work was long),
        `final_line` was asked for or a `message` is given: short work adds no line there.
        """
        if self._closed:
            return
        self._closed = True
        text = message or self.line()
        if self._interactive:
            self._write("\r" + text.ljust(self._width) + "\n")
        elif message or self._final_line or self._last_shown is not None:
            self._emit(text)

    def clear(self) -> None:
        """Ends the display without a final line: erases the in-place line on a terminal.

        For work whose result is reported right after by other means (an epoch's steps, then
        the epoch line).
        """
        if self._closed:
            return
        self._closed = True
        if self._interactive and self._last_shown is not None:
            self._write("\r" + " " * self._width + "\r")

    def _show(self, now: float) -> None:
        self._last_shown = now
        text = self.line(now)
        if self._interactive:
            self._write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self._emit(text)

    def _emit(self, text: str) -> None:
        if self._logger is not None:
            self._logger.info("%s", text)
        else:
            self._write(text + "\n")

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()


def _format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:,.0f}"
    if rate >= 10:
        return f"{rate:.1f}"
    return f"{rate:.2f}"


# ---------------------------------------------------------------------------------------------
# Errors.


def is_expected_error(error: BaseException) -> bool:
    """Whether `error` is bad input or a bad flag rather than a bug.

    Expected: `ValueError` and subclasses (the project's validation errors, `ManifestError`,
    `InputError`), missing or unreadable paths, TensorFlow's `DataLossError` (corrupt records)
    and `NotFoundError`, and `FloatingPointError` (a diverged loss, reported with advice).
    """
    if isinstance(error, ValueError | FileNotFoundError | NotADirectoryError | IsADirectoryError):
        return True
    if isinstance(error, PermissionError | FloatingPointError):
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


def exit_on_expected_errors(
    main: Callable[..., Any], *, program: str, log_path: Callable[[], str | None] | str | None = None
) -> Callable[..., Any]:
    """Wraps an absl `main` so that an expected error ends the run with one line.

    Args:
      main: the binary's `main(argv)`.
      program: the name in the error line, e.g. "trainer.train".
      log_path: where the run's log is (a path, or a function returning one when the error
        happens); default: the file absl or logging writes to, if any.

    Returns:
      The wrapped `main`: expected errors (`is_expected_error`) exit with status 1 and
      `error_line`; Ctrl-C exits with status 130 and one line; others propagate unchanged.
    """

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write(f"\n{program}: interrupted\n")
            sys.exit(130)
        except Exception as error:
            if not is_expected_error(error):
                raise
            path = log_path() if callable(log_path) else log_path
            sys.stderr.write(error_line(program, error, log_file=path or log_file()) + "\n")
            sys.exit(1)

    return wrapped


def _program(argv: Sequence[str] | None) -> str:
    argv = sys.argv if argv is None else argv
    return os.path.basename(argv[0]) if argv else "cxr"
