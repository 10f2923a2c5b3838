"""The tf.data input pipeline: a records directory and a split in, batches out.

    import tfrecords.dataset as dataset_lib
    train = dataset_lib.build_dataset("data/tfrecords", "train", batch_size=32, training=True, seed=0)
    images, labels = next(iter(train))  # uint8 [32, 256, 256, 1], float32 [32, L]

L is the length of the manifest's label vocabulary (NIH's 15 for NIH records). With
`label_state=True` the labels come as a dict that also holds each label's state, the record's
`label_mask` (1 known, 0 uncertain or not mentioned) and `label_uncertain` (1 where the source
wrote "uncertain"); records written without them read as all known, none uncertain.

The records are ready-made (decoded, gray, resized by the Beam job), so this pipeline only
reads, parses and batches. Training policy (resampling, loss weights, augmentation, the
uncertainty policy, the tf.data service) is the consumer's: `trainer/training/inputs.py`
composes it on top of this module, through `record_fn` (per-record stream) and the returned
batches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import tensorflow as tf

from cxr_cli import errors
from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib

# Files read at once. More than the cores keeps reads overlapping on networked file systems
# (gs://); the AUTOTUNEd parallelism decides how many are actually busy.
_MAX_CYCLE_LENGTH = 16
_READ_BUFFER_BYTES = 8 << 20
# The image formats parsed and decoded a whole batch at a time when `parse_after_batch` is None
# (the default). Decided by `make bench-input` (python -m benchmarks.bench_input), which times
# both on raw records side by side: one vectorized parse per batch was faster than one parse per
# record (the ratio is in README.md, "Measured figures"). PNG can only be decoded per image.
PARSE_PER_BATCH_FORMATS: tuple[str, ...] = ("raw",)
# The keys of the labels dict yielded with `label_state=True`.
LABEL_STATE_KEYS = (schema.LABELS_KEY, schema.LABEL_MASK_KEY, schema.LABEL_UNCERTAIN_KEY)

Element = tuple[tf.Tensor, ...]


def build_dataset(
    records_dir: str,
    split: str,
    *,
    batch_size: int,
    training: bool,
    seed: int | None = None,
    shuffle_buffer: int = 2048,
    cache: bool = False,
    with_metadata: bool = False,
    label_state: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    record_fn: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None,
    parse_after_batch: bool | None = None,
) -> tf.data.Dataset:
    """Builds the batched dataset of one split of a records directory.

    Steps: `_read_records`, `_parse_per_record`, `_record_stream` (cache, `record_fn`, shuffle,
    repeat), `_batch`, prefetch. Training: files and records shuffled (with `seed`) every epoch,
    repeated forever, full batches only. Evaluation: fixed order (the same on every run), one
    pass, every record exactly once, the last partial batch kept.

    Args:
      records_dir: a directory written by `beam_pipelines.build_tfrecords` (local or gs://).
      split: "train", "val" or "test".
      batch_size: the global batch size; with `input_context`, each input pipeline yields
        `input_context.get_per_replica_batch_size(batch_size)`.
      training: the training variant (shuffle, repeat, drop remainder) or evaluation.
      seed: seeds file order and record shuffle; None draws fresh randomness each run.
      shuffle_buffer: records in the shuffle buffer (training only).
      cache: keep the split's records in memory after the first pass (when it fits).
      with_metadata: also yield a dict of [B] tensors keyed by `schema.METADATA_KEYS`.
      label_state: yield the labels as a dict keyed by `LABEL_STATE_KEYS` (labels, label_mask,
        label_uncertain; each float32 [B, L]) instead of the labels alone.
      input_context: from `distribute_datasets_from_function`. With at least as many shards
        as input pipelines, each reads its own files; else each reads every file and keeps
        every n-th record.
      record_fn: training only: a transformation of the per-record stream (e.g. resampling),
        of serialized records when `parse_after_batch`, else of feature dicts (`record_labels`
        reads the labels of either).
      parse_after_batch: parse whole batches (raw records only) instead of one record at a
        time. None follows `PARSE_PER_BATCH_FORMATS`.

    Returns:
      `(images, labels)` or `(images, labels, metadata)` batches: images uint8 [B, H, W, 1],
      labels float32 [B, L] in the manifest's `labels` order (or their dict).

    Raises:
      ManifestError: no valid manifest, shards missing or unlisted, or no such split.
      ValueError: an argument out of range (named), or an empty training split.
    """
    _check_arguments(batch_size, shuffle_buffer, training, record_fn)
    plan = _plan(records_dir, split, batch_size, training, seed, input_context, parse_after_batch)
    dataset = _parse_per_record(_read_records(plan, training=training, seed=seed), plan)
    dataset = _record_stream(
        dataset, training, seed=seed, shuffle_buffer=shuffle_buffer, cache=cache, record_fn=record_fn
    )
    dataset = _batch(dataset, plan, training=training, with_metadata=with_metadata, label_state=label_state)
    # Overlap producing the next batches with the training step consuming this one.
    return dataset.prefetch(tf.data.AUTOTUNE)


def record_labels(
    element: tf.Tensor | Mapping[str, tf.Tensor], num_labels: int = schema.NUM_LABELS
) -> tf.Tensor:
    """The int64 [L] labels of one element of the per-record stream seen by `record_fn`.

    `num_labels` is the length of the manifest's `labels` (used for serialized records).
    """
    if isinstance(element, Mapping):
        return element[schema.LABELS_KEY]
    spec = {schema.LABELS_KEY: schema.feature_spec(num_labels)[schema.LABELS_KEY]}
    return tf.io.parse_single_example(element, spec)[schema.LABELS_KEY]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `build_dataset` reads and how, decided once from the manifest and the arguments."""

    paths: tuple[str, ...]
    image_size: int
    image_format: str
    num_labels: int
    parse_after_batch: bool
    batch_size: int  # Per input pipeline.
    num_pipelines: int
    pipeline_id: int
    shard_by_file: bool
    shard_by_data: bool
    deterministic: bool


def _plan(
    records_dir: str,
    split: str,
    batch_size: int,
    training: bool,
    seed: int | None,
    input_context: tf.distribute.InputContext | None,
    parse_after_batch: bool | None,
) -> _Plan:
    # A directory without a valid manifest is a crashed or running job, or not ours; shards
    # not matching it mean old and new output are mixed. Either way, refuse before reading.
    manifest = manifest_lib.read_manifest(records_dir)
    paths = tuple(manifest_lib.shard_paths(records_dir, manifest, split))
    if training and manifest.splits[split].records == 0:
        # repeat() over nothing would spin forever instead of failing.
        raise errors.ValidationError(
            f"Records directory {records_dir!r}: split {split!r} has no records to train on."
        )
    if parse_after_batch is None:
        parse_after_batch = manifest.image_format in PARSE_PER_BATCH_FORMATS
    elif parse_after_batch and manifest.image_format != "raw":
        raise errors.ValidationError(
            f"parse_after_batch=True needs raw records; {records_dir!r} holds {manifest.image_format!r} images."
        )
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    shard_by_file = num_pipelines > 1 and len(paths) >= num_pipelines
    shard_by_data = num_pipelines > 1 and not shard_by_file
    return _Plan(
        paths=paths,
        image_size=manifest.image_size,
        image_format=manifest.image_format,
        # The records' labels vector is as long as the manifest's vocabulary.
        num_labels=len(manifest.labels),
        parse_after_batch=parse_after_batch,
        batch_size=input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size,
        num_pipelines=num_pipelines,
        pipeline_id=input_context.input_pipeline_id if input_context else 0,
        shard_by_file=shard_by_file,
        shard_by_data=shard_by_data,
        # Evaluation order is fixed. In training, a seed asks for a reproducible stream, so
        # parallel steps keep their order; without one they may reorder to dodge a slow file.
        # Element-level sharding needs every pipeline to see the same record order too.
        deterministic=not training or seed is not None or shard_by_data,
    )


def _read_records(plan: _Plan, *, training: bool, seed: int | None) -> tf.data.Dataset:
    """The serialized records of this input pipeline's share of the split."""
    files = tf.data.Dataset.from_tensor_slices(list(plan.paths))
    if plan.shard_by_file:
        files = files.shard(plan.num_pipelines, plan.pipeline_id)
    if training and not plan.shard_by_data:
        # A new file order every epoch (the reshuffle happens when repeat() restarts it).
        files = files.shuffle(len(plan.paths), seed=seed, reshuffle_each_iteration=True)
    # Interleave reads several files at once in parallel; in evaluation deterministically
    # (round robin over the files), so reports see the same order every run.
    dataset = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES),
        cycle_length=max(1, min(len(plan.paths), _MAX_CYCLE_LENGTH)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=plan.deterministic,
    )
    if plan.shard_by_data:
        dataset = dataset.shard(plan.num_pipelines, plan.pipeline_id)
    return dataset


