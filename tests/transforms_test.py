"""Tests of beam_pipelines/transforms.py: the pure helpers, and each stage on in-memory input."""

import collections
import json
import os
import pickle
import zlib

import apache_beam as beam
import tensorflow as tf
from absl.testing import parameterized
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from beam_pipelines import images as images_lib
from beam_pipelines import splits, transforms
from beam_pipelines.datasets import base, nih
from tests import fake_data
from tfrecords import codec, schema
from tfrecords import manifest as manifest_lib


def _pipeline() -> TestPipeline:
    # FnApiRunner: the DirectRunner's batch engine, without its first attempt (Prism), which
    # downloads a binary at run time.
    return TestPipeline(runner="FnApiRunner")


def _row(name: str, line: int, *, patient_id: int = 1, labels: str = "Mass") -> nih.ParsedRow:
    return nih.ParsedRow(
        line=line,
        image_index=name,
        multi_hot=tuple(int(v) for v in schema.labels_to_multi_hot(labels)),
        patient_id=patient_id,
        follow_up=0,
        age=40,
        sex="F",
        view_position="PA",
    )


class PureFunctionsTest(parameterized.TestCase, tf.test.TestCase):
    def test_automatic_shards_hold_100_to_200_mb(self):
        record = codec.estimated_record_bytes(256, "raw")
        for count in (1600, 3100, 9000, 78000):
            (plan,) = transforms.plan_shards({"train": count}, image_size=256, image_format="raw").values()
            shard_mb = count * record / plan.num_shards / 1e6
            self.assertLessEqual(shard_mb, 200.0)
            self.assertGreater(shard_mb, 100.0)

    def test_nih_sized_splits_are_written_one_shard_per_work_unit(self):
        # NIH's official split at 256x256 raw: every shard is one chunk (nothing merged at the
        # end), 100-200 MB, and there are at least MIN_WORK_UNITS of them.
        counts = {"train": 77_872, "val": 8_652, "test": 25_596}
        plans = transforms.plan_shards(counts, image_size=256, image_format="raw")
        record = codec.estimated_record_bytes(256, "raw")
        self.assertEqual({plan.chunks_per_shard for plan in plans.values()}, {1})
        self.assertGreaterEqual(sum(plan.num_shards for plan in plans.values()), transforms.MIN_WORK_UNITS)
        for split, plan in plans.items():
            self.assertBetween(counts[split] * record / plan.num_shards / 1e6, 100.0, 200.0)

    def test_small_splits_get_one_shard_and_empty_splits_none(self):
        plans = transforms.plan_shards(
            {"train": 30, "val": 0, "test": 5}, image_size=64, image_format="png", min_work_units=1
        )
        self.assertEqual(plans, {"train": transforms.ShardPlan(1, 1), "test": transforms.ShardPlan(1, 1)})

    def test_small_runs_are_cut_into_enough_work_units(self):
        plans = transforms.plan_shards(
            {"train": 1400, "val": 200, "test": 400}, image_size=256, image_format="raw", min_work_units=64
        )
        # 64 units shared by rows: train ceil(64 * 0.7) = 45, val 7, test 13 (one shard each).
        self.assertEqual(
            {k: p.chunks_per_shard for k, p in plans.items()}, {"train": 45, "val": 7, "test": 13}
        )
        # Never more units than images.
        (plan,) = transforms.plan_shards({"test": 3}, image_size=256, image_format="raw").values()
        self.assertEqual(plan.chunks_per_shard, 3)

    def test_num_shards_flag_and_chunks(self):
        plans = transforms.plan_shards(
            {"train": 1000}, image_size=64, image_format="raw", num_shards=4, chunk_size=100, min_work_units=1
        )
        # 1000 rows / 4 shards = 250 per shard = 3 chunks of at most 100.
        self.assertEqual(plans["train"], transforms.ShardPlan(4, 3))

    def test_shard_and_chunk_are_stable_and_spread(self):
        plan = transforms.ShardPlan(num_shards=4, chunks_per_shard=3)
        names = [f"{i:08d}_000.png" for i in range(4000)]
        keys = [transforms.shard_and_chunk(name, plan) for name in names]
        self.assertEqual(keys, [transforms.shard_and_chunk(name, plan) for name in names])
        counts = collections.Counter(keys)
        self.assertLen(counts, 12)
        # 4000 / 12 = 333 per key, binomial std ~18: within 20% everywhere.
        self.assertBetween(min(counts.values()), 266, 400)
        self.assertBetween(max(counts.values()), 266, 400)

    def test_resolve_keeps_the_first_row_and_reports_the_rest(self):
        config = splits.SplitConfig(mode="patient")
        rows = [(_row("a.png", 9), None), (_row("a.png", 4), None)]
        task, rejects = transforms.resolve_image("a.png", rows, ["/d/2/a.png", "/d/1/a.png"], config)
        self.assertEqual(task.row.line, 4)
        self.assertEqual(task.path, "/d/1/a.png")
        self.assertEqual([(r.reason, r.line) for r in rejects], [(nih.DUPLICATE, 9)])
        self.assertIn("line 4 is kept", rejects[0].detail)

    def test_resolve_missing_image_and_unlisted_row(self):
        config = splits.SplitConfig(mode="official")
        task, rejects = transforms.resolve_image("a.png", [(_row("a.png", 2), "test")], [], config)
        self.assertIsNone(task)
        self.assertEqual([(r.reason, r.line) for r in rejects], [(nih.MISSING_IMAGE, 2)])
        task, rejects = transforms.resolve_image("b.png", [(_row("b.png", 3), None)], ["/d/b.png"], config)
        self.assertIsNone(task)
        self.assertEqual([r.reason for r in rejects], [nih.NOT_IN_SPLIT_LISTS])


