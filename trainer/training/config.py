"""The training run's configuration (`TrainConfig`) and its complete, named profiles.

A profile is one whole configuration: every field of `TrainConfig` is set in it on purpose,
and nothing is inherited from another profile. The binary starts from the profile named by
`--profile` and lets explicit flags override single fields:

    from trainer.training import config as config_lib
    config = config_lib.get_profile("full", records_dir="data/tfrecords-256", epochs=2)

Profiles:

  demo  the small ResUNet measured on the synthetic demo records at 64x64 (2 CPU cores).
  full  the 2023 thesis recipe: its ResUNet (widths 32-64-128-256), Adam, plain binary
        cross-entropy, its learning-rate function (Table 1: 2e-6 ramping to 1e-4 at epoch
        index 8, then x0.8 per epoch), its ImageDataGenerator augmentation, batch 16 per
        replica, 30 epochs.

Where `full` departs from the 2023 thesis, on purpose (every other field is the thesis'):

  - Per-image standardization is part of the model (its `Standardize` layer), not of the input
    generator: same arithmetic, and the exported model standardizes by itself.
  - `checkpoints/best.keras` keeps the epoch with the best validation mean AUC, and `export/`
    holds that epoch's weights (`export_weights="best"`; early stopping is off: every one of
    the 30 epochs runs).
  - `scale_lr` is off: with one replica nothing changes; with more, the global batch grows
    (16 per replica) at the thesis' learning rates unless `--scale_lr` is given.
  - `augment_placement` and `xla` choose where and how the same augmentation and training
    step run (`auto`: measured per device, see `trainer/training/task.py`); they change speed, not
    the recipe.
  - `mixed_precision` is `auto`: bf16 (or fp16 with loss scaling) where the device trains
    faster in it (the table in `trainer/training/device.py`), float32 elsewhere, as the thesis trained.

Which weights a run hands over (`export_weights`), one rule for both profiles: the best epoch
is the one with the highest validation mean AUC (`val_auc`), the first to reach it winning a
tie. `checkpoints/best.keras` always holds it, also across a resume (the selection continues
from the best epoch recorded in `history.csv`). `best` (the default) exports those weights, so
`export/` and `best.keras` hold the same ones; `final` exports the last epoch's weights. Early
stopping only stops training, it never puts the best weights back into the model, so `final`
is the last epoch trained even when early stopping ended the run.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable
from typing import Any

from cxr_cli import config_flags, errors
from trainer.model import augment as augment_lib
from trainer.model import models
from trainer.training import schedule as lr_schedule

PROFILE_NAMES = ("demo", "full")
CLASS_IMBALANCE_MODES = ("none", "weights", "resample")
# What a label the source wrote as uncertain (CheXpert's -1.0) becomes in training, after the
# CheXpert paper's policies (Irvin et al., AAAI 2019): U-Ignore (left out of the loss and the
# AUCs), U-Ones (positive), U-Zeros (negative). Labels not mentioned stay unknown in every policy.
UNCERTAINTY_POLICIES = ("ignore", "ones", "zeros")
AUGMENT_PLACEMENTS = ("auto", "model", "dataset")
# Flag value -> Keras dtype policy; "auto" resolves per device (trainer/training/device.py).
MIXED_PRECISION_POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
MIXED_PRECISIONS = ("auto", *MIXED_PRECISION_POLICIES)
XLA_MODES = ("auto", "on", "off")
EXPORT_WEIGHTS = ("best", "final")
# Fields that do not change what a run computes; a resumed run may differ in them.
NON_IDENTITY_FIELDS = ("overwrite", "verbose")


_field = config_flags.field


# TrainConfig holds one `augment_<name>` field per `AugmentConfig` field (`--augment_zoom`,
# ...), made from it by `_with_augment_fields`: the same type and default, the help text of its
# docstring's Attributes, and these allowed values.
AUGMENT_PREFIX = "augment_"
AUGMENT_CHOICES = {"fill_mode": augment_lib.FILL_MODES, "interpolation": augment_lib.INTERPOLATIONS}


def _attribute_docs(cls: type) -> dict[str, str]:
    """{name: text} of the `Attributes:` section of a class's Google-style docstring."""
    docs: dict[str, str] = {}
    name = None
    for line in inspect.getdoc(cls).split("Attributes:", 1)[1].splitlines()[1:]:
        entry = re.match(r"  (\w+): (.*)", line)
        if entry:
            name, docs[entry[1]] = entry[1], entry[2]
        elif name and line.startswith("    "):
            docs[name] += " " + line.strip()
        else:
            break
    return docs


