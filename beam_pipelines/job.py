"""The records job as a library: config, checks before the pipeline, wiring, finishing.

`run_job(config, beam_args)` is what `python -m beam_pipelines.build_tfrecords` calls:
  1. `prepare_inputs` picks the data set's adapter (`--dataset`, `beam_pipelines.datasets`) and
     checks everything that can be checked before Beam starts (data_dir, the tables and their
     columns, the published split, at least one image, the output directory) and stops with a
     message naming the path, column or flag and the value.
  2. The pipeline (`build_pipeline`) writes shards, rejects.jsonl and a job summary into
     `output_dir/_staging-<run id>/`, while a thread prints progress from the workers' files.
  3. `finalize` checks rows in = records written + rejected, removes the old output (manifest
     first), moves the new files in, and writes manifest.json last. A run that crashes before
     this point leaves no manifest, so no reader takes its output.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_pipelines import datasets, splits, transforms
from beam_pipelines.datasets import base
from cxr_cli import config_flags, console
from tfrecords import manifest as manifest_lib
from tfrecords import schema

_LOG = logging.getLogger(__name__)
DEFAULT_RUNNER = "FnApiRunner"
STAGING_PREFIX = "_staging-"
# raw by default: png records are about half the size, but tf.data decodes a PNG per image per
# epoch, which takes CPU from training, and the conversion is slower (figures: the "read_raw",
# "read_png", "job" and "job_png" cases of benchmarks/bench_tfrecords.py). Disk is cheaper than CPU.
DEFAULT_IMAGE_FORMAT = "raw"


_field = config_flags.field


class InputError(console.ValidationError):
    """Bad input or flags found before the pipeline starts; the message names what and where."""


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything the job needs; validated once, at construction.

    Attributes:
      dataset: the data set's layout (`datasets.NAMES`), or "auto" to detect it from data_dir.
      data_dir: the data set's folder (local, gs://, s3://).
      output_dir: where shards, rejects.jsonl and manifest.json go.
      image_size: side of the square output images, in pixels.
      image_format: "raw" or "png" record images.
      labels_csv: the labels CSV; None finds the data set's own (NIH: Data_Entry_2017*.csv[.gz])
        in data_dir or one level down.
      patient_regex: `folders`: a regular expression whose first matching group (or whole match)
        of a file name is the patient; None takes the whole name without its suffix.
      folder_splits: `folders`: take ROOT/SPLIT/CLASS folders as the published split.
      split: the split assignment.
      num_shards: shards per split; 0 sizes them to 100-200 MB.
      max_images: convert only the first N rows of the table (0 = all).
      overwrite: replace an existing non-empty output_dir.
      chunk_size: images per work unit / part file.
      progress_interval_s: seconds between progress lines.
    """

    dataset: str = _field(
        datasets.AUTO,
        "The data set's layout. auto: detected from the files in --data_dir when exactly one layout "
        "matches (folders is never detected), else nih.",
        choices=(datasets.AUTO, *datasets.NAMES),
    )
    data_dir: str = _field("data/demo", "The data set's folder (NIH: CSV, lists, images_*/images/*.png).")
    output_dir: str = _field("data/tfrecords", "Where shards, rejects.jsonl and manifest.json go.")
    image_size: int = _field(256, "Side of the square output images, in pixels.")
    image_format: str = _field(
        DEFAULT_IMAGE_FORMAT, "raw uint8 pixels or PNG in the records.", choices=schema.IMAGE_FORMATS
    )
    labels_csv: str | None = _field(
        None,
        "Labels CSV (NIH: 2017 or v2020 format; PadChest; RSNA's train labels; may be .gz); "
        "default: the data set's own in data_dir.",
    )
    patient_regex: str | None = _field(
        None,
        "folders: regular expression; its first group that matched (else the whole match) in a "
        "file's name is the patient. Default: the whole name. For the pediatric pneumonia set's "
        r"person123_bacteria_456.jpeg and IM-0001-0001.jpeg: '^(person\d+)_|IM-(\d+)-'.",
    )
    folder_splits: bool = _field(
        False,
        "folders: take ROOT/SPLIT/CLASS folders (train, val, test) as the published split. Off by "
        "default: such splits are often by image and leak patients; images are split by patient.",
    )
    # Its flags (--split, --val_fraction, --split_fractions) are defined by the binary.
    split: splits.SplitConfig = dataclasses.field(default=splits.SplitConfig(), metadata={"flag": False})
    num_shards: int = _field(0, "Shards per split; 0 = automatic (100-200 MB shards).")
    max_images: int = _field(0, "Convert only the first N rows of the table (0 = all), for quick runs.")
    overwrite: bool = _field(False, "Replace the records of a non-empty output_dir.")
    chunk_size: int = _field(transforms.DEFAULT_CHUNK_SIZE, "Images per work unit at most.")
    progress_interval_s: float = _field(30.0, "Seconds between progress lines.")

    def __post_init__(self):
        if self.dataset not in (datasets.AUTO, *datasets.NAMES):
            raise InputError(
                f"dataset must be one of {(datasets.AUTO, *datasets.NAMES)} (--dataset), got {self.dataset!r}."
            )
        if not self.data_dir:
            raise InputError("data_dir must be set (--data_dir), got an empty value.")
        if not self.output_dir:
            raise InputError("output_dir must be set (--output_dir), got an empty value.")
        if not 8 <= self.image_size <= 4096:
            raise InputError(f"image_size must be in [8, 4096] pixels (--image_size), got {self.image_size}.")
        if self.image_format not in schema.IMAGE_FORMATS:
            raise InputError(
                f"image_format must be one of {schema.IMAGE_FORMATS} (--image_format), got {self.image_format!r}."
            )
        if self.num_shards < 0:
            raise InputError(f"num_shards must be >= 0, 0 = automatic (--num_shards), got {self.num_shards}.")
        if self.max_images < 0:
            raise InputError(f"max_images must be >= 0, 0 = all (--max_images), got {self.max_images}.")
        if self.chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1 (--chunk_size), got {self.chunk_size}.")
        if self.progress_interval_s <= 0:
            raise InputError(f"progress_interval_s must be > 0, got {self.progress_interval_s}.")

    def manifest_options(self) -> dict[str, Any]:
        return (
            {
                "image_size": self.image_size,
                "image_format": self.image_format,
                "split": self.split.mode,
                "val_fraction": self.split.val_fraction,
                "split_fractions": list(self.split.fractions),
                "num_shards": self.num_shards,
                "max_images": self.max_images,
                "data_dir": self.data_dir,
                "labels_csv": self.labels_csv,
            }
            | ({"patient_regex": self.patient_regex} if self.patient_regex else {})
            | ({"folder_splits": True} if self.folder_splits else {})
        )

    def adapter_options(self) -> base.Options:
        return base.Options(
            labels_csv=self.labels_csv, patient_regex=self.patient_regex, folder_splits=self.folder_splits
        )


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What `prepare_inputs` found: the adapter, its source, and the split actually used.

    `split` is the config's, except that `official` on a set without a published split becomes
    `patient`.
    """

    adapter: base.Adapter
    source: base.Source
    split: splits.SplitConfig

    @property
    def expected_rows(self) -> int:
        return self.source.expected_rows

    @property
    def expected_images(self) -> int:
        return self.source.expected_images


def prepare_inputs(config: JobConfig) -> Inputs:
    """Picks the adapter, checks the inputs and the output directory before the pipeline starts.

    Raises:
      InputError: naming the path, column or flag and the value, with a fix.
    """
    data_dir = config.data_dir
    if not FileSystems.exists(data_dir):
        raise InputError(
            f"--data_dir {data_dir!r} does not exist; point it at the data set (or run `make demo-data`)."
        )
    try:
        name = config.dataset
        if name == datasets.AUTO:
            name = datasets.detect(data_dir)
            _LOG.info("--dataset=auto: the files in %s are %s's layout.", data_dir, name)
        if name != "folders" and (config.patient_regex or config.folder_splits):
            raise InputError(
                f"--patient_regex and --folder_splits apply to --dataset=folders, not to {name}."
            )
        adapter = datasets.adapter(name, config.adapter_options())
        source = adapter.prepare(data_dir, max_images=config.max_images, split_mode=config.split.mode)
    except base.SourceError as e:
        raise InputError(str(e)) from None
    if not source.expected_rows:
        raise InputError(f"{source.description!r} has no data rows.")
    split = config.split
    if split.mode == "official" and not source.has_published_split:
        _LOG.warning("%s publishes no split: --split=official splits it by patient (--split=patient).", name)
        split = dataclasses.replace(split, mode="patient")
    _check_output_dir(config)
    return Inputs(adapter=adapter, source=source, split=split)


def _check_output_dir(config: JobConfig) -> None:
    output_dir = config.output_dir
    if FileSystems.exists(output_dir) and not config.overwrite:
        existing = FileSystems.match([FileSystems.join(output_dir, "**")])[0].metadata_list
        if existing:
            raise InputError(_refuse_output_dir(output_dir, [m.path for m in existing]))


def _refuse_output_dir(output_dir: str, paths: Sequence[str]) -> str:
    """Why a non-empty output_dir is refused: what is there, and what --overwrite would remove."""
    prefix = output_dir.rstrip("/") + "/"
    names = [path[len(prefix) :] if path.startswith(prefix) else path for path in paths]
    staging = sorted({name.split("/", 1)[0] for name in names if name.startswith(STAGING_PREFIX)})
    own = [name for name in names if "/" not in name and manifest_lib.is_output_file(name)]
    others = [name for name in names if name not in own and not name.startswith(STAGING_PREFIX)]
    shards = sum(name.endswith(manifest_lib.SHARD_SUFFIX) for name in own)
    if manifest_lib.MANIFEST_NAME in own:
        state = "holds finished records (manifest.json)"
    elif staging or own:
        state = (
            "holds an unfinished run (no manifest.json: the job that wrote it crashed or was stopped, "
            "or is still running)"
        )
    else:
        state = "holds no records"
    removed = [f"{shards} shard(s)"] if shards else []
    removed += [name for name in own if not name.endswith(manifest_lib.SHARD_SUFFIX)]
    removed += [f"staging dir(s) {' '.join(staging)}"] if staging else []
    message = f"--output_dir {output_dir!r} is not empty: it {state}. "
    if removed:
        message += f"--overwrite will remove: {', '.join(removed)}"
        message += f" and keep the {len(others)} other entries (e.g. {others[0]!r})." if others else "."
    else:
        message += f"It holds {len(others)} entries (e.g. {others[0]!r}), which --overwrite keeps."
    return message + " Pass --overwrite, or choose another directory."


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from the flags the job does not own, passed through untouched.

    The only additions are defaults when the user set no runner: Beam's local batch runner
    (`FnApiRunner`, which is what the DirectRunner runs batch pipelines on) in multi-processing
    mode on all cores (`--direct_num_workers=0`). Naming it avoids the DirectRunner's first
    attempt, the Prism runner, which downloads a binary from GitHub at run time. Any runner's
    flags (--runner, --project, --temp_location, --setup_file, --flink_master, ...) go to Beam
    as given.
    """
    args = list(beam_args)
    given = {arg.split("=", 1)[0] for arg in args}
    if "--runner" not in given and PipelineOptions(args).view_as(StandardOptions).runner is None:
        args.append(f"--runner={DEFAULT_RUNNER}")
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    direct = runner in (DEFAULT_RUNNER, "DirectRunner", "BundleBasedDirectRunner")
    if direct and "--direct_running_mode" not in given:
        args.append("--direct_running_mode=multi_processing")
        if "--direct_num_workers" not in given:
            args.append("--direct_num_workers=0")
    return PipelineOptions(args)


