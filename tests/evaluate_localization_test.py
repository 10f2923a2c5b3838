"""trainer.evaluation.pipeline's localization, calibration and test-time augmentation, on tiny runs.

The run is `fake_data.write_fake_run` (an untrained tiny model with the ResUNet's
"decoder_output" and "probabilities" layers, exported by `trainer.model.export`) over
`fake_data.write_records` records; the box file is written by the test, with good and bad rows.
"""

import filecmp
import io
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from sklearn import metrics as sk_metrics

from tests import fake_data
from tfrecords import dataset as dataset_lib
from tfrecords import schema
from trainer.evaluation import calibration
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.localization import boxes
from trainer.evaluation.report import files

_SPLITS = {"train": 8, "val": 16, "test": 12}
# fake_data.metadata_for numbers records across the splits in order: test is 24..35.
_TEST = [fake_data.metadata_for(i).image_index for i in range(24, 36)]
_VAL_IMAGE = fake_data.metadata_for(8).image_index


def _box_rows():
    """Three good boxes (one spelled Infiltrate) and four bad rows, in NIH's 1024 grid."""
    return [
        (_TEST[0], "Mass", 64, 64, 256, 256),  # line 2: kept
        (_TEST[1], "Infiltrate", 512, 512, 256, 256),  # 3: kept, as Infiltration
        (_TEST[2], "Nodule", 100, 100, 50, 50),  # 4: kept
        (_TEST[2], "Fracture", 100, 100, 50, 50),  # 5: unknown finding
        (_TEST[3], "Mass", 900, 900, 200, 200),  # 6: leaves the image
        ("99999999_000.png", "Mass", 0, 0, 10, 10),  # 7: no such image
        (_VAL_IMAGE, "Mass", 0, 0, 10, 10),  # 8: a val image, not scored
    ]


class EvaluateLocalizationTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls._root = root = tempfile.mkdtemp(prefix="evaluate_localization_test_")
        cls.records_dir = os.path.join(root, "records")
        cls.run_dir = os.path.join(root, "run")
        fake_data.write_records(cls.records_dir, image_size=32, split_sizes=_SPLITS, seed=5)
        fake_data.write_fake_run(cls.run_dir, cls.records_dir, image_size=32)
        cls.boxes_csv = fake_data.write_box_csv(os.path.join(root, "BBox_List_2017.csv"), _box_rows())
        cls.report = evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=cls.run_dir,
                bootstrap_resamples=50,
                batch_size=5,
                boxes_csv=cls.boxes_csv,
                tta="hflip",
            )
        )
        cls.reports_dir = os.path.join(cls.run_dir, "reports")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls._root, ignore_errors=True)
        super().tearDownClass()

    def _read(self, name):
        with open(os.path.join(self.reports_dir, name)) as f:
            return f.read()

    def test_boxed_pairs_are_scored(self):
        data = json.loads(self._read(files.AUC_JSON))["localization"]
        self.assertEqual(data["status"], "scored")
        self.assertEqual(data["split"], "test")
        self.assertEqual([f["label"] for f in data["findings"]], ["Infiltration", "Mass", "Nodule"])
        self.assertEqual((data["overall"]["pairs"], data["images"]), (3, 3))
        for finding in data["findings"]:
            for name in ("pointing_game", "energy_inside", "iou"):
                self.assertBetween(finding[name], 0.0, 1.0)
        self.assertEqual(data["cam_threshold"], 0.5)
        self.assertEqual(data["mean_maps"]["images"], _SPLITS["test"])

    def test_bad_box_rows_are_rejected_with_reasons(self):
        data = json.loads(self._read(files.AUC_JSON))["localization"]["box_file"]
        self.assertEqual((data["rows"], data["boxes"]), (7, 3))
        self.assertEqual(
            data["rejects"],
            {
                boxes.MALFORMED_ROW: 0,
                boxes.UNKNOWN_FINDING: 1,
                boxes.BOX_NOT_POSITIVE: 0,
                boxes.BOX_OUTSIDE_IMAGE: 1,
                boxes.IMAGE_NOT_EVALUATED: 2,
            },
        )
        rejects = [json.loads(line) for line in self._read(files.BOX_REJECTS_JSONL).splitlines()]
        self.assertEqual([(r["row"], r["reason"]) for r in rejects], [
            (5, boxes.UNKNOWN_FINDING), (6, boxes.BOX_OUTSIDE_IMAGE),
            (7, boxes.IMAGE_NOT_EVALUATED), (8, boxes.IMAGE_NOT_EVALUATED),
        ])  # fmt: skip
        self.assertIn("not among the 12 test records", rejects[2]["detail"])

    def test_markdown_sections_and_figures(self):
        text = self._read(files.AUC_MD)
        self.assertIn("## Localization (Grad-CAM against bounding boxes)", text)
        self.assertRegex(text, r"\| Mass \| 1 \| 1 \| \d\.\d{3} \(")
        self.assertIn("rejected rows: unknown_finding 1, box_outside_image 1, image_not_in_records 2", text)
        self.assertIn("## Calibration", text)
        self.assertIn("## Test-time augmentation", text)
        for name in (files.LOCALIZATION_PNG, files.MEAN_CAM_PNG, files.RELIABILITY_PNG):
            self.assertIn(f"![{name}]({name})", text)
            with open(os.path.join(self.reports_dir, name), "rb") as f:
                image = Image.open(io.BytesIO(f.read()))
                image.verify()
            self.assertGreater(min(image.size), 300, msg=name)

    def test_tta_is_the_mean_of_the_image_and_its_mirror(self):
        loaded = tf.saved_model.load(os.path.join(self.run_dir, "export"))
        serve = loaded.signatures["serve_pixels"]
        images, labels = [], []
        for batch, batch_labels in dataset_lib.build_dataset(
            self.records_dir, "test", batch_size=50, training=False
        ):
            images.append(batch.numpy())
            labels.append(batch_labels.numpy())
        images, labels = np.concatenate(images), np.rint(np.concatenate(labels)).astype(int)
        plain = serve(images=tf.constant(images))["probabilities"].numpy()
        mirrored = serve(images=tf.constant(images[:, :, ::-1]))["probabilities"].numpy()
        self.assertNotAllClose(plain, mirrored)
        frame = pd.read_csv(os.path.join(self.reports_dir, files.PREDICTIONS_CSV))
        written = frame[frame["split"] == "test"][list(schema.LABELS)].to_numpy()
        self.assertAllClose(written, (plain + mirrored) / 2, atol=2e-6)
        tta = self.report["tta"]
        self.assertEqual(tta["mode"], "hflip")
        for k, finding in enumerate(tta["findings"]):
            if 0 < labels[:, k].sum() < len(labels):
                self.assertAllClose(
                    finding["auc_without"], sk_metrics.roc_auc_score(labels[:, k], plain[:, k])
                )
                self.assertAllClose(finding["auc_with"], self.report["splits"]["test"]["findings"][k]["auc"])
        thresholds = json.loads(self._read(files.THRESHOLDS_JSON))
        self.assertEqual(thresholds["tta"], "hflip")

    def test_every_label_is_calibrated_or_says_why_not(self):
        thresholds = json.loads(self._read(files.THRESHOLDS_JSON))
        stored = calibration.Calibration.from_json(thresholds["calibration"])
        self.assertEqual(stored.source_split, "val")
        for label in schema.LABELS:
            self.assertNotEqual(stored.scalings[label] is None, label not in stored.reasons, msg=label)
        data = self.report["calibration"]
        self.assertEqual(list(data["splits"]), ["val", "test"])
        self.assertEqual(list(data["calibrated"]), ["val", "test"])
        # ECE of every label on val, from the predictions written.
        frame = pd.read_csv(os.path.join(self.reports_dir, files.PREDICTIONS_CSV), keep_default_na=False)
        val = frame[frame["split"] == "val"]
        labels = np.stack([schema.labels_to_multi_hot(s) for s in val["finding_labels"]])
        for k, label in enumerate(schema.LABELS):
            expected = calibration.expected_calibration_error(labels[:, k], val[label].to_numpy())
            self.assertAllClose(data["splits"]["val"]["findings"][k]["ece"], expected, atol=1e-5)

    def test_deterministic_with_boxes_and_tta(self):
        again = os.path.join(self.get_temp_dir(), "again")
        evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=self.run_dir,
                bootstrap_resamples=50,
                batch_size=5,
                boxes_csv=self.boxes_csv,
                tta="hflip",
                output_dir=again,
            )
        )
        names = sorted(os.listdir(self.reports_dir))
        self.assertEqual(names, sorted(os.listdir(again)))
        _, mismatch, errors = filecmp.cmpfiles(self.reports_dir, again, names, shallow=False)
        self.assertEqual((mismatch, errors), ([], []))


