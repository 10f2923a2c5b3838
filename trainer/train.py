r"""Trains a chest X-ray classifier on a records directory, then exports it.

    python -m beam_pipelines.build_tfrecords --data_dir=data/demo --output_dir=data/tfrecords --image_size=64
    python -m trainer.train --profile=demo --records_dir=data/tfrecords --run_dir=runs/demo

writes runs/demo/{config.json, history.csv, checkpoints/best.keras, backup/, tensorboard/,
export/}. Killed (even with kill -9) and started again with the same command, it continues
from the last finished epoch at that epoch's learning rate.

`--profile` picks one complete configuration (trainer/training/config.py): `demo` (the default) is the
small ResUNet measured on the 64x64 demo records; `full` is the 2023 thesis recipe for the real
ChestX-ray14 records. Every other flag is a field of `TrainConfig`, and a flag given explicitly
overrides that one field of the profile:

    python -m trainer.train --profile=full --records_dir=data/tfrecords-256 --run_dir=runs/full --epochs=2

Multi-worker: set TF_CONFIG on every worker and pass `--strategy=multi_worker`; only the chief
writes the run directory. `--data_service=grpc://host:port` reads the training input through
a tf.data service dispatcher.
"""

from __future__ import annotations

import functools

from cxr_cli import console

if __name__ == "__main__":
    console.configure()  # Before TensorFlow loads: quiet unless --verbosity=1 (cxr_cli/console.py).

from absl import app, flags, logging

from cxr_cli import config_flags
from trainer.training import config as config_lib
from trainer.training import runner as train_lib


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> config_flags.FlagHolders:
    """Defines one flag per `TrainConfig` field, plus `--strategy`; returns their holders."""
    holders = config_flags.define_from_dataclass(config_lib.TrainConfig, flag_values=flag_values)
    holders["strategy"] = flags.DEFINE_enum(
        "strategy",
        "auto",
        list(train_lib.STRATEGIES),
        "auto: all local GPUs (Mirrored) or one device; multi_worker: from TF_CONFIG.",
        flag_values=flag_values,
    )
    return holders


def config_from_flags(holders: config_flags.FlagHolders) -> config_lib.TrainConfig:
    """The profile named by `--profile`, with the explicitly given flags overriding it.

    Raises:
      ValueError: an invalid value, naming the field.
    """
    fields = {name: holder for name, holder in holders.items() if name != "strategy"}
    base = config_lib.PROFILES[fields["profile"].value]
    return config_flags.build_config(config_lib.TrainConfig, fields, base=base)


def main(argv: list[str], *, holders: config_flags.FlagHolders) -> None:
    """Trains the configuration given by the flags; `run` turns bad input into a one-line error."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_from_flags(holders)  # Validates every field before TensorFlow starts.
    strategy = train_lib.create_strategy(holders["strategy"].value)
    result = train_lib.train(config, strategy)
    logging.info(
        "Done: %d epochs (from epoch %d), best val mean AUC %.4f, export %s, weights sha256 %s.",
        result.epochs_run,
        result.initial_epoch,
        result.best_val_auc,
        result.export_dir,
        result.weights_sha256,
    )
    print(
        f"weights_sha256={result.weights_sha256} chief={result.is_chief} best_val_auc={result.best_val_auc:.4f}"
    )


def run() -> None:
    """Console-script entry point (`cxr-train`): defines the flags, then runs `main`."""
    console.configure()  # As a console script TensorFlow is loaded by now; this sets the rest.
    main_fn = functools.partial(main, holders=define_flags())
    app.run(console.exit_on_expected_errors(main_fn, program="trainer.train"))


if __name__ == "__main__":
    run()
