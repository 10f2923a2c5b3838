"""The `nih` adapter: NIH ChestX-ray14 (the 2017 release and its v2020 label file).

Layout (what the NIH download unpacks to; the demo set writes the same, `make demo-data`):

  Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv[.gz]; here or one folder down, e.g. metadata/)
  train_val_list.txt, test_list.txt     the official split, one image name a line
  images_001/images/00000001_000.png    1024x1024 8-bit PNGs, in any folders below data_dir

  python -m beam_pipelines.build_tfrecords --dataset=nih --data_dir=data/demo --output_dir=data/tfrecords

Labels: `schema.LABELS` (14 findings and "No Finding"); a finding named in `Finding Labels` is
positive, any other negative: every label is known, so the records carry no `label_mask` and
no `label_uncertain` and their bytes are those the job wrote before other data sets existed.
Rows and files are joined by file name (`Image Index`), wherever the file lies below data_dir.

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
import fnmatch
import io
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.datasets import base
from tfrecords import manifest, schema

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

# Reject reasons (the keys of the manifest's "rejects"), shared by every adapter.
BAD_ROW = base.BAD_ROW
UNKNOWN_LABEL = base.UNKNOWN_LABEL
DUPLICATE = base.DUPLICATE
MISSING_IMAGE = base.MISSING_IMAGE
BAD_IMAGE = base.BAD_IMAGE
NOT_IN_SPLIT_LISTS = base.NOT_IN_SPLIT_LISTS
REJECT_REASONS = base.REJECT_REASONS

# The names of NIH's files, which the demo set's writer spells the same way.
CSV_PATTERNS = ("Data_Entry_2017*.csv", "Data_Entry_2017*.csv.gz")
TRAIN_VAL_LIST_NAME = schema.NIH_TRAIN_VAL_LIST_NAME
TEST_LIST_NAME = schema.NIH_TEST_LIST_NAME
IMAGE_SUFFIX = ".png"
_AGE_RE = re.compile(r"^\s*(\d{1,3})\s*([YMDW]?)\s*$", re.IGNORECASE)
# Days per unit, to turn 011M or 001D into whole years (rounded down: a 11-month-old is 0).
_AGE_UNIT_DAYS = {"Y": 365.25, "M": 365.25 / 12, "W": 7.0, "D": 1.0}
_SEXES = ("M", "F")
_VIEWS = ("PA", "AP")


class CsvError(base.SourceError):
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


# A valid CSV row: everything a record needs besides the pixels.
ParsedRow = base.Row
Reject = base.Reject


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
    reader = csv.reader(base.text_lines(file_obj))
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
# The image files and the official lists.


class ImageFiles(Mapping[str, tuple[str, ...]]):
    """Image name -> the paths of the PNGs of that name, holding each folder's path once.

    A plain {name: [paths]} dict would repeat the folder in every path and give every name a
    list; this one takes about half the memory for NIH's 112,120 files, which the planning
    worker holds together with every CSV row.
    """

    def __init__(self, paths: Iterable[str] = ()):
        self._folders: dict[str, str] = {}
        self._first: dict[str, str] = {}  # name -> folder (with its trailing separator)
        self._more: dict[str, list[str]] = {}  # name -> the folders of further files of that name
        for path in paths:
            self.add(path)

    def add(self, path: str) -> None:
        name = image_name(path)
        folder = path[: len(path) - len(name)]
        folder = self._folders.setdefault(folder, folder)
        if name in self._first:
            self._more.setdefault(name, []).append(folder)
        else:
            self._first[name] = folder

    def __getitem__(self, name: str) -> tuple[str, ...]:
        folders = (self._first[name], *self._more.get(name, ()))
        return tuple(folder + name for folder in folders)

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, name: object) -> bool:
        return name in self._first


def list_images(data_dir: str) -> ImageFiles:
    """Image name -> the paths of the PNGs of that name anywhere below `data_dir`."""
    matches = FileSystems.match([FileSystems.join(data_dir.rstrip("/"), "**")])[0].metadata_list
    return ImageFiles(match.path for match in matches if match.path.lower().endswith(IMAGE_SUFFIX))


def read_membership(lists: Mapping[str, str | None]) -> dict[str, str]:
    """Image name -> the official list that names it, from {list name: path or None}."""
    membership: dict[str, str] = {}
    for list_name, path in lists.items():
        if path:
            with FileSystems.open(path) as f:
                for name in read_name_list(f.read().decode("utf-8")):
                    membership[name] = list_name
    return membership


# ---------------------------------------------------------------------------------------------
# The adapter.


class Adapter(base.Adapter):
    """NIH ChestX-ray14; see the module docstring."""

    name = "nih"
    labels = schema.LABELS
    label_states = manifest.NIH_LABEL_STATES
    split_lists_detail = "official split: the image is in neither train_val_list.txt nor test_list.txt."

    def __init__(self, options: base.Options | None = None):
        super().__init__(options)
        # `Finding Labels` string -> multi-hot tuple, shared by the rows (see `parse_row`).
        self._shared: dict[str, tuple[int, ...]] = {}

    @classmethod
    def recognizes(cls, names: frozenset[str]) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for name in names for pattern in CSV_PATTERNS)

    def prepare(self, data_dir: str, *, max_images: int, split_mode: str) -> base.Source:
        labels_csv = self._resolve_labels_csv(data_dir)
        csv_names, limited_names = _read_csv_names(labels_csv, max_images)
        train_val_list = _find_one(data_dir, TRAIN_VAL_LIST_NAME)
        test_list = _find_one(data_dir, TEST_LIST_NAME)
        if split_mode == "official" and not (train_val_list and test_list):
            raise base.SourceError(
                f"--split=official needs {TRAIN_VAL_LIST_NAME} and {TEST_LIST_NAME} in --data_dir {data_dir!r} "
                f"(found: {train_val_list}, {test_list}); add them or use --split=patient."
            )
        for list_path in (train_val_list, test_list):
            if list_path is not None:
                _check_list(list_path, csv_names, labels_csv)
        on_disk = _images_on_disk(data_dir)
        tables = {"labels_csv": labels_csv}
        tables |= {"train_val_list": train_val_list} if train_val_list else {}
        tables |= {"test_list": test_list} if test_list else {}
        return base.Source(
            data_dir=data_dir,
            tables=tables,
            expected_rows=len(limited_names),
            expected_images=len(set(limited_names) & on_disk),
            description=labels_csv,
            has_published_split=True,
        )

    def _resolve_labels_csv(self, data_dir: str) -> str:
        labels_csv = self.options.labels_csv
        if labels_csv:
            if not FileSystems.exists(labels_csv):
                raise base.SourceError(f"--labels_csv {labels_csv!r} does not exist.")
            return labels_csv
        found = base.find(data_dir, CSV_PATTERNS)
        if not found:
            raise base.SourceError(
                f"No labels CSV (Data_Entry_2017*.csv or .csv.gz) in --data_dir {data_dir!r} or its "
                f"subfolders; pass --labels_csv, or name another data set's layout with --dataset."
            )
        if len(found) > 1:
            raise base.SourceError(
                f"Several labels CSVs in --data_dir {data_dir!r}: {found}; choose one with --labels_csv."
            )
        return found[0]

    def read_rows(self, source: base.Source) -> Iterator[base.RawRow]:
        membership = read_membership(
            {"train_val": source.tables.get("train_val_list"), "test": source.tables.get("test_list")}
        )
        path = source.tables["labels_csv"]
        with FileSystems.open(path) as f:
            for row in iter_csv_rows(*read_labels_table(f, name=path)):
                name = row.fields[IMAGE_INDEX]
                yield base.RawRow(name=name, line=row.line, fields=row, official=membership.get(name))

    def parse(self, raw: base.RawRow) -> base.Row:
        return parse_row(raw.fields, shared=self._shared)

    def list_files(self, source: base.Source) -> ImageFiles:
        return list_images(source.data_dir)


def _find_one(data_dir: str, name: str) -> str | None:
    found = base.find(data_dir, [name])
    return found[0] if found else None


def _read_csv_names(labels_csv: str, max_images: int) -> tuple[set[str], list[str]]:
    """(every Image Index of the CSV, the Image Index of each row to convert), streamed."""
    names, limited = set(), []
    with FileSystems.open(labels_csv) as f:
        header, records = read_labels_table(f, name=labels_csv)
        column = header.index(IMAGE_INDEX)
        for count, record in enumerate(records):
            name = record[column].strip() if column < len(record) else ""
            names.add(name)
            if not max_images or count < max_images:
                limited.append(name)
    if not limited:
        raise base.SourceError(f"Labels CSV {labels_csv!r} has a header but no data rows.")
    return names, limited


def _check_list(list_path: str, csv_names: set[str], labels_csv: str) -> None:
    with FileSystems.open(list_path) as f:
        names = read_name_list(f.read().decode("utf-8"))
    unknown = sorted(set(names) - csv_names)
    if unknown:
        raise base.SourceError(
            f"List file {list_path!r} names {len(unknown)} image(s) that are not in the labels CSV "
            f"{labels_csv!r}, e.g. {unknown[:3]}; the list and the CSV do not belong together."
        )


def _images_on_disk(data_dir: str) -> set[str]:
    pattern = FileSystems.join(data_dir.rstrip("/"), "**")
    on_disk = {
        image_name(m.path)
        for m in FileSystems.match([pattern])[0].metadata_list
        if m.path.lower().endswith(IMAGE_SUFFIX)
    }
    if not on_disk:
        raise base.SourceError(f"No .png images anywhere under --data_dir {data_dir!r}.")
    return on_disk


def image_to_record(data: bytes, row: base.Row, *, image_size: int, image_format: str) -> bytes:
    """An NIH PNG's bytes and its row -> the serialized record (`base.image_to_record`).

    Raises:
      ValueError: the image cannot be decoded (reject `bad_image`).
    """
    return base.image_to_record(
        data, row, adapter=_ADAPTER, path=row.image_index, image_size=image_size, image_format=image_format
    )


_ADAPTER = Adapter()
