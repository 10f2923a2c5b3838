"""Tests for tfrecords.manifest: reading, writing and validation errors."""

import json
import os

import tensorflow as tf

from tests import fake_data
from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib


class ManifestTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.records_dir = os.path.join(self.get_temp_dir(), "records")
        self.manifest = fake_data.write_records(self.records_dir, rejects={"missing_image": 2})

    def _rewrite(self, edit):
        path = manifest_lib.manifest_path(self.records_dir)
        with open(path) as f:
            data = json.load(f)
        edit(data)
        with open(path, "w") as f:
            json.dump(data, f)

    def test_round_trip(self):
        manifest = manifest_lib.read_manifest(self.records_dir, verify_checksums=True)
        self.assertEqual(manifest.image_size, 32)
        self.assertEqual(manifest.image_format, "raw")
        self.assertEqual(manifest.records_written, 40)
        self.assertEqual(manifest.records_rejected, 2)
        self.assertEqual(manifest.input_rows, 42)
        self.assertEqual(manifest.splits["train"].shards[1].name, "train-00001-of-00002.tfrecord")
        self.assertLen(manifest.label_counts("train"), 15)
        self.assertEqual(
            manifest_lib.shard_paths(self.records_dir, manifest, "val"),
            [os.path.join(self.records_dir, f"val-0000{i}-of-00002.tfrecord") for i in range(2)],
        )

    def test_shard_name(self):
        self.assertEqual(manifest_lib.shard_name("test", 3, 12), "test-00003-of-00012.tfrecord")
        with self.assertRaisesRegex(ValueError, "split must be one of"):
            manifest_lib.shard_name("dev", 0, 1)

    def test_missing_directory(self):
        missing = os.path.join(self.get_temp_dir(), "nowhere")
        with self.assertRaisesRegex(manifest_lib.ManifestError, "nowhere.*does not exist"):
            manifest_lib.read_manifest(missing)

    def test_missing_manifest_names_directory(self):
        os.remove(manifest_lib.manifest_path(self.records_dir))
        with self.assertRaisesRegex(manifest_lib.ManifestError, f"{self.records_dir}.*has no manifest.json"):
            manifest_lib.read_manifest(self.records_dir)

    def test_not_json(self):
        with open(manifest_lib.manifest_path(self.records_dir), "w") as f:
            f.write("{not json")
        with self.assertRaisesRegex(manifest_lib.ManifestError, "not valid JSON"):
            manifest_lib.read_manifest(self.records_dir)

    def test_missing_field(self):
        self._rewrite(lambda d: d.pop("input_rows"))
        with self.assertRaisesRegex(manifest_lib.ManifestError, "missing field 'input_rows'"):
            manifest_lib.read_manifest(self.records_dir)

    def test_lost_records(self):
        def edit(d):
            d["input_rows"] = 50

        self._rewrite(edit)
        with self.assertRaisesRegex(
            manifest_lib.ManifestError, "input_rows 50 != records written 40 \\+ records rejected 2"
        ):
            manifest_lib.read_manifest(self.records_dir)

    def test_shard_counts_disagree(self):
        def edit(d):
            d["splits"]["val"]["records"] = 9

        self._rewrite(edit)
        with self.assertRaisesRegex(
            manifest_lib.ManifestError, "split 'val' lists 9 records but its shards hold 8"
        ):
            manifest_lib.read_manifest(self.records_dir)

    def test_missing_shard(self):
        os.remove(os.path.join(self.records_dir, "test-00001-of-00002.tfrecord"))
        with self.assertRaisesRegex(
            manifest_lib.ManifestError, "missing, e.g. 'test-00001-of-00002.tfrecord'"
        ):
            manifest_lib.read_manifest(self.records_dir)

    def test_extra_shard(self):
        open(os.path.join(self.records_dir, "train-00000-of-00003.tfrecord"), "wb").close()
        with self.assertRaisesRegex(manifest_lib.ManifestError, "not listed.*train-00000-of-00003"):
            manifest_lib.read_manifest(self.records_dir)

    def test_corrupt_shard_checksum(self):
        with open(os.path.join(self.records_dir, "val-00000-of-00002.tfrecord"), "ab") as f:
            f.write(b"x")
        manifest_lib.read_manifest(self.records_dir)  # Checksums are opt-in.
        with self.assertRaisesRegex(manifest_lib.ManifestError, "val-00000-of-00002.tfrecord.*sha256"):
            manifest_lib.read_manifest(self.records_dir, verify_checksums=True)

    def test_bad_image_format(self):
        def edit(d):
            d["options"]["image_format"] = "jpeg"

        self._rewrite(edit)
        with self.assertRaisesRegex(manifest_lib.ManifestError, "image_format must be one of"):
            manifest_lib.read_manifest(self.records_dir)

    def test_wrong_shard_name(self):
        def edit(d):
            d["splits"]["train"]["shards"][0]["name"] = "train-00000-of-00005.tfrecord"

        self._rewrite(edit)
        with self.assertRaisesRegex(manifest_lib.ManifestError, "expected 'train-00000-of-00002.tfrecord'"):
            manifest_lib.read_manifest(self.records_dir, check_shards=False)