class EvaluateWithoutBoxesTest(tf.test.TestCase):
    def _run(self, model=None, **kwargs):
        root = self.get_temp_dir()
        records_dir = os.path.join(root, "records")
        if not os.path.exists(records_dir):
            fake_data.write_records(records_dir, image_size=16, split_sizes={"train": 4, "val": 6, "test": 8})
        run_dir = os.path.join(root, "run_" + (model.name if model is not None else "tiny"))
        fake_data.write_fake_run(run_dir, records_dir, image_size=16, model=model)
        return evaluate.evaluate(
            evaluate.EvaluateConfig(run_dir=run_dir, bootstrap_resamples=0, **kwargs)
        ), run_dir

    def test_model_without_gradcam_gets_a_line_not_a_crash(self):
        inputs = keras.Input((16, 16, 1))
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
        baseline = keras.Model(
            inputs, keras.layers.Dense(15, activation="sigmoid", name="head")(x), name="densenet"
        )
        boxes_csv = fake_data.write_box_csv(
            os.path.join(self.get_temp_dir(), "b.csv"),
            [(fake_data.metadata_for(10).image_index, "Mass", 0, 0, 64, 64)],
        )
        data, run_dir = self._run(baseline, boxes_csv=boxes_csv)
        localization = data["localization"]
        self.assertEqual(localization["status"], "unsupported_model")
        self.assertIn(
            "'densenet' has no layer named 'decoder_output' or 'probabilities'", localization["message"]
        )
        self.assertEqual(localization["box_file"]["boxes"], 1)  # The boxes are still read and counted.
        with open(os.path.join(run_dir, "reports", files.AUC_MD)) as f:
            self.assertIn("**Not scored:** the run's model 'densenet' has no layer", f.read())
        self.assertTrue(os.path.exists(os.path.join(run_dir, "reports", files.BOX_REJECTS_JSONL)))

    def test_no_box_file_is_said(self):
        data, _ = self._run(calibration="none", mean_maps=False)
        self.assertEqual(data["localization"]["status"], "no_box_file")
        self.assertIn("the records' manifest records no data_dir", data["localization"]["message"])
        self.assertEqual(data["calibration"]["method"], "none")
        self.assertNotIn("calibrated", data["calibration"])
        self.assertEqual(data["tta"], {"mode": "none"})

    def test_box_file_found_in_the_records_data_dir(self):
        root = self.get_temp_dir()
        records_dir = os.path.join(root, "records_with_data_dir")
        manifest = fake_data.write_records(
            records_dir, image_size=16, split_sizes={"train": 4, "val": 6, "test": 8}
        )
        data_dir = os.path.join(root, "nih")
        fake_data.write_box_csv(
            os.path.join(data_dir, "metadata", "BBox_List_2017.csv.gz"),
            [(fake_data.metadata_for(10).image_index, "Mass", 0, 0, 512, 512)],
        )
        with open(os.path.join(records_dir, "manifest.json")) as f:
            raw = json.load(f)
        raw["options"]["data_dir"] = data_dir
        with open(os.path.join(records_dir, "manifest.json"), "w") as f:
            json.dump(raw, f)
        del manifest
        run_dir = os.path.join(root, "run_data_dir")
        fake_data.write_fake_run(run_dir, records_dir, image_size=16)
        data = evaluate.evaluate(
            evaluate.EvaluateConfig(run_dir=run_dir, bootstrap_resamples=0, mean_maps=False)
        )
        self.assertEqual(data["localization"]["status"], "scored")
        self.assertEqual(
            data["localization"]["box_file"]["path"],
            os.path.join(data_dir, "metadata", "BBox_List_2017.csv.gz"),
        )
        self.assertEqual(data["localization"]["overall"]["pairs"], 1)

    def test_platt_scaling_fitted_on_val_is_stored_and_applied(self):
        # bright_spot_model's probabilities rise with brightness, and write_records makes "No
        # Finding" images the brightest: an increasing fit on val for it.
        root = self.get_temp_dir()
        records_dir = os.path.join(root, "records_calibration")
        fake_data.write_records(records_dir, image_size=16, split_sizes={"train": 4, "val": 30, "test": 10})
        run_dir = os.path.join(root, "run_calibration")
        fake_data.write_fake_run(run_dir, records_dir, image_size=16, model=fake_data.bright_spot_model(16))
        data = evaluate.evaluate(
            evaluate.EvaluateConfig(run_dir=run_dir, bootstrap_resamples=0, localization=False)
        )
        with open(os.path.join(run_dir, "reports", files.THRESHOLDS_JSON)) as f:
            thresholds = json.load(f)
        stored = calibration.Calibration.from_json(thresholds["calibration"])
        scaling = stored.scalings["No Finding"]
        self.assertIsNotNone(scaling)
        raw = thresholds["thresholds"]["No Finding"]
        self.assertAllClose(thresholds["calibration"]["calibrated_thresholds"]["No Finding"], scaling(raw))
        # The report's calibrated ECE is the ECE of the stored map applied to the written predictions.
        frame = pd.read_csv(os.path.join(run_dir, "reports", files.PREDICTIONS_CSV), keep_default_na=False)
        k = schema.LABELS.index("No Finding")
        for split in ("val", "test"):
            rows = frame[frame["split"] == split]
            labels = np.stack([schema.labels_to_multi_hot(s) for s in rows["finding_labels"]])
            expected = calibration.expected_calibration_error(
                labels[:, k], scaling(rows["No Finding"].to_numpy())
            )
            self.assertAllClose(
                data["calibration"]["calibrated"][split]["findings"][k]["ece"], expected, atol=1e-5
            )
        with open(os.path.join(run_dir, "reports", files.AUC_MD)) as f:
            self.assertRegex(f.read(), r"\| No Finding \|( [0-9.]+ \|){4} -?\d+\.\d{3} / -?\d+\.\d{3} \|")

    def test_bad_options_are_named(self):
        with self.assertRaisesRegex(
            ValueError, r"calibration must be one of \('platt', 'none'\), got 'isotonic'"
        ):
            self._run(calibration="isotonic")
        with self.assertRaisesRegex(ValueError, r"tta must be one of \('none', 'hflip'\), got 'vflip'"):
            self._run(tta="vflip")
        with self.assertRaisesRegex(ValueError, r"Box file .*missing.csv' does not exist"):
            self._run(boxes_csv=os.path.join(self.get_temp_dir(), "missing.csv"))


if __name__ == "__main__":
    tf.test.main()
