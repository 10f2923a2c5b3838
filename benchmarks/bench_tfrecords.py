r"""Benchmark of the Beam TFRecord job against a plain multiprocessing floor, side by side.

  python -m benchmarks.bench_tfrecords            # 2,000 demo images of 1024x1024 -> 256x256

writes runs/bench/bench-tfrecords.json (one object per case, with images/s, and the ratios) and
prints a table. Cases, all in one run on the same cores:
  floor         (run --repeats times, alternating with job; the best run of each counts)
                the same per-image work (read, decode, gray, area resize, serialize, frame) in a
                plain multiprocessing.Pool loop, one output file: the speed to match;
  job           the Beam job (run_job), DirectRunner multi-processing on all cores, end to end
                (input checks, pipeline, manifest);
  job_png       the same with --image_format=png;
  memory_N/4N   the job as a subprocess on N and 4N images, peak RSS of its whole process tree
                (launcher + SDK workers) sampled from /proc: it must not grow with N. Their
                difference gives the marginal rate, hence the projection for 112,120 images;
  read_raw/png  tf.data reading the job's shards (parse + decode_image, batch 64): the read
                cost that --image_format trades against disk space;
  decode_pil/tf one core, decode + area resize of 100 demo PNGs with Pillow vs tf.image.

The demo images are generated once with demo_data into --data_dir (cached).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

from beam_pipelines import images, job, splits
from beam_pipelines.datasets import nih
from benchmarks.rss import run_sampled
from tfrecords import codec

_NUM_IMAGES = flags.DEFINE_integer("num_images", 2000, "Demo images to convert.")
_SOURCE_SIZE = flags.DEFINE_integer("source_size", 1024, "Side of the demo PNGs.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Side of the records' images.")
_DATA_DIR = flags.DEFINE_string("data_dir", "data/bench-demo", "Cache of the demo images.")
_WORK_DIR = flags.DEFINE_string("work_dir", "runs/bench/tfrecords-work", "Scratch output (deleted after).")
_OUTPUT = flags.DEFINE_string("output", "runs/bench/bench-tfrecords.json", "The figures, as JSON.")
_MEMORY_N = flags.DEFINE_integer("memory_n", 500, "N of the peak-memory cases (N and 4N images).")
_WORKERS = flags.DEFINE_integer("workers", 0, "Processes for the floor and the job; 0 = all cores.")
_REPEATS = flags.DEFINE_integer(
    "repeats", 3, "floor and job run this many times, alternating; the best of each counts (shared CPU)."
)
_REAL_IMAGES_DIR = flags.DEFINE_string(
    "real_images_dir", "", "Optional folder of real NIH PNGs: adds their one-core decode rate (decode_real)."
)
_CASES = flags.DEFINE_list(
    "cases",
    "decode,floor,job,job_png,read,memory",
    "Which cases to run (decode, floor, job, job_png, read, memory).",
)
FULL_NIH_IMAGES = 112_120


def _ensure_demo(data_dir: str, num_images: int, image_size: int) -> None:
    marker = os.path.join(data_dir, "Data_Entry_2017.csv")
    if os.path.exists(marker):
        with open(marker) as f:
            if sum(1 for _ in f) - 1 >= num_images:
                return
    from demo_data import writer as demo_data

    print(f"Generating {num_images} demo images of {image_size}x{image_size} into {data_dir} (cached)...")
    demo_data.generate(data_dir, num_images=num_images, image_size=image_size, seed=0, overwrite=True)


# --------------------------------------------------------------------------------------------
# The floor: the same per-image work in a plain multiprocessing.Pool loop.

_FLOOR_ARGS: dict = {}


def _floor_convert(task: tuple[str, nih.ParsedRow]) -> bytes | None:
    path, row = task
    with open(path, "rb") as f:
        data = f.read()
    try:
        return codec.tfrecord_frame(nih.image_to_record(data, row, **_FLOOR_ARGS))
    except ValueError:
        return None


def _floor_init(args: dict) -> None:
    _FLOOR_ARGS.update(args)


def run_floor(data_dir: str, out_path: str, *, image_size: int, num_images: int, workers: int) -> dict:
    start = time.monotonic()
    with open(os.path.join(data_dir, "Data_Entry_2017.csv"), "rb") as f:
        rows = [nih.parse_row(row) for row in nih.iter_csv_rows(*nih.read_labels_table(f, name="csv"))]
    rows = rows[:num_images]
    paths = {}
    for dirpath, _, files in os.walk(data_dir):
        for name in files:
            if name.endswith(".png"):
                paths[name] = os.path.join(dirpath, name)
    tasks = [(paths[row.image_index], row) for row in rows if row.image_index in paths]
    written = 0
    context = multiprocessing.get_context("fork")
    args = {"image_size": image_size, "image_format": "raw"}
    with (
        context.Pool(workers, initializer=_floor_init, initargs=(args,)) as pool,
        open(out_path, "wb") as out,
    ):
        for frame in pool.imap(_floor_convert, tasks, chunksize=8):
            if frame is not None:
                out.write(frame)
                written += 1
    wall = time.monotonic() - start
    return {"images": written, "seconds": round(wall, 2), "images_per_s": round(written / wall, 1)}


# --------------------------------------------------------------------------------------------
# The job.


def run_job_case(
    data_dir: str,
    output_dir: str,
    *,
    image_size: int,
    image_format: str,
    num_images: int,
    workers: int,
    extra_args: tuple[str, ...] = (),
) -> dict:
    shutil.rmtree(output_dir, ignore_errors=True)
    config = job.JobConfig(
        data_dir=data_dir,
        output_dir=output_dir,
        image_size=image_size,
        image_format=image_format,
        max_images=num_images,
        split=splits.SplitConfig(mode="patient"),
    )
    result = job.run_job(config, [f"--direct_num_workers={workers}", *extra_args])
    written = result.manifest.records_written
    shard_mb = [
        os.path.getsize(os.path.join(output_dir, s.name)) / 1e6
        for split in result.manifest.splits.values()
        for s in split.shards
    ]
    return {
        "images": written,
        "seconds": round(result.wall_seconds, 2),
        "images_per_s": round(written / result.wall_seconds, 1),
        "bytes_per_record": round(sum(shard_mb) * 1e6 / written),
        "shards": len(shard_mb),
    }


def run_memory_case(
    data_dir: str, output_dir: str, *, image_size: int, num_images: int, workers: int
) -> dict:
    """The job as `python -m beam_pipelines.build_tfrecords`, its process tree's RSS sampled."""
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "beam_pipelines.build_tfrecords",
        f"--data_dir={data_dir}",
        f"--output_dir={output_dir}",
        f"--image_size={image_size}",
        f"--max_images={num_images}",
        "--split=patient",
        f"--direct_num_workers={workers}",
    ]
    with tempfile.TemporaryFile("w+") as printed:
        run = run_sampled(command, stdout=printed, stderr=subprocess.DEVNULL, interval_s=0.2)
        printed.seek(0)
        output = printed.read()
    if run.returncode:
        raise RuntimeError(f"{command} failed with {run.returncode}: {output[-2000:]}")
    return {
        "images": num_images,
        "seconds_with_startup": round(run.wall_seconds, 2),
        "peak_rss_mb": round(run.peak_rss_bytes / 1e6),
        "job_printed": output.strip().splitlines(),
    }


