"""Prediction of a run trained on another label vocabulary than NIH's.

The run is built by the test: a tiny model with a 3-label head ("NORMAL", "Widget", "Gadget
Opacity", a made-up vocabulary whose "no finding" label is the pediatric set's NORMAL), exported
with those labels, on records of the same vocabulary (`fake_data.write_vocabulary_records`), then
evaluated, which writes `reports/thresholds.json` and the export's operating point.
"""

import csv
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import fake_data
from trainer import api
from trainer.evaluation import pipeline as evaluate
from trainer.model import export, gradcam
from trainer.prediction import loaded_run
from trainer.prediction import predictor as predict
from trainer.training import config as config_lib
from trainer.training import runner as train_lib

_LABELS = ("NORMAL", "Widget", "Gadget Opacity")
_SIZE = 32


def _three_label_model(seed: int = 0) -> keras.Model:
    """`fake_data.tiny_keras_model`'s layers with a Dense(3, sigmoid) head named "probabilities"."""
    base = fake_data.tiny_keras_model(_SIZE, seed=seed)
    head = keras.layers.Dense(
        len(_LABELS),
        activation="sigmoid",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
        name="probabilities",
    )
    return keras.Model(base.input, head(base.get_layer("pool").output), name="tiny3")


def _write_run(run_dir: str, records_dir: str, model: keras.Model) -> None:
    """A run directory as trainer.train writes one for records of `_LABELS`."""
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    model.save(os.path.join(run_dir, "checkpoints", "best.keras"))
    export.export_model(model, os.path.join(run_dir, "export"), image_size=_SIZE, labels=_LABELS)
    config = {
        "records_dir": records_dir,
        "image_size": _SIZE,
        "model": model.name,
        "dataset": "made_up",
        "labels": list(_LABELS),
    }
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def _values(rng: np.random.Generator, n: int) -> np.ndarray:
    """0/1 values, every label known, NORMAL exactly where no other label is positive."""
    findings = (rng.random((n, len(_LABELS) - 1)) < 0.4).astype(np.float64)
    return np.concatenate([(findings.sum(axis=1, keepdims=True) == 0).astype(np.float64), findings], axis=1)


class PredictVocabularyTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="predict_vocabulary_test_")
        rng = np.random.default_rng(3)
        cls.records_dir = os.path.join(root, "records")
        fake_data.write_vocabulary_records(
            cls.records_dir,
            {"train": _values(rng, 8), "val": _values(rng, 24), "test": _values(rng, 24)},
            labels=_LABELS,
            dataset="made_up",
            image_size=_SIZE,
            seed=5,
        )
        cls.run_dir = os.path.join(root, "run")
        _write_run(cls.run_dir, cls.records_dir, _three_label_model())
        cls.report = evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=cls.run_dir, bootstrap_resamples=5, batch_size=8, localization=False
            )
        )
        cls.images = [fake_data.gray_pixels(40, 48, seed=s) for s in range(3)]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def test_predict_returns_the_runs_label_columns(self):
        run = api.load_run(self.run_dir)
        self.assertEqual(run.labels, _LABELS)
        frame = run.predict(self.images)
        finding_columns = [api.finding_column(label) for label in _LABELS]
        self.assertEqual(list(frame.columns), ["source", "error", *_LABELS, "calibrated", *finding_columns])
        self.assertTrue(frame["calibrated"].all())  # The evaluation stored a calibration.
        # The uncalibrated probabilities are the export's own, column for column.
        raw = run.predict(self.images, calibrate=False)
        served = export.serve(
            tf.saved_model.load(run.export_dir), [loaded_run.encode_array(p) for p in self.images]
        )
        self.assertAllClose(raw[list(_LABELS)].to_numpy(), served[export.PROBABILITIES], atol=1e-6)
        # Each finding column is its label's probability at its own threshold.
        for label in _LABELS:
            expected = (raw[label].to_numpy() >= run.thresholds.values[label]).astype(int)
            self.assertEqual(frame[api.finding_column(label)].astype(int).tolist(), expected.tolist())

    def test_the_evaluations_operating_point_serves_the_runs_labels(self):
        point = export.read_operating_point(os.path.join(self.run_dir, "export"))
        self.assertIsNotNone(point)
        self.assertEqual(point.labels, _LABELS)
        self.assertLen(point.thresholds, len(_LABELS))
        thresholds = json.load(open(os.path.join(self.run_dir, "reports", "thresholds.json")))
        self.assertEqual(list(point.thresholds), [thresholds["thresholds"][label] for label in _LABELS])
        served = export.serve(
            tf.saved_model.load(os.path.join(self.run_dir, "export")),
            [loaded_run.encode_array(p) for p in self.images],
        )
        self.assertEqual(served[export.FINDINGS].shape, (len(self.images), len(_LABELS)))
        self.assertEqual(served[export.CALIBRATED_PROBABILITIES].shape, (len(self.images), len(_LABELS)))
        # The served calibrated probabilities are the ones `Run.predict` returns.
        frame = api.load_run(self.run_dir).predict(self.images)
        self.assertAllClose(
            frame[list(_LABELS)].to_numpy(), served[export.CALIBRATED_PROBABILITIES], atol=1e-5
        )

    def test_an_operating_point_of_other_labels_is_refused(self):
        with self.assertRaisesRegex(ValueError, "OperatingPoint.slopes needs 3 values, got 15"):
            export.OperatingPoint(
                slopes=(1.0,) * 15, intercepts=(0.0,) * 3, calibrated=(False,) * 3, thresholds=(0.5,) * 3,
                epsilon=1e-7, labels=_LABELS,
            )  # fmt: skip
        other = os.path.join(self.get_temp_dir(), "export_copy")
        shutil.copytree(os.path.join(self.run_dir, "export"), other)
        nih_point = evaluate.operating_point({}, None, tta="none", source="test")
        with self.assertRaisesRegex(ValueError, "are not those of the export"):
            export.write_operating_point(other, nih_point)

    def test_gradcam_takes_the_runs_label_names(self):
        run = api.load_run(self.run_dir)
        heat = run.gradcam(self.images[0], "Gadget Opacity")
        self.assertEqual(heat.shape, (40, 48))
        self.assertAllClose(heat, run.gradcam(self.images[0], 2))
        with self.assertRaisesRegex(ValueError, r"one of \['NORMAL', 'Widget', 'Gadget Opacity'\]"):
            run.gradcam(self.images[0], "Effusion")
        with self.assertRaisesRegex(ValueError, "index 0..2"):
            run.gradcam(self.images[0], 3)

    def test_cxr_predict_writes_the_runs_labels(self):
        folder = os.path.join(self.get_temp_dir(), "images")
        os.makedirs(folder, exist_ok=True)
        for i, pixels in enumerate(self.images):
            with open(os.path.join(folder, f"img{i}.png"), "wb") as f:
                f.write(loaded_run.encode_array(pixels))
        output = os.path.join(self.get_temp_dir(), "predictions.csv")
        gradcam_dir = os.path.join(self.get_temp_dir(), "gradcam")
        results, used, path = predict.predict(
            self.run_dir, folder, output_csv=output, gradcam=True, gradcam_dir=gradcam_dir, gradcam_top_k=5
        )
        self.assertEqual(used.labels, _LABELS)
        rows = list(csv.reader(open(path)))
        self.assertEqual(
            rows[0],
            ["path", "image", "error", *_LABELS, "findings", "gradcam", "calibrated", "weights_sha256"],
        )
        self.assertLen(rows, 1 + len(self.images))
        for result in results:
            self.assertLen(result.probabilities, len(_LABELS))
            self.assertTrue(set(result.findings) <= set(_LABELS))
            # Every label but the "no finding" one is explained, whatever k asks for.
            names = sorted(os.path.basename(p).split("_gradcam_")[1] for p in result.gradcam_paths)
            self.assertEqual(names, ["Gadget Opacity.png", "Widget.png"])

    def test_top_findings_skip_the_no_finding_label(self):
        probabilities = np.array([0.9, 0.2, 0.5])
        self.assertEqual(gradcam.top_findings(probabilities, 5, labels=_LABELS, skip=("NORMAL",)), [2, 1])
        self.assertEqual(gradcam.top_findings(probabilities, 1, labels=_LABELS, skip=()), [0])
        with self.assertRaisesRegex(ValueError, r"must be \[3\]"):
            gradcam.top_findings(np.zeros(15), 2, labels=_LABELS)

    def test_calibration_mean_ece_is_over_the_runs_findings(self):
        self.assertEqual(self.report["labels"], list(_LABELS))
        summary = self.report["calibration"]["splits"]["test"]
        self.assertEqual(summary["mean_ece_labels"], ["Widget", "Gadget Opacity"])
        eces = {f["label"]: f["ece"] for f in summary["findings"]}
        self.assertAlmostEqual(summary["mean_ece_14"], (eces["Widget"] + eces["Gadget Opacity"]) / 2)

    def test_thresholds_of_other_labels_are_refused(self):
        path = os.path.join(self.get_temp_dir(), "nih_thresholds.json")
        with open(path, "w") as f:
            json.dump({"labels": ["Effusion", "No Finding"], "thresholds": {"Effusion": 0.3}}, f)
        with self.assertRaisesRegex(ValueError, "nih_thresholds.json lists the labels"):
            api.load_run(self.run_dir, thresholds_path=path)

    def test_export_and_config_of_different_labels_are_refused(self):
        run_dir = os.path.join(self.get_temp_dir(), "mixed")
        shutil.copytree(self.run_dir, run_dir)
        config_path = os.path.join(run_dir, "config.json")
        config = json.load(open(config_path))
        with open(config_path, "w") as f:
            json.dump({**config, "labels": ["Widget", "NORMAL", "Gadget Opacity"]}, f)
        with self.assertRaisesRegex(ValueError, "describe different models"):
            api.load_run(run_dir)


