"""Tests for trainer.evaluation.tta: the hflip output is the mean of the two passes."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from trainer.evaluation import tta


def _left_heavy(images):
    """A model that looks only at the left half: [B, 15] = mean of the left half / 255, per label k times (k+1)/15."""
    images = np.asarray(images, np.float64)
    left = images[:, :, : images.shape[2] // 2, 0].mean(axis=(1, 2)) / 255.0
    return left[:, None] * (np.arange(1, 16) / 15.0)[None, :]


class TtaTest(parameterized.TestCase, tf.test.TestCase):
    def test_hflip_mirrors_columns(self):
        images = np.arange(2 * 2 * 3).reshape(2, 2, 3, 1)
        # Row [0, 1, 2] becomes [2, 1, 0].
        self.assertAllEqual(tta.hflip(images)[0, 0, :, 0], [2, 1, 0])
        self.assertAllEqual(tta.hflip(tta.hflip(images)), images)

    def test_hflip_is_the_mean_of_the_two_passes(self):
        # Left half 200, right half 0: the image's left mean is 200/255, its mirror's 0. For label k
        # the two passes give (200/255) * (k+1)/15 and 0; their mean is half the first.
        images = np.zeros((1, 4, 4, 1), np.uint8)
        images[:, :, :2] = 200
        expected = 0.5 * (200 / 255) * np.arange(1, 16) / 15
        self.assertAllClose(tta.predict(_left_heavy, images, mode="hflip")[0], expected)
        self.assertAllClose(tta.predict(_left_heavy, images, mode="none")[0], 2 * expected)

    def test_keras_model_equals_mean_of_separate_calls(self):
        model = fake_data.tiny_keras_model(16)
        images = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 1)).astype(np.uint8)

        def fn(batch):
            return model(tf.constant(batch), training=False).numpy()

        plain = fn(images)
        mirrored = fn(images[:, :, ::-1])
        self.assertNotAllClose(plain, mirrored)  # The model is not symmetric, so the test can fail.
        self.assertAllClose(tta.predict(fn, images, mode="hflip"), (plain + mirrored) / 2, atol=1e-6)
        self.assertAllClose(tta.predict(fn, images), plain)

    def test_predict_both_gives_the_plain_pass_and_the_mean(self):
        images = np.zeros((2, 4, 4, 1), np.uint8)
        images[0, :, :2] = 200
        images[1, :, 2:] = 100
        plain, mean = tta.predict_both(_left_heavy, images, mode="hflip")
        self.assertAllClose(plain, _left_heavy(images))
        self.assertAllClose(mean, (_left_heavy(images) + _left_heavy(images[:, :, ::-1])) / 2)
        plain, same = tta.predict_both(_left_heavy, images, mode="none")
        self.assertAllEqual(plain, same)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"tta must be one of \('none', 'hflip'\), got 'vflip'"):
            tta.predict(_left_heavy, np.zeros((1, 4, 4, 1)), mode="vflip")
        with self.assertRaisesRegex(ValueError, r"images must be \[batch, height, width, channels\]"):
            tta.hflip(np.zeros((4, 4)))


if __name__ == "__main__":
    tf.test.main()
