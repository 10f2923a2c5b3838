"""How numbers read in the reports: fixed decimals, "undefined" for what a split cannot define."""

from __future__ import annotations

import math

UNDEFINED = "undefined"


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with `digits` decimals, or "undefined" for None/NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return UNDEFINED
    return f"{value:.{digits}f}"


def fmt_ci(low: float | None, high: float | None, digits: int = 3) -> str:
    if low is None or high is None:
        return UNDEFINED
    return f"{low:.{digits}f}–{high:.{digits}f}"


def signed(value: float | None) -> str:
    if value is None:
        return UNDEFINED
    text = f"{value:+.3f}"
    return "0.000" if text in ("+0.000", "-0.000") else text  # No sign on what rounds to zero.


def weights_tag(sha256: str | None) -> str:
    """Names a set of weights in a figure's title: the first 12 hex digits of their sha256."""
    return f"weights sha256 {sha256[:12]}…" if sha256 else "weights sha256 unknown"
