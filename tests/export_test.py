"""Tests for trainer/model/export.py: the SavedModel round trip against the in-memory model."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from tfrecords import schema
from trainer.model import augment, export, models

_SIZE = 32


class DecodeTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("L", "LA", "RGB", "RGBA", "P", "I;16")
    def test_every_png_mode_decodes_to_the_same_gray_pixels(self, mode):
        pixels = fake_data.gray_pixels(_SIZE, _SIZE, seed=3)
        decoded = export.decode_to_training_pixels(tf.constant(fake_data.png_bytes(pixels, mode=mode)), _SIZE)
        self.assertEqual(decoded.shape, (_SIZE, _SIZE, 1))
        self.assertAllClose(decoded[..., 0], pixels.astype(np.float32), atol=1.0)

    def test_area_resize_averages_blocks(self):
        # A 64x64 image of 2x2 blocks [[0, 100], [200, 40]] shrinks to each block's mean: 85.
        block = np.array([[0, 100], [200, 40]], np.uint8)
        pixels = np.tile(block, (32, 32))
        decoded = export.decode_to_training_pixels(tf.constant(fake_data.png_bytes(pixels)), _SIZE)
        self.assertAllClose(decoded, np.full((_SIZE, _SIZE, 1), 85.0))


class ExportModelTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = models.build_model(
            "resunet", image_size=_SIZE, depth=2, base_filters=4, augment=augment.AugmentConfig()
        )
        cls.export_dir = os.path.join(tf.compat.v1.test.get_temp_dir(), "export")
        export.export_model(cls.model, cls.export_dir, image_size=_SIZE)
        cls.loaded = tf.saved_model.load(cls.export_dir)

    def test_signatures_match_in_memory_model(self):
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (3, _SIZE, _SIZE), dtype=np.uint8)
        expected = self.model(pixels[..., None], training=False).numpy()

        served = self.loaded.signatures[export.SERVE_PIXELS](images=tf.constant(pixels[..., None]))
        self.assertAllClose(served["probabilities"], expected, atol=1e-6)

        # PNGs of different modes and sizes: a 16-bit one, an RGBA one, and a 64x64 gray one
        # that the graph area-resizes (by 2x2 averaging) to the training size.
        big = np.repeat(np.repeat(pixels[2], 2, axis=0), 2, axis=1)
        image_bytes = [
            fake_data.png_bytes(pixels[0], mode="I;16"),
            fake_data.png_bytes(pixels[1], mode="RGBA"),
            fake_data.png_bytes(big, mode="L"),
        ]
        served = self.loaded.signatures[export.SERVING_DEFAULT](image_bytes=tf.constant(image_bytes))
        self.assertEqual(served["probabilities"].shape, (3, schema.NUM_LABELS))
        self.assertAllClose(served["probabilities"], expected, atol=1e-5)

    def test_labels_json(self):
        info = export.read_labels(self.export_dir)
        self.assertEqual(info, {"labels": list(schema.LABELS), "image_size": _SIZE})

    def test_wrong_pixel_shape_is_refused(self):
        with self.assertRaisesRegex((ValueError, tf.errors.InvalidArgumentError), "Shape of tensor"):
            self.loaded.signatures[export.SERVE_PIXELS](images=tf.zeros([1, _SIZE + 1, _SIZE, 1], tf.uint8))

    def test_export_rejects_mismatched_size(self):
        with self.assertRaisesRegex(ValueError, r"model input shape must be \(None, 64, 64, 1\)"):
            export.export_model(self.model, os.path.join(self.get_temp_dir(), "bad"), image_size=64)

    def test_read_labels_errors(self):
        with self.assertRaisesRegex(ValueError, "does not exist"):
            export.read_labels(self.get_temp_dir())
        export.write_labels(self.get_temp_dir(), image_size=8)
        path = os.path.join(self.get_temp_dir(), export.LABELS_FILE)
        with open(path, "w") as f:
            f.write('{"labels": ["Mass"], "image_size": 8}')
        with self.assertRaisesRegex(ValueError, "expected"):
            export.read_labels(self.get_temp_dir(), expected=schema.LABELS)
        # By default, an export's own vocabulary is read as it is.
        self.assertEqual(export.read_labels(self.get_temp_dir())["labels"], ["Mass"])


if __name__ == "__main__":
    tf.test.main()
