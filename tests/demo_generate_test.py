"""Tests for the demo_data.generate binary, run as a user runs it (its flags live in the global
flag registry, so it runs in its own process)."""

import json
import os
import subprocess
import sys

import pandas as pd
import tensorflow as tf

from demo_data import layout

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [_REPO, os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-m", "demo_data.generate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


class GenerateBinaryTest(tf.test.TestCase):
    def test_writes_the_set_and_prints_the_summary(self):
        output_dir = os.path.join(self.get_temp_dir(), "cli")
        result = _run(
            f"--output_dir={output_dir}",
            "--num_images=40",
            "--image_size=16",
            "--num_workers=1",
            "--box_share=1",
        )
        self.assertEqual(result.returncode, 0, msg=result.stderr)
        summary = json.loads(result.stdout)
        self.assertEqual(summary["num_images"], 40)
        self.assertLen(pd.read_csv(os.path.join(output_dir, layout.CSV_NAME)), 40)
        boxes = pd.read_csv(os.path.join(output_dir, layout.BBOX_NAME))
        self.assertLen(boxes, sum(summary["boxes"].values()))
        self.assertNotEmpty(boxes)

    def test_flags_are_the_config_fields_with_the_demo_defaults(self):
        result = _run("--help")
        for name, default in [
            ("output_dir", "'data/demo'"),
            ("num_images", "'2000'"),
            ("image_size", "'1024'"),
            ("seed", "'0'"),
            ("box_share", repr(str(880 / 13984))),
        ]:
            self.assertRegex(result.stdout, rf"--{name}: .*\n(.*\n)*?\s+\(default: {default}\)", msg=name)
        for name in ("--num_patients", "--num_workers", "--[no]overwrite", "--compress_level"):
            self.assertIn(name, result.stdout)

    def test_bad_flag_value_names_the_field(self):
        output_dir = os.path.join(self.get_temp_dir(), "bad")
        result = _run(f"--output_dir={output_dir}", "--num_workers=0")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DemoDataConfig.num_workers must be an integer >= 1, got 0", result.stderr)
        self.assertFalse(os.path.exists(output_dir))

    def test_unexpected_argument_is_a_usage_error(self):
        result = _run(f"--output_dir={self.get_temp_dir()}", "extra")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Unexpected arguments: extra", result.stderr)


if __name__ == "__main__":
    tf.test.main()
