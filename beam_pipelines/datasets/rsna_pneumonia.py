"""The `rsna_pneumonia` adapter: the RSNA Pneumonia Detection Challenge (2018), stage 2.

Layout (the Kaggle download's folder):

  stage_2_train_labels.csv           patientId,x,y,width,height,Target: one row per box (Target 1,
                                     x, y the top-left corner, in the 1024x1024 DICOM's pixels),
                                     or one row without a box (Target 0)
  stage_2_detailed_class_info.csv    patientId,class: Lung Opacity, No Lung Opacity / Not Normal,
                                     or Normal (repeated on each of a patient's box rows)
  stage_2_train_images/<patientId>.dcm   one DICOM per patient (MONOCHROME2, 8-bit)

  python -m beam_pipelines.build_tfrecords --dataset=rsna_pneumonia --data_dir=rsna-pneumonia \
      --output_dir=data/tfrecords-rsna --image_size=256

One record per patient (the rows of one patientId are grouped; the first row's line is the
record's). Labels: the three classes (`LABELS`), exactly one positive per image; Target 1 is
the class Lung Opacity, the challenge's evidence of pneumonia. A class outside the three is an
`unknown_label` reject; a Target that contradicts the class, or a box that is not four numbers
with positive size, a `bad_row` reject. Age, sex and view come from the DICOM header
(PatientAge, PatientSex, ViewPosition). image_index: `<patientId>.dcm`.

Boxes: `boxes(source)` gives every box, and the job writes them beside the records in NIH's
box-file format (`boxes.csv`, finding `Pneumonia`, coordinates in the DICOM's 1024x1024 pixels)
for the localization report (`trainer.evaluate --boxes_csv=<records>/boxes.csv`).

No published split for the labelled images: they are split by patient (`--split=patient`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

from beam_pipelines.datasets import base
from tfrecords import manifest, schema

LABELS: tuple[str, ...] = ("Lung Opacity", "No Lung Opacity / Not Normal", "Normal")
LABELS_TABLE = ("stage_2_train_labels.csv", "stage_2_train_labels.csv.gz")
CLASS_TABLE = ("stage_2_detailed_class_info.csv", "stage_2_detailed_class_info.csv.gz")
PATIENT_ID, TARGET, CLASS = "patientId", "Target", "class"
BOX_COLUMNS = ("x", "y", "width", "height")
IMAGE_SUFFIXES = (".dcm",)
# The NIH finding the boxes are written as, for the localization report.
BOX_FINDING = "Pneumonia"


class Adapter(base.Adapter):
    """RSNA Pneumonia Detection Challenge; see the module docstring."""

    name = "rsna_pneumonia"
    labels = LABELS
    label_states = {"the patient's class": "positive", "any other class": "negative"}

    def extra_files(self, source: base.Source) -> dict[str, str]:
        return {manifest.BOXES_NAME: box_file_text(source)}

    @classmethod
    def recognizes(cls, names: frozenset[str]) -> bool:
        return bool(names & set(LABELS_TABLE))

    def prepare(self, data_dir: str, *, max_images: int, split_mode: str) -> base.Source:
        tables = {
            "labels_csv": self.options.labels_csv
            or base.find_one(data_dir, LABELS_TABLE, what="RSNA stage_2_train_labels.csv"),
            "classes": base.find_one(data_dir, CLASS_TABLE, what="RSNA stage_2_detailed_class_info.csv"),
        }
        base.check_columns(tables["classes"], (PATIENT_ID, CLASS), what="RSNA class table")
        _, rows = base.read_table(
            tables["labels_csv"], (PATIENT_ID, *BOX_COLUMNS, TARGET), what="RSNA labels table"
        )
        patients = list(dict.fromkeys(row[PATIENT_ID] for row in rows))
        patients = patients[:max_images] if max_images else patients
        files = {base.file_name(name) for name in base.list_relative(data_dir, IMAGE_SUFFIXES)}
        return base.Source(
            data_dir=data_dir,
            tables=tables,
            expected_rows=len(patients),
            expected_images=sum(f"{patient}.dcm" in files for patient in patients),
            description=tables["labels_csv"],
            has_published_split=False,
        )

    def read_rows(self, source: base.Source) -> Iterator[base.RawRow]:
        classes: dict[str, str] = {}
        for row in _rows(source.tables["classes"], (PATIENT_ID, CLASS)):
            classes.setdefault(row[PATIENT_ID], row[CLASS])
        grouped: dict[str, list[dict[str, str]]] = {}
        for row in _rows(source.tables["labels_csv"], (PATIENT_ID, *BOX_COLUMNS, TARGET)):
            grouped.setdefault(row[PATIENT_ID], []).append(row)
        for patient, rows in grouped.items():
            fields = (rows, classes.get(patient))
            yield base.RawRow(name=f"{patient}.dcm", line=int(rows[0]["_line"]), fields=fields)

    def parse(self, raw: base.RawRow) -> base.Row:
        rows, label = raw.fields
        if label is None:
            raise ValueError(f"patientId {rows[0][PATIENT_ID]!r} has no row in the class table.")
        if label not in LABELS:
            raise schema.UnknownLabelError(
                f"Unknown class {label!r}; known classes are: {', '.join(LABELS)}."
            )
        targets = {row[TARGET] for row in rows}
        expected = "1" if label == LABELS[0] else "0"
        if targets != {expected}:
            raise ValueError(f"Target {sorted(targets)} contradicts class {label!r} (expected {expected}).")
        if expected == "1":
            for row in rows:
                _box(row)
        return base.Row(
            line=raw.line,
            image_index=raw.name,
            multi_hot=tuple(int(name == label) for name in LABELS),
            patient_id=base.patient_number(rows[0][PATIENT_ID]),
            follow_up=0,
            age=base.UNKNOWN_AGE,
            sex="",
            view_position="",
        )

    def list_files(self, source: base.Source) -> Mapping[str, Sequence[str]]:
        files: dict[str, list[str]] = {}
        for paths in base.list_relative(source.data_dir, IMAGE_SUFFIXES).values():
            for path in paths:
                files.setdefault(base.file_name(path), []).append(path)
        return files


def _rows(path: str, required: Sequence[str]) -> Iterator[dict[str, str]]:
    return base.read_table(path, required, what=base.file_name(path))[1]


def _box(row: Mapping[str, str]) -> tuple[float, float, float, float]:
    try:
        x, y, width, height = (float(row[column]) for column in BOX_COLUMNS)
    except ValueError:
        raise ValueError(f"box {[row[c] for c in BOX_COLUMNS]} is not four numbers.") from None
    if not all(map(math.isfinite, (x, y, width, height))) or width <= 0 or height <= 0:
        raise ValueError(f"box {[row[c] for c in BOX_COLUMNS]} has no positive size.")
    return x, y, width, height


def boxes(source: base.Source) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(image_index, (x, y, width, height)) of every box of Target 1, in the file's order.

    Rows whose box is malformed are left out here; their image is a `bad_row` reject.
    """
    found = []
    for row in _rows(source.tables["labels_csv"], (PATIENT_ID, *BOX_COLUMNS, TARGET)):
        if row[TARGET] == "1":
            try:
                found.append((f"{row[PATIENT_ID]}.dcm", _box(row)))
            except ValueError:
                continue
    return found


def box_file_text(source: base.Source) -> str:
    """NIH's box-file text (`BBox_List_2017.csv` format) of every box of the labels table.

    The localization report leaves out, as its own rejects, boxes of images without a record.
    """
    lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for image_index, box in boxes(source):
        lines.append(",".join([image_index, BOX_FINDING, *(f"{v:.15g}" for v in box)]))
    return "\n".join(lines) + "\n"
