"""The Beam stages of the records job: composite PTransforms and their DoFns.

    data set ─ PlanWork ─► work units ─ ConvertToShards ─► shards ─┐
                   └──────► rejects, unlisted images, row count ──────┴ WriteSummary

How records reach the shards with flat memory on every runner. `WriteToTFRecord` with a fixed
`num_shards` groups all records by shard, which the DirectRunner does in memory (about 0.3 MB
per image at 256x256, some 30 GB for NIH). Here the records never pass through a shuffle:
  1. `PlanWork` reads the data set's table (through its adapter, `beam_pipelines.datasets`),
     the published split and the names of the image files in one worker and decides
     everything per row there (`plan_work`): rejects, split, and a shard
     and a chunk within that shard by a stable hash of the image name (`shard_and_chunk`).
     The number of shards per split comes from the split's row count and the known record
     size (`plan_shards`), before any image is read. It yields one element per chunk (a
     `WorkUnit`, encoded as compressed bytes), not one per row, so no per-row element crosses
     a stage boundary and a runner that buffers the units between stages holds only bytes.
  2. `Reshuffle` spreads the units over the workers, and each unit becomes one file written as
     its images stream through decoding (`ConvertChunkFn`), in image-name order so the bytes
     are the same every run.
  3. Where a split is large (NIH's), each shard is one chunk: it is written under its final
     name and hashed as it is written, so nothing is left to do once the last image is done.
     A small split's shard is cut into several chunks so that the work still spreads over the
     workers; `MergeShardFn` then concatenates its parts in chunk order (TFRecord files
     concatenate byte-wise), hashing as it copies, and deletes the parts.
File names are fixed by their key, so a retried bundle overwrites its own part: idempotent on
runners that retry (Dataflow, Flink, Spark).
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import hashlib
import itertools
import json
import math
import pickle
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipelines import splits
from beam_pipelines.datasets import base
from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib

NAMESPACE = "build_tfrecords"
REJECTS_TAG = "rejects"
UNLISTED_TAG = "unlisted"
INPUT_ROWS_TAG = "input_rows"
PLANS_TAG = "plans"
PART_SUFFIX = ".part"
SUMMARY_NAME = "_job_summary.json"
# Shards of at most this size, and of at least MIN_SHARD_BYTES once a split exceeds it.
MAX_SHARD_BYTES = 200 * 1000 * 1000
MIN_SHARD_BYTES = 100 * 1000 * 1000
# Images per work unit (one part file) at most.
DEFAULT_CHUNK_SIZE = 4096
# Work units at least, over all splits: a run spreads evenly over the workers (the last unit of
# a worker is the others' idle time; 64 units of ~30 images for 2,000 images). Where a split is
# large enough, its shards are the work units (of 100-200 MB), so no part files are merged.
MIN_WORK_UNITS = 64
_COPY_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True, slots=True)
class ImageTask:
    """A row whose image was found, with its split: the unit of per-image work."""

    row: base.Row
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
    # Set when the part is a whole shard, written under its final name.
    sha256: str | None = None


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


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """One chunk of one shard: the images one worker converts into one file, sorted by name.

    Units travel between the stages as `encode()`d bytes (see `PlanWorkFn`).
    """

    split: str
    shard: int
    chunk: int
    plan: ShardPlan
    tasks: tuple[ImageTask, ...]

    def encode(self) -> bytes:
        """The unit as one compressed pickle: the tasks' shared strings are stored once."""
        return zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def decode(data: bytes) -> WorkUnit:
        unit = pickle.loads(zlib.decompress(data))
        if not isinstance(unit, WorkUnit):
            raise TypeError(f"expected an encoded WorkUnit, got {type(unit).__name__}.")
        return unit


