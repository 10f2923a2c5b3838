"""Smoke tests of the benchmarks' building blocks at tiny sizes (the benchmarks are not run).

A benchmark that breaks when the code it measures moves is found here, not on the day its
figures are needed.
"""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

from benchmarks import nih_scale, rss
from tests import fake_data
from tfrecords import manifest as manifest_lib


class ProfileTrainRecordsTest(tf.test.TestCase):
    def test_writes_records_a_manifest_accepts(self):
        records_dir = os.path.join(self.get_temp_dir(), "records")
        # In its own process: both benchmarks define absl flags of the same names at import.
        code = (
            "from benchmarks import profile_train; "
            f"profile_train.write_records({records_dir!r}, 32, {{'train': 6, 'val': 3}})"
        )
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        manifest = manifest_lib.read_manifest(records_dir, check_shards=True)
        self.assertEqual(manifest.image_size, 32)
        self.assertEqual(
            {split: info.records for split, info in manifest.splits.items()}, {"train": 6, "val": 3}
        )


class NihScaleTest(tf.test.TestCase):
    def _pool(self, count: int = 3) -> list[str]:
        folder = os.path.join(self.get_temp_dir(), "pool")
        os.makedirs(folder, exist_ok=True)
        paths = []
        for i in range(count):
            path = os.path.join(folder, f"p{i}.png")
            Image.fromarray(np.full((40, 48), 40 * i, np.uint8)).save(path)
            paths.append(path)
        return paths

    def test_layout_links_one_file_per_row_in_nih_folders(self):
        header, lines = nih_scale._demo_csv_lines(12)
        names = [line.split(",", 1)[0] for line in lines]
        root = os.path.join(self.get_temp_dir(), "nih")
        built = nih_scale.build_layout(
            root, header, lines, nih_scale._official_lists(names, None), self._pool()
        )
        self.assertEqual(built["rows"], 12)
        self.assertEqual(built["linked"] + built["copied"], 12)
        listed = sorted(os.listdir(os.path.join(root, "images_001", "images")))
        self.assertEqual(listed, sorted(names))  # The first folder takes up to 4,999 rows.
        with open(os.path.join(root, "test_list.txt")) as f:
            test = f.read().split()
        self.assertTrue(set(test) <= set(names))

    def test_floor_decodes_every_file(self):
        result = nih_scale.run_floor(self._pool() * 2, image_size=16, workers=2)
        self.assertEqual(result["images"], 6)
        self.assertGreater(result["images_per_s"], 0)

    def test_read_and_train_on_tiny_records(self):
        records_dir = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_records(records_dir, image_size=32, split_sizes={"train": 40, "val": 4}, num_shards=1)
        read = nih_scale.run_read(records_dir, augment=True, batch_size=8)
        self.assertEqual(read["images"], 40)
        trained = nih_scale.run_train(records_dir, steps=3)
        self.assertEqual((trained["profile"], trained["batch_size"], trained["steps"]), ("full", 16, 3))
        self.assertGreater(trained["s_per_step"], 0)


class RunSampledTest(tf.test.TestCase):
    def test_peak_covers_what_the_command_holds(self):
        code = "import time; block = bytearray(64 * 1000 * 1000); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"
        run = rss.run_sampled(
            [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, interval_s=0.1
        )
        self.assertEqual(run.returncode, 0)
        self.assertGreater(run.peak_rss_bytes, 64 * 1000 * 1000)
        self.assertGreater(run.samples, 3)
        self.assertGreater(run.wall_seconds, 1.5)

    def test_exit_code_is_returned(self):
        run = rss.run_sampled(
            [sys.executable, "-c", "raise SystemExit(3)"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.assertEqual(run.returncode, 3)


class GradcamBenchmarksTest(tf.test.TestCase):
    def test_checkerboard_share_sees_the_period_2_pattern_only(self):
        from benchmarks import gradcam_layers

        rows, cols = np.mgrid[0:16, 0:16]
        checkerboard = ((rows + cols) % 2).astype(float)
        self.assertAllClose(gradcam_layers.checkerboard_share(checkerboard), 1.0)
        smooth = np.exp(-((rows - 8.0) ** 2 + (cols - 8.0) ** 2) / 20.0)
        self.assertLess(gradcam_layers.checkerboard_share(smooth), 1e-3)
        flat_bottom = np.ones((10, 10))
        self.assertAllClose(gradcam_layers.bottom_tenth_share(flat_bottom), 0.1)

    def test_fill_share_is_zero_without_moves_and_at_the_edges_with_shifts(self):
        from benchmarks import gradcam_causes

        still = {"augment_rotation_degrees": 0.0, "augment_width_shift": 0.0, "augment_height_shift": 0.0,
                 "augment_zoom": 0.0, "augment_placement": "auto"}  # fmt: skip
        self.assertAllEqual(gradcam_causes.fill_shares(still, 16, draws=20), np.zeros((16, 16)))
        shifted = {**still, "augment_height_shift": 0.25}
        fill = gradcam_causes.fill_shares(shifted, 16, draws=200)
        self.assertGreater(fill[0].mean(), 0.2)
        self.assertGreater(fill[-1].mean(), 0.2)
        self.assertEqual(fill[6:10].max(), 0.0)
        self.assertEqual(set(gradcam_causes.bands(16)), {"top", "bottom", "left", "right"})
