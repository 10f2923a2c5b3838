"""Tests for trainer/training/inputs.py: resampling, loss weights, the tf.data augmentation, the data service."""

import collections
import os

import numpy as np
import portpicker
import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from tfrecords import schema
from trainer.model import augment
from trainer.training import config as config_lib
from trainer.training import inputs

_FINDING = {name: index for index, name in enumerate(schema.LABELS)}


class InputsTest(tf.test.TestCase, parameterized.TestCase):
    def _records(self, name: str = "records", **kwargs) -> str:
        records_dir = os.path.join(self.get_temp_dir(), name)
        if not os.path.exists(os.path.join(records_dir, manifest_lib.MANIFEST_NAME)):
            kwargs.setdefault("split_sizes", {"train": 20, "val": 11})
            kwargs.setdefault("num_shards", 3)
            fake_data.write_records(records_dir, **kwargs)
        return records_dir

    @parameterized.named_parameters(("batch_parse", "raw"), ("record_parse", "png"))
    def test_resampling_moves_label_frequencies_to_weighted_shares(self, image_format):
        # 10 "No Finding" records (weight 1 + 0.04 = 1.04) and 10 with three findings
        # (weight 3.04); Edema is in 5 of the latter. Expected shares of the stream:
        #   No Finding: 10 * 1.04 / (10 * 1.04 + 10 * 3.04) = 10.4 / 40.8 = 0.2549 (was 0.5)
        #   Mass, Nodule (all 10 three-finding records): 30.4 / 40.8 = 0.7451 (was 0.5)
        #   Edema (5 of them): 15.2 / 40.8 = 0.3725 (was 0.25)
        labels = [fake_data.multi_hot("No Finding")] * 10
        labels += [fake_data.multi_hot("Mass", "Nodule", "Edema")] * 5 + [
            fake_data.multi_hot("Mass", "Nodule", "Atelectasis")
        ] * 5
        records_dir = os.path.join(self.get_temp_dir(), f"resample_{image_format}")
        fake_data.write_labeled_records(
            records_dir, {"train": labels}, image_size=4, image_format=image_format, num_shards=2
        )
        dataset = dataset_lib.build_dataset(
            records_dir,
            "train",
            batch_size=50,
            training=True,
            seed=0,
            shuffle_buffer=100,
            record_fn=inputs.resample_fn(manifest_lib.read_manifest(records_dir), "train", seed=0),
        )
        stream = np.concatenate(
            [batch_labels.numpy() for _, batch_labels in dataset.take(80)]
        )  # 4,000 records
        frequency = stream.mean(axis=0)
        weights = np.asarray(labels).sum(axis=1) + 0.04
        expected = (weights[:, None] * np.asarray(labels)).sum(axis=0) / weights.sum()
        self.assertAllClose(expected[_FINDING["No Finding"]], 10.4 / 40.8)  # the hand-worked value
        # Standard error of a share over 4,000 draws is < 0.008; 0.03 is > 3.7 of them.
        self.assertAllClose(frequency, expected, atol=0.03)
        unbalanced = dataset_lib.build_dataset(records_dir, "train", batch_size=50, training=True, seed=0)
        plain = np.concatenate([batch_labels.numpy() for _, batch_labels in unbalanced.take(10)])
        self.assertAllClose(plain.mean(axis=0), np.asarray(labels).mean(axis=0), atol=1e-6)

    def test_positive_weights_worked_by_hand(self):
        # 5 train records: [Atelectasis], [Atelectasis, Cardiomegaly], [Edema], [No Finding] x 2.
        #   Atelectasis: 2 positives, 3 negatives -> 3 / 2 = 1.5
        #   Cardiomegaly: 1 positive, 4 negatives -> 4 / 1 = 4.0
        #   Edema: 1 positive, 4 negatives -> 4.0
        #   No Finding: 2 positives, 3 negatives -> 1.5
        #   the other 11 labels have no positives -> 1.0 (nothing to balance)
        # val (2 records): Effusion in both, so no negatives -> 1.0.
        records_dir = os.path.join(self.get_temp_dir(), "weights")
        manifest = fake_data.write_labeled_records(
            records_dir,
            {
                "train": [
                    fake_data.multi_hot("Atelectasis"),
                    fake_data.multi_hot("Atelectasis", "Cardiomegaly"),
                    fake_data.multi_hot("Edema"),
                    fake_data.multi_hot("No Finding"),
                    fake_data.multi_hot("No Finding"),
                ],
                "val": [fake_data.multi_hot("Effusion"), fake_data.multi_hot("Effusion", "Mass")],
            },
        )
        expected = np.ones(schema.NUM_LABELS, np.float32)
        expected[[_FINDING["Atelectasis"], _FINDING["No Finding"]]] = 1.5
        expected[[_FINDING["Cardiomegaly"], _FINDING["Edema"]]] = 4.0
        weights = inputs.positive_weights(manifest)
        self.assertEqual(weights.dtype, np.float32)
        self.assertAllClose(weights, expected)
        val_weights = inputs.positive_weights(manifest, "val")
        self.assertEqual(val_weights[_FINDING["Effusion"]], 1.0)
        self.assertEqual(val_weights[_FINDING["Mass"]], 1.0)  # 1 positive, 1 negative
        with self.assertRaisesRegex(manifest_lib.ManifestError, "no split 'test'"):
            inputs.positive_weights(manifest, "test")

    def test_augment_batches_keeps_the_pixel_scale(self):
        records_dir = self._records()
        augment_fn = augment.make_augment_fn()  # One function: compiled once for both datasets.

        def build():
            dataset = dataset_lib.build_dataset(records_dir, "train", batch_size=4, training=True, seed=3)
            return inputs.augment_batches(dataset, augment_fn, seed=3)

        images, labels = next(iter(build()))
        self.assertEqual(images.dtype, tf.float32)
        self.assertEqual(images.shape, [4, 32, 32, 1])
        self.assertEqual(labels.shape, [4, schema.NUM_LABELS])
        # The model's input contract: pixels on the 0..255 scale, not standardized.
        self.assertAllInRange(images, 0.0, 255.0)
        self.assertGreater(float(tf.reduce_max(images)), 100.0)
        self.assertGreater(float(tf.reduce_mean(images)), 1.0)
        again, _ = next(iter(build()))
        self.assertAllEqual(images, again)  # seeded: reproducible
        plain, _ = next(
            iter(dataset_lib.build_dataset(records_dir, "train", batch_size=4, training=True, seed=3))
        )
        self.assertNotAllClose(images, tf.cast(plain, tf.float32))  # and augmented

    def test_model_sees_the_same_image_in_both_placements(self):
        # Warping 0..255 pixels then letting the model rescale and standardize equals warping the
        # rescaled image in the model: one exported model serves both placements.
        images = tf.constant(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 1)), tf.uint8)
        seed = tf.constant([4, 2], tf.int64)
        in_tf_data = augment.make_augment_fn(jit_compile=False)(images, seed)
        via_dataset = augment.standardize(in_tf_data / 255.0)
        via_model = augment.standardize(augment.augment_batch(tf.cast(images, tf.float32) / 255.0, seed))
        self.assertAllClose(via_dataset, via_model, atol=1e-4)

    def test_data_service_yields_the_same_records(self):
        records_dir = self._records()
        # An in-process dispatcher and worker on localhost.
        dispatcher = tf.data.experimental.service.DispatchServer(
            tf.data.experimental.service.DispatcherConfig(port=portpicker.pick_unused_port())
        )
        worker = tf.data.experimental.service.WorkerServer(
            tf.data.experimental.service.WorkerConfig(
                dispatcher_address=dispatcher.target.split("://")[1],
                worker_address="localhost:%port%",
                port=portpicker.pick_unused_port(),
            )
        )
        self.addCleanup(dispatcher._stop)  # Servers have no public stop; both also stop at exit.
        self.addCleanup(worker._stop)

        def read(split, training, service=None):
            dataset = dataset_lib.build_dataset(
                records_dir, split, batch_size=4, training=training, seed=0, with_metadata=True
            )
            if service is not None:
                dataset = inputs.through_data_service(dataset, service)
            # Training repeats forever: 10 batches of 4 are exactly two epochs of 20 records.
            return fake_data.image_indices(dataset, batches=10 if training else None)

        for split, training in (("val", False), ("train", True)):
            direct = read(split, training)
            served = read(split, training, service=dispatcher.target)
            self.assertCountEqual(served, direct, msg=split)
            self.assertEqual(collections.Counter(served).most_common(1)[0][1], 2 if training else 1)

    def test_resample_weights(self):
        labels = np.array(
            [
                fake_data.multi_hot("No Finding"),
                fake_data.multi_hot("Mass", "Edema"),
                fake_data.multi_hot(*schema.FINDINGS),
            ]
        )
        self.assertAllClose(inputs.resample_weights(labels), [1.04, 2.04, 14.04])


