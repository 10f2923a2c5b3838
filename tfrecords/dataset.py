"""The tf.data input pipeline: a records directory and a split in, batches out.

    import tfrecords.dataset as dataset_lib
    train = dataset_lib.build_dataset("data/tfrecords", "train", batch_size=32, training=True, seed=0)
    images, labels = next(iter(train))  # uint8 [32, 256, 256, 1], float32 [32, 15]

The records are ready-made (decoded, gray, resized by the Beam job), so this pipeline only
reads, parses and batches. Training policy (resampling, loss weights, augmentation, the
tf.data service) is the consumer's: `trainer/training/inputs.py` composes it on top of this module,
through `record_fn` (per-record stream) and the returned batches.
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
    input_context: tf.distribute.InputContext | None = None,
    record_fn: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None,
    parse_after_batch: bool | None = None,
) -> tf.data.Dataset:
    """Builds the batched dataset of one split of a records directory.

    Training: files shuffled (with `seed`) every epoch, records shuffled in a buffer, repeated
    forever, full batches only. Evaluation: fixed order (the same on every run), one pass,
    every record exactly once, the last partial batch kept.

    Args:
      records_dir: a directory written by `beam_pipelines.build_tfrecords` (local or gs://).
      split: "train", "val" or "test".
      batch_size: the global batch size; with `input_context`, each input pipeline yields
        `input_context.get_per_replica_batch_size(batch_size)`.
      training: the training variant (shuffle, repeat, drop remainder) or evaluation.
      seed: seeds file order and record shuffle; None draws fresh randomness each run.
      shuffle_buffer: records in the shuffle buffer (training only).
      cache: keep the split's records in memory after the first pass (when it fits).
      with_metadata: also yield a dict of [B] metadata tensors keyed by
        `schema.METADATA_KEYS` (image index, patient, follow-up, age, sex, view), for reports.
      input_context: from `tf.distribute.Strategy.distribute_datasets_from_function`. With
        at least as many shards as input pipelines, each pipeline reads its own files;
        otherwise each reads everything in one fixed order and keeps every n-th record.
      record_fn: training only: a transformation of the per-record stream, applied after the
        cache and before the shuffle (e.g. resampling). Its elements are serialized records
        when `parse_after_batch`, else parsed feature dicts; `record_labels` reads the labels
        of either.
      parse_after_batch: parse whole batches with `tf.io.parse_example` (raw records only;
        measured faster) instead of one record at a time. None picks the faster one.

    Returns:
      A dataset of `(images, labels)` or `(images, labels, metadata)`: images uint8
      [B, H, W, 1], labels float32 [B, 15].

    Raises:
      ManifestError: no valid manifest, shards missing or unlisted, or no such split.
      ValueError: an argument out of range (named), or an empty training split.
    """
    _check_arguments(batch_size, shuffle_buffer, training, record_fn)
    # A directory without a valid manifest is a crashed or running job, or not ours; shards
    # not matching it mean old and new output are mixed. Either way, refuse before reading.
    manifest = manifest_lib.read_manifest(records_dir)
    plan = _plan(records_dir, manifest, split, batch_size, training, seed, input_context, parse_after_batch)
    dataset = _read_records(plan, training=training, seed=seed)
    if not plan.parse_after_batch:
        # One record at a time: PNG can only be decoded per image. Decoded before the cache
        # so a cached epoch skips decoding too.
        dataset = dataset.map(
            lambda serialized: _parse_record(serialized, plan.image_size, plan.image_format),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=plan.deterministic,
        )
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
    # Training drops the last partial batch so every step has one static shape (XLA, and
    # equal per-replica batches); evaluation keeps it so every record is scored once.
    dataset = dataset.batch(plan.batch_size, drop_remainder=training)
    if plan.parse_after_batch:
        # One vectorized parse and decode per batch (raw records): measured 1.56x the
        # per-record parse (`python -m benchmarks.bench_input`).
        outputs = functools.partial(_batch_outputs, image_size=plan.image_size, with_metadata=with_metadata)
    else:
        outputs = functools.partial(_to_outputs, with_metadata=with_metadata)
    dataset = dataset.map(outputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=plan.deterministic)
    # Overlap producing the next batches with the training step consuming this one.
    return dataset.prefetch(tf.data.AUTOTUNE)


def record_labels(element: tf.Tensor | Mapping[str, tf.Tensor]) -> tf.Tensor:
    """The int64 [15] labels of one element of the per-record stream seen by `record_fn`."""
    if isinstance(element, Mapping):
        return element[schema.LABELS_KEY]
    spec = {schema.LABELS_KEY: schema.FEATURE_SPEC[schema.LABELS_KEY]}
    return tf.io.parse_single_example(element, spec)[schema.LABELS_KEY]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What `build_dataset` reads and how, decided once from the manifest and the arguments."""

    paths: tuple[str, ...]
    image_size: int
    image_format: str
    parse_after_batch: bool
    batch_size: int  # Per input pipeline.
    num_pipelines: int
    pipeline_id: int
    shard_by_file: bool
    shard_by_data: bool
    deterministic: bool


def _plan(
    records_dir: str,
    manifest: manifest_lib.Manifest,
    split: str,
    batch_size: int,
    training: bool,
    seed: int | None,
    input_context: tf.distribute.InputContext | None,
    parse_after_batch: bool | None,
) -> _Plan:
    paths = tuple(manifest_lib.shard_paths(records_dir, manifest, split))
    if training and manifest.splits[split].records == 0:
        # repeat() over nothing would spin forever instead of failing.
        raise errors.ValidationError(
            f"Records directory {records_dir!r}: split {split!r} has no records to train on."
        )
    if parse_after_batch is None:
        parse_after_batch = manifest.image_format == "raw"
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


def _parse_record(serialized: tf.Tensor, image_size: int, image_format: str) -> dict[str, tf.Tensor]:
    features = codec.parse_example(serialized)
    with tf.control_dependencies([_check_size(features, image_size)]):
        features[schema.IMAGE_KEY] = codec.decode_image(
            features, image_size=image_size, image_format=image_format
        )
    return features


def _parse_batch(serialized: tf.Tensor, image_size: int) -> dict[str, tf.Tensor]:
    features = codec.parse_examples(serialized)
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


def _batch_outputs(serialized: tf.Tensor, *, image_size: int, with_metadata: bool) -> Element:
    return _to_outputs(_parse_batch(serialized, image_size), with_metadata=with_metadata)


def _to_outputs(features: Mapping[str, tf.Tensor], with_metadata: bool) -> Element:
    images = features[schema.IMAGE_KEY]
    labels = tf.cast(features[schema.LABELS_KEY], tf.float32)
    if not with_metadata:
        return images, labels
    return images, labels, {key: features[key] for key in schema.METADATA_KEYS}
