"""The evaluate and predict binaries: flags derived from their config dataclasses, no import side effects."""

import dataclasses
import os
import subprocess
import sys

import tensorflow as tf
from absl import flags

from cxr_cli import config_flags
from trainer.evaluation import pipeline as evaluate
from trainer.prediction import predictor as predict

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(config_cls, argv):
    flag_values = flags.FlagValues()
    holders = config_flags.define_from_dataclass(config_cls, flag_values=flag_values)
    flag_values(["binary", *argv])
    return config_flags.build_config(config_cls, holders)


class EntryPointsTest(tf.test.TestCase):
    def test_evaluate_flags_are_its_config_fields(self):
        self.assertEqual(_parse(evaluate.EvaluateConfig, []), evaluate.EvaluateConfig())
        config = _parse(evaluate.EvaluateConfig, ["--split=val", "--noalso_val", "--model=checkpoint"])
        self.assertEqual(
            config,
            dataclasses.replace(evaluate.EvaluateConfig(), split="val", also_val=False, model="checkpoint"),
        )
        with self.assertRaisesRegex(ValueError, "EvaluateConfig.batch_size must be >= 1, got 0"):
            _parse(evaluate.EvaluateConfig, ["--batch_size=0"])

    def test_predict_flags_are_its_config_fields(self):
        config = _parse(predict.PredictConfig, ["--images=a.png,dir", "--gradcam", "--gradcam_top_k=2"])
        self.assertEqual(config.images, ("a.png", "dir"))
        self.assertEqual((config.gradcam, config.gradcam_top_k), (True, 2))
        self.assertEqual(config.run_dir, "runs/demo")
        with self.assertRaisesRegex(ValueError, "PredictConfig.gradcam_top_k must be >= 1, got 0"):
            _parse(predict.PredictConfig, ["--gradcam_top_k=0"])

    def test_importing_the_trainer_has_no_side_effects(self):
        # No flags defined, no matplotlib backend chosen, by importing any trainer module.
        script = (
            "import matplotlib, sys\n"
            "from absl import app, flags, logging\n"
            "import keras, tensorflow  # Their own flags (absl's, TF's) come with them.\n"
            "before = set(flags.FLAGS)\n"
            "import trainer.train, trainer.evaluation.pipeline, trainer.prediction.predictor, trainer.evaluation.report.figures, trainer.training.runner\n"
            "assert set(flags.FLAGS) == before, sorted(set(flags.FLAGS) - before)\n"
            "assert not isinstance(matplotlib.rcParams._get('backend'), str)  # No backend chosen.\n"
            "print('CLEAN')\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
        run = subprocess.run(
            [sys.executable, "-c", script], cwd=_REPO, env=env, capture_output=True, text=True, timeout=180
        )
        self.assertEqual(run.returncode, 0, run.stderr[-2000:])
        self.assertIn("CLEAN", run.stdout)


if __name__ == "__main__":
    tf.test.main()
