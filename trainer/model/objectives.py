"""What training optimizes and reports: the loss and the AUC metrics.

`WeightedBinaryCrossentropy` is the `class_imbalance="weights"` loss, `MaskedBinaryCrossentropy`
the plain one; `MeanAUC` (logged as `auc`) and the per-label AUCs (`auc_<Label>`) are the epoch
metrics the checkpoint and early stopping follow. Training compiles the per-label AUCs as
`SharedClassAUC`, which read the `MeanAUC`'s per-label counts; `ClassAUC` is the same value as a
metric of its own. Each class is registered with Keras where it is defined (package "cxr"), so
`checkpoints/best.keras` loads with `custom_objects()` or after importing this module.

Unknown labels: a label the records do not know for an image (uncertain or not mentioned, see
`trainer.training.inputs`) arrives in `y_true` as `UNKNOWN_LABEL` (-1). The losses, the AUCs and
the binary accuracy leave such entries out. An image whose labels are all known gets exactly the
value it got before unknown labels existed (the same operations, selected with `where`), so
records without unknown labels (every NIH record) train as they always did.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import keras

from tfrecords import schema

# The `y_true` value of a label that is not known for an image; every objective here ignores it.
UNKNOWN_LABEL = -1.0


def known_labels(y_true) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """(y_true with unknown entries set to 0, float32 1.0 where known else 0.0)."""
    y_true = keras.ops.cast(y_true, "float32")
    known = keras.ops.greater_equal(y_true, 0.0)
    return keras.ops.where(known, y_true, 0.0), keras.ops.cast(known, "float32")


def masked_label_mean(per_label, known) -> keras.KerasTensor:
    """Per image, the mean of `per_label` [B, L] over its known labels (0 when none is known).

    An image with every label known takes the plain mean over its labels, the very operation
    the loss used before labels could be unknown, so its value is unchanged to the last bit.
    """
    all_known = keras.ops.all(keras.ops.greater(known, 0.0), axis=-1)
    count = keras.ops.sum(known, axis=-1)
    masked = keras.ops.sum(per_label * known, axis=-1) / keras.ops.maximum(count, 1.0)
    return keras.ops.where(all_known, keras.ops.mean(per_label, axis=-1), masked)


def _known_weight(y_true, sample_weight):
    """(y_true with unknowns at 0, the sample weight [B, L] that leaves unknown entries out)."""
    y_true, known = known_labels(y_true)
    if sample_weight is not None:
        sample_weight = keras.ops.cast(sample_weight, "float32")
        if len(sample_weight.shape) == 1:  # One weight per image.
            sample_weight = keras.ops.expand_dims(sample_weight, -1)
        known = known * sample_weight
    return y_true, known


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

    def update_state(self, y_true, y_pred, sample_weight=None):
        # Unknown labels weigh 0; known ones 1, which counts exactly as no weight does.
        y_true, weight = _known_weight(y_true, sample_weight)
        return super().update_state(y_true, y_pred, sample_weight=weight)

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
        y_true, weight = _known_weight(y_true, sample_weight)
        return super().update_state(
            y_true[:, self.class_index],
            y_pred[:, self.class_index],
            sample_weight=weight[:, self.class_index],
        )

    def result(self):
        defined = _defined_labels(self)
        return keras.ops.where(defined > 0, super().result(), float("nan"))

    def get_config(self):
        config = super().get_config()
        config["class_index"] = self.class_index
        return config


@keras.saving.register_keras_serializable(package="cxr")
class SharedClassAUC(keras.metrics.Metric):
    """ROC AUC of one label, read from a `MeanAUC`'s per-label counts (logged as `auc_<Label>`).

    Gives the value a `ClassAUC` of the same label would (same thresholds, same
    interpolation), but updates nothing itself: the `MeanAUC` it reads already counts every
    label at every threshold in one vectorized update, so the per-label AUCs cost only their
    result. NaN while the label has not seen both a positive and a negative. The source is held
    by a weak reference, so its variables are not tracked (or saved) twice; a metric restored
    from a saved config has no source and is only a placeholder (models load with
    `compile=False`).
    """

    def __init__(self, class_index: int, source: MeanAUC | None = None, name: str | None = None, **kwargs):
        super().__init__(name=name or f"auc_{metric_label(schema.LABELS[class_index])}", **kwargs)
        self.class_index = class_index
        self._source = weakref.ref(source) if source is not None else None

    def update_state(self, y_true, y_pred, sample_weight=None):
        del y_true, y_pred, sample_weight  # The source counted them.

    def reset_state(self):
        pass  # The source is reset with the other compiled metrics.

    def result(self):
        source = self._source() if self._source is not None else None
        if source is None:
            raise ValueError(
                f"{self.name}: no source MeanAUC (this metric only reads one; build it with source=)."
            )
        one_hot = [1.0 if i == self.class_index else 0.0 for i in range(source.num_labels)]
        saved = source.label_weights
        source.label_weights = keras.ops.convert_to_tensor(one_hot, dtype="float32")
        try:
            value = keras.metrics.AUC.result(source)  # The label-weighted mean of one label.
        finally:
            source.label_weights = saved
        defined = _defined_labels(source)[self.class_index]
        return keras.ops.where(defined > 0, value, float("nan"))

    def get_config(self):
        return {**super().get_config(), "class_index": self.class_index}


@keras.saving.register_keras_serializable(package="cxr")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy whose positive term of label c is multiplied by `pos_weights[c]`.

    With `pos_weights = negatives / positives` per label (`trainer.training.inputs.positive_weights`), rare
    findings weigh as much in the loss as common ones.
    """

    def __init__(self, pos_weights: Sequence[float], name: str = "weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weights = [float(w) for w in pos_weights]

    def call(self, y_true, y_pred):
        y_true, known = known_labels(y_true)
        y_pred = keras.ops.clip(keras.ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
        weights = keras.ops.convert_to_tensor(self.pos_weights, dtype="float32")
        per_label = -(weights * y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred))
        return masked_label_mean(per_label, known)

    def get_config(self):
        return {**super().get_config(), "pos_weights": self.pos_weights}


@keras.saving.register_keras_serializable(package="cxr")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Keras' binary cross-entropy, averaged per image over its known labels only.

    Where every label of an image is known, the value is `keras.losses.BinaryCrossentropy`'s
    (the same elementwise `keras.ops.binary_crossentropy` and mean).
    """

    def __init__(self, name: str = "binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true, known = known_labels(y_true)
        per_label = keras.ops.binary_crossentropy(y_true, keras.ops.cast(y_pred, "float32"))
        return masked_label_mean(per_label, known)


@keras.saving.register_keras_serializable(package="cxr")
class MaskedBinaryAccuracy(keras.metrics.BinaryAccuracy):
    """Binary accuracy over the known labels (logged as `binary_accuracy`).

    Unknown entries weigh 0; known ones weigh 1, which Keras counts exactly as no weight.
    """

    def __init__(self, name: str = "binary_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, weight = _known_weight(y_true, sample_weight)
        return super().update_state(y_true, y_pred, sample_weight=weight)


def custom_objects() -> dict[str, Any]:
    """The classes of this module by registered name, for `keras.models.load_model`."""
    return {
        keras.saving.get_registered_name(cls): cls
        for cls in (
            MeanAUC,
            ClassAUC,
            SharedClassAUC,
            WeightedBinaryCrossentropy,
            MaskedBinaryCrossentropy,
            MaskedBinaryAccuracy,
        )
    }
