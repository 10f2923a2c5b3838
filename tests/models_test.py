"""Tests for trainer/model/models.py: output shapes of every architecture, ResUNet structure, errors."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tfrecords import schema
from trainer.model import augment, models


class BuildModelTest(tf.test.TestCase, parameterized.TestCase):
    def tearDown(self):
        keras.config.set_dtype_policy("float32")
        super().tearDown()

    @parameterized.parameters("resunet", "resnet50", "vgg16", "densenet121")
    def test_output_shape_and_range(self, name):
        model = models.build_model(
            name, image_size=32, depth=2, base_filters=4, augment=augment.AugmentConfig()
        )
        images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
        probabilities = model(images, training=False)
        self.assertEqual(probabilities.shape, (2, schema.NUM_LABELS))
        self.assertEqual(probabilities.dtype, tf.float32)
        self.assertAllInRange(probabilities, 0.0, 1.0)
        self.assertEqual(model.get_layer(models.PROBABILITIES).output.shape, (None, schema.NUM_LABELS))

    def test_resunet_structure(self):
        model = models.build_model("resunet", image_size=64, depth=3, base_filters=4)
        # Decoder output at full resolution with base_filters channels (Grad-CAM reads it).
        self.assertEqual(model.get_layer(models.DECODER_OUTPUT).output.shape, (None, 64, 64, 4))
        self.assertEqual(model.get_layer("bottleneck_out").output.shape, (None, 8, 8, 32))
        # Transposed-conv upsampling and long skips at every level.
        for level in range(3):
            self.assertIsInstance(model.get_layer(f"decoder{level}_up"), keras.layers.Conv2DTranspose)
            self.assertIsInstance(model.get_layer(f"decoder{level}_concat"), keras.layers.Concatenate)
        # Projection shortcut only where the channel count changes: the first encoder block
        # goes 1 -> 4 channels; the decoder blocks go 2f -> f after concatenation.
        names = {layer.name for layer in model.layers}
        self.assertIn("encoder0_proj", names)
        self.assertIn("decoder0_proj", names)

    def test_residual_block_identity_shortcut(self):
        inputs = keras.Input((8, 8, 4))
        outputs = models.residual_block(inputs, 4, name="block")
        model = keras.Model(inputs, outputs)
        self.assertNotIn("block_proj", [layer.name for layer in model.layers])
        # With every conv kernel zeroed the block is relu(identity + 0 batch-norm'd): relu(x).
        for layer in model.layers:
            if isinstance(layer, keras.layers.Conv2D):
                layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        x = np.random.default_rng(1).normal(size=(1, 8, 8, 4)).astype(np.float32)
        self.assertAllClose(model(x, training=False), np.maximum(x, 0.0), atol=1e-5)

    def test_preprocessing_is_scale_free_and_augment_only_in_training(self):
        model = models.build_model(
            "resunet", image_size=32, depth=2, base_filters=4, augment=augment.AugmentConfig()
        )
        images = np.random.default_rng(2).integers(0, 128, (2, 32, 32, 1)).astype(np.float32)
        # Standardization inside the model: doubling the contrast does not change the output.
        self.assertAllClose(model(images, training=False), model(2.0 * images, training=False), atol=1e-5)
        # The affine augmentation changes the result only in training mode.
        self.assertAllClose(model(images, training=False), model(images, training=False))
        self.assertNotAllClose(model(images, training=True), model(images, training=True))

    def test_mixed_precision_head_is_float32(self):
        keras.config.set_dtype_policy("mixed_bfloat16")
        model = models.build_model("resunet", image_size=32, depth=2, base_filters=4)
        self.assertEqual(model.get_layer("encoder0_conv1").compute_dtype, "bfloat16")
        self.assertEqual(model.get_layer("standardize").compute_dtype, "float32")
        self.assertEqual(model(np.zeros((1, 32, 32, 1), np.uint8)).dtype, tf.float32)

    def test_saved_model_reloads_with_custom_layers(self):
        model = models.build_model(
            "resunet", image_size=32, depth=2, base_filters=4, augment=augment.AugmentConfig()
        )
        path = os.path.join(self.get_temp_dir(), "model.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
        images = np.full((1, 32, 32, 1), 7, np.uint8)
        images[0, :16] = 200
        self.assertAllClose(model(images, training=False), reloaded(images, training=False), atol=1e-6)

    def test_resunet_weights_file(self):
        model = models.build_model("resunet", image_size=32, depth=2, base_filters=4)
        path = os.path.join(self.get_temp_dir(), "resunet.weights.h5")
        model.save_weights(path)
        loaded = models.build_model("resunet", image_size=32, depth=2, base_filters=4, weights=path)
        for a, b in zip(model.get_weights(), loaded.get_weights()):
            self.assertAllEqual(a, b)

    def test_baseline_from_three_channel_weights(self):
        rgb = keras.applications.VGG16(
            include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
        )
        path = os.path.join(self.get_temp_dir(), "vgg16_notop.weights.h5")
        rgb.save_weights(path)
        model = models.build_model("vgg16", image_size=32, weights=path)
        gray = model.get_layer("vgg16_backbone")
        first = gray.get_layer("block1_conv1").get_weights()[0]
        # The gray kernel is the RGB kernel summed over its 3 input channels.
        self.assertAllClose(first, rgb.get_layer("block1_conv1").get_weights()[0].sum(axis=2, keepdims=True))
        self.assertAllEqual(
            gray.get_layer("block5_conv3").get_weights()[0], rgb.get_layer("block5_conv3").get_weights()[0]
        )

    @parameterized.named_parameters(
        ("unknown_model", dict(name="inception"), "model must be one of"),
        (
            "size_not_divisible",
            dict(name="resunet", image_size=100, depth=3),
            r"image_size 100 is not a multiple of 2\*\*depth = 8",
        ),
        ("bad_depth", dict(name="resunet", depth=0), "depth must be an integer >= 1"),
        ("too_small_for_application", dict(name="vgg16", image_size=16), "needs image_size >= 32"),
        ("bad_dropout", dict(name="resunet", dropout=1.0), r"dropout must be in \[0, 1\)"),
        ("missing_weights", dict(name="resunet", weights="/nonexistent/w.weights.h5"), "does not exist"),
    )
    def test_errors(self, kwargs, message):
        kwargs = {"image_size": 32, "depth": 2, "base_filters": 4, **kwargs}
        with self.assertRaisesRegex(ValueError, message):
            models.build_model(kwargs.pop("name"), **kwargs)


if __name__ == "__main__":
    tf.test.main()
