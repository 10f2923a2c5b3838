"""The data sets the records job reads: one adapter module per download layout.

| --dataset        | release read                                   | labels (vocabulary)                    |
|------------------|------------------------------------------------|----------------------------------------|
| `nih`            | NIH ChestX-ray14 (2017 / v2020 label file)     | 14 findings + No Finding, all known    |
| `chexpert`       | CheXpert v1.0 and CheXpert-v1.0-small          | 14 observations; -1.0 and blank kept   |
| `mimic_cxr_jpg`  | MIMIC-CXR-JPG 2.0.0 / 2.1.0                    | its CheXpert-labeller 14, per study    |
| `padchest`       | PadChest (BIMCV), the 160K labels CSV          | 15 groups of its names (`padchest`)    |
| `rsna_pneumonia` | RSNA Pneumonia Detection Challenge, stage 2    | its 3 classes; boxes kept              |
| `folders`        | ROOT/CLASS/* (optional ROOT/SPLIT/CLASS/*)     | the class folders                      |

`detect(data_dir)` names the one layout whose own files are in the folder (`folders` has none
and is never detected).
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.datasets import base, chexpert, folders, mimic_cxr_jpg, nih, padchest, rsna_pneumonia
from cxr_cli import errors

AUTO = "auto"
ADAPTERS: dict[str, type[base.Adapter]] = {
    module.Adapter.name: module.Adapter
    for module in (nih, chexpert, mimic_cxr_jpg, padchest, rsna_pneumonia, folders)
}
NAMES: tuple[str, ...] = tuple(ADAPTERS)


def adapter(name: str, options: base.Options | None = None) -> base.Adapter:
    """The adapter of data set `name` with the job's options.

    Raises:
      ValueError: an unknown name, listing the known ones.
    """
    if name not in ADAPTERS:
        raise errors.ValidationError(f"Unknown data set {name!r}; known: {', '.join(NAMES)}.")
    return ADAPTERS[name](options)


def detect(data_dir: str) -> str:
    """The data set whose files lie in `data_dir` (or one folder below), else `nih`.

    Raises:
      base.SourceError: several layouts match; names them.
    """
    names = frozenset(
        base.file_name(m.path)
        for pattern in ("*", "*/*")
        for m in FileSystems.match([FileSystems.join(data_dir, pattern)])[0].metadata_list
    )
    found = [name for name, cls in ADAPTERS.items() if cls.recognizes(names)]
    if len(found) > 1:
        raise base.SourceError(
            f"--data_dir {data_dir!r} holds the files of several data sets ({', '.join(found)}); "
            f"choose one with --dataset."
        )
    return found[0] if found else nih.Adapter.name
