"""Tests for beam_pipelines.demo_data: NIH layout, 2017 CSV format, splits, labels, determinism."""

import contextlib
import io
import os
import re
import shutil
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import flags
from absl.testing import parameterized
from PIL import Image

from beam_pipelines import demo_data
from tfrecords import schema

# The real file's columns as pandas reads them: the bracketed names are split by their commas and
# the trailing comma adds an unnamed 12th column.
REAL_2017_COLUMNS = [
    "Image Index",
    "Finding Labels",
    "Follow-up #",
    "Patient ID",
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage[Width",
    "Height]",
    "OriginalImagePixelSpacing[x",
    "y]",
    "Unnamed: 11",
]


def _read_csv(data_dir):
    return pd.read_csv(os.path.join(data_dir, demo_data.CSV_NAME), dtype=str, keep_default_na=False)


def _read_list(data_dir, name):
    with open(os.path.join(data_dir, name)) as f:
        return f.read()


def _tree_bytes(data_dir):
    """{relative path: bytes} of every file under data_dir."""
    files = {}
    for root, _, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, data_dir)] = f.read()
    return files


class GeneratedSetTest(tf.test.TestCase):
    """Checks one generated set of 300 images at 32x32 (a few hundred, so every label shows up)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = tempfile.mkdtemp()
        cls.summary = demo_data.generate(cls.data_dir, num_images=300, image_size=32, seed=0, num_workers=1)
        cls.frame = _read_csv(cls.data_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.data_dir, ignore_errors=True)
        super().tearDownClass()

    def test_layout_and_file_names(self):
        self.assertCountEqual(
            os.listdir(self.data_dir),
            ["images_001", demo_data.CSV_NAME, demo_data.TRAIN_VAL_LIST_NAME, demo_data.TEST_LIST_NAME],
        )
        images_dir = os.path.join(self.data_dir, "images_001", "images")
        names = sorted(os.listdir(images_dir))
        self.assertEqual(names, sorted(self.frame["Image Index"]))
        for name in names:
            self.assertRegex(name, r"^\d{8}_\d{3}\.png$")
        for name in names[:5]:
            with open(os.path.join(images_dir, name), "rb") as f:
                png = f.read()
            with Image.open(io.BytesIO(png)) as image:
                self.assertEqual(image.mode, "L")
                self.assertEqual(image.size, (32, 32))
            self.assertEqual(tf.io.decode_png(png).shape, (32, 32, 1))

    def test_csv_has_the_real_2017_header_and_row_shape(self):
        with open(os.path.join(self.data_dir, demo_data.CSV_NAME), newline="") as f:
            text = f.read()
        self.assertTrue(text.endswith("\r\n"))
        lines = text.split("\r\n")[:-1]
        self.assertEqual(
            lines[0],
            "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
            "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],",
        )
        self.assertLen(lines[0].split(","), 12)
        self.assertLen(lines, 301)
        for line in lines[1:]:
            self.assertLen(line.split(","), 11, msg=line)
        self.assertEqual(list(self.frame.columns), REAL_2017_COLUMNS)
        self.assertLen(self.frame, 300)

    def test_fields_are_zero_padded_like_nih(self):
        frame = self.frame
        self.assertTrue(frame["Follow-up #"].str.fullmatch(r"\d{3}").all())
        self.assertTrue(frame["Patient ID"].str.fullmatch(r"\d{8}").all())
        self.assertTrue(frame["Patient Age"].str.fullmatch(r"\d{3}Y").all())
        self.assertContainsSubset(set(frame["Patient Gender"]), {"M", "F"})
        self.assertEqual(set(frame["View Position"]), {"PA", "AP"})
        self.assertEqual(
            list(frame["Image Index"]),
            [f"{p}_{f}.png" for p, f in zip(frame["Patient ID"], frame["Follow-up #"])],
        )
        self.assertEqual(list(frame["Image Index"]), sorted(frame["Image Index"]))
        for column in ("OriginalImage[Width", "Height]"):
            self.assertTrue(frame[column].str.fullmatch(r"\d{4}").all())
        self.assertTrue((frame["OriginalImagePixelSpacing[x"] == frame["y]"]).all())
        self.assertTrue((frame["Unnamed: 11"] == "").all())
        # Each patient keeps one sex, and has several follow-ups on average.
        self.assertTrue((frame.groupby("Patient ID")["Patient Gender"].nunique() == 1).all())
        self.assertEqual(frame["Patient ID"].nunique(), self.summary["num_patients"])
        self.assertGreater(len(frame) / frame["Patient ID"].nunique(), 2.0)

    def test_lists_are_patient_disjoint_and_cover_the_csv(self):
        train_text = _read_list(self.data_dir, demo_data.TRAIN_VAL_LIST_NAME)
        test_text = _read_list(self.data_dir, demo_data.TEST_LIST_NAME)
        # NIH's lists have no newline after the last name.
        self.assertFalse(train_text.endswith("\n"))
        self.assertFalse(test_text.endswith("\n"))
        train, test = train_text.split("\n"), test_text.split("\n")
        self.assertEqual(train, sorted(train))
        self.assertEqual(test, sorted(test))
        self.assertEmpty(set(train) & set(test))
        self.assertEqual(sorted(train + test), sorted(self.frame["Image Index"]))
        patient = dict(zip(self.frame["Image Index"], self.frame["Patient ID"]))
        self.assertEmpty({patient[n] for n in train} & {patient[n] for n in test})
        # About NIH's 77/23, to within the granularity of whole patients.
        self.assertBetween(len(test) / 300, 0.15, 0.32)

    def test_every_label_present_and_no_finding_exclusive(self):
        multi_hot = np.stack([schema.labels_to_multi_hot(v) for v in self.frame["Finding Labels"]])
        counts = dict(zip(schema.LABELS, multi_hot.sum(axis=0)))
        for label in schema.LABELS:
            self.assertGreater(counts[label], 0, msg=label)
        no_finding = multi_hot[:, -1] == 1
        self.assertAllEqual(multi_hot[no_finding, :-1].sum(axis=1), np.zeros(no_finding.sum()))
        self.assertAllEqual(multi_hot.sum(axis=1) >= 1, np.ones(300, bool))
        self.assertEqual(self.summary["label_counts"], {k: int(v) for k, v in counts.items()})
        # Findings are listed in alphabetical (LABELS) order, as NIH does.
        for value in self.frame["Finding Labels"]:
            names = value.split("|")
            self.assertEqual(names, sorted(names, key=schema.LABELS.index))


class DeterminismTest(tf.test.TestCase):
    def test_same_seed_same_bytes_for_any_worker_count(self):
        one = os.path.join(self.get_temp_dir(), "one")
        two = os.path.join(self.get_temp_dir(), "two")
        demo_data.generate(one, num_images=40, image_size=32, seed=3, num_workers=1)
        demo_data.generate(two, num_images=40, image_size=32, seed=3, num_workers=2)
        first, second = _tree_bytes(one), _tree_bytes(two)
        self.assertLen(first, 43)
        self.assertEqual(first, second)

    def test_different_seed_differs(self):
        a = os.path.join(self.get_temp_dir(), "a")
        b = os.path.join(self.get_temp_dir(), "b")
        demo_data.generate(a, num_images=40, image_size=32, seed=0, num_workers=1)
        demo_data.generate(b, num_images=40, image_size=32, seed=1, num_workers=1)
        first, second = _tree_bytes(a), _tree_bytes(b)
        self.assertNotEqual(first[demo_data.CSV_NAME], second[demo_data.CSV_NAME])
        common = set(first) & set(second) - {demo_data.CSV_NAME}
        different = [name for name in common if name.endswith(".png") and first[name] != second[name]]
        self.assertNotEmpty(different)


class LabelStatisticsTest(tf.test.TestCase):
    def test_prevalences_and_co_occurrence_like_nih(self):
        rows = demo_data.sample_images(20000, seed=5)
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
        self.assertAllClose(multi_hot[:, :-1].mean(axis=0), demo_data.finding_prevalences(), atol=0.01)
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
        counts = demo_data.sample_follow_up_counts(np.random.default_rng(0), 2000, 600)
        self.assertEqual(counts.sum(), 2000)
        self.assertGreaterEqual(counts.min(), 1)
        self.assertLessEqual(counts.max(), demo_data.MAX_FOLLOW_UPS)
        self.assertGreater(np.mean(counts == 1), 0.2)  # Many patients have a single image...
        self.assertGreater(counts.max(), 10)  # ...and some have many, as in NIH.


class RenderTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*schema.FINDINGS)
    def test_each_finding_is_visible_at_64(self, finding):
        # Each finding draws from its own random stream, so with the same generator seed the two
        # images differ only by the finding's pattern.
        normal = demo_data.render_image((), np.random.default_rng(7), 64).astype(np.float32)
        planted = demo_data.render_image((finding,), np.random.default_rng(7), 64).astype(np.float32)
        difference = np.abs(planted - normal)
        self.assertGreater(difference.max(), 40, msg=finding)
        self.assertGreater(np.sum(difference > 20), 6, msg=finding)

    def test_findings_have_distinct_patterns(self):
        normal = demo_data.render_image((), np.random.default_rng(11), 64).astype(np.float32)
        differences = np.stack(
            [
                (
                    demo_data.render_image((f,), np.random.default_rng(11), 64).astype(np.float32) - normal
                ).ravel()
                for f in schema.FINDINGS
            ]
        )
        correlation = np.corrcoef(differences)
        np.fill_diagonal(correlation, 0.0)
        self.assertLess(correlation.max(), 0.9)

    def test_size_and_dtype_when_scaled_up(self):
        pixels = demo_data.render_image(("Mass", "Effusion"), np.random.default_rng(0), 300, render_size=64)
        self.assertEqual(pixels.dtype, np.uint8)
        self.assertEqual(pixels.shape, (300, 300))
        self.assertGreater(pixels.std(), 20)

    def test_same_generator_state_same_pixels(self):
        a = demo_data.render_image(("Nodule",), demo_data.image_rng(4, 9), 48)
        b = demo_data.render_image(("Nodule",), demo_data.image_rng(4, 9), 48)
        c = demo_data.render_image(("Nodule",), demo_data.image_rng(4, 10), 48)
        self.assertAllEqual(a, b)
        self.assertNotAllEqual(a, c)

    @parameterized.named_parameters(
        ("unknown", ("Infiltrate",), "Unknown finding.*Infiltrate"),
        ("no_finding_with_finding", ("No Finding", "Mass"), "No Finding"),
    )
    def test_bad_findings_raise(self, findings, message):
        with self.assertRaisesRegex(ValueError, message):
            demo_data.render_image(findings, np.random.default_rng(0), 32)

    @parameterized.parameters((1, 1), (3, 5), (32, 32), (17, 64))
    def test_png_round_trip(self, height, width):
        pixels = np.random.default_rng(height * width).integers(0, 256, (height, width), dtype=np.uint8)
        png = demo_data.encode_png(pixels)
        with Image.open(io.BytesIO(png)) as image:
            self.assertEqual(image.mode, "L")
            self.assertAllEqual(np.asarray(image), pixels)
        self.assertAllEqual(tf.io.decode_png(png)[..., 0], pixels)

    def test_png_rejects_non_uint8(self):
        with self.assertRaisesRegex(ValueError, "uint8"):
            demo_data.encode_png(np.zeros((4, 4), np.float32))


class GenerateArgumentsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("zero_images", {"num_images": 0}, "num_images"),
        ("negative_images", {"num_images": -5}, "num_images"),
        ("zero_size", {"image_size": 0}, "image_size"),
        ("zero_patients", {"num_patients": 0}, "num_patients"),
        ("more_patients_than_images", {"num_images": 5, "num_patients": 6}, "num_patients"),
        ("too_many_follow_ups", {"num_images": 2002, "num_patients": 2}, "num_patients"),
        ("zero_workers", {"num_workers": 0}, "num_workers"),
        ("compress_level", {"compress_level": 10}, "compress_level"),
    )
    def test_bad_arguments_raise_naming_them(self, kwargs, name):
        output_dir = os.path.join(self.get_temp_dir(), "out")
        with self.assertRaisesRegex(ValueError, name):
            demo_data.generate(output_dir, **{"num_images": 10, "image_size": 16, **kwargs})
        self.assertFalse(os.path.exists(os.path.join(output_dir, demo_data.CSV_NAME)))

    def test_refuses_an_existing_data_set_unless_overwrite(self):
        output_dir = os.path.join(self.get_temp_dir(), "data")
        demo_data.generate(output_dir, num_images=40, image_size=16, num_workers=1)
        with self.assertRaisesRegex(FileExistsError, re.escape(output_dir) + ".*overwrite"):
            demo_data.generate(output_dir, num_images=10, image_size=16, num_workers=1)
        summary = demo_data.generate(output_dir, num_images=10, image_size=16, num_workers=1, overwrite=True)
        self.assertEqual(summary["num_images"], 10)
        # No image of the bigger set is left behind.
        images = os.listdir(os.path.join(output_dir, "images_001", "images"))
        self.assertCountEqual(images, _read_csv(output_dir)["Image Index"])

    def test_writes_into_a_folder_without_a_data_set(self):
        output_dir = self.get_temp_dir()
        with open(os.path.join(output_dir, "notes.txt"), "w") as f:
            f.write("kept")
        demo_data.generate(output_dir, num_images=5, image_size=16, num_workers=1)
        self.assertTrue(os.path.exists(os.path.join(output_dir, "notes.txt")))
        self.assertLen(_read_csv(output_dir), 5)

    def test_logs_progress(self):
        output_dir = os.path.join(self.get_temp_dir(), "progress")
        # On absl's logger itself: another test may have lowered absl's verbosity, which the root
        # logger would not see.
        with self.assertLogs(logger="absl", level="INFO") as logs:
            demo_data.generate(output_dir, num_images=12, image_size=16, num_workers=1)
        self.assertTrue(any(re.search(r"12/12 images, [\d.]+ images/s, ETA", line) for line in logs.output))


class MainTest(tf.test.TestCase):
    def _holders(self, argv):
        flag_values = flags.FlagValues()
        holders = demo_data._define_flags(flag_values)
        flag_values(["demo_data", *argv])
        return holders

    def test_main_writes_the_set_and_prints_the_summary(self):
        output_dir = os.path.join(self.get_temp_dir(), "cli")
        holders = self._holders(
            [f"--output_dir={output_dir}", "--num_images=8", "--image_size=16", "--num_workers=1"]
        )
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            demo_data.main(["demo_data"], holders=holders)
        self.assertIn('"num_images": 8', stdout.getvalue())
        self.assertLen(_read_csv(output_dir), 8)

    def test_flag_defaults_work_on_the_demo(self):
        holders = self._holders([])
        self.assertEqual(holders["output_dir"].value, "data/demo")
        self.assertEqual(holders["num_images"].value, 2000)
        self.assertEqual(holders["image_size"].value, 1024)
        self.assertEqual(holders["num_workers"].value, 0)

    def test_negative_num_workers_flag_raises(self):
        holders = self._holders(["--num_workers=-1", f"--output_dir={self.get_temp_dir()}"])
        with self.assertRaisesRegex(ValueError, "--num_workers"):
            demo_data.main(["demo_data"], holders=holders)

    def test_zero_num_images_flag_raises(self):
        holders = self._holders(["--num_images=0", f"--output_dir={self.get_temp_dir()}"])
        with self.assertRaisesRegex(ValueError, "num_images"):
            demo_data.main(["demo_data"], holders=holders)


if __name__ == "__main__":
    tf.test.main()
