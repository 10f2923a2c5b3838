"""The trainer's input policy, composed on top of the records reader (`tfrecords.dataset`).

    records -> tfrecords.dataset.build_dataset(record_fn=resample_fn(...))   read, parse, batch
            -> with_targets(uncertain)           each label's state -> the training targets
            -> augment_batches(augment_fn)       the "dataset" augmentation placement
            -> through_data_service(address)     optional tf.data service
            -> strategy.distribute_datasets_from_function

Class imbalance: `class_imbalance="resample"` repeats each training record a random number of
times whose mean is proportional to its number of labels plus 0.04 (the 2023 thesis' sampling
weights); `"weights"` weighs the loss with `positive_weights` instead.

Targets: the labels in the records' vocabulary (the manifest's `labels`), with every label the
records do not know for an image set to `objectives.UNKNOWN_LABEL` (-1), which the loss and the
metrics leave out. A label the source wrote as uncertain becomes what the `uncertain` policy
says (`targets`); a label not mentioned stays unknown. NIH records know every label, so their
targets are their labels, unchanged.

Whatever the placement of the augmentation, the model receives pixels on the 0..255 scale:
uint8 records, or the float32 warp of them (`trainer.model.augment.make_augment_fn`); the model
rescales and standardizes them itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.model import objectives
from trainer.training import config as config_lib

# The 2023 thesis sampled images with weight (number of labels + 0.04): "No Finding" counts
# as one label, so a normal image weighs 1.04 and one with three findings 3.04.
RESAMPLE_OFFSET = 0.04
# tf.data service mode: every record once per epoch across all service workers, so adding
# workers divides the work instead of multiplying the epoch ("parallel_epochs" would have each
# worker produce the whole epoch, duplicating records).
DATA_SERVICE_PROCESSING_MODE = "distributed_epoch"

AugmentFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def positive_weights(manifest: manifest_lib.Manifest, split: str = "train") -> np.ndarray:
    """Per-class weights of the positive term of a weighted binary cross-entropy.

    Weight_j = negatives_j / positives_j from the manifest's label counts, so over the split
    the positives of class j weigh as much in the loss as its negatives. A class without
    positives, or without negatives, gets 1.0 (there is nothing to balance).

    Args:
      manifest: the records directory's manifest.
      split: the split whose counts to use (normally "train").

    The manifest counts positives only: an unknown label counts as a negative here.

    Returns:
      float32 [L] in the order of the manifest's `labels`.

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


def targets(state: dict[str, tf.Tensor], uncertain: str) -> tf.Tensor:
    """The training targets of a batch from its labels' states (`build_dataset(label_state=True)`).

    Args:
      state: float32 [B, L] `labels`, `label_mask` (1 known) and `label_uncertain` (1 where the
        source wrote uncertain), keyed by `tfrecords.dataset.LABEL_STATE_KEYS`.
      uncertain: the policy for uncertain labels, one of `config_lib.UNCERTAINTY_POLICIES`:
        "ignore" keeps them unknown, "ones" makes them known positives, "zeros" known negatives.

    Returns:
      float32 [B, L]: the labels where known, `objectives.UNKNOWN_LABEL` elsewhere.

    Raises:
      ValueError: an unknown policy.
    """
    if uncertain not in config_lib.UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertain must be one of {config_lib.UNCERTAINTY_POLICIES}, got {uncertain!r}.")
    labels = state[schema.LABELS_KEY]
    known = state[schema.LABEL_MASK_KEY] > 0
    if uncertain != "ignore":
        is_uncertain = state[schema.LABEL_UNCERTAIN_KEY] > 0
        labels = tf.where(is_uncertain, 1.0 if uncertain == "ones" else 0.0, labels)
        known = tf.logical_or(known, is_uncertain)
    return tf.where(known, labels, objectives.UNKNOWN_LABEL)


def with_targets(dataset: tf.data.Dataset, uncertain: str) -> tf.data.Dataset:
    """Maps `(images, state, ...)` batches to `(images, targets(state), ...)`."""

    def to_targets(images: tf.Tensor, state: dict[str, tf.Tensor], *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return (images, targets(state, uncertain), *rest)

    return dataset.map(to_targets, num_parallel_calls=tf.data.AUTOTUNE)


def resample_weights(labels: tf.Tensor | np.ndarray) -> tf.Tensor:
    """The resampling weight of each record: its number of labels + 0.04."""
    return tf.reduce_sum(tf.cast(labels, tf.float32), axis=-1) + RESAMPLE_OFFSET


def resample_fn(
    manifest: manifest_lib.Manifest, split: str, *, seed: int | None
) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
    """The `record_fn` of `build_dataset` that resamples the per-record stream.

    Each record is repeated floor(w / mean(w) + u) times, u ~ U[0, 1), w = number of labels +
    0.04, so its expected share of the stream is w / sum(w): a label's frequency becomes
    sum(w over records with it) / sum(w) instead of (records with it) / (records).

    Args:
      manifest: the records directory's manifest (mean(w) comes from its label counts).
      split: the split read.
      seed: seeds the uniforms; None draws fresh ones each run.

    Returns:
      A function of the per-record dataset.
    """
    info = manifest.splits[split]
    num_labels = len(manifest.labels)
    # mean(w) over the split: the sum of label counts is the sum of labels per record.
    mean_weight = sum(manifest.label_counts(split)) / max(info.records, 1) + RESAMPLE_OFFSET

    def resample(dataset: tf.data.Dataset) -> tf.data.Dataset:
        uniforms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.cast(r % (1 << 24), tf.float32) / float(1 << 24)
        )

        def copies(element, uniform: tf.Tensor):
            weight = resample_weights(dataset_lib.record_labels(element, num_labels))
            count = tf.cast(tf.floor(weight / mean_weight + uniform), tf.int64)
            # A [count, ...] batch of copies, unbatched below (count may be 0).
            return tf.nest.map_structure(lambda t: tf.repeat(t[tf.newaxis], count, axis=0), element)

        zipped = tf.data.Dataset.zip(dataset, uniforms)
        return zipped.map(copies, num_parallel_calls=tf.data.AUTOTUNE).unbatch()

    return resample


