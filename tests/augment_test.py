"""Tests for trainer/model/augment.py: the XLA warp against TF's kernel, sampling, standardization, layers."""

import math
import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from trainer.model import augment

# Parameter rows in augment.PARAMETER_NAMES order:
# rotation (rad), zoom_x, zoom_y, shift_x, shift_y, flip_horizontal, flip_vertical.
_IDENTITY = (0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0)


def _params(**changes: float) -> tuple[float, ...]:
    values = dict(zip(augment.PARAMETER_NAMES, _IDENTITY))
    values.update(changes)
    return tuple(values[name] for name in augment.PARAMETER_NAMES)


def _kernel(images: tf.Tensor, transforms: tf.Tensor, fill_mode: str, interpolation: str) -> tf.Tensor:
    """TF's own (non-XLA) kernel, the reference."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        fill_mode=fill_mode.upper(),
        interpolation=interpolation.upper(),
    )


def _images(batch: int = 3, height: int = 24, width: int = 40, *, seed: int = 0) -> tf.Tensor:
    # Non-square, so a swapped x/y would show.
    return tf.constant(np.random.default_rng(seed).random((batch, height, width, 1)), tf.float32)


class TransformTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("rotation_3deg", _params(rotation=math.radians(3))),
        ("rotation_minus_3deg", _params(rotation=math.radians(-3))),
        ("rotation_40deg_reflects", _params(rotation=math.radians(40))),
        ("shift_width_10pct", _params(shift_x=0.1)),
        ("shift_height_minus_5pct", _params(shift_y=-0.05)),
        ("shift_far_reflects_twice", _params(shift_x=1.7, shift_y=-2.3)),
        ("zoom_in_085", _params(zoom_x=0.85, zoom_y=0.85)),
        ("zoom_out_115", _params(zoom_x=1.15, zoom_y=1.15)),
        ("zoom_independent", _params(zoom_x=0.87, zoom_y=1.13)),
        ("flip_horizontal", _params(flip_horizontal=1.0)),
        ("flip_vertical", _params(flip_vertical=1.0)),
        (
            "combined",
            _params(
                rotation=math.radians(-2.5),
                zoom_x=1.12,
                zoom_y=0.9,
                shift_x=-0.08,
                shift_y=0.04,
                flip_horizontal=1,
            ),
        ),
    )
    def test_matches_image_projective_transform_v3(self, params):
        images = _images()
        transforms = augment.affine_transforms(tf.constant([params] * 3, tf.float32), 24, 40)
        for fill_mode in augment.FILL_MODES:
            for interpolation in augment.INTERPOLATIONS:
                ours = augment.transform_images(
                    images, transforms, fill_mode=fill_mode, interpolation=interpolation
                )
                expected = _kernel(images, transforms, fill_mode, interpolation)
                self.assertLessEqual(
                    float(tf.reduce_max(tf.abs(ours - expected))), 1e-3, msg=f"{fill_mode}/{interpolation}"
                )

    def test_matches_kernel_on_random_batch_transforms_under_xla(self):
        images = _images(batch=8, height=32, width=32, seed=1)
        parameters = augment.sample_parameters(8, tf.constant([3, 4], tf.int64), augment.AugmentConfig())
        transforms = augment.affine_transforms(parameters, 32, 32)
        compiled = tf.function(augment.transform_images, jit_compile=True)
        self.assertAllClose(
            compiled(images, transforms), _kernel(images, transforms, "reflect", "bilinear"), atol=1e-3
        )

    def test_matrices_mean_what_they_say(self):
        images = _images(batch=1, height=16, width=16)
        warp = lambda **p: augment.transform_images(  # noqa: E731
            images, augment.affine_transforms(tf.constant([_params(**p)]), 16, 16)
        )
        self.assertAllClose(warp(), images)
        self.assertAllClose(warp(flip_horizontal=1.0), tf.reverse(images, axis=[2]))
        self.assertAllClose(warp(flip_vertical=1.0), tf.reverse(images, axis=[1]))
        # A quarter turn about the centre is np.rot90 (counter-clockwise as displayed).
        self.assertAllClose(warp(rotation=math.pi / 2), np.rot90(images.numpy(), k=1, axes=(1, 2)), atol=1e-5)
        # Shifting by 4 of 16 columns moves the content right by 4 pixels.
        self.assertAllClose(warp(shift_x=0.25)[:, :, 4:], images[:, :, :-4])
        self.assertAllClose(warp(shift_y=-0.25)[:, :-4], images[:, 4:])
        # Zoom 0.5 about the centre of a 16-pixel axis samples input x = 3.75 + 0.5 x.
        zoomed = warp(zoom_x=0.5)
        expected_col0 = 0.25 * images[:, :, 3] + 0.75 * images[:, :, 4]
        self.assertAllClose(zoomed[:, :, 0], expected_col0, atol=1e-6)

    def test_reflect_fill_mirrors_the_border(self):
        # Shift right by 3 columns: the 3 new columns mirror the first ones ([cba|abc...]).
        images = _images(batch=1, height=4, width=12)
        shifted = augment.transform_images(
            images, augment.affine_transforms(tf.constant([_params(shift_x=0.25)]), 4, 12)
        )
        self.assertAllClose(shifted[:, :, :3], tf.reverse(images[:, :, :3], axis=[2]))

    def test_rejects_unknown_modes(self):
        with self.assertRaisesRegex(ValueError, "fill_mode must be one of"):
            augment.transform_images(_images(), tf.zeros([3, 8]), fill_mode="wrap")
        with self.assertRaisesRegex(ValueError, "interpolation must be one of"):
            augment.transform_images(_images(), tf.zeros([3, 8]), interpolation="bicubic")


class AugmentBatchTest(tf.test.TestCase, parameterized.TestCase):
    def test_compiles_under_xla_and_matches_the_kernel(self):
        images = _images(batch=4, height=32, width=32)
        seed = tf.constant([7, 11], tf.int64)
        config = augment.AugmentConfig()
        compiled = tf.function(lambda x, s: augment.augment_batch(x, s, config), jit_compile=True)
        # The HLO exists only if XLA could compile every op (ImageProjectiveTransformV3 cannot).
        self.assertIn("gather", compiled.experimental_get_compiler_ir(images, seed)(stage="hlo"))
        # The compiled draw of the same seed (XLA's random stream), warped by TF's kernel.
        transforms = tf.function(lambda s: augment.random_transforms(4, 32, 32, s, config), jit_compile=True)(
            seed
        )
        self.assertAllClose(
            compiled(images, seed), _kernel(images, transforms, "reflect", "bilinear"), atol=1e-3
        )
        self.assertAllEqual(compiled(images, seed), compiled(images, seed))

    def test_same_seed_same_output_other_seed_other_output(self):
        images = _images(batch=4, height=32, width=32)
        first = augment.augment_batch(images, tf.constant([1, 2]))
        self.assertAllEqual(first, augment.augment_batch(images, tf.constant([1, 2])))
        self.assertNotAllClose(first, augment.augment_batch(images, tf.constant([1, 3])))
        self.assertEqual(first.shape, images.shape)
        self.assertEqual(first.dtype, tf.float32)

    def test_uint8_input(self):
        images = tf.cast(_images() * 255, tf.uint8)
        warped = augment.augment_batch(images, tf.constant([0, 0]))
        self.assertEqual(warped.dtype, tf.float32)
        self.assertBetween(float(tf.reduce_max(warped)), 200.0, 255.0)

    def test_sampled_parameters_stay_in_range_and_cover_it(self):
        config = augment.AugmentConfig()
        parameters = augment.sample_parameters(20000, tf.constant([5, 6], tf.int64), config).numpy()
        rotation = math.radians(config.rotation_degrees)
        ranges = {
            "rotation": (-rotation, rotation),
            "zoom_x": (1 - config.zoom, 1 + config.zoom),
            "zoom_y": (1 - config.zoom, 1 + config.zoom),
            "shift_x": (-config.width_shift, config.width_shift),
            "shift_y": (-config.height_shift, config.height_shift),
        }
        for column, name in enumerate(augment.PARAMETER_NAMES[:5]):
            low, high = ranges[name]
            values = parameters[:, column]
            self.assertGreaterEqual(values.min(), low, msg=name)
            self.assertLessEqual(values.max(), high, msg=name)
            # Covered: both ends reached within 1% of the width, and uniform (mean mid-range).
            self.assertLess(values.min() - low, 0.01 * (high - low), msg=name)
            self.assertLess(high - values.max(), 0.01 * (high - low), msg=name)
            self.assertAllClose(values.mean(), (low + high) / 2, atol=0.02 * (high - low), msg=name)
        self.assertAllClose(parameters[:, 5].mean(), 0.5, atol=0.02)  # horizontal flip on
        self.assertSetEqual(set(parameters[:, 5].tolist()), {0.0, 1.0})
        self.assertAllEqual(parameters[:, 6], np.zeros(20000))  # vertical flip off by default
        flipped = augment.sample_parameters(
            2000, tf.constant([5, 6]), augment.AugmentConfig(vertical_flip=True, horizontal_flip=False)
        ).numpy()
        self.assertAllClose(flipped[:, 6].mean(), 0.5, atol=0.05)
        self.assertAllEqual(flipped[:, 5], np.zeros(2000))

    def test_config_validation(self):
        for changes, pattern in [
            ({"rotation_degrees": -1.0}, "rotation_degrees must be in"),
            ({"width_shift": 1.0}, "width_shift must be in"),
            ({"zoom": -0.1}, "zoom must be in"),
            ({"fill_mode": "constant"}, "fill_mode must be one of"),
            ({"interpolation": "cubic"}, "interpolation must be one of"),
        ]:
            with self.assertRaisesRegex(ValueError, pattern):
                augment.AugmentConfig(**changes)
        with self.assertRaisesRegex(ValueError, "no field"):
            augment.AugmentConfig.from_dict({"rotation": 3})


class StandardizeTest(tf.test.TestCase):
    def test_mean_zero_std_one_per_image(self):
        rng = np.random.default_rng(0)
        images = np.stack(
            [rng.random((16, 16, 1)) * scale + offset for scale, offset in [(1, 0), (0.1, 0.5), (200, 30)]]
        )
        out = augment.standardize(tf.constant(images, tf.float32)).numpy()
        self.assertAllClose(out.mean(axis=(1, 2, 3)), np.zeros(3), atol=1e-5)
        self.assertAllClose(out.std(axis=(1, 2, 3)), np.ones(3), atol=1e-4)

    def test_constant_image_maps_to_zeros(self):
        images = tf.stack([tf.fill([8, 8, 1], value) for value in (0.0, 0.7, 255.0)])
        out = augment.standardize(images)
        self.assertTrue(np.isfinite(out.numpy()).all())
        self.assertAllClose(out, tf.zeros_like(out), atol=1e-3)


class InDatasetMapTest(tf.test.TestCase):
    """Each op eagerly and inside Dataset.map gives the same result."""

    def test_ops_inside_dataset_map(self):
        images = _images(batch=2, height=16, width=16)
        seed = tf.constant([1, 2], tf.int64)
        transforms = augment.affine_transforms(tf.constant([_params(rotation=0.1, shift_x=0.1)] * 2), 16, 16)
        dataset = tf.data.Dataset.from_tensors((images, seed, transforms))
        ops = {
            "augment_batch": (lambda x, s, t: augment.augment_batch(x, s)),
            "standardize": (lambda x, s, t: augment.standardize(x)),
            "transform_images": (lambda x, s, t: augment.transform_images(x, t)),
            "make_augment_fn": (
                lambda x, s, t: augment.make_augment_fn(jit_compile=False)(tf.cast(x * 255, tf.uint8), s)
            ),
        }
        for name, op in ops.items():
            mapped = next(iter(dataset.map(op)))
            self.assertAllClose(mapped, op(images, seed, transforms), atol=1e-5, msg=name)

    def test_make_augment_fn_warps_on_the_pixel_scale(self):
        images = tf.cast(_images(batch=2, height=16, width=16) * 255, tf.uint8)
        seed = tf.constant([0, 1], tf.int64)
        out = augment.make_augment_fn(jit_compile=False)(images, seed)
        # The warp of the 0..255 pixels, not standardized: the model's input contract.
        expected = augment.augment_batch(tf.cast(images, tf.float32), seed)
        self.assertAllClose(out, expected, atol=1e-3)
        self.assertAllInRange(out, 0.0, 255.0)
        compiled = augment.make_augment_fn()(images, seed)
        self.assertEqual(compiled.dtype, tf.float32)
        self.assertAllInRange(compiled, 0.0, 255.0)
        # Same image statistics as the input, up to the warp: still pixels, not z-scores.
        self.assertAllClose(
            tf.reduce_mean(compiled, axis=[1, 2, 3]),
            tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3]),
            rtol=0.2,
        )


class LayersTest(tf.test.TestCase):
    def _model(self, config=None):
        inputs = keras.Input([16, 16, 1])
        x = augment.RandomAffine(config, seed=3, name="augment")(inputs)
        x = augment.Standardize(name="standardize")(x)
        outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(x))
        return keras.Model(inputs, outputs)

    def test_random_affine_only_when_training(self):
        layer = augment.RandomAffine(seed=1)
        images = _images(batch=2, height=16, width=16)
        self.assertAllEqual(layer(images), images)
        self.assertAllEqual(layer(images, training=False), images)
        first = layer(images, training=True)
        self.assertNotAllClose(first, images)
        # A fresh seed per call.
        self.assertNotAllClose(first, layer(images, training=True))

    def test_trains_in_a_jit_compiled_step_and_round_trips(self):
        model = self._model(augment.AugmentConfig(rotation_degrees=5.0, vertical_flip=True))
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        images = _images(batch=4, height=16, width=16).numpy()
        model.fit(images, np.zeros([4, 1]), epochs=1, batch_size=4, verbose=0)
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual(loaded.get_layer("augment").config, model.get_layer("augment").config)
        self.assertEqual(loaded.get_layer("augment").config.rotation_degrees, 5.0)
        # Inference never augments: the loaded model predicts like the trained one.
        self.assertAllClose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)

    def test_augments_in_a_step_compiled_without_xla(self):
        # The layer compiles its own warp with XLA inside a plain (non-XLA) train step.
        model = self._model()
        model.compile(optimizer="sgd", loss="mse", jit_compile=False)
        history = model.fit(_images(batch=4, height=16, width=16), np.zeros([4, 1]), epochs=1, verbose=0)
        self.assertTrue(np.isfinite(history.history["loss"][0]))

    def test_standardize_layer(self):
        images = _images(batch=2, height=8, width=8)
        self.assertAllClose(augment.Standardize()(images), augment.standardize(images))
        with self.assertRaisesRegex(ValueError, "epsilon must be positive"):
            augment.Standardize(epsilon=0.0)


if __name__ == "__main__":
    tf.test.main()
