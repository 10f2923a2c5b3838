"""What a person sees on the terminal, in one import: the names of the three modules behind it.

    cxr_cli.verbosity   the verbosity switch (`--verbosity`, `$CXR_VERBOSITY`) and quiet mode's
                        stderr filter, which drops only the start-up lines it names
    cxr_cli.progress    `Progress`: counts, rate and ETA on one line; `format_duration`
    cxr_cli.errors      `ValidationError`, and the one-line error exit of the binaries

Library code writes `console.Progress(...)`; the binaries and their launchers use the modules.
"""

from cxr_cli.errors import ValidationError, exit_on_expected_errors
from cxr_cli.progress import Progress, format_duration
from cxr_cli.verbosity import configure, interactive, is_verbose

__all__ = [
    "Progress",
    "ValidationError",
    "configure",
    "exit_on_expected_errors",
    "format_duration",
    "interactive",
    "is_verbose",
]
