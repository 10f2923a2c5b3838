"""Tests for the demo_data.generate binary: flags to configuration, summary, flag errors."""

import contextlib
import io
import json
import os

import pandas as pd
import tensorflow as tf
from absl import flags

from demo_data import generate, layout


class MainTest(tf.test.TestCase):
    def _holders(self, argv):
        flag_values = flags.FlagValues()
        holders = generate._define_flags(flag_values)
        flag_values(["generate", *argv])
        return holders

    def test_main_writes_the_set_and_prints_the_summary(self):
        output_dir = os.path.join(self.get_temp_dir(), "cli")
        holders = self._holders(
            [
                f"--output_dir={output_dir}",
                "--num_images=40",
                "--image_size=16",
                "--num_workers=1",
                "--box_share=1",
            ]
        )
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            generate.main(["generate"], holders=holders)
        summary = json.loads(stdout.getvalue())
        self.assertEqual(summary["num_images"], 40)
        frame = pd.read_csv(os.path.join(output_dir, layout.CSV_NAME))
        self.assertLen(frame, 40)
        boxes = pd.read_csv(os.path.join(output_dir, layout.BBOX_NAME))
        self.assertLen(boxes, sum(summary["boxes"].values()))
        self.assertGreater(len(boxes), 0)

    def test_flag_defaults_are_the_demo_set(self):
        holders = self._holders([])
        self.assertEqual(holders["output_dir"].value, "data/demo")
        self.assertEqual(holders["num_images"].value, 2000)
        self.assertEqual(holders["image_size"].value, 1024)
        self.assertEqual(holders["num_workers"].value, 0)
        self.assertAlmostEqual(holders["box_share"].value, 880 / 13984)

    def test_negative_num_workers_flag_raises(self):
        holders = self._holders(["--num_workers=-1", f"--output_dir={self.get_temp_dir()}"])
        with self.assertRaisesRegex(ValueError, "--num_workers"):
            generate.main(["generate"], holders=holders)

    def test_zero_num_images_flag_raises(self):
        holders = self._holders(["--num_images=0", f"--output_dir={self.get_temp_dir()}"])
        with self.assertRaisesRegex(ValueError, "num_images"):
            generate.main(["generate"], holders=holders)

    def test_box_share_flag_out_of_range_raises(self):
        holders = self._holders(["--box_share=2", f"--output_dir={self.get_temp_dir()}"])
        with self.assertRaisesRegex(ValueError, "box_share"):
            generate.main(["generate"], holders=holders)


if __name__ == "__main__":
    tf.test.main()
