"""Workarounds for Keras internals, in one place, each undone when the run ends.

Keras 3's TensorFlow trainer does not run `fit` under a multi-worker
`tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585 collects the reports):

  1. The first-batch build (`Trainer._maybe_symbolic_build`) reduces a distributed batch with
     `strategy.reduce("MEAN", batch)` to learn its shapes; under multi-worker training that
     fails on an `(images, labels)` structure ("Attempt to convert a value (PerReplica...)",
     keras-team/keras#20329), and would all-reduce uint8 pixels if it did not.
     `_local_batch_symbolic_build` builds from this worker's first replica's batch instead:
     only shapes and dtypes matter there.
  2. Each step's logs are reduced by `reduce_per_replica` with `strategy.reduce("MEAN", value,
     axis=0)`, which fails on the scalar loss and metric values ("Invalid reduction dimension 0
     for input with 0 dimensions", tensorflow/tensorflow#72388).
     `_scalar_log_reduce` averages scalars over all replicas with `axis=None` (the same value
     on every worker, so every worker's callbacks decide alike) and leaves everything else to
     Keras.

A third workaround concerns speed, on every strategy:

  3. `evaluate` drops its input iterator at every call (`EpochIterator.reset`), also inside
     `fit` with a fixed `validation_steps`, and starts a new one; Keras resets on purpose, so
     that every epoch validates alike (keras-team/keras#17399). Destroying a distributed
     tf.data iterator after a few seconds of training left the process idle for about 3 s
     (its threads are joined; measured on TF 2.21, 2 CPU cores: 3.1-3.7 s in most epochs of
     the demo run, whose epochs take about 7 s). `KeepValidationIterator` gives the
     validation pass one iterator for the whole `fit`: with a repeated validation input and
     `validation_steps` equal to one pass, each epoch reads exactly one pass, the same
     batches in the same order. That needs one more step: before `on_test_begin`, `evaluate`
     calls `_maybe_symbolic_build(iterator=...)`, which reads one batch of the pass's
     iterator to learn the input shapes (under any strategy scope) and averages it over the
     replicas (which fails when their batches differ in size). Inside `fit` the model is
     built by the first training step, so the batch is thrown away; from the second epoch on
     it would come from the kept iterator and shift every later pass by one batch. The
     callback has that call build from no batch at all.

`multi_worker_fit(model, strategy)` applies 1 and 2 for one `fit` and restores Keras afterwards;
for any other strategy it changes nothing. The Keras versions covered are checked when it is
entered. `tests/multi_worker_test.py` (slow: two worker processes) reproduces both failures
without the workarounds. `tests/keras_compat_test.py` states, in-process, the behaviour each
workaround waits for as an expected failure (`xfail(strict=True)`, naming the upstream report):
the day one passes, Keras has changed, the suite says so, and that workaround can go.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf
from absl import logging

# Keras releases the workarounds were written for and tested with: [first, last]. 3.11 is the
# first whose epoch iterator yields (begin_step, end_step, iterator), which
# `_local_batch_symbolic_build` unpacks like Keras' own `_maybe_symbolic_build`; 3.10 yielded
# (step, iterator) (both read in the released wheels' keras/src/trainers/epoch_iterator.py).
FIRST_VERSION = (3, 11)
LAST_TESTED_VERSION = (3, 15)


def keras_version() -> tuple[int, int]:
    """Keras' (major, minor) version."""
    major, minor = keras.version().split(".")[:2]
    return int(major), int(minor)


def check_version(version: tuple[int, int] | None = None) -> None:
    """Refuses a Keras release the workarounds were not tested with.

    Raises:
      RuntimeError: outside [FIRST_VERSION, LAST_TESTED_VERSION], naming the version and what to do.
    """
    version = version or keras_version()
    if not FIRST_VERSION <= version <= LAST_TESTED_VERSION:
        covered = f"{FIRST_VERSION[0]}.{FIRST_VERSION[1]}-{LAST_TESTED_VERSION[0]}.{LAST_TESTED_VERSION[1]}"
        raise RuntimeError(
            f"trainer.training.keras_compat covers Keras {covered} for multi-worker training, but Keras "
            f"{version[0]}.{version[1]} is installed. Run tests/keras_compat_test.py and the slow "
            "tests/multi_worker_test.py with it: if the reproductions there no longer fail, Keras has "
            "fixed the bugs and the workarounds can go; otherwise widen LAST_TESTED_VERSION."
        )


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy spanning more than one worker (Keras' own test)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        strategy.extended._in_multi_worker_mode()
    )


