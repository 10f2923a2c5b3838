"""The record contract: label vocabulary, image formats, feature keys and the feature spec.

Producer (`beam_pipelines`) and consumer (`tfrecords.dataset`, `trainer`) both import
this module; neither spells a key, a label or a shape on its own. `tfrecords.codec`
turns a record into bytes and back.

One record is one grayscale image:

  image           bytes   raw uint8 HxW (row-major) or a PNG, see `image/format`
  image/format    bytes   b"raw" or b"png"
  height, width   int64
  labels          int64   multi-hot vector in the manifest's label order (NIH's: `LABELS`)
  label_mask      int64   optional, 1 where the label is known (absent: all known)
  label_uncertain int64   optional, 1 where the source wrote the label as uncertain
  image_index     bytes   e.g. b"00000001_000.png"
  patient_id      int64
  follow_up       int64
  age             int64   years
  sex             bytes   b"M" / b"F"
  view_position   bytes   b"PA" / b"AP"

This module imports TensorFlow only in `feature_spec` (and on first access to `FEATURE_SPEC`):
the Beam workers import the labels, keys and `labels_to_multi_hot` from here, and they do not
load TensorFlow (about 4 s and 800 MB per process).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cxr_cli import errors

if TYPE_CHECKING:
    import tensorflow as tf

# The 14 NIH ChestX-ray14 findings in the order of the published tables, then "No Finding",
# which is a label of its own and exclusive of the other 14.
LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
    "No Finding",
)
NUM_LABELS = len(LABELS)
NO_FINDING = "No Finding"
FINDINGS: tuple[str, ...] = LABELS[:-1]  # The 14 findings, without "No Finding".
# The CheXpert labeller's 14 observations in the column order of CheXpert's tables; MIMIC-CXR-JPG
# labels with the same labeller, its table ordering them alphabetically.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
MIMIC_CXR_LABELS: tuple[str, ...] = tuple(sorted(CHEXPERT_LABELS))
LABEL_SEPARATOR = "|"
# NIH's official split lists, by the names of its download (read by the records job, written by
# the demo set).
NIH_TRAIN_VAL_LIST_NAME = "train_val_list.txt"
NIH_TEST_LIST_NAME = "test_list.txt"

# How `IMAGE_KEY` stores the pixels: row-major uint8 bytes, or a grayscale PNG.
IMAGE_FORMATS: tuple[str, ...] = ("raw", "png")

# Feature keys.
IMAGE_KEY = "image"
FORMAT_KEY = "image/format"
HEIGHT_KEY = "height"
WIDTH_KEY = "width"
LABELS_KEY = "labels"
IMAGE_INDEX_KEY = "image_index"
PATIENT_ID_KEY = "patient_id"
FOLLOW_UP_KEY = "follow_up"
AGE_KEY = "age"
SEX_KEY = "sex"
VIEW_POSITION_KEY = "view_position"
# Optional int64 vector beside `labels`: 1 where the label is known, 0 where it is uncertain or
# not mentioned. Records without it (every NIH record) read as all known.
LABEL_MASK_KEY = "label_mask"
# Optional int64 vector beside `labels`: 1 where the source wrote the label as uncertain (CheXpert's
# -1.0), else 0. Such a label has `labels` 0 and `label_mask` 0; the trainer's uncertainty policy
# (ignore, ones, zeros) decides what it becomes. Records without it read as all zeros.
LABEL_UNCERTAIN_KEY = "label_uncertain"

# Metadata keys, as yielded next to the images for reports.
METADATA_KEYS = (IMAGE_INDEX_KEY, PATIENT_ID_KEY, FOLLOW_UP_KEY, AGE_KEY, SEX_KEY, VIEW_POSITION_KEY)

# Every key with its type and shape; `FEATURE_SPEC` turns it into TensorFlow's feature spec.
FEATURE_TYPES: dict[str, tuple[str, tuple[int, ...]]] = {
    IMAGE_KEY: ("string", ()),
    FORMAT_KEY: ("string", ()),
    HEIGHT_KEY: ("int64", ()),
    WIDTH_KEY: ("int64", ()),
    LABELS_KEY: ("int64", (NUM_LABELS,)),
    IMAGE_INDEX_KEY: ("string", ()),
    PATIENT_ID_KEY: ("int64", ()),
    FOLLOW_UP_KEY: ("int64", ()),
    AGE_KEY: ("int64", ()),
    SEX_KEY: ("string", ()),
    VIEW_POSITION_KEY: ("string", ()),
}


@functools.cache
def feature_spec(num_labels: int = NUM_LABELS) -> dict[str, tf.io.FixedLenFeature]:
    """The `tf.io` feature spec of one record (`FEATURE_SPEC`), built on first use.

    Args:
      num_labels: the length of the records' label vocabulary (the manifest's `labels`);
        NIH's 15 by default.

    `LABEL_MASK_KEY` defaults to all ones and `LABEL_UNCERTAIN_KEY` to all zeros, so records
    written without them (every NIH record) read as all known and none uncertain.
    """
    import tensorflow as tf

    if not isinstance(num_labels, int) or num_labels <= 0:
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}.")
    spec = {
        key: tf.io.FixedLenFeature(list(shape), tf.dtypes.as_dtype(dtype))
        for key, (dtype, shape) in FEATURE_TYPES.items()
    }
    spec[LABELS_KEY] = tf.io.FixedLenFeature([num_labels], tf.int64)
    spec[LABEL_MASK_KEY] = tf.io.FixedLenFeature([num_labels], tf.int64, default_value=[1] * num_labels)
    spec[LABEL_UNCERTAIN_KEY] = tf.io.FixedLenFeature([num_labels], tf.int64, default_value=[0] * num_labels)
    return spec


def __getattr__(name: str) -> Any:
    # `schema.FEATURE_SPEC` without importing TensorFlow at module import.
    if name == "FEATURE_SPEC":
        return feature_spec()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class UnknownLabelError(errors.ValidationError):
    """A `Finding Labels` name that is not one of `LABELS`."""


@dataclasses.dataclass(frozen=True)
class ImageMetadata:
    """The per-image fields of one record besides the pixels and labels."""

    image_index: str
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view_position: str


def labels_to_multi_hot(finding_labels: str) -> np.ndarray:
    """Maps a `Finding Labels` string to a multi-hot vector in `LABELS` order.

    Args:
      finding_labels: NIH's `Finding Labels` field, e.g. "Cardiomegaly|Effusion" or
        "No Finding". Surrounding white space around each name is ignored.

    Returns:
      int64 array of shape [NUM_LABELS] with ones at the named labels.

    Raises:
      UnknownLabelError: (a ValueError) a name not in `LABELS`; the message names it.
      ValueError: the string is empty, repeats a label, or combines "No Finding" with a finding.
    """
    names = [name.strip() for name in str(finding_labels).split(LABEL_SEPARATOR)]
    if not any(names):
        raise ValueError(f"Finding Labels is empty: {finding_labels!r}; expected e.g. 'No Finding'.")
    multi_hot = np.zeros([NUM_LABELS], dtype=np.int64)
    for name in names:
        if name not in LABELS:
            raise UnknownLabelError(
                f"Unknown label {name!r} in Finding Labels {finding_labels!r}; "
                f"known labels are: {', '.join(LABELS)}."
            )
        index = LABELS.index(name)
        if multi_hot[index]:
            raise ValueError(f"Label {name!r} repeated in Finding Labels {finding_labels!r}.")
        multi_hot[index] = 1
    if multi_hot[LABELS.index(NO_FINDING)] and multi_hot.sum() > 1:
        raise ValueError(
            f"'No Finding' is exclusive of the other labels, got Finding Labels {finding_labels!r}."
        )
    return multi_hot


def multi_hot_to_labels(multi_hot: Sequence[int] | np.ndarray) -> str:
    """Inverse of `labels_to_multi_hot`: a multi-hot vector back to a `Finding Labels` string."""
    multi_hot = np.asarray(multi_hot)
    if multi_hot.shape != (NUM_LABELS,):
        raise ValueError(f"multi_hot must have shape [{NUM_LABELS}], got {multi_hot.shape}.")
    return LABEL_SEPARATOR.join(name for name, on in zip(LABELS, multi_hot) if on)
