r"""How much a binary prints: the verbosity switch and quiet mode's stderr filter.

The binaries are quiet by default: the libraries' INFO logging is hidden, and so are the
start-up lines listed in `NOISE` (TensorFlow's oneDNN, CUDA-probing and CPU-feature notices,
Beam's local workers' start-up and shutdown). Our own progress and results, Python warnings and
every other library warning or error stay. One switch restores everything:

    cxr-train --verbosity=1 ...      # or -v 1; absl's own flag, on every binary
    CXR_VERBOSITY=1 make train       # the same, for every binary a command starts

TensorFlow reads `TF_CPP_MIN_LOG_LEVEL` once, when it loads, and its start-up lines ignore it
(they are printed before absl's C++ logging is initialized; Beam's local workers log at INFO
before they read any option). So quiet mode also drops exactly the lines of `NOISE`, each
matched by its source (C++ file, Python logger) and text, from the process's stderr, which its
subprocesses inherit. Nothing is dropped for its level alone: a C++ warning or error that is not
listed, or an `INFO:` line that is not a Beam worker's known start-up line, goes through.

`configure()` must run before anything imports TensorFlow, so before absl parses the flags;
that is why it reads `--verbosity`/`-v` from argv itself. The console scripts' launchers
(`cxr_cli.launch`) call it first; a binary run with `python -m` calls it at the top of its
module. It exports the chosen verbosity in `CXR_VERBOSITY`, so subprocesses (Beam workers,
other binaries) follow it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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


@dataclasses.dataclass(frozen=True)
class Noise:
    """One start-up line quiet mode drops, named by where it comes from and how it reads.

    Attributes:
      kind: "cc": a C++ log line, `I1126 09:00:00.000000  1234 port.cc:153] text`;
        "py": Python logging's default format, `INFO:logger.name:text`; "line": a line with
        no prefix (a C++ message's continuation, absl's pre-initialization notice).
      source: the C++ file ("cc") or the logger ("py"); "" for "line".
      text: a regex the message must match from its start.
    """

    kind: str
    source: str
    text: str

    def pattern(self) -> str:
        if self.kind == "cc":
            return rf"^[IWEF]\d{{4}} [\d:.]+ +\d+ {re.escape(self.source)}:\d+\] {self.text}"
        if self.kind == "py":
            return rf"^(?:INFO|WARNING):{re.escape(self.source)}:{self.text}"
        return rf"^{self.text}"


_WORKER = "apache_beam.runners.worker."
# Seen with TensorFlow 2.21 on CPU-only machines (each library that loads TensorFlow's C++
# runtime prints the first three once) and Apache Beam 2.77's local worker processes.
NOISE: tuple[Noise, ...] = (
    Noise(
        "line",
        "",
        r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    ),
    Noise("cc", "port.cc", r"oneDNN custom operations are on\."),
    Noise("cc", "cudart_stub.cc", r"Could not find cuda drivers on your machine, GPU will not be used\."),
    Noise(
        "cc", "cpu_feature_guard.cc", r"This TensorFlow binary is optimized to use available CPU instructions"
    ),
    Noise(
        "line",
        "",
        r"To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    ),
    # No GPU driver at all (error 303); any other cuInit failure goes through.
    Noise("cc", "cuda_platform.cc", r"failed call to cuInit: .*UNKNOWN ERROR \(303\)$"),
    # Training on machines without AVX-512 (DT_BOOL on the demo records, DT_INT32 at 128 pixels).
    Noise("cc", "util.cc", r"oneDNN supports DT_(?:BOOL|INT32) only on platforms with AVX-512\."),
    # Beam's local workers configure logging at INFO before they read any pipeline option.
    Noise("py", "root", r"apitools not found, and bigquery client libraries are not available"),
    Noise("py", "apache_beam.io.gcp.bigquery", r"No module named google\.cloud\.bigquery_storage_v1\."),
    Noise("py", "__main__", r"Logging handler created\.$"),
    Noise("py", "__main__", r"semi_persistent_directory: "),
    Noise("py", "__main__", r"No semi_persistent_directory found: "),
    Noise("py", "__main__", r"Pipeline_options: "),
    Noise("py", "__main__", r"Python sdk harness (starting|exiting)\.$"),
    Noise("py", _WORKER + "statecache", r"Creating state cache with size \d+$"),
    Noise("py", _WORKER + "sdk_worker", r"Creating insecure (control|state) channel for "),
    Noise("py", _WORKER + "sdk_worker", r"(Control|State) channel established\.$"),
    Noise("py", _WORKER + "sdk_worker", r"Initializing SDKHarness with "),
    Noise("py", _WORKER + "sdk_worker", r"No more requests from control plane$"),
    Noise("py", _WORKER + "sdk_worker", r"SDK Harness waiting for in-flight requests to complete$"),
    Noise("py", _WORKER + "sdk_worker", r"Closing all cached gRPC state handlers\.$"),
    Noise("py", _WORKER + "sdk_worker", r"Done consuming work\.$"),
    Noise("py", _WORKER + "data_plane", r"Creating client data channel for "),
    Noise("py", _WORKER + "data_plane", r"Data channel established\.$"),
    Noise("py", _WORKER + "data_plane", r"Closing all cached grpc data channels\.$"),
)
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

_state: dict[str, Any] = {"verbosity": None, "interactive": None, "filter": None}


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
    value, source = _verbosity_arg(list(argv[1:]))
    if value is None and environ.get(ENV_VAR, "").strip():
        value, source = environ[ENV_VAR], f"${ENV_VAR}"
    if value is None:
        return QUIET
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{source} must be an integer (0: quiet, 1: everything), got {value!r}.") from None


def _verbosity_arg(args: list[str]) -> tuple[str | None, str | None]:
    """The last `--verbosity`/`-v` value before `--`, with the spelling it was given in."""
    value, source = None, None
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
    return value, source


def configure(
    verbosity: int | None = None,
    *,
    filter_stderr: bool = True,
    argv: Sequence[str] | None = None,
) -> int:
    """Sets how much the process and its subprocesses print; call it before TensorFlow loads.

    Quiet (verbosity 0 or below): `TF_CPP_MIN_LOG_LEVEL=2` unless already set, Beam and
    TensorFlow Python loggers at WARNING, the libraries' INFO records dropped from absl's
    handler, and (with `filter_stderr`) the lines of `NOISE` dropped from this process's stderr
    and its subprocesses' until exit. Verbose (1 and above): `TF_CPP_MIN_LOG_LEVEL=0` unless
    set, those loggers at INFO, nothing filtered. Idempotent.

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
            argv = sys.argv if argv is None else argv
            sys.exit(f"{os.path.basename(argv[0]) if argv else 'cxr'}: error: {error}")
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
        context = filtered_stderr(NOISE)
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
def filtered_stderr(noise: Sequence[Noise]) -> Iterator[None]:
    """Drops the lines named by `noise` from file descriptor 2 while active.

    Works at the descriptor level, so it also filters C++ logging and the subprocesses
    started inside the block (they inherit the descriptor). Everything else is forwarded.
    """
    pattern = "|".join(f"(?:{item.pattern()})" for item in noise) or r"(?!)"
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
