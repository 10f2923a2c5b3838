"""Tests for trainer.inspect: shard checks, summary, contact sheet, and the binary's output."""

import json
import os
import re
import struct
import subprocess
import sys

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image

from tests import fake_data
from tfrecords import contact_sheet, schema
from tfrecords import inspection as inspect_lib
from tfrecords import manifest as manifest_lib
from trainer.model import augment

# TensorFlow's C++ log lines (absl/glog format) and the banner absl prints before them.
_CPP_LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)", re.M)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _record_offsets(path):
    """Byte offset of each record in a TFRecord file (8-byte length, 4 CRC, data, 4 CRC)."""
    offsets, position = [], 0
    with open(path, "rb") as f:
        data = f.read()
    while position < len(data):
        offsets.append(position)
        (length,) = struct.unpack("<Q", data[position : position + 8])
        position += 8 + 4 + length + 4
    return offsets


def _run_inspect(*args, env=None):
    environ = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CXR_VERBOSITY")}
    environ["PYTHONPATH"] = _ROOT + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trainer.inspect", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=_ROOT,
        timeout=240,
    )


class InspectTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.records_dir = os.path.join(self.get_temp_dir(), "records")
        self.manifest = fake_data.write_records(
            self.records_dir,
            split_sizes={"train": 12, "val": 4, "test": 4},
            rejects={"missing_image": 2, "bad_label": 1},
        )
        rejects = [
            {"image_index": "00000009_000.png", "line": 10, "reason": "missing_image", "detail": "no file"},
            {"image_index": "00000009_001.png", "line": 11, "reason": "missing_image", "detail": "no file"},
            {"image_index": "00000010_000.png", "line": 12, "reason": "bad_label", "detail": "Unknown label"},
        ]
        with open(os.path.join(self.records_dir, manifest_lib.REJECTS_NAME), "w") as f:
            f.writelines(json.dumps(reject) + "\n" for reject in rejects)

    def _summary(self):
        manifest = manifest_lib.read_manifest(self.records_dir, check_shards=False)
        problems = inspect_lib.check_shards(self.records_dir, manifest)
        return inspect_lib.summarize(
            self.records_dir, manifest, problems, inspect_lib.read_rejects(self.records_dir, examples=1)
        )

    def test_summary_values(self):
        summary = self._summary()
        self.assertEqual(summary["problems"], [])
        self.assertEqual(summary["records_written"], 20)
        self.assertEqual(summary["input_rows"], 23)
        self.assertEqual(summary["options"]["image_size"], 32)
        train = summary["splits"]["train"]
        self.assertEqual(train["records"], 12)
        self.assertEqual(train["patients"], self.manifest.splits["train"].patients)
        self.assertEqual(train["shards"], 2)
        sizes = [
            os.path.getsize(p) for p in manifest_lib.shard_paths(self.records_dir, self.manifest, "train")
        ]
        self.assertEqual(train["shard_bytes"], {"total": sum(sizes), "min": min(sizes), "max": max(sizes)})
        for label, count in zip(schema.LABELS, self.manifest.label_counts("train")):
            self.assertEqual(train["label_counts"][label], count)
            self.assertAllClose(train["prevalence"][label], count / 12)
        self.assertEqual(summary["rejects"]["missing_image"]["count"], 2)
        # examples=1: only the first line of each reason.
        self.assertEqual(
            [r["image_index"] for r in summary["rejects"]["missing_image"]["examples"]], ["00000009_000.png"]
        )
        text = inspect_lib.format_summary(summary)
        self.assertIn("missing_image: 2", text)
        self.assertIn("00000010_000.png (line 12): Unknown label", text)
        self.assertIn("all match the manifest", text)
        json.dumps(summary)  # JSON-ready.

    def test_truncated_shard_is_named_with_the_record_number(self):
        path = manifest_lib.shard_paths(self.records_dir, self.manifest, "train")[1]
        offsets = _record_offsets(path)
        self.assertLen(offsets, 6)
        with open(path, "r+b") as f:
            f.truncate(offsets[3] + 20)  # Records 0-2 intact, record 3 cut in its payload.
        problems = self._summary()["problems"]
        corrupt = [p for p in problems if p["kind"] == "corrupt"]
        self.assertLen(corrupt, 1)
        self.assertEqual(corrupt[0]["shard"], "train-00001-of-00002.tfrecord")
        self.assertRegex(corrupt[0]["detail"], r"^record 3 is truncated \(the file ends \d+ bytes early\)")
        self.assertIn("sha256", [p["kind"] for p in problems])

    def test_corrupt_payload_is_named_with_the_record_number(self):
        path = manifest_lib.shard_paths(self.records_dir, self.manifest, "val")[0]
        offsets = _record_offsets(path)
        with open(path, "r+b") as f:
            f.seek(offsets[1] + 40)  # Inside record 1's data: its CRC no longer matches.
            byte = f.read(1)
            f.seek(offsets[1] + 40)
            f.write(bytes([byte[0] ^ 0xFF]))
        problems = self._summary()["problems"]
        self.assertEqual(
            [(p["shard"], p["kind"]) for p in problems],
            [("val-00000-of-00002.tfrecord", "corrupt"), ("val-00000-of-00002.tfrecord", "sha256")],
        )
        self.assertRegex(problems[0]["detail"], r"^record 1 is corrupt \(its data fails its checksum\)")

    def test_each_mismatch_reported_by_file(self):
        manifest_path = manifest_lib.manifest_path(self.records_dir)
        with open(manifest_path) as f:
            data = json.load(f)
        data["splits"]["test"]["shards"][1]["sha256"] = "0" * 64
        with open(manifest_path, "w") as f:
            json.dump(data, f)
        os.remove(os.path.join(self.records_dir, "val-00001-of-00002.tfrecord"))
        fake_data.write_records(os.path.join(self.get_temp_dir(), "other"), split_sizes={"train": 3})
        os.rename(
            os.path.join(self.get_temp_dir(), "other", "train-00000-of-00002.tfrecord"),
            os.path.join(self.records_dir, "train-00000-of-00005.tfrecord"),
        )
        problems = self._summary()["problems"]
        self.assertEqual(
            [(p["shard"], p["kind"]) for p in problems],
            [
                ("val-00001-of-00002.tfrecord", "missing"),
                ("test-00001-of-00002.tfrecord", "sha256"),
                ("train-00000-of-00005.tfrecord", "unlisted"),
            ],
        )

    def test_read_samples_with_label_filter(self):
        label = "No Finding"
        samples = contact_sheet.read_samples(self.records_dir, self.manifest, "train", 100, label=label)
        self.assertLen(samples, self.manifest.splits["train"].label_counts[label])
        for sample in samples:
            self.assertEqual(sample.labels[schema.LABELS.index(label)], 1)
            self.assertEqual(sample.image.shape, (32, 32))
            self.assertEqual(sample.image.dtype, np.uint8)
        first = contact_sheet.read_samples(self.records_dir, self.manifest, "train", 2)
        self.assertEqual([s.metadata.image_index for s in first], ["00000001_000.png", "00000001_001.png"])
        self.assertEqual(contact_sheet.caption(first[0]).splitlines()[0], "00000001_000.png")

    def test_unknown_label(self):
        with self.assertRaisesRegex(ValueError, "--label must be one of .*got 'Efusion'"):
            contact_sheet.read_samples(self.records_dir, self.manifest, "train", 1, label="Efusion")

    def test_augmented_samples_are_the_same_records_warped(self):
        samples = contact_sheet.read_samples(self.records_dir, self.manifest, "val", 3)
        augmented = contact_sheet.augment_samples(samples, augment.sheet_transform())
        self.assertEqual([s.metadata for s in augmented], [s.metadata for s in samples])
        for before, after in zip(samples, augmented):
            self.assertEqual(after.image.shape, before.image.shape)
            self.assertEqual(after.image.dtype, np.float32)
            # Standardized: zero mean per image.
            self.assertAllClose(after.image.mean(), 0.0, atol=1e-4)

    @parameterized.parameters(((5, 3), 4, 3), ((8,), 8, 1), ((0, 2), 2, 2))
    def test_contact_sheet_grid(self, counts, columns, rows):
        splits = ("train", "val", "test")
        samples = {
            split: contact_sheet.read_samples(self.records_dir, self.manifest, split, count)
            for split, count in zip(splits, counts)
        }
        path = os.path.join(self.get_temp_dir(), f"sheet-{columns}-{rows}.png")
        layout = contact_sheet.write_contact_sheet(path, samples, columns=columns)
        self.assertEqual((layout.rows, layout.columns), (rows, columns))
        with Image.open(path) as image:
            self.assertEqual(image.size, (layout.width, layout.height))
            pixels = np.asarray(image.convert("L"))
        self.assertEqual(layout.width, round(columns * contact_sheet.TILE_INCHES * contact_sheet.SHEET_DPI))
        self.assertGreater(pixels.std(), 10)  # Images and text drawn, not a blank page.


