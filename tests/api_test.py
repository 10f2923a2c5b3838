"""Tests for trainer.api (and trainer.prediction.loaded_run behind it) on a tiny run built by the test."""

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

from tests import fake_data
from tfrecords import schema
from trainer import api
from trainer.evaluation import calibration
from trainer.evaluation.report import tables
from trainer.model import gradcam, models
from trainer.prediction import loaded_run
from trainer.training import runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pattern(height, width):
    """A smooth, left-right asymmetric gray image."""
    y, x = np.mgrid[0:height, 0:width]
    return (40 + 200 * (x / width) ** 2 * (0.6 + 0.4 * np.cos(y / height * 3.0))).astype(np.uint8)


def _encoded(pixels, fmt):
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


class ApiImportTest(tf.test.TestCase):
    def test_import_loads_nothing_heavy(self):
        code = (
            "import sys\n"
            "from trainer import api\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'pandas', 'PIL') if m in sys.modules)\n"
            "print(','.join(heavy) or 'none')\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
        )
        self.assertEqual(out.stdout.strip(), "none", out.stderr)


class ApiNamesTest(tf.test.TestCase):
    def test_names_load_on_access(self):
        self.assertIs(api.Run, loaded_run.Run)
        self.assertEqual(api.LABELS, schema.LABELS)
        self.assertEqual(api.finding_column("No Finding"), "finding_No Finding")
        with self.assertRaisesRegex(AttributeError, "has no attribute 'predict'"):
            api.predict  # noqa: B018


class ApiTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = tempfile.mkdtemp(prefix="api_test_")
        cls.records_dir = os.path.join(cls._root, "records")
        cls.manifest = fake_data.write_records(
            cls.records_dir, image_size=32, split_sizes={"train": 6, "val": 4, "test": 5}
        )
        cls.run_dir = fake_data.write_fake_run(os.path.join(cls._root, "run"), cls.records_dir, image_size=32)
        cls.images = os.path.join(cls._root, "images")
        os.makedirs(cls.images)
        cls.pixels = _pattern(40, 56)
        for name, fmt in (("x.png", "PNG"), ("x.jpg", "JPEG")):
            with open(os.path.join(cls.images, name), "wb") as f:
                f.write(_encoded(cls.pixels, fmt))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def _serving(self, content):
        loaded = tf.saved_model.load(os.path.join(self.run_dir, "export"))
        return loaded.signatures["serving_default"](image_bytes=tf.constant([content]))[
            "probabilities"
        ].numpy()[0]

    def test_predict_takes_paths_bytes_and_arrays(self):
        run = api.load_run(self.run_dir)
        png = os.path.join(self.images, "x.png")
        rgb = np.repeat(self.pixels[..., None], 3, axis=-1)
        inputs = [png, os.path.join(self.images, "x.jpg"), _encoded(self.pixels, "PNG"), self.pixels, rgb]
        frame = run.predict(inputs)
        self.assertIsInstance(frame, pd.DataFrame)
        self.assertEqual(list(frame["source"]), [png, inputs[1], "bytes[2]", "array[3]", "array[4]"])
        self.assertEqual(list(frame["error"]), [""] * 5)
        self.assertEqual(
            list(frame.columns),
            [
                "source",
                "error",
                *schema.LABELS,
                "calibrated",
                *[api.finding_column(label) for label in schema.LABELS],
            ],
        )
        probabilities = frame[list(schema.LABELS)].to_numpy()
        # The file's probabilities are the export's own output on its bytes.
        with open(png, "rb") as f:
            self.assertAllClose(probabilities[0], self._serving(f.read()), atol=1e-6)
        # Same pixels as a file, as bytes, as a gray array and as an RGB array: the same prediction.
        for row in (2, 3, 4):
            self.assertAllClose(probabilities[row], probabilities[0], atol=1e-6, msg=frame["source"][row])
        # The JPEG is decoded (lossy, so close, not equal).
        self.assertAllClose(probabilities[1], probabilities[0], atol=0.02)
        self.assertNotAllClose(probabilities[1], probabilities[0], atol=1e-7)
        # No thresholds were chosen (no reports/thresholds.json): no findings.
        self.assertTrue(frame[api.finding_column("Effusion")].isna().all())
        self.assertFalse(frame["calibrated"].any())

    def test_a_single_image_and_an_unreadable_one(self):
        run = api.load_run(self.run_dir)
        self.assertLen(run.predict(self.pixels), 1)  # One array is one image.
        frame = run.predict([os.path.join(self.images, "missing.png"), b"not an image", self.pixels])
        self.assertRegex(frame["error"][0], "cannot read file")
        self.assertRegex(frame["error"][1], "cannot decode image")
        self.assertEqual(frame["error"][2], "")
        self.assertTrue(np.isnan(frame["Atelectasis"][0]))
        self.assertGreater(frame["Atelectasis"][2], 0.0)

    def test_bad_inputs_are_named(self):
        run = api.load_run(self.run_dir)
        with self.assertRaisesRegex(ValueError, r"images\[1\]: arrays must be uint8.*float32"):
            run.predict([self.pixels, self.pixels.astype(np.float32)])
        with self.assertRaisesRegex(
            ValueError, r"images\[0\]: arrays must be gray \[H, W\] or RGB.*\(2, 4, 4\)"
        ):
            run.predict([np.zeros((2, 4, 4), np.uint8)])
        with self.assertRaisesRegex(ValueError, r"images\[0\]: expected a file path.*got int"):
            run.predict([3])
        with self.assertRaisesRegex(ValueError, "holds no SavedModel"):
            api.load_run(self.images)

    def test_calibration_and_findings_from_the_thresholds_file(self):
        run = api.load_run(self.run_dir)
        raw = run.predict(self.pixels)
        atelectasis = float(raw["Atelectasis"][0])
        stored = calibration.Calibration(
            "val",
            {label: None for label in schema.LABELS} | {"Atelectasis": calibration.PlattScaling(2.0, -1.0)},
            {label: "too few positives" for label in schema.LABELS if label != "Atelectasis"},
        )
        # Atelectasis at its own probability (a finding), Cardiomegaly just above it (none), Hernia unchosen.
        values = {label: 0.5 for label in schema.LABELS}
        values |= {
            "Atelectasis": atelectasis,
            "Cardiomegaly": float(raw["Cardiomegaly"][0]) + 1e-4,
            "Hernia": None,
        }
        path = tables.write_thresholds_json(
            os.path.join(self.get_temp_dir(), "thresholds.json"),
            values,
            source_split="val",
            calibration=stored.to_json(),
        )
        frame = api.load_run(self.run_dir, thresholds_path=path).predict(self.pixels)
        # Platt: sigmoid(2 logit(p) - 1) for Atelectasis; the other labels as the model gave them.
        expected = 1 / (1 + np.exp(-(2 * np.log(atelectasis / (1 - atelectasis)) - 1)))
        self.assertAllClose(frame["Atelectasis"][0], expected, atol=1e-6)
        self.assertAllClose(frame["Cardiomegaly"][0], raw["Cardiomegaly"][0], atol=1e-7)
        self.assertTrue(frame["calibrated"][0])
        self.assertEqual(frame[api.finding_column("Atelectasis")][0], 1)
        self.assertEqual(frame[api.finding_column("Cardiomegaly")][0], 0)
        self.assertIs(frame[api.finding_column("Hernia")][0], pd.NA)
        plain = api.load_run(self.run_dir, thresholds_path=path).predict(self.pixels, calibrate=False)
        self.assertAllClose(plain["Atelectasis"][0], atelectasis, atol=1e-7)

    def test_gradcam_is_the_map_of_the_run_model(self):
        run = api.load_run(self.run_dir)
        heat = run.gradcam(os.path.join(self.images, "x.png"), "Effusion")
        self.assertEqual(heat.shape, self.pixels.shape)
        self.assertEqual(heat.dtype, np.float32)
        self.assertBetween(float(heat.min()), 0.0, 1.0)
        self.assertAllClose(heat.max(), 1.0)
        self.assertAllClose(run.gradcam(self.pixels, schema.LABELS.index("Effusion")), heat)
        # The same map as Grad-CAM on checkpoints/best.keras (here the export's weights too).
        model = models.load_model(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        pixels = loaded_run.decode_pixels(_encoded(self.pixels, "PNG"), 32)
        expected = gradcam.GradCam(model).maps(
            pixels, [schema.LABELS.index("Effusion")], output_size=(40, 56)
        )
        self.assertAllClose(heat, expected[0], atol=1e-5)
        with self.assertRaisesRegex(ValueError, "label must be one of .*got 'Flu'"):
            run.gradcam(self.pixels, "Flu")
        with self.assertRaisesRegex(ValueError, r"bytes\[0\]: cannot decode image"):
            run.gradcam(b"junk", 0)

    def test_digest_equals_the_trainers(self):
        run = api.load_run(self.run_dir)
        model = models.load_model(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        self.assertEqual(run.weights_sha256, runner.weights_digest(model))

    def test_dataset_reads_the_run_records(self):
        run = api.load_run(self.run_dir)
        batches = list(run.dataset("test", batch_size=2))
        self.assertEqual([int(images.shape[0]) for images, _ in batches], [2, 2, 1])
        images, labels = batches[0]
        self.assertEqual(images.dtype, tf.uint8)
        self.assertEqual(images.shape[1:], (32, 32, 1))
        self.assertEqual(labels.shape, (2, schema.NUM_LABELS))
        self.assertLen(list(run.dataset("val", batch_size=8, with_metadata=True))[0], 3)


class ApiOneModelTest(tf.test.TestCase):
    """Grad-CAM uses the export's weights, and refuses a run whose files record other weights."""

    def setUp(self):
        super().setUp()
        self.run_dir = fake_data.write_fake_run(
            os.path.join(self.get_temp_dir(), "run"), "unused", image_size=32
        )
        self.pixels = _pattern(32, 32)

    def test_a_checkpoint_with_other_weights_is_not_used(self):
        exported = models.load_model(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        # As after --export_weights=final: the checkpoint now holds other weights than the export.
        fake_data.tiny_keras_model(32, seed=7).save(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        heat = api.load_run(self.run_dir).gradcam(self.pixels, 3)
        expected = gradcam.GradCam(exported).maps(self.pixels[..., None], [3], output_size=(32, 32))[0]
        self.assertAllClose(heat, expected, atol=1e-5)
        other = gradcam.GradCam(fake_data.tiny_keras_model(32, seed=7)).maps(
            self.pixels[..., None], [3], output_size=(32, 32)
        )[0]
        self.assertNotAllClose(heat, other, atol=1e-3)

    def test_recorded_digest_is_checked(self):
        model = models.load_model(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        config_path = os.path.join(self.run_dir, "config.json")
        with open(config_path) as f:
            config = json.load(f)
        with open(config_path, "w") as f:
            json.dump(config | {"weights_sha256": runner.weights_digest(model)}, f)
        self.assertEqual(api.load_run(self.run_dir).gradcam(self.pixels, 0).shape, (32, 32))
        with open(os.path.join(self.run_dir, "export", "assets", "labels.json")) as f:
            labels = json.load(f)
        with open(os.path.join(self.run_dir, "export", "assets", "labels.json"), "w") as f:
            json.dump(labels | {"weights_sha256": "0" * 64}, f)
        with self.assertRaisesRegex(ValueError, r"sha256 [0-9a-f]{64}, but .*labels\.json records 0000"):
            api.load_run(self.run_dir).gradcam(self.pixels, 0)

    def test_the_resunet_gets_the_export_weights(self):
        # The trainer's model: batch norm statistics, a pooled bottleneck and augmentation state.
        model = models.build_model("resunet", image_size=32, depth=2, base_filters=4)
        run_dir = fake_data.write_fake_run(
            os.path.join(self.get_temp_dir(), "resunet"), "unused", image_size=32, model=model
        )
        run = api.load_run(run_dir)
        self.assertEqual(run.weights_sha256, runner.weights_digest(model))
        heat = run.gradcam(_pattern(45, 61), "Mass")
        expected = gradcam.GradCam(model).maps(
            loaded_run.decode_pixels(_encoded(_pattern(45, 61), "PNG"), 32),
            [schema.LABELS.index("Mass")],
            output_size=(45, 61),
        )[0]
        self.assertAllClose(heat, expected, atol=1e-5)

    def test_a_checkpoint_of_another_architecture_is_refused(self):
        inputs = keras.Input((32, 32, 1), name="images")
        x = keras.layers.Conv2D(4, 3, padding="same", name="decoder_output")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(schema.NUM_LABELS, activation="sigmoid", name="probabilities")(x)
        keras.Model(inputs, outputs).save(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        with self.assertRaisesRegex(
            ValueError, "hold different models: the export has no weight 'decoder_output/kernel'"
        ):
            api.load_run(self.run_dir).gradcam(self.pixels, 0)


if __name__ == "__main__":
    tf.test.main()
