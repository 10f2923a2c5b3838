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

To keep a run's flags in a file, use absl's `--flagfile`; `--dump_flagfile` writes one: the
configuration of `--run_dir`'s config.json when the run exists (flags given here override it),
else the one the flags describe, and exits without training:

    cxr-train --run_dir=runs/demo --dump_flagfile=demo.flags
    cxr-train --flagfile=demo.flags --run_dir=runs/demo-again

Multi-worker: set TF_CONFIG on every worker and pass `--strategy=multi_worker`; only the chief
writes the run directory. `--data_service=grpc://host:port` reads the training input through
a tf.data service dispatcher.
"""

from __future__ import annotations

import functools

from cxr_cli import verbosity

if __name__ == "__main__":
    verbosity.configure()  # Before TensorFlow loads: quiet unless --verbosity=1 (cxr_cli/verbosity.py).

import tensorflow as tf
from absl import app, flags, logging

from cxr_cli import config_flags, launch
from trainer.model import run_dir as run_dir_lib
from trainer.training import config as config_lib
from trainer.training import runner as train_lib

_BINARY_FLAGS = ("strategy", "dump_flagfile")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> config_flags.FlagHolders:
    """Defines one flag per `TrainConfig` field, `--strategy` and `--dump_flagfile`; returns their holders."""
    holders = config_flags.define_from_dataclass(config_lib.TrainConfig, flag_values=flag_values)
    holders["strategy"] = flags.DEFINE_enum(
        "strategy",
        "auto",
        list(train_lib.STRATEGIES),
        "auto: all local GPUs (Mirrored) or one device; multi_worker: from TF_CONFIG.",
        flag_values=flag_values,
    )
    holders["dump_flagfile"] = flags.DEFINE_string(
        "dump_flagfile",
        None,
        "Write the flags of this configuration to this file (for --flagfile) and exit without "
        "training: --run_dir's config.json when it has one, overridden by the flags given here.",
        flag_values=flag_values,
    )
    return holders


def config_from_flags(
    holders: config_flags.FlagHolders, *, base: config_lib.TrainConfig | dict
) -> config_lib.TrainConfig:
    """`base` (a profile, or a run's recorded fields) with the explicitly given flags overriding it.

    Raises:
      ValidationError: an invalid value, naming the field.
    """
    fields = {name: holder for name, holder in holders.items() if name not in _BINARY_FLAGS}
    return config_flags.build_config(config_lib.TrainConfig, fields, base=base)


def _run_config(run_dir: str) -> dict | None:
    """The `TrainConfig` fields recorded in `run_dir/config.json`; None when there is no run."""
    if not tf.io.gfile.exists(run_dir_lib.path(run_dir, run_dir_lib.CONFIG_FILE)):
        return None
    return run_dir_lib.read_config(run_dir).get("train_config")


def write_flagfile(config: config_lib.TrainConfig, path: str, *, source: str) -> None:
    """Writes the flags that re-create `config` (see `--dump_flagfile`) to `path`."""
    lines = config_flags.flagfile_lines(config_lib.TrainConfig, config)
    config_flags.write_flagfile(path, lines, comment=f"cxr-train flags of {source}")


def main(argv: list[str], *, holders: config_flags.FlagHolders) -> None:
    """Trains the configuration given by the flags; `run` turns bad input into a one-line error.

    With --dump_flagfile, writes the flags of --run_dir's config.json (or, without a run, of the
    command line), overridden by the flags given, and trains nothing.
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    dump_path = holders["dump_flagfile"].value
    recorded = _run_config(holders["run_dir"].value) if dump_path else None
    base = recorded if recorded is not None else config_lib.PROFILES[holders["profile"].value]
    config = config_from_flags(holders, base=base)  # Validates every field before TensorFlow starts.
    if dump_path:
        source = f"{config.run_dir}/config.json" if recorded is not None else "the command line"
        write_flagfile(config, dump_path, source=source)
        print(f"Wrote {dump_path}")
        return
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
    """Entry point of `python -m trainer.train` and `cxr-train`: defines the flags, runs `main`."""
    holders = define_flags()
    main_fn = functools.partial(main, holders=holders)
    names = [holder.name for holder in holders.values()]
    launch.run_binary(main_fn, module="trainer.train", doc=__doc__, flag_names=names)


if __name__ == "__main__":
    run()