@dataclasses.dataclass(frozen=True)
class WorkPlan:
    """What `plan_work` decided: the work units, the rejects of the join, the unlisted images."""

    units: tuple[WorkUnit, ...]
    rejects: tuple[base.Reject, ...]
    unlisted: tuple[str, ...]
    plans: Mapping[str, ShardPlan]


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
    """Shards per split, and chunks (work units) per shard.

    `num_shards` when given; otherwise as many shards as the split's share of `min_work_units`
    while shards stay over 100 MB, and at least ceil(bytes / 200 MB) and one. A large split
    thus gets one work unit per shard, written and hashed where it is converted; a small one
    gets one shard cut into chunks that are merged at the end.

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
        units = max(math.ceil(count / chunk_size), math.ceil(min_work_units * count / total))
        split_bytes = count * record_bytes
        shards = num_shards or max(
            1, math.ceil(split_bytes / MAX_SHARD_BYTES), min(units, split_bytes // MIN_SHARD_BYTES)
        )
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
    rows: Sequence[tuple[base.Row, str | None]],
    paths: Sequence[str],
    split_config: splits.SplitConfig,
    *,
    not_listed_detail: str = "official split: the image is in neither train_val_list.txt nor test_list.txt.",
) -> tuple[ImageTask | None, list[base.Reject]]:
    """Decides what happens to the rows naming one image file.

    The first row (lowest line) is kept and later ones are `duplicate`; with no file the kept
    row is `missing_image`; in official mode a row in no published split is
    `not_in_split_lists`, with `not_listed_detail`.

    Returns:
      (the task, or None; the rejects).
    """
    ordered = sorted(rows, key=lambda item: item[0].line)
    (row, official_list), others = ordered[0], ordered[1:]
    rejects = [
        base.Reject(
            base.DUPLICATE, image_index, other.line, f"Image Index repeated; line {row.line} is kept."
        )
        for other, _ in others
    ]
    if not paths:
        rejects.append(
            base.Reject(
                base.MISSING_IMAGE, image_index, row.line, f"no file named {image_index} under data_dir."
            )
        )
        return None, rejects
    split = splits.assign_split(split_config, row.patient_id, official_list)
    if split is None:
        rejects.append(
            base.Reject(
                base.NOT_IN_SPLIT_LISTS,
                image_index,
                row.line,
                not_listed_detail,
            )
        )
        return None, rejects
    # Two files of the same name (a folder copied twice): the first path in sorted order.
    return ImageTask(row=row, path=sorted(paths)[0], split=split), rejects


# ---------------------------------------------------------------------------------------------
# Planning: every row and file decided in one place (pure functions, then one DoFn).


def parse_rows(
    adapter: base.Adapter, rows: Iterable[base.RawRow], *, max_images: int = 0
) -> tuple[list[tuple[base.Row, str | None]], list[base.Reject], set[str], int]:
    """Parses an adapter's rows up to `max_images` (0 = all).

    Returns:
      (valid rows with their published split, rejects of malformed rows, the names of rows that
      do not reach the join (rejected or beyond the limit, so their files are not unlisted),
      the number of rows to convert).
    """
    parsed, rejects, accounted = [], [], set()
    input_rows = 0
    for count, raw in enumerate(rows):
        if max_images and count >= max_images:
            accounted.add(raw.name)
            continue
        input_rows += 1
        try:
            parsed.append((adapter.parse(raw), raw.official))
        except schema.UnknownLabelError as e:
            rejects.append(base.Reject(base.UNKNOWN_LABEL, raw.name, raw.line, str(e)))
            accounted.add(raw.name)
        except ValueError as e:
            rejects.append(base.Reject(base.BAD_ROW, raw.name, raw.line, f"line {raw.line}: {e}"))
            accounted.add(raw.name)
    return parsed, rejects, accounted, input_rows


def _image_index(item: tuple[base.Row, str | None]) -> str:
    return item[0].image_index


def plan_work(
    parsed: Iterable[tuple[base.Row, str | None]],
    files: Mapping[str, Sequence[str]],
    accounted: Set[str],
    split_config: splits.SplitConfig,
    *,
    not_listed_detail: str | None = None,
    **plan_args: Any,
) -> WorkPlan:
    """Joins rows and files by image name, assigns splits, shards and chunks.

    Args:
      parsed, accounted: from `parse_rows`.
      files: from `list_images`.
      split_config: the split assignment.
      not_listed_detail: what `not_in_split_lists` rejects say (the adapter's).
      **plan_args: for `plan_shards` (image_size, image_format, num_shards, chunk_size).

    Returns:
      The work units in a fixed order, the rejects of the join and the unlisted image names.
    """
    tasks, rejects, row_names = [], [], set()
    # Sorted by name (stable: the rows of one name keep their order), so that they group without
    # a dict of lists, which would take as much memory again as the rows.
    for name, rows in itertools.groupby(sorted(parsed, key=_image_index), key=_image_index):
        row_names.add(name)
        details = {"not_listed_detail": not_listed_detail} if not_listed_detail else {}
        task, found = resolve_image(name, list(rows), files.get(name, ()), split_config, **details)
        rejects.extend(found)
        if task is not None:
            tasks.append(task)
    unlisted = tuple(sorted(name for name in files if name not in row_names and name not in accounted))
    plans = plan_shards(collections.Counter(task.split for task in tasks), **plan_args)
    grouped: dict[tuple[str, int, int], list[ImageTask]] = {}
    for task in tasks:  # In name order, so each unit's tasks are sorted by name.
        shard, chunk = shard_and_chunk(task.row.image_index, plans[task.split])
        grouped.setdefault((task.split, shard, chunk), []).append(task)
    units = tuple(
        WorkUnit(split, shard, chunk, plans[split], tuple(unit_tasks))
        for (split, shard, chunk), unit_tasks in sorted(grouped.items())
    )
    return WorkPlan(units=units, rejects=tuple(rejects), unlisted=unlisted, plans=plans)


# ---------------------------------------------------------------------------------------------
# DoFns.


class PlanWorkFn(beam.DoFn):
    """Any element (a trigger) -> encoded WorkUnits; tagged: rejects, unlisted names, the row
    count, the plans.

    The whole plan is made by this one DoFn, in one worker, which holds the rows, lists and file
    names of all images for the few seconds it takes (in compact form for NIH: shared label
    tuples, `nih.ImageFiles`) and gives that memory back before it goes on to convert images. Joining them
    with Beam's CoGroupByKey instead would hold every row and every task in the runner's
    shuffle buffers and in the workers' input queues, which grows the memory of every process
    with the rows.

    The units leave as opaque bytes (`WorkUnit.encode`): a runner that holds the units between
    the stages (the local runner does, in the launcher's process) keeps compressed bytes, a
    small fraction of what the units' Python objects would take there.
    """

    def __init__(
        self,
        *,
        adapter: base.Adapter,
        source: base.Source,
        split_config: splits.SplitConfig,
        max_images: int = 0,
        plan_args: Mapping[str, Any],
    ):
        self._adapter = adapter
        self._source = source
        self._split_config = split_config
        self._max_images = max_images
        self._plan_args = dict(plan_args)
        self._rows_read = Metrics.counter(NAMESPACE, "rows_read")
        self._unlisted = Metrics.counter(NAMESPACE, "unlisted_images")

    def process(self, unused_trigger: Any) -> Iterator[Any]:
        input_rows, plan, encoded_units = self._plan()
        # The rows, file names and tasks are garbage now. A full collection also empties the
        # interpreter's free lists, whose few objects would otherwise keep most of the
        # planning memory from going back to the system while this worker converts images.
        gc.collect()
        self._rows_read.inc(input_rows)
        self._unlisted.inc(len(plan.unlisted))
        yield beam.pvalue.TaggedOutput(INPUT_ROWS_TAG, input_rows)
        yield beam.pvalue.TaggedOutput(PLANS_TAG, plan.plans)
        for reject in plan.rejects:
            Metrics.counter(NAMESPACE, f"rejected_{reject.reason}").inc()
            yield beam.pvalue.TaggedOutput(REJECTS_TAG, reject)
        for name in plan.unlisted:
            yield beam.pvalue.TaggedOutput(UNLISTED_TAG, name)
        yield from encoded_units

    def _plan(self) -> tuple[int, WorkPlan, list[bytes]]:
        """(rows read, the plan without its units, the encoded units); all rejects in the plan."""
        # The file listing first: its transient peak (one metadata object per file) then falls
        # in a worker that holds nothing else.
        files = self._adapter.list_files(self._source)
        rows = self._adapter.read_rows(self._source)
        parsed, rejects, accounted, input_rows = parse_rows(self._adapter, rows, max_images=self._max_images)
        plan = plan_work(
            parsed,
            files,
            accounted,
            self._split_config,
            not_listed_detail=self._adapter.split_lists_detail,
            **self._plan_args,
        )
        encoded_units = [unit.encode() for unit in plan.units]
        plan = dataclasses.replace(plan, units=(), rejects=(*rejects, *plan.rejects))
        return input_rows, plan, encoded_units


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
    """Encoded WorkUnit -> one file of serialized records, written as the images stream through.

    A shard of one chunk is written under its final name in `output_dir` and hashed as it is
    written; otherwise the part goes to `parts_dir` for `MergeShardFn`. Bad images go to the
    `rejects` tag with the decoder's message. Yields a `PartInfo`.
    """

    def __init__(
        self,
        *,
        adapter: base.Adapter,
        image_size: int,
        image_format: str,
        output_dir: str,
        parts_dir: str,
        progress_dir: str | None = None,
        progress_interval_s: float = 5.0,
    ):
        self._adapter = adapter
        self._image_size = image_size
        self._image_format = image_format
        self._output_dir = output_dir
        self._parts_dir = parts_dir
        self._progress_dir = progress_dir
        self._progress_interval_s = progress_interval_s
        self._written = Metrics.counter(NAMESPACE, "records_written")
        self._bad_image = Metrics.counter(NAMESPACE, f"rejected_{base.BAD_IMAGE}")
        self._progress: _ProgressFile | None = None

    def setup(self):
        # Per worker, not per element; and not in __init__, which runs in the launcher.
        self._progress = _ProgressFile(self._progress_dir, self._progress_interval_s)
        self._num_labels = len(self._adapter.labels)

    def process(self, encoded_unit: bytes) -> Iterator[Any]:
        unit = WorkUnit.decode(encoded_unit)
        split, shard, chunk, plan = unit.split, unit.shard, unit.chunk, unit.plan
        whole_shard = plan.chunks_per_shard == 1
        if whole_shard:
            path = FileSystems.join(self._output_dir, manifest_lib.shard_name(split, shard, plan.num_shards))
        else:
            path = part_path(self._parts_dir, split, shard, chunk)
        digest = hashlib.sha256()
        label_counts = [0] * self._num_labels
        patients = set()
        records = 0
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            for task in unit.tasks:
                try:
                    with FileSystems.open(task.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                        data = f.read()
                    record = base.image_to_record(
                        data,
                        task.row,
                        adapter=self._adapter,
                        path=task.path,
                        image_size=self._image_size,
                        image_format=self._image_format,
                    )
                except (ValueError, OSError) as e:  # Decoder errors, unreadable files.
                    self._bad_image.inc()
                    self._progress.add(1)
                    yield beam.pvalue.TaggedOutput(
                        REJECTS_TAG,
                        base.Reject(base.BAD_IMAGE, task.row.image_index, task.row.line, f"{task.path}: {e}"),
                    )
                    continue
                frame = codec.tfrecord_frame(record)
                out.write(frame)
                if whole_shard:
                    digest.update(frame)
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
            sha256=digest.hexdigest() if whole_shard else None,
        )

    def finish_bundle(self):
        self._progress.add(0, force=True)


class MergeShardFn(beam.DoFn):
    """((split, shard), {plan, parts}) -> the final shard: parts concatenated in chunk order."""

    def __init__(self, output_dir: str, num_labels: int = schema.NUM_LABELS):
        self._output_dir = output_dir
        self._num_labels = num_labels

    def process(self, element: tuple[tuple[str, int], Mapping[str, Iterable[Any]]]) -> Iterator[ShardResult]:
        (split, index), joined = element
        (num_shards,) = list(joined["num_shards"])
        parts = sorted(joined["parts"], key=lambda part: part.chunk)
        name = manifest_lib.shard_name(split, index, num_shards)
        if len(parts) == 1 and parts[0].sha256 is not None:  # Written whole, where converted.
            (part,) = parts
            yield ShardResult(
                split, index, num_shards, name, part.records, part.sha256, part.label_counts, part.patients
            )
            return
        digest = hashlib.sha256()
        label_counts = [0] * self._num_labels
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

    def process(self, rejects: list[base.Reject]) -> Iterator[str]:
        ordered = sorted(rejects, key=lambda r: (r.line if r.line is not None else math.inf, r.image_index))
        with FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            for reject in ordered:
                f.write((json.dumps(reject.to_json()) + "\n").encode())
        yield self._path


# ---------------------------------------------------------------------------------------------
# Composite transforms.


class PlanWork(beam.PTransform):
    """A trigger -> {units, rejects, unlisted, input_rows, plans}; see `PlanWorkFn`."""

    def __init__(self, **plan_fn_args: Any):
        super().__init__()
        self._plan = PlanWorkFn(**plan_fn_args)

    def expand(self, trigger):
        planned = trigger | "Plan" >> beam.ParDo(self._plan).with_outputs(
            REJECTS_TAG, UNLISTED_TAG, INPUT_ROWS_TAG, PLANS_TAG, main="units"
        )
        return {
            "units": planned.units,
            "rejects": planned[REJECTS_TAG],
            "unlisted": planned[UNLISTED_TAG],
            "input_rows": planned[INPUT_ROWS_TAG],
            "plans": planned[PLANS_TAG],
        }


def _shard_keys(plans: Mapping[str, ShardPlan]) -> Iterator[tuple[tuple[str, int], int]]:
    for split, plan in sorted(plans.items()):
        for index in range(plan.num_shards):
            yield (split, index), plan.num_shards


def _key_by_shard(part: PartInfo) -> tuple[tuple[str, int], PartInfo]:
    return (part.split, part.shard), part


class ConvertToShards(beam.PTransform):
    """{units, plans} -> {shards: ShardResult, rejects}: per-image work and shard files, see module doc."""

    def __init__(
        self,
        *,
        adapter: base.Adapter,
        output_dir: str,
        parts_dir: str,
        image_size: int,
        image_format: str,
        progress_dir: str | None = None,
        progress_interval_s: float = 5.0,
    ):
        super().__init__()
        self._output_dir = output_dir
        self._num_labels = len(adapter.labels)
        self._convert = ConvertChunkFn(
            adapter=adapter,
            image_size=image_size,
            image_format=image_format,
            output_dir=output_dir,
            parts_dir=parts_dir,
            progress_dir=progress_dir,
            progress_interval_s=progress_interval_s,
        )

    def expand(self, inputs):
        converted = (
            inputs["units"]
            # The fusion break: the units spread over the workers instead of staying in the
            # planning worker.
            | "SpreadUnits" >> beam.Reshuffle()
            | "ConvertChunks" >> beam.ParDo(self._convert).with_outputs(REJECTS_TAG, main="parts")
        )
        shard_keys = inputs["plans"] | "ShardKeys" >> beam.FlatMap(_shard_keys)
        parts = converted.parts | "KeyPartsByShard" >> beam.Map(_key_by_shard)
        shards = (
            {"num_shards": shard_keys, "parts": parts}
            | "GroupParts" >> beam.CoGroupByKey()
            | "MergeShards" >> beam.ParDo(MergeShardFn(self._output_dir, self._num_labels))
        )
        return {"shards": shards, "rejects": converted[REJECTS_TAG]}


def _reason(reject: base.Reject) -> str:
    return reject.reason


class WriteSummary(beam.PTransform):
    """Writes `rejects.jsonl` and the job summary JSON that the launcher turns into the manifest."""

    def __init__(self, *, rejects_path: str, summary_path: str):
        super().__init__()
        self._rejects_path = rejects_path
        self._summary_path = summary_path

    def expand(self, inputs):
        root = inputs["input_rows"].pipeline
        rejects = inputs["rejects"]
        rejects_written = (
            rejects
            | "AllRejects" >> beam.combiners.ToList()
            | "WriteRejects" >> beam.ParDo(WriteRejectsFn(self._rejects_path))
        )
        input_rows = inputs["input_rows"] | "SumRows" >> beam.CombineGlobally(sum)
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
