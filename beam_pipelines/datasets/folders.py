r"""The `folders` adapter: a folder per class, `ROOT/CLASS/*.{png,jpg,jpeg,dcm}`.

Layout, with an optional split level above the classes:

  ROOT/NORMAL/IM-0001-0001.jpeg            ROOT/train/NORMAL/IM-0001-0001.jpeg
  ROOT/PNEUMONIA/person1_virus_6.jpeg  or  ROOT/test/PNEUMONIA/person1_virus_6.jpeg
                                           (train, val/valid/validation, test)

The class is the image's folder; the vocabulary is the class folders' names in sorted order, one
label per image (states: in its class folder = positive, in another = negative). Images of any
kind `images.decode_gray` reads: PNG (8 or 16 bit), JPEG, DICOM.

Split folders are ignored by default: a published folder split is often by image and leaks
patients across splits; images are split by a hash of their patient instead
(`--split=patient`, or `official`, which falls back to it). `--folder_splits` takes them as the
published split.

The patient comes from the file name by `--patient_regex`: the first group that matched (else
the whole match); without the flag, the whole name without its suffix (one image per patient).
A name the expression does not match is a `bad_row` reject. A patient id that is a number is
the record's patient_id; any other text is hashed (`base.patient_number`). For the pediatric
pneumonia set (Kermany et al. 2018: `personN_bacteria_M.jpeg`, `personN_virus_M.jpeg`,
`IM-XXXX-YYYY.jpeg`, `NORMAL2-IM-XXXX-YYYY.jpeg`):

  python -m beam_pipelines.build_tfrecords --dataset=folders --data_dir=chest_xray \
      --output_dir=data/tfrecords-pediatric --image_size=64 --patient_regex='^(person\d+)_|IM-(\d+)-'

No age, sex or view is known (age -1, sex and view ""), except what a DICOM header says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

from beam_pipelines.datasets import base

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
SPLIT_FOLDERS = {
    "train": base.TRAIN,
    "val": base.VAL,
    "valid": base.VAL,
    "validation": base.VAL,
    "test": base.TEST,
}


class Adapter(base.Adapter):
    """Folder-per-class images; see the module docstring."""

    name = "folders"
    labels: tuple[str, ...] = ()  # Set per instance by `prepare`: the class folders.
    label_states = {"in the class folder": "positive", "in another class folder": "negative"}
    split_lists_detail = "--folder_splits: the image is in no train, val or test folder."

    def prepare(self, data_dir: str, *, max_images: int, split_mode: str) -> base.Source:
        regex = self.options.patient_regex
        if regex:
            base.checked_regex(regex, "--patient_regex")
        files = base.list_relative(data_dir, IMAGE_SUFFIXES)
        if not files:
            raise base.SourceError(
                f"No images ({', '.join(IMAGE_SUFFIXES)}) under --data_dir {data_dir!r}; "
                f"--dataset=folders reads ROOT/CLASS/* or ROOT/SPLIT/CLASS/*."
            )
        classes = sorted({_parts(name)[1] for name in files if _parts(name)[1]})
        if not classes:
            raise base.SourceError(
                f"No class folders in --data_dir {data_dir!r}: the images lie directly in it."
            )
        self.labels = tuple(classes)
        rows = len(files) if not max_images else min(max_images, len(files))
        return base.Source(
            data_dir=data_dir,
            tables={},
            expected_rows=rows,
            expected_images=rows,
            description=f"{data_dir} ({len(classes)} class folders: {', '.join(classes)})",
            has_published_split=self.options.folder_splits,
        )

    def read_rows(self, source: base.Source) -> Iterator[base.RawRow]:
        for line, name in enumerate(sorted(self.list_files(source)), start=1):
            split_folder, _ = _parts(name)
            official = SPLIT_FOLDERS.get(split_folder.lower()) if self.options.folder_splits else None
            yield base.RawRow(name=name, line=line, fields=name, official=official)

    def parse(self, raw: base.RawRow) -> base.Row:
        split_folder, label = _parts(raw.name)
        if not label:
            raise ValueError(f"{raw.name!r} is not in a class folder.")
        if split_folder and split_folder.lower() not in SPLIT_FOLDERS:
            raise ValueError(
                f"{raw.name!r}: {split_folder!r} is not a split folder ({', '.join(SPLIT_FOLDERS)}); "
                f"expected ROOT/CLASS/* or ROOT/SPLIT/CLASS/*."
            )
        patient = patient_of(base.file_name(raw.name), self.options.patient_regex)
        multi_hot = tuple(int(name == label) for name in self.labels)
        return base.Row(
            line=raw.line,
            image_index=raw.name,
            multi_hot=multi_hot,
            patient_id=base.patient_number(patient),
            follow_up=0,
            age=base.UNKNOWN_AGE,
            sex="",
            view_position="",
        )

    def list_files(self, source: base.Source) -> Mapping[str, Sequence[str]]:
        return base.list_relative(source.data_dir, IMAGE_SUFFIXES)


def _parts(name: str) -> tuple[str, str]:
    """(split folder or "", class folder or "") of a path relative to ROOT."""
    folders = name.split("/")[:-1]
    if len(folders) == 1:
        return "", folders[0]
    if len(folders) == 2:
        return folders[0], folders[1]
    return "/".join(folders[:-1]), (folders[-1] if folders else "")


def patient_of(file_name: str, patient_regex: str | None) -> str:
    """The patient of a file: by `patient_regex` (first group that matched, else the whole
    match), or the name without its suffix.

    Raises:
      ValueError: the expression does not match the name (reject `bad_row`).
    """
    if not patient_regex:
        return file_name.rsplit(".", 1)[0]
    match = re.search(patient_regex, file_name)
    if match is None:
        raise ValueError(f"--patient_regex {patient_regex!r} does not match the file name {file_name!r}.")
    groups = [group for group in match.groups() if group]
    return groups[0] if groups else match.group(0)
