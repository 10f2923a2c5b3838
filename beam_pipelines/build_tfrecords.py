r"""Converts the NIH ChestX-ray14 layout into sharded grayscale TFRecords with fixed splits.

Runs on the demo data with no flags (after `make demo-data`):

  python -m beam_pipelines.build_tfrecords --data_dir=data/demo --output_dir=data/tfrecords \
      --image_size=256

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

import logging
import sys

from cxr_cli import console

if __name__ == "__main__":
    console.configure()  # Quiet unless --verbosity=1, Beam's workers included (cxr_cli/console.py).

from absl import app, flags

from beam_pipelines import job, splits

_DATA_DIR = flags.DEFINE_string("data_dir", "data/demo", "The NIH layout: CSV, lists, images_*/images/*.png.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "data/tfrecords", "Where shards, rejects and manifest go.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Side of the square output images, in pixels.")
_IMAGE_FORMAT = flags.DEFINE_enum(
    "image_format",
    job.DEFAULT_IMAGE_FORMAT,
    list(job.IMAGE_FORMATS),
    "raw uint8 pixels or PNG in the records.",
)
_LABELS_CSV = flags.DEFINE_string(
    "labels_csv",
    None,
    "Labels CSV (2017 or v2020 format, may be .gz); default: Data_Entry_2017*.csv in data_dir.",
)
_SPLIT = flags.DEFINE_enum(
    "split",
    "official",
    list(splits.MODES),
    "official: NIH's lists (+ val by patient); patient: 70/10/20 by patient.",
)
_VAL_FRACTION = flags.DEFINE_float(
    "val_fraction", splits.DEFAULT_VAL_FRACTION, "official split: share of train_val patients that go to val."
)
_SPLIT_FRACTIONS = flags.DEFINE_string(
    "split_fractions", "70,10,20", "patient split: train,val,test shares in percent (or fractions)."
)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 0, "Shards per split; 0 = automatic (100-200 MB shards).")
_MAX_IMAGES = flags.DEFINE_integer(
    "max_images", 0, "Convert only the first N CSV rows (0 = all), for quick runs."
)
_OVERWRITE = flags.DEFINE_boolean("overwrite", False, "Replace the records of a non-empty output_dir.")
_PROGRESS_INTERVAL = flags.DEFINE_float("progress_interval", 30.0, "Seconds between progress lines.")


def main(argv: list[str]) -> None:
    # INFO for this package's progress and summary; Beam's own INFO lines stay hidden.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("beam_pipelines").setLevel(logging.INFO)
    try:
        config = job.JobConfig(
            data_dir=_DATA_DIR.value,
            output_dir=_OUTPUT_DIR.value,
            image_size=_IMAGE_SIZE.value,
            image_format=_IMAGE_FORMAT.value,
            labels_csv=_LABELS_CSV.value,
            split=splits.SplitConfig(
                mode=_SPLIT.value,
                val_fraction=_VAL_FRACTION.value,
                fractions=splits.parse_fractions(_SPLIT_FRACTIONS.value),
            ),
            num_shards=_NUM_SHARDS.value,
            max_images=_MAX_IMAGES.value,
            overwrite=_OVERWRITE.value,
            progress_interval_s=_PROGRESS_INTERVAL.value,
        )
    except ValueError as e:  # A bad flag value.
        sys.exit(f"build_tfrecords: {e}")
    try:
        job.run_job(config, beam_args=argv[1:])
    except job.InputError as e:  # Bad input, found before the pipeline started.
        sys.exit(f"build_tfrecords: {e}")


def run() -> None:
    """Console-script entry point."""
    console.configure()
    app.run(console.exit_on_expected_errors(main, program="build_tfrecords"), flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
    # Flags this binary does not define are Beam's: absl leaves them in argv for PipelineOptions.
    return flags.FLAGS(argv, known_only=True)


if __name__ == "__main__":
    run()