class PlanWorkTest(tf.test.TestCase):
    def test_parse_rows_rejects_and_limit(self):
        root = fake_data.write_nih_layout(
            self.get_temp_dir() + "/parse",
            [
                fake_data.nih_row("00000001_000.png", "Mass", patient_id=1),
                fake_data.nih_row("00000002_000.png", "Infiltrate", patient_id=2),
                fake_data.nih_row("00000003_000.png", "Mass", patient_id=3, age="abc"),
                fake_data.nih_row("00000004_000.png", "No Finding", patient_id=4),
            ],
            {},
            train_val=["00000001_000.png", "00000002_000.png", "00000003_000.png"],
            test=["00000004_000.png"],
        )
        membership = nih.read_membership(
            {
                splits.TRAIN_VAL_LIST: os.path.join(root, "train_val_list.txt"),
                splits.TEST_LIST: os.path.join(root, "test_list.txt"),
            }
        )
        self.assertEqual(membership["00000004_000.png"], splits.TEST_LIST)
        adapter = nih.Adapter()
        source = base.Source(
            data_dir=root,
            tables={
                "labels_csv": os.path.join(root, "Data_Entry_2017.csv"),
                "train_val_list": os.path.join(root, "train_val_list.txt"),
                "test_list": os.path.join(root, "test_list.txt"),
            },
            expected_rows=4,
            expected_images=0,
            description="csv",
            has_published_split=True,
        )
        parsed, rejects, accounted, input_rows = transforms.parse_rows(
            adapter, adapter.read_rows(source), max_images=3
        )
        self.assertEqual(
            [(row.image_index, row.line, official) for row, official in parsed],
            [("00000001_000.png", 2, "train_val")],
        )
        self.assertEqual(
            [(r.reason, r.line, r.image_index) for r in rejects],
            [("unknown_label", 3, "00000002_000.png"), ("bad_row", 4, "00000003_000.png")],
        )
        self.assertEqual(accounted, {"00000002_000.png", "00000003_000.png", "00000004_000.png"})
        self.assertEqual(input_rows, 3)

    def test_plan_work_joins_rows_and_files(self):
        rows = [(_row(f"0000000{i}_000.png", i + 1, patient_id=i), None) for i in range(1, 6)]
        rows.append((_row("00000001_000.png", 9, patient_id=1), None))  # A duplicate row.
        files = {f"0000000{i}_000.png": [f"/d/0000000{i}_000.png"] for i in (1, 2, 3, 4)}
        files["00000008_000.png"] = ["/d/00000008_000.png"]  # Rejected row: accounted, not unlisted.
        files["00000009_000.png"] = ["/d/00000009_000.png"]  # In no row: unlisted.
        plan = transforms.plan_work(
            rows,
            files,
            {"00000008_000.png"},
            splits.SplitConfig(mode="patient", fractions=(1.0, 0.0, 0.0)),
            image_size=16,
            image_format="raw",
            chunk_size=2,
        )
        self.assertEqual(
            sorted((r.reason, r.image_index, r.line) for r in plan.rejects),
            [("duplicate", "00000001_000.png", 9), ("missing_image", "00000005_000.png", 6)],
        )
        self.assertEqual(plan.unlisted, ("00000009_000.png",))
        self.assertEqual(set(plan.plans), {"train"})
        tasks = [task for unit in plan.units for task in unit.tasks]
        self.assertCountEqual(
            [t.row.image_index for t in tasks], [f"0000000{i}_000.png" for i in (1, 2, 3, 4)]
        )
        for unit in plan.units:
            names = [task.row.image_index for task in unit.tasks]
            self.assertEqual(names, sorted(names))
            for name in names:
                self.assertEqual(transforms.shard_and_chunk(name, unit.plan), (unit.shard, unit.chunk))

    def test_image_files_lists_every_path_of_a_name(self):
        root = self.get_temp_dir() + "/listed"
        for folder, name in [("a", "x.png"), ("b", "x.png"), ("b", "y.PNG"), ("b", "notes.txt")]:
            os.makedirs(os.path.join(root, folder), exist_ok=True)
            with open(os.path.join(root, folder, name), "wb") as f:
                f.write(b"-")
        files = nih.list_images(root)
        self.assertCountEqual(files, ["x.png", "y.PNG"])
        self.assertLen(files, 2)
        self.assertCountEqual(
            files["x.png"], [os.path.join(root, "a", "x.png"), os.path.join(root, "b", "x.png")]
        )
        self.assertEqual(files["y.PNG"], (os.path.join(root, "b", "y.PNG"),))
        self.assertNotIn("notes.txt", files)
        self.assertEqual(files.get("z.png", ()), ())

    def test_work_units_travel_as_bytes(self):
        task = transforms.ImageTask(
            row=_row("00000001_000.png", 2), path="/d/00000001_000.png", split="train"
        )
        unit = transforms.WorkUnit("train", 3, 1, transforms.ShardPlan(4, 2), (task,))
        encoded = unit.encode()
        self.assertIsInstance(encoded, bytes)
        self.assertEqual(transforms.WorkUnit.decode(encoded), unit)
        with self.assertRaisesRegex(TypeError, "expected an encoded WorkUnit, got ImageTask"):
            transforms.WorkUnit.decode(zlib.compress(pickle.dumps(task)))

    def test_plan_work_transform_emits_every_output(self):
        root = fake_data.write_nih_layout(
            self.get_temp_dir() + "/plan",
            [fake_data.nih_row("00000001_000.png", "Mass", patient_id=1), "bad,row"],
            {"00000001_000.png": b"x", "00000007_000.png": b"y"},
        )
        adapter = nih.Adapter()
        source = adapter.prepare(root, max_images=0, split_mode="patient")
        with _pipeline() as p:
            planned = (
                p
                | beam.Create(["trigger"])
                | transforms.PlanWork(
                    adapter=adapter,
                    source=source,
                    split_config=splits.SplitConfig(mode="patient", fractions=(1.0, 0.0, 0.0)),
                    plan_args=dict(image_size=16, image_format="raw"),
                )
            )
            names = planned["units"] | "Names" >> beam.FlatMap(
                lambda u: [t.row.image_index for t in transforms.WorkUnit.decode(u).tasks]
            )
            assert_that(names, equal_to(["00000001_000.png"]), label="Units")
            assert_that(planned["unlisted"], equal_to(["00000007_000.png"]), label="Unlisted")
            assert_that(planned["input_rows"], equal_to([2]), label="Rows")
            reasons = planned["rejects"] | "Reasons" >> beam.Map(lambda r: (r.reason, r.line))
            assert_that(reasons, equal_to([("bad_row", 3)]), label="Rejects")


