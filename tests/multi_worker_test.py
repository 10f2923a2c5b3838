"""Distributed training for real, on loopback only: two MultiWorkerMirroredStrategy worker
processes, and training input read through an in-process tf.data service."""

import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests import fake_data
from trainer import train_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER_TIMEOUT_S = 240


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class MultiWorkerTest(tf.test.TestCase):
    def test_two_workers_train_in_sync_and_only_the_chief_writes(self):
        records = os.path.join(self.get_temp_dir(), "records")
        # Two shards per split: each worker reads its own file.
        fake_data.write_records(records, image_size=32, split_sizes={"train": 32, "val": 8}, num_shards=2)
        run_dir = os.path.join(self.get_temp_dir(), "run")
        workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
        processes = []
        for index in range(2):
            env = dict(os.environ)
            env["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            )
            env["CUDA_VISIBLE_DEVICES"] = ""
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
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = []
        try:
            for process in processes:
                outputs.append(process.communicate(timeout=_WORKER_TIMEOUT_S))
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        for process, (stdout, stderr) in zip(processes, outputs):
            self.assertEqual(process.returncode, 0, stderr[-3000:])
        lines = [
            next(line for line in out.splitlines() if line.startswith("weights_sha256="))
            for out, _ in outputs
        ]
        digests = [line.split()[0] for line in lines]
        self.assertEqual(digests[0], digests[1])
        self.assertEqual(["chief=True" in lines[0], "chief=True" in lines[1]], [True, False])
        # Exactly one export and one history, the chief's, in the shared run dir.
        exports = glob.glob(os.path.join(self.get_temp_dir(), "**", "saved_model.pb"), recursive=True)
        self.assertEqual(exports, [os.path.join(run_dir, "export", "saved_model.pb")])
        config = json.load(open(os.path.join(run_dir, train_lib.CONFIG_FILE)))
        self.assertEqual(config["num_replicas"], 2)
        self.assertEqual(config["strategy"], "MultiWorkerMirroredStrategy")
        self.assertLen(open(os.path.join(run_dir, train_lib.HISTORY_FILE)).read().splitlines(), 2)


class DataServiceTest(tf.test.TestCase):
    def test_training_through_the_service_sees_the_same_records(self):
        records = os.path.join(self.get_temp_dir(), "records")
        # One shard: one read order, so the service worker and direct reading batch alike.
        fake_data.write_records(records, image_size=32, split_sizes={"train": 32, "val": 8}, num_shards=1)
        dispatcher = tf.data.experimental.service.DispatchServer(
            tf.data.experimental.service.DispatcherConfig(port=0)
        )
        worker = tf.data.experimental.service.WorkerServer(
            tf.data.experimental.service.WorkerConfig(
                dispatcher_address=dispatcher.target.split("://")[1], port=0
            )
        )
        # A learning rate of ~0 and no dropout or augmentation: the model stays put, so the
        # epoch's training loss, accuracy and AUC depend only on which records were batched
        # together, not on their order. One epoch = one pass (32 records / batch 8 = 4 steps).
        common = dict(
            records_dir=records, depth=2, base_filters=4, batch_size=8, epochs=1, steps_per_epoch=4,
            lr_start=0.0, lr_max=1e-12, rampup_epochs=0, dropout=0.0, augment=False, verbose=0,
            early_stopping_patience=0,
        )  # fmt: skip
        strategy = train_lib.create_strategy("one_device")
        served = train_lib.train(
            train_lib.TrainConfig(
                run_dir=os.path.join(self.get_temp_dir(), "served"), data_service=dispatcher.target, **common
            ),
            strategy,
        )
        direct = train_lib.train(
            train_lib.TrainConfig(run_dir=os.path.join(self.get_temp_dir(), "direct"), **common), strategy
        )
        # Not binary_accuracy: an untrained model sits at ~0.5, where rounding flips decisions.
        for key in ("loss", "auc"):
            self.assertAllClose(served.history[key], direct.history[key], rtol=1e-4, msg=key)
        self.assertTrue(np.isfinite(served.history["val_loss"][0]))
        del worker, dispatcher


if __name__ == "__main__":
    tf.test.main()
