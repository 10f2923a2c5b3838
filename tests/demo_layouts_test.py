"""Tests for demo_data.layouts and demo_data.dicom: other data sets' layouts and their quirks."""

import csv
import gzip
import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pydicom
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from demo_data import dicom, layouts
from demo_data import writer as demo_writer

_OTHER_LAYOUTS = tuple(name for name in layouts.LAYOUTS if name != "nih")


def _tree_digest(root: str) -> dict[str, str]:
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _csv(path: str) -> list[dict[str, str]]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


class LayoutsTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters(*_OTHER_LAYOUTS)
    def test_same_seed_same_bytes(self, name):
        first, second = (self.get_temp_dir() + f"/{name}-{i}" for i in (1, 2))
        for root in (first, second):
            demo_writer.generate(root, layout=name, num_images=12, image_size=16, seed=3, num_workers=1)
        self.assertEqual(_tree_digest(first), _tree_digest(second))
        with self.assertRaisesRegex(FileExistsError, "already holds a demo set"):
            demo_writer.generate(first, layout=name, num_images=12, image_size=16, num_workers=1)

    def test_chexpert_quirks(self):
        root = self.get_temp_dir() + "/chexpert"
        demo_writer.generate(root, layout="chexpert", num_images=80, image_size=16, num_workers=1)
        train, valid = _csv(root + "/train.csv"), _csv(root + "/valid.csv")
        values = {row[c] for row in train for c in layouts.CHEXPERT_COLUMNS}
        self.assertEqual(values, {"1.0", "0.0", "-1.0", ""})
        self.assertEqual({row[c] for row in valid for c in layouts.CHEXPERT_COLUMNS}, {"1.0", "0.0"})
        self.assertTrue(all(row["Path"].startswith("CheXpert-v1.0-small/") for row in train + valid))
        lateral = [row for row in train + valid if row["Frontal/Lateral"] == "Lateral"]
        self.assertTrue(lateral and all(row["AP/PA"] == "" for row in lateral))

    def test_padchest_writes_twelve_bit_values_in_sixteen_bit_pngs(self):
        root = self.get_temp_dir() + "/padchest"
        demo_writer.generate(root, layout="padchest", num_images=10, image_size=16, num_workers=1)
        (row, *_) = _csv(root + "/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv")
        with Image.open(os.path.join(root, row["ImageDir"], row["ImageID"])) as image:
            self.assertIn(image.mode, ("I;16", "I"))
            values = np.asarray(image)
        self.assertLess(values.max(), 4096 + 256)  # 12-bit values plus the image's offset.
        self.assertTrue(row["Labels"].startswith("['"))

    def test_rsna_dicoms_use_every_encoding(self):
        root = self.get_temp_dir() + "/rsna"
        demo_writer.generate(root, layout="rsna_pneumonia", num_images=30, image_size=16, num_workers=1)
        folder = root + "/stage_2_train_images"
        kinds = set()
        for name in os.listdir(folder):
            dataset = pydicom.dcmread(os.path.join(folder, name))
            kinds.add((dataset.PhotometricInterpretation, int(dataset.BitsStored)))
            self.assertEqual(dataset.PatientID + ".dcm", name)
        self.assertEqual(kinds, {("MONOCHROME2", 8), ("MONOCHROME1", 8), ("MONOCHROME2", 12)})

    def test_generating_a_layout_does_not_load_tensorflow(self):
        code = (
            "import sys; from demo_data import writer; "
            f"writer.generate({self.get_temp_dir() + '/tf_free'!r}, layout='rsna_pneumonia', num_images=6, "
            "image_size=16, num_workers=1); print('tensorflow' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(result.stdout.strip().splitlines()[-1], "False")


class DicomTest(tf.test.TestCase):
    def test_bad_arguments_raise(self):
        with self.assertRaisesRegex(ValueError, "variant must be one of"):
            dicom.encode_dicom(np.zeros((2, 2), np.uint8), key="k", variant="jpeg")
        with self.assertRaisesRegex(ValueError, "uint8"):
            dicom.encode_dicom(np.zeros((2, 2), np.float32), key="k")

    def test_same_key_same_bytes(self):
        pixels = np.arange(16, dtype=np.uint8).reshape(4, 4)
        self.assertEqual(dicom.encode_dicom(pixels, key="a"), dicom.encode_dicom(pixels, key="a"))
        self.assertNotEqual(dicom.encode_dicom(pixels, key="a"), dicom.encode_dicom(pixels, key="b"))
        dataset = pydicom.dcmread(io.BytesIO(dicom.encode_dicom(pixels, key="a", age=7)))
        self.assertEqual(dataset.PatientAge, "007Y")
