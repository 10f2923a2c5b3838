r"""Looks inside a records directory: checks it against its manifest, summarizes it, draws it.

    cxr-inspect data/tfrecords-demo-64        # or: python -m trainer.inspect data/tfrecords-demo-64
    cxr-inspect data/tfrecords-demo-64 --label=Effusion --augmented --per_split=16
    cxr-inspect gs://bucket/records --format=json --sheet=''

Checks every shard listed in manifest.json (present, sha256, record count, every record's
framing and checksums) and reports each mismatch by file; a corrupt or truncated shard is named
with the number of the record where reading failed (`tfrecords.inspection`). Prints the options
the records were built with, per split the records, patients, label counts and prevalences and
shard sizes, the rejects by reason with their first examples; `--format=json` prints the same as
one JSON object. Then writes a contact sheet PNG (default: beside the directory,
`<RECORDS_DIR>-contact-sheet.png`): the first `--per_split` records of each split (of those with
`--label`, when given) with their image index, labels, age, sex and view under each;
`--augmented` shows the same records after the training augmentation (trainer/model/augment.py,
loaded only then). Exit status 1 when the directory does not match its manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from cxr_cli import verbosity

if __name__ == "__main__":
    verbosity.configure()  # Before TensorFlow loads: quiet unless --verbosity=1 (cxr_cli/verbosity.py).

from absl import app

from cxr_cli import config_flags, errors, launch
from tfrecords import contact_sheet, inspection
from tfrecords import manifest as manifest_lib


@dataclasses.dataclass(frozen=True)
class InspectConfig:
    """The inspector's settings besides RECORDS_DIR (each field is a flag of the same name)."""

    format: str = config_flags.field(
        "text", "Summary as text or one JSON object on stdout.", inspection.FORMATS
    )
    sheet: str | None = config_flags.field(
        None, "Contact sheet PNG to write; default <RECORDS_DIR>-contact-sheet.png; '' for none."
    )
    per_split: int = config_flags.field(16, "Records per split on the contact sheet.")
    columns: int = config_flags.field(8, "Tiles per row on the contact sheet.")
    label: str | None = config_flags.field(None, "Only records with this label on the sheet, e.g. Effusion.")
    augmented: bool = config_flags.field(False, "Show the records after the training augmentation.")
    verify: bool = config_flags.field(True, "Check each shard's sha256 and records (reads every byte).")

    def __post_init__(self) -> None:
        if self.per_split < 1 or self.columns < 1:
            raise errors.ValidationError(
                f"--per_split and --columns must be >= 1, got {self.per_split} and {self.columns}."
            )


def main(argv: list[str], *, holders: config_flags.FlagHolders) -> None:
    """Inspects RECORDS_DIR (the one argument): summary on stdout, contact sheet, exit 1 on a mismatch."""
    if len(argv) != 2:
        raise app.UsageError("one argument: the records directory to inspect", exitcode=2)
    records_dir = argv[1].rstrip("/")
    config = config_flags.build_config(InspectConfig, holders)
    summary, manifest = inspection.inspect_records(records_dir, verify=config.verify)
    sheet = records_dir + "-contact-sheet.png" if config.sheet is None else config.sheet
    if summary["problems"]:
        sheet = ""  # Reading samples would stop at the first bad shard; the problems come first.
    layout = _write_sheet(sheet, records_dir, manifest, config) if sheet else None
    if layout is not None:
        summary["contact_sheet"] = {"path": sheet, **dataclasses.asdict(layout)}
    if config.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        print(inspection.format_summary(summary))
        if layout is not None:
            print(
                f"  contact sheet: {sheet} ({layout.columns}x{layout.rows} tiles, {layout.width}x{layout.height} px)"
            )
    if summary["problems"]:
        first = summary["problems"][0]
        raise inspection.RecordsMismatchError(
            f"{records_dir}: {len(summary['problems'])} shard check(s) failed, first {first['shard']}: "
            f"{first['detail']}."
        )


def _write_sheet(sheet: str, records_dir: str, manifest: manifest_lib.Manifest, config: InspectConfig) -> Any:
    """Draws the contact sheet of `config`'s records; returns its layout."""
    samples = {
        split: contact_sheet.read_samples(records_dir, manifest, split, config.per_split, label=config.label)
        for split in manifest.splits
    }
    if config.augmented:
        # The binary passes the trainer's augmentation in; the contract's modules never import the trainer.
        from trainer.model import augment

        transform = augment.sheet_transform()
        samples = {
            split: contact_sheet.augment_samples(split_samples, transform)
            for split, split_samples in samples.items()
        }
    parts = [f"label {config.label}"] if config.label else []
    parts += ["after training augmentation"] if config.augmented else []
    return contact_sheet.write_contact_sheet(sheet, samples, columns=config.columns, title=", ".join(parts))


def run() -> None:
    """Entry point of `python -m trainer.inspect` and `cxr-inspect`: flags from `InspectConfig`."""
    holders = config_flags.define_from_dataclass(InspectConfig)
    names = [holder.name for holder in holders.values()]
    main_fn = functools.partial(main, holders=holders)
    launch.run_binary(
        main_fn, module="trainer.inspect", doc=__doc__, flag_names=names, arguments="RECORDS_DIR"
    )


if __name__ == "__main__":
    run()
