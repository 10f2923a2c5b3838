"""Tests for trainer.prediction.predictor and trainer.model.gradcam on a tiny exported run built by the test."""

import io
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from tests import fake_data
from tfrecords import schema
from trainer.evaluation.report import tables
from trainer.model import export as export_lib
from trainer.model import gradcam
from trainer.prediction import predictor as predict


def _pattern(height, width):
    """A smooth, non-constant gray image: the same content at any size."""
    y, x = np.mgrid[0:height, 0:width]
    return (128 + 90 * np.sin(x / width * 6.0) * np.cos(y / height * 4.0)).astype(np.uint8)


class PredictTest(parameterized.TestCase, tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = tempfile.mkdtemp(prefix="predict_test_")
        cls.run_dir = fake_data.write_fake_run(
            os.path.join(cls._root, "run"), "unused_records", image_size=32
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def _write(self, folder, name, data):
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_modes_sizes_and_a_corrupt_file(self):
        folder = os.path.join(self.get_temp_dir(), "images")
        pixels = _pattern(64, 64)
        for mode in ("L", "LA", "RGB", "RGBA", "P", "I;16"):
            self._write(folder, f"m_{mode.replace(';', '')}.png", fake_data.png_bytes(pixels, mode=mode))
        self._write(folder, "wide.png", fake_data.png_bytes(_pattern(48, 80)))
        self._write(os.path.join(folder, "sub"), "nested.png", fake_data.png_bytes(_pattern(40, 40)))
        self._write(folder, "corrupt.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        self._write(folder, "empty.png", b"")
        self._write(folder, "notes.txt", b"not an image, not listed")
        output = os.path.join(self.get_temp_dir(), "out.csv")
        # One batch holds every file: a bad image must not take the good ones down with it.
        results, _, path = predict.predict(self.run_dir, folder, output_csv=output, batch_size=32)

        frame = pd.read_csv(path, keep_default_na=False).set_index("image")
        self.assertLen(frame, 10)
        # Every row names the weights that predicted it: the export's.
        exported = export_lib.weights_of(tf.saved_model.load(os.path.join(self.run_dir, "export")))
        self.assertEqual(set(frame["weights_sha256"]), {export_lib.weights_sha256(exported)})
        self.assertRegex(frame.loc["corrupt.png", "error"], "cannot decode image: .*PNG")
        self.assertRegex(frame.loc["empty.png", "error"], "cannot decode image: .*empty")
        self.assertEqual(frame.loc["corrupt.png", "Atelectasis"], "")
        good = frame[frame["error"] == ""]
        self.assertLen(good, 8)
        probabilities = good[list(schema.LABELS)].to_numpy(dtype=float)
        self.assertTrue(((probabilities > 0) & (probabilities < 1)).all())
        # Same gray content in every mode: the same prediction (up to 16-bit vs 8-bit rounding).
        reference = good.loc["m_L.png", list(schema.LABELS)].to_numpy(dtype=float)
        for mode in ("LA", "RGB", "RGBA", "P", "I16"):
            row = good.loc[f"m_{mode}.png", list(schema.LABELS)].to_numpy(dtype=float)
            self.assertAllClose(row, reference, atol=2e-3, msg=mode)
        self.assertIn(os.path.join(folder, "sub", "nested.png"), list(good["path"]))
        self.assertEqual([r.path for r in results], sorted(r.path for r in results))

    def test_jpeg_files_are_collected_and_predicted(self):
        folder = os.path.join(self.get_temp_dir(), "jpegs")
        pixels = _pattern(48, 48)
        for name, fmt in (("a.jpg", "JPEG"), ("b.JPEG", "JPEG"), ("c.png", "PNG")):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format=fmt)
            self._write(folder, name, buffer.getvalue())
        self._write(folder, "notes.txt", b"not an image, not listed")
        self.assertEqual(
            [os.path.basename(p) for p in predict.list_images(folder)], ["a.jpg", "b.JPEG", "c.png"]
        )
        results, _, path = predict.predict(
            self.run_dir, folder, output_csv=os.path.join(self.get_temp_dir(), "jpeg.csv"), gradcam=True,
            gradcam_dir=os.path.join(self.get_temp_dir(), "jpeg_cams"), gradcam_top_k=1,
        )  # fmt: skip
        self.assertEqual([r.error for r in results], ["", "", ""])
        # The JPEGs hold the PNG's pixels up to compression: nearly the same probabilities.
        self.assertAllClose(results[0].probabilities, results[2].probabilities, atol=0.02)
        for result in results:
            self.assertEqual(np.asarray(Image.open(result.gradcam_paths[0])).shape, (48, 48, 3))

    def test_gradcam_refuses_weights_the_run_does_not_record(self):
        run_dir = fake_data.write_fake_run(
            os.path.join(self.get_temp_dir(), "other_run"), "unused", image_size=32
        )
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config | {"weights_sha256": "f" * 64}, f)
        image = self._write(self.get_temp_dir(), "w.png", fake_data.png_bytes(_pattern(32, 32)))
        # Without Grad-CAM only the export is read.
        results, _, _ = predict.predict(run_dir, image, output_csv=os.path.join(self.get_temp_dir(), "w.csv"))
        self.assertEqual(results[0].error, "")
        with self.assertRaisesRegex(ValueError, r"but .*config\.json records ffff"):
            predict.predict(
                run_dir, image, output_csv=os.path.join(self.get_temp_dir(), "w.csv"), gradcam=True
            )

    def test_thresholds_from_file_and_default(self):
        image = self._write(self.get_temp_dir(), "one.png", fake_data.png_bytes(_pattern(32, 32)))
        results, used, _ = predict.predict(
            self.run_dir, image, output_csv=os.path.join(self.get_temp_dir(), "a.csv")
        )
        self.assertIn("default 0.5", used.source)
        probabilities = results[0].probabilities
        self.assertEqual(
            results[0].findings, tuple(label for label, p in zip(schema.LABELS, probabilities) if p >= 0.5)
        )
        # A thresholds.json as trainer.evaluation.pipeline writes it: 0 (always) for Atelectasis, 1 (never)
        # for the rest, and undefined for Hernia, which then falls back to 0.5.
        values = {label: 1.0 for label in schema.LABELS}
        values["Atelectasis"] = 0.0
        values["Hernia"] = None
        path = tables.write_thresholds_json(
            os.path.join(self.get_temp_dir(), "t.json"), values, source_split="val"
        )
        results, used, _ = predict.predict(
            self.run_dir, image, thresholds_path=path, output_csv=os.path.join(self.get_temp_dir(), "b.csv")
        )
        expected = (
            ("Atelectasis", "Hernia")
            if probabilities[schema.LABELS.index("Hernia")] >= 0.5
            else ("Atelectasis",)
        )
        self.assertEqual(results[0].findings, expected)
        self.assertIn("Youden J on val", used.source)
        self.assertIn("default 0.5 for Hernia", used.source)

    @parameterized.parameters(((37, 53),), ((64, 64),), ((100, 80),))
    def test_gradcam_maps_have_the_image_size_and_are_not_constant(self, size):
        image = self._write(
            self.get_temp_dir(), f"g{size[0]}.png", fake_data.png_bytes(_pattern(*size), mode="RGBA")
        )
        out = os.path.join(self.get_temp_dir(), f"cams{size[0]}")
        results, _, _ = predict.predict(
            self.run_dir,
            image,
            output_csv=os.path.join(self.get_temp_dir(), "g.csv"),
            gradcam=True,
            gradcam_dir=out,
            gradcam_top_k=2,
        )
        written = results[0].gradcam_paths
        self.assertLen(written, 2)
        top = gradcam.top_findings(results[0].probabilities, 2)
        self.assertEqual(
            [os.path.basename(p) for p in written],
            [f"g{size[0]}_gradcam_{schema.LABELS[i]}.png" for i in top],
        )
        for path in written:
            with open(path, "rb") as f:
                overlay = np.asarray(Image.open(io.BytesIO(f.read())))
            self.assertEqual(overlay.shape, (*size, 3))
        model = keras.models.load_model(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        cam = gradcam.GradCam(model)
        pixels = _pattern(32, 32)[..., None]
        maps = cam.maps(pixels, top, output_size=size)
        self.assertEqual(maps.shape, (2, *size))
        for one in maps:
            self.assertGreater(one.std(), 0.01)
            self.assertAllClose(one.max(), 1.0)
            self.assertGreaterEqual(one.min(), 0.0)

    def test_gradcam_equals_class_activation_map_for_pooled_dense_head(self):
        # With features A -> global average pooling -> Dense(W, b), d logit_k / dA[i, j, c] =
        # W[c, k] / (h w) everywhere, so Grad-CAM is ReLU(sum_c W[c, k] A[i, j, c]) up to scale,
        # the class activation map (Zhou et al. 2016). Checked at the model's own size.
        model = keras.models.load_model(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        pixels = _pattern(32, 32)[..., None].astype(np.float32)
        feature_model = keras.Model(model.inputs, model.get_layer("decoder_output").output)
        features = feature_model([pixels[None]])[0].numpy()
        kernel = model.get_layer("probabilities").kernel.numpy()
        for k in (0, 5):
            expected = np.maximum(features @ kernel[:, k], 0)
            expected = expected / expected.max()
            actual = gradcam.GradCam(model).maps(pixels, [k], output_size=(32, 32))[0]
            self.assertAllClose(actual, expected, atol=1e-5)

    def test_gradcam_on_the_resunet(self):
        from trainer.model import models

        model = models.build_model("resunet", image_size=32, depth=2, base_filters=4)
        maps = gradcam.GradCam(model).maps(_pattern(32, 32)[..., None], [0, 4, 13], output_size=(45, 61))
        self.assertEqual(maps.shape, (3, 45, 61))
        for one in maps:
            self.assertGreater(one.std(), 0.01)
            self.assertBetween(float(one.min()), 0.0, 1.0)

    def test_gradcam_needs_the_decoder_layer(self):
        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Dense(15, name="probabilities")(keras.layers.Flatten()(inputs))
        with self.assertRaisesRegex(ValueError, "needs a layer named 'decoder_output'"):
            gradcam.GradCam(keras.Model(inputs, outputs))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "--images path '.*nowhere.png' does not exist"):
            predict.list_images(os.path.join(self.get_temp_dir(), "nowhere.png"))
        empty = os.path.join(self.get_temp_dir(), "empty_folder")
        os.makedirs(empty, exist_ok=True)
        with self.assertRaisesRegex(ValueError, r"holds no \.png, \.jpg or \.jpeg file"):
            predict.list_images(empty)
        with self.assertRaisesRegex(ValueError, "matches no file"):
            predict.list_images(os.path.join(empty, "*.png"))
        with self.assertRaisesRegex(ValueError, "--thresholds file .* does not exist"):
            predict.read_thresholds(self.run_dir, os.path.join(empty, "thresholds.json"))
        with self.assertRaisesRegex(ValueError, "holds no SavedModel"):
            image = self._write(self.get_temp_dir(), "x.png", fake_data.png_bytes(_pattern(8, 8)))
            predict.predict(empty, image)


if __name__ == "__main__":
    tf.test.main()
