"""Tests for demo_data.writer: the NIH layout on disk, same bytes as before, boxes, determinism."""

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from demo_data import layout, writer
from tfrecords import schema

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The regression anchors of "same seed, same bytes". Produced by the generator as it was before it
# became this package (`beam_pipelines/demo_data.py` at commit d1bcc7a):
#   generate(output_dir, num_images=24, image_size=128, seed=0, num_workers=1)
#   generate(output_dir, num_images=200, image_size=64, seed=0, num_workers=2)
# each digested with `_tree_digest` (every file it wrote: the label file, both lists, the PNGs).
DIGEST_24_AT_128 = "c44fa1422a8e6ef420fcfac29f5804dcd1a1c2a5085122e4a5b4c48cac8ea6d3"
DIGEST_200_AT_64 = "0c6c0cbe5b1151881f7047dd400a6bca0229738f5255a6cb58a5c724aa803ce3"
# sha256 of the box file of the second set with box_share=1.0, as this package first wrote it.
BBOX_SHA256_200_AT_64 = "7d32f89dc79f90e8633b7b051df7e9952f620bac5ff808c4fb6f5aa782deb7b4"

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


def _tree_digest(data_dir, exclude=()):
    """sha256 over "relative path NUL sha256 of the file" lines of every file, sorted by path."""
    paths = sorted(
        os.path.relpath(os.path.join(root, name), data_dir).replace(os.sep, "/")
        for root, _, names in os.walk(data_dir)
        for name in names
    )
    digest = hashlib.sha256()
    for path in paths:
        if path in exclude:
            continue
        with open(os.path.join(data_dir, path), "rb") as f:
            digest.update(f"{path}\0{hashlib.sha256(f.read()).hexdigest()}\n".encode())
    return digest.hexdigest()


def _read_csv(data_dir, name=layout.CSV_NAME):
    return pd.read_csv(os.path.join(data_dir, name), dtype=str, keep_default_na=False)


def _read_text(data_dir, name):
    with open(os.path.join(data_dir, name), newline="") as f:
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


