"""Tests of beam_pipelines/splits.py: patient-level, stable, fixed splits."""

import collections
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from beam_pipelines import splits
from tfrecords import manifest as manifest_lib

_NUM_PATIENTS = 10_000


def _images_of_patients(num_patients: int, seed: int = 0) -> list[tuple[str, int]]:
    """(image name, patient id): 1 to 6 images per patient, like NIH's follow-ups."""
    rng = np.random.default_rng(seed)
    images = []
    for patient in range(1, num_patients + 1):
        for follow_up in range(rng.integers(1, 7)):
            images.append((f"{patient:08d}_{follow_up:03d}.png", patient))
    return images


class PatientModeTest(parameterized.TestCase, tf.test.TestCase):
    def test_no_patient_in_two_splits(self):
        config = splits.SplitConfig(mode="patient")
        split_of_patient = collections.defaultdict(set)
        for _, patient in _images_of_patients(_NUM_PATIENTS):
            split_of_patient[patient].add(splits.assign_split(config, patient, None))
        self.assertEqual({len(s) for s in split_of_patient.values()}, {1})

    @parameterized.parameters((0.7, 0.1, 0.2), (0.8, 0.1, 0.1), (0.5, 0.0, 0.5))
    def test_fractions_of_patients_within_tolerance(self, *fractions):
        counts = collections.Counter(splits.patient_split(p, fractions) for p in range(1, _NUM_PATIENTS + 1))
        for split, fraction in zip(manifest_lib.SPLITS, fractions):
            # Binomial standard deviation at n=10,000 is at most 0.005; 0.015 is three of them.
            self.assertAllClose(counts[split] / _NUM_PATIENTS, fraction, atol=0.015)

    def test_same_answer_in_another_process(self):
        # Python's hash() is salted per process (PYTHONHASHSEED); the split must not be.
        ids = list(range(1, 200))
        code = f"from beam_pipelines import splits;print(','.join(splits.patient_split(p) for p in {ids}))"
        env = dict(os.environ, PYTHONHASHSEED="12345")
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        self.assertEqual(out.stdout.strip().split(","), [splits.patient_split(p) for p in ids])

    def test_a_growing_data_set_keeps_old_assignments(self):
        config = splits.SplitConfig(mode="patient")
        before = {p: splits.assign_split(config, p, None) for p in range(1, 1001)}
        after = {p: splits.assign_split(config, p, None) for p in range(1, 3001)}
        self.assertEqual({p: after[p] for p in before}, before)
        self.assertEqual(set(after.values()), set(manifest_lib.SPLITS))


class OfficialModeTest(tf.test.TestCase):
    def test_lists_are_honoured_and_val_is_by_patient(self):
        config = splits.SplitConfig(mode="official", val_fraction=0.125)
        images = _images_of_patients(_NUM_PATIENTS)
        # Patients divisible by 5 are the official test patients, as NIH's lists are patient-disjoint.
        listed = {
            name: splits.TEST_LIST if patient % 5 == 0 else splits.TRAIN_VAL_LIST for name, patient in images
        }
        split_of_patient = collections.defaultdict(set)
        for name, patient in images:
            split = splits.assign_split(config, patient, listed[name])
            self.assertEqual(split == "test", listed[name] == splits.TEST_LIST)
            split_of_patient[patient].add(split)
        self.assertEqual({len(s) for s in split_of_patient.values()}, {1})
        train_val = [p for p, s in split_of_patient.items() if s != {"test"}]
        val_share = sum(split_of_patient[p] == {"val"} for p in train_val) / len(train_val)
        self.assertAllClose(val_share, 0.125, atol=0.015)

    def test_unlisted_image_has_no_split(self):
        self.assertIsNone(splits.assign_split(splits.SplitConfig(mode="official"), 1, None))

    def test_published_train_val_and_test_are_kept(self):
        # MIMIC-CXR-JPG publishes all three: the patient's hash does not move an image.
        config = splits.SplitConfig(mode="official", val_fraction=0.5)
        for patient in range(200):
            for published in (splits.TRAIN_LIST, splits.VAL_LIST, splits.TEST_LIST):
                self.assertEqual(splits.assign_split(config, patient, published), published)


class ConfigTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters(
        ("70,10,20", (0.7, 0.1, 0.2)), ("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ("50,0,50", (0.5, 0, 0.5))
    )
    def test_parse_fractions(self, text, expected):
        self.assertAllClose(splits.parse_fractions(text), expected)

    @parameterized.parameters(
        ("70,30", "three"),
        ("a,b,c", "three comma-separated"),
        ("50,10,10", "sum to 100"),
        ("-10,60,50", "non-negative"),
    )
    def test_bad_fractions_name_the_flag(self, text, message):
        with self.assertRaisesRegex(ValueError, f"--split_fractions.*{message}"):
            splits.parse_fractions(text)

    @parameterized.parameters(
        (dict(mode="random"), "split mode"),
        (dict(val_fraction=0.0), "val_fraction"),
        (dict(val_fraction=1.5), "val_fraction"),
        (dict(fractions=(0.5, 0.5, 0.5)), "sum to 1"),
        (dict(fractions=(1.2, -0.1, -0.1)), "three shares"),
    )
    def test_bad_config(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            splits.SplitConfig(**kwargs)


if __name__ == "__main__":
    tf.test.main()