class TargetsTest(tf.test.TestCase, parameterized.TestCase):
    """The uncertainty policies and the unknown-label targets."""

    # One image, CheXpert-style over 4 labels: positive, uncertain, not mentioned, negative.
    STATE = {
        schema.LABELS_KEY: [[1.0, 0.0, 0.0, 0.0]],
        schema.LABEL_MASK_KEY: [[1.0, 0.0, 0.0, 1.0]],
        schema.LABEL_UNCERTAIN_KEY: [[0.0, 1.0, 0.0, 0.0]],
    }

    @parameterized.named_parameters(
        ("ignore", "ignore", [[1.0, -1.0, -1.0, 0.0]]),
        ("ones", "ones", [[1.0, 1.0, -1.0, 0.0]]),
        ("zeros", "zeros", [[1.0, 0.0, -1.0, 0.0]]),
    )
    def test_policy_eagerly_and_in_dataset_map(self, policy, expected):
        state = {key: tf.constant(value) for key, value in self.STATE.items()}
        self.assertAllEqual(inputs.targets(state, policy), expected)
        mapped = tf.data.Dataset.from_tensors((tf.zeros([1, 2, 2, 1], tf.uint8), state))
        (_, got), *_ = list(inputs.with_targets(mapped, policy))
        self.assertAllEqual(got, expected)

    def test_unknown_policy_is_refused(self):
        with self.assertRaisesRegex(ValueError, "uncertain must be one of"):
            inputs.targets({}, "maybe")

    def test_training_input_of_another_vocabulary(self):
        records_dir = os.path.join(self.get_temp_dir(), "chexpert")
        values = [[0.0, 1.0, -1.0, np.nan, 0.0]] * 4
        fake_data.write_vocabulary_records(records_dir, {"train": values, "val": values})
        for policy, uncertain_target in (("ignore", -1.0), ("ones", 1.0), ("zeros", 0.0)):
            config = config_lib.get_profile("demo", records_dir=records_dir, uncertain=policy)
            _, y = next(iter(inputs.training_dataset(config, global_batch_size=2)))
            self.assertAllEqual(y, [[0.0, 1.0, uncertain_target, -1.0, 0.0]] * 2)
        # Resampling reads the records' labels in their own vocabulary's length.
        config = config_lib.get_profile("demo", records_dir=records_dir, class_imbalance="resample")
        _, y = next(iter(inputs.training_dataset(config, global_batch_size=2)))
        self.assertAllEqual(y, [[0.0, 1.0, -1.0, -1.0, 0.0]] * 2)

    def test_nih_targets_are_the_labels(self):
        records_dir = os.path.join(self.get_temp_dir(), "nih")
        fake_data.write_records(records_dir, split_sizes={"train": 8, "val": 8})
        config = config_lib.get_profile("demo", records_dir=records_dir, uncertain="ones")
        strategy = tf.distribute.get_strategy()
        val = inputs.distributed_dataset(config, strategy, "val", training=False, batch_size_per_replica=8)
        plain = dataset_lib.build_dataset(records_dir, "val", batch_size=8, training=False)
        (_, targets), (_, labels) = next(iter(val)), next(iter(plain))
        self.assertAllEqual(targets, labels)
        self.assertEqual(targets.dtype, labels.dtype)


if __name__ == "__main__":
    tf.test.main()