def _check_arguments(
    batch_size: int, shuffle_buffer: int, training: bool, record_fn: Callable | None
) -> None:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(shuffle_buffer, int) or shuffle_buffer <= 0:
        raise ValueError(f"shuffle_buffer must be a positive integer, got {shuffle_buffer!r}.")
    if record_fn is not None and not training:
        raise ValueError("record_fn is for training only; evaluation must see every record once, unchanged.")


def _parse_per_record(dataset: tf.data.Dataset, plan: _Plan) -> tf.data.Dataset:
    """Parses and decodes one record at a time, unless whole batches are parsed later."""
    if plan.parse_after_batch:
        return dataset
    # PNG can only be decoded per image. Decoded before the cache so a cached epoch skips
    # decoding too.
    return dataset.map(
        lambda serialized: _parse_record(serialized, plan),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=plan.deterministic,
    )


def _record_stream(
    dataset: tf.data.Dataset,
    training: bool,
    *,
    seed: int | None,
    shuffle_buffer: int,
    cache: bool,
    record_fn: Callable[[tf.data.Dataset], tf.data.Dataset] | None,
) -> tf.data.Dataset:
    """The per-record stream: cached, passed through `record_fn`, shuffled and repeated (training)."""
    if cache:
        # After reading (and per-record decoding), before anything random, so later epochs
        # replay the bytes from memory and still get a fresh resampling and shuffle.
        dataset = dataset.cache()
    if record_fn is not None:
        dataset = record_fn(dataset)
    if training:
        # Shuffle before repeat: epochs stay whole (every record once per epoch) and the
        # buffer reshuffles on each pass.
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
    return dataset


