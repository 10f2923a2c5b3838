"""The manifest of a records directory: what was written, how, and what was rejected.

`manifest.json` is written last, only when every shard is complete, so a directory
without one (a crashed or running job) is refused by every reader. Layout:

    {
      "format_version": 1,
      "dataset": "nih",
      "labels": ["Atelectasis", ..., "No Finding"],
      "label_states": {"named in Finding Labels": "positive", "not named": "negative"},
      "created": "2026-11-25T17:00:00+00:00",
      "options": {"image_size": 256, "image_format": "raw", "split": "official", ...},
      "input_rows": 112120,
      "unlisted_images": 0,
      "rejects": {"missing_image": 3},
      "splits": {
        "train": {"records": 70000, "patients": 20000,
                  "label_counts": {"Atelectasis": 8000, ...},
                  "shards": [{"name": "train-00000-of-00032.tfrecord",
                              "records": 2188, "sha256": "..."}, ...]},
        "val": {...}, "test": {...}
      }
    }

`dataset` names the source data set and `labels` the label vocabulary, in the order of the
records' `labels` vector; a manifest without them (written before they existed) is NIH's,
with `schema.LABELS`. `label_states` says how the source wrote each state of a label and what
the records made of it (`LABEL_STATES`): e.g. CheXpert's
`{"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "not_mentioned"}`, where
positive is labels=1 and mask=1, negative labels=0 and mask=1, uncertain labels=0, mask=0 and
label_uncertain=1, not_mentioned labels=0 and mask=0. A manifest without it is NIH's
(`NIH_LABEL_STATES`).

Records in = records written + records rejected: `input_rows` equals the sum of the
splits' records plus the sum of `rejects`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from cxr_cli import errors
from tfrecords import schema

# TensorFlow (for tf.io.gfile) is imported inside the functions that touch files, so that
# `shard_name` and the dataclasses are usable in Beam workers that must not load it (see schema).

MANIFEST_NAME = "manifest.json"
REJECTS_NAME = "rejects.jsonl"
# Boxes a data set publishes (RSNA Pneumonia), in NIH's box-file format, beside the records.
BOXES_NAME = "boxes.csv"
FORMAT_VERSION = 1
# The splits, in this order everywhere.
SPLITS: tuple[str, ...] = ("train", "val", "test")
SHARD_SUFFIX = ".tfrecord"
# `shard_name`'s pattern, to recognise shards on disk.
SHARD_NAME_RE = re.compile(rf"^({'|'.join(SPLITS)})-(\d{{5}})-of-(\d{{5}}){re.escape(SHARD_SUFFIX)}$")
# What a record makes of a label, by the source's spelling of it (the manifest's `label_states`).
LABEL_STATES: tuple[str, ...] = ("positive", "negative", "uncertain", "not_mentioned")
# NIH's `Finding Labels`: a label named there is present, any other absent.
NIH_LABEL_STATES: Mapping[str, str] = {"named in Finding Labels": "positive", "not named": "negative"}
# Options every reader relies on.
REQUIRED_OPTIONS = ("image_size", "image_format")


class ManifestError(errors.ValidationError):
    """A records directory whose manifest is missing, malformed or inconsistent."""


def shard_name(split: str, index: int, num_shards: int) -> str:
    """The file name of shard `index` of `num_shards` of `split`: `{split}-{i:05d}-of-{n:05d}.tfrecord`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {index}.")
    return f"{split}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def is_output_file(name: str) -> bool:
    """Whether a file name is one the records job writes into a records directory."""
    return bool(SHARD_NAME_RE.match(name)) or name in (
        REJECTS_NAME,
        BOXES_NAME,
        MANIFEST_NAME,
        MANIFEST_NAME + ".tmp",
    )


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    name: str
    records: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    records: int
    patients: int
    label_counts: Mapping[str, int]
    shards: tuple[ShardInfo, ...]


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A parsed, validated `manifest.json`; see the module docstring for the layout."""

    options: Mapping[str, Any]
    splits: Mapping[str, SplitInfo]
    rejects: Mapping[str, int]
    input_rows: int
    unlisted_images: int = 0
    created: str = ""
    format_version: int = FORMAT_VERSION
    dataset: str = "nih"
    labels: tuple[str, ...] = schema.LABELS
    label_states: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(NIH_LABEL_STATES))

    @property
    def image_size(self) -> int:
        return int(self.options["image_size"])

    @property
    def image_format(self) -> str:
        return str(self.options["image_format"])

    @property
    def records_written(self) -> int:
        return sum(split.records for split in self.splits.values())

    @property
    def records_rejected(self) -> int:
        return sum(self.rejects.values())

    def label_counts(self, split: str) -> list[int]:
        """Positive counts per label of `split`, in the order of `labels`."""
        counts = self.splits[split].label_counts
        return [int(counts.get(label, 0)) for label in self.labels]

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "dataset": self.dataset,
            "labels": list(self.labels),
            "label_states": dict(self.label_states),
            "created": self.created,
            "options": dict(self.options),
            "input_rows": self.input_rows,
            "unlisted_images": self.unlisted_images,
            "rejects": dict(self.rejects),
            "splits": {
                name: {
                    "records": split.records,
                    "patients": split.patients,
                    "label_counts": {label: int(split.label_counts.get(label, 0)) for label in self.labels},
                    "shards": [dataclasses.asdict(shard) for shard in split.shards],
                }
                for name, split in self.splits.items()
            },
        }

    def to_json_text(self) -> str:
        """The text of manifest.json."""
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"

    def with_created_time(self) -> Manifest:
        """This manifest with `created` set to now (UTC) when it is not set yet."""
        if self.created:
            return self
        return dataclasses.replace(
            self, created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str = "manifest") -> Manifest:
        """Builds a manifest from its JSON object and validates it.

        Raises:
          ManifestError: a missing field or an inconsistency, named with `where`.
        """
        try:
            splits = {
                name: SplitInfo(
                    records=int(split["records"]),
                    patients=int(split["patients"]),
                    label_counts={str(k): int(v) for k, v in split["label_counts"].items()},
                    shards=tuple(
                        ShardInfo(name=str(s["name"]), records=int(s["records"]), sha256=str(s["sha256"]))
                        for s in split["shards"]
                    ),
                )
                for name, split in data["splits"].items()
            }
            manifest = cls(
                options=dict(data["options"]),
                splits=splits,
                rejects={str(k): int(v) for k, v in data["rejects"].items()},
                input_rows=int(data["input_rows"]),
                unlisted_images=int(data.get("unlisted_images", 0)),
                created=str(data.get("created", "")),
                format_version=int(data.get("format_version", FORMAT_VERSION)),
                dataset=str(data.get("dataset", "nih")),
                labels=tuple(str(label) for label in data.get("labels", schema.LABELS)),
                label_states={str(k): str(v) for k, v in data.get("label_states", NIH_LABEL_STATES).items()},
            )
        except KeyError as e:
            raise ManifestError(f"{where}: missing field {e.args[0]!r}.") from e
        except (TypeError, ValueError, AttributeError) as e:
            raise ManifestError(f"{where}: malformed field ({e}).") from e
        manifest.validate(where=where)
        return manifest

    def validate(self, *, where: str = "manifest") -> None:
        """Checks the manifest's internal consistency.

        Raises:
          ManifestError: naming `where` and the rule broken.
        """
        if self.format_version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: format_version {self.format_version} is not supported (expected {FORMAT_VERSION})."
            )
        for option in REQUIRED_OPTIONS:
            if option not in self.options:
                raise ManifestError(f"{where}: options lack {option!r}.")
        if self.image_format not in schema.IMAGE_FORMATS:
            raise ManifestError(
                f"{where}: options.image_format must be one of {schema.IMAGE_FORMATS}, got {self.image_format!r}."
            )
        if self.image_size <= 0:
            raise ManifestError(f"{where}: options.image_size must be positive, got {self.image_size}.")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ManifestError(
                f"{where}: labels must be a non-empty list of distinct names, got {list(self.labels)}."
            )
        if not self.dataset:
            raise ManifestError(f"{where}: dataset must be a non-empty name.")
        bad_states = sorted(set(self.label_states.values()) - set(LABEL_STATES))
        if bad_states:
            raise ManifestError(
                f"{where}: label_states has unknown state(s) {bad_states}; expected {LABEL_STATES}."
            )
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ManifestError(f"{where}: unknown split(s) {sorted(unknown)}; expected {SPLITS}.")
        for name, split in self.splits.items():
            self._validate_split(name, split, where)
        if self.input_rows != self.records_written + self.records_rejected:
            raise ManifestError(
                f"{where}: input_rows {self.input_rows} != records written {self.records_written} "
                f"+ records rejected {self.records_rejected}; records were lost."
            )

    def _validate_split(self, name: str, split: SplitInfo, where: str) -> None:
        """Checks one split's shard names and record and label counts."""
        num_shards = len(split.shards)
        for index, shard in enumerate(split.shards):
            expected = shard_name(name, index, num_shards)
            if shard.name != expected:
                raise ManifestError(
                    f"{where}: split {name!r} shard {index} is named {shard.name!r}, expected {expected!r}."
                )
            if shard.records < 0:
                raise ManifestError(f"{where}: shard {shard.name!r} has a negative record count.")
        shard_records = sum(shard.records for shard in split.shards)
        if shard_records != split.records:
            raise ManifestError(
                f"{where}: split {name!r} lists {split.records} records but its shards hold {shard_records}."
            )
        unknown_labels = set(split.label_counts) - set(self.labels)
        if unknown_labels:
            raise ManifestError(f"{where}: split {name!r} counts unknown labels {sorted(unknown_labels)}.")
        for label, count in split.label_counts.items():
            if not 0 <= count <= split.records:
                raise ManifestError(
                    f"{where}: split {name!r} label {label!r} count {count} is outside [0, {split.records}]."
                )