def _with_augment_fields(cls: type) -> type:
    """Adds the `augment_<name>` fields to `cls` (before `dataclass` sees it), after `augment_placement`."""
    docs = _attribute_docs(augment_lib.AugmentConfig)
    added = {}
    for field in dataclasses.fields(augment_lib.AugmentConfig):
        help_text = docs[field.name][:1].upper() + docs[field.name][1:]
        added[AUGMENT_PREFIX + field.name] = field.type
        setattr(
            cls,
            AUGMENT_PREFIX + field.name,
            _field(field.default, help_text, AUGMENT_CHOICES.get(field.name)),
        )
    annotations = {}
    for name, annotation in cls.__annotations__.items():
        annotations[name] = annotation
        if name == "augment_placement":
            annotations.update(added)
    cls.__annotations__ = annotations
    return cls


@dataclasses.dataclass(frozen=True)
@_with_augment_fields
class TrainConfig:
    """Everything that defines a training run; validated once on construction.

    The defaults are the `demo` profile's values (so every flag works on the demo data);
    `PROFILES` holds each profile as a complete set of fields. The `augment_<name>` fields,
    one per `AugmentConfig` field, are added from it (`_with_augment_fields`).
    """

    profile: str = _field(
        "demo",
        "The complete configuration to start from (demo: the measured demo run; full: the 2023 "
        "thesis recipe); flags given explicitly override single fields.",
        PROFILE_NAMES,
    )
    records_dir: str = _field("data/tfrecords", "Records directory with manifest.json.")
    run_dir: str = _field("runs/demo", "Run directory runs/<name>.")
    model: str = _field("resunet", "Architecture.", models.MODEL_NAMES)
    depth: int = _field(3, "ResUNet downsampling steps (image size % 2**depth == 0).")
    base_filters: int = _field(8, "ResUNet first-level width (doubling per level).")
    dropout: float = _field(0.3, "Dropout before the classification head.")
    pool_bottleneck: bool = _field(True, "ResUNet head also pools the bottleneck.")
    weights: str | None = _field(None, "Local initial weights file (see trainer.model.models.build_model).")
    batch_size_per_replica: int = _field(
        32, "Images per replica per step; the global batch is this times the replicas."
    )
    epochs: int = _field(12, "Epochs.")
    steps_per_epoch: int | None = _field(None, "Steps per epoch; default one pass over the train split.")
    lr_start: float = _field(1e-4, "Learning rate at epoch 0.")
    lr_max: float = _field(1e-3, "Learning rate at the end of the ramp (times the replicas with scale_lr).")
    lr_min: float = _field(0.0, "Asymptote of the exponential decay.")
    rampup_epochs: int = _field(2, "Epochs of the linear ramp from lr_start to lr_max.")
    sustain_epochs: int = _field(3, "Epochs held at lr_max after the ramp.")
    exp_decay: float = _field(0.85, "Per-epoch decay factor after the sustain.")
    scale_lr: bool = _field(True, "Multiply lr_max by the number of replicas.")
    class_imbalance: str = _field(
        "weights",
        "none (plain binary cross-entropy), weights (positive-weighted loss) or resample (tf.data).",
        CLASS_IMBALANCE_MODES,
    )
    uncertain: str = _field(
        "ignore",
        "Labels the source wrote as uncertain: ignore (left out of the loss and AUCs), ones "
        "(positive) or zeros (negative), the CheXpert paper's policies.",
        UNCERTAINTY_POLICIES,
    )
    augment: bool = _field(True, "Random affine augmentation while training.")
    augment_placement: str = _field(
        "auto",
        "model: inside the training step; dataset: in tf.data after batching; auto: measured per device.",
        AUGMENT_PLACEMENTS,
    )
    mixed_precision: str = _field(
        "auto",
        "auto: bf16 where the device computes it natively, fp16 on GPUs of compute capability 7.x, "
        "else none (float32); or none, bf16, fp16.",
        MIXED_PRECISIONS,
    )
    steps_per_execution: int = _field(
        6,
        "Training steps per compiled call (fewer Python round trips); lowered to the largest "
        "divisor of steps_per_epoch so epochs stay whole.",
    )
    validation_batch_size_per_replica: int | None = _field(
        None, "Validation images per replica per step; default: the training batch."
    )
    xla: str = _field("auto", "auto: on where benchmarks/bench_train measured it faster.", XLA_MODES)
    seed: int = _field(0, "Seed of weights, shuffling and augmentation.")
    export_weights: str = _field(
        "best",
        "Weights exported to export/: best (the epoch with the best validation mean AUC, as "
        "checkpoints/best.keras) or final (the last epoch's).",
        EXPORT_WEIGHTS,
    )
    early_stopping_patience: int = _field(5, "Epochs without validation AUC gain before stopping; 0: off.")
    shuffle_buffer: int = _field(2048, "Records in the shuffle buffer.")
    cache: bool = _field(False, "Cache the records in memory after the first epoch.")
    data_service: str | None = _field(None, "tf.data service dispatcher, e.g. grpc://host:5050.")
    overwrite: bool = _field(False, "Replace a run dir that holds a different run.")
    # Flag --epoch_lines: absl's --verbosity is another thing.
    verbose: int = _field(2, "2: one line per epoch on the console; 0 or 1: none.", flag="epoch_lines")

    def __post_init__(self) -> None:
        _validate_paths_and_model(self)
        _validate_schedule(self)
        _validate_choices(self)
        self.augment_config()  # AugmentConfig validates its own ranges.

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (resuming requires them equal)."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_IDENTITY_FIELDS}

    def lr_max_scaled(self, replicas: int = 1) -> float:
        """lr_max, times the number of replicas when `scale_lr`."""
        return self.lr_max * (replicas if self.scale_lr else 1)

    def lr_fn(self, replicas: int = 1) -> Callable[[int], float]:
        """The learning rate of each 0-based epoch index on `replicas` replicas."""
        lr_max = self.lr_max_scaled(replicas)
        return lr_schedule.build_lr_fn(
            lr_start=self.lr_start,
            lr_max=lr_max,
            lr_min=min(self.lr_min, lr_max),
            rampup_epochs=self.rampup_epochs,
            sustain_epochs=self.sustain_epochs,
            exp_decay=self.exp_decay,
        )

    def augment_config(self) -> augment_lib.AugmentConfig | None:
        """The augmentation as an `AugmentConfig`, or None when `augment` is off.

        Raises:
          ValueError: an augmentation range out of bounds (named by its TrainConfig field).
        """
        values = {
            field.name: getattr(self, AUGMENT_PREFIX + field.name)
            for field in dataclasses.fields(augment_lib.AugmentConfig)
        }
        try:
            config = augment_lib.AugmentConfig(**values)
        except ValueError as error:
            raise errors.ValidationError(
                f"TrainConfig: {str(error).replace('AugmentConfig.', AUGMENT_PREFIX)}"
            ) from None
        return config if self.augment else None