def augment_batches(dataset: tf.data.Dataset, augment_fn: AugmentFn, *, seed: int | None) -> tf.data.Dataset:
    """Applies `augment_fn(images, seed)` to each batch's images (the "dataset" placement).

    One int64 [2] seed per batch from a seeded stream, so the augmentation is reproducible.
    """
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def augment(element: tuple[tf.Tensor, ...], batch_seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return (augment_fn(element[0], batch_seed), *element[1:])

    zipped = tf.data.Dataset.zip(dataset, seeds)
    return zipped.map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def through_data_service(dataset: tf.data.Dataset, address: str) -> tf.data.Dataset:
    """Runs `dataset` on the tf.data service at `address` ("grpc://host:port").

    Everything upstream (reading, parsing, batching, augmentation) runs on the service's
    workers, in `DATA_SERVICE_PROCESSING_MODE`; the client only prefetches.
    """
    served = dataset.apply(
        tf.data.experimental.service.distribute(processing_mode=DATA_SERVICE_PROCESSING_MODE, service=address)
    )
    return served.prefetch(tf.data.AUTOTUNE)


def training_dataset(
    config: config_lib.TrainConfig,
    *,
    global_batch_size: int,
    split: str = "train",
    input_context: tf.distribute.InputContext | None = None,
    augment_fn: AugmentFn | None = None,
) -> tf.data.Dataset:
    """The training input of `config`: resampled if asked, augmented by `augment_fn` if given,
    through `config.data_service` when set.

    Raises:
      ManifestError, ValueError: as `tfrecords.dataset.build_dataset`.
    """
    record_fn = None
    if config.class_imbalance == "resample":
        manifest = manifest_lib.read_manifest(config.records_dir)
        record_fn = resample_fn(manifest, split, seed=config.seed)
    dataset = dataset_lib.build_dataset(
        config.records_dir,
        split,
        batch_size=global_batch_size,
        training=True,
        seed=config.seed,
        shuffle_buffer=config.shuffle_buffer,
        cache=config.cache,
        input_context=input_context,
        record_fn=record_fn,
        label_state=True,
    )
    dataset = with_targets(dataset, config.uncertain)
    if augment_fn is not None:
        dataset = augment_batches(dataset, augment_fn, seed=config.seed)
    if config.data_service:
        dataset = through_data_service(dataset, config.data_service)
    return dataset


def distributed_dataset(
    config: config_lib.TrainConfig,
    strategy: tf.distribute.Strategy,
    split: str,
    *,
    training: bool,
    augment_fn: AugmentFn | None = None,
    batch_size_per_replica: int | None = None,
    repeat: bool = False,
    pass_batches: int | None = None,
) -> tf.distribute.DistributedDataset:
    """The input of `fit`: one pipeline per worker, batches of `batch_size_per_replica`.

    Validation is read directly, never through the data service (it must be complete and is
    small), and never augmented or resampled. With `repeat`, the evaluation pass (every record
    once, the last batch partial) repeats, so `fit` given the pass's step count keeps one
    iterator for all epochs instead of starting a new one each epoch. With `pass_batches`,
    the evaluation pass is re-batched into that many batches (`split_evenly`), so that it
    splits into whole steps over the replicas with records for every replica.
    """
    per_replica = batch_size_per_replica or config.batch_size_per_replica
    global_batch_size = per_replica * strategy.num_replicas_in_sync

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        if training:
            return training_dataset(
                config,
                global_batch_size=global_batch_size,
                split=split,
                input_context=input_context,
                augment_fn=augment_fn,
            )
        dataset = dataset_lib.build_dataset(
            config.records_dir,
            split,
            batch_size=global_batch_size,
            training=False,
            input_context=input_context,
            label_state=True,
        )
        if pass_batches is not None:
            records = manifest_lib.read_manifest(config.records_dir).splits[split].records
            dataset = split_evenly(dataset, records, pass_batches)
        dataset = with_targets(dataset, config.uncertain)
        return dataset.repeat() if repeat else dataset

    return strategy.distribute_datasets_from_function(dataset_fn)


def split_evenly(dataset: tf.data.Dataset, records: int, batches: int) -> tf.data.Dataset:
    """Re-batches one evaluation pass of `records` records into `batches` batches, in order.

    The first `records % batches` batches hold one record more than the others, so sizes
    differ by at most one and none is empty (`batches` <= `records`). The records of those
    first batches are read twice (`skip` reads what it drops); only a pass that needs it
    (several replicas, `trainer.training.task.validation_pass`) is re-batched.
    """
    size, larger = divmod(records, batches)
    records_in_order = dataset.unbatch()
    head = records_in_order.take(larger * (size + 1)).batch(size + 1)
    return head.concatenate(records_in_order.skip(larger * (size + 1)).batch(size))