@dataclasses.dataclass(frozen=True)
class StagingPaths:
    root: str
    parts: str
    progress: str
    rejects: str
    summary: str

    @classmethod
    def create(cls, output_dir: str, run_id: str) -> StagingPaths:
        root = FileSystems.join(output_dir, f"{STAGING_PREFIX}{run_id}")
        return cls(
            root=root,
            parts=FileSystems.join(root, "_parts"),
            progress=FileSystems.join(root, "_progress"),
            rejects=FileSystems.join(root, manifest_lib.REJECTS_NAME),
            summary=FileSystems.join(root, transforms.SUMMARY_NAME),
        )


def build_pipeline(root: beam.Pipeline, config: JobConfig, inputs: Inputs, staging: StagingPaths) -> None:
    """Wires the job's transforms onto `root` (a Pipeline or TestPipeline)."""
    planned = (
        root
        | "Source" >> beam.Create([inputs.source.description])
        | "PlanWork"
        >> transforms.PlanWork(
            adapter=inputs.adapter,
            source=inputs.source,
            split_config=inputs.split,
            max_images=config.max_images,
            plan_args=dict(
                image_size=config.image_size,
                image_format=config.image_format,
                num_shards=config.num_shards,
                chunk_size=config.chunk_size,
            ),
        )
    )
    converted = {
        "units": planned["units"],
        "plans": planned["plans"],
    } | "ConvertToShards" >> transforms.ConvertToShards(
        adapter=inputs.adapter,
        output_dir=staging.root,
        parts_dir=staging.parts,
        image_size=config.image_size,
        image_format=config.image_format,
        progress_dir=staging.progress,
        progress_interval_s=min(5.0, config.progress_interval_s),
    )
    rejects = (planned["rejects"], converted["rejects"]) | "AllRejects" >> beam.Flatten()
    _ = {
        "input_rows": planned["input_rows"],
        "unlisted": planned["unlisted"],
        "rejects": rejects,
        "shards": converted["shards"],
    } | "WriteSummary" >> transforms.WriteSummary(rejects_path=staging.rejects, summary_path=staging.summary)


