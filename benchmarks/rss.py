"""Memory of a whole process tree, from /proc (Linux): what the benchmarks report as peak RSS."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Sequence
from typing import IO, Any


def tree_rss_bytes(root_pid: int) -> int:
    """Sum of VmRSS over `root_pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


@dataclasses.dataclass(frozen=True)
class SampledRun:
    """A finished command: its exit code, wall time and the peak summed RSS of its process tree."""

    returncode: int
    wall_seconds: float
    peak_rss_bytes: int
    samples: int


def run_sampled(
    command: Sequence[str],
    *,
    stdout: IO[Any] | int | None,
    stderr: IO[Any] | int | None,
    interval_s: float = 1.0,
) -> SampledRun:
    """Runs `command` to its end, sampling `tree_rss_bytes` every `interval_s` seconds.

    `stdout` and `stderr` go to `subprocess.Popen`; give files or DEVNULL, not PIPE (nothing
    reads a pipe while the command runs).
    """
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    peak = samples = 0
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        samples += 1
        time.sleep(interval_s)
    return SampledRun(process.returncode, time.monotonic() - start, peak, samples)
