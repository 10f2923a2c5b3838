"""Tests for trainer.evaluation.report: JSON/CSV/Markdown writers and the figures."""

import io
import json
import os

import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

from tests import fake_data
from tfrecords import schema
from trainer.evaluation import metrics
from trainer.evaluation.report import figures, files, formatting, markdown, published, tables
from trainer.model import run_dir as run_dir_lib


def _split(num_images=90, *, seed=0, absent="Hernia"):
    rng = np.random.default_rng(seed)
    y_true = np.stack([fake_data.random_labels(rng) for _ in range(num_images)])
    y_true[:, schema.LABELS.index(absent)] = 0
    y_score = np.clip(0.35 * y_true + 0.65 * rng.random(y_true.shape), 0, 1)
    patient_ids = np.arange(num_images) // 3
    return y_true, y_score, patient_ids


def _report(resamples=50):
    test = _split(seed=0)
    val = _split(num_images=60, seed=1)
    val_summary = metrics.summarize(
        val[0], val[1], patient_ids=val[2], bootstrap=metrics.BootstrapConfig(resamples=resamples)
    )
    thresholds = tables.thresholds_from(val_summary)
    test_summary = metrics.summarize(
        test[0],
        test[1],
        patient_ids=test[2],
        subgroups={"sex": np.where(test[2] % 2, "M", "F")},
        bootstrap=metrics.BootstrapConfig(resamples=resamples),
        reference_thresholds=thresholds,
    )
    return test, {
        "run_dir": "runs/unit",
        "model_path": "runs/unit/export",
        "model_source": "export",
        "records_dir": "data/tfrecords",
        "manifest_sha256": "ab" * 32,
        "split_mode": "patient",
        "split": "test",
        "labels": list(schema.LABELS),
        "splits": {"test": test_summary, "val": val_summary},
        "thresholds": {"source_split": "val", "method": "youden_j", "values": thresholds},
        "published": published.PUBLISHED_AUC,
    }


def _png_size(path):
    with open(path, "rb") as f:
        data = f.read()
    image = Image.open(io.BytesIO(data))
    image.verify()  # Raises on a truncated or corrupt PNG.
    return image.format, image.size, len(data)


class WritersTest(tf.test.TestCase):
    def test_markdown_has_published_table_our_column_and_split(self):
        _, data = _report()
        text = markdown.render_markdown(data, figures=[files.ROC_PNG])
        self.assertIn(
            "| Finding | Ours (test) | Wang et al. 2017 | Yao et al. 2017 | CheXNet 2017 | ResUNet thesis 2023 |",
            text,
        )
        # Published values exactly as in the papers' tables.
        self.assertIn("| Atelectasis | ", text)
        self.assertRegex(text, r"\| Cardiomegaly \| [0-9.]+ \| 0\.807 \| 0\.904 \| 0\.9248 \| 0\.74 \|")
        self.assertRegex(text, r"\| No Finding \| [0-9.]+ \| – \| 0\.76 \| – \| 0\.72 \|")
        self.assertIn("real NIH ChestX-ray14 data, with other splits", text)
        self.assertIn("Ours are from the **test** split of `data/tfrecords` (split mode `patient`", text)
        # Our column holds our numbers; the absent finding reads "undefined".
        atelectasis = data["splits"]["test"]["findings"][0]["auc"]
        self.assertIn(f"| Atelectasis | {atelectasis:.3f} | 0.716 |", text)
        self.assertRegex(text, r"\| Hernia \| undefined \| 0\.767 \|")
        self.assertIn("## val split (60 images", text)
        self.assertIn("## AUC by sex (test split)", text)
        self.assertIn("![roc_curves.png](roc_curves.png)", text)
        self.assertIn(data["manifest_sha256"], text)

    def test_json_is_strict_and_round_trips(self):
        _, data = _report()
        path = files.write_json(os.path.join(self.get_temp_dir(), "auc.json"), data)
        with open(path) as f:
            loaded = json.load(f)
        self.assertEqual(loaded["split"], "test")
        self.assertIsNone(loaded["splits"]["test"]["findings"][schema.LABELS.index("Hernia")]["auc"])
        with self.assertRaises(ValueError):  # NaN is refused, never written as a bare NaN.
            files.write_json(os.path.join(self.get_temp_dir(), "bad.json"), {"auc": float("nan")})

    def test_csv_rows_match_summary(self):
        _, data = _report()
        summary = data["splits"]["test"]
        path = tables.write_auc_csv(os.path.join(self.get_temp_dir(), "auc.csv"), summary, split="test")
        frame = pd.read_csv(path, na_values=[formatting.UNDEFINED])
        self.assertEqual(list(frame["label"]), [*schema.LABELS, "mean_14_findings", "mean_15_labels"])
        for finding, (_, row) in zip(summary["findings"], frame.iterrows()):
            if finding["auc"] is None:
                self.assertTrue(np.isnan(row["auc"]))
            else:
                self.assertAllClose(row["auc"], finding["auc"], atol=1e-6)
                self.assertAllClose(row["auc_ci_low"], finding["auc_ci_low"], atol=1e-6)
            self.assertEqual(int(row["positives"]), finding["positives"])
        self.assertAllClose(frame["auc"].iloc[-2], summary["mean_auc_14"], atol=1e-6)

    def test_predictions_csv(self):
        (y_true, y_score, patient_ids), _ = _report()
        metadata = {key: [] for key in schema.METADATA_KEYS}
        for i in range(len(y_true)):
            for key, value in vars(fake_data.metadata_for(i)).items():
                metadata[key].append(value)
        path = tables.write_predictions_csv(
            os.path.join(self.get_temp_dir(), "predictions.csv"), y_score, y_true, metadata
        )
        frame = pd.read_csv(path, keep_default_na=False)
        self.assertLen(frame, len(y_true))
        self.assertEqual(frame["finding_labels"][0], schema.multi_hot_to_labels(y_true[0]))
        self.assertAllClose(frame[list(schema.LABELS)].to_numpy(), y_score, atol=1e-6)


