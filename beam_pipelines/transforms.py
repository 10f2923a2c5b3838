"""The Beam stages of the NIH -> TFRecord job: composite PTransforms and their DoFns.

    labels CSV ─ ReadRows ─► rows ─┐                         ┌─► rejects ─ WriteRejects
    data_dir ── ListImages ─► files┴ JoinRowsAndFiles ─► tasks ─ ConvertToShards ─► shards ─ WriteSummary

How records reach the shards with flat memory on every runner. `WriteToTFRecord` with a fixed
`num_shards` groups all records by shard, which the DirectRunner does in memory (about 0.3 MB
per image at 256x256, some 30 GB for NIH). Here the records never pass through a shuffle:
  1. Each image gets a shard, and a chunk within that shard, by a stable hash of its name
     (`shard_and_chunk`); the number of shards per split comes from the split's row count and
     the known record size (`plan_shards`, 100-200 MB shards), before any image is read.
  2. `GroupChunks` groups the small *rows* (not images) by (split, shard, chunk). This is the
     fusion break (what `Reshuffle` does with random keys): chunks of ~64 images spread over the
     workers, and each group becomes one part file written as its images stream through
     decoding (`ConvertChunkFn`), sorted by image name so the bytes are the same every run.
  3. `MergeShardFn` concatenates a shard's parts in chunk order (TFRecord files concatenate
     byte-wise) into the final shard, counting and hashing as it copies, and deletes the parts.
Part names are fixed by their key, so a retried bundle overwrites its own part: idempotent on
runners that retry (Dataflow, Flink, Spark).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines import nih, splits
from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib

NAMESPACE = "build_tfrecords"
REJECTS_TAG = "rejects"
UNLISTED_TAG = "unlisted"
PART_SUFFIX = ".part"
SUMMARY_NAME = "_job_summary.json"
# Shards of at most this size, so between 100 and 200 MB once a split exceeds 100 MB.
MAX_SHARD_BYTES = 200 * 1000 * 1000
# Images per work unit (one part file) at most: the full data set makes under 2,000 part files.
DEFAULT_CHUNK_SIZE = 64
# Work units at least, over all splits: a small run still spreads evenly over the workers (the
# last unit of a worker is the others' idle time; 64 units of ~30 images for 2,000 images).
MIN_WORK_UNITS = 64
_COPY_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class ImageTask:
    """A row whose image was found, with its split: the unit of per-image work."""

    row: nih.ParsedRow
    path: str
    split: str


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How many shards a split gets, and how many chunks (part files) make one shard."""

    num_shards: int
    chunks_per_shard: int


@dataclasses.dataclass(frozen=True)
class PartInfo:
    """One written part file (one chunk of one shard) and what it holds."""

    split: str
    shard: int
    chunk: int
    path: str
    records: int
    label_counts: tuple[int, ...]
    patients: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ShardResult:
    """One final shard in the staging directory."""

    split: str
    index: int
    num_shards: int
    name: str
    records: int
    sha256: str
    label_counts: tuple[int, ...]
    patients: tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Pure functions (tested without Beam).


def plan_shards(
    counts: Mapping[str, int],
    *,
    image_size: int,
    image_format: str,
    num_shards: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    min_work_units: int = MIN_WORK_UNITS,
) -> dict[str, ShardPlan]:
    """Shards per split: `num_shards` when given, else ceil(bytes / 200 MB), at least one.

    Args:
      counts: rows to convert per split (an upper bound on the records: bad images drop out).
      image_size, image_format: give the record size (`codec.estimated_record_bytes`).
      num_shards: the `--num_shards` flag; 0 means automatic.
      chunk_size: at most this many images per part file.
      min_work_units: at least this many part files over all splits (shared by row count),
        never smaller than one image each.

    Returns:
      A plan for every split with at least one row.
    """
    record_bytes = codec.estimated_record_bytes(image_size, image_format)
    total = sum(max(0, count) for count in counts.values())
    plans = {}
    for split, count in counts.items():
        if count <= 0:
            continue
        shards = num_shards or max(1, math.ceil(count * record_bytes / MAX_SHARD_BYTES))
        units = max(math.ceil(count / chunk_size), math.ceil(min_work_units * count / total))
        chunks = max(1, min(math.ceil(units / shards), math.ceil(count / shards)))
        plans[split] = ShardPlan(num_shards=shards, chunks_per_shard=chunks)
    return plans


