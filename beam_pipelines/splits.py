"""Fixed, patient-level train/val/test splits.

Two modes (`SplitConfig.mode`):
  - `official`: the data set's published split. An image named in NIH's test_list.txt goes to
    test; one named in train_val_list.txt (or another set's published train+val part, e.g.
    CheXpert's train.csv) goes to val when its patient's stable hash falls below
    `val_fraction`, else to train; a set that publishes train, val and test (MIMIC-CXR-JPG)
    keeps them. The official lists are patient-disjoint, so no patient spans two splits. A set
    without a published split is split by patient (the job says so and records `patient`).
  - `patient`: every patient goes by its stable hash to train/val/test with `fractions`
    (70/10/20 by default).

The hash is sha256 of a salted patient id: the same on every machine, Python version and run
(Python's `hash()` is salted per process and must never be used), and a patient already seen
keeps its split when the data set grows, because the answer depends on that patient alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence

from cxr_cli import errors
from tfrecords import manifest

TRAIN, VAL, TEST = manifest.SPLITS

MODES = ("official", "patient")
TRAIN_VAL_LIST = "train_val"
TEST_LIST = "test"
# Published splits taken as they are (`official_split`).
TRAIN_LIST, VAL_LIST = TRAIN, VAL
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
DEFAULT_VAL_FRACTION = 0.125


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How images are assigned to splits; validated on construction.

    Attributes:
      mode: "official" or "patient".
      val_fraction: official mode, the share of train_val patients that go to val, in (0, 1).
      fractions: patient mode, (train, val, test) shares, each in [0, 1], summing to 1.
    """

    mode: str = "official"
    val_fraction: float = DEFAULT_VAL_FRACTION
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS

    def __post_init__(self):
        if self.mode not in MODES:
            raise errors.ValidationError(f"split mode must be one of {MODES}, got {self.mode!r}.")
        if not 0.0 < self.val_fraction < 1.0:
            raise errors.ValidationError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}.")
        if len(self.fractions) != 3 or any(not 0.0 <= f <= 1.0 for f in self.fractions):
            raise errors.ValidationError(
                f"split_fractions must be three shares (train, val, test) in [0, 1], got {self.fractions!r}."
            )
        if not math.isclose(sum(self.fractions), 1.0, abs_tol=1e-6):
            raise errors.ValidationError(
                f"split_fractions must sum to 1, got {self.fractions!r} (sum {sum(self.fractions)})."
            )


def parse_fractions(text: str) -> tuple[float, float, float]:
    """Parses `--split_fractions`: "70,10,20" (percent) or "0.7,0.1,0.2".

    Raises:
      ValueError: not three non-negative numbers summing to 100 or to 1; names the flag and value.
    """
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise errors.ValidationError(
            f"--split_fractions must be three comma-separated numbers like '70,10,20', got {text!r}."
        ) from None
    if len(values) != 3 or any(v < 0 for v in values):
        raise errors.ValidationError(
            f"--split_fractions must be three non-negative numbers like '70,10,20', got {text!r}."
        )
    total = sum(values)
    if math.isclose(total, 100.0, abs_tol=1e-6):
        values = tuple(v / 100.0 for v in values)
    elif not math.isclose(total, 1.0, abs_tol=1e-6):
        raise errors.ValidationError(
            f"--split_fractions must sum to 100 (or to 1), got {text!r} (sum {total:g})."
        )
    return values  # type: ignore[return-value]


def stable_fraction(key: str | int, *, salt: str) -> float:
    """A number in [0, 1) fixed by `key` and `salt`: the first 8 bytes of sha256("salt:key")."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def patient_split(patient_id: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """The split of a patient in `patient` mode."""
    u = stable_fraction(patient_id, salt="patient-split")
    train, val, _ = fractions
    if u < train:
        return TRAIN
    if u < train + val:
        return VAL
    return TEST


def official_split(
    patient_id: int, official_list: str | None, val_fraction: float = DEFAULT_VAL_FRACTION
) -> str | None:
    """The split of an image in `official` mode, or None when neither list names it.

    Args:
      patient_id: the image's patient.
      official_list: "test", "train_val", "train" or "val" (the published part that names the
        image), or None.
      val_fraction: share of train_val patients that go to val.
    """
    if official_list in (TEST_LIST, TRAIN_LIST, VAL_LIST):
        return official_list
    if official_list == TRAIN_VAL_LIST:
        return VAL if stable_fraction(patient_id, salt="official-val") < val_fraction else TRAIN
    return None


def assign_split(config: SplitConfig, patient_id: int, official_list: str | None) -> str | None:
    """The split of one image under `config`; None in official mode for an image in neither list."""
    if config.mode == "patient":
        return patient_split(patient_id, config.fractions)
    return official_split(patient_id, official_list, config.val_fraction)
