"""Writes the demo set: labels, splits, boxes and rendered images, in NIH ChestX-ray14's layout.

`write(DemoDataConfig(...))` (or `generate(output_dir, **options)`) writes into `output_dir` the
files listed in `layout`. Output is deterministic for a seed: each image has its own random
generator derived from the seed and the image's number, so the number of worker processes does not
change a byte. The label file is written last (renamed into place), so its presence means the set
is complete.

TensorFlow-free: only numpy and PIL, local files through `open`.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import numbers
import os
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from absl import logging

from cxr_cli import config_flags, console
from demo_data import label_model, layout, layouts, png, render
from demo_data.canvas import Box
from demo_data.layout import DemoImage
from tfrecords import schema

_field = config_flags.field


@dataclasses.dataclass(frozen=True)
class DemoDataConfig:
    """What `write` writes; validated on construction."""

    output_dir: str = _field("data/demo", "Folder to write the data set into (a local path).")
    layout: str = dataclasses.field(
        default="nih",
        metadata={
            "help": "The download layout to write: NIH ChestX-ray14's, or another data set's with its "
            "quirks (demo_data/layouts.py).",
            "choices": layouts.LAYOUTS,
        },
    )
    num_images: int = _field(2000, "Images to generate.")
    image_size: int = _field(1024, "Height and width of each PNG, in pixels.")
    seed: int = _field(0, "Random seed; the same seed gives the same bytes.")
    num_patients: int | None = _field(None, "Patients; default round(0.3 * num_images).")
    num_workers: int | None = _field(None, "Rendering processes; default one per CPU core.")
    overwrite: bool = _field(False, "Replace a data set already in output_dir.")
    compress_level: int = _field(png.PNG_COMPRESS_LEVEL, "zlib level of the PNGs, 0-9.")
    box_share: float = _field(
        label_model.NIH_BOX_SHARE,
        "Share of the test images with one of NIH's 8 boxed findings that get boxes (NIH's: 880/13984).",
    )

    def __post_init__(self):
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise console.ValidationError(
                f"DemoDataConfig.output_dir must be a non-empty path, got {self.output_dir!r}."
            )
        minimum = {"num_images": 1, "image_size": 1, "num_patients": 1, "num_workers": 1, "seed": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            if value is None and name in ("num_patients", "num_workers"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise console.ValidationError(
                    f"DemoDataConfig.{name} must be an integer >= {low}, got {value!r}."
                )
        level = self.compress_level
        if isinstance(level, bool) or not isinstance(level, numbers.Integral) or not 0 <= level <= 9:
            raise console.ValidationError(
                f"DemoDataConfig.compress_level must be an integer in 0..9, got {level!r}."
            )
        if not isinstance(self.box_share, numbers.Real) or not 0.0 <= self.box_share <= 1.0:
            raise console.ValidationError(
                f"DemoDataConfig.box_share must be a number in [0, 1], got {self.box_share!r}."
            )
        label_model.check_counts(self.num_images, self.num_patients)
        if self.layout not in layouts.LAYOUTS:
            raise console.ValidationError(
                f"DemoDataConfig.layout must be one of {layouts.LAYOUTS}, got {self.layout!r}."
            )


def generate(output_dir: str, **options: Any) -> dict[str, Any]:
    """Writes a demo set into `output_dir`; `options` are the other fields of `DemoDataConfig`.

    Raises:
      TypeError: an option that is not a field of `DemoDataConfig`.
      See `write` for the rest.
    """
    return write(DemoDataConfig(output_dir=output_dir, **options))


def write(config: DemoDataConfig) -> dict[str, Any]:
    """Writes a synthetic data set in the NIH ChestX-ray14 layout (see the module docstring).

    Args:
      config: what to write.

    Returns:
      A summary: output_dir, num_images, num_patients, image_size, seed, label_counts (by label,
      incl. "No Finding"), multi_finding_images, train_val_images, test_images, train_val_patients,
      test_patients, boxed_images, boxes (by finding), seconds, images_per_second.

    Raises:
      FileExistsError: output_dir already holds a Data_Entry_2017.csv and overwrite is False.
    """
    rows = label_model.sample_images(config.num_images, num_patients=config.num_patients, seed=config.seed)
    train_val, test = label_model.split_patients(rows, seed=config.seed)
    if config.layout != "nih":
        return _write_other_layout(config, rows, set(test))
    boxed = label_model.choose_boxed_images(rows, test, share=config.box_share, seed=config.seed)
    _prepare_output_dir(config.output_dir, config.overwrite)

    start = time.monotonic()
    boxes = _write_images(config, rows, set(boxed))
    _write_text(config.output_dir, layout.BBOX_NAME, layout.bbox_text(boxes))
    _write_text(config.output_dir, layout.TRAIN_VAL_LIST_NAME, layout.list_text(train_val))
    _write_text(config.output_dir, layout.TEST_LIST_NAME, layout.list_text(test))
    # Written last and renamed into place: its presence marks a complete data set.
    _write_text(config.output_dir, layout.CSV_NAME + ".tmp", layout.csv_text(rows))
    csv_path = os.path.join(config.output_dir, layout.CSV_NAME)
    os.replace(csv_path + ".tmp", csv_path)
    seconds = time.monotonic() - start
    logging.info("demo data: wrote %s in %.1f s", config.output_dir, seconds)
    return _summary(config, rows, test, boxes, seconds)


def _write_other_layout(config: DemoDataConfig, rows: Sequence[DemoImage], test: set[str]) -> dict[str, Any]:
    """Another data set's layout (`layouts`), from the same rows and painted findings."""
    marker = os.path.join(config.output_dir, _LAYOUT_MARKER)
    if os.path.exists(marker) and not config.overwrite:
        raise FileExistsError(
            f"{config.output_dir} already holds a demo set ({marker} exists); pass overwrite=True "
            "(--overwrite) to replace it, or choose another output_dir."
        )
    if os.path.exists(marker):
        shutil.rmtree(config.output_dir)
    start = time.monotonic()
    pixels = _PixelSource(config, rows)
    summary = layouts.write_layout(config.layout, config.output_dir, rows, test, pixels.get, seed=config.seed)
    _write_text(config.output_dir, _LAYOUT_MARKER, config.layout + "\n")  # Last: the set is complete.
    seconds = time.monotonic() - start
    return (
        {"output_dir": config.output_dir, "image_size": config.image_size, "seed": config.seed}
        | summary
        | {"seconds": round(seconds, 2)}
    )


