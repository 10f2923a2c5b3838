"""The console scripts' entry points, and how every binary starts.

A console script (`cxr-train`) imports its entry function before anything else, so the entry
functions live here, in a module that imports no library: each one sets the console's
verbosity first (`verbosity.configure`, which must run before TensorFlow loads so that its
start-up lines are filtered), then imports its binary and calls the binary's `run()`, the same
function `python -m <module>` calls. So `cxr-train --help` and `python -m trainer.train --help`
print the same text, and error lines name the command the user typed.

    cxr-demo-data        demo_data.generate
    cxr-build-tfrecords  beam_pipelines.build_tfrecords
    cxr-train            trainer.train
    cxr-evaluate         trainer.evaluate
    cxr-predict          trainer.predict
    cxr-inspect          trainer.inspect

Every binary's `run()` calls `run_binary`: its flags become the key flags of the main module
(absl's `--help` lists exactly those, with default and help), its docstring the usage text, and
its `main` is wrapped by `errors.exit_on_expected_errors`.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

from cxr_cli import verbosity

# Console script -> binary module (pyproject.toml's [project.scripts] name these functions).
COMMANDS = {
    "cxr-demo-data": "demo_data.generate",
    "cxr-build-tfrecords": "beam_pipelines.build_tfrecords",
    "cxr-train": "trainer.train",
    "cxr-evaluate": "trainer.evaluate",
    "cxr-predict": "trainer.predict",
    "cxr-inspect": "trainer.inspect",
}
# Under every binary's usage line in `--help`, before its flags.
COMMON_HELP = (
    "--flagfile=FILE reads flags from FILE (one per line); --verbosity=1 (or CXR_VERBOSITY=1) shows\n"
    "every library's output and every error's traceback; --helpfull lists absl's flags too."
)


def launch(command: str) -> None:
    """Runs the binary of a console script as `python -m <module>` would.

    Args:
      command: a key of `COMMANDS`.
    """
    verbosity.configure()  # Before the binary's imports load TensorFlow.
    if not sys.argv or sys.argv[0] in ("", "-c"):
        sys.argv[:1] = [command]  # Run through `python -c` (tests): name the command.
    importlib.import_module(COMMANDS[command]).run()


def demo_data() -> None:
    """`cxr-demo-data`: the synthetic NIH-layout demo set."""
    launch("cxr-demo-data")


def build_tfrecords() -> None:
    """`cxr-build-tfrecords`: the Beam job that writes sharded records."""
    launch("cxr-build-tfrecords")


def train() -> None:
    """`cxr-train`: trains and exports a model."""
    launch("cxr-train")


def evaluate() -> None:
    """`cxr-evaluate`: a run's reports."""
    launch("cxr-evaluate")


def predict() -> None:
    """`cxr-predict`: findings for image files."""
    launch("cxr-predict")


def inspect() -> None:
    """`cxr-inspect`: checks, summarizes and draws a records directory."""
    launch("cxr-inspect")


def usage_text(doc: str | None, module: str, arguments: str = "") -> str:
    """What `--help` prints above the flags: the summary, a usage line, the common flags."""
    from cxr_cli import errors

    summary = " ".join((doc or "").strip().split("\n\n", 1)[0].split())
    command = errors.command_name(module)
    command = f"python -m {command}" if command == module else command
    usage = " ".join(part for part in (command, arguments, "[flags]") if part)
    return f"{summary}\nUSAGE: {usage}\n{COMMON_HELP}\n".replace("%", "%%")


def wants_help(argv: list[str]) -> bool:
    """Whether the command line asks for help (`--help`, `-h`, `-?`, `--helpshort`) before any `--`."""
    args = argv[1 : argv.index("--") if "--" in argv else len(argv)]
    return any(arg in ("--help", "-help", "-h", "-?", "--helpshort") for arg in args)


def run_binary(
    main: Callable[[list[str]], Any],
    *,
    module: str,
    doc: str | None,
    flag_names: Iterable[str],
    arguments: str = "",
    flag_values: Any = None,
) -> None:
    """Starts a binary under absl: help text, key flags, one-line expected errors.

    Args:
      main: the binary's `main(argv)`.
      module: its module's dotted name, the command's name under `python -m`.
      doc: its module docstring; `--help` shows its first paragraph, a usage line and the flags
        (so that `cxr-train --help | head` shows flags), the whole of it is `pydoc`'s.
      arguments: what the command takes besides flags, e.g. "RECORDS_DIR".
      flag_names: its own flags, listed by `--help`.
      flag_values: where they are defined; default absl's global `FLAGS`. A binary with flags of
        its own (`parse_own_flags`) gets the arguments neither it nor absl knows in `argv`.
    """
    from absl import app, flags

    from cxr_cli import errors

    verbosity.configure()  # Idempotent; sets the loggers TensorFlow created since.
    own_flags = flag_values is not None
    flag_values = flag_values if own_flags else flags.FLAGS
    main_module = sys.argv[0]  # What absl's `--help` lists the key flags of.
    for name in [*flag_names, *(["verbosity"] if "verbosity" in flag_values else [])]:
        flag_values.register_key_flag_for_module(main_module, flag_values[name])
    sys.modules["__main__"].__doc__ = usage_text(doc, module, arguments)
    wrapped = errors.exit_on_expected_errors(main, program=errors.command_name(module))
    if own_flags:
        app.run(wrapped, flags_parser=functools.partial(parse_own_flags, flag_values))
    else:
        if wants_help(sys.argv):  # absl's own --help exits with status 1.
            app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
        app.run(wrapped)


def parse_own_flags(flag_values: Any, argv: list[str]) -> list[str]:
    """Parses a binary's own `flag_values`, then absl's; returns argv with the arguments neither
    knows (e.g. Beam's pipeline options). `--help` prints the usage and the binary's flags."""
    from absl import flags

    if wants_help(argv):
        print(
            (sys.modules["__main__"].__doc__ or "").replace("%%", "%") + "\nflags:\n" + flag_values.get_help()
        )
        sys.exit(0)
    return flags.FLAGS(flag_values(argv, known_only=True), known_only=True)
