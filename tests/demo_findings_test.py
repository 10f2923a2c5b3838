"""Tests for demo_data.findings: one visible, distinct, boxed pattern per finding."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from demo_data import canvas, findings, render
from tfrecords import schema

# Findings whose pattern is local, so that they have a box (Emphysema changes the whole chest).
BOXED = tuple(name for name in schema.FINDINGS if name != "Emphysema")


def _pair(finding, seed, image_size, render_size):
    """Renders the same image without and with `finding` (each finding draws from its own stream)."""
    normal = render.render((), np.random.default_rng(seed), image_size, render_size=render_size)
    planted = render.render((finding,), np.random.default_rng(seed), image_size, render_size=render_size)
    return normal, planted


class RegistryTest(tf.test.TestCase):
    def test_every_finding_has_one_painter(self):
        self.assertCountEqual(findings.registered(), schema.FINDINGS)
        by_stage = [f.name for stage in findings.Stage for f in findings.painters(stage)]
        self.assertCountEqual(by_stage, schema.FINDINGS)

    def test_anatomy_changes_come_first_in_their_order(self):
        # Emphysema narrows the heart, Cardiomegaly then sets its size: the order decides the pixels.
        self.assertEqual(
            [f.name for f in findings.painters(findings.Stage.ANATOMY)], ["Emphysema", "Cardiomegaly"]
        )
        self.assertEqual([f.name for f in findings.painters(findings.Stage.LUNG)], ["Pneumothorax"])

    def test_registering_a_finding_twice_raises(self):
        with self.assertRaisesRegex(ValueError, "Mass.*already has a painter.*paint_mass"):
            findings.register("Mass")(lambda c, r, a: None)
        self.assertIs(findings._REGISTRY["Mass"].paint, findings.paint_mass)


class PatternTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*schema.FINDINGS)
    def test_each_finding_is_visible_at_64(self, finding):
        normal, planted = _pair(finding, 7, 64, 256)
        difference = np.abs(planted.pixels.astype(np.float32) - normal.pixels.astype(np.float32))
        self.assertGreater(difference.max(), 40, msg=finding)
        self.assertGreater(np.sum(difference > 20), 6, msg=finding)

    def test_findings_have_distinct_patterns(self):
        normal = render.render_image((), np.random.default_rng(11), 64).astype(np.float32)
        differences = np.stack(
            [
                (render.render_image((f,), np.random.default_rng(11), 64).astype(np.float32) - normal).ravel()
                for f in schema.FINDINGS
            ]
        )
        correlation = np.corrcoef(differences)
        np.fill_diagonal(correlation, 0.0)
        self.assertLess(correlation.max(), 0.9)


class BoxTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(finding=BOXED, sizes=[(64, 64), (96, 48)], seed=[0, 1, 2])
    def test_box_encloses_the_painted_pattern(self, finding, sizes, seed):
        image_size, render_size = sizes
        normal, planted = _pair(finding, seed, image_size, render_size)
        self.assertEmpty(normal.boxes)
        box = planted.boxes[finding]
        self.assertEqual(list(planted.boxes), [finding])
        self.assertBetween(box.x0, 0, box.x1 - 1)
        self.assertBetween(box.y0, 0, box.y1 - 1)
        self.assertLessEqual(max(box.x1, box.y1), image_size)
        difference = np.abs(planted.pixels.astype(np.int32) - normal.pixels.astype(np.int32))
        # Visible change (beyond rounding and the faint tails under the box threshold) is inside.
        rows, columns = np.nonzero(difference > 8)
        self.assertNotEmpty(rows)
        self.assertGreaterEqual(columns.min(), box.x0)
        self.assertLess(columns.max(), box.x1)
        self.assertGreaterEqual(rows.min(), box.y0)
        self.assertLess(rows.max(), box.y1)
        # ...and the box is tight around it: no side more than 10% of the image beyond it.
        slack = max(
            columns.min() - box.x0, rows.min() - box.y0, box.x1 - 1 - columns.max(), box.y1 - 1 - rows.max()
        )
        self.assertLessEqual(slack, 0.1 * image_size)

    def test_emphysema_has_no_box(self):
        _, planted = _pair("Emphysema", 0, 64, 64)
        self.assertEmpty(planted.boxes)

    def test_every_planted_finding_gets_its_own_box(self):
        planted = render.render(("Effusion", "Mass", "Nodule"), np.random.default_rng(3), 64)
        self.assertCountEqual(planted.boxes, ["Effusion", "Mass", "Nodule"])
        for name in ("Mass", "Nodule"):
            _, alone = _pair(name, 3, 64, 256)
            self.assertEqual(planted.boxes[name], alone.boxes[name], msg=name)

    @parameterized.parameters(
        # (box on the render, render size, image size, expected box on the image)
        ((10, 20, 12, 30), 64, 64, (10, 20, 12, 30)),
        ((10, 20, 12, 30), 64, 256, (38, 78, 50, 122)),
        ((0, 0, 64, 64), 64, 256, (0, 0, 256, 256)),
        ((5, 5, 6, 6), 48, 96, (9, 9, 13, 13)),
    )
    def test_box_scaling_covers_the_bilinear_reach(self, box, size, image_size, expected):
        self.assertEqual(canvas.Box(*box).scaled(size, image_size), canvas.Box(*expected))

    def test_scaled_box_holds_every_pixel_the_upscale_touches(self):
        from PIL import Image

        spot = np.zeros((48, 48), np.uint8)
        spot[20:23, 30:32] = 255
        box = canvas.Box(30, 20, 32, 23).scaled(48, 101)
        up = np.asarray(Image.fromarray(spot).resize((101, 101), Image.Resampling.BILINEAR))
        rows, columns = np.nonzero(up)
        self.assertGreaterEqual(columns.min(), box.x0)
        self.assertLess(columns.max(), box.x1)
        self.assertGreaterEqual(rows.min(), box.y0)
        self.assertLess(rows.max(), box.y1)


if __name__ == "__main__":
    tf.test.main()
