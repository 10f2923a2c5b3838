"""Tests for tfrecords/dataset.py: shapes, order, shuffling, refusals, sharding, the per-record hook."""

import os

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from tfrecords import codec, schema
from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib


class DatasetTest(tf.test.TestCase, parameterized.TestCase):
    def _records(self, name: str = "records", **kwargs) -> str:
        records_dir = os.path.join(self.get_temp_dir(), name)
        if not os.path.exists(os.path.join(records_dir, manifest_lib.MANIFEST_NAME)):
            kwargs.setdefault("split_sizes", {"train": 20, "val": 11})
            kwargs.setdefault("num_shards", 3)
            fake_data.write_records(records_dir, **kwargs)
        return records_dir

    @parameterized.named_parameters(
        ("raw_batch_parse", "raw", None),
        ("raw_record_parse", "raw", False),
        ("png", "png", None),
    )
    def test_shapes_and_dtypes(self, image_format, parse_after_batch):
        records_dir = self._records(f"shapes_{image_format}", image_format=image_format, image_size=16)
        train = dataset_lib.build_dataset(
            records_dir, "train", batch_size=4, training=True, seed=0, parse_after_batch=parse_after_batch
        )
        # Training batches have a fully static shape (drop_remainder), as XLA needs.
        self.assertEqual(train.element_spec[0].shape, [4, 16, 16, 1])
        self.assertEqual(train.element_spec[1].shape, [4, schema.NUM_LABELS])
        images, labels = next(iter(train))
        self.assertEqual(images.dtype, tf.uint8)
        self.assertEqual(labels.dtype, tf.float32)
        self.assertEqual(images.shape, [4, 16, 16, 1])
        self.assertSetEqual(set(np.unique(labels.numpy())), {0.0, 1.0})
        val = dataset_lib.build_dataset(
            records_dir, "val", batch_size=4, training=False, parse_after_batch=parse_after_batch
        )
        self.assertEqual(val.element_spec[0].shape.as_list(), [None, 16, 16, 1])

    def test_pixels_and_labels_round_trip(self):
        labels = [
            fake_data.multi_hot("Edema"),
            fake_data.multi_hot("No Finding"),
            fake_data.multi_hot("Mass", "Nodule"),
        ]
        records_dir = os.path.join(self.get_temp_dir(), "round_trip")
        fake_data.write_labeled_records(records_dir, {"val": labels}, image_size=8, seed=3)
        expected_pixels = [np.random.default_rng(3).integers(0, 256, size=(8, 8), dtype=np.uint8)]
        images, got_labels = next(
            iter(dataset_lib.build_dataset(records_dir, "val", batch_size=3, training=False))
        )
        self.assertAllEqual(got_labels, np.asarray(labels, np.float32))
        self.assertAllEqual(images[0, :, :, 0], expected_pixels[0])

    @parameterized.named_parameters(("batch_parse", None), ("record_parse", False))
    def test_eval_order_is_deterministic_and_complete(self, parse_after_batch):
        records_dir = self._records()
        build = lambda: dataset_lib.build_dataset(  # noqa: E731
            records_dir,
            "val",
            batch_size=4,
            training=False,
            with_metadata=True,
            parse_after_batch=parse_after_batch,
        )
        batches = list(build())
        # 11 records in batches of 4: the last partial batch (3) is kept.
        self.assertEqual([len(batch[0]) for batch in batches], [4, 4, 3])
        first = fake_data.image_indices(build())
        self.assertEqual(first, fake_data.image_indices(build()))
        manifest = manifest_lib.read_manifest(records_dir)
        self.assertLen(first, manifest.splits["val"].records)
        self.assertLen(set(first), len(first))  # every record exactly once

    def test_metadata_matches_what_was_written(self):
        records_dir = self._records()
        written = {
            fake_data.metadata_for(index).image_index: fake_data.metadata_for(index)
            for index in range(20, 31)  # the val records follow the 20 train records
        }
        dataset = dataset_lib.build_dataset(
            records_dir, "val", batch_size=5, training=False, with_metadata=True
        )
        seen = 0
        for _, _, metadata in dataset:
            self.assertSetEqual(set(metadata), set(schema.METADATA_KEYS))
            for row in range(len(metadata[schema.IMAGE_INDEX_KEY])):
                expected = written[metadata[schema.IMAGE_INDEX_KEY][row].numpy().decode()]
                self.assertEqual(metadata[schema.PATIENT_ID_KEY][row], expected.patient_id)
                self.assertEqual(metadata[schema.FOLLOW_UP_KEY][row], expected.follow_up)
                self.assertEqual(metadata[schema.AGE_KEY][row], expected.age)
                self.assertEqual(metadata[schema.SEX_KEY][row].numpy().decode(), expected.sex)
                self.assertEqual(
                    metadata[schema.VIEW_POSITION_KEY][row].numpy().decode(), expected.view_position
                )
                seen += 1
        self.assertEqual(seen, 11)

    def test_training_shuffles_and_repeats(self):
        records_dir = self._records()
        build = lambda seed: dataset_lib.build_dataset(  # noqa: E731
            records_dir,
            "train",
            batch_size=4,
            training=True,
            seed=seed,
            with_metadata=True,
            shuffle_buffer=64,
        )
        # 20 records, batches of 4: 10 batches are exactly two epochs, each record in each.
        stream = fake_data.image_indices(build(1), batches=10)
        first_epoch, second_epoch = stream[:20], stream[20:]
        self.assertLen(set(first_epoch), 20)
        self.assertCountEqual(first_epoch, second_epoch)
        self.assertNotEqual(first_epoch, second_epoch)  # reshuffled every epoch
        self.assertEqual(stream, fake_data.image_indices(build(1), batches=10))  # same seed, same stream
        self.assertNotEqual(stream, fake_data.image_indices(build(2), batches=10))
        eval_order = fake_data.image_indices(
            dataset_lib.build_dataset(records_dir, "train", batch_size=4, training=False, with_metadata=True)
        )
        self.assertNotEqual(first_epoch, eval_order)

    def test_cache_gives_the_same_records(self):
        records_dir = self._records()
        direct = fake_data.image_indices(
            dataset_lib.build_dataset(records_dir, "val", batch_size=4, training=False, with_metadata=True)
        )
        cached = dataset_lib.build_dataset(
            records_dir, "val", batch_size=4, training=False, with_metadata=True, cache=True
        )
        self.assertEqual(fake_data.image_indices(cached), direct)
        self.assertEqual(fake_data.image_indices(cached), direct)  # second pass from memory
        train = dataset_lib.build_dataset(
            records_dir, "train", batch_size=5, training=True, seed=0, cache=True
        )
        self.assertLen(list(train.take(12)), 12)  # three epochs

    def test_refuses_directory_without_manifest(self):
        records_dir = self._records("no_manifest")
        os.remove(os.path.join(records_dir, manifest_lib.MANIFEST_NAME))
        with self.assertRaisesRegex(manifest_lib.ManifestError, "has no manifest.json"):
            dataset_lib.build_dataset(records_dir, "train", batch_size=4, training=True)
        with self.assertRaisesRegex(manifest_lib.ManifestError, "does not exist"):
            dataset_lib.build_dataset(os.path.join(records_dir, "nope"), "val", batch_size=4, training=False)

    def test_refuses_missing_or_unlisted_shard(self):
        records_dir = self._records("missing_shard")
        shard = os.path.join(records_dir, manifest_lib.shard_name("val", 1, 3))
        os.rename(shard, shard + ".moved")
        with self.assertRaisesRegex(
            manifest_lib.ManifestError, "missing, e.g. 'val-00001-of-00003.tfrecord'"
        ):
            dataset_lib.build_dataset(records_dir, "train", batch_size=4, training=True)
        os.rename(shard + ".moved", shard)
        tf.io.gfile.copy(shard, os.path.join(records_dir, manifest_lib.shard_name("val", 3, 4)))
        with self.assertRaisesRegex(manifest_lib.ManifestError, "not listed"):
            dataset_lib.build_dataset(records_dir, "val", batch_size=4, training=False)

    def test_refuses_bad_arguments(self):
        records_dir = self._records()
        cases = [
            (dict(split="test"), manifest_lib.ManifestError, "has no split 'test'"),
            (dict(batch_size=0), ValueError, "batch_size must be a positive integer, got 0"),
            (dict(shuffle_buffer=-1), ValueError, "shuffle_buffer must be a positive integer"),
            (dict(record_fn=lambda d: d, training=False), ValueError, "record_fn is for training only"),
        ]
        for changes, error, pattern in cases:
            kwargs = dict(split="train", batch_size=4, training=True) | changes
            with self.assertRaisesRegex(error, pattern):
                dataset_lib.build_dataset(records_dir, **kwargs)
        png_dir = self._records("png_args", image_format="png")
        with self.assertRaisesRegex(ValueError, "parse_after_batch=True needs raw records"):
            dataset_lib.build_dataset(png_dir, "val", batch_size=4, training=False, parse_after_batch=True)
        empty_dir = os.path.join(self.get_temp_dir(), "empty_train")
        fake_data.write_records(empty_dir, split_sizes={"train": 0, "val": 2}, num_shards=1)
        with self.assertRaisesRegex(ValueError, "split 'train' has no records to train on"):
            dataset_lib.build_dataset(empty_dir, "train", batch_size=4, training=True)

    def test_record_of_the_wrong_size_is_named(self):
        records_dir = self._records("wrong_size", split_sizes={"val": 2}, num_shards=1, image_size=8)
        shard = os.path.join(records_dir, manifest_lib.shard_name("val", 0, 1))
        metadata = fake_data.metadata_for(99)
        with tf.io.TFRecordWriter(shard) as writer:
            for size in (8, 6):
                pixels = np.zeros([size, size], np.uint8)
                writer.write(
                    codec.make_example(pixels, metadata, fake_data.multi_hot("Mass")).SerializeToString()
                )
        with self.assertRaisesRegex(
            tf.errors.InvalidArgumentError, "differs from the manifest option image_size=8"
        ):
            list(dataset_lib.build_dataset(records_dir, "val", batch_size=2, training=False))

    @parameterized.named_parameters(("batch_parse", None), ("record_parse", False))
    def test_record_fn_sees_each_record_once_per_epoch(self, parse_after_batch):
        records_dir = self._records()
        seen_labels = []

        def record_fn(dataset):
            # Keeps only the records whose labels include No Finding, read through record_labels.
            no_finding = schema.LABELS.index("No Finding")
            return dataset.filter(lambda element: dataset_lib.record_labels(element)[no_finding] > 0)

        dataset = dataset_lib.build_dataset(
            records_dir,
            "train",
            batch_size=1,
            training=True,
            seed=0,
            with_metadata=True,
            record_fn=record_fn,
            parse_after_batch=parse_after_batch,
        )
        manifest = manifest_lib.read_manifest(records_dir)
        expected = manifest.label_counts("train")[schema.LABELS.index("No Finding")]
        self.assertGreater(expected, 0)
        for _, labels, _ in dataset.take(expected):
            seen_labels.append(labels.numpy()[0])
        self.assertLen(seen_labels, expected)
        self.assertTrue(all(row[schema.LABELS.index("No Finding")] == 1 for row in seen_labels))

    @parameterized.named_parameters(
        # 4 shards for 2 pipelines: each reads its own files.
        ("by_file_eval", 4, False),
        ("by_file_train", 4, True),
        # 1 shard for 2 pipelines: each reads all and keeps every other record.
        ("by_data_eval", 1, False),
        ("by_data_train", 1, True),
    )
    def test_input_context_sharding(self, num_shards, training):
        records_dir = self._records(f"sharded_{num_shards}", num_shards=num_shards, split_sizes={"train": 16})
        seen = []
        for pipeline_id in range(2):
            context = tf.distribute.InputContext(
                num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
            )
            dataset = dataset_lib.build_dataset(
                records_dir,
                "train",
                batch_size=4,
                training=training,
                seed=0,
                input_context=context,
                with_metadata=True,
            )
            # The global batch of 4 is split into per-replica batches of 2.
            self.assertEqual(next(iter(dataset))[0].shape[0], 2)
            # One epoch of this pipeline's 8 records = 4 batches of 2.
            seen.append(fake_data.image_indices(dataset, batches=4))
        self.assertLen(seen[0], 8)
        self.assertEmpty(set(seen[0]) & set(seen[1]))
        self.assertLen(set(seen[0]) | set(seen[1]), 16)