@contextlib.contextmanager
def multi_worker_fit(model: keras.Model, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Lets `model.fit` run under multi-worker training, for the duration of the block.

    Args:
      model: the compiled model.
      strategy: the run's strategy; anything but multi-worker leaves Keras untouched.

    Raises:
      RuntimeError: multi-worker training on a Keras release outside the tested range.
    """
    if not is_multi_worker(strategy):
        yield
        return
    check_version()
    with _local_batch_symbolic_build(model, strategy), _scalar_log_reduce():
        yield


@contextlib.contextmanager
def _local_batch_symbolic_build(model: keras.Model, strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Workaround 1 (keras-team/keras#20329): an instance attribute shadowing the method."""
    from keras.src import tree  # Keras' own nest utilities, as the method it replaces uses.

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(it)
                )
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
    try:
        yield
    finally:
        del model._maybe_symbolic_build  # The class's method again.


@contextlib.contextmanager
def _scalar_log_reduce() -> Iterator[None]:
    """Workaround 2 (tensorflow/tensorflow#72388): wraps Keras' module-level `reduce_per_replica`."""
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    original = keras_tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if not is_multi_worker(strategy) or reduction not in ("auto", "mean"):
            return original(values, strategy, reduction)

        def reduce(value):
            # With one device per worker, `strategy.run` returns plain tensors, not PerReplica.
            local = strategy.experimental_local_results(value)[0]
            if tf.is_tensor(local) and local.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    keras_tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        keras_tf_trainer.reduce_per_replica = original


class KeepValidationIterator(keras.callbacks.Callback):
    """Workaround 3: one validation iterator for the whole `fit` (see the module docstring).

    Use only with a validation input that repeats and `validation_steps` equal to one pass;
    outside the tested Keras releases, or where Keras' evaluation iterator has changed shape,
    it does nothing (a warning says so) and Keras starts an iterator per epoch as usual.
    """

    def __init__(self):
        super().__init__()
        self._iterator: Any = None
        self._patched: Any = None
        self._shadowed_build: Any = None  # An instance attribute it replaced, if any.
        self._skipping_probe = False

    def on_train_begin(self, logs=None):
        if FIRST_VERSION <= keras_version() <= LAST_TESTED_VERSION:
            self._skip_shape_probe()

    def on_test_begin(self, logs=None):
        if self._patched is not None:
            return
        epoch_iterator = getattr(self.model, "_eval_epoch_iterator", None)
        if epoch_iterator is None:  # `evaluate` outside `fit`: nothing is cached to keep.
            return
        if not self._skipping_probe or not (
            hasattr(epoch_iterator, "_get_iterator") and hasattr(epoch_iterator, "_distributed_dataset")
        ):
            logging.warning(
                "Keras %s is outside the releases KeepValidationIterator was tested with; validation "
                "starts a new input iterator each epoch.",
                keras.version(),
            )
            self._patched = False
            return
        self._iterator = iter(epoch_iterator._distributed_dataset)
        # An instance attribute shadowing the method: Keras' `iter()` of it returns the same
        # iterator (an iterator is its own iterable), so the pass continues where it stopped.
        epoch_iterator._get_iterator = lambda: self._iterator
        self._patched = epoch_iterator

    def _skip_shape_probe(self) -> None:
        """Keeps `evaluate`'s build step inside `fit` from reading a validation batch.

        The first training step built the model, its metrics, loss and optimizer, so Keras'
        `_symbolic_build` has nothing left to build: called without a batch, it reads none.
        """
        model = self.model
        self._shadowed_build = vars(model).get("_maybe_symbolic_build")
        build = model._maybe_symbolic_build

        def maybe_symbolic_build(iterator=None, data_batch=None):
            if iterator is not None and iterator is getattr(model, "_eval_epoch_iterator", None):
                iterator = None
            return build(iterator=iterator, data_batch=data_batch)

        model._maybe_symbolic_build = maybe_symbolic_build
        self._skipping_probe = True

    def on_train_end(self, logs=None):
        if self._patched:
            del self._patched._get_iterator  # The class's method again.
        if self._skipping_probe:
            if self._shadowed_build is not None:
                self.model._maybe_symbolic_build = self._shadowed_build
            else:
                del self.model._maybe_symbolic_build
        self._patched = None
        self._iterator = None
        self._shadowed_build = None
        self._skipping_probe = False