def manifest_path(records_dir: str) -> str:
    return os.path.join(records_dir, MANIFEST_NAME)


def read_manifest(records_dir: str, *, check_shards: bool = True, verify_checksums: bool = False) -> Manifest:
    """Reads and validates `records_dir/manifest.json`.

    Args:
      records_dir: a directory written by `beam_pipelines.build_tfrecords` (local or gs://).
      check_shards: also check that every listed shard exists and that no unlisted
        shard of a split lies beside them (old and new output mixed).
      verify_checksums: also recompute each shard's sha256 (reads every byte).

    Returns:
      The validated `Manifest`.

    Raises:
      ManifestError: the directory or manifest is missing, the manifest is malformed or
        inconsistent, or the shards on disk do not match it; the message names the directory.
    """
    import tensorflow as tf

    path = manifest_path(records_dir)
    if not tf.io.gfile.isdir(records_dir):
        raise ManifestError(
            f"Records directory {records_dir!r} does not exist; build it with `make tfrecords` "
            f"(python -m beam_pipelines.build_tfrecords --output_dir={records_dir})."
        )
    if not tf.io.gfile.exists(path):
        raise ManifestError(
            f"Records directory {records_dir!r} has no {MANIFEST_NAME}: the job that wrote it did not "
            f"finish, or it is not a records directory. Re-run `make tfrecords` (with --overwrite)."
        )
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON ({e}).") from e
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(data).__name__}.")
    manifest = Manifest.from_json(data, where=path)
    if check_shards or verify_checksums:
        _check_shards(records_dir, manifest, verify_checksums=verify_checksums)
    return manifest


