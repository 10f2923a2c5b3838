"""End-to-end test of cross-dataset evaluation: an NIH-vocabulary run scored on another data set's records.

The run is `fake_data.write_fake_run` (a tiny untrained model with NIH's 15 outputs); the records are
`fake_data.write_vocabulary_records` with a CheXpert-style vocabulary, uncertain and unmentioned
labels included.
"""

import json
import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn import metrics as sk_metrics

from tests import fake_data
from tfrecords import dataset as dataset_lib
from tfrecords import schema
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.report import files
from trainer.model import models

# Two labels NIH shares (one under another name), one NIH lacks, and "No Finding".
_LABELS = ("No Finding", "Cardiomegaly", "Pleural Effusion", "Lung Opacity", "Fracture")


class CrossDatasetEvaluateTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="cross_dataset_test_")
        rng = np.random.default_rng(0)
        values = {
            split: rng.choice([0.0, 1.0, -1.0, np.nan], size=(n, len(_LABELS)), p=[0.45, 0.35, 0.1, 0.1])
            for split, n in (("val", 20), ("test", 30))
        }
        cls.values = values
        cls.records_dir = os.path.join(root, "chexpert")
        fake_data.write_vocabulary_records(cls.records_dir, values, labels=_LABELS, image_size=32, seed=4)
        nih_records = os.path.join(root, "nih")
        fake_data.write_records(nih_records, image_size=32, split_sizes={"train": 8, "val": 8, "test": 8})
        cls.run_dir = os.path.join(root, "run")
        fake_data.write_fake_run(cls.run_dir, nih_records, image_size=32)
        cls.report = evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=cls.run_dir, records_dir=cls.records_dir, bootstrap_resamples=20, batch_size=8
            )
        )
        cls.reports_dir = os.path.join(cls.run_dir, "reports_on_chexpert")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def test_compares_the_shared_labels_in_the_models_order(self):
        self.assertEqual(self.report["labels"], ["Cardiomegaly", "Effusion", "No Finding"])
        cross = self.report["cross_dataset"]
        self.assertEqual(
            [(p["model_label"], p["records_label"]) for p in cross["compared"]],
            [
                ("Cardiomegaly", "Cardiomegaly"),
                ("Effusion", "Pleural Effusion"),
                ("No Finding", "No Finding"),
            ],
        )
        self.assertEqual(cross["left_out_records_labels"], ["Lung Opacity", "Fracture"])
        self.assertLen(cross["left_out_model_labels"], 12)
        self.assertEqual(cross["model"]["labels"], list(schema.LABELS))
        self.assertEqual((cross["model"]["dataset"], cross["records"]["dataset"]), ("nih", "chexpert"))

    def test_each_auc_is_over_the_known_images_of_the_records_label(self):
        model = models.load_model(os.path.join(self.run_dir, "checkpoints", "best.keras"))
        images = np.concatenate(
            [
                batch[0].numpy()
                for batch in dataset_lib.build_dataset(self.records_dir, "test", batch_size=8, training=False)
            ]
        )
        scores = np.asarray(model(images, training=False))
        labels, known, _ = fake_data.label_state(self.values["test"])
        findings = {f["label"]: f for f in self.report["splits"]["test"]["findings"]}
        for model_label, records_label in (
            ("Effusion", "Pleural Effusion"),
            ("Cardiomegaly", "Cardiomegaly"),
        ):
            m, r = schema.LABELS.index(model_label), _LABELS.index(records_label)
            rows = known[:, r] > 0
            expected = sk_metrics.roc_auc_score(labels[rows, r], scores[rows, m])
            self.assertAllClose(findings[model_label]["auc"], expected, atol=1e-5)
            self.assertEqual(findings[model_label]["known"], int(rows.sum()))
            self.assertEqual(findings[model_label]["positives"], int(labels[rows, r].sum()))

    def test_reports_go_beside_the_runs_own(self):
        for name in (files.AUC_JSON, files.AUC_CSV, files.AUC_MD, files.PREDICTIONS_CSV, files.ROC_PNG):
            self.assertTrue(os.path.exists(os.path.join(self.reports_dir, name)), msg=name)
        self.assertFalse(os.path.exists(os.path.join(self.run_dir, "reports")))
        config = evaluate.EvaluateConfig(run_dir=self.run_dir, records_dir=self.records_dir)
        self.assertEqual(evaluate.reports_dir(config), self.reports_dir)
        self.assertEqual(
            evaluate.reports_dir(evaluate.EvaluateConfig(run_dir=self.run_dir)),
            os.path.join(self.run_dir, "reports"),
        )
        with open(os.path.join(self.reports_dir, files.AUC_JSON)) as f:
            self.assertEqual(
                json.load(f)["cross_dataset"]["left_out_records_labels"], ["Lung Opacity", "Fracture"]
            )
        predictions = pd.read_csv(os.path.join(self.reports_dir, files.PREDICTIONS_CSV))
        self.assertEqual(list(predictions.columns[-3:]), ["Cardiomegaly", "Effusion", "No Finding"])

    def test_markdown_names_compared_and_left_out_labels(self):
        with open(os.path.join(self.reports_dir, files.AUC_MD)) as f:
            text = f.read()
        self.assertIn("## Cross-dataset evaluation", text)
        self.assertIn("| Effusion | Pleural Effusion |", text)
        self.assertIn("records labels without an equivalent: Lung Opacity, Fracture.", text)
        self.assertIn("Mean of 2 findings", text)
        self.assertNotIn("## Beside published results", text)

    def test_nih_only_parts_are_reported_as_skipped(self):
        self.assertEqual(self.report["localization"]["status"], "other_vocabulary")
        self.assertEqual(self.report["calibration"]["method"], "none")
        self.assertIn("unknown", self.report["calibration"]["note"])


if __name__ == "__main__":
    tf.test.main()
