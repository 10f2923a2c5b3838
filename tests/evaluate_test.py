"""End-to-end tests of trainer.evaluation.pipeline on a tiny run directory built by the test.

The run is `fake_data.write_fake_run`: a tiny untrained Keras model (conv "decoder_output",
pooling, Dense(15)) saved as checkpoints/best.keras and exported by the trainer's own
`trainer.model.export.export_model`, over `fake_data.write_records` records. Training a real model
is the trainer's tests' business; here it would only add minutes.
"""

import filecmp
import io
import json
import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from sklearn import metrics as sk_metrics

from tests import fake_data
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.report import files

_SPLITS = {"train": 16, "val": 16, "test": 24}


class EvaluateTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="evaluate_test_")
        cls.records_dir = os.path.join(root, "records")
        cls.run_dir = os.path.join(root, "run")
        cls.manifest = fake_data.write_records(cls.records_dir, image_size=32, split_sizes=_SPLITS, seed=3)
        fake_data.write_fake_run(cls.run_dir, cls.records_dir, image_size=32)
        cls.report = evaluate.evaluate(
            evaluate.EvaluateConfig(run_dir=cls.run_dir, bootstrap_resamples=100, seed=0, batch_size=10)
        )
        cls.reports_dir = os.path.join(cls.run_dir, "reports")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def test_writes_every_report_file(self):
        for name in (
            files.AUC_JSON,
            files.AUC_CSV,
            files.AUC_MD,
            files.THRESHOLDS_JSON,
            files.PREDICTIONS_CSV,
            files.ROC_PNG,
            files.TRAINING_PNG,
            files.DISTRIBUTION_PNG,
            files.COOCCURRENCE_PNG,
        ):
            path = os.path.join(self.reports_dir, name)
            self.assertTrue(os.path.exists(path), msg=path)
            self.assertGreater(os.path.getsize(path), 100, msg=path)
            if name.endswith(".png"):
                with open(path, "rb") as f:
                    image = Image.open(io.BytesIO(f.read()))
                    image.verify()
                self.assertGreater(min(image.size), 500, msg=path)

    def test_auc_json_names_split_manifest_and_model(self):
        with open(os.path.join(self.reports_dir, files.AUC_JSON)) as f:
            data = json.load(f)
        self.assertEqual(data["split"], "test")
        self.assertEqual(data["manifest_sha256"], manifest_lib.manifest_sha256(self.records_dir))
        self.assertEqual(data["model_path"], os.path.join(self.run_dir, "export"))
        self.assertEqual(data["model_source"], "export")
        self.assertEqual(set(data["splits"]), {"test", "val"})
        self.assertEqual(data["splits"]["test"]["images"], _SPLITS["test"])
        self.assertEqual(data["thresholds"]["source_split"], "val")
        self.assertEqual(data["splits"]["test"]["bootstrap"]["resamples"], 100)
        self.assertEqual(set(data["splits"]["test"]["subgroups"]), {"sex", "age_band", "view_position"})

    def test_metrics_match_sklearn_on_the_written_predictions(self):
        frame = pd.read_csv(os.path.join(self.reports_dir, files.PREDICTIONS_CSV), keep_default_na=False)
        self.assertLen(frame, _SPLITS["test"] + _SPLITS["val"])
        test = frame[frame["split"] == "test"]
        labels = np.stack([schema.labels_to_multi_hot(s) for s in test["finding_labels"]])
        self.assertAllEqual(labels.sum(axis=0), self.manifest.label_counts("test"))
        scores = test[list(schema.LABELS)].to_numpy()
        for k, finding in enumerate(self.report["splits"]["test"]["findings"]):
            if 0 < labels[:, k].sum() < len(labels):
                self.assertAllClose(
                    finding["auc"], sk_metrics.roc_auc_score(labels[:, k], scores[:, k]), atol=1e-4
                )
            else:
                self.assertIsNone(finding["auc"])

    def test_absent_finding_is_undefined_in_every_file(self):
        counts = self.manifest.label_counts("test")
        absent = [label for label, count in zip(schema.LABELS, counts) if count == 0]
        self.assertNotEmpty(absent)  # 24 random images leave some finding out; the fixture relies on it.
        label = absent[0]
        finding = self.report["splits"]["test"]["findings"][schema.LABELS.index(label)]
        self.assertIsNone(finding["auc"])
        self.assertEqual(finding["prevalence"], 0.0)
        with open(os.path.join(self.reports_dir, files.AUC_MD)) as f:
            self.assertRegex(f.read(), rf"\| {label} \| undefined \| undefined \|")
        frame = pd.read_csv(os.path.join(self.reports_dir, files.AUC_CSV), keep_default_na=False)
        self.assertEqual(frame.set_index("label").loc[label, "auc"], "undefined")

    def test_markdown_has_published_comparison(self):
        with open(os.path.join(self.reports_dir, files.AUC_MD)) as f:
            text = f.read()
        self.assertIn("| Finding | Ours (test) | Wang et al. 2017 |", text)
        self.assertIn("real NIH ChestX-ray14 data, with other splits", text)
        self.assertIn(f"`{self.records_dir}` (split mode `patient`", text)

    def test_thresholds_file_is_the_val_youden_thresholds(self):
        with open(os.path.join(self.reports_dir, files.THRESHOLDS_JSON)) as f:
            data = json.load(f)
        val = {f["label"]: f["threshold"] for f in self.report["splits"]["val"]["findings"]}
        self.assertEqual(data["thresholds"], val)
        self.assertEqual(data["source_split"], "val")

    def test_deterministic(self):
        again = os.path.join(self.get_temp_dir(), "again")
        evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=self.run_dir, bootstrap_resamples=100, seed=0, batch_size=10, output_dir=again
            )
        )
        names = sorted(os.listdir(self.reports_dir))
        self.assertEqual(names, sorted(os.listdir(again)))
        match, mismatch, errors = filecmp.cmpfiles(self.reports_dir, again, names, shallow=False)
        self.assertEqual((mismatch, errors), ([], []))

    def test_checkpoint_gives_the_export_probabilities(self):
        out = os.path.join(self.get_temp_dir(), "from_checkpoint")
        data = evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=self.run_dir,
                model="checkpoint",
                also_val=False,
                bootstrap_resamples=0,
                output_dir=out,
            )
        )
        self.assertEqual(data["model_source"], "checkpoint")
        ours = pd.read_csv(os.path.join(out, files.PREDICTIONS_CSV))
        exported = pd.read_csv(os.path.join(self.reports_dir, files.PREDICTIONS_CSV))
        exported = exported[exported["split"] == "test"]
        self.assertAllClose(
            ours[list(schema.LABELS)].to_numpy(), exported[list(schema.LABELS)].to_numpy(), atol=1e-5
        )
        self.assertEqual(data["thresholds"]["source_split"], "test")

    def test_errors_name_the_problem(self):
        with self.assertRaisesRegex(ValueError, r"config.json does not exist"):
            evaluate.evaluate(evaluate.EvaluateConfig(run_dir=os.path.join(self.get_temp_dir(), "no_run")))
        with self.assertRaisesRegex(ValueError, r"split must be one of"):
            evaluate.evaluate(evaluate.EvaluateConfig(run_dir=self.run_dir, split="holdout"))
        with self.assertRaisesRegex(ValueError, r"model source must be one of"):
            evaluate.evaluate(evaluate.EvaluateConfig(run_dir=self.run_dir, model="onnx"))
        other = os.path.join(self.get_temp_dir(), "records16")
        fake_data.write_records(other, image_size=16, split_sizes={"train": 2, "test": 4})
        with self.assertRaisesRegex(ValueError, r"are 16x16 but the model .* takes 32x32"):
            evaluate.evaluate(
                evaluate.EvaluateConfig(
                    run_dir=self.run_dir, records_dir=other, output_dir=self.get_temp_dir()
                )
            )


if __name__ == "__main__":
    tf.test.main()
