"""The classification task: the steps a training run is assembled from.

`train_lib.train` (the runner) calls them in this order:

    plan = plan_run(config, manifest, strategy)    every decision and check, before any write
    model = build_model(config, plan)              in strategy.scope(), under the dtype policy
    compile_model(model, config, plan, manifest)   optimizer, build_losses, build_metrics
    train_data, val_data = build_inputs(config, strategy, plan)
    callbacks.build_callbacks(plan.lr_fn, ...)

Device-dependent decisions (`xla`, `augment_placement` set to "auto") follow the benchmark
results recorded below, each beside the command that measured it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.model import augment as augment_lib
from trainer.model import models, objectives
from trainer.training import config as config_lib
from trainer.training import device as hardware
from trainer.training import inputs

# Decided by benchmarks; this is the one place the trainer reads them from, each with the
# command that measured it (its JSON report has the figures and the machine's load).
#
# XLA speed-up per device type: images/s of training steps (augmentation in the step, best of
# the alternating rounds) with `jit_compile` over without, in float32 ("fp32", the report's
# ratio "xla_fp32/fp32") and bf16 ("bf16", "xla_bf16/bf16"); the worse of the full-size
# ResUNet (256x256, widths 32-64-128-256) and the demo profile's. Measured by
#     make bench-train      (python -m benchmarks.bench_train -> runs/bench/bench-train.json)
# on a 2-core CPU with avx512_bf16, TF 2.21. `xla=auto` turns XLA on only where every ratio
# listed for the device is > 1: not on CPU. No GPU/TPU was measured; there `auto` follows
# Keras' own default (on).
XLA_SPEEDUP_BY_DEVICE = {"CPU": {"fp32": 0.77, "bf16": 0.58}}

# Augmentation placement per device type: the placement with the higher training images/s,
# the "model" and "dataset" placements alternating in one run (ResUNet 256x256, XLA off as
# `xla=auto` picks on CPU). Measured by
#     make bench-input      (python -m benchmarks.bench_input -> runs/bench/bench-input.json)
# on the same CPU: "dataset" was faster. GPU/TPU were not measured; there the batch work
# belongs on the accelerator, inside the compiled step ("model").
AUGMENT_PLACEMENT_BY_DEVICE = {"CPU": "dataset"}

# Epochs of the learning-rate schedule recorded in config.json and the start-up log.
LOGGED_LR_EPOCHS = 12


def resolve_augment_placement(placement: str, device_type: str) -> str:
    """Turns `augment_placement` into "model" or "dataset"; `auto` follows the measurement above."""
    if placement in ("model", "dataset"):
        return placement
    return AUGMENT_PLACEMENT_BY_DEVICE.get(device_type, "model")


def resolve_jit_compile(xla: str, device_type: str) -> bool:
    """Turns `xla` into Keras' `jit_compile`; `auto` follows XLA_SPEEDUP_BY_DEVICE."""
    if xla in ("on", "off"):
        return xla == "on"
    measured = XLA_SPEEDUP_BY_DEVICE.get(device_type)
    if measured:
        return all(ratio is not None and ratio > 1 for ratio in measured.values())
    return device_type in ("GPU", "TPU")


def whole_epoch_steps_per_execution(requested: int, *step_counts: int | None) -> int:
    """The largest common divisor of `step_counts` (None ones aside) that is <= `requested`.

    Keras runs `steps_per_execution` steps per call, in training and in validation, and rounds
    a pass up to whole calls; a divisor keeps every training epoch at exactly its steps (the
    learning rate, the backup and a resume stay on epoch boundaries) and every validation pass
    at one pass of the repeated validation input.
    """
    counts = [count for count in step_counts if count is not None]
    return max(k for k in range(1, min([requested, *counts]) + 1) if all(c % k == 0 for c in counts))