class VocabularyTest(tf.test.TestCase, parameterized.TestCase):
    """Records of another vocabulary: the labels sized by the manifest, with their states."""

    # Rows of CheXpert-style values over fake_data.CHEXPERT_LIKE_LABELS: 1 positive, 0 negative,
    # -1 uncertain, NaN not mentioned.
    VALUES = [
        [0.0, 1.0, -1.0, np.nan, 0.0],
        [1.0, np.nan, np.nan, 0.0, 0.0],
        [0.0, 0.0, 1.0, -1.0, 1.0],
    ]

    def _records(self, name, **kwargs):
        records_dir = os.path.join(self.get_temp_dir(), name)
        fake_data.write_vocabulary_records(records_dir, {"val": self.VALUES, "train": self.VALUES}, **kwargs)
        return records_dir

    @parameterized.named_parameters(("batch_parse", None), ("record_parse", False))
    def test_labels_mask_and_uncertain_follow_the_manifest(self, parse_after_batch):
        records_dir = self._records(f"chexpert_{parse_after_batch}")
        dataset = dataset_lib.build_dataset(
            records_dir,
            "val",
            batch_size=3,
            training=False,
            label_state=True,
            parse_after_batch=parse_after_batch,
        )
        self.assertEqual(dataset.element_spec[1][schema.LABELS_KEY].shape.as_list(), [None, 5])
        _, state = next(iter(dataset))
        self.assertAllEqual(state[schema.LABELS_KEY], [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 1]])
        self.assertAllEqual(state[schema.LABEL_MASK_KEY], [[1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [1, 1, 1, 0, 1]])
        self.assertAllEqual(
            state[schema.LABEL_UNCERTAIN_KEY], [[0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]]
        )
        for value in state.values():
            self.assertEqual(value.dtype, tf.float32)

    def test_plain_labels_by_default(self):
        records_dir = self._records("plain")
        _, labels = next(iter(dataset_lib.build_dataset(records_dir, "val", batch_size=3, training=False)))
        self.assertAllEqual(labels, [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 1, 0, 1]])

    def test_records_without_state_read_as_all_known(self):
        records_dir = self._records("no_state", with_state=False)
        _, state = next(
            iter(
                dataset_lib.build_dataset(records_dir, "val", batch_size=3, training=False, label_state=True)
            )
        )
        self.assertAllEqual(state[schema.LABEL_MASK_KEY], np.ones([3, 5]))
        self.assertAllEqual(state[schema.LABEL_UNCERTAIN_KEY], np.zeros([3, 5]))

    def test_nih_records_read_as_all_known_with_the_same_labels(self):
        records_dir = os.path.join(self.get_temp_dir(), "nih")
        fake_data.write_records(records_dir, split_sizes={"val": 6})
        plain = next(iter(dataset_lib.build_dataset(records_dir, "val", batch_size=6, training=False)))
        images, state = next(
            iter(
                dataset_lib.build_dataset(records_dir, "val", batch_size=6, training=False, label_state=True)
            )
        )
        self.assertAllEqual(images, plain[0])
        self.assertAllEqual(state[schema.LABELS_KEY], plain[1])
        self.assertAllEqual(state[schema.LABEL_MASK_KEY], np.ones([6, schema.NUM_LABELS]))
        self.assertAllEqual(state[schema.LABEL_UNCERTAIN_KEY], np.zeros([6, schema.NUM_LABELS]))

    def test_record_labels_reads_serialized_records_of_the_vocabulary(self):
        records_dir = self._records("serialized")
        path = manifest_lib.shard_paths(records_dir, manifest_lib.read_manifest(records_dir), "val")[0]
        first = next(iter(tf.data.TFRecordDataset(path)))
        self.assertAllEqual(dataset_lib.record_labels(first, num_labels=5), [0, 1, 0, 0, 0])

    def test_raw_records_parse_per_batch_by_default(self):
        self.assertEqual(dataset_lib.PARSE_PER_BATCH_FORMATS, ("raw",))


if __name__ == "__main__":
    tf.test.main()
