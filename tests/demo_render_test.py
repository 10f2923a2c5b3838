"""Tests for demo_data.render and demo_data.png: sizes, determinism, bad findings, PNG bytes."""

import io

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from demo_data import png, render


class RenderTest(tf.test.TestCase, parameterized.TestCase):
    def test_size_and_dtype_when_scaled_up(self):
        pixels = render.render_image(("Mass", "Effusion"), np.random.default_rng(0), 300, render_size=64)
        self.assertEqual(pixels.dtype, np.uint8)
        self.assertEqual(pixels.shape, (300, 300))
        self.assertGreater(pixels.std(), 20)

    def test_same_generator_state_same_pixels(self):
        a = render.render_image(("Nodule",), render.image_rng(4, 9), 48)
        b = render.render_image(("Nodule",), render.image_rng(4, 9), 48)
        c = render.render_image(("Nodule",), render.image_rng(4, 10), 48)
        self.assertAllEqual(a, b)
        self.assertNotAllEqual(a, c)

    def test_no_finding_is_a_normal_image(self):
        a = render.render((), render.image_rng(0, 1), 32)
        b = render.render(("No Finding",), render.image_rng(0, 1), 32)
        self.assertAllEqual(a.pixels, b.pixels)
        self.assertEmpty(b.boxes)

    @parameterized.named_parameters(
        ("unknown", ("Infiltrate",), "Unknown finding.*Infiltrate"),
        ("no_finding_with_finding", ("No Finding", "Mass"), "No Finding"),
    )
    def test_bad_findings_raise(self, findings, message):
        with self.assertRaisesRegex(ValueError, message):
            render.render_image(findings, np.random.default_rng(0), 32)

    @parameterized.named_parameters(
        ("zero_size", {"image_size": 0}, "image_size"),
        ("zero_render_size", {"render_size": 0}, "render_size"),
        ("float_size", {"image_size": 32.0}, "image_size"),
    )
    def test_bad_sizes_raise(self, kwargs, name):
        with self.assertRaisesRegex(ValueError, name):
            render.render((), np.random.default_rng(0), **{"image_size": 32, **kwargs})


class PngTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters((1, 1), (3, 5), (32, 32), (17, 64))
    def test_png_round_trip(self, height, width):
        pixels = np.random.default_rng(height * width).integers(0, 256, (height, width), dtype=np.uint8)
        encoded = png.encode_png(pixels)
        with Image.open(io.BytesIO(encoded)) as image:
            self.assertEqual(image.mode, "L")
            self.assertAllEqual(np.asarray(image), pixels)
        self.assertAllEqual(tf.io.decode_png(encoded)[..., 0], pixels)

    @parameterized.parameters(0, 9)
    def test_compress_levels_decode_alike(self, level):
        pixels = render.render_image(("Mass",), np.random.default_rng(1), 64)
        with Image.open(io.BytesIO(png.encode_png(pixels, compress_level=level))) as image:
            self.assertAllEqual(np.asarray(image), pixels)

    @parameterized.named_parameters(
        ("float", np.zeros((4, 4), np.float32)),
        ("three_dimensional", np.zeros((4, 4, 1), np.uint8)),
    )
    def test_png_rejects_other_arrays(self, pixels):
        with self.assertRaisesRegex(ValueError, "2-D uint8"):
            png.encode_png(pixels)


if __name__ == "__main__":
    tf.test.main()