# Written last into another layout's folder: its presence marks a complete demo set.
_LAYOUT_MARKER = ".demo-layout"


class _PixelSource:
    """Rendered pixels in row order, from the worker pool; a second view rendered here."""

    def __init__(self, config: DemoDataConfig, rows: Sequence[DemoImage]):
        self._config = config
        self._rows = rows
        tasks = [_Task(i, config.seed, row.findings, config.image_size, -1) for i, row in enumerate(rows)]
        self._results = iter(_render_all(tasks, config.num_workers or os.cpu_count() or 1))
        self._current: tuple[int, Any, dict[str, Box]] = (-1, None, {})

    def get(self, number: int, variant: int) -> tuple[Any, dict[str, Box]]:
        if variant:
            rng = render.image_rng(self._config.seed, number + variant * 10**7)
            rendering = render.render(self._rows[number].findings, rng, self._config.image_size)
            return rendering.pixels, dict(rendering.boxes)
        while self._current[0] < number:
            self._current = next(self._results)
        return self._current[1], self._current[2]


# ---------------------------------------------------------------------------------------------
# Rendering, in worker processes.


@dataclasses.dataclass(frozen=True)
class _Task:
    number: int  # The image's row in the label file.
    seed: int
    findings: tuple[str, ...]
    image_size: int
    compress_level: int


def _render_task(task: _Task) -> tuple[int, Any, dict[str, Box]]:
    """Renders and encodes one image; returns its number, PNG and the boxes of NIH's 8 findings.

    A task with compress_level -1 returns the pixels and every box instead (other layouts).
    """
    rendering = render.render(task.findings, render.image_rng(task.seed, task.number), task.image_size)
    if task.compress_level < 0:
        return task.number, rendering.pixels, dict(rendering.boxes)
    boxes = {name: box for name, box in rendering.boxes.items() if name in layout.BBOX_LABELS}
    return task.number, png.encode_png(rendering.pixels, compress_level=task.compress_level), boxes


def _write_images(
    config: DemoDataConfig, rows: Sequence[DemoImage], boxed: set[str]
) -> list[tuple[str, str, Box]]:
    """Renders and writes every image; returns (image index, finding, box) of the boxed images."""
    images_dir = os.path.join(config.output_dir, layout.IMAGES_SUBDIR)
    os.makedirs(images_dir, exist_ok=True)
    tasks = [
        _Task(i, config.seed, row.findings, config.image_size, config.compress_level)
        for i, row in enumerate(rows)
    ]
    workers = config.num_workers or os.cpu_count() or 1
    logging.info(
        "demo data: rendering %d images of %dx%d on %d processes",
        len(rows),
        config.image_size,
        config.image_size,
        workers,
    )
    progress = console.Progress(
        len(rows),
        description="demo data",
        unit="images",
        logger=logging.get_absl_logger(),
        final_line=True,
    )
    boxes = []
    for done, (number, encoded, found) in enumerate(_render_all(tasks, workers), start=1):
        row = rows[number]
        with open(os.path.join(images_dir, row.image_index), "wb") as f:
            f.write(encoded)
        if row.image_index in boxed:
            boxes.extend(_boxes_of(row, found))
        progress.update(done)
    progress.close()
    return boxes