class SameBytesTest(tf.test.TestCase):
    def test_same_bytes_as_before_for_the_same_seed(self):
        output_dir = os.path.join(self.get_temp_dir(), "24")
        writer.generate(output_dir, num_images=24, image_size=128, seed=0, num_workers=1)
        self.assertEqual(_tree_digest(output_dir, exclude=(layout.BBOX_NAME,)), DIGEST_24_AT_128)

    def test_boxes_change_no_other_byte_and_are_anchored(self):
        output_dir = os.path.join(self.get_temp_dir(), "200")
        summary = writer.generate(output_dir, num_images=200, image_size=64, num_workers=1, box_share=1.0)
        self.assertEqual(_tree_digest(output_dir, exclude=(layout.BBOX_NAME,)), DIGEST_200_AT_64)
        with open(os.path.join(output_dir, layout.BBOX_NAME), "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).hexdigest(), BBOX_SHA256_200_AT_64)
        self.assertGreater(summary["boxed_images"], 10)


class GeneratedSetTest(tf.test.TestCase):
    """Checks one generated set of 300 images at 32x32 (a few hundred, so every label shows up)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = tempfile.mkdtemp()
        cls.summary = writer.generate(
            cls.data_dir, num_images=300, image_size=32, seed=0, num_workers=1, box_share=0.5
        )
        cls.frame = _read_csv(cls.data_dir)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.data_dir, ignore_errors=True)
        super().tearDownClass()

    def test_layout_and_file_names(self):
        self.assertCountEqual(
            os.listdir(self.data_dir),
            [
                "images_001",
                layout.CSV_NAME,
                layout.TRAIN_VAL_LIST_NAME,
                layout.TEST_LIST_NAME,
                layout.BBOX_NAME,
            ],
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
        text = _read_text(self.data_dir, layout.CSV_NAME)
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
        train_text = _read_text(self.data_dir, layout.TRAIN_VAL_LIST_NAME)
        test_text = _read_text(self.data_dir, layout.TEST_LIST_NAME)
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

    def test_box_file_in_nih_format(self):
        text = _read_text(self.data_dir, layout.BBOX_NAME)
        # NIH's exact header bytes, LF line ends, a line end after the last row.
        self.assertStartsWith(text, "Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        self.assertNotIn("\r", text)
        self.assertTrue(text.endswith("\n"))
        boxes = pd.read_csv(os.path.join(self.data_dir, layout.BBOX_NAME))
        self.assertEqual(
            list(boxes.columns),
            [
                "Image Index",
                "Finding Label",
                "Bbox [x",
                "y",
                "w",
                "h]",
                "Unnamed: 6",
                "Unnamed: 7",
                "Unnamed: 8",
            ],
        )
        self.assertTrue(boxes[["Unnamed: 6", "Unnamed: 7", "Unnamed: 8"]].isna().all().all())
        for line in text.split("\n")[1:-1]:
            self.assertRegex(line, r"^\d{8}_\d{3}\.png,[A-Za-z]+(,\d+(\.\d+)?){4}$")

    def test_boxes_on_a_share_of_the_test_images_with_boxed_findings(self):
        boxes = _read_csv(self.data_dir, layout.BBOX_NAME)
        self.assertNotEmpty(boxes)
        test = set(_read_text(self.data_dir, layout.TEST_LIST_NAME).split("\n"))
        findings = dict(zip(self.frame["Image Index"], self.frame["Finding Labels"].str.split("|")))
        eligible = {n for n in test if set(findings[n]) & set(layout.BBOX_LABELS)}
        boxed = set(boxes["Image Index"])
        self.assertContainsSubset(boxed, eligible)
        self.assertEqual(len(boxed), round(0.5 * len(eligible)))
        self.assertEqual(self.summary["boxed_images"], len(boxed))
        # Every boxed image has one box per boxed finding it carries, under NIH's label names.
        nih_name = {v: k for k, v in layout.BBOX_LABELS.items()}
        self.assertEqual(set(boxes["Finding Label"]) - set(nih_name), set())
        for name in boxed:
            got = sorted(nih_name[v] for v in boxes.loc[boxes["Image Index"] == name, "Finding Label"])
            self.assertEqual(got, sorted(set(findings[name]) & set(layout.BBOX_LABELS)), msg=name)
        x, y = boxes["Bbox [x"].astype(float), boxes["y"].astype(float)
        w, h = boxes["w"].astype(float), boxes["h]"].astype(float)
        self.assertTrue(((x >= 0) & (y >= 0) & (w > 0) & (h > 0) & (x + w <= 32) & (y + h <= 32)).all())


class DeterminismTest(tf.test.TestCase):
    def test_same_seed_same_bytes_for_any_worker_count(self):
        one = os.path.join(self.get_temp_dir(), "one")
        two = os.path.join(self.get_temp_dir(), "two")
        # This process has loaded TensorFlow, so the two workers are spawned, not forked.
        self.assertEqual(writer.start_method(), "spawn")
        writer.generate(one, num_images=40, image_size=32, seed=3, num_workers=1, box_share=1.0)
        writer.generate(two, num_images=40, image_size=32, seed=3, num_workers=2, box_share=1.0)
        first, second = _tree_bytes(one), _tree_bytes(two)
        self.assertLen(first, 44)
        self.assertEqual(first, second)

    def test_different_seed_differs(self):
        a = os.path.join(self.get_temp_dir(), "a")
        b = os.path.join(self.get_temp_dir(), "b")
        writer.generate(a, num_images=40, image_size=32, seed=0, num_workers=1)
        writer.generate(b, num_images=40, image_size=32, seed=1, num_workers=1)
        first, second = _tree_bytes(a), _tree_bytes(b)
        self.assertNotEqual(first[layout.CSV_NAME], second[layout.CSV_NAME])
        common = set(first) & set(second) - {layout.CSV_NAME}
        different = [name for name in common if name.endswith(".png") and first[name] != second[name]]
        self.assertNotEmpty(different)

    def test_tensorflow_free_and_forked_workers_give_the_same_bytes(self):
        # In a fresh interpreter: the package never imports TensorFlow, so its workers fork.
        output_dir = os.path.join(self.get_temp_dir(), "fresh")
        script = (
            "import pkgutil, sys, importlib, demo_data\n"
            "for module in pkgutil.iter_modules(demo_data.__path__):\n"
            "    importlib.import_module('demo_data.' + module.name)\n"
            "from demo_data import writer\n"
            "assert writer.start_method() == 'fork', writer.start_method()\n"
            f"writer.generate({output_dir!r}, num_images=24, image_size=128, num_workers=2)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
            "print('loaded:', loaded)\n"
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_REPO, os.environ.get("PYTHONPATH")])),
        }
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        self.assertEqual(result.returncode, 0, msg=result.stderr)
        self.assertIn("loaded: []", result.stdout)
        self.assertEqual(_tree_digest(output_dir, exclude=(layout.BBOX_NAME,)), DIGEST_24_AT_128)


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
        ("float_compress_level", {"compress_level": 1.0}, "compress_level"),
        ("negative_seed", {"seed": -1}, "seed"),
        ("box_share", {"box_share": 1.5}, "box_share"),
        ("text_box_share", {"box_share": "all"}, "box_share"),
    )
    def test_bad_arguments_raise_naming_them(self, kwargs, name):
        output_dir = os.path.join(self.get_temp_dir(), "out")
        with self.assertRaisesRegex(ValueError, name):
            writer.generate(output_dir, **{"num_images": 10, "image_size": 16, **kwargs})
        self.assertFalse(os.path.exists(output_dir))

    def test_unknown_option_raises(self):
        with self.assertRaisesRegex(TypeError, "num_imgs"):
            writer.generate(self.get_temp_dir(), num_imgs=3)

    def test_refuses_an_existing_data_set_unless_overwrite(self):
        output_dir = os.path.join(self.get_temp_dir(), "data")
        writer.generate(output_dir, num_images=40, image_size=16, num_workers=1)
        with self.assertRaisesRegex(FileExistsError, re.escape(output_dir) + ".*overwrite"):
            writer.generate(output_dir, num_images=10, image_size=16, num_workers=1)
        summary = writer.generate(output_dir, num_images=10, image_size=16, num_workers=1, overwrite=True)
        self.assertEqual(summary["num_images"], 10)
        # No image of the bigger set is left behind.
        images = os.listdir(os.path.join(output_dir, "images_001", "images"))
        self.assertCountEqual(images, _read_csv(output_dir)["Image Index"])

    def test_writes_into_a_folder_without_a_data_set(self):
        output_dir = self.get_temp_dir()
        with open(os.path.join(output_dir, "notes.txt"), "w") as f:
            f.write("kept")
        writer.generate(output_dir, num_images=5, image_size=16, num_workers=1)
        self.assertTrue(os.path.exists(os.path.join(output_dir, "notes.txt")))
        self.assertLen(_read_csv(output_dir), 5)

    def test_logs_progress(self):
        output_dir = os.path.join(self.get_temp_dir(), "progress")
        # On absl's logger itself: another test may have lowered absl's verbosity, which the root
        # logger would not see.
        with self.assertLogs(logger="absl", level="INFO") as logs:
            writer.generate(output_dir, num_images=12, image_size=16, num_workers=1)
        self.assertTrue(
            any(
                re.search(r"demo data: 12/12 images \(100%\), [\d.,]+ images/s", line) for line in logs.output
            )
        )


if __name__ == "__main__":
    tf.test.main()
