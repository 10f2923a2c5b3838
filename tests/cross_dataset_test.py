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


_FOLDER_LABELS = ("NORMAL", "PNEUMONIA")


class FolderVocabularyRunTest(tf.test.TestCase):
    """A run trained on a folder-per-class set (its own two labels, with an export) is scored on
    its records, and an NIH run on the same records over Pneumonia and No Finding."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="folder_vocabulary_test_")
        rng = np.random.default_rng(1)
        values = {}
        for split, n in (("train", 8), ("val", 16), ("test", 24)):
            pneumonia = rng.permutation(np.arange(n) % 2).astype(np.float64)
            values[split] = np.stack([1.0 - pneumonia, pneumonia], axis=1)
        cls.records_dir = os.path.join(root, "pediatric")
        fake_data.write_vocabulary_records(
            cls.records_dir,
            values,
            labels=_FOLDER_LABELS,
            dataset="folders",
            image_size=32,
            seed=5,
            unknown_metadata=True,
        )
        cls.run_dir = os.path.join(root, "run")
        fake_data.write_fake_run(cls.run_dir, cls.records_dir, image_size=32, labels=_FOLDER_LABELS)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def _config(self, run_dir, **kwargs):
        return evaluate.EvaluateConfig(run_dir=run_dir, bootstrap_resamples=20, batch_size=8, **kwargs)

    def test_the_export_of_a_run_of_another_vocabulary_is_scored_on_its_records(self):
        report = evaluate.evaluate(self._config(self.run_dir, model="export"))
        self.assertEqual(report["labels"], list(_FOLDER_LABELS))
        self.assertEqual(report["model_source"], "export")
        findings = {f["label"]: f for f in report["splits"]["test"]["findings"]}
        self.assertEqual(findings["PNEUMONIA"]["positives"], 12)
        self.assertEqual(findings["NORMAL"]["negatives"], 12)
        # NORMAL is the set's "no finding" label: the findings' mean is PNEUMONIA's AUC alone.
        self.assertAllClose(report["splits"]["test"]["mean_auc_14"], findings["PNEUMONIA"]["auc"])
        with open(os.path.join(self.run_dir, "reports", files.AUC_MD)) as f:
            self.assertIn("**Mean of 1 findings**", f.read())
        test_ece = report["calibration"]["splits"]["test"]
        ece = {f["label"]: f["ece"] for f in test_ece["findings"]}
        self.assertAllClose(test_ece["mean_ece_14"], ece["PNEUMONIA"])
        # The folder set publishes no sex, age or view: one "unknown" group each, not an age band.
        subgroups = report["splits"]["test"]["subgroups"]
        for attribute in ("sex", "age_band", "view_position"):
            self.assertEqual(list(subgroups[attribute]), ["unknown"], msg=attribute)
            self.assertEqual(subgroups[attribute]["unknown"]["images"], 24)
        self.assertTrue(os.path.exists(os.path.join(self.run_dir, "reports", files.AUC_JSON)))

    def test_an_export_whose_labels_differ_from_the_runs_is_refused(self):
        run_dir = os.path.join(self._root, "reordered")
        shutil.copytree(self.run_dir, run_dir)
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
        config["labels"] = list(reversed(_FOLDER_LABELS))
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            json.dump(config, f)
        with self.assertRaisesRegex(ValueError, "labels.json lists labels"):
            evaluate.evaluate(self._config(run_dir, model="export"))

    def test_an_nih_run_is_scored_on_pneumonia_and_no_finding(self):
        nih_records = os.path.join(self._root, "nih")
        fake_data.write_records(nih_records, image_size=32, split_sizes={"train": 8, "val": 8, "test": 8})
        nih_run = os.path.join(self._root, "nih_run")
        fake_data.write_fake_run(nih_run, nih_records, image_size=32)
        report = evaluate.evaluate(self._config(nih_run, records_dir=self.records_dir))
        cross = report["cross_dataset"]
        self.assertEqual(
            [(p["model_label"], p["records_label"]) for p in cross["compared"]],
            [("Pneumonia", "PNEUMONIA"), ("No Finding", "NORMAL")],
        )
        self.assertEqual(cross["left_out_records_labels"], [])
        self.assertLen(cross["left_out_model_labels"], 13)


if __name__ == "__main__":
    tf.test.main()
