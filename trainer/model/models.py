"""Classifiers: the ResUNet of the 2023 thesis and the keras.applications baselines.

Every model built here has the same outer shape (see `build_model`):

    images [B, H, W, 1] in 0..255 (uint8 or float)
      -> float32 / 255 -> RandomAffine (training only, optional) -> Standardize (per image)
      -> backbone (resunet | resnet50 | vgg16 | densenet121)
      -> Dense(15, sigmoid, float32) named "probabilities"

so preprocessing travels with the weights into checkpoints and exports.
"""

from __future__ import annotations

import keras
import numpy as np

from tfrecords import schema
from trainer.model import augment as augment_lib

MODEL_NAMES = ("resunet", "resnet50", "vgg16", "densenet121")
# Layer names other modules look up (Grad-CAM in trainer.model.gradcam): the ResUNet's last
# decoder features, its bottleneck block's output ("<block>_out" of `residual_block`), the
# bottleneck's pooling (present when the head pools it) and the head.
DECODER_OUTPUT = "decoder_output"
BOTTLENECK = "bottleneck"
BOTTLENECK_OUTPUT = f"{BOTTLENECK}_out"
BOTTLENECK_POOL = "bottleneck_pool"
PROBABILITIES = "probabilities"
# The keras.applications backbones refuse inputs smaller than 32x32.
_MIN_APPLICATION_SIZE = 32
_APPLICATIONS = {
    "resnet50": keras.applications.ResNet50,
    "vgg16": keras.applications.VGG16,
    "densenet121": keras.applications.DenseNet121,
}


def validate_architecture(name: str, *, image_size: int, depth: int = 4, base_filters: int = 16) -> None:
    """Checks a model name and size before anything is built (or any data read).

    Raises:
      ValueError: unknown name, non-positive sizes, an image size the ResUNet's depth cannot
        divide, or an image too small for a keras.applications backbone.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES}, got {name!r}.")
    if int(image_size) != image_size or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
    if name == "resunet":
        if int(depth) != depth or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}.")
        if int(base_filters) != base_filters or base_filters < 1:
            raise ValueError(f"base_filters must be an integer >= 1, got {base_filters!r}.")
        if image_size % 2**depth:
            raise ValueError(
                f"image_size {image_size} is not a multiple of 2**depth = {2**depth} (depth={depth}); "
                f"the ResUNet halves the image {depth} times. Use an image size divisible by {2**depth} "
                f"or a smaller depth."
            )
    elif image_size < _MIN_APPLICATION_SIZE:
        raise ValueError(f"model {name!r} needs image_size >= {_MIN_APPLICATION_SIZE}, got {image_size}.")


def residual_block(x: keras.KerasTensor, filters: int, *, name: str) -> keras.KerasTensor:
    """Two 3x3 conv + batch norm + ReLU with an identity (or 1x1 projection) shortcut.

    Batch norm is synchronized across replicas: statistics of the global batch (per-replica
    batches are small), and moving averages that stay identical on every worker, so
    multi-worker training ends with one set of weights. Without a strategy it is plain BN.
    """
    shortcut = x
    if x.shape[-1] != filters:
        # A 1x1 projection only where the channel count changes; identity otherwise.
        shortcut = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_proj")(x)
        shortcut = keras.layers.BatchNormalization(synchronized=True, name=f"{name}_proj_bn")(shortcut)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(synchronized=True, name=f"{name}_bn1")(y)
    y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(synchronized=True, name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def resunet_features(
    x: keras.KerasTensor, *, depth: int, base_filters: int, pool_bottleneck: bool = True
) -> keras.KerasTensor:
    """The ResUNet encoder-decoder, globally pooled to a feature vector.

    Encoder level i (0..depth-1) has `base_filters * 2**i` channels and is followed by a 2x2
    max-pool; the bottleneck has `base_filters * 2**depth`; decoder level i upsamples with a
    2x2 stride-2 transposed convolution, concatenates encoder level i (the long skip) and
    applies a residual block. The last decoder block's output is the layer `DECODER_OUTPUT`.

    Returns:
      [B, F] pooled features: decoder output (and bottleneck when `pool_bottleneck`).
    """
    skips = []
    for level in range(depth):
        x = residual_block(x, base_filters * 2**level, name=f"encoder{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"encoder{level}_down")(x)
    bottleneck = residual_block(x, base_filters * 2**depth, name=BOTTLENECK)
    x = bottleneck
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"decoder{level}_up")(x)
        x = keras.layers.Concatenate(name=f"decoder{level}_concat")([x, skips[level]])
        x = residual_block(x, filters, name=f"decoder{level}")
    # A named identity, so Grad-CAM finds the decoder's last feature map by name.
    x = keras.layers.Identity(name=DECODER_OUTPUT)(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="decoder_pool")(x)
    if pool_bottleneck:
        # The bottleneck carries the widest context; pooling it too costs nothing measurable.
        bottleneck_pooled = keras.layers.GlobalAveragePooling2D(name=BOTTLENECK_POOL)(bottleneck)
        pooled = keras.layers.Concatenate(name="pooled_features")([pooled, bottleneck_pooled])
    return pooled


def build_model(
    name: str,
    *,
    image_size: int,
    depth: int = 4,
    base_filters: int = 16,
    dropout: float = 0.3,
    augment: augment_lib.AugmentConfig | None = None,
    weights: str | None = None,
    pool_bottleneck: bool = True,
    num_labels: int = schema.NUM_LABELS,
) -> keras.Model:
    """Builds a classifier from 0..255 grayscale images to `num_labels` sigmoid probabilities.

    Call under `strategy.scope()` and after setting the mixed-precision policy; the
    preprocessing layers stay float32 and the head outputs float32 under any policy.

    Args:
      name: one of `MODEL_NAMES`.
      image_size: square input size; a multiple of 2**depth for the ResUNet.
      depth: ResUNet downsampling steps.
      base_filters: ResUNet width of the first level (doubling per level).
      dropout: dropout rate before the head.
      augment: `AugmentConfig` for the in-model `RandomAffine` (active only when training);
        None omits the layer (no augmentation, or augmentation in tf.data).
      weights: None for random weights, or a local file. ResUNet: a `.weights.h5` of the
        whole model. Baselines: a keras.applications `include_top=False` weights file for
        3-channel input (e.g. the ImageNet "notop" .h5 downloaded beforehand); the first
        convolution's kernel is summed over RGB to take one channel. Nothing downloads.
      pool_bottleneck: ResUNet head also pools the bottleneck.
      num_labels: outputs of the head, the length of the records' label vocabulary (NIH's 15).

    Returns:
      An uncompiled `keras.Model` named after `name`.

    Raises:
      ValueError: see `validate_architecture`; a weights file that does not exist.
    """
    _check_build_arguments(name, image_size, depth, base_filters, dropout, weights)
    inputs = keras.Input(shape=(image_size, image_size, 1), name="images")
    # Preprocessing in float32 whatever the global policy: pixel statistics in bf16 lose digits.
    x = keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="rescale")(inputs)
    if augment is not None:
        x = augment_lib.RandomAffine(augment, dtype="float32", name="augment")(x)
    x = augment_lib.Standardize(dtype="float32", name="standardize")(x)
    features = _features(name, x, image_size, depth, base_filters, pool_bottleneck, weights)
    features = keras.layers.Dropout(dropout, name="dropout")(features)
    outputs = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name=PROBABILITIES)(
        features
    )
    model = keras.Model(inputs, outputs, name=name)
    if name == "resunet" and weights is not None:
        model.load_weights(weights)
    return model


def _check_build_arguments(
    name: str, image_size: int, depth: int, base_filters: int, dropout: float, weights: str | None
) -> None:
    """`build_model`'s checks, before any layer is made."""
    validate_architecture(name, image_size=image_size, depth=depth, base_filters=base_filters)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    if weights is not None and not _exists(weights):
        raise ValueError(f"weights file {weights!r} does not exist; give a local file or None.")