def _sha256(directory: str, name: str) -> str:
    return manifest_lib.sha256_file(os.path.join(directory, name))


def _six_hashed_shards_of_six_records(actual):
    names = sorted(name for name, _, _ in actual)
    if names != [f"train-0000{i}-of-00006.tfrecord" for i in range(6)]:
        raise BeamAssertException(f"expected the 6 shards, got {names}")
    if sum(records for _, records, _ in actual) != 6 or not all(ok for _, _, ok in actual):
        raise BeamAssertException(f"expected 6 records in shards whose sha256 matches, got {actual}")


def _units(plan_args, rows, data_dir):
    files = nih.list_images(data_dir)
    return transforms.plan_work(
        rows, files, set(), splits.SplitConfig(mode="patient", fractions=(1.0, 0.0, 0.0)), **plan_args
    )


class ConvertTest(tf.test.TestCase):
    def test_convert_streams_chunks_into_shards(self):
        temp = self.get_temp_dir()
        pixels = fake_data.gray_pixels(32, 32, seed=2)
        good = {
            f"0000000{i}_000.png": fake_data.png_bytes(pixels, mode="RGBA" if i == 2 else "L")
            for i in (1, 2, 3)
        }
        images = dict(good, **{"00000004_000.png": b"not a png"})
        data_dir = fake_data.write_nih_layout(temp + "/data", [], images)
        rows = [(_row(name, i + 2, patient_id=i + 1), None) for i, name in enumerate(sorted(images))]
        plan = _units(dict(image_size=16, image_format="raw", chunk_size=2), rows, data_dir)
        self.assertEqual(plan.plans["train"].num_shards, 1)
        self.assertGreater(plan.plans["train"].chunks_per_shard, 1)
        out_dir, parts_dir = temp + "/out", temp + "/out/_parts"
        with _pipeline() as p:
            converted = {
                "units": p | "Units" >> beam.Create([unit.encode() for unit in plan.units]),
                "plans": p | "Plans" >> beam.Create([plan.plans]),
            } | transforms.ConvertToShards(
                adapter=nih.Adapter(),
                output_dir=out_dir,
                parts_dir=parts_dir,
                image_size=16,
                image_format="raw",
            )
            assert_that(
                converted["rejects"] | "ConvertReasons" >> beam.Map(lambda r: (r.reason, r.image_index)),
                equal_to([("bad_image", "00000004_000.png")]),
                label="ConvertRejects",
            )
            summary = converted["shards"] | "ShardSummary" >> beam.Map(
                lambda s: (s.name, s.records, s.patients, _sha256(out_dir, s.name) == s.sha256)
            )
            assert_that(
                summary, equal_to([("train-00000-of-00001.tfrecord", 3, (1, 2, 3), True)]), label="Shards"
            )
        records = list(tf.data.TFRecordDataset(os.path.join(out_dir, "train-00000-of-00001.tfrecord")))
        names = [codec.parse_example(r)["image_index"].numpy().decode() for r in records]
        # Chunks are written one after the other, each sorted by name.
        train_plan = plan.plans["train"]
        self.assertEqual(names, sorted(good, key=lambda n: (transforms.shard_and_chunk(n, train_plan)[1], n)))
        expected = images_lib.resize_area(pixels, 16)
        for record in records:
            image = codec.decode_image(codec.parse_example(record), image_size=16, image_format="raw")
            self.assertAllEqual(image[..., 0], expected)
        self.assertFalse(tf.io.gfile.exists(parts_dir) and tf.io.gfile.listdir(parts_dir))

    def test_shards_of_one_chunk_are_written_and_hashed_where_converted(self):
        temp = self.get_temp_dir()
        images = {
            f"0000001{i}_000.png": fake_data.png_bytes(fake_data.gray_pixels(32, 32, seed=i))
            for i in range(6)
        }
        data_dir = fake_data.write_nih_layout(temp + "/whole", [], images)
        rows = [(_row(name, i + 2, patient_id=i + 1), None) for i, name in enumerate(sorted(images))]
        # As many shards as images: one chunk per shard.
        plan = _units(dict(image_size=16, image_format="raw", num_shards=6), rows, data_dir)
        self.assertEqual(plan.plans["train"], transforms.ShardPlan(6, 1))
        out_dir, parts_dir = temp + "/whole-out", temp + "/whole-out/_parts"
        with _pipeline() as p:
            converted = {
                "units": p | "Units" >> beam.Create([unit.encode() for unit in plan.units]),
                "plans": p | "Plans" >> beam.Create([plan.plans]),
            } | transforms.ConvertToShards(
                adapter=nih.Adapter(),
                output_dir=out_dir,
                parts_dir=parts_dir,
                image_size=16,
                image_format="raw",
            )
            hashed = converted["shards"] | beam.Map(
                lambda s: (s.name, s.records, _sha256(out_dir, s.name) == s.sha256)
            )
            assert_that(hashed, _six_hashed_shards_of_six_records)
        # The parts directory was never used.
        self.assertFalse(tf.io.gfile.exists(parts_dir))


