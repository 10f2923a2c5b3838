"""Distributed training for real, on loopback only: two MultiWorkerMirroredStrategy worker
processes, and training input read through an in-process tf.data service."""

import dataclasses
import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import fake_data
from trainer import train_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER_TIMEOUT_S = 420


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class MultiWorkerTest(tf.test.TestCase):
    # Two TensorFlow processes on 2 cores: about a minute on an idle machine, several when shared.
    @pytest.mark.slow
    def test_two_workers_train_in_sync_and_only_the_chief_writes(self):
        records = os.path.join(self.get_temp_dir(), "records")
        # Two shards per split: each worker reads its own file.
        fake_data.write_records(records, image_size=32, split_sizes={"train": 32, "val": 8}, num_shards=2)
        run_dir = os.path.join(self.get_temp_dir(), "run")
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        processes, logs = [], []
        for index in range(2):
            env = dict(os.environ)
            env["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            )
            env["CUDA_VISIBLE_DEVICES"] = ""
            # Files, not pipes: a worker blocked on a full pipe would stall the other's collectives.
            log = open(os.path.join(self.get_temp_dir(), f"worker{index}.log"), "w+")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "trainer.train",
                        "--strategy=multi_worker",
                        f"--records_dir={records}",
                        f"--run_dir={run_dir}",
                        "--depth=2",
                        "--base_filters=4",
                        "--batch_size=8",
                        "--epochs=1",
                        "--verbose=0",
                        "--early_stopping_patience=0",
                    ],  # fmt: skip
                    cwd=_REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = []
        try:
            for process, log in zip(processes, logs):
                process.wait(timeout=_WORKER_TIMEOUT_S)
                log.seek(0)
                outputs.append(log.read())
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            for log in logs:
                log.close()
        for process, output in zip(processes, outputs):
            self.assertEqual(process.returncode, 0, output[-3000:])
        lines = [
            next(line for line in out.splitlines() if line.startswith("weights_sha256=")) for out in outputs
        ]
        digests = [line.split()[0] for line in lines]
        self.assertEqual(digests[0], digests[1])
        self.assertEqual(["chief=True" in lines[0], "chief=True" in lines[1]], [True, False])
        # Exactly one export and one history, the chief's, in the shared run dir.
        exports = glob.glob(os.path.join(self.get_temp_dir(), "**", "saved_model.pb"), recursive=True)
        self.assertEqual(exports, [os.path.join(run_dir, "export", "saved_model.pb")])
        config = json.load(open(os.path.join(run_dir, train_lib.CONFIG_FILE)))
        self.assertEqual(config["num_replicas"], 2)
        # tf.distribute.MultiWorkerMirroredStrategy is an alias of this class.
        self.assertEqual(config["strategy"], "CollectiveAllReduceStrategy")
        self.assertLen(open(os.path.join(run_dir, train_lib.HISTORY_FILE)).read().splitlines(), 2)


class DataServiceTest(tf.test.TestCase):
    def test_training_input_through_the_service_is_the_same_records(self):
        records = os.path.join(self.get_temp_dir(), "records")
        fake_data.write_records(records, image_size=32, split_sizes={"train": 32, "val": 8}, num_shards=2)
        dispatcher = tf.data.experimental.service.DispatchServer(
            tf.data.experimental.service.DispatcherConfig(port=0)
        )
        worker = tf.data.experimental.service.WorkerServer(
            tf.data.experimental.service.WorkerConfig(
                dispatcher_address=dispatcher.target.split("://")[1], port=0
            )
        )
        common = dict(
            records_dir=records, depth=2, base_filters=4, batch_size=8, verbose=0, early_stopping_patience=0
        )
        served = train_lib.TrainConfig(
            run_dir=os.path.join(self.get_temp_dir(), "served"), data_service=dispatcher.target, **common
        )
        direct = train_lib.TrainConfig(run_dir=os.path.join(self.get_temp_dir(), "direct"), **common)
        strategy = train_lib.create_strategy("one_device")

        def one_epoch(config):
            # The first 32 / 8 = 4 batches of the (repeated) training input: one full pass.
            dataset = train_lib.distributed_dataset(config, strategy, "train", training=True)
            seen = []
            for _, (images, labels) in zip(range(4), dataset):
                images = strategy.experimental_local_results(images)[0].numpy()
                labels = strategy.experimental_local_results(labels)[0].numpy()
                seen += [(image.tobytes(), tuple(label)) for image, label in zip(images, labels)]
            return sorted(seen)

        through_service = one_epoch(served)
        self.assertLen(through_service, 32)
        self.assertLen(set(through_service), 32)  # Every record once.
        self.assertEqual(through_service, one_epoch(direct))

        # And fit() trains through it.
        result = train_lib.train(dataclasses.replace(served, epochs=1, steps_per_epoch=1), strategy)
        self.assertTrue(np.isfinite(result.history["loss"][0]))
        self.assertTrue(os.path.exists(os.path.join(result.export_dir, "saved_model.pb")))
        del worker, dispatcher


if __name__ == "__main__":
    tf.test.main()
