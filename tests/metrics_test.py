"""Tests for trainer.evaluation.metrics: AUCs, patient bootstrap, thresholds and subgroups."""

import json
import math

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from sklearn import metrics as sk_metrics

from tfrecords import schema
from trainer.evaluation import metrics


def _random_split(num_patients, *, seed=0, images_per_patient=3, num_labels=schema.NUM_LABELS, signal=1.0):
    """Labels, scores that carry `signal` about them, and patient ids."""
    rng = np.random.default_rng(seed)
    patient_ids = np.repeat(np.arange(num_patients) * 7 + 100, images_per_patient)
    n = len(patient_ids)
    y_true = (rng.random((n, num_labels)) < 0.3).astype(np.int64)
    y_score = 1 / (1 + np.exp(-(signal * (2 * y_true - 1) + rng.normal(size=(n, num_labels)))))
    return y_true, y_score, patient_ids


class RocAucTest(parameterized.TestCase, tf.test.TestCase):
    def test_hand_worked_auc(self):
        # Positives score 0.35 and 0.8, negatives 0.1 and 0.4. Of the 4 (positive, negative) pairs,
        # the positive ranks higher in 3: (0.35>0.1), (0.8>0.1), (0.8>0.4); (0.35<0.4) fails. AUC = 3/4.
        y_true = np.array([0, 0, 1, 1])
        y_score = np.array([0.1, 0.4, 0.35, 0.8])
        self.assertAllClose(metrics.roc_auc(y_true, y_score), 0.75)
        self.assertAllClose(metrics.roc_auc(y_true, y_score), sk_metrics.roc_auc_score(y_true, y_score))

    def test_hand_worked_auc_with_tie(self):
        # Pairs: (0.2 vs 0.2) tie = 1/2, (0.2 vs 0.6) = 0, (0.9 vs 0.2) = 1, (0.9 vs 0.6) = 1. AUC = 2.5/4.
        y_true = np.array([0, 1, 0, 1])
        y_score = np.array([0.2, 0.2, 0.6, 0.9])
        self.assertAllClose(metrics.roc_auc(y_true, y_score), 0.625)
        self.assertAllClose(metrics.weighted_roc_auc(y_true, y_score, np.ones((1, 4)))[0], 0.625)

    def test_hand_worked_average_precision(self):
        # Ranked by score: 0.8 (pos), 0.4 (neg), 0.35 (pos), 0.1 (neg). Recall steps of 1/2 at
        # precision 1/1 and 2/3: AP = 0.5 * 1 + 0.5 * 2/3 = 0.8333.
        y_true = np.array([0, 0, 1, 1])
        y_score = np.array([0.1, 0.4, 0.35, 0.8])
        self.assertAllClose(metrics.average_precision(y_true, y_score), 0.5 + 0.5 * 2 / 3)
        self.assertAllClose(
            metrics.average_precision(y_true, y_score), sk_metrics.average_precision_score(y_true, y_score)
        )

    def test_constant_predictor_gives_one_half(self):
        y_true, _, patient_ids = _random_split(30, num_labels=3)
        y_score = np.full(y_true.shape, 0.42)
        for k in range(3):
            self.assertAllClose(metrics.roc_auc(y_true[:, k], y_score[:, k]), 0.5)
        summary = metrics.summarize(
            y_true,
            y_score,
            patient_ids=patient_ids,
            labels=("A", "B", "C"),
            bootstrap=metrics.BootstrapConfig(resamples=50),
        )
        for finding in summary["findings"]:
            self.assertAllClose(finding["auc"], 0.5)
            self.assertAllClose([finding["auc_ci_low"], finding["auc_ci_high"]], [0.5, 0.5])
            # The only finite threshold is the constant: everyone positive.
            self.assertAllClose(finding["threshold"], 0.42)
            self.assertAllClose([finding["sensitivity"], finding["specificity"]], [1.0, 0.0])

    @parameterized.parameters(
        (np.array([0, 0, 0, 0]),),
        (np.array([1, 1, 1]),),
        (np.array([], dtype=np.int64),),
    )
    def test_one_class_is_undefined(self, y_true):
        y_score = np.linspace(0, 1, len(y_true))
        self.assertTrue(math.isnan(metrics.roc_auc(y_true, y_score)))
        self.assertTrue(math.isnan(metrics.average_precision(y_true, y_score)))
        self.assertTrue(math.isnan(metrics.youden_threshold(y_true, y_score).threshold))

    @parameterized.parameters(0, 1, 2)
    def test_weighted_auc_matches_sklearn_sample_weight_and_repetition(self, seed):
        rng = np.random.default_rng(seed)
        y_true = rng.integers(0, 2, size=40)
        y_score = np.round(rng.random(40), 1)  # Rounded: many ties.
        weights = rng.integers(0, 4, size=(5, 40)).astype(np.float64)
        ours = metrics.weighted_roc_auc(y_true, y_score, weights)
        for row, w in enumerate(weights):
            expected = sk_metrics.roc_auc_score(y_true, y_score, sample_weight=w)
            repeated = np.repeat(np.arange(40), w.astype(int))
            self.assertAllClose(ours[row], expected)
            self.assertAllClose(ours[row], sk_metrics.roc_auc_score(y_true[repeated], y_score[repeated]))

    def test_weighted_auc_without_negatives_in_a_row_is_nan(self):
        y_true = np.array([1, 0, 1])
        weights = np.array([[1.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
        result = metrics.weighted_roc_auc(y_true, np.array([0.3, 0.2, 0.9]), weights)
        self.assertTrue(math.isnan(result[0]))
        self.assertAllClose(result[1], 1.0)


class YoudenTest(tf.test.TestCase):
    def test_matches_brute_force_over_all_thresholds(self):
        rng = np.random.default_rng(3)
        y_true = rng.integers(0, 2, size=60)
        y_score = rng.random(60) + 0.4 * y_true
        point = metrics.youden_threshold(y_true, y_score)
        best_j = max(
            p.sensitivity + p.specificity - 1 for p in (metrics.rates_at(y_true, y_score, t) for t in y_score)
        )
        at_point = metrics.rates_at(y_true, y_score, point.threshold)
        self.assertAllClose(point.sensitivity + point.specificity - 1, best_j)
        self.assertAllClose(
            [at_point.sensitivity, at_point.specificity], [point.sensitivity, point.specificity]
        )

    def test_hand_worked(self):
        # Scores 0.1 (neg), 0.35 (pos), 0.4 (neg), 0.8 (pos). At threshold 0.35: TPR 2/2, FPR 1/2,
        # J = 1/2; at 0.8: TPR 1/2, FPR 0, J = 1/2; tie goes to the higher threshold 0.8.
        point = metrics.youden_threshold(np.array([0, 1, 0, 1]), np.array([0.1, 0.35, 0.4, 0.8]))
        self.assertAllClose([point.threshold, point.sensitivity, point.specificity], [0.8, 0.5, 1.0])


class BootstrapTest(tf.test.TestCase):
    def test_matches_sklearn_on_explicitly_resampled_patients(self):
        y_true, y_score, patient_ids = _random_split(12, num_labels=2, seed=5)
        resamples = 40
        ours = metrics.bootstrap_aucs(y_true, y_score, patient_ids, resamples=resamples, seed=7)
        draws = metrics.patient_bootstrap_draws(patient_ids, resamples=resamples, seed=7)
        unique_patients = np.unique(patient_ids)
        for r in range(resamples):
            rows = np.concatenate([np.flatnonzero(patient_ids == unique_patients[p]) for p in draws[r]])
            for k in range(2):
                if len(set(y_true[rows, k])) < 2:
                    self.assertTrue(math.isnan(ours[r, k]))
                else:
                    self.assertAllClose(
                        ours[r, k], sk_metrics.roc_auc_score(y_true[rows, k], y_score[rows, k])
                    )

    def test_images_of_one_patient_move_together(self):
        # Patient 10 has 3 images, patient 20 two, patient 30 one.
        patient_ids = np.array([10, 20, 10, 30, 20, 10])
        draws = metrics.patient_bootstrap_draws(patient_ids, resamples=200, seed=0)
        weights = metrics.image_weights(patient_ids, draws)
        self.assertEqual(weights.shape, (200, 6))
        for patient in (10, 20):
            columns = weights[:, patient_ids == patient]
            self.assertAllEqual(columns, np.repeat(columns[:, :1], columns.shape[1], axis=1))
        # Each resample draws 3 patients, so the multiplicities of the distinct patients sum to 3.
        per_patient = weights[:, [0, 1, 3]]
        self.assertAllEqual(per_patient.sum(axis=1), np.full(200, 3.0))
        # And resampling does vary the sample (it is not the identity).
        self.assertGreater(np.abs(per_patient - 1).sum(), 0)

    def test_interval_contains_estimate_and_narrows_with_more_data(self):
        widths = []
        for num_patients in (40, 400):
            y_true, y_score, patient_ids = _random_split(num_patients, num_labels=4, seed=num_patients)
            summary = metrics.summarize(
                y_true,
                y_score,
                patient_ids=patient_ids,
                labels=("A", "B", "C", "D"),
                bootstrap=metrics.BootstrapConfig(resamples=300, seed=1),
            )
            for finding in summary["findings"]:
                self.assertLessEqual(finding["auc_ci_low"], finding["auc"])
                self.assertGreaterEqual(finding["auc_ci_high"], finding["auc"])
            widths.append(np.mean([f["auc_ci_high"] - f["auc_ci_low"] for f in summary["findings"]]))
            low, high = summary["mean_auc_14_ci"]
            self.assertBetween(summary["mean_auc_14"], low, high)
        # Ten times the patients: the width should shrink by about sqrt(10); ask for half.
        self.assertLess(widths[1], 0.5 * widths[0])

    def test_seeded(self):
        y_true, y_score, patient_ids = _random_split(20, num_labels=2)
        first = metrics.bootstrap_aucs(y_true, y_score, patient_ids, resamples=30, seed=3)
        again = metrics.bootstrap_aucs(y_true, y_score, patient_ids, resamples=30, seed=3)
        other = metrics.bootstrap_aucs(y_true, y_score, patient_ids, resamples=30, seed=4)
        self.assertAllEqual(first, again)
        self.assertNotAllClose(first, other)


class SummarizeTest(tf.test.TestCase):
    def test_absent_finding_is_undefined_not_zero(self):
        y_true, y_score, patient_ids = _random_split(30, seed=2)
        hernia = schema.LABELS.index("Hernia")
        edema = schema.LABELS.index("Edema")
        y_true[:, hernia] = 0  # No positive in the split.
        y_true[:, edema] = 1  # No negative in the split.
        summary = metrics.summarize(
            y_true, y_score, patient_ids=patient_ids, bootstrap=metrics.BootstrapConfig(resamples=20)
        )
        json.dumps(summary, allow_nan=False)  # Strict JSON: undefined is null, not NaN.
        for index in (hernia, edema):
            finding = summary["findings"][index]
            for key in (
                "auc",
                "auc_ci_low",
                "auc_ci_high",
                "pr_auc",
                "threshold",
                "sensitivity",
                "specificity",
            ):
                self.assertIsNone(finding[key], msg=f"{finding['label']} {key}")
        self.assertEqual(summary["findings"][hernia]["prevalence"], 0.0)
        self.assertEqual(summary["findings"][edema]["prevalence"], 1.0)
        self.assertEqual(summary["findings_defined"], 12)
        defined = [f["auc"] for f in summary["findings"][:14] if f["auc"] is not None]
        self.assertAllClose(summary["mean_auc_14"], np.mean(defined))

    def test_means_over_14_and_15(self):
        y_true, y_score, patient_ids = _random_split(25, seed=4)
        summary = metrics.summarize(
            y_true, y_score, patient_ids=patient_ids, bootstrap=metrics.BootstrapConfig(resamples=0)
        )
        aucs = [sk_metrics.roc_auc_score(y_true[:, k], y_score[:, k]) for k in range(15)]
        self.assertAllClose(summary["mean_auc_14"], np.mean(aucs[:14]))
        self.assertAllClose(summary["mean_auc_15"], np.mean(aucs))
        self.assertEqual(summary["images"], 75)
        self.assertEqual(summary["patients"], 25)
        self.assertIsNone(summary["findings"][0]["auc_ci_low"])  # No resamples, no interval.

    def test_subgroups_with_counts(self):
        y_true, y_score, patient_ids = _random_split(40, num_labels=2, seed=6)
        sex = np.where(np.arange(len(patient_ids)) % 3 == 0, "F", "M")
        view = np.full(len(patient_ids), "PA")
        view[:3] = "AP"
        y_true[:3, 0] = 1  # AP holds only positives of "A": undefined there.
        summary = metrics.summarize(
            y_true,
            y_score,
            patient_ids=patient_ids,
            labels=("A", "B"),
            subgroups={"sex": sex, "view_position": view},
            bootstrap=metrics.BootstrapConfig(resamples=0),
        )
        female = summary["subgroups"]["sex"]["F"]
        mask = sex == "F"
        self.assertEqual(female["images"], int(mask.sum()))
        self.assertEqual(female["patients"], len(np.unique(patient_ids[mask])))
        self.assertEqual(female["positives"]["B"], int(y_true[mask, 1].sum()))
        self.assertAllClose(female["auc"]["A"], sk_metrics.roc_auc_score(y_true[mask, 0], y_score[mask, 0]))
        self.assertIsNone(summary["subgroups"]["view_position"]["AP"]["auc"]["A"])
        self.assertEqual(list(summary["subgroups"]["view_position"]), ["AP", "PA"])

    def test_reference_thresholds(self):
        y_true, y_score, patient_ids = _random_split(20, num_labels=2, seed=8)
        summary = metrics.summarize(
            y_true,
            y_score,
            patient_ids=patient_ids,
            labels=("A", "B"),
            bootstrap=metrics.BootstrapConfig(resamples=0),
            reference_thresholds={"A": 0.5, "B": None},
        )
        a, b = summary["findings"]
        predicted = y_score[:, 0] >= 0.5
        positive = y_true[:, 0] == 1
        self.assertAllClose(a["sensitivity_at_reference"], predicted[positive].mean())
        self.assertAllClose(a["specificity_at_reference"], (~predicted[~positive]).mean())
        self.assertIsNone(b["sensitivity_at_reference"])

    def test_age_bands(self):
        self.assertEqual(
            [metrics.age_band(a) for a in (-1, 0, 17, 18, 39, 40, 79, 80, 95)],
            ["unknown", "0-17", "0-17", "18-39", "18-39", "40-59", "60-79", "80+", "80+"],
        )

    def test_bad_inputs(self):
        with self.assertRaisesRegex(ValueError, r"y_true and y_score must both be \[images, labels\]"):
            metrics.summarize(np.zeros((3, 2)), np.zeros((3, 3)), patient_ids=np.arange(3), labels=("A", "B"))
        with self.assertRaisesRegex(ValueError, "only 0 and 1"):
            metrics.summarize(np.full((3, 1), 2), np.zeros((3, 1)), patient_ids=np.arange(3), labels=("A",))
        with self.assertRaisesRegex(ValueError, "NaN or infinite"):
            metrics.summarize(
                np.zeros((2, 1)), np.array([[0.1], [np.nan]]), patient_ids=np.arange(2), labels=("A",)
            )
        with self.assertRaisesRegex(ValueError, r"patient_ids must have shape \[3\]"):
            metrics.summarize(np.zeros((3, 1)), np.zeros((3, 1)), patient_ids=np.arange(2), labels=("A",))
        with self.assertRaisesRegex(ValueError, "resamples must be >= 0, got -1"):
            metrics.BootstrapConfig(resamples=-1)
        with self.assertRaisesRegex(ValueError, r"confidence must be in \(0, 1\), got 1.5"):
            metrics.BootstrapConfig(confidence=1.5)


class KnownLabelsTest(parameterized.TestCase, tf.test.TestCase):
    """Labels unknown for some images (uncertain or not mentioned) are left out of their metrics."""

    def test_hand_worked_auc_over_known_images(self):
        # Label A on 5 images; image 4 (scoring 0.9) is unknown. Known: positives 0.35 and 0.8,
        # negatives 0.1 and 0.4: 3 of the 4 pairs ordered, AUC 3/4. Counted as a negative, image
        # 4 adds two pairs that no positive wins: 3 of 6, AUC 1/2.
        y_true = np.array([[0], [0], [1], [1], [0]])
        y_score = np.array([[0.1], [0.4], [0.35], [0.8], [0.9]])
        known = np.array([[True], [True], [True], [True], [False]])
        summary = metrics.summarize(
            y_true,
            y_score,
            patient_ids=np.arange(5),
            labels=("A",),
            known=known,
            bootstrap=metrics.BootstrapConfig(resamples=0),
        )
        finding = summary["findings"][0]
        self.assertAllClose(finding["auc"], 0.75)
        self.assertEqual((finding["known"], finding["positives"], finding["negatives"]), (4, 2, 2))
        self.assertAllClose(finding["prevalence"], 0.5)
        unmasked = metrics.summarize(
            y_true,
            y_score,
            patient_ids=np.arange(5),
            labels=("A",),
            bootstrap=metrics.BootstrapConfig(resamples=0),
        )
        self.assertAllClose(unmasked["findings"][0]["auc"], 0.5)
        self.assertNotIn("known", unmasked["findings"][0])

    def test_unknown_entries_change_nothing(self):
        y_true, y_score, patient_ids = _random_split(40, num_labels=3, seed=5)
        rng = np.random.default_rng(6)
        known = rng.random(y_true.shape) > 0.3
        sex = np.where(np.arange(len(patient_ids)) % 2, "F", "M")
        kwargs = dict(
            patient_ids=patient_ids,
            labels=("A", "B", "No Finding"),
            known=known,
            subgroups={"sex": sex},
            bootstrap=metrics.BootstrapConfig(resamples=50, seed=1),
        )
        first = metrics.summarize(y_true, y_score, **kwargs)
        # Flip the labels and redraw the scores where unknown: every figure stays the same.
        other_true = np.where(known, y_true, 1 - y_true)
        other_score = np.where(known, y_score, rng.random(y_score.shape))
        self.assertEqual(json.dumps(first), json.dumps(metrics.summarize(other_true, other_score, **kwargs)))

    def test_all_known_mask_gives_the_unmasked_figures(self):
        y_true, y_score, patient_ids = _random_split(30, num_labels=4, seed=7)
        kwargs = dict(
            patient_ids=patient_ids,
            labels=("A", "B", "C", "No Finding"),
            bootstrap=metrics.BootstrapConfig(resamples=40, seed=2),
        )
        plain = metrics.summarize(y_true, y_score, **kwargs)
        masked = metrics.summarize(y_true, y_score, known=np.ones(y_true.shape, bool), **kwargs)
        for finding in masked["findings"]:
            self.assertEqual(finding.pop("known"), len(y_true))
        self.assertEqual(json.dumps(plain), json.dumps(masked))

    def test_bootstrap_weighs_unknown_images_zero(self):
        # The bootstrap AUC of a label over its known images equals the weighted AUC of that label's
        # known images alone under the same draws.
        y_true, y_score, patient_ids = _random_split(25, num_labels=2, seed=8)
        known = np.ones(y_true.shape, bool)
        known[::3, 1] = False
        samples = metrics.bootstrap_aucs(y_true, y_score, patient_ids, resamples=30, seed=3, known=known)
        draws = metrics.patient_bootstrap_draws(patient_ids, resamples=30, seed=3)
        weights = metrics.image_weights(patient_ids, draws)
        rows = known[:, 1]
        expected = metrics.weighted_roc_auc(y_true[rows, 1], y_score[rows, 1], weights[:, rows])
        self.assertAllClose(samples[:, 1], expected)
        self.assertAllClose(samples[:, 0], metrics.weighted_roc_auc(y_true[:, 0], y_score[:, 0], weights))

    def test_normal_is_left_out_of_the_findings_mean(self):
        # A folder-per-class vocabulary: PNEUMONIA is the one finding, NORMAL its "no finding".
        y_true, y_score, patient_ids = _random_split(20, num_labels=2, seed=9)
        summary = metrics.summarize(
            y_true,
            y_score,
            patient_ids=patient_ids,
            labels=("NORMAL", "PNEUMONIA"),
            bootstrap=metrics.BootstrapConfig(resamples=0),
        )
        self.assertAllClose(summary["mean_auc_14"], summary["findings"][1]["auc"])
        self.assertEqual(summary["findings_defined"], 1)

    def test_known_of_the_wrong_shape(self):
        with self.assertRaisesRegex(ValueError, r"known must have the labels' shape \[3, 1\]"):
            metrics.summarize(
                np.zeros((3, 1)),
                np.zeros((3, 1)),
                patient_ids=np.arange(3),
                labels=("A",),
                known=np.ones((3, 2)),
            )


if __name__ == "__main__":
    tf.test.main()