class WriteSummaryTest(tf.test.TestCase):
    def test_summary_and_sorted_rejects(self):
        temp = self.get_temp_dir()
        rejects = [
            nih.Reject(nih.BAD_IMAGE, "b.png", 7, "x"),
            nih.Reject(nih.DUPLICATE, "a.png", 3, "y"),
            nih.Reject(nih.BAD_IMAGE, "c.png", 5, "z"),
        ]
        shard = transforms.ShardResult("test", 0, 1, "test-00000-of-00001.tfrecord", 2, "ab", (0,) * 15, (1,))
        with _pipeline() as p:
            _ = {
                "input_rows": p | "Rows" >> beam.Create([5]),
                "unlisted": p | "Unlisted" >> beam.Create(["u.png"]),
                "rejects": p | "Rejects" >> beam.Create(rejects),
                "shards": p | "Shards" >> beam.Create([shard]),
            } | transforms.WriteSummary(
                rejects_path=temp + "/rejects.jsonl", summary_path=temp + "/summary.json"
            )
        with open(temp + "/summary.json") as f:
            summary = json.load(f)
        self.assertEqual(summary["input_rows"], 5)
        self.assertEqual(summary["unlisted_images"], 1)
        self.assertEqual(summary["rejects"], {"bad_image": 2, "duplicate": 1})
        self.assertEqual(summary["shards"][0]["name"], "test-00000-of-00001.tfrecord")
        with open(temp + "/rejects.jsonl") as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([line["line"] for line in lines], [3, 5, 7])
        self.assertEqual(set(lines[0]), {"image_index", "line", "reason", "detail"})


if __name__ == "__main__":
    tf.test.main()
