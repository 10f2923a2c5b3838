"""Slow end-to-end check: a real tiny training run, then evaluate and predict with Grad-CAM.

The default suite covers evaluate and predict on a fake exported run (tests/evaluate_test.py,
tests/predict_test.py); this one trains the real ResUNet for two epochs through
`trainer.training.runner.train`, so the trainer's run directory, export and history are the inputs.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from tests import fake_data
from trainer.evaluation import pipeline as evaluate
from trainer.evaluation.report import files
from trainer.prediction import predictor as predict
from trainer.training import config as config_lib
from trainer.training import runner as train_lib


@pytest.mark.slow
class ReportsEndToEndTest(tf.test.TestCase):
    def test_train_evaluate_predict(self):
        records_dir = os.path.join(self.get_temp_dir(), "records")
        run_dir = os.path.join(self.get_temp_dir(), "run")
        fake_data.write_records(records_dir, image_size=32, split_sizes={"train": 48, "val": 16, "test": 24})
        config = config_lib.TrainConfig(
            records_dir=records_dir,
            run_dir=run_dir,
            depth=2,
            base_filters=4,
            batch_size_per_replica=8,
            epochs=2,
            rampup_epochs=1,
            verbose=0,
        )
        result = train_lib.train(config, train_lib.create_strategy("one_device"))

        # Test records are numbered after the 48 train and 16 val ones (fake_data.metadata_for).
        boxes_csv = fake_data.write_box_csv(
            os.path.join(self.get_temp_dir(), "BBox_List_2017.csv"),
            [
                (fake_data.metadata_for(64).image_index, "Mass", 100, 200, 300, 300),
                (fake_data.metadata_for(65).image_index, "Infiltrate", 500, 100, 400, 600),
                (fake_data.metadata_for(66).image_index, "Fracture", 0, 0, 10, 10),
            ],
        )
        data = evaluate.evaluate(
            evaluate.EvaluateConfig(
                run_dir=run_dir, bootstrap_resamples=200, boxes_csv=boxes_csv, tta="hflip"
            )
        )
        reports = os.path.join(run_dir, "reports")
        for name in (
            files.AUC_JSON,
            files.AUC_MD,
            files.TRAINING_PNG,
            files.ROC_PNG,
            files.THRESHOLDS_JSON,
            files.RELIABILITY_PNG,
            files.LOCALIZATION_PNG,
            files.MEAN_CAM_PNG,
            files.BOX_REJECTS_JSONL,
            files.MODEL_CARD_MD,
        ):
            self.assertTrue(os.path.exists(os.path.join(reports, name)), msg=name)
        # Grad-CAM of the real ResUNet (decoder and pooled bottleneck) scored against the boxes.
        localization = data["localization"]
        self.assertEqual(localization["status"], "scored")
        self.assertEqual(localization["overall"]["pairs"], 2)
        self.assertEqual(localization["box_file"]["rejects"]["unknown_finding"], 1)
        self.assertEqual(data["tta"]["mode"], "hflip")
        self.assertEqual(data["calibration"]["source_split"], "val")
        self.assertEqual(data["model_source"], "export")
        # One set of weights: the trainer's digest, the reports' and the Grad-CAM maps'.
        self.assertEqual(data["weights_sha256"], result.weights_sha256)
        self.assertEqual(localization["weights_sha256"], result.weights_sha256)
        with open(os.path.join(reports, files.MODEL_CARD_MD)) as f:
            self.assertIn(result.weights_sha256, f.read())
        with open(os.path.join(reports, files.AUC_JSON)) as f:
            self.assertEqual(json.load(f)["splits"]["test"]["images"], 24)

        images = os.path.join(self.get_temp_dir(), "images")
        os.makedirs(images)
        for i, mode in enumerate(("L", "RGBA", "I;16")):
            with open(os.path.join(images, f"x{i}.png"), "wb") as f:
                f.write(fake_data.png_bytes(fake_data.gray_pixels(70, 90, seed=i), mode=mode))
        results, used, path = predict.predict(run_dir, images, gradcam=True, gradcam_top_k=1)
        self.assertIn("Youden J on val", used.source)
        frame = pd.read_csv(path, keep_default_na=False)
        self.assertEqual(list(frame["error"]), ["", "", ""])
        for result in results:
            self.assertLen(result.gradcam_paths, 1)
            self.assertEqual(np.asarray(Image.open(result.gradcam_paths[0])).shape, (70, 90, 3))


if __name__ == "__main__":
    tf.test.main()
