"""Tests for trainer.evaluation.localization.scores on hand-made maps, the expected scores worked out in comments."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from trainer.evaluation import metrics
from trainer.evaluation.localization import scores as localization


def _cam(shape, values):
    """A zero map with the given {(row, col): value} pixels set."""
    cam = np.zeros(shape, np.float32)
    for (row, col), value in values.items():
        cam[row, col] = value
    return cam


class BoxMaskTest(parameterized.TestCase, tf.test.TestCase):
    def test_pixel_centres_inside_the_box(self):
        # Box x=1, y=2, w=2, h=1 on a 4x4 grid: centres 1.5 and 2.5 lie in [1, 3), centre 2.5
        # in [2, 3): pixels (row 2, col 1) and (row 2, col 2).
        mask = localization.box_mask((4, 4), [(1, 2, 2, 1)])
        self.assertAllEqual(np.argwhere(mask), [[2, 1], [2, 2]])

    def test_fractional_box_edges(self):
        # x=0.6, w=1.0 covers [0.6, 1.6): only the centre 1.5 (col 1). y=0, h=4: all rows.
        mask = localization.box_mask((4, 4), [(0.6, 0.0, 1.0, 4.0)])
        self.assertAllEqual(mask.sum(axis=0), [0, 4, 0, 0])

    def test_box_smaller_than_a_pixel_takes_the_pixel_of_its_centre(self):
        # x=2.1, w=0.3 holds no centre (2.5 is outside [2.1, 2.4)); its centre (2.25, 1.15)
        # lies in column 2, row 1.
        mask = localization.box_mask((4, 4), [(2.1, 1.0, 0.3, 0.3)])
        self.assertAllEqual(np.argwhere(mask), [[1, 2]])

    def test_union_of_boxes(self):
        mask = localization.box_mask((4, 4), [(0, 0, 1, 1), (3, 3, 1, 1)])
        self.assertAllEqual(np.argwhere(mask), [[0, 0], [3, 3]])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"at least one box"):
            localization.box_mask((4, 4), [])
        with self.assertRaisesRegex(ValueError, r"box sizes must be positive, got w=0"):
            localization.box_mask((4, 4), [(0, 0, 0, 1)])


class PairScoreTest(parameterized.TestCase, tf.test.TestCase):
    # The box covers the top-left 2x2 pixels of a 4x4 map.
    MASK = localization.box_mask((4, 4), [(0, 0, 2, 2)])

    def test_peak_inside_the_box(self):
        # Map: 1.0 at (0, 0), 0.5 at (1, 1) (both inside), 0.5 at (3, 3) (outside). Total mass 2.0.
        cam = _cam((4, 4), {(0, 0): 1.0, (1, 1): 0.5, (3, 3): 0.5})
        # Pointing: the single maximum (0, 0) is inside -> 1.
        # Energy: (1.0 + 0.5) / 2.0 = 0.75.
        # IoU at 0.5 x max: region = {(0,0), (1,1), (3,3)} (all >= 0.5); mask = 4 pixels.
        # Intersection 2, union 4 + 3 - 2 = 5 -> 0.4.
        score = localization.score_pair(cam, self.MASK)
        self.assertEqual(score.pointing_game, 1.0)
        self.assertAllClose(score.energy_inside, 0.75)
        self.assertAllClose(score.iou, 0.4)
        self.assertFalse(score.empty)

    def test_peak_outside_the_box(self):
        # Map: 0.2 at (0, 1) inside, 0.8 at (2, 3) outside. Pointing 0; energy 0.2 / 1.0 = 0.2;
        # region at 0.5 x 0.8 = 0.4 is {(2, 3)} only: intersection 0, IoU 0.
        cam = _cam((4, 4), {(0, 1): 0.2, (2, 3): 0.8})
        score = localization.score_pair(cam, self.MASK)
        self.assertEqual(score.pointing_game, 0.0)
        self.assertAllClose(score.energy_inside, 0.2)
        self.assertEqual(score.iou, 0.0)

    def test_flat_peak_counts_the_share_inside(self):
        # Four pixels share the maximum 1.0: (0, 0), (1, 0) inside, (3, 2), (3, 3) outside.
        # Pointing = 2 / 4 = 0.5 (the hit rate of picking one of them at random).
        cam = _cam((4, 4), {(0, 0): 1.0, (1, 0): 1.0, (3, 2): 1.0, (3, 3): 1.0})
        self.assertEqual(localization.pointing_game(cam, self.MASK), 0.5)

    def test_perfect_map(self):
        # The map is the box itself: every score is 1.
        score = localization.score_pair(self.MASK.astype(np.float32), self.MASK)
        self.assertEqual((score.pointing_game, score.energy_inside, score.iou), (1.0, 1.0, 1.0))

    @parameterized.parameters(0.25, 0.5, 0.75)
    def test_iou_threshold_is_relative_to_the_maximum(self, threshold):
        # A ramp 0.1, 0.2, ..., 1.6 in row-major order; the box is the last row (0.13..0.16 x 10).
        cam = np.arange(1, 17, dtype=np.float32).reshape(4, 4) / 10.0
        mask = localization.box_mask((4, 4), [(0, 3, 4, 1)])
        # Region: values >= threshold * 1.6, i.e. ramp index k (1..16) >= 16 * threshold:
        # 0.25 -> k >= 4: 13 pixels; 0.5 -> k >= 8: 9; 0.75 -> k >= 12: 5. Each holds the whole
        # last row (4 pixels), so IoU = 4 / region size.
        expected = {0.25: 4 / 13, 0.5: 4 / 9, 0.75: 4 / 5}[threshold]
        self.assertAllClose(localization.thresholded_iou(cam, mask, threshold=threshold), expected)
        self.assertEqual(localization.CAM_THRESHOLD, 0.5)

    def test_empty_map_scores_zero(self):
        score = localization.score_pair(np.zeros((4, 4)), self.MASK)
        self.assertEqual((score.pointing_game, score.energy_inside, score.iou), (0.0, 0.0, 0.0))
        self.assertTrue(score.empty)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"one size, got \(4, 4\) and \(3, 3\)"):
            localization.score_pair(np.zeros((4, 4)), np.zeros((3, 3), bool))
        with self.assertRaisesRegex(ValueError, r"NaN or infinite"):
            localization.score_pair(np.full((4, 4), np.nan), self.MASK)
        with self.assertRaisesRegex(ValueError, r"threshold must be in \(0, 1\], got 0"):
            localization.thresholded_iou(np.ones((4, 4)), self.MASK, threshold=0.0)


class SummarizeTest(parameterized.TestCase, tf.test.TestCase):
    def test_means_per_finding_and_overall(self):
        # Mass: pointing 1, 0 -> 0.5; energy 0.8, 0.2 -> 0.5; IoU 0.6, 0.0 -> 0.3.
        # Nodule: pointing 1 -> 1; energy 0.5; IoU 0.25.
        # Overall (3 pairs): pointing 2/3, energy 1.5/3 = 0.5, IoU 0.85/3.
        scores = [[1, 0.8, 0.6], [0, 0.2, 0.0], [1, 0.5, 0.25]]
        summary = localization.summarize(
            scores,
            ["Mass", "Mass", "Nodule"],
            np.array([1, 2, 2]),
            empty=[False, True, False],
            labels=["Mass", "Nodule", "Edema"],
            bootstrap=metrics.BootstrapConfig(resamples=0),
        )
        mass, nodule, edema = summary["findings"]
        self.assertEqual(
            (mass["label"], mass["pairs"], mass["patients"], mass["empty_maps"]), ("Mass", 2, 2, 1)
        )
        self.assertAllClose([mass["pointing_game"], mass["energy_inside"], mass["iou"]], [0.5, 0.5, 0.3])
        self.assertAllClose([nodule["pointing_game"], nodule["energy_inside"], nodule["iou"]], [1, 0.5, 0.25])
        self.assertIsNone(mass["pointing_game_ci_low"])  # No resamples, no interval.
        # A finding without pairs is undefined, not 0.
        self.assertEqual(edema["pairs"], 0)
        self.assertIsNone(edema["pointing_game"])
        overall = summary["overall"]
        self.assertEqual((overall["pairs"], overall["patients"], overall["empty_maps"]), (3, 2, 1))
        self.assertAllClose(
            [overall["pointing_game"], overall["energy_inside"], overall["iou"]], [2 / 3, 0.5, 0.85 / 3]
        )
        self.assertEqual(summary["cam_threshold"], localization.CAM_THRESHOLD)

    def test_bootstrap_resamples_patients_with_the_auc_draws(self):
        # Patient 1 has two pairs scoring pointing 1; patient 2 one pair scoring 0. A resample
        # drawing patient 1 a times and patient 2 b times (a + b = 2) has mean 2a / (2a + b).
        scores = [[1, 1, 1], [1, 1, 1], [0, 0, 0]]
        patient_ids = np.array([1, 1, 2])
        config = metrics.BootstrapConfig(resamples=400, seed=3, confidence=0.9)
        summary = localization.summarize(scores, ["Mass"] * 3, patient_ids, bootstrap=config)
        draws = metrics.patient_bootstrap_draws(patient_ids, resamples=400, seed=3)
        a = (draws == 0).sum(axis=1)
        b = 2 - a
        expected = metrics.percentile_interval(2 * a / (2 * a + b), 0.9)
        overall = summary["overall"]
        self.assertAllClose([overall["pointing_game_ci_low"], overall["pointing_game_ci_high"]], expected)
        # The possible means are 0 (b = 2), 2/3 (a = b = 1) and 1 (a = 2): a 90% interval from 0 to 1.
        self.assertEqual(expected, (0.0, 1.0))
        self.assertEqual(summary["bootstrap"]["unit"], "patient")

    def test_interval_brackets_the_mean(self):
        rng = np.random.default_rng(0)
        scores = rng.random((60, 3))
        summary = localization.summarize(
            scores,
            ["Mass"] * 60,
            np.repeat(np.arange(20), 3),
            bootstrap=metrics.BootstrapConfig(resamples=200),
        )
        for name in localization.SCORES:
            entry = summary["overall"]
            self.assertLess(entry[f"{name}_ci_low"], entry[name])
            self.assertGreater(entry[f"{name}_ci_high"], entry[name])

    def test_mismatched_lengths(self):
        with self.assertRaisesRegex(ValueError, r"one entry per \(image, finding\) pair"):
            localization.summarize([[1, 1, 1]], ["Mass", "Nodule"], [1])


if __name__ == "__main__":
    tf.test.main()
