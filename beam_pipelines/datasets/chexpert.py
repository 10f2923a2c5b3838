"""The `chexpert` adapter: CheXpert v1.0 and CheXpert-v1.0-small (Irvin et al., AAAI 2019).

Layout (the download's folder, e.g. CheXpert-v1.0-small/):

  train.csv, valid.csv                        Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations
  train/patient00001/study1/view1_frontal.jpg  JPEGs (small: about 390x320; v1.0: full size)
  valid/patient64541/study1/view1_frontal.jpg

  python -m beam_pipelines.build_tfrecords --dataset=chexpert --data_dir=CheXpert-v1.0-small \
      --output_dir=data/tfrecords-chexpert --image_size=256

`Path` starts with the download's folder name (`CheXpert-v1.0-small/train/...`); the image is
found by the part from `train/` or `valid/` on, relative to the CSVs' folder, and that part is
the record's image_index. Patient: the number of `patientNNNNN`; follow_up: the number of
`studyN`. View: the AP/PA column for a frontal image, LATERAL for a lateral one. Sex: M, F or ""
(Unknown). Age: years, -1 when blank.

Labels: the 14 observations in the CSV's column order (`LABELS`), each written as (`STATES`)
1.0 positive, 0.0 negative, -1.0 uncertain (labels 0, mask 0, label_uncertain 1) and blank not
mentioned (labels 0, mask 0). Any other value is a `bad_row` reject.

Published split: train.csv is train + val (val by patient hash, `--val_fraction`); valid.csv,
the radiologist-labelled set published results are reported on, is test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

from beam_pipelines.datasets import base
from tfrecords import schema

LABELS = schema.CHEXPERT_LABELS
# The CheXpert labeller's values (also MIMIC-CXR-JPG's) -> the state a record gives them.
STATES = {"1.0": "positive", "0.0": "negative", "-1.0": "uncertain", "": "not_mentioned"}
_VALUE_STATES = {"1": "positive", "1.0": "positive", "0": "negative", "0.0": "negative"}
_VALUE_STATES |= {"-1": "uncertain", "-1.0": "uncertain", "": "not_mentioned"}
TABLES = {"train.csv": base.TRAIN_VAL, "valid.csv": base.TEST}
PATH, SEX, AGE, FRONTAL_LATERAL, AP_PA = "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"
REQUIRED_COLUMNS = (PATH, SEX, AGE, FRONTAL_LATERAL, AP_PA, *LABELS)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")
_PATH_RE = re.compile(r"(?:^|/)((?:train|valid|test)/patient(\d+)/study(\d+)/[^/]+)$")


def parse_states(fields: Mapping[str, str], labels: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """(labels, label_mask, label_uncertain) of one row of CheXpert-labeller values.

    Raises:
      ValueError: a value that is not 1.0, 0.0, -1.0 or blank, naming the column.
    """
    positive, known, uncertain = [], [], []
    for label in labels:
        value = fields[label].strip()
        state = _VALUE_STATES.get(value)
        if state is None:
            raise ValueError(f"{label} {value!r} is not 1.0, 0.0, -1.0 or blank.")
        positive.append(int(state == "positive"))
        known.append(int(state in ("positive", "negative")))
        uncertain.append(int(state == "uncertain"))
    return tuple(positive), tuple(known), tuple(uncertain)


class Adapter(base.Adapter):
    """CheXpert; see the module docstring."""

    name = "chexpert"
    labels = LABELS
    label_states = STATES
    split_lists_detail = "the image is in neither train.csv nor valid.csv."

    @classmethod
    def recognizes(cls, names: frozenset[str]) -> bool:
        return set(TABLES) <= names

    def prepare(self, data_dir: str, *, max_images: int, split_mode: str) -> base.Source:
        tables = {name: base.find_one(data_dir, [name], what=f"CheXpert {name}") for name in TABLES}
        root = base.parent(tables["train.csv"])
        if base.parent(tables["valid.csv"]) != root:
            raise base.SourceError(f"CheXpert's train.csv and valid.csv are in different folders: {tables}.")
        keys = []
        for name, path in tables.items():
            keys += base.count_rows(path, REQUIRED_COLUMNS, what=f"CheXpert {name}", key=PATH)[1]
        keys = keys[:max_images] if max_images else keys
        files = base.list_relative(root, IMAGE_SUFFIXES)
        found = sum(1 for key in keys if (m := _PATH_RE.search(key)) and m.group(1) in files)
        return base.Source(
            data_dir=root,
            tables=tables,
            expected_rows=len(keys),
            expected_images=found,
            description=f"{tables['train.csv']} + valid.csv",
            has_published_split=True,
        )

    def read_rows(self, source: base.Source) -> Iterator[base.RawRow]:
        for name, official in TABLES.items():
            _, rows = base.read_table(source.tables[name], REQUIRED_COLUMNS, what=f"CheXpert {name}")
            for fields in rows:
                match = _PATH_RE.search(fields[PATH])
                key = match.group(1) if match else fields[PATH]
                yield base.RawRow(
                    name=key, line=int(fields["_line"]), fields=(name, fields), official=official
                )

    def parse(self, raw: base.RawRow) -> base.Row:
        table, fields = raw.fields
        try:
            return _parse(raw, fields)
        except ValueError as e:
            raise ValueError(f"{table}: {e}") from None

    def list_files(self, source: base.Source) -> Mapping[str, Sequence[str]]:
        return base.list_relative(source.data_dir, IMAGE_SUFFIXES)


def _parse(raw: base.RawRow, fields: Mapping[str, str]) -> base.Row:
    match = _PATH_RE.search(fields[PATH])
    if match is None:
        raise ValueError(
            f"Path {fields[PATH]!r} is not like 'CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg'."
        )
    multi_hot, mask, uncertain = parse_states(fields, LABELS)
    frontal = fields[FRONTAL_LATERAL].strip().lower()
    if frontal not in ("frontal", "lateral"):
        raise ValueError(f"Frontal/Lateral {fields[FRONTAL_LATERAL]!r} is not Frontal or Lateral.")
    view = fields[AP_PA].strip().upper() if frontal == "frontal" else "LATERAL"
    return base.Row(
        line=raw.line,
        image_index=match.group(1),
        multi_hot=multi_hot,
        patient_id=int(match.group(2)),
        follow_up=int(match.group(3)),
        age=base.parse_age_years(fields[AGE]),
        sex=base.parse_sex(fields[SEX]),
        view_position=view,
        label_mask=mask,
        label_uncertain=uncertain,
    )