def validation_pass(records: int, global_batch_size: int, replicas: int) -> tuple[int, int | None]:
    """(steps, re-batched batches or None) of one validation pass over a repeated input.

    The validation input yields per-replica batches and hands them to the replicas in turn,
    `replicas` per step; `fit` reads `steps` steps of the repeated input per epoch. That is
    exactly one pass when the pass holds a whole number of steps' batches. When it does not
    (several replicas, a pass of `records` that does not divide), the last step would take
    batches of the next pass and score records twice, and a finite input would hand a
    replica an empty batch, which the model's batch normalization refuses. Then the pass is
    re-batched into `replicas * steps` batches of near-equal sizes (second value), none
    larger than the configured batch, none empty.

    Returns:
      (steps, None) when the batches split into whole steps as they are; (steps, batches)
      when they must be re-batched.

    Raises:
      ValueError: fewer records than replicas (a replica would have none to score).
    """
    per_replica = global_batch_size // replicas
    steps = -(-records // global_batch_size)
    if -(-records // per_replica) % replicas == 0:
        return steps, None
    if records < replicas:
        raise ValueError(
            f"The val split has {records} records, fewer than the {replicas} replicas: each replica "
            "needs at least one record per validation step. Write more validation records or train "
            "on fewer replicas."
        )
    return steps, replicas * steps


def device_type(strategy: tf.distribute.Strategy) -> str:
    """ "CPU", "GPU" or "TPU": the kind of device the strategy's first replica runs on."""
    return strategy.extended.worker_devices[0].split("device:")[-1].split(":")[0].upper()


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The run's resolved decisions: what the configuration means on this data and strategy."""

    image_size: int
    labels: tuple[str, ...]  # The records' label vocabulary (the manifest's): the head's outputs.
    dataset: str  # The records' data set (the manifest's).
    replicas: int
    strategy: str
    global_batch_size: int
    steps_per_epoch: int
    jit_compile: bool
    augment_placement: str  # "model", "dataset", or "none" (augmentation off).
    dtype_policy: str
    precision: hardware.PrecisionChoice  # What `mixed_precision` resolved to, and why.
    steps_per_execution: int  # Divides steps_per_epoch and validation_steps.
    validation_batch_size: int  # Global.
    # Validation steps per pass; None (multi-worker: each worker's share differs) makes Keras
    # read the validation input to its end with a fresh iterator every epoch.
    validation_steps: int | None
    # Per-replica batches one validation pass is re-batched into (`validation_pass`), or None.
    validation_batches: int | None
    lr_fn: Callable[[int], float]  # Learning rate of each 0-based epoch index.
    lr_max_scaled: float


def plan_run(
    config: config_lib.TrainConfig, manifest: manifest_lib.Manifest, strategy: tf.distribute.Strategy
) -> RunPlan:
    """Checks `config` against the records and strategy and resolves every `auto` choice.

    Raises:
      ValueError: an image size the architecture cannot take, or an empty train or val split.
    """
    try:
        models.validate_architecture(
            config.model, image_size=manifest.image_size, depth=config.depth, base_filters=config.base_filters
        )
    except ValueError as error:
        raise ValueError(f"{error} (image_size comes from {config.records_dir}/manifest.json)") from None
    for split in ("train", "val"):
        if split not in manifest.splits or manifest.splits[split].records == 0:
            raise ValueError(
                f"records_dir {config.records_dir!r} has no {split!r} records; training needs both."
            )
    replicas = strategy.num_replicas_in_sync
    device = device_type(strategy)
    global_batch = config.batch_size_per_replica * replicas
    steps_per_epoch = config.steps_per_epoch or max(1, manifest.splits["train"].records // global_batch)
    precision = hardware.resolve_mixed_precision(config.mixed_precision, hardware.describe_device(device))
    validation_batch = (config.validation_batch_size_per_replica or config.batch_size_per_replica) * replicas
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    validation_steps, validation_batches = None, None
    if not multi_worker:
        validation_steps, validation_batches = validation_pass(
            manifest.splits["val"].records, validation_batch, replicas
        )
    return RunPlan(
        image_size=manifest.image_size,
        labels=tuple(manifest.labels),
        dataset=manifest.dataset,
        replicas=replicas,
        strategy=type(strategy).__name__,
        global_batch_size=global_batch,
        steps_per_epoch=steps_per_epoch,
        jit_compile=resolve_jit_compile(config.xla, device),
        augment_placement=resolve_augment_placement(config.augment_placement, device)
        if config.augment
        else "none",
        dtype_policy=config_lib.MIXED_PRECISION_POLICIES[precision.policy],
        precision=precision,
        # Under MultiWorkerMirroredStrategy, Keras 3.15's multi-step loop fails on the first call
        # ("You must feed a value for placeholder tensor 'while/cond/Placeholder...'" in
        # `multi_step_on_iterator`, seen in tests/multi_worker_test.py): one step per call there.
        steps_per_execution=1
        if multi_worker
        else whole_epoch_steps_per_execution(config.steps_per_execution, steps_per_epoch, validation_steps),
        validation_batch_size=validation_batch,
        validation_steps=validation_steps,
        validation_batches=validation_batches,
        lr_fn=config.lr_fn(replicas),
        lr_max_scaled=config.lr_max_scaled(replicas),
    )


def effective_config(config: config_lib.TrainConfig, plan: RunPlan) -> dict[str, Any]:
    """What config.json holds: the configuration, every resolved decision, the first rates."""
    return {
        "profile": config.profile,
        "train_config": config.to_dict(),
        "records_dir": config.records_dir,
        "model": config.model,
        "image_size": plan.image_size,
        "num_replicas": plan.replicas,
        "strategy": plan.strategy,
        "batch_size_per_replica": config.batch_size_per_replica,
        "global_batch_size": plan.global_batch_size,
        "steps_per_epoch": plan.steps_per_epoch,
        "jit_compile": plan.jit_compile,
        "augment_placement": plan.augment_placement,
        "dtype_policy": plan.dtype_policy,
        "mixed_precision": plan.precision.to_dict(),
        "steps_per_execution": plan.steps_per_execution,
        "validation_batch_size": plan.validation_batch_size,
        "validation_steps": plan.validation_steps,
        "lr_max_scaled": plan.lr_max_scaled,
        "lr_per_epoch": [plan.lr_fn(epoch) for epoch in range(min(config.epochs, LOGGED_LR_EPOCHS))],
        # The run's vocabulary: the model's outputs in this order (evaluation and prediction read it).
        "dataset": plan.dataset,
        "labels": list(plan.labels),
    }


def format_effective_config(effective: dict[str, Any]) -> str:
    """The start-up log block: one `key = value` line per resolved setting."""
    fields = {**effective["train_config"], **{k: v for k, v in effective.items() if k != "train_config"}}
    fields.pop("labels", None)
    fields["num_labels"] = len(effective["labels"])
    fields["lr_per_epoch"] = ", ".join(f"{lr:.4g}" for lr in effective["lr_per_epoch"])
    width = max(len(key) for key in fields)
    return "\n".join(
        ["Effective training configuration:"] + [f"  {k:<{width}} = {v}" for k, v in fields.items()]
    )


def build_model(config: config_lib.TrainConfig, plan: RunPlan) -> keras.Model:
    """The uncompiled model; call in `strategy.scope()` with the dtype policy set."""
    augment = config.augment_config() if plan.augment_placement == "model" else None
    return models.build_model(
        config.model,
        image_size=plan.image_size,
        depth=config.depth,
        base_filters=config.base_filters,
        dropout=config.dropout,
        augment=augment,
        weights=config.weights,
        pool_bottleneck=config.pool_bottleneck,
        num_labels=len(plan.labels),
    )


def build_losses(config: config_lib.TrainConfig, manifest: manifest_lib.Manifest) -> keras.losses.Loss:
    """Binary cross-entropy over the known labels, positive-weighted per label when
    `class_imbalance="weights"`."""
    if config.class_imbalance == "weights":
        return objectives.WeightedBinaryCrossentropy(inputs.positive_weights(manifest, split="train"))
    return objectives.MaskedBinaryCrossentropy()


def build_metrics(labels: tuple[str, ...] = schema.LABELS) -> list[keras.metrics.Metric]:
    """Binary accuracy, the mean AUC (`auc`) and one AUC per label (`auc_<Label>`), over known labels.

    The per-label AUCs read the mean AUC's per-label counts (`SharedClassAUC`): one multi-label
    update per step instead of one AUC update per label, the same values.
    """
    mean_auc = objectives.MeanAUC(num_labels=len(labels), name="auc")
    return [
        objectives.MaskedBinaryAccuracy(name="binary_accuracy"),
        mean_auc,
        *[
            objectives.SharedClassAUC(i, source=mean_auc, name=f"auc_{objectives.metric_label(label)}")
            for i, label in enumerate(labels)
        ],
    ]


def compile_model(
    model: keras.Model, config: config_lib.TrainConfig, plan: RunPlan, manifest: manifest_lib.Manifest
) -> None:
    """Adam at epoch 0's rate (the scheduler sets each epoch's), the loss and the metrics."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=plan.lr_fn(0)),
        loss=build_losses(config, manifest),
        metrics=build_metrics(plan.labels),
        jit_compile=plan.jit_compile,
        steps_per_execution=plan.steps_per_execution,
    )


def build_augment_fn(config: config_lib.TrainConfig, plan: RunPlan) -> inputs.AugmentFn | None:
    """The tf.data augmentation in the "dataset" placement, else None."""
    if plan.augment_placement != "dataset":
        return None
    return augment_lib.make_augment_fn(config.augment_config())


def build_inputs(
    config: config_lib.TrainConfig, strategy: tf.distribute.Strategy, plan: RunPlan
) -> tuple[tf.distribute.DistributedDataset, tf.distribute.DistributedDataset]:
    """(training input, validation input), distributed over the strategy's replicas."""
    augment_fn = build_augment_fn(config, plan)
    train = inputs.distributed_dataset(config, strategy, "train", training=True, augment_fn=augment_fn)
    val = inputs.distributed_dataset(
        config,
        strategy,
        "val",
        training=False,
        batch_size_per_replica=plan.validation_batch_size // plan.replicas,
        repeat=plan.validation_steps is not None,
        pass_batches=plan.validation_batches,
    )
    return train, val