# --------------------------------------------------------------------------------------------
# Reading the records back, and the decoder choice.


def run_read_case(records_dir: str, image_format: str) -> dict:
    import tensorflow as tf

    from tfrecords import manifest as manifest_lib

    manifest = manifest_lib.read_manifest(records_dir)
    files = [p for split in manifest.splits for p in manifest_lib.shard_paths(records_dir, manifest, split)]
    size = manifest.image_size

    def parse(serialized):
        features = codec.parse_example(serialized)
        return codec.decode_image(features, image_size=size, image_format=image_format)

    dataset = tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    for _ in dataset:  # Warm the page cache and tf.data.
        pass
    start = time.monotonic()
    count = sum(int(batch.shape[0]) for batch in dataset)
    wall = time.monotonic() - start
    return {"images": count, "seconds": round(wall, 3), "images_per_s": round(count / wall, 1)}


def run_decode_cases(data_dir: str, image_size: int) -> list[dict]:
    import tensorflow as tf

    paths = []
    for dirpath, _, files in os.walk(data_dir):
        paths.extend(os.path.join(dirpath, name) for name in sorted(files) if name.endswith(".png"))
    blobs = []
    for path in sorted(paths)[:100]:
        with open(path, "rb") as f:
            blobs.append(f.read())

    def pil(data):
        return images.resize_area(images.decode_gray(data), image_size)

    def tf_image(data):
        image = tf.image.resize(tf.io.decode_png(data, channels=1), (image_size, image_size), method="area")
        return tf.cast(tf.round(image), tf.uint8).numpy()

    cases = []
    with tf.device("/CPU:0"):
        for name, fn in (("decode_pil", pil), ("decode_tf", tf_image)):
            fn(blobs[0])
            start = time.monotonic()
            for data in blobs:
                fn(data)
            wall = time.monotonic() - start
            cases.append(
                {
                    "case": name,
                    "images": len(blobs),
                    "seconds": round(wall, 2),
                    "images_per_s": round(len(blobs) / wall, 1),
                }
            )
    diff = np.abs(pil(blobs[0]).astype(int) - tf_image(blobs[0])[..., 0]).max()
    cases[-1]["max_abs_diff_vs_pil"] = int(diff)
    return cases


