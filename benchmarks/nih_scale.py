r"""The NIH-scale rehearsal: the records job, the input pipeline and training on a full-size layout.

  python -m benchmarks.nih_scale \
      --labels_csv=/path/to/Data_Entry_2017_v2020.csv.gz --png_pool=/path/to/nih/images

builds an NIH layout of 112,120 rows in --work_dir (the labels CSV given, or rows from the demo
generator's label model; the official lists; images_001 ... images_012; one file per row,
hard-linked from a small pool of PNGs: the real ones of --png_pool, or rendered demo images),
then measures, in one run on the same cores:
  floor       a plain multiprocessing pool doing only decode -> gray -> area resize on a
              2,000-file sample of the pool: the speed the job is compared with;
  job         `python -m beam_pipelines.build_tfrecords --image_size=256` on the whole layout,
              end to end, with the summed RSS of its process tree sampled every second;
  job_small   the same on a layout of the first 2,000 rows (the memory ratio's denominator);
  read        one pass of `tfrecords.dataset.build_dataset` over the train split, without and
              with augmentation;
  train       20 training steps of the `full` profile as the trainer runs them, on those
              records (s/step, images/s, and the input pipeline's own time per batch).
Results go to runs/bench/nih-scale.json. Everything written under --work_dir (about 7.5 GB)
is deleted at the end unless --keep.
"""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import app, flags

from beam_pipelines import images
from beam_pipelines.datasets import nih
from benchmarks.rss import run_sampled
from tfrecords import codec, manifest, schema

