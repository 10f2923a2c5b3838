"""MODEL_CARD.md and the weights every report names, on a tiny run built by the test."""

import json
import math
import os
import shutil
import tempfile

import pandas as pd
import tensorflow as tf

from tests import fake_data
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.report import files, formatting, model_card
from trainer.model import export, models

_SPLITS = {"train": 8, "val": 16, "test": 12}
# fake_data.metadata_for numbers records across the splits in order: test is 24..35 (the boxes
# of tests/evaluate_localization_test.py, on the same records).
_TEST = [fake_data.metadata_for(i).image_index for i in range(24, 36)]
_BOXES = [(_TEST[0], "Mass", 64, 64, 256, 256), (_TEST[1], "Infiltrate", 512, 512, 256, 256)]


class ModelCardTest(tf.test.TestCase):
    """A run whose `best.keras` holds other weights than its export, as with --export_weights=final."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="model_card_test_")
        cls.records_dir = os.path.join(root, "records")
        cls.run_dir = os.path.join(root, "run")
        fake_data.write_records(cls.records_dir, image_size=16, split_sizes=_SPLITS, seed=5)
        fake_data.write_fake_run(cls.run_dir, cls.records_dir, image_size=16, seed=0)
        cls.exported = export.weights_sha256(export.read_weights(os.path.join(cls.run_dir, "export")))
        # The checkpoint: the same architecture with other weights.
        other = fake_data.tiny_keras_model(16, seed=7)
        other.save(os.path.join(cls.run_dir, "checkpoints", "best.keras"))
        cls.checkpoint = export.weights_sha256(other.get_weights())
        config_path = os.path.join(cls.run_dir, "config.json")
        with open(config_path) as f:
            config = json.load(f)
        config["train_config"] = {"profile": "demo", "export_weights": "final", "epochs": 3, "lr_max": 0.002}
        with open(config_path, "w") as f:
            json.dump(config, f)
        boxes = fake_data.write_box_csv(os.path.join(root, "BBox_List_2017.csv"), _BOXES)
        cls.report = evaluate.evaluate(
            evaluate.EvaluateConfig(run_dir=cls.run_dir, bootstrap_resamples=20, boxes_csv=boxes)
        )
        cls.reports_dir = os.path.join(cls.run_dir, "reports")
        with open(os.path.join(cls.reports_dir, files.MODEL_CARD_MD)) as f:
            cls.card = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def _read(self, name):
        with open(os.path.join(self.reports_dir, name)) as f:
            return f.read()

    def test_every_report_names_the_exported_weights(self):
        self.assertNotEqual(self.exported, self.checkpoint)
        self.assertEqual(self.report["weights_sha256"], self.exported)
        self.assertIn(f"weights sha256 `{self.exported}`", self._read(files.AUC_MD))
        self.assertEqual(json.loads(self._read(files.THRESHOLDS_JSON))["weights_sha256"], self.exported)
        self.assertIn(f"`{self.exported}`", self.card)
        self.assertNotIn(self.checkpoint, self.card + self._read(files.AUC_MD) + self._read(files.AUC_JSON))

    def test_gradcam_explains_the_exported_weights_not_the_checkpoints(self):
        localization = self.report["localization"]
        self.assertEqual(localization["status"], "scored")
        self.assertEqual(localization["weights_sha256"], self.exported)
        self.assertEqual(localization["weights_source"], "the scored model")

    def test_card_holds_the_run_the_data_and_the_results(self):
        card = self.card
        self.assertIn("`export_weights=final`: the last epoch trained.", card)
        # history.csv's best val_auc, counted from 1 like the epoch lines.
        history = pd.read_csv(os.path.join(self.run_dir, "history.csv"))
        best = int(history["val_auc"].idxmax())
        self.assertIn(
            f"epoch {best + 1} of {len(history)}, validation AUC {formatting.fmt(history['val_auc'][best])}",
            card,
        )
        manifest = manifest_lib.read_manifest(self.records_dir)
        self.assertIn(
            f"train {_SPLITS['train']} images, val {_SPLITS['val']} images, test {_SPLITS['test']} images",
            card,
        )
        k = schema.LABELS.index("No Finding")
        count = manifest.label_counts("val")[k]
        self.assertIn("| No Finding | ", card)
        self.assertIn(f"{100 * count / _SPLITS['val']:.1f}% ({count})", card)
        self.assertIn("Profile `demo`", card)
        self.assertIn("`lr_max=0.002`", card)
        test = self.report["splits"]["test"]
        self.assertIn(f"Mean AUC of the 14 findings **{formatting.fmt(test['mean_auc_14'])}**", card)
        for finding in test["findings"]:
            self.assertIn(
                f"| {finding['label']} | {formatting.fmt(finding['auc'])} | "
                f"{formatting.fmt_ci(finding['auc_ci_low'], finding['auc_ci_high'])} |",
                card,
            )
        self.assertIn("## Subgroups", card)
        self.assertIn("## Calibration", card)
        self.assertIn("Grad-CAM maps of the test split's boxed findings", card)
        sanity = self.report["localization"]["sanity"]
        self.assertIn(f"**border share** (the map's mass in the outer 10% of the image on each side) "
                      f"{formatting.fmt(sanity['border_energy_share'])}", card)  # fmt: skip
        self.assertIn(f"over {sanity['randomization']['pairs']} pairs: **", card)
        for caveat in ("**Not for clinical use**", "is synthetic", "mined from the radiology reports"):
            self.assertIn(caveat, card)


class BestEpochTest(tf.test.TestCase):
    def test_first_of_equal_bests_counted_from_one(self):
        # val_auc 0.5, 0.7, nan, 0.7: the best is index 1, the second epoch.
        history = {"epoch": [0.0, 1.0, 2.0, 3.0], "val_auc": [0.5, 0.7, math.nan, 0.7]}
        self.assertEqual(model_card._best_epoch(history), (2, 0.7, 4))

    def test_no_history_no_line(self):
        self.assertIsNone(model_card._best_epoch(None))
        self.assertIsNone(model_card._best_epoch({"epoch": [0.0], "loss": [1.0]}))
        self.assertIsNone(model_card._best_epoch({"val_auc": [math.nan]}))


class CheckpointSourceTest(tf.test.TestCase):
    def test_weights_of_a_checkpoint_evaluation(self):
        root = self.get_temp_dir()
        records_dir, run_dir = os.path.join(root, "records"), os.path.join(root, "run")
        fake_data.write_records(records_dir, image_size=16, split_sizes={"train": 2, "test": 6})
        fake_data.write_fake_run(run_dir, records_dir, image_size=16)
        data = evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=run_dir, model="checkpoint", bootstrap_resamples=0, localization=False
            )
        )
        weights = models.load_model(os.path.join(run_dir, "checkpoints", "best.keras")).get_weights()
        self.assertEqual(data["weights_sha256"], export.weights_sha256(weights))


if __name__ == "__main__":
    tf.test.main()
