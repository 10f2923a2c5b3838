"""Tests of benchmarks/measurements.py: benchmark JSON -> the store -> docs/measurements.md."""

import json
import os

import tensorflow as tf

from benchmarks import measurements

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _figure(figure_id="a.b", date="2026-11-26 14:10", value=1.0, section="Training step", **extra):
    return {
        "id": figure_id,
        "section": section,
        "what": f"figure {figure_id}",
        "value": value,
        "unit": "images/s",
        "date": date,
        "machine": "2-core x86_64",
        "command": "make bench-train",
        "source": "runs/bench/bench-train.json",
        **extra,
    }


def _bench_train_json(images_per_second=(2.0, 3.0)):
    return {
        "benchmark": "bench-train",
        "model": "resunet depth=3 base_filters=32",
        "image_size": 256,
        "batch_size": 4,
        "cases": [
            {"case": "fp32", "images_per_second": images_per_second[0]},
            {"case": "bf16", "images_per_second": images_per_second[1]},
        ],
        "ratios": {"bf16/fp32": images_per_second[1] / images_per_second[0]},
    }


class ParseDateTest(tf.test.TestCase):
    def test_day_minute_and_trailing_zone(self):
        self.assertEqual(str(measurements.parse_date("2026-11-26")), "2026-11-26 00:00:00")
        self.assertEqual(str(measurements.parse_date("2026-11-26 14:10:05 UTC")), "2026-11-26 14:10:00")
        self.assertEqual(str(measurements.parse_date("2026-11-26T09:03")), "2026-11-26 09:03:00")

    def test_rejects_text_without_a_date(self):
        with self.assertRaisesRegex(ValueError, "'date not recorded' does not start with YYYY-MM-DD"):
            measurements.parse_date("date not recorded")


class MergeTest(tf.test.TestCase):
    def test_newer_replaces_older_and_the_older_row_is_dropped(self):
        old = _figure(date="2026-11-25", value=1.0)
        new = _figure(date="2026-11-26 08:00", value=2.0)
        merged = measurements.merge([old], [new])
        self.assertEqual([(f["id"], f["value"]) for f in merged], [("a.b", 2.0)])

    def test_an_older_fresh_figure_does_not_replace_a_newer_stored_one(self):
        stored = _figure(date="2026-11-26 14:36", value=1.0)
        fresh = _figure(date="2026-11-26 14:35", value=9.0)
        self.assertEqual(measurements.merge([stored], [fresh])[0]["value"], 1.0)

    def test_on_equal_dates_the_fresh_figure_wins(self):
        stored = _figure(value=1.0)
        fresh = _figure(value=5.0)
        self.assertEqual(measurements.merge([stored], [fresh])[0]["value"], 5.0)

    def test_other_figures_keep_their_place_and_new_ones_follow_their_section(self):
        stored = [_figure("z.loop", section="Training loop"), _figure("b.step"), _figure("c.step")]
        fresh = [_figure("a.step"), _figure("c.step", value=7.0), _figure("m.train", section="make train")]
        merged = measurements.merge(stored, fresh)
        self.assertEqual([f["id"] for f in merged], ["m.train", "b.step", "c.step", "a.step", "z.loop"])
        self.assertEqual(merged[2]["value"], 7.0)

    def test_headline_figures_lead_their_section(self):
        first = measurements.HEADLINE[0]
        merged = measurements.merge(
            [_figure("a", section="make train")], [_figure(first, section="make train")]
        )
        self.assertEqual([f["id"] for f in merged], [first, "a"])


class CheckFigureTest(tf.test.TestCase):
    def test_missing_field_and_bad_date_are_named(self):
        figure = _figure()
        del figure["machine"]
        with self.assertRaisesRegex(ValueError, r"store.json: figure 'a.b' has no machine"):
            measurements.check_figure(figure, "store.json")
        with self.assertRaisesRegex(ValueError, r"figure 'a.b': date 'soon' does not start"):
            measurements.check_figure(_figure(date="soon"), "store.json")
        with self.assertRaisesRegex(ValueError, r"section 'Elsewhere'"):
            measurements.check_figure(_figure(section="Elsewhere"), "store.json")


