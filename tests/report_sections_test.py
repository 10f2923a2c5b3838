"""Tests for trainer.evaluation.report's TTA, calibration and localization sections and figures, on hand-made data."""

import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from tfrecords import schema
from trainer.evaluation import calibration, metrics
from trainer.evaluation.localization import pipeline as localization_eval
from trainer.evaluation.localization import scores as localization
from trainer.evaluation.report import figures, markdown


def _png_size(path):
    with open(path, "rb") as f:
        image = Image.open(io.BytesIO(f.read()))
        image.verify()
    return image.size


class SectionsTest(tf.test.TestCase):
    def test_tta_section_gives_both_aucs_and_the_difference(self):
        data = {
            "tta": {
                "mode": "hflip",
                "split": "test",
                "findings": [
                    {"label": "Mass", "auc_without": 0.70, "auc_with": 0.725},
                    {"label": "Hernia", "auc_without": None, "auc_with": None},
                    {"label": "Edema", "auc_without": 0.9, "auc_with": 0.8999},
                ],
                "mean_auc_14_without": 0.70,
                "mean_auc_14_without_ci": [0.6, 0.8],
                "mean_auc_14_with": 0.69,
                "mean_auc_14_with_ci": [0.59, 0.79],
            }
        }
        text = "\n".join(markdown.tta_section(data))
        self.assertIn("| Mass | 0.700 | 0.725 | +0.025 |", text)
        self.assertIn("| Hernia | undefined | undefined | undefined |", text)
        self.assertIn("| Edema | 0.900 | 0.900 | 0.000 |", text)  # -0.0001 rounds to zero: no sign.
        self.assertIn(
            "| **Mean of 14 findings** | **0.700** (0.600–0.800) | **0.690** (0.590–0.790) | -0.010 |", text
        )
        self.assertIn("Not used", "\n".join(markdown.tta_section({"tta": {"mode": "none"}})))
        self.assertEqual(markdown.tta_section({}), [])

    def test_calibration_section(self):
        rng = np.random.default_rng(0)
        y_true = (rng.random((200, schema.NUM_LABELS)) < 0.3).astype(int)
        y_prob = np.clip(0.2 + 0.5 * y_true + 0.2 * rng.random(y_true.shape), 0, 1)
        y_true[:, schema.LABELS.index("Hernia")] = 0
        fitted = calibration.fit(y_true, y_prob, source_split="val")
        data = {
            "labels": list(schema.LABELS),
            "calibration": {
                "method": "platt",
                "num_bins": 10,
                "source_split": "val",
                "splits": {"val": calibration.summarize(y_true, y_prob)},
                "calibrated": {"val": calibration.summarize(y_true, fitted.apply(y_prob))},
                "parameters": fitted.to_json(),
            },
        }
        text = "\n".join(markdown.calibration_section(data))
        self.assertIn("| Label | ECE val | ECE val after Platt | Platt slope / intercept |", text)
        mass = schema.LABELS.index("Mass")
        ece = calibration.expected_calibration_error(y_true[:, mass], y_prob[:, mass])
        scaling = fitted.scalings["Mass"]
        self.assertRegex(
            text, rf"\| Mass \| {ece:.3f} \| \d\.\d{{3}} \| {scaling.slope:.3f} / {scaling.intercept:.3f} \|"
        )
        self.assertIn("| Hernia | ", text)
        self.assertIn("not fitted: 0 positive and 200 negative images", text)

    def test_localization_section_not_scored_says_why(self):
        data = {
            "localization": {
                "split": "test",
                "status": "no_box_file",
                "message": "no BBox_List_2017.csv here.",
            }
        }
        self.assertIn("**Not scored:** no BBox_List_2017.csv here.", markdown.localization_section(data))

    def test_localization_section_table(self):
        summary = localization.summarize(
            [[1, 0.8, 0.5], [0, 0.1, 0.0]],
            ["Mass", "Nodule"],
            [1, 2],
            bootstrap=metrics.BootstrapConfig(resamples=20),
        )
        summary["findings"][0]["box_area_share"] = 0.04  # Mass's baseline; Nodule's left out.
        data = {
            "localization": {
                "split": "test",
                "status": "scored",
                "box_file": {
                    "path": "BBox_List_2017.csv", "rows": 4, "boxes": 2, "source_size": 1024, "image_size": 64,
                    "rejects": {"unknown_finding": 1, "box_outside_image": 0, "image_not_in_records": 1},
                },
                **summary,
                "mean_maps": {"images": 10, "grid": 8, "peak_cell": [7, 0], "peak_cell_share": 0.9},
            }
        }  # fmt: skip
        text = "\n".join(markdown.localization_section(data))
        self.assertIn("rejected rows: unknown_finding 1, image_not_in_records 1", text)
        self.assertIn(
            "| Mass | 1 | 1 | 1.000 (1.000–1.000) | 0.800 (0.800–0.800) | 0.500 (0.500–0.500) | 0.040 |", text
        )
        self.assertIn(
            "| Nodule | 1 | 1 | 0.000 (0.000–0.000) | 0.100 (0.100–0.100) | 0.000 (0.000–0.000) | undefined |",
            text,
        )
        self.assertIn("| **All pairs** | 2 | 2 | 0.500 (", text)
        self.assertIn("90.0% of these maps peak in the same cell (row 7, column 0 of a 8x8 grid)", text)
        self.assertNotIn("Sanity checks", text)

    def test_localization_sanity_checks(self):
        sanity = {
            "border_fraction": 0.1, "border_energy_share": 0.123, "uniform_border_share": 0.36,
            "box_area_share": 0.072, "pairs": 19,
            "randomization": {
                "seed": 0, "pairs": 19, "spearman": 0.05,
                "findings": {"Mass": {"spearman": 0.1, "maps": 1}, "Nodule": {"spearman": None, "maps": 2}},
            },
        }  # fmt: skip
        text = "\n".join(markdown.sanity_lines(sanity))
        self.assertIn(
            "Sanity checks of the 19 scored maps: **border share** (the map's mass in the outer 10%", text
        )
        self.assertIn("0.123, where a flat map scores 0.360", text)
        self.assertIn("the boxes cover 0.072 of the image", text)
        self.assertIn("(seed 0), over 19 pairs: **0.050**", text)
        self.assertIn("| Mass | 1 | 0.100 |", text)
        self.assertIn("| Nodule | 2 | undefined |", text)
        self.assertNotIn("the baseline**", text)  # No verdict without one.
        self.assertEqual(markdown.sanity_lines(None), [])

    def test_localization_verdict_against_the_baseline(self):
        sanity = {"box_area_share": 0.073}
        below = "\n".join(markdown.verdict_lines({**sanity, "versus_baseline": {
            "pointing_game": "not_above", "energy_inside": "not_above"}}))  # fmt: skip
        self.assertIn(
            "**Not above the baseline**: the 95% interval of the pointing game and the energy inside reaches "
            "down to the image-blind baseline (0.073) or below. These maps do not show where the boxed "
            "findings are",
            below,
        )
        mixed = "\n".join(markdown.verdict_lines({**sanity, "versus_baseline": {
            "pointing_game": "not_above", "energy_inside": "above"}}))  # fmt: skip
        self.assertIn("interval of the pointing game reaches", mixed)
        self.assertIn("(The energy inside clears it.)", mixed)
        above = "\n".join(markdown.verdict_lines({**sanity, "versus_baseline": {
            "pointing_game": "above", "energy_inside": "above"}}))  # fmt: skip
        self.assertIn("**Above the baseline**: the 95% intervals of the pointing game and the energy", above)
        self.assertEqual(markdown.verdict_lines({**sanity, "versus_baseline": {"pointing_game": None}}), [])


