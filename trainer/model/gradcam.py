"""Grad-CAM heatmaps on the ResUNet's pooled feature maps.

Grad-CAM (Selvaraju et al. 2017): for a finding c with logit y_c and a feature map A [h, w, C],
the channel weights are the spatial means of dy_c/dA, and the map is ReLU(sum_k w_k A_k),
upsampled to the image and scaled to [0, 1]. The logit is the head's pre-sigmoid value, so
a confident (saturated) probability still gives a usable gradient. Grad-CAM++ and HiResCAM
are available as `method`s of the same class.

The ResUNet's head pools the last decoder features ("decoder_output") and, by default, the
bottleneck ("bottleneck_out") too; the logit is the sum of both layers' contributions. Each
layer's map is therefore weighted by the spatial *sum* of its gradients (for a pooled linear
head: the head's weights, so that the map's mean over the image is the layer's contribution
to the logit), brought to the image, and the layers' maps are added before the ReLU. With one
layer this is plain Grad-CAM; with both it is the class activation map of the whole head
(Zhou et al. 2016), not of the 8 decoder channels alone.

How a layer's map reaches the image (`smooth`, on by default): the decoder's full-resolution
features carry the period-2 pattern of its stride-2 transposed convolutions, which summed into
the map shows as a checkerboard. Each layer's map is therefore first area-averaged onto the
coarsest layer's grid (the bottleneck's), and the sum is upsampled bilinearly from there.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from tfrecords import schema
from trainer.model.models import BOTTLENECK_OUTPUT, BOTTLENECK_POOL, DECODER_OUTPUT, PROBABILITIES


def feature_layers(model: keras.Model) -> tuple[str, ...]:
    """The feature maps the model's head pools: "decoder_output", plus the bottleneck when pooled."""
    names = {layer.name for layer in model.layers}
    return (DECODER_OUTPUT, BOTTLENECK_OUTPUT) if BOTTLENECK_POOL in names else (DECODER_OUTPUT,)


METHODS = ("gradcam", "gradcam++", "hirescam")