class CollectTest(tf.test.TestCase):
    def _write(self, name, data, mtime=None):
        folder = os.path.join(self.get_temp_dir(), "bench")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "w") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return folder

    def test_bench_train_figures_are_dated_by_the_file_and_name_their_command(self):
        # 2026-11-26 14:10:00 UTC.
        folder = self._write("bench-train.json", _bench_train_json((2.0, 3.0)), mtime=1795702200)
        figures = {f["id"]: f for f in measurements.collect(folder, machine="test machine")}
        fp32 = figures["train.step.256.resunet.depth=3.base_filters=32.fp32"]
        self.assertEqual(fp32["value"], 2.0)
        self.assertEqual(fp32["date"], "2026-11-26 14:10")
        self.assertEqual(fp32["machine"], "test machine")
        self.assertEqual(fp32["command"], "make bench-train")
        self.assertEqual(fp32["source"], "runs/bench/bench-train.json")
        # 3.0 / 2.0 images/s.
        self.assertEqual(
            figures["train.ratio.256.resunet.depth=3.base_filters=32.bf16_vs_fp32"]["value"], 1.5
        )
        for figure in figures.values():
            measurements.check_figure(figure, "collected")

    def test_a_json_with_its_own_date_and_machine_keeps_them(self):
        data = {
            "date": "2026-12-01 10:00:00",
            "machine": "64-core aarch64",
            "labels_csv": "demo label model",
            "job": {"rows": 100, "seconds": 4.0, "images_per_s": 25.0, "peak_rss_mb": 300, "shards": 3},
            "job_small": {"rows": 10, "seconds": 1.0, "images_per_s": 10.0, "peak_rss_mb": 280, "shards": 3},
            "memory_ratio": 1.07,
        }
        data["job"] |= {"shard_mb_min": 0.1, "shard_mb_max": 0.2, "records_gb": 0.0}
        figures = {f["id"]: f for f in measurements.collect(self._write("nih-scale.json", data), machine="x")}
        self.assertEqual(figures["nih.job.seconds"]["date"], "2026-12-01 10:00")
        self.assertEqual(figures["nih.job.seconds"]["machine"], "64-core aarch64")
        self.assertEqual(figures["nih.memory_ratio"]["value"], 1.07)
        self.assertEqual(figures["nih.job_small.peak_memory"]["value"], 280)
        self.assertEqual(figures["nih.job.seconds"]["command"], "make bench-nih-scale")
        self.assertNotIn("nih.read", figures)  # Not in this JSON: no row rather than a guess.

    def test_the_load_the_benchmark_recorded_becomes_the_note(self):
        data = _bench_train_json() | {"load_average_1min": {"before": 0.71, "after": 1.94}}
        figures = measurements.collect(self._write("bench-train.json", data), machine="x")
        self.assertEqual({f["note"] for f in figures}, {"load 0.7-1.9"})
        # bench-tfrecords writes /proc/loadavg's first three fields; bench-input [1m, 5m, 15m] lists.
        self.assertEqual(
            measurements.load_note({"load_average": {"start": "0.50 0.40 0.30", "end": "1.2 1 1"}}),
            "load 0.5-1.2",
        )
        self.assertEqual(
            measurements.load_note({"load_average_start": [2.0, 9.0, 9.0], "cases": {}}), "load 2.0"
        )
        self.assertIsNone(measurements.load_note([{"no": "load"}]))

    def test_unknown_files_are_ignored_and_broken_ones_named(self):
        folder = self._write("notes.json", {"anything": 1})
        self.assertEqual(measurements.collect(folder, machine="x"), [])
        self._write("bench-train.json", {"cases": []})
        with self.assertRaisesRegex(ValueError, r"bench-train.json: not what make bench-train writes"):
            measurements.collect(folder, machine="x")
        self._write("bench-train.json", "{not json")
        with self.assertRaisesRegex(ValueError, r"bench-train.json: not what make bench-train writes"):
            measurements.collect(folder, machine="x")


class RenderTest(tf.test.TestCase):
    def test_page_has_one_dated_row_per_figure_and_says_it_is_generated(self):
        figures = [
            _figure("a", value=1234.5),
            _figure("b", section="Evaluation", value="0.8 / 0.3", note="load ~1"),
        ]
        page = measurements.render_page(figures)
        self.assertIn("Generated by `make measurements`", page)
        rows = [
            line
            for line in page.splitlines()
            if line.startswith("| figure a") or line.startswith("| figure b")
        ]
        self.assertEqual(
            rows,
            [
                "| figure a | 1,234.5 images/s | 2026-11-26 14:10 | 2-core x86_64 | `make bench-train` |",
                "| figure b | 0.8 / 0.3 images/s | 2026-11-26 14:10; load ~1 | 2-core x86_64 | `make bench-train` |",
            ],
        )
        self.assertLess(page.index("## Training step"), page.index("## Evaluation"))

    def test_excerpt_holds_the_headline_figures_in_order(self):
        first, second = measurements.HEADLINE[:2]
        figures = [
            _figure(second, section="make train"),
            _figure(first, section="make train"),
            _figure("other"),
        ]
        excerpt = measurements.render_excerpt(figures)
        lines = excerpt.splitlines()
        self.assertEqual(lines[0], measurements.README_BEGIN)
        self.assertEqual(lines[-1], measurements.README_END)
        self.assertEqual(
            [line.split(" | ")[0] for line in lines[3:-1]], [f"| figure {first}", f"| figure {second}"]
        )
        self.assertLessEqual(len(measurements.HEADLINE), 8)

    def test_replace_excerpt_keeps_the_text_around_it(self):
        readme = f"# Title\n\n{measurements.README_BEGIN}\nold\n{measurements.README_END}\n\nEnd\n"
        replaced = measurements.replace_excerpt(readme, measurements.render_excerpt([]))
        self.assertTrue(replaced.startswith("# Title\n\n"))
        self.assertTrue(replaced.endswith("\n\nEnd\n"))
        self.assertNotIn("old", replaced)
        with self.assertRaisesRegex(ValueError, "needs the lines"):
            measurements.replace_excerpt("# no markers\n", "x")


