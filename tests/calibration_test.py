"""Tests for trainer.evaluation.calibration: bins, ECE on hand-made predictions, Platt scaling."""

import json
import math

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from sklearn import calibration as sk_calibration
from sklearn import metrics as sk_metrics

from tfrecords import schema
from trainer.evaluation import calibration


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _miscalibrated(n, *, seed=0, slope=2.0, intercept=-1.0):
    """Reported p = sigmoid(z), true P(y=1) = sigmoid(slope * z + intercept): Platt's exact case."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, size=n)
    y = (rng.random(n) < _sigmoid(slope * z + intercept)).astype(np.int64)
    return y, _sigmoid(z)


class ReliabilityTest(parameterized.TestCase, tf.test.TestCase):
    def test_hand_worked_ece(self):
        # Ten images in three bins of width 0.1:
        #   bin 0 (0, 0.1]:    0.05, 0.05       labels 1, 0     -> positives 0.5,  mean 0.05, gap 0.45
        #   bin 2 (0.2, 0.3]:  0.25 x 4          labels 1,0,0,0 -> positives 0.25, mean 0.25, gap 0
        #   bin 8 (0.8, 0.9]:  0.85 x 4          labels 1,1,0,0 -> positives 0.5,  mean 0.85, gap 0.35
        # ECE = (2 * 0.45 + 4 * 0 + 4 * 0.35) / 10 = 0.23.
        y_prob = np.array([0.05, 0.05, 0.25, 0.25, 0.25, 0.25, 0.85, 0.85, 0.85, 0.85])
        y_true = np.array([1, 0, 1, 0, 0, 0, 1, 1, 0, 0])
        self.assertAllClose(calibration.expected_calibration_error(y_true, y_prob), 0.23)
        bins = calibration.reliability(y_true, y_prob)
        self.assertAllEqual(bins.counts, [2, 0, 4, 0, 0, 0, 0, 0, 4, 0])
        self.assertAllClose(bins.fraction_positive[[0, 2, 8]], [0.5, 0.25, 0.5])
        self.assertAllClose(bins.mean_predicted[[0, 2, 8]], [0.05, 0.25, 0.85])
        self.assertTrue(np.isnan(bins.mean_predicted[1]))
        self.assertAllClose(bins.edges, np.linspace(0, 1, 11))

    def test_perfectly_calibrated_bins_give_zero(self):
        # Each bin's positive share equals its probability: 0.2 with 1 of 5, 0.6 with 3 of 5.
        y_prob = np.array([0.2] * 5 + [0.6] * 5)
        y_true = np.array([1, 0, 0, 0, 0, 1, 1, 1, 0, 0])
        self.assertAllClose(calibration.expected_calibration_error(y_true, y_prob), 0.0)

    def test_fewer_bins(self):
        # Two bins: (0, 0.5] holds 0.1, 0.3 (labels 0, 1): mean 0.2, share 0.5, gap 0.3;
        # (0.5, 1] holds 0.9 (label 1): gap 0.1. ECE = (2 * 0.3 + 1 * 0.1) / 3 = 0.7 / 3.
        ece = calibration.expected_calibration_error(
            np.array([0, 1, 1]), np.array([0.1, 0.3, 0.9]), num_bins=2
        )
        self.assertAllClose(ece, 0.7 / 3)

    def test_bin_edges_follow_sklearn(self):
        # (b/B, (b+1)/B]: 0.1 belongs to the first bin, 0.1 + 1e-9 to the second; 0 and 1 to the ends.
        self.assertAllEqual(calibration.bin_indices([0.0, 0.1, 0.1 + 1e-9, 0.5, 1.0]), [0, 0, 1, 4, 9])

    @parameterized.parameters(5, 10, 15)
    def test_curves_equal_sklearn_calibration_curve(self, num_bins):
        y_true, y_prob = _miscalibrated(500, seed=num_bins)
        ours = calibration.reliability(y_true, y_prob, num_bins=num_bins)
        prob_true, prob_pred = sk_calibration.calibration_curve(y_true, y_prob, n_bins=num_bins)
        used = ours.counts > 0
        self.assertAllClose(ours.fraction_positive[used], prob_true)
        self.assertAllClose(ours.mean_predicted[used], prob_pred)

    def test_no_images_is_undefined(self):
        self.assertTrue(math.isnan(calibration.expected_calibration_error(np.array([]), np.array([]))))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, r"both be \[N\]"):
            calibration.reliability(np.array([0, 1]), np.array([0.5]))
        with self.assertRaisesRegex(ValueError, r"only 0 and 1"):
            calibration.reliability(np.array([0, 2]), np.array([0.5, 0.5]))
        with self.assertRaisesRegex(ValueError, r"probabilities in \[0, 1\]"):
            calibration.reliability(np.array([0, 1]), np.array([0.5, 1.5]))
        with self.assertRaisesRegex(ValueError, r"num_bins must be >= 1, got 0"):
            calibration.bin_indices([0.5], 0)


class PlattTest(parameterized.TestCase, tf.test.TestCase):
    def test_recovers_the_true_map_and_lowers_ece(self):
        y_true, y_prob = _miscalibrated(20000, seed=1)
        fitted = calibration.fit_platt(y_true, y_prob)
        # True map: slope 2, intercept -1 (smoothing moves it by ~1e-4 at this size).
        self.assertAllClose([fitted.slope, fitted.intercept], [2.0, -1.0], atol=0.1)
        test_true, test_prob = _miscalibrated(20000, seed=2)
        before = calibration.expected_calibration_error(test_true, test_prob)
        after = calibration.expected_calibration_error(test_true, fitted(test_prob))
        self.assertGreater(before, 0.05)
        self.assertLess(after, 0.02)
        # An increasing map: the AUC is unchanged.
        self.assertAllClose(
            sk_metrics.roc_auc_score(test_true, fitted(test_prob)),
            sk_metrics.roc_auc_score(test_true, test_prob),
        )

    def test_perfect_separation_stays_finite(self):
        # Val separates the finding perfectly; Platt's smoothed targets (11/12 and 1/12) keep the fit finite.
        y_true = np.r_[np.zeros(10), np.ones(10)].astype(int)
        y_prob = np.r_[np.linspace(0.1, 0.4, 10), np.linspace(0.6, 0.9, 10)]
        fitted = calibration.fit_platt(y_true, y_prob)
        # Without smoothing the slope would grow without bound (a step at 0.5). Symmetric data:
        # intercept 0; the slope settles near 2 (logit 0.9 = 2.2, so the extremes map to ~0.01 / ~0.99).
        self.assertBetween(fitted.slope, 1.0, 4.0)
        self.assertAllClose(fitted.intercept, 0.0, atol=1e-6)
        self.assertAllInRange(fitted(y_prob), 0.005, 0.995)

    def test_too_few_positives_is_not_fitted(self):
        y_true = np.r_[np.zeros(50), np.ones(4)].astype(int)
        reason = calibration.fit_platt(y_true, np.linspace(0.01, 0.99, 54))
        self.assertEqual(reason, "4 positive and 50 negative images; the fit needs 5 of each")

    def test_decreasing_fit_is_refused(self):
        # Positives get the low probabilities: the fitted slope is negative.
        y_true = np.r_[np.ones(20), np.zeros(20)].astype(int)
        reason = calibration.fit_platt(y_true, np.linspace(0.05, 0.95, 40))
        self.assertRegex(reason, r"fitted slope -\d.* is not positive")

    def test_scaling_rejects_a_decreasing_map(self):
        with self.assertRaisesRegex(ValueError, r"finite slope > 0"):
            calibration.PlattScaling(-1.0, 0.0)


class CalibrationTest(parameterized.TestCase, tf.test.TestCase):
    def _fitted(self):
        n = 600
        y_true = np.zeros((n, schema.NUM_LABELS), np.int64)
        y_prob = np.full((n, schema.NUM_LABELS), 0.5)
        for k in range(schema.NUM_LABELS):
            y_true[:, k], y_prob[:, k] = _miscalibrated(n, seed=k)
        y_true[:, schema.LABELS.index("Hernia")] = 0
        y_true[:3, schema.LABELS.index("Hernia")] = 1  # Three positives: too few to fit.
        return y_true, y_prob, calibration.fit(y_true, y_prob, source_split="val")

    def test_fit_and_apply_per_label(self):
        y_true, y_prob, fitted = self._fitted()
        hernia = schema.LABELS.index("Hernia")
        self.assertIsNone(fitted.scalings["Hernia"])
        self.assertIn("3 positive", fitted.reasons["Hernia"])
        calibrated = fitted.apply(y_prob)
        self.assertEqual(calibrated.dtype, np.float32)
        self.assertAllClose(calibrated[:, hernia], y_prob[:, hernia])  # Unfitted: unchanged.
        mass = schema.LABELS.index("Mass")
        self.assertAllClose(calibrated[:, mass], fitted.scalings["Mass"](y_prob[:, mass]), atol=1e-6)
        summary_before = calibration.summarize(y_true, y_prob)
        summary_after = calibration.summarize(y_true, calibrated)
        self.assertLess(summary_after["mean_ece_14"], summary_before["mean_ece_14"])

    def test_thresholds_select_the_same_images(self):
        # An increasing map: p >= t exactly when map(p) >= map(t).
        _, y_prob, fitted = self._fitted()
        calibrated = fitted.apply(y_prob)
        for k, label in enumerate(schema.LABELS):
            for threshold in (0.2, 0.5, 0.77):
                mapped = fitted.apply_threshold(label, threshold)
                raw_pick = y_prob[:, k] >= threshold
                # float32 rounding of the calibrated values: compare away from the threshold.
                far = np.abs(calibrated[:, k] - mapped) > 1e-6
                self.assertAllEqual(raw_pick[far], (calibrated[:, k] >= mapped)[far])
        self.assertIsNone(fitted.apply_threshold("Mass", None))

    def test_json_round_trip(self):
        _, y_prob, fitted = self._fitted()
        data = json.loads(json.dumps(fitted.to_json(), allow_nan=False))
        self.assertEqual(data["method"], "platt")
        self.assertIsNone(data["parameters"]["Hernia"])
        self.assertEqual(list(data["not_fitted"]), ["Hernia"])
        again = calibration.Calibration.from_json(data)
        self.assertAllClose(again.apply(y_prob), fitted.apply(y_prob))
        self.assertEqual(again.source_split, "val")

    def test_from_json_errors_name_the_source(self):
        with self.assertRaisesRegex(
            ValueError, r"thresholds.json: calibration method must be 'platt', got 'isotonic'"
        ):
            calibration.Calibration.from_json({"method": "isotonic"}, where="thresholds.json")
        with self.assertRaisesRegex(ValueError, r"thresholds.json: malformed calibration"):
            calibration.Calibration.from_json({"method": "platt"}, where="thresholds.json")

    def test_apply_checks_the_shape(self):
        _, _, fitted = self._fitted()
        with self.assertRaisesRegex(ValueError, r"probabilities must be \[N, 15\], got \(2, 3\)"):
            fitted.apply(np.zeros((2, 3)))

    def test_summarize_is_json_ready(self):
        y_true, y_prob, _ = self._fitted()
        summary = calibration.summarize(y_true, y_prob, num_bins=5)
        json.dumps(summary, allow_nan=False)
        self.assertEqual(summary["num_bins"], 5)
        self.assertLen(summary["findings"], schema.NUM_LABELS)
        self.assertLen(summary["findings"][0]["bins"]["counts"], 5)
        self.assertAllClose(
            summary["findings"][0]["ece"],
            calibration.expected_calibration_error(y_true[:, 0], y_prob[:, 0], num_bins=5),
        )
        # NIH's labels: the mean is over the 14 findings, "No Finding" left out.
        self.assertEqual(summary["mean_ece_labels"], list(schema.FINDINGS))
        eces = [f["ece"] for f in summary["findings"][: len(schema.FINDINGS)]]
        self.assertAllClose(summary["mean_ece_14"], np.mean(eces))

    def test_summarize_another_vocabulary(self):
        # PadChest-style names: "normal" is that data set's "no finding" label.
        labels = ("normal", "nodule", "pleural effusion")
        rng = np.random.default_rng(2)
        y_true = rng.integers(0, 2, size=(60, 3))
        y_prob = np.clip(y_true * 0.6 + rng.random((60, 3)) * 0.4, 0.0, 1.0)
        summary = calibration.summarize(y_true, y_prob, labels=labels, num_bins=5)
        self.assertEqual([f["label"] for f in summary["findings"]], list(labels))
        self.assertEqual(summary["mean_ece_labels"], ["nodule", "pleural effusion"])
        expected = [
            calibration.expected_calibration_error(y_true[:, k], y_prob[:, k], num_bins=5) for k in (1, 2)
        ]
        self.assertAllClose(summary["mean_ece_14"], np.mean(expected))
        with self.assertRaisesRegex(ValueError, r"must both be \[N, 3\], got \(60, 15\)"):
            calibration.summarize(np.zeros((60, 15)), np.zeros((60, 15)), labels=labels)


if __name__ == "__main__":
    tf.test.main()
