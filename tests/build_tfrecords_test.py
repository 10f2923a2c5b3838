"""End-to-end tests of the Beam job: every bad input, the manifest, the runners, the entry point.

One pipeline run on a tiny NIH layout holding every kind of bad input is shared by many
assertions (setUpClass), because each DirectRunner start costs seconds.
"""

import dataclasses
import functools
import glob
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from unittest import mock

import numpy as np
import portpicker
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import parameterized

from beam_pipelines import build_tfrecords, images, job, splits, transforms
from cxr_cli import errors, launch
from tests import fake_data
from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib

_SIZE = 16
_IN_MEMORY = ["--direct_running_mode=in_memory"]
# Four grey levels survive every PNG mode exactly, the palette mode P included.
_PIXELS = (np.add.outer(np.arange(32), np.arange(32)) // 16 % 4 * 80).astype(np.uint8)


def _read_records(records_dir: str) -> dict[str, list[dict]]:
    manifest = manifest_lib.read_manifest(records_dir, verify_checksums=True)
    out = {}
    for split in manifest.splits:
        records = []
        for path in manifest_lib.shard_paths(records_dir, manifest, split):
            for serialized in tf.data.TFRecordDataset(path):
                features = codec.parse_example(serialized)
                image = codec.decode_image(
                    features, image_size=manifest.image_size, image_format=manifest.image_format
                )
                records.append(
                    {
                        "image_index": features["image_index"].numpy().decode(),
                        "patient_id": int(features["patient_id"]),
                        "age": int(features["age"]),
                        "labels": features["labels"].numpy(),
                        "image": image.numpy()[..., 0],
                    }
                )
        out[split] = records
    return out


def _read_rejects(records_dir: str) -> list[dict]:
    with open(os.path.join(records_dir, manifest_lib.REJECTS_NAME)) as f:
        return [json.loads(line) for line in f]


def _bad_input_layout(root: str) -> dict:
    """A tiny NIH layout with one input of every kind; returns what the job should make of it."""
    png = fake_data.png_bytes(_PIXELS)
    truncated = png[: len(png) // 2]
    images = {
        "00000001_000.png": png,
        "00000001_001.png": fake_data.png_bytes(_PIXELS, mode="RGBA"),
        "00000002_000.png": fake_data.png_bytes(_PIXELS, mode="I;16"),
        "00000003_000.png": fake_data.png_bytes(_PIXELS, mode="P"),
        "00000004_000.png": fake_data.png_bytes(_PIXELS, mode="LA"),
        # Elsewhere under data_dir: images are found by file name.
        "images_002/images/00000005_000.png": fake_data.png_bytes(_PIXELS, mode="RGB"),
        "00000006_000.png": b"\x89PNG\r\n\x1a\n" + os.urandom(200),  # Corrupt.
        "00000007_000.png": truncated,
        "00000008_000.png": b"",
        "00000009_000.png": b"this is not an image",
        "00000011_000.png": png,  # Its row names an unknown label.
        "00000012_000.png": png,  # Its row is malformed.
        "99999999_000.png": png,  # No row lists it.
    }
    row = fake_data.nih_row
    rows = [
        row("00000001_000.png", "Effusion|Mass", patient_id=1, age="058Y"),  # line 2
        row("00000001_001.png", "No Finding", follow_up=1, patient_id=1, age="011M"),  # line 3
        row("00000002_000.png", "Hernia", patient_id=2, age="001D"),  # line 4
        row("00000003_000.png", "Pneumonia", patient_id=3, sex="F"),  # line 5
        row("00000004_000.png", "Cardiomegaly", patient_id=4, view="AP"),  # line 6
        row("00000005_000.png", "Nodule", patient_id=5),  # line 7
        row("00000006_000.png", "Mass", patient_id=6),  # line 8
        row("00000007_000.png", "Mass", patient_id=7),  # line 9
        row("00000008_000.png", "Mass", patient_id=8),  # line 10
        row("00000009_000.png", "Mass", patient_id=9),  # line 11
        row("00000010_000.png", "Mass", patient_id=10),  # line 12: no file
        row("00000011_000.png", "Infiltrate", patient_id=11),  # line 13
        row("00000012_000.png", "Mass", patient_id=12, age="old"),  # line 14
        row("00000001_000.png", "Atelectasis", patient_id=1),  # line 15: duplicate
    ]
    names = sorted({line.split(",")[0] for line in rows})
    test = ["00000003_000.png", "00000004_000.png"]
    fake_data.write_nih_layout(root, rows, images, train_val=[n for n in names if n not in test], test=test)
    return {
        "rows": len(rows),
        "written": {
            "00000001_000.png",
            "00000001_001.png",
            "00000002_000.png",
            "00000003_000.png",
            "00000004_000.png",
            "00000005_000.png",
        },
        "test": {"00000003_000.png", "00000004_000.png"},
        "rejects": {
            ("bad_image", "00000006_000.png", 8),
            ("bad_image", "00000007_000.png", 9),
            ("bad_image", "00000008_000.png", 10),
            ("bad_image", "00000009_000.png", 11),
            ("missing_image", "00000010_000.png", 12),
            ("unknown_label", "00000011_000.png", 13),
            ("bad_row", "00000012_000.png", 14),
            ("duplicate", "00000001_000.png", 15),
        },
    }


class BadInputJobTest(parameterized.TestCase, tf.test.TestCase):
    """One in-memory run over every kind of bad input; then the same input on 2 processes."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.temp = tf.compat.v1.test.get_temp_dir() + "/bad_input_job"
        cls.data_dir = cls.temp + "/data"
        cls.expected = _bad_input_layout(cls.data_dir)
        cls.config = job.JobConfig(
            data_dir=cls.data_dir, output_dir=cls.temp + "/in_memory", image_size=_SIZE
        )
        cls.result = job.run_job(cls.config, _IN_MEMORY)
        cls.records = _read_records(cls.config.output_dir)

    def test_writes_the_good_images_and_rejects_the_rest(self):
        written = [r["image_index"] for records in self.records.values() for r in records]
        self.assertCountEqual(written, self.expected["written"])
        self.assertEqual({r["image_index"] for r in self.records["test"]}, self.expected["test"])
        rejects = {(r["reason"], r["image_index"], r["line"]) for r in _read_rejects(self.config.output_dir)}
        self.assertEqual(rejects, self.expected["rejects"])

    def test_manifest_accounts_for_every_row(self):
        manifest = self.result.manifest
        self.assertEqual(manifest.input_rows, self.expected["rows"])
        self.assertEqual(manifest.records_written + manifest.records_rejected, manifest.input_rows)
        self.assertEqual(manifest.unlisted_images, 1)
        self.assertEqual(
            dict(manifest.rejects),
            {"bad_image": 4, "missing_image": 1, "unknown_label": 1, "bad_row": 1, "duplicate": 1},
        )
        self.assertEqual((manifest.image_size, manifest.image_format), (_SIZE, "raw"))
        self.assertEqual(manifest.options["split"], "official")
        train_val = manifest.splits["train"].records + manifest.splits["val"].records
        self.assertEqual(train_val, 4)
        self.assertEqual(manifest.splits["test"].patients, 2)
        self.assertEqual(
            manifest.label_counts("test"), list(schema.labels_to_multi_hot("Pneumonia|Cardiomegaly"))
        )

    def test_reject_details_name_the_problem(self):
        details = {r["image_index"]: r["detail"] for r in _read_rejects(self.config.output_dir)}
        self.assertIn("empty file", details["00000008_000.png"])
        self.assertIn("UnidentifiedImageError", details["00000009_000.png"])
        self.assertIn("line 14", details["00000012_000.png"])
        self.assertIn("'Infiltrate'", details["00000011_000.png"])
        self.assertIn("no file named 00000010_000.png", details["00000010_000.png"])

    def test_pixels_and_metadata(self):
        expected = images.resize_area(_PIXELS, _SIZE)
        by_name = {r["image_index"]: r for records in self.records.values() for r in records}
        for name, record in by_name.items():
            self.assertAllEqual(record["image"], expected, msg=name)  # Every PNG mode, same grey.
        self.assertEqual(by_name["00000001_000.png"]["age"], 58)
        self.assertEqual(by_name["00000001_001.png"]["age"], 0)  # 011M
        self.assertAllEqual(
            by_name["00000001_000.png"]["labels"], schema.labels_to_multi_hot("Effusion|Mass")
        )

    def test_patients_stay_in_one_split(self):
        split_of = {}
        for split, records in self.records.items():
            for record in records:
                self.assertEqual(split_of.setdefault(record["patient_id"], split), split)

    def test_beam_counters(self):
        counters = self.result.counters
        self.assertEqual(counters["records_written"], 6)
        self.assertEqual(counters["rows_read"], self.expected["rows"])
        self.assertEqual(counters["rejected_bad_image"], 4)
        self.assertEqual(counters["unlisted_images"], 1)

    def test_multi_processing_writes_the_same_records(self):
        config = job.JobConfig(data_dir=self.data_dir, output_dir=self.temp + "/multi", image_size=_SIZE)
        result = job.run_job(config, ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
        self.assertEqual(result.manifest.splits, self.result.manifest.splits)  # Same shards, same sha256.
        self.assertEqual(_read_rejects(config.output_dir), _read_rejects(self.config.output_dir))
        self.assertEqual(result.counters, self.result.counters)


class DemoDataJobTest(tf.test.TestCase):
    """The job on tiny demo data, then re-runs into the same directory."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        from demo_data import writer as demo_data

        cls.temp = tf.compat.v1.test.get_temp_dir() + "/demo_job"
        cls.data_dir = cls.temp + "/demo"
        demo_data.generate(cls.data_dir, num_images=40, image_size=64, seed=0)

    def _config(self, output_dir, **kwargs):
        return job.JobConfig(data_dir=self.data_dir, output_dir=output_dir, image_size=32, **kwargs)

    def test_converts_reads_back_and_overwrites(self):
        output_dir = self.temp + "/records"
        first = job.run_job(
            self._config(output_dir, num_shards=2, split=splits.SplitConfig(mode="patient")), _IN_MEMORY
        )
        self.assertEqual(first.manifest.input_rows, 40)
        self.assertEqual(first.manifest.records_written, 40)
        records = _read_records(output_dir)
        self.assertEqual(sum(len(r) for r in records.values()), 40)
        self.assertLen(first.manifest.splits["train"].shards, 2)
        for split, split_records in records.items():
            for record in split_records:
                self.assertEqual(splits.patient_split(record["patient_id"]), split)
                self.assertEqual(record["image"].shape, (32, 32))

        with self.assertRaisesRegex(job.InputError, "is not empty.*--overwrite"):
            job.run_job(self._config(output_dir), _IN_MEMORY)

        second = job.run_job(self._config(output_dir, overwrite=True, max_images=10), _IN_MEMORY)
        # The old two-shard output is gone: read_manifest refuses unlisted shards beside it.
        manifest = manifest_lib.read_manifest(output_dir, verify_checksums=True)
        self.assertEqual(manifest, second.manifest)
        self.assertEqual(
            (manifest.input_rows, manifest.records_written, manifest.unlisted_images), (10, 10, 0)
        )
        self.assertLen(manifest.splits["train"].shards, 1)
        self.assertEqual(job.staged_dirs(output_dir), [])

    def test_a_crashed_run_leaves_no_manifest(self):
        output_dir = self.temp + "/crashed"

        def explode(*args, **kwargs):
            raise RuntimeError("disk full")

        with mock.patch.object(transforms.MergeShardFn, "process", explode):
            with self.assertRaisesRegex(Exception, "disk full"):
                job.run_job(self._config(output_dir), _IN_MEMORY)
        self.assertFalse(os.path.exists(os.path.join(output_dir, manifest_lib.MANIFEST_NAME)))
        with self.assertRaisesRegex(manifest_lib.ManifestError, "has no manifest.json"):
            manifest_lib.read_manifest(output_dir)
        # The re-run with --overwrite clears the crashed run's staging directory.
        job.run_job(self._config(output_dir, overwrite=True, max_images=4), _IN_MEMORY)
        self.assertEqual(job.staged_dirs(output_dir), [])
        self.assertEqual(manifest_lib.read_manifest(output_dir).records_written, 4)


class BeforePipelineErrorsTest(parameterized.TestCase, tf.test.TestCase):
    def _layout(self, name, rows=None, images=None, **kwargs):
        rows = rows if rows is not None else [fake_data.nih_row("00000001_000.png", "Mass")]
        images = images if images is not None else {"00000001_000.png": fake_data.png_bytes(_PIXELS)}
        kwargs.setdefault("train_val", ["00000001_000.png"])
        kwargs.setdefault("test", [])
        return fake_data.write_nih_layout(os.path.join(self.get_temp_dir(), name), rows, images, **kwargs)

    def _prepare(self, data_dir, **kwargs):
        kwargs.setdefault(
            "output_dir", os.path.join(self.get_temp_dir(), "out-" + os.path.basename(data_dir))
        )
        return job.prepare_inputs(job.JobConfig(data_dir=data_dir, **kwargs))

    def test_good_layout_passes(self):
        inputs = self._prepare(self._layout("good"))
        self.assertEqual((inputs.expected_rows, inputs.expected_images), (1, 1))
        self.assertTrue(inputs.source.tables["labels_csv"].endswith("Data_Entry_2017.csv"))

    def test_missing_data_dir(self):
        with self.assertRaisesRegex(job.InputError, r"--data_dir '.*/nowhere' does not exist"):
            self._prepare(os.path.join(self.get_temp_dir(), "nowhere"))

    def test_missing_csv(self):
        data_dir = self._layout("no_csv", csv_name="other.csv")
        with self.assertRaisesRegex(job.InputError, "No labels CSV.*pass --labels_csv"):
            self._prepare(data_dir)
        with self.assertRaisesRegex(job.InputError, "--labels_csv '.*missing.csv' does not exist"):
            self._prepare(data_dir, labels_csv=os.path.join(data_dir, "missing.csv"))

    def test_empty_csv(self):
        data_dir = self._layout("empty_csv")
        open(os.path.join(data_dir, "Data_Entry_2017.csv"), "w").close()
        with self.assertRaisesRegex(job.InputError, "Data_Entry_2017.csv' is empty"):
            self._prepare(data_dir)

    def test_header_only_csv(self):
        with self.assertRaisesRegex(job.InputError, "has a header but no data rows"):
            self._prepare(self._layout("header_only", rows=[], train_val=[]))

    def test_missing_columns(self):
        data_dir = self._layout("columns", header=fake_data.NIH_2017_HEADER.replace("Patient Age", "Age"))
        with self.assertRaisesRegex(job.InputError, r"lacks required column\(s\) \['Patient Age'\]"):
            self._prepare(data_dir)

    def test_list_naming_images_not_in_csv(self):
        data_dir = self._layout("lists", test=["00000042_000.png"])
        with self.assertRaisesRegex(job.InputError, r"test_list.txt' names 1 image\(s\).*00000042_000.png"):
            self._prepare(data_dir)

    def test_official_split_needs_the_lists(self):
        data_dir = self._layout("no_lists", train_val=None, test=None)
        with self.assertRaisesRegex(job.InputError, "--split=official needs train_val_list.txt"):
            self._prepare(data_dir)
        self.assertEqual(self._prepare(data_dir, split=splits.SplitConfig(mode="patient")).expected_rows, 1)

    def test_no_images(self):
        with self.assertRaisesRegex(job.InputError, "No .png images anywhere under --data_dir"):
            self._prepare(self._layout("no_images", images={}))

    def test_non_empty_output_dir_without_overwrite(self):
        output_dir = os.path.join(self.get_temp_dir(), "full")
        os.makedirs(os.path.join(output_dir, "sub"))
        open(os.path.join(output_dir, "sub", "x.txt"), "w").close()
        with self.assertRaisesRegex(job.InputError, "--output_dir '.*full' is not empty.*--overwrite"):
            self._prepare(self._layout("ok"), output_dir=output_dir)
        self._prepare(self._layout("ok2"), output_dir=output_dir, overwrite=True)

    def test_unfinished_run_in_output_dir_is_named(self):
        # What a crashed job leaves: staged shards, and old shards without their manifest.
        output_dir = os.path.join(self.get_temp_dir(), "crashed_records")
        os.makedirs(os.path.join(output_dir, "_staging-20261126-0000-ab12", "_progress"))
        for name in ("_staging-20261126-0000-ab12/train-00000-of-00001.tfrecord", "val-00000-of-00002.tfrecord",
                     "val-00001-of-00002.tfrecord", "rejects.jsonl", "notes.txt"):  # fmt: skip
            open(os.path.join(output_dir, name), "w").close()
        with self.assertRaisesRegex(
            job.InputError,
            r"--output_dir '.*crashed_records' is not empty: it holds an unfinished run \(no manifest.json.*\)\. "
            r"--overwrite will remove: 2 shard\(s\), rejects.jsonl, staging dir\(s\) _staging-20261126-0000-ab12 "
            r"and keep the 1 other entries \(e.g. 'notes.txt'\)\.",
        ):
            self._prepare(self._layout("crashed"), output_dir=output_dir)

    @parameterized.parameters(
        (dict(image_size=0), "image_size must be in"),
        (dict(image_format="jpeg"), "image_format must be one of"),
        (dict(num_shards=-1), "num_shards must be >= 0"),
        (dict(max_images=-5), "max_images must be >= 0"),
        (dict(data_dir=""), "data_dir must be set"),
    )
    def test_bad_config_values(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            job.JobConfig(**{"data_dir": "data/demo", **kwargs})


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode} before serving port {port}.")
        with socket.socket() as probe:
            if probe.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{process.args} did not serve port {port} within {timeout_s} s.")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class PortableRunnerTest(tf.test.TestCase):
    """The path Flink and Spark take: Beam's job API with an external SDK worker pool.

    One local job service and one worker-pool process on localhost, not a cluster.
    """

    def _start(self, module: str, port_flag: str) -> int:
        port = portpicker.pick_unused_port()
        # The worker pool starts its SDK workers as `python` from PATH: this environment's first.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        log = open(os.path.join(self.get_temp_dir(), f"{module.rsplit('.', 1)[-1]}.log"), "w")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            [sys.executable, "-m", module, f"{port_flag}={port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PATH=path),
        )
        self.addCleanup(_stop, process)  # Also when the test fails.
        _wait_for_port(port, process)
        return port

    @pytest.mark.slow
    def test_portable_runner_writes_the_direct_runners_bytes(self):
        temp = self.get_temp_dir() + "/portable"
        data_dir = temp + "/data"
        expected = _bad_input_layout(data_dir)
        job_port = self._start("apache_beam.runners.portability.local_job_service_main", "--job_port")
        worker_port = self._start("apache_beam.runners.worker.worker_pool_main", "--service_port")

        def config(name):
            return job.JobConfig(data_dir=data_dir, output_dir=f"{temp}/{name}", image_size=_SIZE)

        direct = job.run_job(config("direct"), ["--direct_num_workers=2"])
        portable = job.run_job(
            config("portable"),
            [
                "--runner=PortableRunner",
                f"--job_endpoint=localhost:{job_port}",
                "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{worker_port}",
                # The job's state stream carries this deadline (default 300 s) for the whole run.
                "--job_server_timeout=3600",
            ],
        )
        self.assertEqual(portable.manifest.records_written, len(expected["written"]))
        self.assertEqual(portable.manifest.splits, direct.manifest.splits)  # Same shards and sha256.
        for split in direct.manifest.splits.values():
            for shard in split.shards:
                with (
                    open(f"{temp}/direct/{shard.name}", "rb") as a,
                    open(f"{temp}/portable/{shard.name}", "rb") as b,
                ):
                    self.assertEqual(a.read(), b.read())
        self.assertEqual(_read_rejects(f"{temp}/portable"), _read_rejects(f"{temp}/direct"))
        self.assertEqual(portable.counters["records_written"], len(expected["written"]))
        self.assertEqual(portable.counters, direct.counters)


class ProgressTest(tf.test.TestCase):
    def test_monitor_sums_the_workers_files(self):
        progress_dir = self.get_temp_dir() + "/progress"
        os.makedirs(progress_dir)
        for name, done in (("a", 7), ("b", 5)):
            with open(os.path.join(progress_dir, name + ".json"), "w") as f:
                json.dump({"done": done}, f)
        with open(os.path.join(progress_dir, "c.json"), "w") as f:
            f.write("{")  # Being rewritten: skipped this time.
        self.assertEqual(job._ProgressMonitor(progress_dir, total=20, interval_s=1.0).done(), 12)
        self.assertEqual(job._format_seconds(3725), "1:02:05")

    def test_monitor_stops_and_joins(self):
        progress_dir = self.get_temp_dir() + "/stopped"
        os.makedirs(progress_dir)
        monitor = job._ProgressMonitor(progress_dir, total=20, interval_s=0.01)
        monitor.start()
        self.assertTrue(monitor.is_alive())
        monitor.stop()  # Joins: no progress line can follow the summary.
        self.assertFalse(monitor.is_alive())
        monitor.stop()  # Idempotent.


class EntryPointTest(parameterized.TestCase, tf.test.TestCase):
    def _parse(self, argv: list[str]):
        """The binary's flags on a fresh FlagValues, parsed as `run` parses them: (holders, argv left)."""
        flag_values = flags.FlagValues()
        holders = build_tfrecords.define_flags(flag_values)
        return holders, launch.parse_own_flags(flag_values, argv)

    def _main(self, *args: str) -> None:
        """Runs `main` as `run` does: expected errors end with one line naming the command."""
        holders, argv = self._parse(["build_tfrecords", *args])
        main = errors.exit_on_expected_errors(
            functools.partial(build_tfrecords.main, holders=holders), program="cxr-build-tfrecords"
        )
        main(argv)

    @parameterized.parameters(
        ("--image_size=0", "image_size must be in .* got 0"),
        ("--split_fractions=60,10", "--split_fractions must be three"),
        ("--val_fraction=2.0", "val_fraction must be in"),
        ("--data_dir=/nonexistent/nih", "--data_dir '/nonexistent/nih' does not exist"),
    )
    def test_bad_flags_stop_with_a_message(self, flag, message):
        stderr = io.StringIO()
        with mock.patch.object(sys, "stderr", stderr), self.assertRaises(SystemExit) as exit_info:
            self._main(flag)
        self.assertEqual(exit_info.exception.code, 1)
        self.assertRegex(stderr.getvalue(), "^cxr-build-tfrecords: error: " + message)
        self.assertEqual(len(stderr.getvalue().splitlines()), 1)

    def test_main_leaves_logging_levels_as_it_found_them(self):
        root, beam_logger = logging.getLogger(), logging.getLogger("apache_beam")
        before = (root.level, beam_logger.level)
        with mock.patch.object(sys, "stderr", io.StringIO()), self.assertRaises(SystemExit):
            self._main("--data_dir=/nonexistent/nih")
        self.assertEqual((root.level, beam_logger.level), before)

    def test_flags_come_from_the_config_and_beams_are_left(self):
        (job_holders, _), argv = self._parse(
            ["prog", "--image_size=64", "--progress_interval_s=5", "--runner=DataflowRunner", "--project=p"]
        )
        self.assertEqual(argv, ["prog", "--runner=DataflowRunner", "--project=p"])
        self.assertEqual(job_holders["image_size"].value, 64)
        self.assertEqual(job_holders["progress_interval_s"].value, 5.0)
        fields = {f.name for f in dataclasses.fields(job.JobConfig)} - {"split"}
        self.assertEqual(set(job_holders), fields)

    def test_both_binaries_import_in_one_process(self):
        # The trainer also has an --overwrite flag; importing both must not clash.
        code = "import beam_pipelines.build_tfrecords, trainer.train; print('ok')"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        self.assertEqual(result.stdout.strip(), "ok", result.stderr[-2000:])

    def test_pipeline_options_pass_through_untouched(self):
        args = [
            "--runner=DataflowRunner",
            "--project=my-project",
            "--region=us-central1",
            "--temp_location=gs://bucket/tmp",
            "--setup_file=./setup.py",
            "--num_workers=8",
        ]
        options = job.pipeline_options(args).get_all_options(drop_default=True)
        self.assertEqual(options["runner"], "DataflowRunner")
        self.assertEqual(options["project"], "my-project")
        self.assertEqual(options["temp_location"], "gs://bucket/tmp")
        self.assertEqual(options["setup_file"], "./setup.py")
        self.assertEqual(options["num_workers"], 8)
        self.assertNotIn("direct_running_mode", options)

    def test_default_is_multi_processing_on_all_cores_unless_set(self):
        options = job.pipeline_options([]).get_all_options()
        self.assertEqual(
            (options["runner"], options["direct_running_mode"], options["direct_num_workers"]),
            (job.DEFAULT_RUNNER, "multi_processing", 0),
        )
        options = job.pipeline_options(["--direct_num_workers=3"]).get_all_options()
        self.assertEqual(
            (options["direct_running_mode"], options["direct_num_workers"]), ("multi_processing", 3)
        )
        options = job.pipeline_options(["--direct_running_mode=in_memory"]).get_all_options()
        self.assertEqual(options["direct_running_mode"], "in_memory")

    def test_setup_py_works_as_dataflow_setup_file(self):
        # Dataflow's stager runs `python setup.py sdist` on --setup_file and installs the result.
        # Built from a copy of the tree: sdist writes *.egg-info next to setup.py.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        before = sorted(os.listdir(root))
        source, dist = self.get_temp_dir() + "/source", self.get_temp_dir() + "/dist"
        shutil.copytree(
            root,
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".venv*", "data", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
            ),
        )
        subprocess.run(
            [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", dist],
            cwd=source,
            check=True,
            capture_output=True,
        )
        (tarball,) = glob.glob(dist + "/*.tar.gz")
        with tarfile.open(tarball) as tar:
            names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        for module in (
            "beam_pipelines/transforms.py",
            "beam_pipelines/datasets/nih.py",
            "beam_pipelines/images.py",
            "tfrecords/codec.py",
        ):
            self.assertIn(module, names)
        self.assertEqual(sorted(os.listdir(root)), before)


if __name__ == "__main__":
    tf.test.main()