class UpdateTest(tf.test.TestCase):
    def test_update_merges_newer_json_into_store_page_and_readme(self):
        tmp = self.get_temp_dir()
        bench = os.path.join(tmp, "bench")
        os.makedirs(bench)
        with open(os.path.join(bench, "bench-train.json"), "w") as f:
            json.dump(_bench_train_json((4.0, 6.0)), f)
        figure_id = "train.step.256.resunet.depth=3.base_filters=32.fp32"
        store, page, readme = (os.path.join(tmp, name) for name in ("results.json", "m.md", "README.md"))
        measurements.write_store(store, [_figure(figure_id, date="2020-01-01", value=1.0), _figure("kept")])
        with open(readme, "w") as f:
            f.write(f"intro\n{measurements.README_BEGIN}\n{measurements.README_END}\n")
        measurements.update(bench_dir=bench, store=store, page=page, readme=readme)
        stored = {f["id"]: f for f in measurements.read_store(store)}
        self.assertEqual(stored[figure_id]["value"], 4.0)  # The 2020 row is gone.
        self.assertIn("kept", stored)
        with open(page) as f:
            self.assertEqual(f.read(), measurements.render_page(list(stored.values())))
        with open(readme) as f:
            self.assertTrue(f.read().startswith(f"intro\n{measurements.README_BEGIN}\n| figure |"))


class CommittedFiguresTest(tf.test.TestCase):
    """The committed store is valid, and the page and README table are what it renders."""

    def test_page_and_readme_table_are_current(self):
        figures = measurements.read_store(os.path.join(ROOT, measurements.STORE))
        self.assertEqual(len({f["id"] for f in figures}), len(figures))
        with open(os.path.join(ROOT, measurements.PAGE)) as f:
            self.assertEqual(f.read(), measurements.render_page(figures), "run `make measurements`")
        with open(os.path.join(ROOT, measurements.README)) as f:
            readme = f.read()
        self.assertIn(measurements.render_excerpt(figures), readme, "run `make measurements`")


