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
bytes, for any --num_workers. Also installed as the `cxr-demo-data` console script.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence

from absl import app, flags

from demo_data import writer

_DEFAULTS = writer.DemoDataConfig()


def _define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, flags.FlagHolder]:
    """Defines the flags when the binary runs, not at import; tests pass their own FlagValues."""
    fv = flag_values
    return {
        "output_dir": flags.DEFINE_string(
            "output_dir", _DEFAULTS.output_dir, "Folder to write the data set into.", flag_values=fv
        ),
        "num_images": flags.DEFINE_integer(
            "num_images", _DEFAULTS.num_images, "Images to generate.", flag_values=fv
        ),
        "image_size": flags.DEFINE_integer(
            "image_size", _DEFAULTS.image_size, "Height and width of each PNG, in pixels.", flag_values=fv
        ),
        "seed": flags.DEFINE_integer(
            "seed", _DEFAULTS.seed, "Random seed; the same seed gives the same bytes.", flag_values=fv
        ),
        "num_patients": flags.DEFINE_integer(
            "num_patients", 0, "Patients; 0 for round(0.3 * num_images).", flag_values=fv
        ),
        "num_workers": flags.DEFINE_integer(
            "num_workers", 0, "Rendering processes; 0 for one per CPU core.", flag_values=fv
        ),
        "box_share": flags.DEFINE_float(
            "box_share",
            _DEFAULTS.box_share,
            "Share of the test images with one of NIH's 8 boxed findings that get boxes.",
            flag_values=fv,
        ),
        "overwrite": flags.DEFINE_bool(
            "overwrite", False, "Replace a data set already in --output_dir.", flag_values=fv
        ),
    }


def main(argv: Sequence[str], *, holders: dict[str, flags.FlagHolder]) -> None:
    """Builds the configuration from the flags, writes the set and prints its summary as JSON."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    for name in ("num_patients", "num_workers"):
        if holders[name].value < 0:
            raise ValueError(f"--{name} must be >= 0 (0 for the default), got {holders[name].value}.")
    config = writer.DemoDataConfig(
        output_dir=holders["output_dir"].value,
        num_images=holders["num_images"].value,
        image_size=holders["image_size"].value,
        seed=holders["seed"].value,
        num_patients=holders["num_patients"].value or None,
        num_workers=holders["num_workers"].value or None,
        overwrite=holders["overwrite"].value,
        box_share=holders["box_share"].value,
    )
    print(json.dumps(writer.write(config), indent=2))


def run() -> None:
    """Entry point of `python -m demo_data.generate` and the `cxr-demo-data` console script."""
    holders = _define_flags()
    app.run(functools.partial(main, holders=holders))


if __name__ == "__main__":
    run()
