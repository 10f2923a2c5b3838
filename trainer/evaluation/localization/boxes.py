"""NIH's bounding boxes (`BBox_List_2017.csv`): reading, checking and scaling to the records.

NIH ships 984 hand-drawn boxes on 880 test images for 8 findings, in the 1024x1024 pixel
coordinates of the released PNGs. The file's quirks, all handled here:

    Image Index,Finding Label,Bbox [x,y,w,h],,,
    00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661

- the header's `Bbox [x,y,w,h]` splits into four CSV fields, and the header ends with three
  empty columns that no data row fills;
- Infiltration is spelled `Infiltrate`;
- x, y are the top-left corner, w, h the size, as floats.

Where boxes are read: the evaluation reads the box file, not the Beam job. Boxes concern about
1% of the test images (880 of 25,596), only the localization report uses them, and putting
them into the records would change the record contract (feature spec, manifest, every reader)
for every consumer. The evaluation finds the file in the records' data directory (the
manifest's `data_dir` option, or one folder below it, like NIH's `metadata/`), or takes an
explicit path.

Nothing is dropped silently: a row that cannot be scored becomes a `BoxReject` with one of
`REJECT_REASONS` and a detail naming the value, and rows read = boxes kept + rows rejected.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrecords import schema

BOX_FILE_NAMES = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
# The side of the released NIH PNGs, whose pixel grid the box coordinates use.
NIH_IMAGE_SIZE = 1024
# NIH's spellings that differ from `schema.LABELS`.
FINDING_SPELLINGS = {"Infiltrate": "Infiltration"}
_HEADER_START = ("Image Index", "Finding Label")
_BOX_COLUMNS = ("x", "y", "w", "h")

MALFORMED_ROW = "malformed_row"
UNKNOWN_FINDING = "unknown_finding"
BOX_NOT_POSITIVE = "box_not_positive"
BOX_OUTSIDE_IMAGE = "box_outside_image"
IMAGE_NOT_EVALUATED = "image_not_in_records"
REJECT_REASONS = (MALFORMED_ROW, UNKNOWN_FINDING, BOX_NOT_POSITIVE, BOX_OUTSIDE_IMAGE, IMAGE_NOT_EVALUATED)


@dataclasses.dataclass(frozen=True)
class Box:
    """One box in the records' pixel coordinates (x right, y down, origin at the top-left corner).

    Attributes:
      image_index: the image's file name, e.g. "00013118_008.png".
      finding: a label of `schema.FINDINGS` (NIH's `Infiltrate` already mapped).
      x, y: top-left corner, in pixels of the records' image.
      width, height: size, in the same pixels.
      row: the data row's line number in the file (the header is line 1).
    """

    image_index: str
    finding: str
    x: float
    y: float
    width: float
    height: float
    row: int


@dataclasses.dataclass(frozen=True)
class BoxReject:
    """A row of the box file that was not kept, with why."""

    row: int
    image_index: str
    finding: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BoxSet:
    """What `read_boxes` found: the kept boxes, the rejected rows, and where they came from.

    Attributes:
      path: the box file.
      image_size: side of the records' images the boxes are scaled to.
      source_size: side of the images the file's coordinates refer to.
      boxes: kept boxes, in file order.
      rejects: rejected rows, in file order.
    """

    path: str
    image_size: int
    source_size: int
    boxes: tuple[Box, ...]
    rejects: tuple[BoxReject, ...]

    @property
    def rows(self) -> int:
        """Data rows read: always `len(boxes) + len(rejects)`."""
        return len(self.boxes) + len(self.rejects)

    def reject_counts(self) -> dict[str, int]:
        """Per reason (every one of `REJECT_REASONS`, zeros included), how many rows were rejected."""
        counts = collections.Counter(reject.reason for reject in self.rejects)
        return {reason: counts.get(reason, 0) for reason in REJECT_REASONS}

    def by_image(self) -> dict[str, list[Box]]:
        """Image index -> its boxes, images in first-seen file order."""
        grouped: dict[str, list[Box]] = {}
        for box in self.boxes:
            grouped.setdefault(box.image_index, []).append(box)
        return grouped


def find_box_file(data_dir: str) -> str | None:
    """The box file in `data_dir` or one folder below it (NIH's `metadata/`), or None.

    Raises:
      ValueError: several box files, naming them.
    """
    found: list[str] = []
    for name in BOX_FILE_NAMES:
        for pattern in (os.path.join(data_dir, name), os.path.join(data_dir, "*", name)):
            found.extend(tf.io.gfile.glob(pattern))
    found = sorted(set(found))
    if len(found) > 1:
        raise ValueError(f"Several box files under {data_dir!r}: {found}; name one with --boxes_csv.")
    return found[0] if found else None


def read_box_table(path: str) -> pd.DataFrame:
    """Reads the box file's rows as text, header checked, trailing empty columns tolerated.

    Args:
      path: `BBox_List_2017.csv` (or `.csv.gz`), local or any `tf.io.gfile` path.

    Returns:
      A frame with columns image_index, finding, x, y, w, h (all str, "" where missing), extra
      (the non-empty values beyond the sixth field, joined by ","), and row (the line number).

    Raises:
      ValueError: a missing file, or a header that is not NIH's, naming the file.
    """
    if not tf.io.gfile.exists(path):
        raise ValueError(f"Box file {path!r} does not exist.")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    compression = "gzip" if path.endswith(".gz") else None
    try:
        # No header row and text cells: the header is checked by hand, numbers parsed per row.
        # Blank lines are kept (and dropped below) so that the line numbers stay right.
        frame = pd.read_csv(
            io.BytesIO(data),
            compression=compression,
            header=None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path}: not a readable box CSV ({e}).") from e
    header = [str(value).strip() for value in frame.iloc[0]] if len(frame) else []
    if len(header) < 6 or tuple(header[:2]) != _HEADER_START or not header[2].startswith("Bbox [x"):
        raise ValueError(
            f"{path}: expected NIH's header 'Image Index,Finding Label,Bbox [x,y,w,h],,,', got {','.join(header)!r}."
        )
    frame.index = np.arange(1, len(frame) + 1)  # Line numbers.
    body = frame.iloc[1:]
    body = body[(body != "").any(axis=1)]
    table = pd.DataFrame(
        {
            "image_index": body[0].str.strip(),
            "finding": body[1].str.strip(),
            **{name: body[2 + k].str.strip() for k, name in enumerate(_BOX_COLUMNS)},
        }
    )
    table["extra"] = [
        ",".join(v for v in row if v.strip()) for row in body.iloc[:, 6:].itertuples(index=False)
    ]
    table["row"] = body.index.to_numpy()
    return table.reset_index(drop=True)


def read_boxes(
    path: str,
    *,
    image_size: int,
    images: Collection[str],
    source_size: int = NIH_IMAGE_SIZE,
    images_name: str = "records",
) -> BoxSet:
    """Reads, checks and scales the box file to the records' image size.

    Args:
      path: the box file.
      image_size: side of the records' (square) images; boxes are scaled by image_size / source_size.
      images: the image indices that can be scored (e.g. the test split's); rows of other
        images are rejected with `IMAGE_NOT_EVALUATED`.
      source_size: side of the images the coordinates refer to (NIH's PNGs: 1024).
      images_name: how the rejects' detail names `images` ("test records").

    Returns:
      A `BoxSet`.

    Raises:
      ValueError: a missing file, a header that is not NIH's, or a non-positive size argument.
    """
    for name, value in (("image_size", image_size), ("source_size", source_size)):
        if value <= 0:
            raise ValueError(f"{name} must be a positive number of pixels, got {value}.")
    table = read_box_table(path)
    scale = image_size / source_size
    known = frozenset(images)
    boxes, rejects = [], []
    for record in table.itertuples(index=False):
        finding = FINDING_SPELLINGS.get(record.finding, record.finding)
        problem = _check_row(record, finding, source_size, known, images_name)
        if problem is not None:
            rejects.append(BoxReject(int(record.row), record.image_index, record.finding, *problem))
            continue
        x, y, w, h = (float(getattr(record, name)) * scale for name in _BOX_COLUMNS)
        boxes.append(Box(record.image_index, finding, x, y, w, h, int(record.row)))
    return BoxSet(path, image_size, source_size, tuple(boxes), tuple(rejects))


def _check_row(
    record: Any, finding: str, source_size: int, known: frozenset[str], images_name: str
) -> tuple[str, str] | None:
    """(reason, detail) of a row that cannot be kept, or None."""
    values = [getattr(record, name) for name in _BOX_COLUMNS]
    if not record.image_index or record.extra:
        detail = "no image name" if not record.image_index else f"unexpected values {record.extra!r} after h"
        return MALFORMED_ROW, detail
    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    if not np.isfinite(numbers).all():
        return MALFORMED_ROW, f"x, y, w, h must be finite numbers, got {values}"
    if finding not in schema.FINDINGS:
        return (
            UNKNOWN_FINDING,
            f"{record.finding!r} is not one of the 14 findings (NIH's Infiltrate is mapped)",
        )
    x, y, w, h = numbers
    if w <= 0 or h <= 0:
        return BOX_NOT_POSITIVE, f"width {w:g} and height {h:g} must be positive"
    if x < 0 or y < 0 or x + w > source_size or y + h > source_size:
        return (
            BOX_OUTSIDE_IMAGE,
            f"box x={x:g} y={y:g} w={w:g} h={h:g} leaves the {source_size}x{source_size} image",
        )
    if record.image_index not in known:
        return IMAGE_NOT_EVALUATED, f"image not among the {len(known)} {images_name}"
    return None


def write_rejects(path: str, rejects: Sequence[BoxReject]) -> str:
    """Writes one JSON object per rejected row (`BoxReject` fields) to `path`; returns it."""
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("".join(json.dumps(reject.to_json(), sort_keys=True) + "\n" for reject in rejects))
    return path