if __name__ == "__main__":
    tf.test.main()


class ManifestVocabularyTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.records_dir = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_records(self.records_dir)
        self.path = manifest_lib.manifest_path(self.records_dir)
        with open(self.path) as f:
            self.data = json.load(f)

    def _write(self):
        with open(self.path, "w") as f:
            json.dump(self.data, f)

    def test_manifest_without_vocabulary_is_nih(self):
        self.data.pop("dataset", None)
        self.data.pop("labels", None)
        self.data.pop("label_states", None)
        self._write()
        manifest = manifest_lib.read_manifest(self.records_dir)
        self.assertEqual(manifest.dataset, "nih")
        self.assertEqual(manifest.labels, schema.LABELS)
        self.assertEqual(dict(manifest.label_states), dict(manifest_lib.NIH_LABEL_STATES))

    def test_label_states_round_trip_and_are_checked(self):
        states = {"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "not_mentioned"}
        self.data["label_states"] = states
        self._write()
        manifest = manifest_lib.read_manifest(self.records_dir)
        self.assertEqual(dict(manifest.label_states), states)
        self.assertEqual(manifest.to_json()["label_states"], states)
        self.data["label_states"] = {"-1.0": "maybe"}
        self._write()
        with self.assertRaisesRegex(manifest_lib.ManifestError, "unknown state.*'maybe'"):
            manifest_lib.read_manifest(self.records_dir)

    def test_vocabulary_round_trips_and_bounds_label_counts(self):
        names = list(self.data["labels"])
        self.data["dataset"] = "other"
        self.data["labels"] = names[::-1]
        self._write()
        manifest = manifest_lib.read_manifest(self.records_dir)
        self.assertEqual(manifest.dataset, "other")
        self.assertEqual(list(manifest.labels), names[::-1])
        self.assertEqual(manifest.to_json()["labels"], names[::-1])
        self.data["labels"] = names[:3]
        self._write()
        with self.assertRaisesRegex(manifest_lib.ManifestError, "unknown labels"):
            manifest_lib.read_manifest(self.records_dir)

    def test_repeated_labels_rejected(self):
        self.data["labels"] = ["A", "A"]
        self._write()
        with self.assertRaisesRegex(manifest_lib.ManifestError, "distinct"):
            manifest_lib.read_manifest(self.records_dir)

    def test_records_without_mask_read_as_all_known(self):
        shard = manifest_lib.shard_paths(
            self.records_dir, manifest_lib.read_manifest(self.records_dir), "train"
        )[0]
        serialized = next(iter(tf.data.TFRecordDataset(shard)))
        features = codec.parse_example(serialized)
        self.assertAllEqual(features[schema.LABEL_MASK_KEY], [1] * schema.NUM_LABELS)
        self.assertEqual(features[schema.LABELS_KEY].shape, [schema.NUM_LABELS])