_LABELS_CSV = flags.DEFINE_string(
    "labels_csv", None, "NIH labels CSV (.csv or .csv.gz); default: rows from the demo label model."
)
_PNG_POOL = flags.DEFINE_string(
    "png_pool", None, "Folder of PNGs to link from; default: rendered demo images."
)
_WORK_DIR = flags.DEFINE_string("work_dir", "runs/bench/nih-scale-work", "Scratch folder (deleted after).")
_OUTPUT = flags.DEFINE_string("output", "runs/bench/nih-scale.json", "The figures, as JSON.")
_NUM_ROWS = flags.DEFINE_integer("num_rows", 112_120, "Rows of the full-size layout.")
_SMALL_ROWS = flags.DEFINE_integer("small_rows", 2_000, "Rows of the small layout (memory denominator).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Side of the records' images.")
_FLOOR_FILES = flags.DEFINE_integer("floor_files", 2_000, "Files of the floor's sample.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 20, "Training steps of the full profile.")
_KEEP = flags.DEFINE_bool("keep", False, "Keep the layout and the records.")
_CASES = flags.DEFINE_list("cases", "floor,job,job_small,read,train", "Which cases to run.")

# How NIH spreads its images over the 12 archives (images_001 holds 4,999; the last 7,121).
NIH_FOLDER_SIZES = (4_999,) + (10_000,) * 10 + (7_121,)
_DEMO_POOL_SIZE = 64


# ---------------------------------------------------------------------------------------------
# The layout.


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def _read_csv_lines(path: str, num_rows: int) -> tuple[str, list[str]]:
    with _open_text(path) as f:
        header = f.readline().rstrip("\n")
        lines = [line.rstrip("\n") for _, line in zip(range(num_rows), f)]
    return header, lines


def _demo_csv_lines(num_rows: int) -> tuple[str, list[str]]:
    from demo_data import label_model, layout

    return layout.CSV_HEADER, [row.csv_line() for row in label_model.sample_images(num_rows, seed=0)]


def _official_lists(names: Sequence[str], labels_csv: str | None) -> tuple[list[str], list[str]]:
    """NIH's lists next to the CSV when there, else a 20% test share by patient."""
    folder = os.path.dirname(labels_csv) if labels_csv else ""
    paths = [os.path.join(folder, n) for n in ("train_val_list.txt", "test_list.txt")]
    wanted = set(names)
    if labels_csv and all(os.path.exists(p) for p in paths):
        lists = []
        for path in paths:
            with open(path) as f:
                lists.append([n for n in nih.read_name_list(f.read()) if n in wanted])
        return lists[0], lists[1]
    test = [n for n in names if int(n.split("_")[0]) % 5 == 0]
    test_set = set(test)
    return [n for n in names if n not in test_set], test


def _demo_pool(folder: str, count: int) -> list[str]:
    from demo_data import png, render

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        findings = (schema.FINDINGS[i % len(schema.FINDINGS)],) if i % 2 else ()
        image = render.render_image(findings, render.image_rng(0, i), 1024)
        path = os.path.join(folder, f"pool_{i:03d}.png")
        with open(path, "wb") as f:
            f.write(png.encode_png(image))
        paths.append(path)
    return paths


def _pool_paths(png_pool: str | None, work_dir: str) -> list[str]:
    if not png_pool:
        return _demo_pool(os.path.join(work_dir, "pool"), _DEMO_POOL_SIZE)
    paths = sorted(os.path.join(png_pool, n) for n in os.listdir(png_pool) if n.lower().endswith(".png"))
    if not paths:
        raise ValueError(f"--png_pool {png_pool!r} holds no .png files.")
    return paths


def check_disk(work_dir: str, *, num_rows: int, image_size: int, pool_bytes: int) -> dict:
    """Free disk against what the run writes: the records (twice over, with the small run)."""
    records = num_rows * codec.estimated_record_bytes(image_size, "raw")
    needed = int(1.1 * records) + pool_bytes + (1 << 30)
    os.makedirs(work_dir, exist_ok=True)
    free = shutil.disk_usage(work_dir).free
    print(f"Disk: {needed / 1e9:.1f} GB needed in {work_dir}, {free / 1e9:.1f} GB free.", flush=True)
    if free < needed:
        raise SystemExit(
            f"nih_scale: {work_dir} has {free / 1e9:.1f} GB free; the run needs {needed / 1e9:.1f} GB."
        )
    return {"needed_gb": round(needed / 1e9, 1), "free_gb": round(free / 1e9, 1)}


def build_layout(root: str, header: str, lines: Sequence[str], lists, pool: Sequence[str]) -> dict:
    """Writes the CSV, the lists and one linked image per row into `root` (NIH's folders)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "Data_Entry_2017.csv"), "w") as f:
        f.write("\n".join([header, *lines]) + "\n")
    for name, names in zip(("train_val_list.txt", "test_list.txt"), lists):
        with open(os.path.join(root, name), "w") as f:
            f.write("\n".join(names))
    names = [line.split(",", 1)[0] for line in lines]
    linked = copied = 0
    start = 0
    for folder, size in enumerate(NIH_FOLDER_SIZES, start=1):
        folder_names = names[start : start + size] if folder < len(NIH_FOLDER_SIZES) else names[start:]
        if not folder_names:
            break
        images = os.path.join(root, f"images_{folder:03d}", "images")
        os.makedirs(images, exist_ok=True)
        for offset, name in enumerate(folder_names):
            source = pool[(start + offset) % len(pool)]
            try:
                os.link(source, os.path.join(images, name))
                linked += 1
            except OSError:  # Another file system, or no hard links: copy.
                shutil.copyfile(source, os.path.join(images, name))
                copied += 1
        start += len(folder_names)
    return {"rows": len(lines), "linked": linked, "copied": copied}


# ---------------------------------------------------------------------------------------------
# The floor: decode -> gray -> area resize in a plain pool.

_FLOOR_SIZE = [256]


def _floor_one(path: str) -> int:
    with open(path, "rb") as f:
        pixels = images.resize_area(images.decode_gray(f.read()), _FLOOR_SIZE[0])
    return int(pixels.shape[0])


def _floor_init(image_size: int) -> None:
    _FLOOR_SIZE[0] = image_size


def run_floor(paths: Sequence[str], *, image_size: int, workers: int) -> dict:
    context = multiprocessing.get_context("fork")
    start = time.monotonic()
    with context.Pool(workers, initializer=_floor_init, initargs=(image_size,)) as pool:
        done = sum(1 for _ in pool.imap_unordered(_floor_one, paths, chunksize=8))
    wall = time.monotonic() - start
    return {
        "images": done,
        "workers": workers,
        "seconds": round(wall, 2),
        "images_per_s": round(done / wall, 1),
    }


# ---------------------------------------------------------------------------------------------
# The job, with its process tree's memory sampled.


def run_job(data_dir: str, output_dir: str, *, image_size: int, log_path: str) -> dict:
    """`python -m beam_pipelines.build_tfrecords` as a subprocess; wall time and peak tree RSS."""
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "beam_pipelines.build_tfrecords",
        f"--data_dir={data_dir}",
        f"--output_dir={output_dir}",
        f"--image_size={image_size}",
        "--progress_interval_s=60",
    ]
    with open(log_path, "w") as log:
        run = run_sampled(command, stdout=log, stderr=subprocess.STDOUT)
    if run.returncode:
        with open(log_path) as f:
            raise RuntimeError(f"{command} failed ({run.returncode}): {f.read()[-3000:]}")
    result = manifest.read_manifest(output_dir, check_shards=True)
    sizes = [
        os.path.getsize(os.path.join(output_dir, shard.name))
        for split in result.splits.values()
        for shard in split.shards
    ]
    return {
        "rows": result.input_rows,
        "records": result.records_written,
        "rejects": dict(result.rejects),
        "unlisted_images": result.unlisted_images,
        "splits": {
            name: {"records": s.records, "patients": s.patients, "shards": len(s.shards)}
            for name, s in result.splits.items()
        },
        "seconds": round(run.wall_seconds, 1),
        "images_per_s": round(result.records_written / run.wall_seconds, 1),
        "peak_rss_mb": round(run.peak_rss_bytes / 1e6),
        "rss_samples": run.samples,
        "shards": len(sizes),
        "shard_mb_min": round(min(sizes) / 1e6, 1),
        "shard_mb_max": round(max(sizes) / 1e6, 1),
        "records_gb": round(sum(sizes) / 1e9, 2),
    }


# ---------------------------------------------------------------------------------------------
# Reading and training.


def run_read(records_dir: str, *, augment: bool, batch_size: int = 64) -> dict:
    """One pass over the train split as training reads it (images/s), with or without augmentation."""
    from tfrecords import dataset as dataset_lib

    records = manifest.read_manifest(records_dir).splits["train"].records
    steps = records // batch_size
    dataset = dataset_lib.build_dataset(records_dir, "train", batch_size=batch_size, training=True, seed=0)
    if augment:
        from trainer.model import augment as augment_lib
        from trainer.training import inputs

        dataset = inputs.augment_batches(dataset, augment_lib.make_augment_fn(), seed=0)
    start = time.monotonic()
    for _ in dataset.take(steps):
        pass
    wall = time.monotonic() - start
    return {
        "images": steps * batch_size,
        "seconds": round(wall, 1),
        "images_per_s": round(steps * batch_size / wall, 1),
    }


def run_train(records_dir: str, *, steps: int) -> dict:
    """`steps` training steps of the `full` profile as the trainer runs them: s/step, input wait.

    The trainer's own steps (`task.plan_run`, `build_model`, `compile_model`, `build_inputs`:
    its precision, XLA and augmentation placement choices, metrics and steps per call) on one
    replica, without validation or callbacks. The first call (tracing) is not counted; the
    input wait is measured by pulling the same number of batches from a second copy of the
    input alone.
    """
    import keras

    from trainer.training import config as config_lib
    from trainer.training import runner as train_lib
    from trainer.training import task

    config = config_lib.get_profile("full", records_dir=records_dir, run_dir="unused", steps_per_epoch=steps)
    records = manifest.read_manifest(records_dir)
    strategy = train_lib.create_strategy("one_device")
    plan = task.plan_run(config, records, strategy)
    with train_lib.global_state(config.seed, plan.dtype_policy):
        with strategy.scope():
            model = task.build_model(config, plan)
            task.compile_model(model, config, plan, records)
        train_data, _ = task.build_inputs(config, strategy, plan)

        class _StepTimes(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times: list[float] = []

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.monotonic())

        timer = _StepTimes()
        start = time.monotonic()
        model.fit(train_data, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
        per_call = plan.steps_per_execution
        timed = [b - a for a, b in zip(timer.times, timer.times[1:])]
        first = timer.times[0] - start
        input_only = iter(train_data)
        next(input_only)
        input_start = time.monotonic()
        for _ in range(steps - 1):
            next(input_only)
        input_s = (time.monotonic() - input_start) / (steps - 1)
    s_per_step = sum(timed) / (len(timed) * per_call) if timed else float("nan")
    return {
        "profile": "full",
        "model": f"{config.model} depth {config.depth} base {config.base_filters}",
        "batch_size": plan.global_batch_size,
        "dtype_policy": plan.dtype_policy,
        "jit_compile": plan.jit_compile,
        "augment_placement": plan.augment_placement,
        "steps": steps,
        "first_call_s": round(first, 2),
        "s_per_step": round(s_per_step, 3),
        "images_per_s": round(plan.global_batch_size / s_per_step, 1),
        "input_alone_s_per_step": round(input_s, 4),
    }


# ---------------------------------------------------------------------------------------------


def _build_layouts(work: str) -> tuple[dict, list[str]]:
    """The full-size layout and the small one (its first rows); returns the facts and the pool."""
    labels_csv = _LABELS_CSV.value
    header, lines = (
        _read_csv_lines(labels_csv, _NUM_ROWS.value) if labels_csv else _demo_csv_lines(_NUM_ROWS.value)
    )
    pool = _pool_paths(_PNG_POOL.value, work)
    results: dict = {
        "disk": check_disk(
            work,
            num_rows=len(lines),
            image_size=_IMAGE_SIZE.value,
            pool_bytes=sum(map(os.path.getsize, pool)),
        ),
        "labels_csv": labels_csv or "demo label model",
        "png_pool": _PNG_POOL.value or f"{len(pool)} rendered demo images",
        "pool_files": len(pool),
    }
    start = time.monotonic()
    for name, layout_lines in (("nih", lines), ("nih-small", lines[: _SMALL_ROWS.value])):
        names = [line.split(",", 1)[0] for line in layout_lines]
        built = build_layout(
            os.path.join(work, name), header, layout_lines, _official_lists(names, labels_csv), pool
        )
        results.setdefault("layout", built)
    results["layout"]["seconds"] = round(time.monotonic() - start, 1)
    print("Layout:", results["layout"], flush=True)
    return results, pool


def _run_jobs(work: str, cases: Sequence[str], pool: Sequence[str], results: dict) -> None:
    """The floor, the job on both layouts, and the floor again (the CPU may be shared)."""
    size = _IMAGE_SIZE.value
    workers = os.cpu_count() or 1
    sample = random.Random(0).choices(pool, k=_FLOOR_FILES.value)
    if "floor" in cases:
        results["floor"] = run_floor(sample, image_size=size, workers=workers)
        print("Floor:", results["floor"], flush=True)
    for case, layout, records in (("job_small", "nih-small", "records-small"), ("job", "nih", "records")):
        if case in cases:
            results[case] = run_job(
                os.path.join(work, layout),
                os.path.join(work, records),
                image_size=size,
                log_path=os.path.join(work, f"{case}.log"),
            )
            print(f"{case}:", results[case], flush=True)
    if "floor" in cases and "job" in results:
        results["floor_after"] = run_floor(sample, image_size=size, workers=workers)
        print("Floor, after the job:", results["floor_after"], flush=True)
    _ratios(results)


def _rehearse(work: str, cases: Sequence[str]) -> dict:
    results, pool = _build_layouts(work)
    _run_jobs(work, cases, pool, results)
    records = os.path.join(work, "records")
    for case, run in (
        ("read", lambda: run_read(records, augment=False)),
        ("read_augmented", lambda: run_read(records, augment=True)),
        ("train", lambda: run_train(records, steps=_TRAIN_STEPS.value)),
    ):
        if case.split("_")[0] in cases and "job" in results:
            try:
                results[case] = run()
            except (ImportError, TypeError, AttributeError, ValueError) as e:
                results[case] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{case}:", results[case], flush=True)
    return results


def _ratios(results: dict) -> None:
    if "job" in results and "floor" in results:
        results["job_vs_floor"] = round(results["job"]["images_per_s"] / results["floor"]["images_per_s"], 3)
    if "job" in results and "floor_after" in results:
        floors = (results["floor"]["images_per_s"], results["floor_after"]["images_per_s"])
        results["job_vs_mean_floor"] = round(2 * results["job"]["images_per_s"] / sum(floors), 3)
    if "job" in results and "job_small" in results:
        results["memory_ratio"] = round(
            results["job"]["peak_rss_mb"] / results["job_small"]["peak_rss_mb"], 2
        )


def main(argv: list[str]) -> None:
    del argv
    work = _WORK_DIR.value
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        results = _rehearse(work, _CASES.value)
    finally:
        if not _KEEP.value:
            shutil.rmtree(work, ignore_errors=True)
    results |= {
        "date": started,
        "machine": f"{os.cpu_count()}-core {os.uname().machine}",
        "command": " ".join(["python -m benchmarks.nih_scale", *sys.argv[1:]]),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "kept": _KEEP.value,
    }
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(
        json.dumps({k: results.get(k) for k in ("job_vs_floor", "job_vs_mean_floor", "memory_ratio")}),
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
