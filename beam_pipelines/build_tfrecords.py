r"""Converts a chest X-ray data set's download into sharded grayscale TFRecords with fixed splits.

Runs on the demo data with no flags (after `make demo-data`):

  python -m beam_pipelines.build_tfrecords --data_dir=data/demo --output_dir=data/tfrecords \
      --image_size=256

--dataset picks the layout: nih (the default layout), chexpert, mimic_cxr_jpg, padchest,
rsna_pneumonia or folders (beam_pipelines/datasets/, one module per data set, each with the
command that runs it); --dataset=auto (the flag's default) detects it from the files in --data_dir
when exactly one layout matches, else reads NIH's. The manifest records the data set, its label
vocabulary and how each label state was written.

and writes into --output_dir:
  {train,val,test}-NNNNN-of-NNNNN.tfrecord   records of tfrecords/schema.py, 100-200 MB each
  rejects.jsonl                              one line per CSV row not written, with its reason
  manifest.json                              written last: options, counts, shards + sha256

Every flag this file does not define goes to Beam's PipelineOptions untouched, e.g.
`--runner=DataflowRunner --project=... --region=... --temp_location=gs://... --setup_file=./setup.py`
or `--runner=PortableRunner --job_endpoint=localhost:8099 --environment_type=LOOPBACK`. Without
a runner: the DirectRunner in multi-processing mode on all cores.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from cxr_cli import console

if __name__ == "__main__":
    console.configure()  # Quiet unless --verbosity=1, Beam's workers included (cxr_cli/console.py).

from absl import app, flags

from beam_pipelines import job, splits
from cxr_cli import config_flags

# This binary's flags live in their own FlagValues, parsed by `_parse_flags`: another binary's
# flags of the same name (the trainer's --overwrite) can be defined in the same process.
FLAGS = flags.FlagValues()
# One flag per field of the job's config; the split's three flags by hand, as its fractions are
# three numbers in one flag and its mode's flag is --split.
_CONFIG = config_flags.define_from_dataclass(job.JobConfig, flag_values=FLAGS, module_name=__name__)
_SPLIT = flags.DEFINE_enum(
    "split",
    "official",
    list(splits.MODES),
    "official: NIH's lists (+ val by patient); patient: 70/10/20 by patient.",
    flag_values=FLAGS,
)
_VAL_FRACTION = flags.DEFINE_float(
    "val_fraction",
    splits.DEFAULT_VAL_FRACTION,
    "official split: share of train_val patients that go to val.",
    flag_values=FLAGS,
)
_SPLIT_FRACTIONS = flags.DEFINE_string(
    "split_fractions",
    "70,10,20",
    "patient split: train,val,test shares in percent (or fractions).",
    flag_values=FLAGS,
)


def main(argv: list[str]) -> None:
    try:
        split = splits.SplitConfig(
            mode=_SPLIT.value,
            val_fraction=_VAL_FRACTION.value,
            fractions=splits.parse_fractions(_SPLIT_FRACTIONS.value),
        )
        config = config_flags.build_config(job.JobConfig, _CONFIG, overrides={"split": split})
    except ValueError as e:  # A bad flag value.
        sys.exit(f"build_tfrecords: {e}")
    try:
        with _beam_logs_at(logging.WARNING):
            job.run_job(config, beam_args=argv[1:])
    except job.InputError as e:  # Bad input, found before the pipeline started.
        sys.exit(f"build_tfrecords: {e}")


@contextlib.contextmanager
def _beam_logs_at(level: int) -> Iterator[None]:
    """Beam's own INFO lines hidden while the job runs (its progress and summary stay), then restored."""
    logger = logging.getLogger("apache_beam")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def run() -> None:
    """Console-script entry point."""
    console.configure()
    app.run(console.exit_on_expected_errors(main, program="build_tfrecords"), flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
    """This binary's flags, then absl's own; the flags neither defines are Beam's, left in argv."""
    if "--help" in argv[1:] or "-h" in argv[1:]:
        print(FLAGS.get_help())
        sys.exit(0)
    return flags.FLAGS(FLAGS(argv, known_only=True), known_only=True)


if __name__ == "__main__":
    run()
