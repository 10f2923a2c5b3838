"""Training library: the run configuration, strategy creation, and `train(config, strategy)`.

The binary (`trainer/train.py`) turns flags into a `TrainConfig`, creates the strategy with
`create_strategy` and calls `train`; everything else lives here, so tests call it directly.

Run directory layout (see INTERFACES.md):

    runs/<name>/config.json            this run's TrainConfig + image_size, replicas, strategy
                history.csv            one row per epoch: epoch, lr, losses, metrics, per-class AUCs
                checkpoints/best.keras best by val_auc (the validation mean AUC)
                backup/                BackupAndRestore state (deleted when the run completes)
                tensorboard/           TensorBoard event files
                export/                SavedModel + labels.json (trainer.export)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer import augment as augment_lib
from trainer import export as export_lib
from trainer import lr_schedule, models

STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker")
CLASS_IMBALANCE_MODES = ("none", "weights", "resample")
AUGMENT_PLACEMENTS = ("auto", "model", "dataset")
# Flag value -> Keras dtype policy.
MIXED_PRECISION_POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
XLA_MODES = ("auto", "on", "off")

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.csv"
BEST_CHECKPOINT = os.path.join("checkpoints", "best.keras")
BACKUP_DIR = "backup"
TENSORBOARD_DIR = "tensorboard"
EXPORT_DIR = "export"
# What `--overwrite` may delete in a run directory: only what `train` writes.
_RUN_OUTPUTS = (CONFIG_FILE, HISTORY_FILE, "checkpoints", BACKUP_DIR, TENSORBOARD_DIR, EXPORT_DIR, "reports")
# Fields that do not change what a run computes; a resumed run may differ in them.
_NON_IDENTITY_FIELDS = ("overwrite", "verbose")

# XLA (`jit_compile`) as measured by `python -m benchmarks.bench_train` (runs/bench/bench-train.json;
# training steps with augmentation in the step, best of 2 alternating rounds, images/s), on this
# 2-core CPU (avx512_bf16), 2026-11-25 at load average ~2:
#   ResUNet 256x256, widths 32-64-128-256, batch 4:  fp32 2.49, bf16 3.53, XLA fp32 1.93, XLA bf16 2.05
#   demo profile 64x64, widths 8-16-32-64, batch 32:  fp32 189,  bf16 274,  XLA fp32 196,  XLA bf16 133
# XLA/no-XLA: 0.77 and 1.04 (fp32), 0.58 and 0.48 (bf16); bf16/fp32: 1.42 and 1.45. `--xla=auto`
# turns XLA on only where every ratio listed for the device is > 1: not on this CPU (the
# worst, i.e. full-size, ratios are listed). No GPU/TPU was available to measure; there `auto`
# follows Keras' own default ("auto" jit_compile: on).
XLA_SPEEDUP_BY_DEVICE = {"CPU": {"fp32": 0.77, "bf16": 0.58}}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; validated once on construction.

    Defaults are the demo profile (64x64 demo records: about 0.97 validation mean AUC in 12
    epochs on 2 CPU cores); FULL_PROFILE holds the configuration for the real data set.
    """

    records_dir: str = "data/tfrecords"
    run_dir: str = "runs/demo"
    model: str = "resunet"
    depth: int = 3
    base_filters: int = 8
    dropout: float = 0.3
    pool_bottleneck: bool = True
    weights: str | None = None
    batch_size: int = 32  # Global batch, split evenly among the replicas.
    epochs: int = 12
    steps_per_epoch: int | None = None  # None: one pass over the train split per epoch.
    # The demo schedule: a short ramp to a high rate, as 12 epochs leave no room for the
    # original's 8-epoch ramp from 2e-6 (FULL_PROFILE keeps that one).
    lr_start: float = 1e-4
    lr_max: float = 2e-3
    lr_min: float = 0.0
    rampup_epochs: int = 2
    sustain_epochs: int = 3
    exp_decay: float = 0.85
    scale_lr: bool = True  # lr_max *= number of replicas.
    # Measured on the demo data (64x64, this profile, 12 epochs, best val mean AUC):
    # none 0.934, resample 0.942, weights 0.976.
    class_imbalance: str = "weights"
    augment: bool = True
    augment_placement: str = "auto"  # See resolve_augment_placement.
    # bf16 measured 1.45x fp32 for this profile's training steps (1.42x at 256x256) on this
    # CPU (avx512_bf16; benchmarks/bench_train.py); use "none" where bfloat16 is slow.
    mixed_precision: str = "bf16"
    xla: str = "auto"
    seed: int = 0
    early_stopping_patience: int = 5  # 0 disables early stopping.
    shuffle_buffer: int = 2048
    cache: bool = False
    data_service: str | None = None
    overwrite: bool = False
    verbose: int = 2

    def __post_init__(self):
        def fail(field: str, rule: str) -> None:
            raise ValueError(f"TrainConfig.{field} {rule}, got {getattr(self, field)!r}.")

        for field in ("records_dir", "run_dir"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                fail(field, "must be a non-empty path")
        if self.model not in models.MODEL_NAMES:
            fail("model", f"must be one of {models.MODEL_NAMES}")
        for field in ("depth", "base_filters", "batch_size", "epochs"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                fail(field, "must be an integer >= 1")
        if self.steps_per_epoch is not None and (
            not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1
        ):
            fail("steps_per_epoch", "must be None or an integer >= 1")
        if not 0 <= self.dropout < 1:
            fail("dropout", "must be in [0, 1)")
        for field in ("lr_start", "lr_max", "lr_min"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                fail(field, "must be a finite number >= 0")
        if self.lr_max <= 0:
            fail("lr_max", "must be > 0")
        if self.lr_min > self.lr_max:
            fail("lr_min", f"must be <= lr_max ({self.lr_max})")
        for field in ("rampup_epochs", "sustain_epochs", "early_stopping_patience"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 0:
                fail(field, "must be an integer >= 0")
        if not 0 < self.exp_decay <= 1:
            fail("exp_decay", "must be in (0, 1]")
        if self.class_imbalance not in CLASS_IMBALANCE_MODES:
            fail("class_imbalance", f"must be one of {CLASS_IMBALANCE_MODES}")
        if self.augment_placement not in AUGMENT_PLACEMENTS:
            fail("augment_placement", f"must be one of {AUGMENT_PLACEMENTS}")
        if self.mixed_precision not in MIXED_PRECISION_POLICIES:
            fail("mixed_precision", f"must be one of {tuple(MIXED_PRECISION_POLICIES)}")
        if self.xla not in XLA_MODES:
            fail("xla", f"must be one of {XLA_MODES}")
        if not isinstance(self.shuffle_buffer, int) or self.shuffle_buffer < 0:
            fail("shuffle_buffer", "must be an integer >= 0")
        if self.weights is not None and self.model == "resunet" and not self.weights.endswith(".weights.h5"):
            fail("weights", "must be a .weights.h5 file for the resunet")
        if self.model == "resunet":
            # Early, data-free half of the size check; the image size itself comes from the manifest.
            if 2**self.depth > 4096:
                fail("depth", "is too large (2**depth > 4096)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (resuming requires them equal)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NON_IDENTITY_FIELDS}


# `--profile=full`: the original work's ResUNet for the real ChestX-ray14 records at 256x256
# (widths 32-64-128-256, 2.0 M parameters; batch 16 per replica as there, 30 epochs).
FULL_PROFILE: dict[str, Any] = dict(
    depth=3, base_filters=32, batch_size=16, epochs=30, early_stopping_patience=5
)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` returns (on every worker; only the chief wrote files)."""

    run_dir: str
    image_size: int
    num_replicas: int
    is_chief: bool
    initial_epoch: int  # > 0 when the run resumed from its backup.
    epochs_run: int  # Epochs trained by this call.
    history: dict[str, list[float]]  # This call's Keras history (epoch logs).
    best_val_auc: float
    jit_compile: bool
    export_dir: str | None  # None on non-chief workers.
    weights_sha256: str  # Digest of the final weights; equal across workers in sync training.


# ---------------------------------------------------------------------------------------------
# Strategies.


def create_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Creates the tf.distribute strategy named by `--strategy`.

    Args:
      name: "auto" (MirroredStrategy over all local GPUs when there are several, else one
        device), "mirrored" (all local GPUs, else all logical CPUs), "one_device", or
        "multi_worker" (MultiWorkerMirroredStrategy configured from the TF_CONFIG variable).

    Returns:
      The strategy. Create it before any other TensorFlow op (multi-worker needs that).

    Raises:
      ValueError: unknown name, or multi_worker without a TF_CONFIG with a cluster.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "multi_worker":
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        if not tf_config.get("cluster") or not tf_config.get("task"):
            raise ValueError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable with 'cluster' and "
                f"'task', e.g. {{'cluster': {{'worker': ['host1:port', 'host2:port']}}, "
                f"'task': {{'type': 'worker', 'index': 0}}}}; got TF_CONFIG={os.environ.get('TF_CONFIG')!r}."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    # "mirrored": the GPUs, or every logical CPU device (tests split the CPU in two).
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, str]:
    """Returns (is_chief, task name) of this process under `strategy`.

    The chief is task "chief", or "worker" 0 when the cluster has no chief; single-machine
    strategies are always the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return is_chief, f"{task_type}-{task_id}"


# Augmentation placement, as measured by `python -m benchmarks.bench_input` (ResUNet 256x256,
# batch 8, the two placements alternating in one run; images/s of the training step), on this
# 2-core CPU: quiet machine 2026-11-25: dataset/model = 1.15 with XLA off (7.0 vs 6.1) and 1.00
# with XLA on; an earlier run under load: 1.12 and 1.02. With XLA off (what `--xla=auto` picks on
# CPU) the tf.data placement is faster there, so `auto` takes it on CPU; on GPU/TPU the batch
# work belongs on the accelerator, inside the compiled step (not measured here: no accelerator).
AUGMENT_PLACEMENT_BY_DEVICE = {"CPU": "dataset"}


def resolve_augment_placement(placement: str, device_type: str) -> str:
    """Turns `--augment_placement` into "model" or "dataset"; `auto` follows the measurement above."""
    if placement in ("model", "dataset"):
        return placement
    return AUGMENT_PLACEMENT_BY_DEVICE.get(device_type, "model")


def resolve_jit_compile(xla: str, device_type: str) -> bool:
    """Turns `--xla` into Keras' `jit_compile`; `auto` follows XLA_SPEEDUP_BY_DEVICE."""
    if xla in ("on", "off"):
        return xla == "on"
    measured = XLA_SPEEDUP_BY_DEVICE.get(device_type)
    if measured:
        return all(ratio is not None and ratio > 1 for ratio in measured.values())
    return device_type in ("GPU", "TPU")


# ---------------------------------------------------------------------------------------------
# Metrics, loss, callbacks.


def metric_label(label: str) -> str:
    """A label as it appears in metric names: spaces become underscores (No Finding -> No_Finding)."""
    return label.replace(" ", "_")


def _defined_labels(metric: keras.metrics.AUC) -> keras.KerasTensor:
    """1.0 for each label that has seen both positives and negatives, else 0.0.

    At any threshold TP + FN counts the positives and FP + TN the negatives.
    """
    positives = metric.true_positives[0] + metric.false_negatives[0]
    negatives = metric.false_positives[0] + metric.true_negatives[0]
    return keras.ops.cast(keras.ops.logical_and(positives > 0, negatives > 0), "float32")


@keras.saving.register_keras_serializable(package="cxr")
class MeanAUC(keras.metrics.AUC):
    """Mean ROC AUC over the labels (logged as `auc`), skipping labels without both classes.

    Keras' multi-label AUC counts a label with no positive in the data as AUC 0, which on a
    small validation split (the demo's, or a rare finding like Hernia) pulls the mean down for
    no reason; like sklearn-based reports, this averages only the labels where AUC is defined.
    """

    def __init__(self, num_labels: int = schema.NUM_LABELS, name: str = "auc", **kwargs):
        kwargs.update(multi_label=True, num_labels=num_labels)
        super().__init__(name=name, **kwargs)

    def result(self):
        saved = self.label_weights
        self.label_weights = _defined_labels(self)
        try:
            return super().result()
        finally:
            self.label_weights = saved

    def get_config(self):
        config = super().get_config()
        config.pop("multi_label", None)
        return config


@keras.saving.register_keras_serializable(package="cxr")
class ClassAUC(keras.metrics.AUC):
    """ROC AUC of one label of a multi-label output (logged as `auc_<Label>`; NaN while the
    label has not seen both a positive and a negative)."""

    def __init__(self, class_index: int, name: str | None = None, **kwargs):
        name = name or f"auc_{metric_label(schema.LABELS[class_index])}"
        super().__init__(name=name, **kwargs)
        self.class_index = class_index

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(
            y_true[:, self.class_index], y_pred[:, self.class_index], sample_weight=sample_weight
        )

    def result(self):
        defined = _defined_labels(self)
        return keras.ops.where(defined > 0, super().result(), float("nan"))

    def get_config(self):
        config = super().get_config()
        config["class_index"] = self.class_index
        return config


@keras.saving.register_keras_serializable(package="cxr")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy whose positive term of label c is multiplied by `pos_weights[c]`.

    With `pos_weights = negatives / positives` per label (`dataset.positive_weights`), rare
    findings weigh as much in the loss as common ones.
    """

    def __init__(self, pos_weights: Sequence[float], name: str = "weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weights = [float(w) for w in pos_weights]

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "float32")
        y_pred = keras.ops.clip(keras.ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
        weights = keras.ops.convert_to_tensor(self.pos_weights, dtype="float32")
        per_label = -(weights * y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred))
        return keras.ops.mean(per_label, axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weights": self.pos_weights}


class StopOnNaN(keras.callbacks.Callback):
    """Raises a clear error as soon as the training loss is NaN or infinite.

    Raising (rather than `stop_training`) keeps the backup of the last finished epoch, so the
    run can be inspected or resumed, and nothing is exported from broken weights.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            raise FloatingPointError(
                f"Training stopped: the loss became {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1} "
                f"(learning rate {lr:.3g}). Lower --lr_max, use --mixed_precision=none, or check the "
                f"records for bad labels; the last finished epoch is kept in the run's backup/."
            )


# ---------------------------------------------------------------------------------------------
# The run directory.


def prepare_run_dir(config: TrainConfig, *, is_chief: bool) -> bool:
    """Checks the run directory against `config`; returns True when the run resumes.

    A directory holding another run's config.json is refused unless `config.overwrite`, in
    which case that run's outputs are deleted first. Non-chief workers only read.

    Raises:
      ValueError: a different config without `overwrite` (the message lists the differences).
    """
    config_path = os.path.join(config.run_dir, CONFIG_FILE)
    if tf.io.gfile.exists(config_path):
        with tf.io.gfile.GFile(config_path) as f:
            previous = json.load(f).get("train_config", {})
        previous_identity = {k: v for k, v in previous.items() if k not in _NON_IDENTITY_FIELDS}
        if previous_identity != config.identity():
            if not config.overwrite:
                keys = sorted(set(previous_identity) | set(config.identity()))
                diff = [
                    f"{k}: {previous_identity.get(k)!r} -> {config.identity().get(k)!r}"
                    for k in keys
                    if previous_identity.get(k) != config.identity().get(k)
                ]
                raise ValueError(
                    f"run_dir {config.run_dir!r} holds a different run ({config_path} differs in "
                    f"{'; '.join(diff)}). Pass --overwrite to replace it, or choose another --run_dir."
                )
            if is_chief:
                for name in _RUN_OUTPUTS:
                    path = os.path.join(config.run_dir, name)
                    if tf.io.gfile.isdir(path):
                        tf.io.gfile.rmtree(path)
                    elif tf.io.gfile.exists(path):
                        tf.io.gfile.remove(path)
            return False
    return tf.io.gfile.exists(os.path.join(config.run_dir, BACKUP_DIR))


def _backup_epoch(backup_dir: str) -> int:
    """The next epoch recorded by BackupAndRestore in backup_dir (0 when there is none)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not tf.io.gfile.exists(path):
        return 0
    with tf.io.gfile.GFile(path) as f:
        return int(json.load(f).get("epoch", 0))


def _truncate_history(path: str, next_epoch: int) -> None:
    """Drops history rows of epochs >= next_epoch (written just before a kill, not backed up)."""
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) < next_epoch]
    if len(kept) != len(rows):
        with tf.io.gfile.GFile(path, "w") as f:
            csv.writer(f).writerows(kept)


def read_history(run_dir: str) -> dict[str, list[float]]:
    """Reads `history.csv` of a run into {column: [value per epoch]}."""
    path = os.path.join(run_dir, HISTORY_FILE)
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.DictReader(f))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}


def _use_local_batch_for_symbolic_build(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Works around Keras 3.15's first-batch build under MultiWorkerMirroredStrategy.

    Before training, Keras' TF trainer takes one batch and calls `strategy.reduce("MEAN", batch)`
    to get shapes for building the metrics and optimizer. Under MultiWorkerMirroredStrategy that
    reduce fails on an (images, labels) tuple ("Attempt to convert a value (PerReplica...)"),
    and would all-reduce uint8 pixels if it did not. Only shapes and dtypes matter there, so
    this instance-level override builds from this worker's first replica's batch instead.
    """
    from keras.src import tree  # Keras' own nest utilities, as the method it replaces uses.

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(it)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build


def _reduce_scalar_logs_across_workers() -> None:
    """Works around Keras 3.15 averaging per-step logs with `axis=0` under multi-worker.

    Keras' TF trainer reduces each step's outputs (scalar loss and metric values) with
    `strategy.reduce("MEAN", value, axis=0)` under MultiWorkerMirroredStrategy, which fails on
    scalars ("Invalid reduction dimension 0 for input with 0 dimensions"). This wraps its
    `reduce_per_replica` so scalars are averaged over all replicas with `axis=None` (the same
    value on every worker, so every worker's callbacks decide alike); everything else, and
    every other strategy, goes to the original. Installed once; a no-op where Keras works.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    original = keras_tf_trainer.reduce_per_replica
    if getattr(original, "_cxr_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or reduction not in (
            "auto",
            "mean",
        ):
            return original(values, strategy, reduction)

        def reduce(value):
            # With one device per worker, `strategy.run` returns plain tensors, not PerReplica.
            local = strategy.experimental_local_results(value)[0]
            if tf.is_tensor(local) and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    reduce_per_replica._cxr_patched = True
    keras_tf_trainer.reduce_per_replica = reduce_per_replica


def _tensorboard_installed() -> bool:
    # tf.summary needs the tensorboard package, which TF 2.21 no longer pulls in.
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        logging.warning(
            "tensorboard is not installed (pip install tensorboard); no TensorBoard logs written."
        )
        return False
    return True


def weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for value in model.get_weights():
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Training.


def distributed_dataset(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    split: str,
    *,
    training: bool,
    augment_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
) -> tf.distribute.DistributedDataset:
    """The input of `train`: `build_dataset` per input pipeline, distributed over the replicas.

    Training input goes through `config.data_service` when set; validation is read directly
    (it must be complete and is small).
    """

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return dataset_lib.build_dataset(
            config.records_dir,
            split,
            batch_size=config.batch_size,  # Global; build_dataset splits it per replica.
            training=training,
            seed=config.seed,
            shuffle_buffer=config.shuffle_buffer,
            cache=config.cache,
            balance="resample" if training and config.class_imbalance == "resample" else "none",
            input_context=input_context,
            data_service=config.data_service if training else None,
            augment_fn=augment_fn if training else None,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def train(
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    *,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Trains, checkpoints, exports; resumes from the run's backup when there is one.

    Args:
      config: the run.
      strategy: from `create_strategy`; the model is built and compiled in its scope.
      extra_callbacks: appended after the run's own callbacks (tests use this to interrupt).

    Returns:
      A `TrainResult`.

    Raises:
      ManifestError: the records dir has no (valid) manifest.
      ValueError: image size not divisible by 2**depth, batch size not divisible by the
        replicas, a run dir holding a different config, an empty train or val split.
      FloatingPointError: the loss became NaN or infinite.
    """
    # Every check that can fail runs before anything is built or written.
    manifest = manifest_lib.read_manifest(config.records_dir)
    image_size = manifest.image_size
    try:
        models.validate_architecture(
            config.model, image_size=image_size, depth=config.depth, base_filters=config.base_filters
        )
    except ValueError as error:
        raise ValueError(f"{error} (image_size comes from {config.records_dir}/manifest.json)") from None
    for split in ("train", "val"):
        if split not in manifest.splits or manifest.splits[split].records == 0:
            raise ValueError(
                f"records_dir {config.records_dir!r} has no {split!r} records; training needs both."
            )
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {replicas} replicas of the strategy; "
            f"use a multiple of {replicas}."
        )
    is_chief, task = worker_role(strategy)
    resuming = prepare_run_dir(config, is_chief=is_chief)

    device_type = strategy.extended.worker_devices[0].split("device:")[-1].split(":")[0].upper()
    jit_compile = resolve_jit_compile(config.xla, device_type)
    augment_placement = resolve_augment_placement(config.augment_placement, device_type)
    lr_max = config.lr_max * (replicas if config.scale_lr else 1)
    lr_fn = lr_schedule.build_lr_fn(
        lr_start=config.lr_start,
        lr_max=lr_max,
        lr_min=min(config.lr_min, lr_max),
        rampup_epochs=config.rampup_epochs,
        sustain_epochs=config.sustain_epochs,
        exp_decay=config.exp_decay,
    )
    steps_per_epoch = config.steps_per_epoch or max(1, manifest.splits["train"].records // config.batch_size)

    # Non-chief workers write nothing under run_dir except their own backup (each needs one to
    # resume); what they must save in lockstep with the chief (checkpoints) goes to a temp dir.
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    scratch = None if is_chief else tempfile.mkdtemp(prefix=f"cxr-{task}-")
    out_dir = config.run_dir if is_chief else scratch
    backup_dir = (
        os.path.join(config.run_dir, BACKUP_DIR, task)
        if multi_worker
        else os.path.join(config.run_dir, BACKUP_DIR)
    )
    if is_chief:
        tf.io.gfile.makedirs(os.path.join(config.run_dir, "checkpoints"))
        with tf.io.gfile.GFile(os.path.join(config.run_dir, CONFIG_FILE), "w") as f:
            json.dump(
                {
                    "train_config": config.to_dict(),
                    "image_size": image_size,
                    "records_dir": config.records_dir,
                    "model": config.model,
                    "num_replicas": replicas,
                    "strategy": type(strategy).__name__,
                    "jit_compile": jit_compile,
                    "augment_placement": augment_placement,
                    "lr_max_scaled": lr_max,
                    "steps_per_epoch": steps_per_epoch,
                    "labels": list(schema.LABELS),
                },
                f,
                indent=2,
            )
    history_path = os.path.join(config.run_dir, HISTORY_FILE)
    if is_chief:
        if resuming:
            _truncate_history(history_path, _backup_epoch(backup_dir))
        elif tf.io.gfile.exists(history_path):
            tf.io.gfile.remove(history_path)

    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_PRECISION_POLICIES[config.mixed_precision])
    try:
        augment_config = augment_lib.AugmentConfig() if config.augment else None
        with strategy.scope():
            model = models.build_model(
                config.model,
                image_size=image_size,
                depth=config.depth,
                base_filters=config.base_filters,
                dropout=config.dropout,
                augment=augment_config if augment_placement == "model" else None,
                weights=config.weights,
                pool_bottleneck=config.pool_bottleneck,
            )
            if config.class_imbalance == "weights":
                loss = WeightedBinaryCrossentropy(dataset_lib.positive_weights(manifest, split="train"))
            else:
                loss = keras.losses.BinaryCrossentropy()
            model.compile(
                optimizer=keras.optimizers.Adam(learning_rate=lr_fn(0)),
                loss=loss,
                metrics=[
                    keras.metrics.BinaryAccuracy(name="binary_accuracy"),
                    MeanAUC(name="auc"),
                    *[ClassAUC(i) for i in range(schema.NUM_LABELS)],
                ],
                jit_compile=jit_compile,
            )

        augment_fn = None
        if augment_config is not None and augment_placement == "dataset":
            # The model still rescales and standardizes; standardizing a standardized image changes
            # nothing, so one exported model serves both placements.
            augment_fn = augment_lib.make_augment_fn(augment_config)

        if multi_worker:
            _use_local_batch_for_symbolic_build(model, strategy)
            _reduce_scalar_logs_across_workers()
        train_data = distributed_dataset(config, strategy, "train", training=True, augment_fn=augment_fn)
        val_data = distributed_dataset(config, strategy, "val", training=False)

        callbacks: list[keras.callbacks.Callback] = [
            lr_schedule.LearningRateSchedule(lr_fn),
            StopOnNaN(),
        ]
        if is_chief:
            # After the LR callback (which adds `lr` to the logs), before the backup: a kill
            # between the two leaves a row that `_truncate_history` drops on resume.
            callbacks.append(keras.callbacks.CSVLogger(history_path, append=True))
        callbacks += [
            keras.callbacks.BackupAndRestore(backup_dir),
            keras.callbacks.ModelCheckpoint(
                os.path.join(out_dir, BEST_CHECKPOINT), monitor="val_auc", mode="max", save_best_only=True
            ),
        ]
        if is_chief and _tensorboard_installed():
            callbacks.append(
                keras.callbacks.TensorBoard(
                    os.path.join(config.run_dir, TENSORBOARD_DIR), write_graph=False, profile_batch=0
                )
            )
        if config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor="val_auc",
                    mode="max",
                    patience=config.early_stopping_patience,
                    restore_best_weights=True,
                )
            )
        callbacks += list(extra_callbacks)

        initial_epoch = _backup_epoch(backup_dir)
        with warnings.catch_warnings():
            # Validation has no fixed step count (each worker's share of the val files
            # differs); Keras warns when it first runs to the end, which is the intent here.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            fit = model.fit(
                train_data,
                validation_data=val_data,
                epochs=config.epochs,
                steps_per_epoch=steps_per_epoch,
                callbacks=callbacks,
                verbose=config.verbose,
                shuffle=False,  # build_dataset shuffles; Keras cannot shuffle a tf.data pipeline.
            )
        history = {k: [float(v) for v in values] for k, values in fit.history.items()}
        shared_backup = os.path.join(config.run_dir, BACKUP_DIR)
        if (
            multi_worker
            and is_chief
            and tf.io.gfile.isdir(shared_backup)
            and not tf.io.gfile.listdir(shared_backup)
        ):
            # Each worker deleted its own backup/<task>/ on success; drop the empty parent.
            tf.io.gfile.rmtree(shared_backup)
        if is_chief and tf.io.gfile.exists(history_path):
            val_aucs = read_history(config.run_dir).get("val_auc", [])
        else:
            val_aucs = history.get("val_auc", [])
        digest = weights_digest(model)
        export_dir = os.path.join(out_dir, EXPORT_DIR)
        export_lib.export_model(model, export_dir, image_size=image_size)
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if scratch is not None:
            tf.io.gfile.rmtree(scratch)
    return TrainResult(
        run_dir=config.run_dir,
        image_size=image_size,
        num_replicas=replicas,
        is_chief=is_chief,
        initial_epoch=initial_epoch,
        epochs_run=len(history.get("loss", [])),
        history=history,
        best_val_auc=max(val_aucs) if val_aucs else float("nan"),
        jit_compile=jit_compile,
        export_dir=export_dir if is_chief else None,
        weights_sha256=digest,
    )