def write_manifest(records_dir: str, manifest: Manifest) -> str:
    """Validates `manifest` and writes it to `records_dir/manifest.json` atomically.

    Returns:
      The path written.
    """
    import tensorflow as tf

    manifest.validate(where=f"manifest for {records_dir}")
    manifest = manifest.with_created_time()
    path = manifest_path(records_dir)
    tmp_path = path + ".tmp"
    with tf.io.gfile.GFile(tmp_path, "w") as f:
        f.write(manifest.to_json_text())
    tf.io.gfile.rename(tmp_path, path, overwrite=True)
    return path


def shard_paths(records_dir: str, manifest: Manifest, split: str) -> list[str]:
    """The full paths of `split`'s shards, in manifest order.

    Raises:
      ManifestError: `split` is not in the manifest.
    """
    if split not in manifest.splits:
        raise ManifestError(
            f"Records directory {records_dir!r} has no split {split!r}; it has {sorted(manifest.splits)}."
        )
    return [os.path.join(records_dir, shard.name) for shard in manifest.splits[split].shards]


def sha256_file(path: str, *, chunk_size: int = 1 << 22) -> str:
    """The hex sha256 of a file, read through `tf.io.gfile`."""
    import tensorflow as tf

    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(records_dir: str) -> str:
    """The sha256 of `records_dir/manifest.json`: identifies a record set in reports."""
    return sha256_file(manifest_path(records_dir))


def _check_shards(records_dir: str, manifest: Manifest, *, verify_checksums: bool) -> None:
    import tensorflow as tf

    listed = {shard.name for split in manifest.splits.values() for shard in split.shards}
    on_disk = {name for name in tf.io.gfile.listdir(records_dir) if SHARD_NAME_RE.match(name.rstrip("/"))}
    missing = sorted(listed - on_disk)
    if missing:
        raise ManifestError(
            f"Records directory {records_dir!r}: {len(missing)} shard(s) listed in {MANIFEST_NAME} are "
            f"missing, e.g. {missing[0]!r}. Re-run `make tfrecords` with --overwrite."
        )
    extra = sorted(on_disk - listed)
    if extra:
        raise ManifestError(
            f"Records directory {records_dir!r}: shard(s) not listed in {MANIFEST_NAME} lie beside it, "
            f"e.g. {extra[0]!r}; old and new output are mixed. Re-run `make tfrecords` with --overwrite."
        )
    if verify_checksums:
        for split in manifest.splits.values():
            for shard in split.shards:
                actual = sha256_file(os.path.join(records_dir, shard.name))
                if actual != shard.sha256:
                    raise ManifestError(
                        f"Records directory {records_dir!r}: shard {shard.name!r} has sha256 {actual}, "
                        f"the manifest says {shard.sha256}; the file changed or is corrupt."
                    )
