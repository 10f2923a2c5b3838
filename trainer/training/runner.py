"""The runner: creates the strategy and runs an experiment from the task's steps.

The binary (`trainer/train.py`) turns flags into a `TrainConfig` (trainer/training/config.py), creates
the strategy with `create_strategy` and calls `train`; the steps themselves are in
trainer/training/task.py, the callbacks in trainer/training/callbacks.py, the run directory's layout in
trainer/model/run_dir.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfrecords import manifest as manifest_lib
from trainer.model import export as export_lib
from trainer.model import run_dir as run_dir_lib
from trainer.training import callbacks as callbacks_lib
from trainer.training import config as config_lib
from trainer.training import display as console_callbacks
from trainer.training import keras_compat, task

STRATEGIES = ("auto", "mirrored", "one_device", "multi_worker")
# The start-up line naming the weights `export/` will hold (`--export_weights`).
EXPORT_WEIGHTS_LOG = {
    "best": "export_weights=best: export/ will hold the weights of the epoch with the best validation "
    "mean AUC, the same as checkpoints/best.keras.",
    "final": "export_weights=final: export/ will hold the last epoch's weights; checkpoints/best.keras "
    "keeps the epoch with the best validation mean AUC.",
}


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` returns (on every worker; only the chief wrote files)."""

    run_dir: str
    image_size: int
    num_replicas: int
    is_chief: bool
    initial_epoch: int  # > 0 when the run resumed from its backup.
    epochs_run: int  # Epochs trained by this call.
    history: dict[str, list[float]]  # This call's Keras history (epoch logs).
    best_val_auc: float
    jit_compile: bool
    export_dir: str | None  # None on non-chief workers.
    weights_sha256: str  # Digest of the final weights; equal across workers in sync training.


def create_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Creates the tf.distribute strategy named by `--strategy`.

    Args:
      name: "auto" (MirroredStrategy over all local GPUs when there are several, else one
        device), "mirrored" (all local GPUs, else all logical CPUs), "one_device", or
        "multi_worker" (MultiWorkerMirroredStrategy configured from the TF_CONFIG variable).

    Returns:
      The strategy. Create it before any other TensorFlow op (multi-worker needs that).

    Raises:
      ValueError: unknown name, or multi_worker without a TF_CONFIG with a cluster.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}.")
    if name == "multi_worker":
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        if not tf_config.get("cluster") or not tf_config.get("task"):
            raise ValueError(
                "strategy 'multi_worker' needs the TF_CONFIG environment variable with 'cluster' and "
                f"'task', e.g. {{'cluster': {{'worker': ['host1:port', 'host2:port']}}, "
                f"'task': {{'type': 'worker', 'index': 0}}}}; got TF_CONFIG={os.environ.get('TF_CONFIG')!r}."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if name in ("auto", "one_device"):
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    # "mirrored": the GPUs, or every logical CPU device (tests split the CPU in two).
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, str]:
    """Returns (is_chief, task name) of this process under `strategy`.

    The chief is task "chief", or "worker" 0 when the cluster has no chief; single-machine
    strategies are always the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True, "chief"
    task_type, task_id = resolver.task_type, resolver.task_id
    cluster = resolver.cluster_spec().as_dict()
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return is_chief, f"{task_type}-{task_id}"


@contextlib.contextmanager
def global_state(seed: int, dtype_policy: str) -> Iterator[None]:
    """Seeds Python, NumPy and TensorFlow and sets Keras' dtype policy; restores the policy after."""
    previous = keras.config.dtype_policy()
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(dtype_policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@dataclasses.dataclass(frozen=True)
class _Role:
    """This process's part in the run: whether it writes, and where its own files go."""

    is_chief: bool
    backup_dir: str
    multi_worker: bool


def _role(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy) -> _Role:
    is_chief, task_name = worker_role(strategy)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    # Each worker needs its own backup to resume; a single process uses backup/ itself.
    backup = run_dir_lib.backup_dir(config.run_dir, task_name if multi_worker else None)
    return _Role(is_chief=is_chief, backup_dir=backup, multi_worker=multi_worker)


def _start_run_dir(config: config_lib.TrainConfig, effective: dict, role: _Role, *, resuming: bool) -> None:
    """The chief writes config.json and keeps the history only as far as the backup goes."""
    if not role.is_chief:
        return
    tf.io.gfile.makedirs(run_dir_lib.path(config.run_dir, run_dir_lib.CHECKPOINTS_DIR))
    run_dir_lib.write_config(config.run_dir, effective)
    history = run_dir_lib.path(config.run_dir, run_dir_lib.HISTORY_FILE)
    if resuming:
        run_dir_lib.truncate_history(history, run_dir_lib.backup_epoch(role.backup_dir))
    elif tf.io.gfile.exists(history):
        tf.io.gfile.remove(history)


@contextlib.contextmanager
def _output_dir(config: config_lib.TrainConfig, role: _Role) -> Iterator[str]:
    """The run dir for the chief; a scratch dir, deleted after, for the other workers.

    Non-chief workers must save checkpoints and exports in lockstep with the chief (collective
    ops), but write nothing under run_dir except their own backup.
    """
    if role.is_chief:
        yield config.run_dir
        return
    scratch = tempfile.mkdtemp(prefix="cxr-worker-")
    try:
        yield scratch
    finally:
        tf.io.gfile.rmtree(scratch)


def _fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    config: config_lib.TrainConfig,
    plan: task.RunPlan,
    callbacks: list[keras.callbacks.Callback],
) -> dict[str, list[float]]:
    train_data, val_data = task.build_inputs(config, strategy, plan)
    if plan.validation_steps is not None:  # The validation input repeats: one iterator for the run.
        callbacks = [*callbacks, keras_compat.KeepValidationIterator()]
    with warnings.catch_warnings(), keras_compat.multi_worker_fit(model, strategy):
        # Under multi-worker, validation has no fixed step count (each worker's share of the val
        # files differs); Keras warns when it first runs to the end, which is the intent there.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        fit = model.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            steps_per_epoch=plan.steps_per_epoch,
            # One validation iterator for the whole run where the pass length is known
            # (keras_compat.KeepValidationIterator): a new one per epoch left the process idle
            # for seconds (benchmarks/profile_train.py).
            validation_steps=plan.validation_steps,
            callbacks=callbacks,
            verbose=0 if config.verbose == 2 else config.verbose,  # 2: console_callbacks.EpochLine.
            shuffle=False,  # The input shuffles; Keras cannot shuffle a tf.data pipeline.
        )
    return {k: [float(v) for v in values] for k, values in fit.history.items()}