def shard_and_chunk(image_index: str, plan: ShardPlan) -> tuple[int, int]:
    """The (shard, chunk) of an image: a stable hash of its name, never Python's `hash()`."""
    value = int.from_bytes(hashlib.sha256(image_index.encode()).digest()[:8], "big")
    return value % plan.num_shards, (value // plan.num_shards) % plan.chunks_per_shard


def part_path(parts_dir: str, split: str, shard: int, chunk: int) -> str:
    return FileSystems.join(parts_dir, f"{split}-{shard:05d}-{chunk:05d}{PART_SUFFIX}")


def resolve_image(
    image_index: str,
    rows: Sequence[tuple[nih.ParsedRow, str | None]],
    paths: Sequence[str],
    split_config: splits.SplitConfig,
) -> tuple[ImageTask | None, list[nih.Reject]]:
    """Decides what happens to the rows naming one image file.

    The first row (lowest line) is kept and later ones are `duplicate`; with no file the kept
    row is `missing_image`; in official mode a row in neither list is `not_in_split_lists`.

    Returns:
      (the task, or None; the rejects).
    """
    ordered = sorted(rows, key=lambda item: item[0].line)
    (row, official_list), others = ordered[0], ordered[1:]
    rejects = [
        nih.Reject(nih.DUPLICATE, image_index, other.line, f"Image Index repeated; line {row.line} is kept.")
        for other, _ in others
    ]
    if not paths:
        rejects.append(
            nih.Reject(
                nih.MISSING_IMAGE, image_index, row.line, f"no file named {image_index} under data_dir."
            )
        )
        return None, rejects
    split = splits.assign_split(split_config, row.patient_id, official_list)
    if split is None:
        rejects.append(
            nih.Reject(
                nih.NOT_IN_SPLIT_LISTS,
                image_index,
                row.line,
                "official split: the image is in neither train_val_list.txt nor test_list.txt.",
            )
        )
        return None, rejects
    # Two files of the same name (a folder copied twice): the first path in sorted order.
    return ImageTask(row=row, path=sorted(paths)[0], split=split), rejects


# ---------------------------------------------------------------------------------------------
# DoFns.


class ReadCsvRowsFn(beam.DoFn):
    """Reads the labels CSV and the official lists; yields (CsvRow, official list or None).

    With `max_images`, rows past the limit go to the `beyond_limit` tag (as names only), so their
    images are neither converted nor counted as unlisted.
    """

    BEYOND_LIMIT_TAG = "beyond_limit"

    def __init__(self, train_val_list: str | None, test_list: str | None, max_images: int = 0):
        self._lists = {splits.TRAIN_VAL_LIST: train_val_list, splits.TEST_LIST: test_list}
        self._max_images = max_images
        self._rows_read = Metrics.counter(NAMESPACE, "rows_read")

    def process(self, csv_path: str) -> Iterator[Any]:
        membership: dict[str, str] = {}
        for list_name, path in self._lists.items():
            if path:
                with FileSystems.open(path) as f:
                    for name in nih.read_name_list(f.read().decode("utf-8")):
                        membership[name] = list_name
        with FileSystems.open(csv_path) as f:
            header, data = nih.read_labels_table(f, name=csv_path)
        for count, row in enumerate(nih.iter_csv_rows(header, data)):
            if self._max_images and count >= self._max_images:
                yield beam.pvalue.TaggedOutput(self.BEYOND_LIMIT_TAG, row.fields[nih.IMAGE_INDEX])
                continue
            self._rows_read.inc()
            yield row, membership.get(row.fields[nih.IMAGE_INDEX])


class ParseRowFn(beam.DoFn):
    """CsvRow -> ParsedRow keyed by image name; malformed rows to the `rejects` tag."""

    def __init__(self):
        self._rejected = {
            reason: Metrics.counter(NAMESPACE, f"rejected_{reason}")
            for reason in (nih.BAD_ROW, nih.UNKNOWN_LABEL)
        }

    def process(self, element: tuple[nih.CsvRow, str | None]) -> Iterator[Any]:
        row, official_list = element
        try:
            parsed = nih.parse_row(row)
        except schema.UnknownLabelError as e:
            self._rejected[nih.UNKNOWN_LABEL].inc()
            yield beam.pvalue.TaggedOutput(
                REJECTS_TAG, nih.Reject(nih.UNKNOWN_LABEL, row.fields[nih.IMAGE_INDEX], row.line, str(e))
            )
            return
        except ValueError as e:
            self._rejected[nih.BAD_ROW].inc()
            yield beam.pvalue.TaggedOutput(
                REJECTS_TAG,
                nih.Reject(nih.BAD_ROW, row.fields[nih.IMAGE_INDEX], row.line, f"line {row.line}: {e}"),
            )
            return
        yield parsed.image_index, (parsed, official_list)


class ListImagesFn(beam.DoFn):
    """data_dir -> (file name, path) of every PNG below it, at any depth, through FileSystems."""

    def process(self, data_dir: str) -> Iterator[tuple[str, str]]:
        pattern = FileSystems.join(data_dir.rstrip("/"), "**")
        for match in FileSystems.match([pattern])[0].metadata_list:
            if match.path.lower().endswith(nih.IMAGE_SUFFIX):
                yield nih.image_name(match.path), match.path


class ResolveImageFn(beam.DoFn):
    """Joined rows and files of one image name -> ImageTask, rejects, or an unlisted name."""

    def __init__(self, split_config: splits.SplitConfig):
        self._split_config = split_config
        self._unlisted = Metrics.counter(NAMESPACE, "unlisted_images")
        self._rejected = {
            reason: Metrics.counter(NAMESPACE, f"rejected_{reason}")
            for reason in (nih.DUPLICATE, nih.MISSING_IMAGE, nih.NOT_IN_SPLIT_LISTS)
        }

    def process(self, element: tuple[str, Mapping[str, Iterable[Any]]]) -> Iterator[Any]:
        image_index, joined = element
        rows = list(joined["rows"])
        paths = list(joined["files"])
        if not rows:
            # An image whose row was rejected or left out by --max_images is not "unlisted".
            if paths and not list(joined["accounted"]):
                self._unlisted.inc()
                yield beam.pvalue.TaggedOutput(UNLISTED_TAG, image_index)
            return
        task, rejects = resolve_image(image_index, rows, paths, self._split_config)
        for reject in rejects:
            self._rejected[reject.reason].inc()
            yield beam.pvalue.TaggedOutput(REJECTS_TAG, reject)
        if task is not None:
            yield task


class AssignChunkFn(beam.DoFn):
    """ImageTask -> ((split, shard, chunk), task), with the shard plan as a side input."""

    def process(self, task: ImageTask, plans: Mapping[str, ShardPlan]) -> Iterator[Any]:
        shard, chunk = shard_and_chunk(task.row.image_index, plans[task.split])
        yield (task.split, shard, chunk), task


class _ProgressFile:
    """Writes this worker's running count to a small JSON file that the launcher sums.

    Works the same on every runner (the launcher polls the files through FileSystems), unlike
    live metrics, which the DirectRunner only reports when the pipeline ends.
    """

    def __init__(self, progress_dir: str | None, interval_s: float):
        self._path = FileSystems.join(progress_dir, f"{uuid.uuid4().hex}.json") if progress_dir else None
        self._interval_s = interval_s
        self._done = 0
        self._last_write = 0.0

    def add(self, count: int, *, force: bool = False) -> None:
        self._done += count
        now = time.monotonic()
        if self._path and (force or now - self._last_write >= self._interval_s):
            self._last_write = now
            with FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                f.write(json.dumps({"done": self._done}).encode())


class ConvertChunkFn(beam.DoFn):
    """((split, shard, chunk), tasks) -> one part file of serialized records, streamed.

    Bad images go to the `rejects` tag with the decoder's message. Yields a `PartInfo`.
    """

    def __init__(
        self,
        *,
        image_size: int,
        image_format: str,
        parts_dir: str,
        progress_dir: str | None = None,
        progress_interval_s: float = 5.0,
    ):
        self._image_size = image_size
        self._image_format = image_format
        self._parts_dir = parts_dir
        self._progress_dir = progress_dir
        self._progress_interval_s = progress_interval_s
        self._written = Metrics.counter(NAMESPACE, "records_written")
        self._bad_image = Metrics.counter(NAMESPACE, f"rejected_{nih.BAD_IMAGE}")
        self._progress: _ProgressFile | None = None

    def setup(self):
        # Per worker, not per element; and not in __init__, which runs in the launcher.
        self._progress = _ProgressFile(self._progress_dir, self._progress_interval_s)
        self._num_labels = schema.NUM_LABELS

    def process(self, element: tuple[tuple[str, int, int], Iterable[ImageTask]]) -> Iterator[Any]:
        (split, shard, chunk), tasks = element
        path = part_path(self._parts_dir, split, shard, chunk)
        label_counts = [0] * self._num_labels
        patients = set()
        records = 0
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            for task in sorted(tasks, key=lambda t: t.row.image_index):
                try:
                    with FileSystems.open(task.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                        data = f.read()
                    record = nih.image_to_record(
                        data, task.row, image_size=self._image_size, image_format=self._image_format
                    )
                except (ValueError, OSError) as e:  # Decoder errors, unreadable files.
                    self._bad_image.inc()
                    self._progress.add(1)
                    yield beam.pvalue.TaggedOutput(
                        REJECTS_TAG,
                        nih.Reject(nih.BAD_IMAGE, task.row.image_index, task.row.line, f"{task.path}: {e}"),
                    )
                    continue
                out.write(codec.tfrecord_frame(record))
                records += 1
                patients.add(task.row.patient_id)
                for i, on in enumerate(task.row.multi_hot):
                    label_counts[i] += on
                self._written.inc()
                self._progress.add(1)
        yield PartInfo(
            split=split,
            shard=shard,
            chunk=chunk,
            path=path,
            records=records,
            label_counts=tuple(label_counts),
            patients=tuple(sorted(patients)),
        )

    def finish_bundle(self):
        self._progress.add(0, force=True)


class MergeShardFn(beam.DoFn):
    """((split, shard), {plan, parts}) -> the final shard: parts concatenated in chunk order."""

    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def process(self, element: tuple[tuple[str, int], Mapping[str, Iterable[Any]]]) -> Iterator[ShardResult]:
        (split, index), joined = element
        (num_shards,) = list(joined["num_shards"])
        parts = sorted(joined["parts"], key=lambda part: part.chunk)
        name = manifest_lib.shard_name(split, index, num_shards)
        digest = hashlib.sha256()
        num_labels = schema.NUM_LABELS
        label_counts = [0] * num_labels
        patients: set[int] = set()
        with FileSystems.create(
            FileSystems.join(self._output_dir, name), compression_type=CompressionTypes.UNCOMPRESSED
        ) as out:
            for part in parts:
                with FileSystems.open(part.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                    while block := f.read(_COPY_CHUNK):
                        digest.update(block)
                        out.write(block)
                label_counts = [a + b for a, b in zip(label_counts, part.label_counts)]
                patients.update(part.patients)
        if parts:
            FileSystems.delete([part.path for part in parts])
        yield ShardResult(
            split=split,
            index=index,
            num_shards=num_shards,
            name=name,
            records=sum(part.records for part in parts),
            sha256=digest.hexdigest(),
            label_counts=tuple(label_counts),
            patients=tuple(sorted(patients)),
        )


class WriteJsonFn(beam.DoFn):
    """Writes the job summary (built from side inputs) as one JSON file."""

    def __init__(self, path: str):
        self._path = path

    def process(
        self, unused_element, input_rows, unlisted, reject_counts, shards, unused_written
    ) -> Iterator[str]:
        summary = {
            "input_rows": input_rows,
            "unlisted_images": unlisted,
            "rejects": dict(sorted(reject_counts)),
            "shards": [
                dataclasses.asdict(shard) for shard in sorted(shards, key=lambda s: (s.split, s.index))
            ],
        }
        with FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(json.dumps(summary).encode())
        yield self._path


class WriteRejectsFn(beam.DoFn):
    """All rejects -> one JSON-lines file sorted by CSV line, then image name."""

    def __init__(self, path: str):
        self._path = path

    def process(self, rejects: list[nih.Reject]) -> Iterator[str]:
        ordered = sorted(rejects, key=lambda r: (r.line if r.line is not None else math.inf, r.image_index))
        with FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for reject in ordered:
                f.write((json.dumps(reject.to_json()) + "\n").encode())
        yield self._path


# ---------------------------------------------------------------------------------------------
# Composite transforms.


class ReadRows(beam.PTransform):
    """labels CSV path -> {csv_rows, rows: (image name, (ParsedRow, official list)), rejects, beyond_limit}."""

    def __init__(self, *, train_val_list: str | None, test_list: str | None, max_images: int = 0):
        super().__init__()
        self._read = ReadCsvRowsFn(train_val_list, test_list, max_images)

    def expand(self, csv_path):
        read = csv_path | "ReadCsv" >> beam.ParDo(self._read).with_outputs(
            ReadCsvRowsFn.BEYOND_LIMIT_TAG, main="rows"
        )
        parsed = read.rows | "ParseRows" >> beam.ParDo(ParseRowFn()).with_outputs(REJECTS_TAG, main="rows")
        return {
            "csv_rows": read.rows,
            "rows": parsed.rows,
            "rejects": parsed[REJECTS_TAG],
            "beyond_limit": read.beyond_limit,
        }


class JoinRowsAndFiles(beam.PTransform):
    """{rows, accounted, data_dir} -> {tasks: ImageTask, rejects, unlisted}.

    `accounted` holds the names of CSV rows that do not reach the join (rejected while parsing, or
    beyond --max_images): their files are listed by the CSV, so not counted as unlisted.
    """

    def __init__(self, split_config: splits.SplitConfig):
        super().__init__()
        self._split_config = split_config

    def expand(self, inputs):
        rows, accounted, data_dir = inputs["rows"], inputs["accounted"], inputs["data_dir"]
        files = data_dir | "ListImages" >> beam.ParDo(ListImagesFn())
        accounted = accounted | "KeyAccounted" >> beam.Map(_keyed_none)
        resolved = (
            {"rows": rows, "files": files, "accounted": accounted}
            | "CoGroupByName" >> beam.CoGroupByKey()
            | "Resolve"
            >> beam.ParDo(ResolveImageFn(self._split_config)).with_outputs(
                REJECTS_TAG, UNLISTED_TAG, main="tasks"
            )
        )
        return {"tasks": resolved.tasks, "rejects": resolved[REJECTS_TAG], "unlisted": resolved[UNLISTED_TAG]}


def _keyed_none(name: str) -> tuple[str, None]:
    return name, None


def _split_of(task: ImageTask) -> str:
    return task.split


def _shard_keys(plans: Mapping[str, ShardPlan]) -> Iterator[tuple[tuple[str, int], int]]:
    for split, plan in sorted(plans.items()):
        for index in range(plan.num_shards):
            yield (split, index), plan.num_shards


def _key_by_shard(part: PartInfo) -> tuple[tuple[str, int], PartInfo]:
    return (part.split, part.shard), part


class ConvertToShards(beam.PTransform):
    """ImageTasks -> {shards: ShardResult, rejects}: per-image work and shard files, see module doc."""

    def __init__(
        self,
        *,
        output_dir: str,
        parts_dir: str,
        image_size: int,
        image_format: str,
        num_shards: int = 0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress_dir: str | None = None,
        progress_interval_s: float = 5.0,
    ):
        super().__init__()
        self._output_dir = output_dir
        self._plan_args = dict(
            image_size=image_size, image_format=image_format, num_shards=num_shards, chunk_size=chunk_size
        )
        self._convert = ConvertChunkFn(
            image_size=image_size,
            image_format=image_format,
            parts_dir=parts_dir,
            progress_dir=progress_dir,
            progress_interval_s=progress_interval_s,
        )

    def expand(self, tasks):
        plan_args = self._plan_args
        plans = (
            tasks
            | "SplitOf" >> beam.Map(_split_of)
            | "CountPerSplit" >> beam.combiners.Count.PerElement()
            | "CountsToDict" >> beam.combiners.ToDict()
            | "PlanShards" >> beam.Map(plan_shards, **plan_args)
        )
        converted = (
            tasks
            | "AssignChunk" >> beam.ParDo(AssignChunkFn(), beam.pvalue.AsSingleton(plans))
            | "GroupChunks" >> beam.GroupByKey()
            | "ConvertChunks" >> beam.ParDo(self._convert).with_outputs(REJECTS_TAG, main="parts")
        )
        shard_keys = plans | "ShardKeys" >> beam.FlatMap(_shard_keys)
        parts = converted.parts | "KeyPartsByShard" >> beam.Map(_key_by_shard)
        shards = (
            {"num_shards": shard_keys, "parts": parts}
            | "GroupParts" >> beam.CoGroupByKey()
            | "MergeShards" >> beam.ParDo(MergeShardFn(self._output_dir))
        )
        return {"shards": shards, "rejects": converted[REJECTS_TAG]}


def image_index_of(reject: nih.Reject) -> str:
    return reject.image_index


def _reason(reject: nih.Reject) -> str:
    return reject.reason


class WriteSummary(beam.PTransform):
    """Writes `rejects.jsonl` and the job summary JSON that the launcher turns into the manifest."""

    def __init__(self, *, rejects_path: str, summary_path: str):
        super().__init__()
        self._rejects_path = rejects_path
        self._summary_path = summary_path

    def expand(self, inputs):
        root = inputs["csv_rows"].pipeline
        rejects = inputs["rejects"]
        rejects_written = (
            rejects
            | "AllRejects" >> beam.combiners.ToList()
            | "WriteRejects" >> beam.ParDo(WriteRejectsFn(self._rejects_path))
        )
        input_rows = inputs["csv_rows"] | "CountRows" >> beam.combiners.Count.Globally()
        unlisted = inputs["unlisted"] | "CountUnlisted" >> beam.combiners.Count.Globally()
        reject_counts = (
            rejects | "ReasonOf" >> beam.Map(_reason) | "CountPerReason" >> beam.combiners.Count.PerElement()
        )
        # rejects.jsonl is a side input too, so the summary is written after it: once the
        # summary exists, everything does.
        return (
            root
            | "SummaryTrigger" >> beam.Create([None])
            | "WriteSummaryJson"
            >> beam.ParDo(
                WriteJsonFn(self._summary_path),
                beam.pvalue.AsSingleton(input_rows),
                beam.pvalue.AsSingleton(unlisted),
                beam.pvalue.AsList(reject_counts),
                beam.pvalue.AsList(inputs["shards"]),
                beam.pvalue.AsList(rejects_written),
            )
        )