def _fail(config: TrainConfig, field: str, rule: str) -> None:
    raise errors.ValidationError(f"TrainConfig.{field} {rule}, got {getattr(config, field)!r}.")


def _validate_paths_and_model(config: TrainConfig) -> None:
    if config.profile not in PROFILE_NAMES:
        _fail(config, "profile", f"must be one of {PROFILE_NAMES}")
    for field in ("records_dir", "run_dir"):
        if not isinstance(getattr(config, field), str) or not getattr(config, field):
            _fail(config, field, "must be a non-empty path")
    if config.model not in models.MODEL_NAMES:
        _fail(config, "model", f"must be one of {models.MODEL_NAMES}")
    for field in ("depth", "base_filters", "batch_size_per_replica", "epochs"):
        value = getattr(config, field)
        if not isinstance(value, int) or value < 1:
            _fail(config, field, "must be an integer >= 1")
    if config.steps_per_epoch is not None and (
        not isinstance(config.steps_per_epoch, int) or config.steps_per_epoch < 1
    ):
        _fail(config, "steps_per_epoch", "must be None or an integer >= 1")
    if not 0 <= config.dropout < 1:
        _fail(config, "dropout", "must be in [0, 1)")
    if (
        config.weights is not None
        and config.model == "resunet"
        and not config.weights.endswith(".weights.h5")
    ):
        _fail(config, "weights", "must be a .weights.h5 file for the resunet")
    # The data-free half of the size check; the image size itself comes from the manifest.
    if config.model == "resunet" and 2**config.depth > 4096:
        _fail(config, "depth", "is too large (2**depth > 4096)")