class FiguresTest(tf.test.TestCase):
    def test_figures_are_valid_pngs_of_sensible_size(self):
        (y_true, y_score, _), _ = _report()
        out = self.get_temp_dir()
        history = {
            "epoch": [0, 1, 2],
            "lr": [1e-5, 5e-5, 1e-4],
            "loss": [0.7, 0.5, 0.4],
            "val_loss": [0.72, 0.55, 0.5],
            "binary_accuracy": [0.8, 0.85, 0.9],
            "val_binary_accuracy": [0.78, 0.8, 0.82],
            "auc": [0.6, 0.7, 0.8],
            "val_auc": [0.55, 0.65, 0.7],
        }
        paths = [
            figures.plot_roc_curves(os.path.join(out, "roc.png"), y_true, y_score),
            figures.plot_training_curves(os.path.join(out, "train.png"), history),
            figures.plot_label_distribution(
                os.path.join(out, "dist.png"),
                {"train": y_true.sum(0), "test": y_true[:30].sum(0)},
                {"train": len(y_true), "test": 30},
            ),
            figures.plot_label_cooccurrence(os.path.join(out, "co.png"), y_true),
        ]
        for path in paths:
            image_format, (width, height), size = _png_size(path)
            self.assertEqual(image_format, "PNG")
            self.assertBetween(width, 800, 2000)
            self.assertBetween(height, 600, 1500)
            self.assertGreater(size, 20_000)  # Not a blank canvas.

    def test_figures_are_deterministic(self):
        (y_true, y_score, _), _ = _report()
        first = figures.plot_roc_curves(os.path.join(self.get_temp_dir(), "a.png"), y_true, y_score)
        second = figures.plot_roc_curves(os.path.join(self.get_temp_dir(), "b.png"), y_true, y_score)
        with open(first, "rb") as a, open(second, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_training_curves_from_history_csv_with_missing_columns(self):
        path = os.path.join(self.get_temp_dir(), "history.csv")
        with open(path, "w") as f:
            f.write("epoch,loss,val_loss\n0,0.7,0.8\n1,0.5,\n")
        history = run_dir_lib.read_history(path)
        self.assertTrue(np.isnan(history["val_loss"][1]))
        out = figures.plot_training_curves(os.path.join(self.get_temp_dir(), "t.png"), history)
        self.assertEqual(_png_size(out)[0], "PNG")

    def test_empty_history_is_an_error_naming_the_file(self):
        path = os.path.join(self.get_temp_dir(), "empty_history.csv")
        with open(path, "w") as f:
            f.write("epoch,loss\n")
        with self.assertRaisesRegex(ValueError, "empty_history.csv: no epochs recorded"):
            run_dir_lib.read_history(path)


if __name__ == "__main__":
    tf.test.main()
