"""Tests for trainer.evaluation.localization.pipeline: Grad-CAM over records, scored against a box file.

The model is `fake_data.bright_spot_model`, whose Grad-CAM map is the image scaled by its
maximum, so the expected scores follow from where the test paints bright squares.
"""

import os

import numpy as np
import tensorflow as tf

from tests import fake_data
from tfrecords import schema
from trainer.evaluation import metrics
from trainer.evaluation.localization import boxes
from trainer.evaluation.localization import pipeline as localization_eval
from trainer.model import gradcam

_SIZE = 32
# Test images in record order (fake_data.metadata_for): patients 1, 1, 2, 2.
_NAMES = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000002_001.png"]


def _labels(*names):
    vector = np.zeros(schema.NUM_LABELS, np.int64)
    for name in names:
        vector[schema.LABELS.index(name)] = 1
    return vector


class LocalizeSplitTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        pixels = np.zeros((4, _SIZE, _SIZE), np.uint8)
        pixels[0, 8:14, 4:10] = 250  # Mass, boxed exactly: a hit.
        pixels[1, 0:4, 0:4] = 250  # Nodule, boxed in the opposite corner: a miss.
        pixels[2, 20:26, 20:26] = 250  # Mass, boxed exactly: a hit.
        pixels[3, 30, 30] = 250  # No box.
        labels = [_labels("Mass"), _labels("Nodule"), _labels("Mass", "Effusion"), _labels("No Finding")]
        self.records_dir = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_labeled_records(
            self.records_dir, {"test": labels}, image_size=_SIZE, split_pixels={"test": pixels}
        )
        # Boxes in NIH's 1024 grid: the records' pixels times 32.
        rows = [
            (_NAMES[0], "Mass", 4 * 32, 8 * 32, 6 * 32, 6 * 32),
            (_NAMES[1], "Nodule", 24 * 32, 24 * 32, 6 * 32, 6 * 32),
            (_NAMES[2], "Mass", 20 * 32, 20 * 32, 6 * 32, 6 * 32),
            ("99999999_000.png", "Mass", 0, 0, 10, 10),  # Not a test image.
        ]
        box_csv = fake_data.write_box_csv(os.path.join(self.get_temp_dir(), "BBox_List_2017.csv"), rows)
        self.box_set = boxes.read_boxes(box_csv, image_size=_SIZE, images=set(_NAMES))
        self.explainer = gradcam.GradCam(fake_data.bright_spot_model(_SIZE))
        self.probabilities = np.tile(np.linspace(0.1, 0.9, schema.NUM_LABELS), (4, 1))
        self.pixels = pixels

    def _localize(self, **kwargs):
        arguments = dict(
            probabilities=self.probabilities,
            image_indices=_NAMES,
            patient_ids=[1, 1, 2, 2],
            bootstrap=metrics.BootstrapConfig(resamples=50),
            batch_size=3,  # Two batches: pairs and sums cross a batch boundary.
        )
        arguments.update(kwargs)
        return localization_eval.localize_split(
            self.explainer, self.records_dir, "test", self.box_set, **arguments
        )

    def test_scores_follow_the_planted_squares(self):
        self.assertEqual(self.box_set.reject_counts()[boxes.IMAGE_NOT_EVALUATED], 1)
        result = self._localize()
        summary = result.summary
        mass, nodule = summary["findings"]
        # Mass: the map is the square, the box is the square -> pointing 1, energy 1, IoU 1 (twice).
        self.assertEqual((mass["label"], mass["pairs"], mass["patients"]), ("Mass", 2, 2))
        self.assertAllClose([mass["pointing_game"], mass["energy_inside"], mass["iou"]], [1, 1, 1])
        # Nodule: all of the map lies in the other corner -> 0, 0, 0.
        self.assertEqual((nodule["label"], nodule["pairs"]), ("Nodule", 1))
        self.assertAllClose([nodule["pointing_game"], nodule["energy_inside"], nodule["iou"]], [0, 0, 0])
        overall = summary["overall"]
        self.assertAllClose(overall["pointing_game"], 2 / 3)
        self.assertEqual((overall["pairs"], summary["images"]), (3, 3))
        self.assertEqual(summary["cam_threshold"], 0.5)
        checks = summary["sanity"]
        self.assertEqual(checks["pairs"], 3)
        self.assertGreater(checks["box_area_share"], 0.0)
        self.assertLess(checks["box_area_share"], 1.0)
        self.assertBetween(checks["border_energy_share"], 0.0, 1.0)
        # Every box is 6x6 of 32x32: the image-blind baseline, per finding and overall.
        self.assertAllClose([mass["box_area_share"], nodule["box_area_share"]], [36 / 1024, 36 / 1024])
        self.assertAllClose([overall["box_area_share"], checks["box_area_share"]], [36 / 1024, 36 / 1024])
        # Both patients' resamples keep at least one hit: every interval starts far above 0.035.
        self.assertEqual(checks["versus_baseline"], {"pointing_game": "above", "energy_inside": "above"})

    def test_maps_that_miss_every_box_are_not_above_the_baseline(self):
        # Every box moved to the opposite corner of its square: the maps put nothing inside.
        rows = [(name, "Mass", 0, 26 * 32, 6 * 32, 6 * 32) for name in (_NAMES[0], _NAMES[2])]
        box_csv = fake_data.write_box_csv(os.path.join(self.get_temp_dir(), "misses.csv"), rows)
        self.box_set = boxes.read_boxes(box_csv, image_size=_SIZE, images=set(_NAMES))
        checks = self._localize(mean_maps=False).summary["sanity"]
        self.assertEqual(
            checks["versus_baseline"], {"pointing_game": "not_above", "energy_inside": "not_above"}
        )

    def test_randomization_of_a_map_that_ignores_the_weights_correlates_fully(self):
        # The bright-spot map is the image whatever the weights (its initializers are constants):
        # re-initialized, the maps are the same, so every finding correlates 1.
        randomization = self._localize().summary["sanity"]["randomization"]
        self.assertEqual((randomization["pairs"], randomization["seed"]), (3, 0))
        self.assertEqual(list(randomization["findings"]), ["Mass", "Nodule"])  # In label order.
        self.assertEqual(randomization["findings"]["Mass"]["maps"], 2)
        self.assertAllClose(randomization["findings"]["Mass"]["spearman"], 1.0)
        self.assertAllClose(randomization["spearman"], 1.0)

    def test_randomization_of_trained_weights_differs(self):
        # A conv model whose weights were moved away from their initial draw: the re-initialized
        # copy maps differently, and the correlation falls below 1.
        model = fake_data.tiny_keras_model(_SIZE)
        rng = np.random.default_rng(5)
        model.set_weights([w + rng.normal(0, 1, w.shape).astype(w.dtype) for w in model.get_weights()])
        self.explainer = gradcam.GradCam(model)
        randomization = self._localize(mean_maps=False).summary["sanity"]["randomization"]
        self.assertEqual(randomization["pairs"], 3)
        self.assertLess(randomization["spearman"], 0.9)

    def test_samples_keep_the_map_and_boxes(self):
        result = self._localize()
        self.assertEqual([(s.finding, s.image_index) for s in result.samples], [
            ("Mass", _NAMES[0]), ("Mass", _NAMES[2]), ("Nodule", _NAMES[1]),
        ])  # fmt: skip
        first = result.samples[0]
        self.assertAllClose(first.cam, self.pixels[0] / 250.0, atol=1e-6)
        self.assertAllEqual(first.pixels, self.pixels[0])
        self.assertEqual(first.boxes, ((4.0, 8.0, 6.0, 6.0),))
        self.assertAllClose(first.probability, self.probabilities[0, schema.LABELS.index("Mass")])

    def test_mean_maps(self):
        mean = self._localize().mean_cams
        self.assertEqual(mean.images, 4)
        # Each map is its image / 250: the mean is the mean of the four images / 250.
        self.assertAllClose(mean.overall, self.pixels.mean(axis=0) / 250.0, atol=1e-6)
        # Mass is labelled on images 0 and 2; Effusion on image 2; No Finding is not a finding.
        self.assertEqual(
            {k: n for k, (_, n) in mean.by_finding.items()}, {"Effusion": 1, "Mass": 2, "Nodule": 1}
        )
        self.assertAllClose(
            mean.by_finding["Mass"][0], (self.pixels[0] + self.pixels[2].astype(float)) / 500.0
        )
        # Peaks (first maximum, row-major) in cells (2, 1), (0, 0), (5, 5), (7, 7) of the 8x8 grid
        # of 4-pixel cells: four cells, one image each.
        self.assertEqual(mean.peak_counts.sum(), 4)
        self.assertEqual(mean.summary()["peak_cell_share"], 0.25)

    def test_fixed_location_artifact_shows_in_the_peak_share(self):
        # Every image's brightest pixel at (31, 0): every map peaks in the bottom-left cell.
        self.pixels[:, 31, 0] = 255
        records_dir = os.path.join(self.get_temp_dir(), "artifact")
        fake_data.write_labeled_records(
            records_dir,
            {"test": [_labels("No Finding")] * 4},
            image_size=_SIZE,
            split_pixels={"test": self.pixels},
        )
        result = localization_eval.localize_split(
            self.explainer, records_dir, "test", self.box_set, probabilities=self.probabilities,
            image_indices=_NAMES, patient_ids=[1, 1, 2, 2], bootstrap=metrics.BootstrapConfig(resamples=0),
        )  # fmt: skip
        self.assertEqual(result.summary["mean_maps"]["peak_cell"], [7, 0])
        self.assertEqual(result.summary["mean_maps"]["peak_cell_share"], 1.0)

    def test_without_mean_maps(self):
        result = self._localize(mean_maps=False)
        self.assertIsNone(result.mean_cams)
        self.assertNotIn("mean_maps", result.summary)
        self.assertEqual(result.summary["overall"]["pairs"], 3)

    def test_records_out_of_order_are_refused(self):
        with self.assertRaisesRegex(ValueError, r"not in the order they were predicted in"):
            self._localize(image_indices=list(reversed(_NAMES)))
        with self.assertRaisesRegex(ValueError, r"boxes are scaled to 64 pixels but the model takes 32"):
            other = boxes.read_boxes(self.box_set.path, image_size=64, images=set(_NAMES))
            localization_eval.localize_split(
                self.explainer, self.records_dir, "test", other, probabilities=self.probabilities,
                image_indices=_NAMES, patient_ids=[1, 1, 2, 2], bootstrap=metrics.BootstrapConfig(resamples=0),
            )  # fmt: skip


if __name__ == "__main__":
    tf.test.main()
