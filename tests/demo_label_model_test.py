"""Tests for demo_data.label_model: NIH-like labels, follow-ups, splits and the boxed share."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from demo_data import label_model, layout
from tfrecords import schema


class LabelStatisticsTest(tf.test.TestCase, parameterized.TestCase):
    def test_prevalences_and_co_occurrence_like_nih(self):
        rows = label_model.sample_images(20000, seed=5)
        multi_hot = np.stack([schema.labels_to_multi_hot(row.finding_labels) for row in rows])
        share = dict(zip(schema.LABELS, multi_hot.mean(axis=0)))
        # NIH: 60,412 / 112,120 = 53.9% No Finding, 18.5% of rows with several findings.
        self.assertBetween(share["No Finding"], 0.51, 0.57)
        self.assertBetween(np.mean(multi_hot[:, :-1].sum(axis=1) > 1), 0.14, 0.21)
        by_share = sorted(schema.FINDINGS, key=share.get, reverse=True)
        self.assertEqual(by_share[:3], ["Infiltration", "Effusion", "Atelectasis"])
        self.assertEqual(by_share[-1], "Hernia")
        self.assertBetween(share["Hernia"], 0.015, 0.03)
        # The drawn shares follow finding_prevalences().
        self.assertAllClose(multi_hot[:, :-1].mean(axis=0), label_model.finding_prevalences(), atol=0.01)
        # Findings co-occur more than independence would give, and the most common pair is NIH's.
        # NIH: 3,990 Effusion+Infiltration rows, 1.7x independence; the one-factor copula gives ~1.45x.
        findings = multi_hot[:, :-1].astype(np.float64)
        pairs = findings.T @ findings
        np.fill_diagonal(pairs, 0)
        i, j = np.unravel_index(np.argmax(pairs), pairs.shape)
        self.assertEqual({schema.FINDINGS[i], schema.FINDINGS[j]}, {"Effusion", "Infiltration"})
        expected_independent = len(rows) * share["Effusion"] * share["Infiltration"]
        self.assertGreater(pairs[i, j], 1.25 * expected_independent)

    def test_follow_up_counts_sum_and_bounds(self):
        counts = label_model.sample_follow_up_counts(np.random.default_rng(0), 2000, 600)
        self.assertEqual(counts.sum(), 2000)
        self.assertGreaterEqual(counts.min(), 1)
        self.assertLessEqual(counts.max(), layout.MAX_FOLLOW_UPS)
        self.assertGreater(np.mean(counts == 1), 0.2)  # Many patients have a single image...
        self.assertGreater(counts.max(), 10)  # ...and some have many, as in NIH.

    def test_same_seed_same_rows(self):
        self.assertEqual(label_model.sample_images(50, seed=2), label_model.sample_images(50, seed=2))
        self.assertNotEqual(label_model.sample_images(50, seed=2), label_model.sample_images(50, seed=3))

    @parameterized.named_parameters(
        ("zero_images", 0, None, "num_images"),
        ("zero_patients", 5, 0, "num_patients"),
        ("more_patients_than_images", 5, 6, "num_patients.*at most num_images"),
        ("too_many_follow_ups", 2002, 2, "follow-ups per patient"),
    )
    def test_bad_counts_raise(self, num_images, num_patients, message):
        with self.assertRaisesRegex(ValueError, message):
            label_model.sample_images(num_images, num_patients=num_patients)


class SplitTest(tf.test.TestCase):
    def test_patient_disjoint_near_nih_share(self):
        rows = label_model.sample_images(2000, seed=0)
        train_val, test = label_model.split_patients(rows, seed=0)
        patient = {row.image_index: row.patient_id for row in rows}
        self.assertEmpty({patient[n] for n in train_val} & {patient[n] for n in test})
        self.assertCountEqual(train_val + test, patient)
        self.assertAllClose(len(test) / len(rows), label_model.TEST_FRACTION, atol=0.01)


class BoxedImagesTest(tf.test.TestCase, parameterized.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rows = label_model.sample_images(2000, seed=0)
        _, cls.test = label_model.split_patients(cls.rows, seed=0)
        test = set(cls.test)
        cls.eligible = {
            row.image_index
            for row in cls.rows
            if row.image_index in test and set(row.findings) & set(layout.BBOX_LABELS)
        }

    def test_nih_share_of_the_eligible_test_images(self):
        boxed = label_model.choose_boxed_images(self.rows, self.test, seed=0)
        self.assertContainsSubset(boxed, self.eligible)
        self.assertEqual(boxed, sorted(boxed))
        self.assertLen(boxed, round(880 / 13984 * len(self.eligible)))
        self.assertGreater(len(boxed), 5)

    @parameterized.parameters(0.0, 0.3, 1.0)
    def test_share(self, share):
        boxed = label_model.choose_boxed_images(self.rows, self.test, share=share, seed=0)
        self.assertLen(boxed, round(share * len(self.eligible)))

    def test_deterministic_for_a_seed(self):
        first = label_model.choose_boxed_images(self.rows, self.test, share=0.3, seed=4)
        self.assertEqual(first, label_model.choose_boxed_images(self.rows, self.test, share=0.3, seed=4))
        self.assertNotEqual(first, label_model.choose_boxed_images(self.rows, self.test, share=0.3, seed=5))

    @parameterized.parameters(-0.1, 1.01)
    def test_bad_share_raises(self, share):
        with self.assertRaisesRegex(ValueError, "share must be in"):
            label_model.choose_boxed_images(self.rows, self.test, share=share)


if __name__ == "__main__":
    tf.test.main()
