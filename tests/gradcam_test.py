"""Tests for trainer.gradcam's batched maps, layer check and box drawing."""

import keras
import numpy as np
import tensorflow as tf

from tests import fake_data
from trainer import gradcam


class BatchMapsTest(tf.test.TestCase):
    def test_batch_equals_one_image_at_a_time(self):
        model = fake_data.tiny_keras_model(16)
        explainer = gradcam.GradCam(model)
        pixels = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 1)).astype(np.float32)
        classes = [0, 4, 13]
        batch = explainer.batch_maps(pixels, classes, output_size=(20, 24))
        self.assertEqual(batch.shape, (3, 20, 24))
        for i, k in enumerate(classes):
            self.assertAllClose(batch[i], explainer.maps(pixels[i], [k], output_size=(20, 24))[0], atol=1e-6)

    def test_bright_spot_model_maps_the_image(self):
        # fake_data.bright_spot_model: Grad-CAM = image / max(image), whatever the finding.
        explainer = gradcam.GradCam(fake_data.bright_spot_model(8))
        pixels = np.zeros((2, 8, 8, 1), np.float32)
        pixels[0, 2:4, 5:7] = 200
        pixels[0, 6, 0] = 100
        pixels[1, 0, 0] = 50
        maps = explainer.batch_maps(pixels, [3, 9], output_size=(8, 8))
        self.assertAllClose(maps[0], pixels[0, ..., 0] / 200, atol=1e-6)
        self.assertAllClose(maps[1], pixels[1, ..., 0] / 50, atol=1e-6)

    def test_empty_batch_and_wrong_shape(self):
        explainer = gradcam.GradCam(fake_data.tiny_keras_model(8))
        self.assertEqual(
            explainer.batch_maps(np.zeros((0, 8, 8, 1)), [], output_size=(4, 4)).shape, (0, 4, 4)
        )
        with self.assertRaisesRegex(
            ValueError, r"pixels must be \[2, 8, 8, 1\] for 2 class indices, got \(1, 8, 8, 1\)"
        ):
            explainer.batch_maps(np.zeros((1, 8, 8, 1)), [0, 1], output_size=(8, 8))

    def test_missing_layers(self):
        self.assertEqual(gradcam.missing_layers(fake_data.tiny_keras_model(8)), [])
        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Dense(15, name="dense")(keras.layers.Flatten()(inputs))
        self.assertEqual(
            gradcam.missing_layers(keras.Model(inputs, outputs)), ["decoder_output", "probabilities"]
        )


class DrawBoxesTest(tf.test.TestCase):
    def test_outline_covers_the_box_edges_only(self):
        # Box x=2, y=1, w=3, h=4: columns 2..4, rows 1..4; the outline is its border pixels.
        rgb = gradcam.draw_boxes(np.zeros((8, 8, 3), np.uint8), [(2, 1, 3, 4)], color=(255, 0, 0))
        drawn = rgb[..., 0] == 255
        expected = np.zeros((8, 8), bool)
        expected[1:5, 2:5] = True
        expected[2:4, 3:4] = False  # The inside stays untouched.
        self.assertAllEqual(drawn, expected)
        self.assertAllEqual(rgb[..., 1], np.zeros((8, 8)))


if __name__ == "__main__":
    tf.test.main()