class FiguresTest(tf.test.TestCase):
    def test_reliability_diagram(self):
        rng = np.random.default_rng(1)
        y_true = (rng.random((100, schema.NUM_LABELS)) < 0.3).astype(int)
        y_prob = rng.random(y_true.shape)
        series = {
            "val": calibration.summarize(y_true, y_prob),
            "test": calibration.summarize(y_true, y_prob**2),
        }
        path = figures.plot_reliability(
            os.path.join(self.get_temp_dir(), "r.png"), series, omit={"test": ["Hernia"]}
        )
        width, height = _png_size(path)
        self.assertGreater(width, 1000)
        self.assertGreater(height, 700)

    def test_cam_figures(self):
        cam = np.zeros((16, 16), np.float32)
        cam[4:8, 4:8] = 1.0
        pixels = np.full((16, 16), 100, np.uint8)
        score = localization.score_pair(cam, localization.box_mask((16, 16), [(4, 4, 4, 4)]))
        samples = [
            localization_eval.CamSample("a.png", "Mass", 0.8, pixels, cam, ((4.0, 4.0, 4.0, 4.0),), score),
            localization_eval.CamSample(
                "b.png", "Nodule", 0.3, pixels, cam, ((10.0, 10.0, 2.0, 2.0),), score
            ),
        ]
        path = figures.plot_cam_overlays(os.path.join(self.get_temp_dir(), "o.png"), samples)
        self.assertGreater(min(_png_size(path)), 300)
        empty = figures.plot_cam_overlays(os.path.join(self.get_temp_dir(), "e.png"), [])
        self.assertGreater(min(_png_size(empty)), 200)
        path = figures.plot_mean_cams(
            os.path.join(self.get_temp_dir(), "m.png"),
            cam,
            3,
            {"Mass": (cam, 2)},
            peak_counts=np.eye(8, dtype=int),
        )
        self.assertGreater(min(_png_size(path)), 200)


if __name__ == "__main__":
    tf.test.main()
