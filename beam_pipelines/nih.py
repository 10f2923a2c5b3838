"""Pure functions for the NIH ChestX-ray14 layout: CSV rows, image files, pixels, records.

Nothing here knows about Beam; the DoFns in `transforms` only call these functions, and the
tests call them directly.

The CSV comes in two formats, both read by `read_labels_table`:
  - `Data_Entry_2017.csv`: the header ends with a trailing comma (12 fields, rows have 11),
    ages are strings like `058Y`, `011M` or `001D`, ids are zero-padded (`000`, `00000001`);
  - `Data_Entry_2017_v2020.csv`: no trailing comma, plain integers.
Either may be gzip-compressed (`.csv.gz`).

Why this module does not import TensorFlow: every Beam worker process imports it, and
`import tensorflow` costs about 4 s and 800 MB of memory per process, for nothing: the record
keys, labels and label parsing come from `tfrecords.schema`, and the record bytes from the
TensorFlow-free encoder of `tfrecords.codec`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxr_cli import errors
from tfrecords import codec, schema

# The CSV columns the job needs, by their names in both formats.
IMAGE_INDEX = "Image Index"
FINDING_LABELS = "Finding Labels"
FOLLOW_UP = "Follow-up #"
PATIENT_ID = "Patient ID"
PATIENT_AGE = "Patient Age"
PATIENT_SEX = "Patient Gender"
VIEW_POSITION = "View Position"
REQUIRED_COLUMNS = (
    IMAGE_INDEX,
    FINDING_LABELS,
    FOLLOW_UP,
    PATIENT_ID,
    PATIENT_AGE,
    PATIENT_SEX,
    VIEW_POSITION,
)

# Reject reasons (the keys of the manifest's "rejects").
BAD_ROW = "bad_row"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE = "duplicate"
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
NOT_IN_SPLIT_LISTS = "not_in_split_lists"
REJECT_REASONS = (BAD_ROW, UNKNOWN_LABEL, DUPLICATE, MISSING_IMAGE, BAD_IMAGE, NOT_IN_SPLIT_LISTS)

IMAGE_SUFFIX = ".png"
_AGE_RE = re.compile(r"^\s*(\d{1,3})\s*([YMDW]?)\s*$", re.IGNORECASE)
# Days per unit, to turn 011M or 001D into whole years (rounded down: a 11-month-old is 0).
_AGE_UNIT_DAYS = {"Y": 365.25, "M": 365.25 / 12, "W": 7.0, "D": 1.0}
_BUFFER_REPR_RE = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")
_SEXES = ("M", "F")
_VIEWS = ("PA", "AP")
# Pixel modes Pillow gives 16-bit grayscale PNGs (I;16 on little-endian machines, I when converted).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class CsvError(errors.ValidationError):
    """The labels CSV cannot be used at all (missing, empty, lacking columns, unparsable)."""


# ---------------------------------------------------------------------------------------------
# The labels CSV.


@dataclasses.dataclass(frozen=True)
class CsvRow:
    """One data line of the labels CSV, as strings, with its 1-based line number."""

    line: int
    fields: Mapping[str, str]
    num_fields: int
    expected_fields: int


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedRow:
    """A valid CSV row: everything a record needs besides the pixels."""

    line: int
    image_index: str
    multi_hot: tuple[int, ...]
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view_position: str


@dataclasses.dataclass(frozen=True)
class Reject:
    """An input that was not written, with the reason and a detail for the user."""

    reason: str
    image_index: str
    line: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "image_index": self.image_index,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
        }


def read_labels_table(file_obj: io.IOBase | Any, *, name: str) -> tuple[list[str], Iterator[list[str]]]:
    """Opens the labels CSV: its header, and the data records as a stream.

    One record is in memory at a time, whatever the file's size. A short or long row becomes a
    `bad_row` reject with its line number (in `parse_row`) instead of stopping the job.

    Args:
      file_obj: the opened (decompressed) file, binary (UTF-8) or text.
      name: the path, for messages.

    Returns:
      (header names without empty ones, an iterator over the data records as lists of strings;
      record i is line i + 2 of the file).

    Raises:
      CsvError: empty file, unreadable file, or missing required columns (named); while
        iterating, a record the CSV reader cannot parse.
    """
    reader = csv.reader(_text_lines(file_obj))
    try:
        first = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as e:
        raise CsvError(f"Labels CSV {name!r} cannot be parsed: {e}") from e
    if not first:
        raise CsvError(f"Labels CSV {name!r} is empty; expected NIH's Data_Entry_2017.csv.")
    # Empty names (the 2017 header's trailing comma) are not columns.
    header = [value.strip() for value in first if value]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise CsvError(
            f"Labels CSV {name!r} lacks required column(s) {missing}; its header is {header}. "
            f"Expected NIH's Data_Entry_2017.csv (2017 or v2020 format)."
        )
    return header, _records(reader, name)


def _text_lines(file_obj: io.IOBase | Any) -> Iterator[str]:
    # Line by line, also from Beam's CompressedFile (gzip), which io.TextIOWrapper cannot wrap.
    while line := file_obj.readline():
        yield line.decode("utf-8") if isinstance(line, bytes) else line


def _records(reader: Iterator[list[str]], name: str) -> Iterator[list[str]]:
    try:
        yield from reader
    except (csv.Error, UnicodeDecodeError) as e:
        raise CsvError(f"Labels CSV {name!r} cannot be parsed: {e}") from e


def iter_csv_rows(header: Sequence[str], records: Iterable[Sequence[str]]) -> Iterator[CsvRow]:
    """Yields each data record of `read_labels_table` as a `CsvRow` (line numbers are 1-based)."""
    # The header's bracketed names (OriginalImage[Width,Height]) split into two fields like the
    # data, so data rows have as many fields as the header's non-empty names.
    expected = len(header)
    columns = {name: header.index(name) for name in REQUIRED_COLUMNS}
    for position, record in enumerate(records):
        # Fields up to the last non-empty one: trailing empty fields (a trailing comma) do not count.
        num_fields = len(record)
        while num_fields and not record[num_fields - 1]:
            num_fields -= 1
        fields = {name: (record[col].strip() if col < len(record) else "") for name, col in columns.items()}
        yield CsvRow(line=position + 2, fields=fields, num_fields=num_fields, expected_fields=expected)


def parse_age(value: str) -> int:
    """An NIH age in whole years: `058Y` -> 58, `011M` -> 0, `001D` -> 0, `58` -> 58.

    Raises:
      ValueError: not a number with an optional Y/M/W/D unit.
    """
    match = _AGE_RE.match(value)
    if not match:
        raise ValueError(f"Patient Age {value!r} is not a number of years like '058Y', '011M' or '58'.")
    number, unit = int(match.group(1)), (match.group(2) or "Y").upper()
    return int(math.floor(number * _AGE_UNIT_DAYS[unit] / _AGE_UNIT_DAYS["Y"] + 1e-9))


def _parse_int(value: str, column: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not an integer.") from None
    if number < 0:
        raise ValueError(f"{column} {value!r} is negative.")
    return number


def parse_row(row: CsvRow, *, shared: MutableMapping[str, tuple[int, ...]] | None = None) -> ParsedRow:
    """Validates and converts one CSV row.

    Args:
      row: the row.
      shared: `Finding Labels` string -> its multi-hot tuple, filled as rows are parsed: the rows
        of a table parsed with one dict share a tuple per distinct string (NIH has under a
        thousand) instead of holding one each, which matters where all rows are held at once.

    Raises:
      schema.UnknownLabelError: a finding that is not a label (reject `unknown_label`).
      ValueError: any other malformed field or a wrong number of fields (reject `bad_row`).
    """
    if row.num_fields != row.expected_fields:
        raise ValueError(f"has {row.num_fields} fields, expected {row.expected_fields}.")
    fields = row.fields
    image_index = fields[IMAGE_INDEX]
    if not image_index.lower().endswith(IMAGE_SUFFIX) or "/" in image_index:
        raise ValueError(f"Image Index {image_index!r} is not a PNG file name like '00000001_000.png'.")
    sex = fields[PATIENT_SEX].upper()
    if sex not in _SEXES:
        raise ValueError(f"Patient Gender {fields[PATIENT_SEX]!r} is not one of {_SEXES}.")
    view = fields[VIEW_POSITION].upper()
    if view not in _VIEWS:
        raise ValueError(f"View Position {fields[VIEW_POSITION]!r} is not one of {_VIEWS}.")
    patient_id = _parse_int(fields[PATIENT_ID], PATIENT_ID)
    follow_up = _parse_int(fields[FOLLOW_UP], FOLLOW_UP)
    age = parse_age(fields[PATIENT_AGE])
    labels = fields[FINDING_LABELS]
    multi_hot = shared.get(labels) if shared is not None else None
    if multi_hot is None:
        multi_hot = tuple(int(v) for v in schema.labels_to_multi_hot(labels))
        if shared is not None:
            shared[labels] = multi_hot
    return ParsedRow(
        line=row.line,
        image_index=image_index,
        multi_hot=multi_hot,
        patient_id=patient_id,
        follow_up=follow_up,
        age=age,
        # One string object for all rows, not two per row.
        sex=sys.intern(sex),
        view_position=sys.intern(view),
    )


def read_name_list(text: str) -> list[str]:
    """The image names of train_val_list.txt / test_list.txt (no trailing newline needed)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def image_name(path: str) -> str:
    """The file name of an image path (local or gs://), which the CSV's Image Index names."""
    return path.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Pixels.