def _features(
    name: str,
    x: keras.KerasTensor,
    image_size: int,
    depth: int,
    base_filters: int,
    pool_bottleneck: bool,
    weights: str | None,
) -> keras.KerasTensor:
    """The pooled feature vector of the standardized images `x`: ResUNet or a keras.applications backbone."""
    if name == "resunet":
        return resunet_features(x, depth=depth, base_filters=base_filters, pool_bottleneck=pool_bottleneck)
    return _application_backbone(name, image_size=image_size, weights=weights)(x)


def _application_backbone(name: str, *, image_size: int, weights: str | None) -> keras.Model:
    """A keras.applications backbone on one channel, globally average-pooled."""
    application = _APPLICATIONS[name]
    backbone = application(
        include_top=False,
        weights=None,
        input_shape=(image_size, image_size, 1),
        pooling="avg",
        name=f"{name}_backbone",
    )
    if weights is not None:
        # Load the 3-channel file into a 3-channel twin, then copy layer by layer; the first
        # convolution sees gray = R = G = B, so its kernel summed over RGB gives the same output.
        rgb = application(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg"
        )
        first_conv_done = False
        for gray_layer, rgb_layer in zip(backbone.layers, rgb.layers):
            values = rgb_layer.get_weights()
            if not values:
                continue
            if not first_conv_done and isinstance(rgb_layer, keras.layers.Conv2D):
                values[0] = np.sum(values[0], axis=2, keepdims=True)
                first_conv_done = True
            gray_layer.set_weights(values)
    return backbone


def _exists(path: str) -> bool:
    import tensorflow as tf  # Lazy: keeps `import trainer.model.models` light for Keras-only users.

    return tf.io.gfile.exists(path)


def custom_objects() -> dict[str, type]:
    """The custom layers of the models built here, by registered name, for loading a model."""
    return {
        keras.saving.get_registered_name(cls): cls
        for cls in (augment_lib.RandomAffine, augment_lib.Standardize)
    }


def load_model(path: str) -> keras.Model:
    """Loads a `.keras` model built by `build_model` (e.g. a run's checkpoints/best.keras), uncompiled.

    Raises:
      ValueError: the file does not exist, naming it.
    """
    if not _exists(path):
        raise ValueError(f"Keras model {path!r} does not exist.")
    return keras.models.load_model(path, compile=False, custom_objects=custom_objects())