class InspectBinaryTest(tf.test.TestCase):
    """The binary in a subprocess: quiet by default, --verbosity=1 restores TensorFlow's lines."""

    def test_quiet_default_one_line_error_and_switch(self):
        records_dir = os.path.join(self.get_temp_dir(), "records")
        manifest = fake_data.write_records(records_dir, split_sizes={"train": 4, "val": 2, "test": 2})
        sheet = os.path.join(self.get_temp_dir(), "sheet.png")

        verbose = _run_inspect(records_dir, f"--sheet={sheet}", "--verbosity=1")
        self.assertEqual(verbose.returncode, 0, verbose.stderr)
        self.assertRegex(verbose.stderr, _CPP_LOG_LINE)  # The switch restores TensorFlow's lines.
        self.assertIn("all match the manifest", verbose.stdout)
        self.assertTrue(os.path.exists(sheet))

        path = manifest_lib.shard_paths(records_dir, manifest, "train")[0]
        with open(path, "r+b") as f:
            f.truncate(_record_offsets(path)[1] + 10)
        quiet = _run_inspect(records_dir, "--sheet=", "--format=json")
        self.assertNotRegex(quiet.stderr, _CPP_LOG_LINE)
        self.assertNotIn("Traceback", quiet.stderr)
        self.assertEqual(quiet.returncode, 1)
        last = quiet.stderr.strip().splitlines()[-1]
        self.assertRegex(
            last,
            r"^trainer\.inspect: error: .*train-00000-of-00002\.tfrecord: record 1 is truncated \(the file ends inside its header\)",
        )
        summary = json.loads(quiet.stdout)
        self.assertEqual(summary["problems"][0]["kind"], "corrupt")


if __name__ == "__main__":
    tf.test.main()
