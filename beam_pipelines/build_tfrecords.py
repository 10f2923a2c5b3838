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
import dataclasses
import functools
import logging
from collections.abc import Iterator

from cxr_cli import verbosity

if __name__ == "__main__":
    verbosity.configure()  # Quiet unless --verbosity=1, Beam's workers included (cxr_cli/verbosity.py).

from absl import flags

from beam_pipelines import job, splits
from cxr_cli import config_flags, launch


@dataclasses.dataclass(frozen=True)
class SplitFlags:
    """The split's flags: `--split_fractions` is three numbers in one flag, so not a SplitConfig field."""

    split: str = config_flags.field(
        "official", "official: NIH's lists (+ val by patient); patient: 70/10/20 by patient.", splits.MODES
    )
    val_fraction: float = config_flags.field(
        splits.DEFAULT_VAL_FRACTION, "official split: share of train_val patients that go to val."
    )
    split_fractions: str = config_flags.field(
        "70,10,20", "patient split: train,val,test shares in percent (or fractions)."
    )

    def split_config(self) -> splits.SplitConfig:
        """The validated `SplitConfig`; raises ValidationError naming the flag."""
        return splits.SplitConfig(
            mode=self.split,
            val_fraction=self.val_fraction,
            fractions=splits.parse_fractions(self.split_fractions),
        )


# This binary's flags live in their own FlagValues (`run`): another binary's flags of the same
# name (the trainer's --overwrite) can be defined in the same process, and every flag absl does not
# know is left for Beam. One flag per field of the job's config and of `SplitFlags`.
def define_flags(flag_values: flags.FlagValues) -> tuple[config_flags.FlagHolders, config_flags.FlagHolders]:
    """Defines the job's flags on `flag_values`; returns the holders of `JobConfig` and `SplitFlags`."""
    return (
        config_flags.define_from_dataclass(job.JobConfig, flag_values=flag_values, module_name=__name__),
        config_flags.define_from_dataclass(SplitFlags, flag_values=flag_values, module_name=__name__),
    )


def main(argv: list[str], *, holders: tuple[config_flags.FlagHolders, config_flags.FlagHolders]) -> None:
    """Builds the job's config from the flags and runs it; the arguments left are Beam's options."""
    job_holders, split_holders = holders
    split = config_flags.build_config(SplitFlags, split_holders).split_config()
    config = config_flags.build_config(job.JobConfig, job_holders, overrides={"split": split})
    with _beam_logs_at(logging.WARNING):
        job.run_job(config, beam_args=argv[1:])


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
    """Entry point of `python -m beam_pipelines.build_tfrecords` and `cxr-build-tfrecords`."""
    flag_values = flags.FlagValues()
    holders = define_flags(flag_values)
    launch.run_binary(
        functools.partial(main, holders=holders),
        module="beam_pipelines.build_tfrecords",
        doc=__doc__,
        flag_names=list(flag_values),
        arguments="[Beam pipeline options]",
        flag_values=flag_values,
    )


if __name__ == "__main__":
    run()
