"""trainer.prediction.predictor's --tta=hflip and its use of the calibration stored with the thresholds."""

import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf

from tests import fake_data
from tfrecords import schema
from trainer.evaluation import calibration
from trainer.evaluation.report import tables
from trainer.prediction import predictor as predict


def _pattern(height, width):
    """A left-right asymmetric gray image, so that the mirror image predicts differently."""
    y, x = np.mgrid[0:height, 0:width]
    return (40 + 200 * (x / width) ** 2 * (0.6 + 0.4 * np.cos(y / height * 3.0))).astype(np.uint8)


class PredictTtaTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = tempfile.mkdtemp(prefix="predict_tta_test_")
        cls.run_dir = fake_data.write_fake_run(
            os.path.join(cls._root, "run"), "unused_records", image_size=32
        )
        cls.folder = os.path.join(cls._root, "images")
        os.makedirs(cls.folder)
        for name, pixels in (("a.png", _pattern(37, 53)), ("b.png", _pattern(64, 64))):
            with open(os.path.join(cls.folder, name), "wb") as f:
                f.write(fake_data.png_bytes(pixels))
            with open(os.path.join(cls.folder, "mirror_" + name), "wb") as f:
                f.write(fake_data.png_bytes(pixels[:, ::-1]))
        with open(os.path.join(cls.folder, "corrupt.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + b"garbage")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def _predict(self, name, **kwargs):
        results, used, path = predict.predict(
            self.run_dir, self.folder, output_csv=os.path.join(self.get_temp_dir(), name), **kwargs
        )
        return {os.path.basename(r.path): r for r in results}, used, path

    def test_hflip_is_the_mean_of_the_image_and_its_mirror(self):
        plain, _, _ = self._predict("plain.csv")
        flipped, _, path = self._predict("hflip.csv", tta="hflip")
        for name in ("a.png", "b.png"):
            image, mirror = plain[name].probabilities, plain["mirror_" + name].probabilities
            self.assertNotAllClose(image, mirror)  # The model sees the difference.
            # The two passes through serving_default (the PNGs of the image and of its mirror), averaged.
            self.assertAllClose(flipped[name].probabilities, (image + mirror) / 2, atol=1e-5)
            # And so an image and its mirror get the same augmented prediction.
            self.assertAllClose(
                flipped[name].probabilities, flipped["mirror_" + name].probabilities, atol=1e-5
            )
        self.assertRegex(flipped["corrupt.png"].error, r"cannot decode image: ")
        frame = pd.read_csv(path, keep_default_na=False)
        self.assertLen(frame, 5)

    def test_stored_calibration_is_applied(self):
        raw, _, _ = self._predict("raw.csv")
        # Atelectasis scaled by slope 2, intercept -1; the other labels left alone.
        stored = calibration.Calibration(
            "val",
            {label: None for label in schema.LABELS} | {"Atelectasis": calibration.PlattScaling(2.0, -1.0)},
            {label: "too few positives" for label in schema.LABELS if label != "Atelectasis"},
        )
        threshold = float(raw["a.png"].probabilities[0])  # a.png sits exactly at the threshold.
        values = {label: 0.5 for label in schema.LABELS} | {"Atelectasis": threshold}
        calibrated_threshold = stored.apply_threshold("Atelectasis", threshold)
        path = tables.write_thresholds_json(
            os.path.join(self.get_temp_dir(), "thresholds.json"),
            values,
            source_split="val",
            calibration={**stored.to_json(), "calibrated_thresholds": {"Atelectasis": calibrated_threshold}},
        )
        results, used, csv_path = self._predict("calibrated.csv", thresholds_path=path)
        self.assertIsNotNone(used.calibration)
        for name, result in results.items():
            if result.error:
                continue
            expected = raw[name].probabilities.copy()
            expected[0] = 1 / (1 + np.exp(-(2 * np.log(expected[0] / (1 - expected[0])) - 1)))
            self.assertAllClose(result.probabilities, expected, atol=1e-6)
            self.assertTrue(result.calibrated)
            # The findings do not depend on the scale: raw >= threshold exactly when calibrated >= its image.
            self.assertEqual("Atelectasis" in result.findings, bool(raw[name].probabilities[0] >= threshold))
        self.assertIn("Atelectasis", results["a.png"].findings)
        frame = pd.read_csv(csv_path, keep_default_na=False).set_index("image")
        self.assertEqual(frame.loc["a.png", "calibrated"], "1")
        self.assertEqual(frame.loc["corrupt.png", "calibrated"], "")
        uncalibrated, _, _ = self._predict("uncalibrated.csv", thresholds_path=path, calibrate=False)
        self.assertAllClose(uncalibrated["a.png"].probabilities, raw["a.png"].probabilities)
        self.assertFalse(uncalibrated["a.png"].calibrated)

    def test_bad_tta_is_named(self):
        with self.assertRaisesRegex(ValueError, r"tta must be one of \('none', 'hflip'\), got 'rotate'"):
            self._predict("x.csv", tta="rotate")


if __name__ == "__main__":
    tf.test.main()