def _validate_schedule(config: TrainConfig) -> None:
    for field in ("lr_start", "lr_max", "lr_min"):
        value = getattr(config, field)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            _fail(config, field, "must be a finite number >= 0")
    if config.lr_max <= 0:
        _fail(config, "lr_max", "must be > 0")
    if config.lr_min > config.lr_max:
        _fail(config, "lr_min", f"must be <= lr_max ({config.lr_max})")
    for field in ("rampup_epochs", "sustain_epochs", "early_stopping_patience"):
        value = getattr(config, field)
        if not isinstance(value, int) or value < 0:
            _fail(config, field, "must be an integer >= 0")
    if not 0 < config.exp_decay <= 1:
        _fail(config, "exp_decay", "must be in (0, 1]")


def _validate_choices(config: TrainConfig) -> None:
    if config.class_imbalance not in CLASS_IMBALANCE_MODES:
        _fail(config, "class_imbalance", f"must be one of {CLASS_IMBALANCE_MODES}")
    if config.uncertain not in UNCERTAINTY_POLICIES:
        _fail(config, "uncertain", f"must be one of {UNCERTAINTY_POLICIES}")
    if config.augment_placement not in AUGMENT_PLACEMENTS:
        _fail(config, "augment_placement", f"must be one of {AUGMENT_PLACEMENTS}")
    if config.mixed_precision not in MIXED_PRECISIONS:
        _fail(config, "mixed_precision", f"must be one of {MIXED_PRECISIONS}")
    if not isinstance(config.steps_per_execution, int) or config.steps_per_execution < 1:
        _fail(config, "steps_per_execution", "must be an integer >= 1")
    if config.validation_batch_size_per_replica is not None and (
        not isinstance(config.validation_batch_size_per_replica, int)
        or config.validation_batch_size_per_replica < 1
    ):
        _fail(config, "validation_batch_size_per_replica", "must be None or an integer >= 1")
    if config.xla not in XLA_MODES:
        _fail(config, "xla", f"must be one of {XLA_MODES}")
    if config.export_weights not in EXPORT_WEIGHTS:
        _fail(config, "export_weights", f"must be one of {EXPORT_WEIGHTS}")
    if not isinstance(config.shuffle_buffer, int) or config.shuffle_buffer < 1:
        _fail(config, "shuffle_buffer", "must be an integer >= 1")
    if not isinstance(config.verbose, int) or config.verbose not in (0, 1, 2):
        _fail(config, "verbose", "must be 0, 1 or 2")


# ---------------------------------------------------------------------------------------------
# Profiles: each lists every field of TrainConfig (tests/config_test.py checks that).