def _batch(
    dataset: tf.data.Dataset, plan: _Plan, *, training: bool, with_metadata: bool, label_state: bool
) -> tf.data.Dataset:
    """Batches the stream and maps each batch to the yielded tuple (parsing it first if needed)."""
    # Training drops the last partial batch so every step has one static shape (XLA, and
    # equal per-replica batches); evaluation keeps it so every record is scored once.
    dataset = dataset.batch(plan.batch_size, drop_remainder=training)
    outputs = functools.partial(_to_outputs, with_metadata=with_metadata, label_state=label_state)
    if plan.parse_after_batch:
        # One vectorized parse and decode per batch (raw records; see PARSE_PER_BATCH_FORMATS).
        outputs = functools.partial(_batch_outputs, plan=plan, outputs=outputs)
    return dataset.map(outputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=plan.deterministic)


def _parse_record(serialized: tf.Tensor, plan: _Plan) -> dict[str, tf.Tensor]:
    features = codec.parse_example(serialized, plan.num_labels)
    with tf.control_dependencies([_check_size(features, plan.image_size)]):
        features[schema.IMAGE_KEY] = codec.decode_image(
            features, image_size=plan.image_size, image_format=plan.image_format
        )
    return features


def _parse_batch(serialized: tf.Tensor, plan: _Plan) -> dict[str, tf.Tensor]:
    features = codec.parse_examples(serialized, plan.num_labels)
    image_size = plan.image_size
    with tf.control_dependencies([_check_size(features, image_size)]):
        pixels = tf.io.decode_raw(features[schema.IMAGE_KEY], tf.uint8)
    # Restore the static shape (batching and XLA need it); the batch dimension is static
    # whenever the batch was built with drop_remainder.
    batch = serialized.shape[0] if serialized.shape[0] is not None else -1
    features[schema.IMAGE_KEY] = tf.reshape(pixels, [batch, image_size, image_size, 1])
    return features


def _check_size(features: Mapping[str, tf.Tensor], image_size: int) -> tf.Operation:
    # A record of another size would fail later with an anonymous reshape error; name it.
    ok = tf.reduce_all(
        tf.logical_and(
            tf.equal(features[schema.HEIGHT_KEY], image_size),
            tf.equal(features[schema.WIDTH_KEY], image_size),
        )
    )
    return tf.debugging.Assert(
        ok,
        [
            f"Record size differs from the manifest option image_size={image_size} (image_index, height, width):",
            features[schema.IMAGE_INDEX_KEY],
            features[schema.HEIGHT_KEY],
            features[schema.WIDTH_KEY],
        ],
    )


def _batch_outputs(
    serialized: tf.Tensor, *, plan: _Plan, outputs: Callable[[Mapping[str, tf.Tensor]], Element]
) -> Element:
    return outputs(_parse_batch(serialized, plan))


def _to_outputs(features: Mapping[str, tf.Tensor], *, with_metadata: bool, label_state: bool) -> Element:
    images = features[schema.IMAGE_KEY]
    if label_state:
        labels = {key: tf.cast(features[key], tf.float32) for key in LABEL_STATE_KEYS}
    else:
        labels = tf.cast(features[schema.LABELS_KEY], tf.float32)
    if not with_metadata:
        return images, labels
    return images, labels, {key: features[key] for key in schema.METADATA_KEYS}