class _ProgressMonitor(threading.Thread):
    """Prints done, rate and ETA from the workers' progress files every `interval_s` seconds."""

    def __init__(self, progress_dir: str, total: int, interval_s: float):
        super().__init__(daemon=True, name="progress")
        self._progress_dir = progress_dir
        self._total = total
        self._interval_s = interval_s
        # Not `_stop`: threading.Thread has a method of that name, which join() calls.
        self._finished = threading.Event()

    def done(self) -> int:
        total = 0
        try:
            matches = FileSystems.match([FileSystems.join(self._progress_dir, "*.json")])[0].metadata_list
        except OSError:  # Nothing written yet.
            return 0
        for match in matches:
            try:
                with FileSystems.open(match.path) as f:
                    total += int(json.loads(f.read())["done"])
            except (OSError, ValueError, KeyError):
                continue  # A file being rewritten; the next poll reads it.
        return total

    def run(self):
        # On a terminal one line rewritten every second; in logs a line every interval_s. Polled
        # often enough that the rate, counted from the first poll that sees work, is close.
        poll_s = min(1.0 if console.interactive() else 5.0, self._interval_s)
        progress = None
        while not self._finished.wait(poll_s):
            done = self.done()
            if not done or (progress is not None and progress.done >= self._total):
                continue
            if progress is None:  # Conversion started: rate and ETA count from here.
                progress = console.Progress(
                    self._total,
                    description="progress",
                    unit="images",
                    interval_s=self._interval_s,
                    logger=_LOG,
                )
            progress.update(done)
            if done >= self._total:
                progress.close(f"progress: all {done} images converted; merging shards.")

    def stop(self) -> None:
        """Stops the thread and waits for it, so that no progress line follows."""
        self._finished.set()
        if self.is_alive():
            self.join()