def _cpu_seconds() -> float:
    """User + system CPU of this process and of every child it has waited for (pool workers,
    Beam's SDK worker processes): the work done, whatever share of the CPU the others left us."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _with_cpu(fn, *args, **kwargs) -> dict:
    before = _cpu_seconds()
    result = fn(*args, **kwargs)
    cpu = _cpu_seconds() - before
    result["cpu_seconds"] = round(cpu, 2)
    result["cpu_ms_per_image"] = round(1000 * cpu / max(1, result["images"]), 2)
    # Share of the cores' time spent working: 1.0 = all cores busy for the whole wall time.
    result["core_utilization"] = round(cpu / (result["seconds"] * (os.cpu_count() or 1)), 3)
    return result


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv: list[str]) -> None:
    del argv
    workers = _WORKERS.value or os.cpu_count()
    cases = set(_CASES.value)
    data_dir, work = _DATA_DIR.value, _WORK_DIR.value
    n, size = _NUM_IMAGES.value, _IMAGE_SIZE.value
    _ensure_demo(data_dir, n, _SOURCE_SIZE.value)
    os.makedirs(work, exist_ok=True)
    results: list[dict] = []
    loads = {"start": _load()}

    if "decode" in cases:
        # One core, so the comparison is per core (tf.image would otherwise use several threads).
        results.extend(run_decode_cases(data_dir, size))
        if _REAL_IMAGES_DIR.value:
            (real, _) = run_decode_cases(_REAL_IMAGES_DIR.value, size)
            results.append(dict(real, case="decode_real"))
    # Alternate floor and job so both see the same background load; keep every run.
    for repeat in range(_REPEATS.value):
        if "floor" in cases:
            floor = _with_cpu(
                run_floor, data_dir, work + "/floor.tfrecord", image_size=size, num_images=n, workers=workers
            )
            results.append({"case": "floor", "run": repeat, "workers": workers, "load": _load(), **floor})
        if "job" in cases:
            raw = _with_cpu(
                run_job_case,
                data_dir,
                work + "/raw",
                image_size=size,
                image_format="raw",
                num_images=n,
                workers=workers,
            )
            results.append({"case": "job", "run": repeat, "workers": workers, "load": _load(), **raw})
    if "job" in cases:
        # The job's fixed cost (worker start-up, pipeline graph, stages, manifest) on 20 images.
        tiny = _with_cpu(
            run_job_case,
            data_dir,
            work + "/tiny",
            image_size=size,
            image_format="raw",
            num_images=20,
            workers=workers,
        )
        results.append({"case": "job_tiny", "workers": workers, "load": _load(), **tiny})
        # For comparison only (the default is multi-processing): threads start in no time, and
        # Pillow releases the GIL while it decodes and resizes.
        threads = _with_cpu(
            run_job_case,
            data_dir,
            work + "/threads",
            image_size=size,
            image_format="raw",
            num_images=n,
            workers=workers,
            extra_args=("--direct_running_mode=multi_threading",),
        )
        results.append({"case": "job_threads", "workers": workers, "load": _load(), **threads})
    if "job_png" in cases:
        results.append(
            {
                "case": "job_png",
                "workers": workers,
                **run_job_case(
                    data_dir,
                    work + "/png",
                    image_size=size,
                    image_format="png",
                    num_images=n,
                    workers=workers,
                ),
            }
        )
    if "read" in cases:
        for image_format in ("raw", "png"):
            if os.path.exists(f"{work}/{image_format}/manifest.json"):
                results.append(
                    {"case": f"read_{image_format}", **run_read_case(f"{work}/{image_format}", image_format)}
                )
    if "memory" in cases:
        small, large = _MEMORY_N.value, 4 * _MEMORY_N.value
        for label, count in (("memory_N", small), ("memory_4N", large)):
            results.append(
                {
                    "case": label,
                    "workers": workers,
                    **run_memory_case(
                        data_dir, f"{work}/mem", image_size=size, num_images=count, workers=workers
                    ),
                }
            )
    loads["end"] = _load()

    by_case = {}
    for r in results:  # The best run of each case.
        best = by_case.get(r["case"])
        if best is None or r.get("images_per_s", 0) > best.get("images_per_s", 0):
            by_case[r["case"]] = r
    ratios = {}
    if "floor" in by_case and "job" in by_case:
        ratios["job_vs_floor"] = round(by_case["job"]["images_per_s"] / by_case["floor"]["images_per_s"], 3)
        pairs = [
            (f["images_per_s"], j["images_per_s"])
            for f, j in zip(
                [r for r in results if r["case"] == "floor"], [r for r in results if r["case"] == "job"]
            )
        ]
        ratios["job_vs_floor_per_pair"] = [round(j / f, 3) for f, j in pairs]
        # CPU per image does not depend on how much of the CPU the other users took.
        floor_cpu = min(r["cpu_ms_per_image"] for r in results if r["case"] == "floor")
        job_cpu = min(r["cpu_ms_per_image"] for r in results if r["case"] == "job")
        ratios["floor_vs_job_cpu_per_image"] = round(floor_cpu / job_cpu, 3)
    if "floor" in by_case and "job_png" in by_case:
        ratios["job_png_vs_floor"] = round(
            by_case["job_png"]["images_per_s"] / by_case["floor"]["images_per_s"], 3
        )
    if "read_raw" in by_case and "read_png" in by_case:
        ratios["read_raw_vs_png"] = round(
            by_case["read_raw"]["images_per_s"] / by_case["read_png"]["images_per_s"], 2
        )
    if "job" in by_case and "job_png" in by_case:
        ratios["png_vs_raw_bytes"] = round(
            by_case["job_png"]["bytes_per_record"] / by_case["job"]["bytes_per_record"], 3
        )
    if "floor" in by_case and "job_threads" in by_case:
        ratios["job_threads_vs_floor"] = round(
            by_case["job_threads"]["images_per_s"] / by_case["floor"]["images_per_s"], 3
        )
    if "decode_real" in by_case and "decode_pil" in by_case:
        ratios["decode_real_vs_demo"] = round(
            by_case["decode_real"]["images_per_s"] / by_case["decode_pil"]["images_per_s"], 3
        )
    if "decode_pil" in by_case and "decode_tf" in by_case:
        ratios["decode_pil_vs_tf"] = round(
            by_case["decode_pil"]["images_per_s"] / by_case["decode_tf"]["images_per_s"], 3
        )
    if "memory_N" in by_case and "memory_4N" in by_case:
        small, large = by_case["memory_N"], by_case["memory_4N"]
        ratios["peak_rss_4N_vs_N"] = round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)
        marginal = (large["images"] - small["images"]) / (
            large["seconds_with_startup"] - small["seconds_with_startup"]
        )
        ratios["memory_runs_marginal_images_per_s"] = round(marginal, 1)
    if "floor" in by_case and "job" in by_case and "job_tiny" in by_case:
        # Load-independent: CPU seconds per image. The job's marginal cost per image is its CPU
        # minus the fixed CPU of a 20-image run; the projection assumes the cores are ours.
        cores = os.cpu_count() or 1
        tiny = by_case["job_tiny"]
        job_runs = [r for r in results if r["case"] == "job"]
        job_cpu = min(r["cpu_seconds"] for r in job_runs)
        floor_ms = min(r["cpu_ms_per_image"] for r in results if r["case"] == "floor")
        marginal_ms = 1000 * (job_cpu - tiny["cpu_seconds"]) / (n - tiny["images"])
        ratios["job_fixed_cpu_seconds"] = tiny["cpu_seconds"]
        ratios["job_fixed_wall_seconds"] = tiny["seconds"]
        ratios["floor_cpu_ms_per_image"] = floor_ms
        ratios["job_marginal_cpu_ms_per_image"] = round(marginal_ms, 2)
        ratios["floor_vs_job_marginal_cpu_per_image"] = round(floor_ms / marginal_ms, 3)
        job_seconds = tiny["seconds"] + FULL_NIH_IMAGES * marginal_ms / 1000 / cores
        floor_seconds = FULL_NIH_IMAGES * floor_ms / 1000 / cores
        ratios["projected_full_nih_job_hours"] = round(job_seconds / 3600, 2)
        ratios["projected_full_nih_floor_hours"] = round(floor_seconds / 3600, 2)
        ratios["projected_full_nih_job_vs_floor"] = round(floor_seconds / job_seconds, 3)

    report = {
        "bench": "bench-tfrecords",
        "num_images": n,
        "source_size": _SOURCE_SIZE.value,
        "image_size": size,
        "cpu_count": os.cpu_count(),
        "load_average": loads,
        "cases": results,
        "ratios": ratios,
    }
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\n{'case':12s} {'images':>7s} {'seconds':>8s} {'images/s':>9s} {'peak MB':>8s}")
    for r in results:
        seconds = r.get("seconds", r.get("seconds_with_startup"))
        print(
            f"{r['case']:12s} {r['images']:7d} {seconds:8.2f} {r.get('images_per_s', float('nan')):9.1f} {r.get('peak_rss_mb', ''):>8}"
        )
    print("ratios:", json.dumps(ratios))
    print("load average:", loads)
    print(f"wrote {_OUTPUT.value}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