# One tiny JSON per benchmark, shaped as the benchmark writes it (see each benchmarks/*.py).
_SAMPLES = {
    "bench-tfrecords.json": {
        "image_size": 256,
        "load_average": {"start": "1.0 1 1", "end": "1.5 1 1"},
        "ratios": {
            "png_vs_raw_bytes": 0.54,
            "read_raw_vs_png": 6.5,
            "job_vs_floor": 0.9,
            "job_png_vs_floor": 0.75,
        },
    },
    "bench-input.json": {
        "image_size": 256,
        "batch_size": 32,
        "load_average_start": [1.0, 1.0, 1.0],
        "cases": {
            "ours_read": {"images_per_second": 16000.4},
            "ours_augment": {"images_per_second": 3506.0},
            "train_dataset_jit_false": {"images_per_second": 7.0, "input_wait_share": 0.001},
        },
        "ratios": {"parse_per_batch_vs_per_record": 1.55, "ours_augment_vs_best_baseline": 13.5},
    },
    "bench-train.json": _bench_train_json((2.0, 3.0)),
    "nih-scale.json": {
        "date": "2026-11-26 13:52:00",
        "machine": "2-core x86_64",
        "labels_csv": "/mnt/private/Data_Entry_2017_v2020.csv.gz",
        "job": {"rows": 112120, "seconds": 758.5, "images_per_s": 147.8, "peak_rss_mb": 667, "shards": 66}
        | {"shard_mb_min": 99.7, "shard_mb_max": 119.2, "records_gb": 7.38},
        "job_vs_floor": 0.993,
        "read": {"images_per_s": 20570.0},
        "train": {"error": "ValueError: no"},
    },
    "train-attribution.json": {
        "date": "2026-11-26 14:10:00 UTC",
        "load_average_1min": {"before": 0.5, "after": 1.6},
        "runs": [
            {
                "profile": "demo",
                "variant": "after",
                "image_size": 64,
                "batch_size": 32,
                "run_config": {"dtype_policy": "float32"},
                "fit_images_per_second": 292.34,
                "ratios": {"fit/bare": 1.14, "cpu_cores": 1.76, "epoch_spread": 0.028},
            }
        ],
        "loop_floor": [{"steps_per_execution": 6, "epoch_seconds_per_step": 0.00263}],
        "model_flops": [
            {"profile": "full", "image_size": 256, "parameters": 2020000, "forward_flops_per_image": 19.4e9}
        ],
    },
    "bootstrap.json": {
        "cases": [{"case": "vectorized NIH test size 25596 images x 1000 resamples", "seconds": 21.7}],
        "ratios": {"sklearn_over_vectorized": 47.0, "max_abs_difference": 1.1e-16},
    },
    "demo_render.json": [
        {
            "render_size": s,
            "encoder": e,
            "image_size": 1024,
            "compress_level": 1,
            "total_ms": t,
            "images_per_second": 1000 / t,
        }
        for s, e, t in ((256, "up", 200.0), (256, "pil", 150.0), (1024, "up", 1600.0))
    ],
    "demo_separability.json": [{"model": "logistic 32x32", "mean_auc": 0.9312}],
    "gradcam_layers.json": {
        "results": [
            {
                "variant": "decoder alone",
                "layers": ["decoder_output"],
                "method": "gradcam",
                "smooth": False,
                "pairs": 19,
                "pointing_game": 0.3,
                "energy_inside": 0.1,
                "iou": 0.05,
                "box_area_share": 0.073,
                "border_energy_share": 0.31,
            },
            # Same layers, another method: a figure of its own, not overwriting the first.
            {
                "variant": "HiResCAM, decoder",
                "layers": ["decoder_output"],
                "method": "hirescam",
                "smooth": True,
                "pairs": 19,
                "pointing_game": 0.4,
                "energy_inside": 0.2,
                "iou": 0.06,
                "box_area_share": 0.073,
                "border_energy_share": 0.2,
            },
        ]
    },
}
_EXPECTED = {
    "records.png_vs_raw_bytes": 0.54,
    "train.step.256.resunet.depth=3.base_filters=32.bf16": 3.0,
    "nih.job.seconds": 758.5,
    "nih.shards": "66 shards of 99.7-119.2 MB, 7.38 GB",
    "nih.read": 20570.0,
    "records.raw_vs_png_conversion": 1.2,  # 0.9 / 0.75.
    "input.ours_read": 16000.0,
    "input.parse_per_batch_vs_per_record": 1.55,
    "input.wait_share": 0.1,  # 0.001 as a percentage.
    "loop.demo.after.fit": 292.3,
    "loop.demo.after.spread": 2.8,
    "loop.floor.spe6": 2.63,  # ms.
    "model.flops.full": 19.4,
    "eval.bootstrap.vs_sklearn": 47.0,
    "eval.bootstrap.nih_test_seconds": 21.7,
    "demo.render.256": 5.0,  # The generator's own encoder ("up", level 1), not the faster "pil".
    "demo.render.speedup": 8.0,  # 1600 / 200 ms.
    "demo.separability.logistic_32x32": 0.931,
    "eval.gradcam.decoder_output.gradcam": "0.300 / 0.100 / 0.050 (baseline 0.073; border share 0.31)",
    "eval.gradcam.decoder_output.hirescam.smooth": "0.400 / 0.200 / 0.060 (baseline 0.073; border share 0.20)",
}


class ExtractorsTest(tf.test.TestCase):
    def test_every_benchmark_json_gives_valid_dated_figures(self):
        self.assertEqual(set(_SAMPLES), set(measurements.EXTRACTORS))
        folder = os.path.join(self.get_temp_dir(), "bench")
        os.makedirs(folder)
        for name, data in _SAMPLES.items():
            with open(os.path.join(folder, name), "w") as f:
                json.dump(data, f)
        figures = {f["id"]: f for f in measurements.collect(folder, machine="x")}
        for figure in figures.values():
            measurements.check_figure(figure, figure["source"])
        self.assertEqual({k: figures[k]["value"] for k in _EXPECTED}, _EXPECTED)
        self.assertEqual(figures["loop.demo.after.fit"]["date"], "2026-11-26 14:10")
        self.assertEqual(figures["loop.demo.after.fit"]["note"], "load 0.5-1.6")
        self.assertEqual(figures["records.read_raw_vs_png"]["command"], "make bench-tfrecords")
        self.assertEqual(measurements.format_value(figures["records.png_vs_raw_bytes"]), "0.54x")
        self.assertNotIn("nih.train", figures)  # The training case failed: no figure.
        self.assertIn("NIH_LABELS_CSV=", figures["nih.job.seconds"]["command"])
        self.assertNotIn("/mnt/private", figures["nih.job.seconds"]["command"])  # No local path in the docs.