class GradCam:
    """Computes class activation maps of a Keras classifier at one or more named feature layers.

    Args:
      model: a functional model from 0..255 pixels [B, N, N, 1] to 15 probabilities, with
        the layers `layer_names` and a final Dense layer named `head_name`.
      layer_names: the feature layers whose maps are added; default `feature_layers(model)`.
      method: how a layer's gradients weigh its features (`METHODS`): "gradcam", one weight
        per channel, the spatial sum of its gradients; "gradcam++" (Chattopadhay et al. 2018),
        positive gradients weighted per position; "hirescam" (Draelos and Carin 2020), the
        gradient times the feature at each position, summed over channels.
      smooth: area-average every layer's map to the coarsest layer's grid before the bilinear
        upsampling. The decoder's full-resolution map carries the period-2 pattern of its
        stride-2 transposed convolutions; averaged onto the bottleneck's grid it adds its share
        of the logit without the checkerboard. False: each layer upsampled from its own size.
      head_name: the Dense(15, sigmoid) head.

    Raises:
      ValueError: a missing layer, named with the layers that exist, or an unknown method.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        layer_names: Sequence[str] | None = None,
        method: str = "gradcam",
        smooth: bool = True,
        head_name: str = PROBABILITIES,
    ):
        if method not in METHODS:
            raise ValueError(f"Grad-CAM method must be one of {METHODS}, got {method!r}.")
        names = [layer.name for layer in model.layers]
        self.layer_names = tuple(layer_names) if layer_names is not None else feature_layers(model)
        for name in (*self.layer_names, head_name):
            if name not in names:
                raise ValueError(
                    f"Grad-CAM needs a layer named {name!r} in model {model.name!r}; it has {names[-8:]} (last 8). "
                    f"Grad-CAM works on the ResUNet (--model=resunet)."
                )
        self.model = model
        self.method = method
        self.smooth = smooth
        self.head_name = head_name
        self.image_size = int(model.input_shape[1])
        head = model.get_layer(head_name)
        # The head's input gives the logits: x @ kernel + bias, before the sigmoid.
        outputs = [model.get_layer(name).output for name in self.layer_names]
        self._features_model = keras.Model(model.inputs, [outputs, head.input])
        self._kernel = head.kernel
        self._bias = head.bias

    def randomized(self, seed: int = 0) -> GradCam:
        """The same maps of the same architecture with freshly initialized weights.

        The model-randomization test's reference (Adebayo et al. 2018): `keras.models.clone_model`
        builds new layers, which draw their weights from their initializers (seeded by `seed`).
        """
        keras.utils.set_random_seed(seed)
        clone = keras.models.clone_model(self.model)
        return GradCam(
            clone,
            layer_names=self.layer_names,
            method=self.method,
            smooth=self.smooth,
            head_name=self.head_name,
        )

    def maps(
        self, pixels: np.ndarray, class_indices: Sequence[int], *, output_size: tuple[int, int]
    ) -> np.ndarray:
        """Grad-CAM maps of one image for several findings.

        Args:
          pixels: [N, N, 1] (or [N, N]) values in 0..255 at the model's size.
          class_indices: label indices (into `schema.LABELS`) to explain.
          output_size: (height, width) of the maps, usually the original image's.

        Returns:
          float32 [len(class_indices), height, width] in [0, 1]; all zeros for a finding with
          no positive evidence anywhere.
        """
        pixels = np.asarray(pixels, np.float32).reshape(1, self.image_size, self.image_size, 1)
        # One copy of the image per finding: one backward pass gives every finding's gradient.
        batch = np.repeat(pixels, len(class_indices), axis=0)
        return self.batch_maps(batch, class_indices, output_size=output_size)

    def batch_maps(
        self, pixels: np.ndarray, class_indices: Sequence[int], *, output_size: tuple[int, int]
    ) -> np.ndarray:
        """Grad-CAM maps of several images, image i explained for finding `class_indices[i]`.

        Args:
          pixels: [B, N, N, 1] values in 0..255 at the model's size.
          class_indices: B label indices (into `schema.LABELS`).
          output_size: (height, width) of the maps.

        Returns:
          float32 [B, height, width], each map scaled to [0, 1] by its own maximum; all zeros
          for a map with no positive evidence anywhere.

        Raises:
          ValueError: a pixel batch that is not [B, N, N, 1] for B class indices.
        """
        count = len(class_indices)
        pixels = np.asarray(pixels, np.float32)
        if pixels.shape != (count, self.image_size, self.image_size, 1):
            raise ValueError(
                f"pixels must be [{count}, {self.image_size}, {self.image_size}, 1] for {count} class "
                f"indices, got {pixels.shape}."
            )
        if count == 0:
            return np.zeros((0, *output_size), np.float32)
        features, grads = self._features_and_gradients(pixels, class_indices)
        layer_maps = [_layer_map(a, g, self.method) for a, g in zip(features, grads)]
        grid = min(int(m.shape[1]) for m in layer_maps) if self.smooth else None
        cams = tf.zeros([count, *output_size, 1], tf.float32)
        for layer_map in layer_maps:
            if grid is not None and layer_map.shape[1] > grid:
                layer_map = tf.image.resize(layer_map, (grid, grid), method="area")
            cams += tf.image.resize(layer_map, output_size, method="bilinear")
        cams = tf.nn.relu(cams)[..., 0].numpy()
        peak = cams.reshape(count, -1).max(axis=1).reshape(-1, 1, 1)
        return np.where(peak > 0, cams / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)

    def _features_and_gradients(
        self, pixels: np.ndarray, class_indices: Sequence[int]
    ) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
        """Each layer's features and the gradients of image i's logit of `class_indices[i]`, float32."""
        batch = tf.constant(pixels)
        indices = tf.constant(list(class_indices), tf.int32)
        with tf.GradientTape() as tape:
            # Watching the input records every op downstream of it, the features-to-head path
            # included, whether or not the weights are trainable.
            tape.watch(batch)
            features, head_input = self._features_model(batch, training=False)
            logits = tf.matmul(tf.cast(head_input, tf.float32), tf.cast(self._kernel, tf.float32))
            logits += tf.cast(self._bias, tf.float32)
            # Image i explains finding class_indices[i]: the diagonal of logits[:, class_indices].
            # The images are independent (inference mode), so one gradient serves them all.
            target = tf.reduce_sum(tf.linalg.diag_part(tf.gather(logits, indices, axis=1)))
        grads = tape.gradient(target, features)
        return [tf.cast(f, tf.float32) for f in features], [tf.cast(g, tf.float32) for g in grads]


def _layer_map(features: tf.Tensor, grads: tf.Tensor, method: str) -> tf.Tensor:
    """One layer's map [B, h, w, 1] before the ReLU, on the scale of its share of the logit.

    The channel weights are spatial sums, not means, of the gradients (and HiResCAM's product
    is multiplied by the positions), so that layers of different sizes add up in proportion to
    their contributions to the logit (see the module docstring).
    """
    if method == "hirescam":
        positions = tf.cast(tf.shape(features)[1] * tf.shape(features)[2], tf.float32)
        return tf.reduce_sum(grads * features, axis=-1, keepdims=True) * positions
    if method == "gradcam++":
        # The closed form of Chattopadhay et al. for an exponential of the logit.
        squared = tf.square(grads)
        denominator = 2.0 * squared + tf.reduce_sum(features, axis=(1, 2), keepdims=True) * squared * grads
        alpha = tf.math.divide_no_nan(squared, denominator)
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2), keepdims=True)
    else:
        weights = tf.reduce_sum(grads, axis=(1, 2), keepdims=True)
    return tf.reduce_sum(weights * features, axis=-1, keepdims=True)


def missing_layers(model: keras.Model, *, head_name: str = PROBABILITIES) -> list[str]:
    """The layers Grad-CAM needs that `model` lacks (empty when it supports Grad-CAM)."""
    names = {layer.name for layer in model.layers}
    return [name for name in (*feature_layers(model), head_name) if name not in names]


def draw_boxes(
    rgb: np.ndarray,
    boxes: Sequence[tuple[float, float, float, float]],
    *,
    color=(255, 255, 255),
    width: int = 1,
) -> np.ndarray:
    """Draws box outlines (x, y, w, h in the image's pixels) on a uint8 RGB image; returns a copy."""
    image = Image.fromarray(np.asarray(rgb, np.uint8), mode="RGB")
    draw = ImageDraw.Draw(image)
    for x, y, w, h in boxes:
        # PIL's rectangle includes its end pixel; the box's right and bottom edges are exclusive.
        draw.rectangle([x, y, max(x, x + w - 1), max(y, y + h - 1)], outline=tuple(color), width=width)
    return np.asarray(image)


def overlay(gray: np.ndarray, cam: np.ndarray, *, caption: str = "", alpha: float = 0.45) -> np.ndarray:
    """Blends a [0, 1] map (jet colours) over a uint8 gray image, with an optional caption.

    The blend weight grows with the map, so the X-ray stays visible where the map is low.

    Returns:
      uint8 RGB [H, W, 3] of the image's size.
    """
    gray = np.asarray(gray, np.float32)
    if gray.shape != cam.shape:
        raise ValueError(f"image {gray.shape} and map {cam.shape} differ in size.")
    heat = matplotlib.colormaps["jet"](cam)[..., :3] * 255.0
    weight = alpha * cam[..., None]
    rgb = (1.0 - weight) * gray[..., None] + weight * heat
    image = Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), mode="RGB")
    if caption:
        draw = ImageDraw.Draw(image)
        # About 1/28 of the height, shrunk until the caption fits the width; none below 6 px.
        size = max(10, image.height // 28)
        while size >= 6:
            font = ImageFont.load_default(size=size)
            box = draw.textbbox((0, 0), caption, font=font)
            if box[2] + size <= image.width:
                margin = size // 3
                draw.rectangle([0, 0, box[2] + 2 * margin, box[3] + 2 * margin], fill=(0, 0, 0))
                draw.text((margin, margin), caption, fill=(255, 255, 255), font=font)
                break
            size -= 1
    return np.asarray(image)


def display_gray(image_bytes: bytes) -> np.ndarray:
    """Decodes an encoded image of any mode to uint8 gray at its own size, as the export does.

    8- and 16-bit, gray, gray+alpha, RGB(A) and palette PNGs; ITU-R 601 gray weights.

    Raises:
      tf.errors.InvalidArgumentError: not a decodable image.
    """
    image = tf.io.decode_image(image_bytes, channels=0, dtype=tf.uint16, expand_animations=False)
    image = tf.cast(image, tf.float32) / 65535.0
    image = tf.image.rgb_to_grayscale(image[..., :3]) if image.shape[-1] >= 3 else image[..., :1]
    return np.clip(np.round(image[..., 0].numpy() * 255.0), 0, 255).astype(np.uint8)


def png_encode(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def top_findings(
    probabilities: np.ndarray,
    k: int,
    *,
    labels: Sequence[str] = schema.LABELS,
    skip: Sequence[str] = (schema.NO_FINDING,),
) -> list[int]:
    """Indices (into `labels`) of the k most probable labels but those in `skip`.

    Args:
      probabilities: [L], one per label.
      k: how many.
      labels: the model's labels, in output order (NIH's 15 by default).
      skip: labels with nothing to localize: the data set's "no finding" label.

    Raises:
      ValueError: `probabilities` is not one per label.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.shape != (len(labels),):
        raise ValueError(f"probabilities must be [{len(labels)}] (one per label), got {probabilities.shape}.")
    candidates = np.array([i for i, label in enumerate(labels) if label not in set(skip)], np.int64)
    order = np.argsort(-probabilities[candidates], kind="stable")[:k]
    return [int(i) for i in candidates[order]]
