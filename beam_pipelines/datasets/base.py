"""What every data-set adapter gives the job, and the helpers adapters share.

An adapter (one module per data set in this package) turns a download's own files into rows:

    prepare(data_dir)   checks the files before the pipeline starts -> `Source`
    read_rows(source)   streams the table's rows as `RawRow`s (name, line, fields, published split)
    parse(raw)          one raw row -> `Row` (labels in the set's vocabulary, patient, metadata),
                        raising `schema.UnknownLabelError` (reject `unknown_label`) or
                        `ValueError` (reject `bad_row`)
    list_files(source)  image name -> paths, the names the rows use

and the job does the rest the same way for every set: rows and files are joined by name
(duplicates, missing files, files no row names), split by patient, converted, counted.

Nothing here imports TensorFlow: every Beam worker imports the adapters.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

from apache_beam.io.filesystems import FileSystems

from beam_pipelines import images
from cxr_cli import errors
from tfrecords import codec

# Reject reasons (the keys of the manifest's "rejects").
BAD_ROW = "bad_row"
UNKNOWN_LABEL = "unknown_label"
DUPLICATE = "duplicate"
MISSING_IMAGE = "missing_image"
BAD_IMAGE = "bad_image"
NOT_IN_SPLIT_LISTS = "not_in_split_lists"
REJECT_REASONS = (BAD_ROW, UNKNOWN_LABEL, DUPLICATE, MISSING_IMAGE, BAD_IMAGE, NOT_IN_SPLIT_LISTS)

# Published split names a row may carry (`RawRow.official`); see `splits.official_split`.
TRAIN_VAL, TRAIN, VAL, TEST = "train_val", "train", "val", "test"
# Unknown metadata in a record: age -1, sex and view "".
UNKNOWN_AGE = -1
_SEXES = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}


class SourceError(errors.ValidationError):
    """The data set's files cannot be used at all (missing, empty, lacking columns, unparsable)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """A valid row: everything a record needs besides the pixels.

    `image_index` is the name that joins the row with its file (NIH's file name, or a path
    relative to the data set's folder) and is written into the record. `label_mask` and
    `label_uncertain` are None where every label is known (NIH), so no such feature is written.
    Unknown metadata: age -1, sex "", view "".
    """

    line: int
    image_index: str
    multi_hot: tuple[int, ...]
    patient_id: int
    follow_up: int
    age: int
    sex: str
    view_position: str
    label_mask: tuple[int, ...] | None = None
    label_uncertain: tuple[int, ...] | None = None


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


@dataclasses.dataclass(frozen=True)
class RawRow:
    """One row as read, before validation: its name, line, fields, published split (or None)."""

    name: str
    line: int
    fields: Any
    official: str | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """What `Adapter.prepare` found: the files to read, and what to expect of them.

    `expected_images` (rows whose file exists) is only the progress total; the pipeline decides.
    """

    data_dir: str
    tables: Mapping[str, str]
    expected_rows: int
    expected_images: int
    description: str
    has_published_split: bool


@dataclasses.dataclass(frozen=True)
class Options:
    """The job's options that adapters read; each adapter uses the ones its layout has."""

    labels_csv: str | None = None
    patient_regex: str | None = None
    folder_splits: bool = False


class Adapter:
    """One data set's layout; subclasses set the class attributes and the four methods."""

    name: ClassVar[str]
    labels: ClassVar[tuple[str, ...]]
    # The source's spelling of each label state -> the state (`tfrecords.manifest.LABEL_STATES`).
    label_states: ClassVar[Mapping[str, str]]
    # What `not_in_split_lists` rejects say, for sets with a published split.
    split_lists_detail: ClassVar[str] = "the image is in no published split."
    # How 16-bit PNGs become 8 bits (`images.SIXTEEN_BIT_SCALINGS`).
    sixteen_bit: ClassVar[str] = "full_range"

    def __init__(self, options: Options | None = None):
        self.options = options or Options()

    @classmethod
    def recognizes(cls, names: frozenset[str]) -> bool:
        """Whether file names found in a folder (and one level below) are this set's layout."""
        return False

    def prepare(self, data_dir: str, *, max_images: int, split_mode: str) -> Source:
        raise NotImplementedError

    def read_rows(self, source: Source) -> Iterator[RawRow]:
        raise NotImplementedError

    def parse(self, raw: RawRow) -> Row:
        raise NotImplementedError

    def list_files(self, source: Source) -> Mapping[str, Sequence[str]]:
        raise NotImplementedError

    def extra_files(self, source: Source) -> dict[str, str]:
        """Files the job writes beside the records, by name (`manifest.is_output_file`): text."""
        return {}

    def decode(self, data: bytes, path: str) -> tuple[Any, images.HeaderMetadata]:
        """An image file's 8-bit gray pixels and its header's metadata (DICOM)."""
        return images.decode_with_header(data, name=path, sixteen_bit=self.sixteen_bit)


# ---------------------------------------------------------------------------------------------
# Helpers.


def find(data_dir: str, patterns: Sequence[str]) -> list[str]:
    """Files matching `patterns` in data_dir or one folder below it."""
    found = []
    for pattern in patterns:
        for glob in (FileSystems.join(data_dir, pattern), FileSystems.join(data_dir, "*", pattern)):
            found.extend(m.path for m in FileSystems.match([glob])[0].metadata_list)
    return sorted(set(found))


def find_one(data_dir: str, patterns: Sequence[str], *, what: str) -> str:
    """The one file matching `patterns` in data_dir or one folder below.

    Raises:
      SourceError: none or several, naming them.
    """
    found = find(data_dir, patterns)
    if not found:
        raise SourceError(
            f"No {what} ({' or '.join(patterns)}) in --data_dir {data_dir!r} or its subfolders."
        )
    if len(found) > 1:
        raise SourceError(f"Several {what} files in --data_dir {data_dir!r}: {found}; keep one.")
    return found[0]


def file_name(path: str) -> str:
    """The file name of a path (local or gs://)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def parent(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[0]


def list_relative(root: str, suffixes: Sequence[str]) -> dict[str, list[str]]:
    """Path relative to `root` (with "/") -> [full path], for files with one of `suffixes`."""
    prefix = root.rstrip("/") + "/"
    files: dict[str, list[str]] = {}
    for match in FileSystems.match([FileSystems.join(root.rstrip("/"), "**")])[0].metadata_list:
        path = match.path
        if path.lower().endswith(tuple(suffixes)) and path.startswith(prefix):
            files.setdefault(path[len(prefix) :].replace("\\", "/"), []).append(path)
    return files


def text_lines(file_obj: io.IOBase | Any) -> Iterator[str]:
    """Lines of a binary (UTF-8) or text file, also from Beam's CompressedFile (gzip)."""
    while line := file_obj.readline():
        yield line.decode("utf-8-sig") if isinstance(line, bytes) else line


def read_table(
    path: str, required: Sequence[str], *, what: str
) -> tuple[list[str], Iterator[dict[str, str]]]:
    """Opens a CSV (plain or .gz) by its header: the header, and the rows as dicts, streamed.

    Row i (from 0) is line i + 2 of the file (`dict["_line"]`, as a string); fields missing at the
    end of a short row are "", and `dict["_fields"]` holds the row's field count.

    Raises:
      SourceError: unreadable or empty file, or missing required columns (named).
    """
    file_obj = FileSystems.open(path)
    reader = csv.reader(text_lines(file_obj))
    try:
        header = [name.strip() for name in next(reader, [])]
    except (csv.Error, UnicodeDecodeError) as e:
        file_obj.close()
        raise SourceError(f"{what} {path!r} cannot be parsed: {e}") from e
    missing = [column for column in required if column not in header]
    if not header or missing:
        file_obj.close()
        raise SourceError(
            f"{what} {path!r} lacks required column(s) {missing or list(required)}; its header is {header}."
        )
    return header, _dict_rows(file_obj, reader, header, path, what)


def _dict_rows(file_obj, reader, header: list[str], path: str, what: str) -> Iterator[dict[str, str]]:
    try:
        for position, record in enumerate(reader):
            row = {name: (record[i].strip() if i < len(record) else "") for i, name in enumerate(header)}
            row["_line"] = str(position + 2)
            row["_fields"] = str(len(record))
            yield row
    except (csv.Error, UnicodeDecodeError) as e:
        raise SourceError(f"{what} {path!r} cannot be parsed: {e}") from e
    finally:
        file_obj.close()


def check_columns(path: str, required: Sequence[str], *, what: str) -> list[str]:
    """A table's header, after checking it has the `required` columns (see `read_table`)."""
    header, rows = read_table(path, required, what=what)
    next(rows, None)  # Starts the generator, so that closing it closes the file.
    rows.close()
    return header


def count_rows(
    path: str, required: Sequence[str], *, what: str, key: str | None = None
) -> tuple[int, list[str]]:
    """(data rows of a table, the values of column `key` in order), to size progress and check."""
    _, rows = read_table(path, required, what=what)
    count, keys = 0, []
    for row in rows:
        count += 1
        if key is not None:
            keys.append(row[key])
    return count, keys


def patient_number(text: str) -> int:
    """A patient id as the record's int64: the number itself when it is one that fits, else
    the first 63 bits of sha256 of the text (stable everywhere; collisions are negligible)."""
    text = text.strip()
    if text.isdigit() and int(text) < 2**63:
        return int(text)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def parse_sex(value: str) -> str:
    """ "M", "F", or "" when the source says anything else (Unknown, blank)."""
    return _SEXES.get(value.strip().upper(), "")


def parse_age_years(value: str) -> int:
    """A whole number of years from "58", "58.0" or blank (-1); negative or >150 is a bad row.

    Raises:
      ValueError: not a number, or out of range.
    """
    value = value.strip()
    if not value:
        return UNKNOWN_AGE
    try:
        age = float(value)
    except ValueError:
        raise ValueError(f"Age {value!r} is not a number.") from None
    if not 0 <= age <= 150:
        raise ValueError(f"Age {value!r} is outside 0..150.")
    return int(age)


def checked_regex(pattern: str, flag: str) -> re.Pattern[str]:
    """Compiles a user's regular expression.

    Raises:
      SourceError: it does not compile, naming the flag and the error.
    """
    try:
        return re.compile(pattern)
    except re.error as e:
        raise SourceError(f"{flag} {pattern!r} is not a regular expression: {e}.") from None


def image_to_record(
    data: bytes, row: Row, *, adapter: Adapter, path: str, image_size: int, image_format: str
) -> bytes:
    """The whole per-image work: image bytes + row -> serialized record.

    Metadata the row does not know (age -1, sex or view "") comes from the DICOM header when
    the image is a DICOM file that has it.

    Raises:
      ValueError: the image cannot be decoded (reject `bad_image`).
    """
    pixels, header = adapter.decode(data, path)
    pixels = images.resize_area(pixels, image_size)
    return codec.serialize_example(
        codec.encode_image(pixels, image_format),
        image_format=image_format,
        height=image_size,
        width=image_size,
        multi_hot=row.multi_hot,
        image_index=row.image_index,
        patient_id=row.patient_id,
        follow_up=row.follow_up,
        age=row.age if row.age != UNKNOWN_AGE else header.age,
        sex=row.sex or header.sex,
        view_position=row.view_position or header.view_position,
        label_mask=row.label_mask,
        label_uncertain=row.label_uncertain,
    )