_format_seconds = console.format_duration


@dataclasses.dataclass(frozen=True)
class JobResult:
    manifest: manifest_lib.Manifest
    wall_seconds: float
    counters: Mapping[str, int]


def run_job(config: JobConfig, beam_args: Sequence[str] = ()) -> JobResult:
    """Runs the whole job: checks, pipeline, manifest. See the module docstring.

    Args:
      config: the validated job config.
      beam_args: flags for Beam's PipelineOptions, passed through (see `pipeline_options`).

    Returns:
      The manifest written, the wall time and Beam's counters.

    Raises:
      InputError: bad input found before the pipeline starts.
      RuntimeError: the pipeline lost records (rows in != written + rejected) or did not finish.
    """
    start = time.monotonic()
    inputs = prepare_inputs(config)
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
    staging = StagingPaths.create(config.output_dir, run_id)
    _LOG.info(
        "Converting %d rows of %s (%s; %d of their images found under %s) to %s at %dx%d %s, split=%s.",
        inputs.expected_rows,
        inputs.source.description,
        inputs.adapter.name,
        inputs.expected_images,
        config.data_dir,
        config.output_dir,
        config.image_size,
        config.image_size,
        config.image_format,
        inputs.split.mode,
    )
    options = pipeline_options(beam_args)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config, inputs, staging)
    monitor = _ProgressMonitor(staging.progress, inputs.expected_images, config.progress_interval_s)
    monitor.start()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        monitor.stop()
    counters = _counters(result)
    manifest = finalize(config, inputs, staging)
    wall = time.monotonic() - start
    _log_summary(manifest, wall, counters)
    return JobResult(manifest=manifest, wall_seconds=wall, counters=counters)