def _finish(config: config_lib.TrainConfig, role: _Role, history: dict[str, list[float]]) -> float:
    """Tidies the shared backup dir and returns the run's best validation mean AUC."""
    shared_backup = run_dir_lib.backup_dir(config.run_dir)
    if role.multi_worker and role.is_chief and tf.io.gfile.isdir(shared_backup):
        if not tf.io.gfile.listdir(shared_backup):
            # Each worker deleted its own backup/<task>/ on success; drop the empty parent.
            tf.io.gfile.rmtree(shared_backup)
    history_csv = run_dir_lib.path(config.run_dir, run_dir_lib.HISTORY_FILE)
    if role.is_chief and tf.io.gfile.exists(history_csv):
        # The whole run's epochs, including those before a resume.
        val_aucs = run_dir_lib.read_history(history_csv).get(callbacks_lib.MONITOR, [])
    else:
        val_aucs = history.get(callbacks_lib.MONITOR, [])
    finite = [value for value in val_aucs if np.isfinite(value)]
    return max(finite) if finite else float("nan")


@dataclasses.dataclass(frozen=True)
class _Setup:
    """Everything decided before the model is built: the checks ran, config.json is written."""

    manifest: manifest_lib.Manifest
    plan: task.RunPlan
    role: _Role
    effective: dict
    initial_epoch: int  # > 0 when resuming from the backup.


