r"""Where the training loop's time goes: the real `fit` of the demo and full profiles, attributed.

    python -m benchmarks.profile_train        # ~10 minutes on 2 shared cores

For each profile (demo: 64x64, the demo split's 1,348 train / 192 val records; full: 256x256, a
few steps per epoch) and each variant (a set of TrainConfig overrides, e.g. before/after a
change, run one after the other in the same process), `trainer.training.runner.train` runs a short
training on synthetic records (data/bench/train-<profile>, written once) and the benchmark
splits each epoch's wall time into:

  * train steps: the time Keras spends inside its compiled train function, itself split with
    side-by-side measurements of the same model on one batch held in memory (the "bare" step:
    model + augmentation, loss only) into model + augmentation, metric updates (the same step
    compiled with the run's metrics, minus the bare step) and input wait (what is left);
  * validation (the whole `evaluate` pass inside `fit`, without callback time);
  * each callback's hooks (every hook of every callback is timed);
  * the rest (Keras' own per-step and per-epoch work: log conversion, metric results).

It also reports the process CPU time per wall second during epochs (cores busy), the spread of
epoch wall times, and the training loop's images/s against the bare step's (the ratio). The
first epoch (tracing, compilation) is left out of the steady-state figures; it is where the
TensorFlow profiler records a trace of a few steps, into the run's tensorboard/ directory
(runs/bench/<profile>/<variant>/tensorboard, TensorBoard's profile tab reads it).

Writes runs/bench/train-attribution.json and prints a table. Other processes share the CPU:
compare the variants of one run, not absolute figures across runs; the load average before
and after is recorded.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from tfrecords import codec, schema
from tfrecords import dataset as dataset_lib
from tfrecords import manifest as manifest_lib
from trainer.model import augment as augment_lib
from trainer.model import models as models_lib
from trainer.model import objectives
from trainer.model import run_dir as run_dir_lib
from trainer.training import callbacks as callbacks_lib
from trainer.training import config as config_lib
from trainer.training import inputs, task
from trainer.training import runner as train_lib

_PROFILES = flags.DEFINE_list("profiles", ["demo", "full"], "Profiles to run (demo, full).")
_VARIANTS = flags.DEFINE_list("variants", None, "Variants to run (default: all of VARIANTS).")
_FULL_VARIANTS = flags.DEFINE_list(
    "full_variants", None, "Variants of the full profile (default: --variants); its runs are the long ones."
)
_DATA_DIR = flags.DEFINE_string("data_dir", "data/bench", "Where the synthetic records go (reused).")
_RUN_ROOT = flags.DEFINE_string("run_root", "runs/bench", "Run directories: <run_root>/<profile>/<variant>.")
_OUTPUT = flags.DEFINE_string("output", "runs/bench/train-attribution.json", "The JSON report.")
_BARE_STEPS = flags.DEFINE_integer("bare_steps", 0, "Timed bare steps per round (0: the profile's).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds of the bare-step cases, alternating; the best counts.")
_LOOP_FLOOR = flags.DEFINE_list(
    "loop_floor_steps_per_execution",
    ["1", "6"],
    "Measure the loop's own cost per step (a one-layer model) at these steps_per_execution; empty: skip.",
)
_FLOPS_PROFILES = flags.DEFINE_list(
    "flops_profiles", ["demo", "full"], "Profiles whose model FLOPs per image are counted; empty: none."
)
_TRACE_STEPS = flags.DEFINE_integer("trace_steps", 3, "Steps of the first epoch traced by the profiler.")


@dataclasses.dataclass(frozen=True)
class Profile:
    """A training profile as the benchmark runs it."""

    image_size: int
    split_sizes: dict[str, int]
    epochs: int
    bare_steps: int
    overrides: dict[str, Any]


# Demo: the demo data set's split (2,000 images: 1,348 train, 192 val at 64x64), whole epochs.
# Full: the full profile at 256x256 with a short epoch (4 steps of 16) and NIH's ratio of
# validation images to training images per epoch (10,816 / 75,708 = 0.143; 9 / 64 here).
PROFILES = {
    "demo": Profile(64, {"train": 1348, "val": 192}, epochs=4, bare_steps=20, overrides={}),
    "full": Profile(256, {"train": 128, "val": 9}, epochs=3, bare_steps=2, overrides={"steps_per_epoch": 4}),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """TrainConfig overrides, and whether to restore the loop as it was before (`before`)."""

    overrides: dict[str, Any]
    before: bool = False  # One AUC metric per label and a new validation iterator per epoch.


# "after" is the trainer as it is (its profile's defaults); "before" restores the loop as it
# was. Both use the precision `auto` picks, so both compute alike; "after_fp32" is the current
# loop in float32, whatever `auto` picks.
VARIANTS: dict[str, Variant] = {
    "before": Variant({"steps_per_execution": 1, "validation_batch_size_per_replica": None}, before=True),
    "after": Variant({}),
    # Several steps per compiled call (6 divides the demo's 42 steps and 6 validation steps).
    "after_spe6": Variant({"steps_per_execution": 6}),
    # The current loop in float32, for the precision table `mixed_precision=auto` follows.
    "after_fp32": Variant({"mixed_precision": "none"}),
}


def _separate_class_aucs() -> list[keras.metrics.Metric]:
    """The metrics as compiled before: the mean AUC and one AUC metric per label."""
    return [
        keras.metrics.BinaryAccuracy(name="binary_accuracy"),
        objectives.MeanAUC(name="auc"),
        *[objectives.ClassAUC(i) for i in range(schema.NUM_LABELS)],
    ]


@contextlib.contextmanager
def _as_before(variant: Variant) -> Iterator[None]:
    """Patches the task back to per-label AUC metrics and a validation pass without fixed steps."""
    if not variant.before:
        yield
        return
    plan_run, build_metrics = task.plan_run, task.build_metrics

    def old_plan(*args, **kwargs):
        return dataclasses.replace(plan_run(*args, **kwargs), validation_steps=None)

    task.plan_run, task.build_metrics = old_plan, _separate_class_aucs
    try:
        yield
    finally:
        task.plan_run, task.build_metrics = plan_run, build_metrics


def _load() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------
# Records.


def write_records(records_dir: str, image_size: int, split_sizes: dict[str, int], *, seed: int = 0) -> None:
    """Writes synthetic raw records (random pixels; demo-like label rates) with a manifest.

    Kept when a manifest with the same size and split counts is already there.
    """
    try:
        manifest = manifest_lib.read_manifest(records_dir)
        if manifest.image_size == image_size and all(
            split in manifest.splits and manifest.splits[split].records == n
            for split, n in split_sizes.items()
        ):
            return
    except (manifest_lib.ManifestError, OSError):
        pass
    rng = np.random.default_rng(seed)
    os.makedirs(records_dir, exist_ok=True)
    splits, counter = {}, 0
    for split, size in split_sizes.items():
        name = manifest_lib.shard_name(split, 0, 1)
        path = os.path.join(records_dir, name)
        counts = np.zeros(schema.NUM_LABELS, np.int64)
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(size):
                labels = np.zeros(schema.NUM_LABELS, np.int64)
                labels[: len(schema.FINDINGS)] = rng.random(len(schema.FINDINGS)) < 0.06
                labels[-1] = int(not labels.any())
                counts += labels
                metadata = schema.ImageMetadata(f"{counter:08d}_000.png", counter, 0, 50, "M", "PA")
                pixels = rng.integers(0, 256, (image_size, image_size), dtype=np.uint8)
                writer.write(codec.make_example(pixels, metadata, labels).SerializeToString())
                counter += 1
        shard = manifest_lib.ShardInfo(name=name, records=size, sha256=manifest_lib.sha256_file(path))
        splits[split] = manifest_lib.SplitInfo(
            records=size,
            patients=size,
            label_counts=dict(zip(schema.LABELS, counts.tolist())),
            shards=(shard,),
        )
    manifest_lib.write_manifest(
        records_dir,
        manifest_lib.Manifest(
            options={"image_size": image_size, "image_format": "raw", "split": "patient"},
            splits=splits,
            rejects={},
            input_rows=counter,
        ),
    )


# ---------------------------------------------------------------------------------------------
# Instrumenting fit.


def runqueue_wait_seconds() -> float:
    """Seconds this process's threads have waited for a CPU while runnable (Linux schedstat).

    Over an interval, its increase per wall second is the CPU the machine's other processes
    took from this one; NaN where /proc/self/task/*/schedstat is missing.
    """
    total, found = 0, False
    task_dir = "/proc/self/task"
    try:
        tasks = os.listdir(task_dir)
    except OSError:
        return float("nan")
    for thread in tasks:
        try:
            with open(os.path.join(task_dir, thread, "schedstat")) as f:
                total += int(f.read().split()[1])
                found = True
        except (OSError, IndexError, ValueError):
            continue  # The thread ended meanwhile.
    return total / 1e9 if found else float("nan")


_CALLBACK_HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_test_begin",
    "on_test_end",
    "on_test_batch_begin",
    "on_test_batch_end",
)


class LoopRecorder:
    """Times a `fit`: epochs, train-function calls, validation, and every callback's hooks.

    `instrument()` wraps the `CallbackList` that `fit` builds around `probe` (pass `probe` in
    the fit's callbacks): its dispatch methods mark when each step and epoch starts and ends,
    and each callback's hooks add their time to that callback. Hooks are wrapped after
    Keras has decided whether it may run batch hooks on a thread, so that decision is unchanged.
    """

    def __init__(self):
        self.epochs: list[dict[str, Any]] = []
        self.probe = _Probe(self)
        self._epoch: dict[str, Any] | None = None
        self._step_start: float | None = None
        self._in_validation = False

    @contextlib.contextmanager
    def instrument(self) -> Iterator[None]:
        original = keras.callbacks.CallbackList.__init__
        recorder = self

        def init(callback_list, *args, **kwargs):
            original(callback_list, *args, **kwargs)
            if any(callback is recorder.probe for callback in callback_list.callbacks):
                recorder._attach(callback_list)

        keras.callbacks.CallbackList.__init__ = init
        try:
            yield
        finally:
            keras.callbacks.CallbackList.__init__ = original

    def _attach(self, callback_list: keras.callbacks.CallbackList) -> None:
        names = collections.Counter()
        for callback in callback_list.callbacks:
            if callback is self.probe:
                continue
            name = type(callback).__name__
            names[name] += 1
            if names[name] > 1:
                name = f"{name}_{names[name]}"
            for hook in _CALLBACK_HOOKS:
                setattr(callback, hook, self._timed_hook(name, getattr(callback, hook)))
        wrap = self._wrap_dispatch
        wrap(callback_list, "on_epoch_begin", before=self._begin_epoch)
        wrap(callback_list, "on_epoch_end", after=self._end_epoch)
        wrap(callback_list, "on_train_batch_begin", after=self._begin_step)
        wrap(callback_list, "on_train_batch_end", before=self._end_step)

    @staticmethod
    def _wrap_dispatch(callback_list, name, *, before=None, after=None) -> None:
        method = getattr(callback_list, name)

        def dispatch(*args, **kwargs):
            if before:
                before(*args)
            result = method(*args, **kwargs)
            if after:
                after(*args)
            return result

        setattr(callback_list, name, dispatch)

    def _timed_hook(self, name: str, hook):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                if self._epoch is not None:
                    seconds = time.perf_counter() - start
                    self._epoch["callbacks"][name] += seconds
                    if self._in_validation:
                        self._epoch["callbacks_in_validation"] += seconds

        return timed

    def _begin_epoch(self, epoch, *args) -> None:
        self._epoch = {
            "epoch": epoch,
            "start": time.perf_counter(),
            "cpu_start": time.process_time(),
            "runqueue_start": runqueue_wait_seconds(),
            "load_average_1min_start": os.getloadavg()[0],
            "train_function_calls": 0,
            "train_function_seconds": 0.0,
            "validation_wall_seconds": 0.0,
            "validation_cpu_seconds": 0.0,
            "callbacks": collections.defaultdict(float),
            "callbacks_in_validation": 0.0,
        }

    def _end_epoch(self, *args) -> None:
        epoch = self._epoch
        epoch["wall_seconds"] = time.perf_counter() - epoch.pop("start")
        epoch["cpu_seconds"] = time.process_time() - epoch.pop("cpu_start")
        epoch["runqueue_wait_seconds"] = runqueue_wait_seconds() - epoch.pop("runqueue_start")
        epoch["callbacks"] = dict(epoch["callbacks"])
        self.epochs.append(epoch)
        self._epoch = None

    def _begin_step(self, *args) -> None:
        self._step_start = time.perf_counter()

    def _end_step(self, *args) -> None:
        if self._epoch is not None and self._step_start is not None:
            self._epoch["train_function_seconds"] += time.perf_counter() - self._step_start
            self._epoch["train_function_calls"] += 1
        self._step_start = None

    def time_evaluate(self, evaluate):
        """Wraps `model.evaluate` (which `fit` calls for validation) to time the whole pass."""

        def timed(*args, **kwargs):
            start, cpu_start = time.perf_counter(), time.process_time()
            self._in_validation = True
            try:
                return evaluate(*args, **kwargs)
            finally:
                self._in_validation = False
                if self._epoch is not None:
                    self._epoch["validation_wall_seconds"] += time.perf_counter() - start
                    self._epoch["validation_cpu_seconds"] += time.process_time() - cpu_start

        return timed


class _Probe(keras.callbacks.Callback):
    """Marks the fit's CallbackList for `LoopRecorder`, times validation, keeps the model."""

    def __init__(self, recorder: LoopRecorder):
        super().__init__()
        self._recorder = recorder

    def set_model(self, model):
        super().set_model(model)
        if not getattr(model.evaluate, "_timed", False):
            model.evaluate = self._recorder.time_evaluate(model.evaluate)
            model.evaluate._timed = True


class ProfilerTrace(keras.callbacks.Callback):
    """Records a TensorFlow profiler trace of `steps` train steps of the first epoch into `logdir`."""

    def __init__(self, logdir: str, *, first_step: int = 2, steps: int = 3):
        super().__init__()
        self.logdir, self.first_step, self.steps = logdir, first_step, steps
        self._active = False
        self.traced_steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        if not self._active and self.traced_steps == 0 and batch >= self.first_step and self.steps:
            tf.profiler.experimental.start(self.logdir)
            self._active = True

    def on_train_batch_end(self, batch, logs=None):
        if self._active:
            self.traced_steps += 1
            if self.traced_steps >= self.steps:
                self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()

    def _stop(self):
        if self._active:
            tf.profiler.experimental.stop()
            self._active = False


# ---------------------------------------------------------------------------------------------
# The bare step.


def bare_step_seconds(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    config: config_lib.TrainConfig,
    augment_placement: str,
    *,
    steps: int,
    rounds: int,
) -> dict[str, float]:
    """Seconds per training step of `model` on one batch held in memory, with and without metrics.

    Cases: "bare" (loss only), "bare_with_fit_metrics" (the trainer's metrics as compiled now)
    and "bare_with_separate_class_aucs" (one AUC metric per label, as before).

    The batch comes from the run's own training records; with the "dataset" augmentation
    placement it is augmented in tf.data as in `fit`. The model is recompiled (fresh
    optimizer) for each case; the cases alternate in rounds and the best round counts.
    """
    images, labels = next(
        iter(
            dataset_lib.build_dataset(
                config.records_dir,
                "train",
                batch_size=config.batch_size_per_replica * strategy.num_replicas_in_sync,
                training=True,
                seed=0,
            )
        )
    )
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    if augment_placement == "dataset":
        augment_fn = augment_lib.make_augment_fn(config.augment_config())
        seeds = tf.data.Dataset.random(seed=0).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda element, seed: (augment_fn(element[0], seed), element[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    loss, jit_compile = model.loss, model.jit_compile
    functions = {}
    # Each case is compiled and traced once; a traced function keeps the optimizer and metric
    # variables it captured, so the cases can alternate after the model was recompiled.
    cases = (
        ("bare", None),
        ("bare_with_fit_metrics", task.build_metrics()),
        ("bare_with_separate_class_aucs", _separate_class_aucs()),
    )
    for name, metrics in cases:
        with strategy.scope():
            model.compile(
                optimizer=keras.optimizers.Adam(1e-4), loss=loss, metrics=metrics, jit_compile=jit_compile
            )
        model.make_train_function(force=True)
        functions[name] = model.train_function
        for _ in range(2):  # Tracing and warm-up.
            _finish(functions[name](iterator))
    best = {name: float("inf") for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(steps):
                _finish(function(iterator))
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def _finish(outputs) -> None:
    # Fetching a value waits for the step to finish.
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, outputs)


def input_only_images_per_second(
    config: config_lib.TrainConfig, strategy: tf.distribute.Strategy, augment_placement: str, *, batches: int
) -> float:
    """Images/s of the run's training input pipeline alone (the model idle)."""
    augment_fn = None
    if augment_placement == "dataset":
        augment_fn = augment_lib.make_augment_fn(config.augment_config())
    iterator = iter(
        inputs.distributed_dataset(config, strategy, "train", training=True, augment_fn=augment_fn)
    )
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        element = next(iterator)
    _finish(element)
    batch_size = config.batch_size_per_replica * strategy.num_replicas_in_sync
    return batches * batch_size / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# One run and its attribution.


def run_variant(profile_name: str, variant: str) -> dict[str, Any]:
    """Trains `profile_name` with `variant`'s overrides and attributes its epochs."""
    profile = PROFILES[profile_name]
    records_dir = os.path.join(_DATA_DIR.value, f"train-{profile_name}-{profile.image_size}")
    write_records(records_dir, profile.image_size, profile.split_sizes)
    run_dir = os.path.join(_RUN_ROOT.value, profile_name, variant)
    shutil.rmtree(run_dir, ignore_errors=True)
    config = config_lib.get_profile(
        profile_name,
        **{
            **profile.overrides,
            **VARIANTS[variant].overrides,
            "records_dir": records_dir,
            "run_dir": run_dir,
            "epochs": profile.epochs,
            "early_stopping_patience": 0,
            "verbose": 0,
            "overwrite": True,
        },
    )
    strategy = train_lib.create_strategy("auto")
    recorder = LoopRecorder()
    tracer = ProfilerTrace(os.path.join(run_dir, run_dir_lib.TENSORBOARD_DIR), steps=_TRACE_STEPS.value)
    load = _load()
    start = time.perf_counter()
    with recorder.instrument(), _as_before(VARIANTS[variant]):
        result = train_lib.train(config, strategy, extra_callbacks=[recorder.probe, tracer])
    train_seconds = time.perf_counter() - start
    with open(os.path.join(run_dir, run_dir_lib.CONFIG_FILE)) as f:
        run_config = json.load(f)
    placement = run_config.get("augment_placement", "model")
    steps_per_epoch = run_config["steps_per_epoch"]
    model = recorder.probe.model
    input_rate = input_only_images_per_second(config, strategy, placement, batches=min(steps_per_epoch, 20))
    bare = bare_step_seconds(
        model,
        strategy,
        config,
        placement,
        steps=_BARE_STEPS.value or profile.bare_steps,
        rounds=_ROUNDS.value,
    )
    batch_size = run_config["global_batch_size"]
    report = attribute(
        recorder.epochs,
        bare,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        separate_class_aucs=VARIANTS[variant].before,
    )
    report.update(
        profile=profile_name,
        variant=variant,
        overrides=VARIANTS[variant].overrides,
        patched_as_before=VARIANTS[variant].before,
        image_size=profile.image_size,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        val_records=profile.split_sizes["val"],
        epochs=profile.epochs,
        train_call_seconds=train_seconds,
        best_val_auc=result.best_val_auc,
        run_config={k: v for k, v in run_config.items() if k not in ("train_config", "labels")},
        input_only_images_per_second=input_rate,
        profiler_trace_steps=tracer.traced_steps,
        profiler_trace_dir=tracer.logdir,
        load_average_1min_before=load,
    )
    del model, recorder
    keras.backend.clear_session()
    gc.collect()
    return report


def attribute(
    epochs: list[dict[str, Any]],
    bare: dict[str, float],
    *,
    steps_per_epoch: int,
    batch_size: int,
    separate_class_aucs: bool = False,
) -> dict[str, Any]:
    """Splits the steady epochs' (all but the first) wall time; returns the report of one run.

    Per epoch: wall = train function + validation + callbacks + rest, and the train function
    time = steps x bare step (model + augmentation) + steps x metric cost + input wait, the
    metric cost being that of the metrics the run compiled (`separate_class_aucs`: as before).
    """
    if len(epochs) < 2:
        raise ValueError(f"Attribution needs at least 2 epochs (the first is left out), got {len(epochs)}.")
    steady = epochs[1:]
    n = len(steady)
    compiled = "bare_with_separate_class_aucs" if separate_class_aucs else "bare_with_fit_metrics"
    metric_step = max(bare[compiled] - bare["bare"], 0.0)

    def mean(values):
        return float(np.mean(list(values)))

    wall = mean(e["wall_seconds"] for e in steady)
    train_fn = mean(e["train_function_seconds"] for e in steady)
    validation = mean(e["validation_wall_seconds"] - e["callbacks_in_validation"] for e in steady)
    callbacks = {
        name: sum(e["callbacks"].get(name, 0.0) for e in steady) / n for name in steady[0]["callbacks"]
    }
    model_aug = steps_per_epoch * bare["bare"]
    metrics = steps_per_epoch * metric_step
    seconds = {
        "model_and_augmentation": model_aug,
        "metric_updates": metrics,
        "input_wait": train_fn - model_aug - metrics,
        "validation": validation,
        **{f"callback:{name}": value for name, value in callbacks.items()},
        "rest": wall - train_fn - validation - sum(callbacks.values()),
    }
    walls = [e["wall_seconds"] for e in steady]
    fit_rate = steps_per_epoch * batch_size * n / sum(walls)
    bare_rate = batch_size / bare["bare"]
    return {
        "epoch_wall_seconds": [e["wall_seconds"] for e in epochs],
        "epoch_cpu_cores": [e["cpu_seconds"] / e["wall_seconds"] for e in epochs],
        # CPU the machine's other processes took from this one while it was runnable, in cores.
        "epoch_runqueue_wait_cores": [e["runqueue_wait_seconds"] / e["wall_seconds"] for e in epochs],
        "steady_epoch_wall_seconds": wall,
        "seconds_per_epoch": seconds,
        "share_of_epoch": {k: v / wall for k, v in seconds.items()},
        "bare_step_seconds": bare,
        "fit_images_per_second": fit_rate,
        "bare_images_per_second": bare_rate,
        "bare_with_metrics_images_per_second": {k: batch_size / v for k, v in bare.items()},
        "ratios": {
            "fit/bare": fit_rate / bare_rate,
            "cpu_cores": sum(e["cpu_seconds"] for e in steady) / sum(walls),
            "runqueue_wait_cores": sum(e["runqueue_wait_seconds"] for e in steady) / sum(walls),
            "epoch_spread": max(walls) / min(walls) - 1,
        },
        "raw_epochs": epochs,
    }


# ---------------------------------------------------------------------------------------------
# The loop's own cost.


def loop_floor_seconds_per_step(steps_per_execution: int, *, steps: int = 120) -> dict[str, float]:
    """Wall seconds per step of `fit` around a model that costs almost nothing (one Dense layer).

    The trainer's metrics, callbacks (without files: a temporary run directory) and per-step
    dispatch are what remains: the host-side cost a step pays whatever the device, and the
    floor under which no accelerator makes a step faster. Measured over a second epoch.
    """
    batch = 32
    dataset = tf.data.Dataset.from_tensors(
        (tf.zeros([batch, 4]), tf.cast(tf.random.uniform([batch, schema.NUM_LABELS]) < 0.3, tf.float32))
    ).repeat()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(schema.NUM_LABELS, activation="sigmoid")])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="binary_crossentropy",
        metrics=task.build_metrics(),
        steps_per_execution=steps_per_execution,
    )
    scratch = tempfile.mkdtemp(prefix="loop-floor-")
    try:
        paths = callbacks_lib.chief_paths(scratch, os.path.join(scratch, run_dir_lib.BACKUP_DIR))
        callbacks = callbacks_lib.build_callbacks(lambda epoch: 1e-3, paths, early_stopping_patience=0)
        recorder = LoopRecorder()
        with recorder.instrument():
            model.fit(
                dataset,
                epochs=2,
                steps_per_epoch=steps,
                validation_data=dataset,
                validation_steps=6,
                callbacks=[*callbacks, recorder.probe],
                verbose=0,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    epoch = recorder.epochs[-1]
    return {
        "steps_per_execution": steps_per_execution,
        "epoch_seconds_per_step": epoch["wall_seconds"] / steps,
        "train_function_seconds_per_step": epoch["train_function_seconds"] / steps,
        "callback_seconds_per_epoch": sum(epoch["callbacks"].values()),
        "validation_seconds_per_epoch": epoch["validation_wall_seconds"],
    }


def forward_flops_per_image(profile_name: str) -> dict[str, Any]:
    """Floating-point operations of one image's forward pass of the profile's model at its size.

    Counted by TensorFlow's graph profiler on the frozen inference graph (a multiply-add counts
    2). A training step costs about 3x the forward pass (forward, and the backward pass's two
    products per layer).
    """
    from tensorflow.python.framework import convert_to_constants

    profile = PROFILES[profile_name]
    config = config_lib.get_profile(profile_name)
    model = models_lib.build_model(
        config.model, image_size=profile.image_size, depth=config.depth, base_filters=config.base_filters
    )
    spec = tf.TensorSpec([1, profile.image_size, profile.image_size, 1], tf.uint8)
    function = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    frozen = convert_to_constants.convert_variables_to_constants_v2(function)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    flops = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops
    return {
        "profile": profile_name,
        "image_size": profile.image_size,
        "parameters": model.count_params(),
        "forward_flops_per_image": int(flops),
        "training_flops_per_image_approx": 3 * int(flops),
    }


# ---------------------------------------------------------------------------------------------
# Output.

TARGETS = {"fit/bare": 0.85, "cpu_cores": 1.6, "epoch_spread": 0.15}


def print_table(runs: list[dict[str, Any]]) -> None:
    for run in runs:
        print(
            f"\n== {run['profile']} / {run['variant']}  ({run['image_size']}px, batch {run['batch_size']}, "
            f"{run['steps_per_epoch']} steps/epoch; steady epoch {run['steady_epoch_wall_seconds']:.2f} s)"
        )
        for key, value in run["seconds_per_epoch"].items():
            print(f"  {key:<36} {value:>8.2f} s  {100 * run['share_of_epoch'][key]:>6.1f}%")
    print(
        f"\n{'profile/variant':<22} {'fit img/s':>10} {'bare img/s':>11} {'fit/bare':>9} {'cores':>6} "
        f"{'spread':>7} {'waitcores':>9} {'input-only':>11} {'val AUC':>8}"
    )
    for run in runs:
        ratios = run["ratios"]
        print(
            f"{run['profile'] + '/' + run['variant']:<22} {run['fit_images_per_second']:>10.1f} "
            f"{run['bare_images_per_second']:>11.1f} {ratios['fit/bare']:>9.2f} {ratios['cpu_cores']:>6.2f} "
            f"{100 * ratios['epoch_spread']:>6.1f}% {ratios['runqueue_wait_cores']:>9.2f} "
            f"{run['input_only_images_per_second']:>11.1f} "
            f"{run['best_val_auc']:>8.3f}"
        )
    print("waitcores: CPU that other processes took from the run while it was runnable (cores).")
    print(
        f"targets: fit/bare >= {TARGETS['fit/bare']}, cores >= {TARGETS['cpu_cores']}, "
        f"spread <= {100 * TARGETS['epoch_spread']:.0f}%"
    )


def _write(report: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(report, f, indent=2)


def main(argv: list[str]) -> None:
    del argv
    variants = _VARIANTS.value or list(VARIANTS)
    full_variants = _FULL_VARIANTS.value or variants
    checks = (
        ("profiles", _PROFILES.value, PROFILES),
        ("variants", variants, VARIANTS),
        ("full_variants", full_variants, VARIANTS),
    )
    for flag, names, known in checks:
        unknown = [name for name in names if name not in known]
        if unknown:
            raise app.UsageError(f"--{flag}: unknown {unknown}; known: {list(known)}.")
    load_before = _load()
    report = {
        "benchmark": "train-attribution",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load_before},
        "targets": TARGETS,
        "runs": [],
    }
    runs = report["runs"]
    for profile in _PROFILES.value:
        for variant in full_variants if profile == "full" else variants:
            logging.info("profile %s, variant %s", profile, variant)
            runs.append(run_variant(profile, variant))
            _write(report)  # After each run, so an interrupted session keeps what finished.
    floor = [loop_floor_seconds_per_step(int(k)) for k in _LOOP_FLOOR.value]
    model_flops = [forward_flops_per_image(name) for name in _FLOPS_PROFILES.value]
    report.update(loop_floor=floor, model_flops=model_flops)
    report["load_average_1min"]["after"] = _load()
    _write(report)
    print_table(runs)
    for row in model_flops:
        print(
            f"{row['profile']} model at {row['image_size']}px: {row['parameters']:,} parameters, "
            f"{row['forward_flops_per_image'] / 1e9:.3f} GFLOP forward per image (training ~3x)"
        )
    for row in floor:
        print(
            f"loop floor (one-layer model, trainer's metrics and callbacks), steps_per_execution="
            f"{row['steps_per_execution']}: {1000 * row['epoch_seconds_per_step']:.2f} ms per step "
            f"({1000 * row['train_function_seconds_per_step']:.2f} ms in the train function)"
        )
    print(
        f"load average (1 min): {report['load_average_1min']['before']:.2f} before, "
        f"{report['load_average_1min']['after']:.2f} after; wrote {_OUTPUT.value}"
    )


if __name__ == "__main__":
    app.run(main)