@pytest.mark.slow
class TrainedVocabularyRunTest(tf.test.TestCase):
    def test_a_trained_run_of_another_vocabulary_predicts_its_labels(self):
        # trainer.train on 3-label records (a tiny ResUNet, one step), evaluated, then predicted.
        rng = np.random.default_rng(7)
        records = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_vocabulary_records(
            records,
            {"train": _values(rng, 16), "val": _values(rng, 16), "test": _values(rng, 16)},
            labels=_LABELS,
            dataset="made_up",
            image_size=_SIZE,
        )
        config = config_lib.TrainConfig(
            records_dir=records,
            run_dir=os.path.join(self.get_temp_dir(), "run"),
            epochs=1,
            class_imbalance="none",
            depth=2,
            base_filters=4,
            batch_size_per_replica=8,
            steps_per_epoch=1,
            verbose=0,
            early_stopping_patience=0,
        )
        train_lib.train(config, train_lib.create_strategy("auto"))
        evaluate.evaluate(
            evaluate.EvaluateConfig(run_dir=config.run_dir, bootstrap_resamples=5, localization=False)
        )
        run = api.load_run(config.run_dir)
        self.assertEqual(run.labels, _LABELS)
        image = fake_data.gray_pixels(40, 40, seed=1)
        frame = run.predict([image])
        self.assertEqual(list(frame.columns[2:5]), list(_LABELS))
        self.assertEqual(export.read_operating_point(run.export_dir).labels, _LABELS)
        self.assertEqual(run.gradcam(image, "Widget").shape, (40, 40))


if __name__ == "__main__":
    tf.test.main()