def train(
    config: config_lib.TrainConfig,
    strategy: tf.distribute.Strategy,
    *,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Trains, checkpoints, exports; resumes from the run's backup when there is one.

    Args:
      config: the run.
      strategy: from `create_strategy`; the model is built and compiled in its scope.
      extra_callbacks: appended after the run's own callbacks (tests use this to interrupt).

    Returns:
      A `TrainResult`.

    Raises:
      ManifestError: the records dir has no (valid) manifest.
      ValueError: an image size the architecture cannot take, a run dir holding a different
        config, an empty train or val split.
      FloatingPointError: the loss became NaN or infinite.
    """
    setup = _set_up(config, strategy)
    plan, role = setup.plan, setup.role
    with global_state(config.seed, plan.dtype_policy), _output_dir(config, role) as out_dir:
        with strategy.scope():
            model = task.build_model(config, plan)
            task.compile_model(model, config, plan, setup.manifest)
        paths = (callbacks_lib.chief_paths if role.is_chief else callbacks_lib.worker_paths)(
            out_dir, role.backup_dir
        )
        callbacks = _callbacks(config, setup, paths, extra_callbacks)
        history = _fit(model, strategy, config, plan, callbacks)
        best_val_auc = _finish(config, role, history)
        _select_export_weights(model, config.export_weights, paths.best_checkpoint)
        digest = weights_digest(model)
        export_dir = export_lib.export_model(
            model,
            run_dir_lib.path(out_dir, run_dir_lib.EXPORT_DIR),
            image_size=plan.image_size,
            labels=plan.labels,
        )
    return TrainResult(
        run_dir=config.run_dir,
        image_size=plan.image_size,
        num_replicas=plan.replicas,
        is_chief=role.is_chief,
        initial_epoch=setup.initial_epoch,
        epochs_run=len(history.get("loss", [])),
        history=history,
        best_val_auc=best_val_auc,
        jit_compile=plan.jit_compile,
        export_dir=export_dir if role.is_chief else None,
        weights_sha256=digest,
    )


def _set_up(config: config_lib.TrainConfig, strategy: tf.distribute.Strategy) -> _Setup:
    """Every check that can fail, before anything is built; then config.json and the log."""
    manifest = manifest_lib.read_manifest(config.records_dir)
    plan = task.plan_run(config, manifest, strategy)
    role = _role(config, strategy)
    resuming = run_dir_lib.prepare(
        config.run_dir,
        config.identity(),
        overwrite=config.overwrite,
        is_chief=role.is_chief,
        ignore=config_lib.NON_IDENTITY_FIELDS,
    )
    effective = task.effective_config(config, plan)
    # One line per setting: shown with --verbosity=1; config.json and TensorBoard's text hold it.
    logging.debug("%s", task.format_effective_config(effective))
    logging.info("%s", EXPORT_WEIGHTS_LOG[config.export_weights])
    _start_run_dir(config, effective, role, resuming=resuming)
    initial_epoch = run_dir_lib.backup_epoch(role.backup_dir)
    return _Setup(manifest, plan, role, effective, initial_epoch)


def _callbacks(
    config: config_lib.TrainConfig,
    setup: _Setup,
    paths: callbacks_lib.CallbackPaths,
    extra: Sequence[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """The run's callbacks; after a resume they continue from the best epoch in history.csv.

    Every worker reads the same history.csv (the run dir is shared), so their checkpoint and
    early-stopping decisions stay in lockstep.
    """
    history_csv = run_dir_lib.path(config.run_dir, run_dir_lib.HISTORY_FILE)
    resumed_from = callbacks_lib.best_so_far(history_csv, setup.initial_epoch)
    if resumed_from is not None:
        logging.info(
            "Resuming at epoch %d; the best so far is epoch %d (%s %.4f), kept in %s.",
            setup.initial_epoch + 1,
            resumed_from.epoch + 1,
            callbacks_lib.MONITOR,
            resumed_from.value,
            run_dir_lib.BEST_CHECKPOINT,
        )
    return callbacks_lib.build_callbacks(
        setup.plan.lr_fn,
        paths,
        early_stopping_patience=config.early_stopping_patience,
        resumed_from=resumed_from,
        extra=extra,
        epoch_line=config.verbose == 2 and setup.role.is_chief,
        run_config=setup.effective,
        images_fn=_augmented_images_fn(config),
    )


def _augmented_images_fn(config: config_lib.TrainConfig) -> Callable[[], bytes] | None:
    augment_config = config.augment_config()
    if augment_config is None:
        return None
    return functools.partial(
        console_callbacks.augmented_records_sheet,
        config.records_dir,
        augment_config=augment_config,
        seed=config.seed,
    )


def _select_export_weights(model: keras.Model, export_weights: str, best_checkpoint: str) -> None:
    """Loads `checkpoints/best.keras`'s weights into `model` for `--export_weights=best`.

    With `final` (or before any checkpoint was written) the model keeps its last epoch's
    weights. Every worker loads the same file, so their models stay equal.
    """
    if export_weights != "best" or not tf.io.gfile.exists(best_checkpoint):
        return
    best = keras.saving.load_model(best_checkpoint, compile=False)
    model.set_weights(best.get_weights())
    logging.info("Exporting the best epoch's weights (%s).", best_checkpoint)


def weights_digest(model: keras.Model) -> str:
    """sha256 of the model's weights, in order: equal on every worker of a synchronous run."""
    return export_lib.weights_sha256(model.get_weights())
