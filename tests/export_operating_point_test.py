"""The export carries its operating point: calibrated probabilities and findings from serving_default.

Unit checks of `trainer.model.export.write_operating_point` on a tiny model with hand-made
scalings, and an end-to-end check through `saved_model_cli` (the TensorFlow tool a deployer
uses) that the served calibrated probabilities equal the evaluation's `predictions.csv`.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf

from tests import fake_data
from tfrecords import dataset as dataset_lib
from tfrecords import schema
from trainer.evaluation import calibration
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.report import files, tables
from trainer.model import export

_SIZE = 16


def _point(*, tta="none"):
    """Platt scaling on the first five labels (slope 2, intercept -1), thresholds 0.3 elsewhere 0.6."""
    calibrated = tuple(k < 5 for k in range(schema.NUM_LABELS))
    return export.OperatingPoint(
        slopes=tuple(2.0 if c else 1.0 for c in calibrated),
        intercepts=tuple(-1.0 if c else 0.0 for c in calibrated),
        calibrated=calibrated,
        thresholds=tuple(0.3 if k % 2 else 0.6 for k in range(schema.NUM_LABELS)),
        epsilon=calibration.EPSILON,
        tta=tta,
        source="test",
    )


def _calibration_of(point):
    """The `calibration.Calibration` that `point` serves, to compute the expected values in numpy."""
    scalings = {
        label: calibration.PlattScaling(s, b) if c else None
        for label, s, b, c in zip(schema.LABELS, point.slopes, point.intercepts, point.calibrated)
    }
    return calibration.Calibration("val", scalings, {})


class WriteOperatingPointTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.model = fake_data.tiny_keras_model(_SIZE, seed=1)
        self.export_dir = export.export_model(
            self.model, os.path.join(self.get_temp_dir(), "export"), image_size=_SIZE
        )
        rng = np.random.default_rng(0)
        self.pixels = rng.integers(0, 256, (4, _SIZE, _SIZE, 1), dtype=np.uint8)
        self.pngs = tf.constant([fake_data.png_bytes(p[..., 0]) for p in self.pixels])

    def _serve(self):
        loaded = tf.saved_model.load(self.export_dir)
        served = loaded.signatures[export.SERVING_DEFAULT](image_bytes=self.pngs)
        pixels = loaded.signatures[export.SERVE_PIXELS](images=tf.constant(self.pixels))
        return {k: v.numpy() for k, v in served.items()}, pixels[export.PROBABILITIES].numpy()

    def test_before_an_evaluation_only_probabilities(self):
        served, _ = self._serve()
        self.assertEqual(list(served), [export.PROBABILITIES])
        self.assertIsNone(export.read_operating_point(self.export_dir))
        self.assertTrue(os.path.exists(os.path.join(self.export_dir, "assets", export.LABELS_FILE)))
        self.assertFalse(os.path.exists(os.path.join(self.export_dir, export.LABELS_FILE)))

    def test_served_outputs_follow_the_operating_point(self):
        before, raw_before = self._serve()
        point = _point()
        export.write_operating_point(self.export_dir, point)
        served, raw = self._serve()
        self.assertEqual(
            sorted(served), sorted([export.PROBABILITIES, export.CALIBRATED_PROBABILITIES, export.FINDINGS])
        )
        # The same weights: the model's probabilities are unchanged, bit for bit.
        self.assertAllEqual(raw, raw_before)
        self.assertAllEqual(served[export.PROBABILITIES], before[export.PROBABILITIES])
        expected = _calibration_of(point).apply(served[export.PROBABILITIES])
        self.assertAllClose(served[export.CALIBRATED_PROBABILITIES], expected, atol=1e-7, rtol=0)
        # Labels 5..14 pass through unchanged; labels 0..4 move (slope 2, intercept -1).
        self.assertAllEqual(
            served[export.CALIBRATED_PROBABILITIES][:, 5:], served[export.PROBABILITIES][:, 5:]
        )
        self.assertNotAllClose(
            served[export.CALIBRATED_PROBABILITIES][:, :5], served[export.PROBABILITIES][:, :5]
        )
        thresholds = np.array(point.thresholds)
        self.assertAllEqual(
            served[export.FINDINGS], (served[export.PROBABILITIES] >= thresholds).astype(np.int32)
        )
        self.assertEqual(export.read_operating_point(self.export_dir), point)
        self.assertEqual(export.read_labels(self.export_dir)["image_size"], _SIZE)
        # The Python call gives the signature's outputs.
        python = export.serve(tf.saved_model.load(self.export_dir), list(self.pngs.numpy()))
        self.assertEqual(sorted(python), sorted(served))
        for name, value in served.items():
            self.assertAllEqual(python[name], value)

    def test_hflip_serves_the_mean_with_the_mirror_image(self):
        export.write_operating_point(self.export_dir, _point(tta="hflip"))
        served, raw = self._serve()
        mirrored = self.model(self.pixels[:, :, ::-1].astype(np.float32), training=False).numpy()
        plain = self.model(self.pixels.astype(np.float32), training=False).numpy()
        self.assertAllClose(served[export.PROBABILITIES], (plain + mirrored) / 2, atol=1e-6)
        self.assertAllClose(raw, plain, atol=1e-6)  # serve_pixels stays the model alone.

    def test_rewriting_twice_keeps_the_weights(self):
        export.write_operating_point(self.export_dir, _point())
        export.write_operating_point(self.export_dir, None)
        served, _ = self._serve()
        self.assertEqual(list(served), [export.PROBABILITIES])
        weights = export.read_weights(self.export_dir)
        for got, want in zip(weights, self.model.get_weights(), strict=True):
            self.assertAllEqual(got, want)
        self.assertEqual(export.weights_sha256(weights), export.weights_sha256(self.model.get_weights()))

    def test_bad_operating_point_is_refused(self):
        with self.assertRaisesRegex(ValueError, "OperatingPoint.slopes needs 15 values, got 2"):
            dataclasses.replace(_point(), slopes=(1.0, 1.0))
        with self.assertRaisesRegex(
            ValueError, r"OperatingPoint.tta must be one of \('none', 'hflip'\), got 'vflip'"
        ):
            _point(tta="vflip")

    def test_export_of_an_older_layout_is_read_and_rewritten(self):
        # Exports written before the assets kept labels.json beside the SavedModel.
        shutil.move(os.path.join(self.export_dir, "assets", export.LABELS_FILE), self.export_dir)
        self.assertEqual(export.read_labels(self.export_dir)["image_size"], _SIZE)
        export.write_operating_point(self.export_dir, _point())
        self.assertTrue(os.path.exists(os.path.join(self.export_dir, "assets", export.LABELS_FILE)))


class ServedByEvaluationTest(tf.test.TestCase):
    """`trainer.evaluate` on a tiny run, then the export called through `saved_model_cli`."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="export_operating_point_test_")
        cls.records_dir = os.path.join(root, "records")
        cls.run_dir = os.path.join(root, "run")
        # bright_spot_model's probabilities rise with brightness, and write_records makes "No
        # Finding" images the brightest: an increasing Platt fit on val for that label.
        fake_data.write_records(
            cls.records_dir, image_size=_SIZE, split_sizes={"train": 4, "val": 30, "test": 10}
        )
        fake_data.write_fake_run(
            cls.run_dir, cls.records_dir, image_size=_SIZE, model=fake_data.bright_spot_model(_SIZE)
        )
        cls.report = evaluate.evaluate(
            evaluate.EvaluateConfig(run_dir=cls.run_dir, bootstrap_resamples=0, localization=False)
        )
        cls.export_dir = os.path.join(cls.run_dir, "export")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def _test_images(self):
        """(image_index, PNG bytes) of every test record, the record's pixels losslessly."""
        batches = dataset_lib.build_dataset(
            self.records_dir, "test", batch_size=64, training=False, with_metadata=True
        )
        indices, pngs = [], []
        for images, _, metadata in batches:
            indices += [i.decode() for i in metadata[schema.IMAGE_INDEX_KEY].numpy()]
            pngs += [fake_data.png_bytes(image[..., 0]) for image in images.numpy()]
        return indices, pngs

    def _saved_model_cli(self, pngs):
        inputs = os.path.join(self.get_temp_dir(), "image_bytes.npy")
        np.save(inputs, np.array(pngs, dtype=object), allow_pickle=True)
        out = os.path.join(self.get_temp_dir(), "served")
        cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
        run = subprocess.run(
            [cli, "run", "--dir", self.export_dir, "--tag_set", "serve", "--signature_def",
             export.SERVING_DEFAULT, "--inputs", f"image_bytes={inputs}", "--outdir", out, "--overwrite"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        self.assertEqual(run.returncode, 0, run.stderr[-3000:])
        return {name: np.load(os.path.join(out, f"{name}.npy")) for name in export.SERVED_OUTPUTS}

    def test_served_calibrated_output_equals_predictions_csv(self):
        indices, pngs = self._test_images()
        served = self._saved_model_cli(pngs)
        frame = pd.read_csv(
            os.path.join(self.run_dir, "reports", files.PREDICTIONS_CSV),
            keep_default_na=False,
            dtype={"image_index": str},
        )
        test = frame[frame["split"] == "test"].set_index(schema.IMAGE_INDEX_KEY).loc[indices]
        columns = [tables.calibrated_column(label) for label in schema.LABELS]
        # The evaluation fitted Platt scaling for some labels: the check is not vacuous.
        self.assertGreater(
            np.abs(test[columns].to_numpy() - test[list(schema.LABELS)].to_numpy()).max(), 1e-3
        )
        # predictions.csv holds 6 decimals.
        self.assertAllClose(
            served[export.CALIBRATED_PROBABILITIES], test[columns].to_numpy(), atol=1.5e-6, rtol=0
        )
        self.assertAllClose(
            served[export.PROBABILITIES], test[list(schema.LABELS)].to_numpy(), atol=1.5e-6, rtol=0
        )
        with open(os.path.join(self.run_dir, "reports", files.THRESHOLDS_JSON)) as f:
            stored = json.load(f)
        thresholds = np.array([
            tables.DEFAULT_THRESHOLD if stored["thresholds"][label] is None else stored["thresholds"][label]
            for label in schema.LABELS
        ])  # fmt: skip
        self.assertAllEqual(
            served[export.FINDINGS], (served[export.PROBABILITIES] >= thresholds).astype(np.int32)
        )

    def test_an_evaluation_elsewhere_leaves_the_export_alone(self):
        before = export.read_operating_point(self.export_dir)
        self.assertIsNotNone(before)
        evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=self.run_dir,
                bootstrap_resamples=0,
                localization=False,
                also_val=False,
                output_dir=os.path.join(self.get_temp_dir(), "elsewhere"),
            )
        )
        self.assertEqual(export.read_operating_point(self.export_dir), before)


if __name__ == "__main__":
    tf.test.main()