# The demo profile, measured on the synthetic demo records at 64x64 on 2 CPU cores (`make
# train`, whose validation mean AUC is in runs/demo/history.csv): a short ramp to a high rate, as 12 epochs leave no room for
# an 8-epoch ramp from 2e-6; the positive-weighted loss, which gave the best validation mean AUC
# of the three class-imbalance modes; mixed precision per device (`auto`: float32 on a CPU with
# avx512_bf16 but no AMX, where bf16 trained slower; the table it follows is in trainer/training/device.py).
DEMO: dict[str, Any] = dict(
    profile="demo",
    records_dir="data/tfrecords",
    run_dir="runs/demo",
    model="resunet",
    depth=3,
    base_filters=8,
    dropout=0.3,
    pool_bottleneck=True,
    weights=None,
    batch_size_per_replica=32,
    epochs=12,
    steps_per_epoch=None,
    lr_start=1e-4,
    # 1e-3, chosen on real NIH images, not on the synthetic set: `python -m trainer.train
    # --profile=demo --lr_max=...` on records of real NIH PNGs at 64x64 (`build_tfrecords
    # --split=patient`), then `python -m trainer.evaluate`; measured: the highest validation loss
    # of an epoch over the first epoch's, and the test AUCs of the findings with 20 or more
    # positives. At 2e-3 the validation loss more than doubled while the training loss fell; at
    # 1e-3 it stayed below that bound (two seeds) with test AUCs no lower, and the demo records'
    # best validation mean AUC (`make train`) stays above 0.95. Plain cross-entropy
    # (`class_imbalance="none"`) was as stable on the real images but fell below 0.95 on the demo.
    lr_max=1e-3,
    lr_min=0.0,
    rampup_epochs=2,
    sustain_epochs=3,
    exp_decay=0.85,
    scale_lr=True,
    class_imbalance="weights",
    uncertain="ignore",
    augment=True,
    augment_placement="auto",
    augment_rotation_degrees=3.0,
    augment_width_shift=0.1,
    augment_height_shift=0.05,
    augment_zoom=0.15,
    augment_horizontal_flip=True,
    augment_vertical_flip=False,
    augment_fill_mode="reflect",
    augment_interpolation="bilinear",
    mixed_precision="auto",
    # Six steps per call (divides the demo's 42 training and 6 validation steps): the loop's own
    # cost per step fell with it, measured by `make profile-train` (python -m
    # benchmarks.profile_train -> runs/bench/train-attribution.json, variant "after_spe6").
    steps_per_execution=6,
    validation_batch_size_per_replica=None,
    xla="auto",
    seed=0,
    export_weights="best",
    early_stopping_patience=5,
    shuffle_buffer=2048,
    cache=False,
    data_service=None,
    overwrite=False,
    verbose=2,
)

# The 2023 thesis recipe at the records' image size (see the module docstring for where and
# why it departs).
FULL: dict[str, Any] = dict(
    profile="full",
    records_dir="data/tfrecords",
    run_dir="runs/full",
    model="resunet",
    depth=3,  # Widths 32-64-128-256: three levels from base 32, bottleneck 256.
    base_filters=32,
    dropout=0.3,
    pool_bottleneck=True,
    weights=None,
    batch_size_per_replica=16,
    epochs=30,
    steps_per_epoch=None,
    # Table 1 of the 2023 thesis: 2e-6, 1.425e-5, 2.65e-5, ..., 1e-4 at epoch index 8, then
    # 8e-5, 6.4e-5, ...
    lr_start=2e-6,
    lr_max=1e-4,
    lr_min=0.0,
    rampup_epochs=8,
    sustain_epochs=0,
    exp_decay=0.8,
    scale_lr=False,
    class_imbalance="none",
    uncertain="ignore",
    augment=True,
    augment_placement="auto",
    # ImageDataGenerator(rotation_range=3, width_shift_range=0.1, height_shift_range=0.05,
    # zoom_range=0.15, horizontal_flip=True, fill_mode="reflect").
    augment_rotation_degrees=3.0,
    augment_width_shift=0.1,
    augment_height_shift=0.05,
    augment_zoom=0.15,
    augment_horizontal_flip=True,
    augment_vertical_flip=False,
    augment_fill_mode="reflect",
    augment_interpolation="bilinear",
    mixed_precision="auto",
    steps_per_execution=1,
    validation_batch_size_per_replica=None,
    xla="auto",
    seed=0,
    export_weights="best",
    early_stopping_patience=0,
    shuffle_buffer=2048,
    cache=False,
    data_service=None,
    overwrite=False,
    verbose=2,
)

PROFILES: dict[str, dict[str, Any]] = {"demo": DEMO, "full": FULL}


def get_profile(name: str, **overrides: Any) -> TrainConfig:
    """Builds the named profile, with `overrides` replacing single fields.

    Args:
      name: a key of `PROFILES`.
      **overrides: TrainConfig fields to change.

    Returns:
      The validated `TrainConfig`.

    Raises:
      ValueError: an unknown profile or field, or an invalid value (named).
    """
    if name not in PROFILES:
        raise errors.ValidationError(f"profile must be one of {tuple(PROFILES)}, got {name!r}.")
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise errors.ValidationError(f"TrainConfig has no field(s) {unknown}.")
    return TrainConfig(**{**PROFILES[name], **overrides})
