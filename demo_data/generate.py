r"""Writes the synthetic chest X-ray set in NIH ChestX-ray14's layout.

  python -m demo_data.generate --output_dir=data/demo --num_images=2000 --image_size=1024

writes

  data/demo/images_001/images/00000001_000.png ...   8-bit grayscale PNGs, image_size x image_size
  data/demo/Data_Entry_2017.csv                      the 2017 label file format (header with the
                                                     trailing comma, zero-padded fields, ages `058Y`)
  data/demo/train_val_list.txt, test_list.txt        patient-disjoint, ~77/23 of the images, sorted,
                                                     no newline at the end (like NIH's)
  data/demo/BBox_List_2017.csv                       NIH's box file format: where the findings NIH
                                                     boxes were planted, on --box_share of the test
                                                     images that carry one

and prints a JSON summary (label, split and box counts, seconds). The same --seed gives the same
bytes, for any --num_workers. The flags are the fields of `writer.DemoDataConfig` (`--help`). Also
installed as the `cxr-demo-data` console script.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from cxr_cli import verbosity

if __name__ == "__main__":
    verbosity.configure()  # Quiet unless --verbosity=1 (cxr_cli/verbosity.py).

from absl import app

from cxr_cli import config_flags, launch
from demo_data import writer


def main(argv: Sequence[str], *, holders: config_flags.FlagHolders) -> None:
    """Builds the configuration from the flags, writes the set and prints its summary as JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = config_flags.build_config(writer.DemoDataConfig, holders)
    summary = writer.write(config)
    # JSON with one top-level key per line: machine-readable, and short enough to read.
    print("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in summary.items()) + "\n}")


def run() -> None:
    """Entry point of `python -m demo_data.generate` and `cxr-demo-data`: one flag per config field."""
    holders = config_flags.define_from_dataclass(writer.DemoDataConfig)
    names = [holder.name for holder in holders.values()]
    main_fn = functools.partial(main, holders=holders)
    launch.run_binary(main_fn, module="demo_data.generate", doc=__doc__, flag_names=names)


if __name__ == "__main__":
    run()