def _counters(result: Any) -> dict[str, int]:
    try:
        query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(transforms.NAMESPACE))
    except (NotImplementedError, AttributeError):  # Some runners report no metrics.
        return {}
    counters: dict[str, int] = {}
    for counter in query["counters"]:
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(
            counter.committed or 0
        )
    return dict(sorted(counters.items()))


def finalize(config: JobConfig, inputs: Inputs, staging: StagingPaths) -> manifest_lib.Manifest:
    """Checks the pipeline's output, replaces the old output and writes manifest.json last.

    Raises:
      RuntimeError: the summary is missing, or rows in != records written + rejected.
    """
    if not FileSystems.exists(staging.summary):
        raise RuntimeError(
            f"The pipeline finished without writing {staging.summary}; its output is incomplete."
        )
    with FileSystems.open(staging.summary) as f:
        summary = json.loads(f.read())
    label_names = inputs.adapter.labels
    split_infos = {}
    for split in manifest_lib.SPLITS:
        shards = [s for s in summary["shards"] if s["split"] == split]
        if not shards:
            split_infos[split] = manifest_lib.SplitInfo(records=0, patients=0, label_counts={}, shards=())
            continue
        label_counts = [sum(s["label_counts"][i] for s in shards) for i in range(len(label_names))]
        patients = set().union(*(s["patients"] for s in shards))
        split_infos[split] = manifest_lib.SplitInfo(
            records=sum(s["records"] for s in shards),
            patients=len(patients),
            label_counts=dict(zip(label_names, label_counts)),
            shards=tuple(
                manifest_lib.ShardInfo(name=s["name"], records=s["records"], sha256=s["sha256"])
                for s in shards
            ),
        )
    written = sum(info.records for info in split_infos.values())
    rejected = sum(summary["rejects"].values())
    input_rows = summary["input_rows"]
    if input_rows != inputs.expected_rows or input_rows != written + rejected:
        raise RuntimeError(
            f"Records were lost: the table has {inputs.expected_rows} rows to convert, the pipeline read "
            f"{input_rows}, wrote {written} and rejected {rejected}. No manifest was written; the "
            f"output is in {staging.root}."
        )
    manifest = manifest_lib.Manifest(
        options=config.manifest_options() | _source_options(inputs),
        splits=split_infos,
        rejects=summary["rejects"],
        input_rows=input_rows,
        unlisted_images=summary["unlisted_images"],
        dataset=inputs.adapter.name,
        labels=tuple(inputs.adapter.labels),
        label_states=dict(inputs.adapter.label_states),
    )
    manifest.validate(where=f"manifest for {config.output_dir}")
    extra = _write_extra_files(inputs, staging)
    _replace_output(config.output_dir, staging, manifest, extra)
    manifest = _write_manifest(config.output_dir, manifest)
    _delete_tree(staging.root)
    return manifest


def _write_extra_files(inputs: Inputs, staging: StagingPaths) -> list[str]:
    """The adapter's files beside the records (RSNA's boxes), into staging; their names."""
    files = inputs.adapter.extra_files(inputs.source)
    for name, text in files.items():
        with FileSystems.create(
            FileSystems.join(staging.root, name), compression_type=CompressionTypes.UNCOMPRESSED
        ) as f:
            f.write(text.encode())
    return sorted(files)


