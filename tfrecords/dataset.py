"""The tf.data input pipeline: a records directory and a split in, batches out.

    import tfrecords.dataset as dataset_lib
    train = dataset_lib.build_dataset("data/tfrecords", "train", batch_size=32, training=True, seed=0)
    images, labels = next(iter(train))  # uint8 [32, 256, 256, 1], float32 [32, 15]

The records are ready-made (decoded, gray, resized by the Beam job), so this pipeline only
reads, parses and batches; per-step image work (augmentation, standardization) belongs to
the model's input layers (trainer/augment.py), or to `augment_fn` here when measured faster.

Class imbalance: `balance="resample"` repeats each training record a random number of
times whose mean is proportional to its number of labels plus 0.04 (the original work's
sampling weights); `positive_weights` gives per-class weights for the loss instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib

BALANCE_MODES = ("none", "resample")
# The original work sampled images with weight (number of labels + 0.04): "No Finding" counts
# as one label, so a normal image weighs 1.04 and one with three findings 3.04.
RESAMPLE_OFFSET = 0.04
# tf.data service mode: every record once per epoch across all service workers, so adding
# workers divides the work instead of multiplying the epoch ("parallel_epochs" would have each
# worker produce the whole epoch, duplicating records).
DATA_SERVICE_PROCESSING_MODE = "distributed_epoch"
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
    balance: str = "none",
    input_context: tf.distribute.InputContext | None = None,
    data_service: str | None = None,
    augment_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
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
      seed: seeds file order, record shuffle, resampling and `augment_fn`'s seeds; None
        draws fresh randomness each run.
      shuffle_buffer: records in the shuffle buffer (training only).
      cache: keep the split's records in memory after the first pass (when it fits).
      with_metadata: also yield a dict of [B] metadata tensors keyed by
        `schema.METADATA_KEYS` (image index, patient, follow-up, age, sex, view), for reports.
      balance: "none", or "resample" (training only): each record is repeated
        floor(w / mean(w) + u) times, u ~ U[0, 1), w = number of labels + 0.04, so its
        expected share of the stream is w / sum(w): a label's frequency becomes
        sum(w over records with it) / sum(w) instead of (records with it) / (records).
      input_context: from `tf.distribute.Strategy.distribute_datasets_from_function`. With
        at least as many shards as input pipelines, each pipeline reads its own files;
        otherwise each reads everything in one fixed order and keeps every n-th record.
      data_service: a tf.data service dispatcher address ("grpc://host:port"); reading,
        parsing, batching and `augment_fn` then run on its workers, in
        `DATA_SERVICE_PROCESSING_MODE`. Evaluation order is then not guaranteed.
      augment_fn: optional `f(images uint8 [B, H, W, 1], seed int64 [2]) -> float32 images`
        applied after batching (trainer.augment.make_augment_fn); training only.
      parse_after_batch: parse whole batches with `tf.io.parse_example` (raw records only;
        measured faster) instead of one record at a time. None picks the faster one.

    Returns:
      A dataset of `(images, labels)` or `(images, labels, metadata)`: images uint8
      [B, H, W, 1] (float32 when `augment_fn` is set), labels float32 [B, 15].

    Raises:
      ManifestError: no valid manifest, shards missing or unlisted, or no such split.
      ValueError: an argument out of range (named), or an empty training split.
    """
    _check_arguments(batch_size, shuffle_buffer, balance, training, augment_fn)
    # A directory without a valid manifest is a crashed or running job, or not ours; shards
    # not matching it mean old and new output are mixed. Either way, refuse before reading.
    manifest = manifest_lib.read_manifest(records_dir)
    paths = manifest_lib.shard_paths(records_dir, manifest, split)
    split_info = manifest.splits[split]
    if training and split_info.records == 0:
        # repeat() over nothing would spin forever instead of failing.
        raise ValueError(f"Records directory {records_dir!r}: split {split!r} has no records to train on.")
    image_size, image_format = manifest.image_size, manifest.image_format
    if parse_after_batch is None:
        parse_after_batch = image_format == "raw"
    elif parse_after_batch and image_format != "raw":
        raise ValueError(
            f"parse_after_batch=True needs raw records; {records_dir!r} holds {image_format!r} images."
        )
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    shard_by_file = num_pipelines > 1 and len(paths) >= num_pipelines
    shard_by_data = num_pipelines > 1 and not shard_by_file
    # Evaluation order is fixed. In training, a seed asks for a reproducible stream, so
    # parallel steps keep their order; without one they may reorder to dodge a slow file.
    # Element-level sharding needs every pipeline to see the same record order too.
    deterministic = not training or seed is not None or shard_by_data

    files = tf.data.Dataset.from_tensor_slices(paths)
    if shard_by_file:
        files = files.shard(num_pipelines, pipeline_id)
    if training and not shard_by_data:
        # A new file order every epoch (the reshuffle happens when repeat() restarts it).
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # Interleave reads several files at once in parallel; in evaluation deterministically
    # (round robin over the files), so reports see the same order every run.
    dataset = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=_READ_BUFFER_BYTES),
        cycle_length=max(1, min(len(paths), _MAX_CYCLE_LENGTH)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if shard_by_data:
        dataset = dataset.shard(num_pipelines, pipeline_id)

    if not parse_after_batch:
        # One record at a time: PNG can only be decoded per image. Decoded before the cache
        # so a cached epoch skips decoding too.
        dataset = dataset.map(
            lambda serialized: _parse_record(serialized, image_size, image_format),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
    if cache:
        # After reading (and per-record decoding), before anything random, so later epochs
        # replay the bytes from memory and still get a fresh resampling and shuffle.
        dataset = dataset.cache()
    if training and balance == "resample":
        dataset = _resample(dataset, manifest, split, seed=seed, parsed=not parse_after_batch)
    if training:
        # Shuffle before repeat: epochs stay whole (every record once per epoch, resampled
        # copies aside) and the buffer reshuffles on each pass.
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
    # Training drops the last partial batch so every step has one static shape (XLA, and
    # equal per-replica batches); evaluation keeps it so every record is scored once.
    dataset = dataset.batch(batch_size, drop_remainder=training)
    if parse_after_batch:
        # One vectorized parse and decode per batch (raw records): measured 1.56x the
        # per-record parse (7,034 vs 4,504 images/s, best of 3 rounds, 256x256, batch 32,
        # `python -m benchmarks.bench_input`, shared 2-core CPU at load ~8).
        outputs = functools.partial(_batch_outputs, image_size=image_size, with_metadata=with_metadata)
    else:
        outputs = functools.partial(_to_outputs, with_metadata=with_metadata)
    dataset = dataset.map(outputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if augment_fn is not None:
        dataset = _apply_augment(dataset, augment_fn, seed=seed)
    if data_service is not None:
        # Everything above runs on the service's workers; the client only prefetches.
        dataset = dataset.apply(
            tf.data.experimental.service.distribute(
                processing_mode=DATA_SERVICE_PROCESSING_MODE, service=data_service
            )
        )
    # Overlap producing the next batches with the training step consuming this one.
    return dataset.prefetch(tf.data.AUTOTUNE)


def positive_weights(manifest: manifest_lib.Manifest, split: str = "train") -> np.ndarray:
    """Per-class weights of the positive term of a weighted binary cross-entropy.

    Weight_j = negatives_j / positives_j from the manifest's label counts, so over the split
    the positives of class j weigh as much in the loss as its negatives. A class without
    positives, or without negatives, gets 1.0 (there is nothing to balance).

    Args:
      manifest: the records directory's manifest.
      split: the split whose counts to use (normally "train").

    Returns:
      float32 [15] in `schema.LABELS` order.

    Raises:
      ManifestError: the manifest has no such split.
      ValueError: the split has no records.
    """
    if split not in manifest.splits:
        raise manifest_lib.ManifestError(
            f"The manifest has no split {split!r}; it has {sorted(manifest.splits)}."
        )
    records = manifest.splits[split].records
    if records == 0:
        raise ValueError(f"Split {split!r} has no records; positive weights are undefined.")
    positives = np.asarray(manifest.label_counts(split), np.float64)
    negatives = records - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where((positives > 0) & (negatives > 0), negatives / positives, 1.0)
    return weights.astype(np.float32)


def resample_weights(labels: tf.Tensor | np.ndarray) -> tf.Tensor:
    """The resampling weight of each record: its number of labels + 0.04 (see `build_dataset`)."""
    return tf.reduce_sum(tf.cast(labels, tf.float32), axis=-1) + RESAMPLE_OFFSET


def _check_arguments(
    batch_size: int, shuffle_buffer: int, balance: str, training: bool, augment_fn: Callable | None
) -> None:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if not isinstance(shuffle_buffer, int) or shuffle_buffer <= 0:
        raise ValueError(f"shuffle_buffer must be a positive integer, got {shuffle_buffer!r}.")
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {BALANCE_MODES}, got {balance!r}.")
    if balance != "none" and not training:
        raise ValueError(
            f"balance={balance!r} changes what is seen; it is for training only (training=False)."
        )
    if augment_fn is not None and not training:
        raise ValueError("augment_fn is for training only; evaluation must see the records unchanged.")


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


def _resample(
    dataset: tf.data.Dataset, manifest: manifest_lib.Manifest, split: str, *, seed: int | None, parsed: bool
) -> tf.data.Dataset:
    """Repeats each record floor(w / mean(w) + u) times: expected count w / mean(w)."""
    info = manifest.splits[split]
    # mean(w) over the split from the manifest: sum of label counts = sum of labels per record.
    mean_weight = sum(manifest.label_counts(split)) / info.records + RESAMPLE_OFFSET
    uniforms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
        lambda r: tf.cast(r % (1 << 24), tf.float32) / float(1 << 24)
    )

    def copies(element, uniform: tf.Tensor):
        if parsed:
            labels = element[schema.LABELS_KEY]
        else:
            labels = tf.io.parse_single_example(
                element, {schema.LABELS_KEY: schema.FEATURE_SPEC[schema.LABELS_KEY]}
            )[schema.LABELS_KEY]
        count = tf.cast(tf.floor(resample_weights(labels) / mean_weight + uniform), tf.int64)
        # A [count, ...] batch of copies, unbatched below (count may be 0).
        return tf.nest.map_structure(lambda t: tf.repeat(t[tf.newaxis], count, axis=0), element)

    dataset = tf.data.Dataset.zip(dataset, uniforms).map(copies, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.unbatch()


def _apply_augment(
    dataset: tf.data.Dataset, augment_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], *, seed: int | None
) -> tf.data.Dataset:
    # One int64 [2] seed per batch from a seeded stream, so augmentation is reproducible.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment(element: Element, batch_seed: tf.Tensor) -> Element:
        return (augment_fn(element[0], batch_seed), *element[1:])

    return tf.data.Dataset.zip(dataset, seeds).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