def decode_gray(data: bytes) -> np.ndarray:
    """Decodes a PNG of any mode into one 8-bit gray channel [H, W].

    L as is; LA drops alpha; RGB, RGBA and P go through Pillow's ITU-R 601 luma (exact for the
    R=G=B images of NIH); 16-bit gray (I;16 and friends) is scaled to 8 bits by v / 257, rounded,
    so 65535 -> 255 and nothing is clipped.

    Pillow rather than tf.image: both decode and resize at about the same speed (the
    "decode_pil" and "decode_tf" cases of benchmarks/bench_tfrecords.py; results differ by at
    most 1 grey level), but TensorFlow would have to be imported by every worker (see the
    module docstring).

    Raises:
      ValueError: empty, truncated, corrupt or not an image; the message is the decoder's.
    """
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode == "L":
                return np.asarray(image)
            if mode in _SIXTEEN_BIT_MODES:
                wide = np.asarray(image).astype(np.int64)
                return np.clip((wide * 255 + 32767) // 65535, 0, 255).astype(np.uint8)
            if mode == "LA":
                return np.asarray(image.getchannel("L"))
            return np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # Pillow raises OSError for truncated data, SyntaxError for broken PNG chunks. Its message
        # names the in-memory buffer by address, which would make rejects differ between runs.
        message = _BUFFER_REPR_RE.sub("the file", str(e))
        raise ValueError(f"{type(e).__name__}: {message}") from None


def resize_area(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Resizes gray uint8 pixels to image_size x image_size with an area (box) filter.

    Pillow's BOX filter averages every source pixel a target pixel covers (antialiased); for the
    1024 -> 256 case it matches tf.image.resize(method="area") within one grey level.
    """
    if pixels.shape == (image_size, image_size):
        return pixels
    image = Image.fromarray(pixels, mode="L")
    return np.asarray(image.resize((image_size, image_size), Image.Resampling.BOX))


def image_to_record(data: bytes, row: ParsedRow, *, image_size: int, image_format: str) -> bytes:
    """The whole per-image work: PNG bytes + CSV row -> serialized record.

    Raises:
      ValueError: the image cannot be decoded (reject `bad_image`).
    """
    pixels = resize_area(decode_gray(data), image_size)
    return codec.serialize_example(
        codec.encode_image(pixels, image_format),
        image_format=image_format,
        height=image_size,
        width=image_size,
        multi_hot=row.multi_hot,
        image_index=row.image_index,
        patient_id=row.patient_id,
        follow_up=row.follow_up,
        age=row.age,
        sex=row.sex,
        view_position=row.view_position,
    )