def _source_options(inputs: Inputs) -> dict[str, Any]:
    """The options the adapter resolved: the split used, and NIH's labels CSV as found."""
    options: dict[str, Any] = {"split": inputs.split.mode}
    if "labels_csv" in inputs.source.tables:
        options["labels_csv"] = inputs.source.tables["labels_csv"]
    return options


def _write_manifest(output_dir: str, manifest: manifest_lib.Manifest) -> manifest_lib.Manifest:
    """Writes manifest.json through a temporary name, with FileSystems.

    Not `manifest_lib.write_manifest`: that one goes through tf.io.gfile, and importing
    TensorFlow would add about 600 MB to the launcher at the very end of the job.
    """
    text = manifest.with_created_time().to_json_text()
    path = manifest_lib.manifest_path(output_dir)
    with FileSystems.create(path + ".tmp", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(text.encode())
    FileSystems.rename([path + ".tmp"], [path])
    # The manifest as readers will see it (JSON round trip).
    return manifest_lib.Manifest.from_json(json.loads(text), where=path)


def _replace_output(
    output_dir: str, staging: StagingPaths, manifest: manifest_lib.Manifest, extra: Sequence[str] = ()
) -> None:
    """Removes the old records (manifest first, so no reader takes a half-replaced directory),
    then moves the new shards and rejects.jsonl in."""
    old_manifest = manifest_lib.manifest_path(output_dir)
    if FileSystems.exists(old_manifest):
        FileSystems.delete([old_manifest])
    old = [
        m.path
        for m in FileSystems.match([FileSystems.join(output_dir, "*")])[0].metadata_list
        if manifest_lib.is_output_file(base.file_name(m.path))
    ]
    if old:
        FileSystems.delete(old)
    for stale in staged_dirs(output_dir):
        if stale.rstrip("/") != staging.root.rstrip("/"):
            _delete_tree(stale)
    names = [shard.name for split in manifest.splits.values() for shard in split.shards]
    names.append(manifest_lib.REJECTS_NAME)
    names += [name for name in extra if FileSystems.exists(FileSystems.join(staging.root, name))]
    FileSystems.rename(
        [FileSystems.join(staging.root, name) for name in names],
        [FileSystems.join(output_dir, name) for name in names],
    )


def _delete_tree(path: str) -> None:
    """Deletes a directory and everything below it, locally or under a gs:// / s3:// prefix."""
    files = [m.path for m in FileSystems.match([FileSystems.join(path, "**")])[0].metadata_list]
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(path):  # The (now empty) local directory tree.
        FileSystems.delete([path])


def staged_dirs(output_dir: str) -> list[str]:
    """Staging directories in output_dir: this run's, or leftovers of crashed runs."""
    pattern = FileSystems.join(output_dir, STAGING_PREFIX + "*", "**")
    prefix = output_dir.rstrip("/") + "/"
    tops = {m.path[len(prefix) :].split("/", 1)[0] for m in FileSystems.match([pattern])[0].metadata_list}
    return sorted(FileSystems.join(output_dir, top) for top in tops)


def _log_summary(manifest: manifest_lib.Manifest, wall: float, counters: Mapping[str, int]) -> None:
    written = manifest.records_written
    lines = [
        f"Done in {_format_seconds(wall)} ({wall:.1f} s): {written} records, {written / wall:.1f} images/s."
    ]
    for split, info in manifest.splits.items():
        lines.append(
            f"  {split:5s}: {info.records:7d} records, {info.patients:6d} patients, {len(info.shards)} shard(s)"
        )
    rejects = ", ".join(f"{reason} {count}" for reason, count in sorted(manifest.rejects.items())) or "none"
    lines.append(
        f"  input rows {manifest.input_rows}; rejected: {rejects}; unlisted images: {manifest.unlisted_images}"
    )
    if counters:
        lines.append("  Beam counters: " + ", ".join(f"{k}={v}" for k, v in counters.items()))
    print("\n".join(lines), flush=True)