def _render_all(tasks: Sequence[_Task], workers: int) -> Iterable[tuple[int, bytes, dict[str, Box]]]:
    """Renders the tasks on `workers` processes; results arrive in task order."""
    if workers == 1:
        yield from map(_render_task, tasks)
        return
    chunksize = max(1, min(16, len(tasks) // (workers * 8)))
    with multiprocessing.get_context(start_method()).Pool(workers) as pool:
        yield from pool.imap(_render_task, tasks, chunksize=chunksize)


def start_method() -> str:
    """How rendering processes start: "fork" unless the caller has loaded TensorFlow.

    A fork starts fastest (nothing is imported again) and is safe from this package's own binary,
    which never loads TensorFlow. A caller that has loaded it (tests, benchmarks, notebooks) runs
    TensorFlow's threads, which a fork would copy mid-lock; its workers are spawned instead: fresh
    interpreters that import only this package (numpy, PIL). Spawning, like any non-fork start,
    needs the caller's main module to be importable without side effects (the
    `if __name__ == "__main__":` idiom).
    """
    if "tensorflow" in sys.modules or "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork"


def _boxes_of(row: DemoImage, found: dict[str, Box]) -> list[tuple[str, str, Box]]:
    boxes = []
    for finding in row.findings:
        if finding not in layout.BBOX_LABELS:
            continue
        if finding in found:
            boxes.append((row.image_index, finding, found[finding]))
        else:  # The pattern changed no pixel visibly (e.g. clipped at full brightness): nothing to box.
            logging.warning("demo data: %s: no visible %s pattern, so no box", row.image_index, finding)
    return boxes


# ---------------------------------------------------------------------------------------------
# Files and bookkeeping.


def _write_text(output_dir: str, name: str, text: str) -> None:
    with open(os.path.join(output_dir, name), "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Creates output_dir, or clears what this generator wrote there if overwrite is True.

    Raises:
      FileExistsError: output_dir already holds a data set and overwrite is False.
    """
    csv_path = os.path.join(output_dir, layout.CSV_NAME)
    if os.path.exists(csv_path):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir} already holds a data set ({csv_path} exists); "
                "pass overwrite=True (--overwrite) to replace it, or choose another output_dir."
            )
        # Replace only what this generator writes, so no stale image of a bigger set remains.
        shutil.rmtree(os.path.join(output_dir, os.path.dirname(layout.IMAGES_SUBDIR)), ignore_errors=True)
        for name in (layout.CSV_NAME, layout.TRAIN_VAL_LIST_NAME, layout.TEST_LIST_NAME, layout.BBOX_NAME):
            path = os.path.join(output_dir, name)
            if os.path.exists(path):
                os.remove(path)
    os.makedirs(output_dir, exist_ok=True)


def _summary(
    config: DemoDataConfig,
    rows: Sequence[DemoImage],
    test: Sequence[str],
    boxes: Sequence[tuple[str, str, Box]],
    seconds: float,
) -> dict[str, Any]:
    label_counts = {name: 0 for name in schema.LABELS}
    for row in rows:
        for name in row.findings or (schema.NO_FINDING,):
            label_counts[name] += 1
    test_set = set(test)
    box_counts = {name: 0 for name in layout.BBOX_LABELS}
    for _, finding, _ in boxes:
        box_counts[finding] += 1
    return {
        "output_dir": config.output_dir,
        "num_images": len(rows),
        "num_patients": len({row.patient_id for row in rows}),
        "image_size": config.image_size,
        "seed": config.seed,
        "label_counts": label_counts,
        "multi_finding_images": sum(len(row.findings) > 1 for row in rows),
        "train_val_images": len(rows) - len(test_set),
        "test_images": len(test_set),
        "train_val_patients": len({r.patient_id for r in rows if r.image_index not in test_set}),
        "test_patients": len({r.patient_id for r in rows if r.image_index in test_set}),
        "boxed_images": len({image_index for image_index, _, _ in boxes}),
        "boxes": box_counts,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(rows) / max(seconds, 1e-9), 1),
    }
