"""The `padchest` adapter: PadChest (Bustos et al., Medical Image Analysis 2020; BIMCV).

Layout (the download's folder):

  PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]   one row per image: ImageID,
      ImageDir, StudyDate_DICOM, PatientID, PatientBirth, PatientSex_DICOM, Projection, Labels
      (a Python list string, e.g. "['pleural effusion', 'cardiomegaly']"), ...
  0/216840111366964013076187734852011201090749220_r6y8tx.png   16-bit grayscale PNGs, in the
  1/...                                                          folder named by ImageDir

  python -m beam_pipelines.build_tfrecords --dataset=padchest --data_dir=padchest \
      --output_dir=data/tfrecords-padchest --image_size=256

image_index: `ImageDir/ImageID`. Patient: PatientID (a long number, hashed to the record's
int64 when it does not fit, `base.patient_number`). Age: the study year (StudyDate_DICOM,
YYYYMMDD) minus PatientBirth, -1 when either is blank. Sex: M, F or "". View: Projection
upper-cased (PA, L, AP, AP_HORIZONTAL, ...). 16-bit PNGs: the image's own lowest..highest value to
0..255 (`images.decode_gray`, `min_max`): PadChest stores 12-bit-range values in 16 bits with a
range that varies per image, so NIH's full-range rule would leave most images nearly black.

Labels: PadChest's reports name about 190 findings; the vocabulary is 15 of them (`LABELS`, the
names as PadChest spells them), each with the PadChest names it takes in (`LABEL_MAP`, from the
hierarchy of PadChest's label tree in the paper above: e.g. lobar, laminar and segmental
atelectasis count as atelectasis). A name in the row's list is positive, any other negative;
names outside the map are not part of the vocabulary and are left out. A blank or unparsable
Labels field is a `bad_row` reject.

No published split: images are split by patient (`--split=patient`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Sequence

from beam_pipelines.datasets import base

# Vocabulary name -> the PadChest names that count as it.
LABEL_MAP: dict[str, tuple[str, ...]] = {
    "atelectasis": (
        "atelectasis",
        "laminar atelectasis",
        "lobar atelectasis",
        "segmental atelectasis",
        "round atelectasis",
        "total atelectasis",
    ),
    "cardiomegaly": ("cardiomegaly",),
    "consolidation": ("consolidation",),
    "pulmonary edema": ("pulmonary edema",),
    "pleural effusion": ("pleural effusion", "loculated pleural effusion"),
    "emphysema": ("emphysema",),
    "pulmonary fibrosis": ("pulmonary fibrosis",),
    "hiatal hernia": ("hiatal hernia",),
    "infiltrates": ("infiltrates",),
    "mass": ("mass", "pulmonary mass"),
    "nodule": ("nodule", "multiple nodules"),
    "pleural thickening": ("pleural thickening", "apical pleural thickening"),
    "pneumonia": ("pneumonia",),
    "pneumothorax": ("pneumothorax",),
    "normal": ("normal",),
}
LABELS: tuple[str, ...] = tuple(LABEL_MAP)
_VOCABULARY_OF = {name: label for label, names in LABEL_MAP.items() for name in names}
CSV_PATTERNS = ("PADCHEST_chest_x_ray_images_labels_*.csv", "PADCHEST_chest_x_ray_images_labels_*.csv.gz")
IMAGE_ID, IMAGE_DIR, PATIENT_ID, LABELS_COLUMN = "ImageID", "ImageDir", "PatientID", "Labels"
BIRTH, SEX, STUDY_DATE, PROJECTION = "PatientBirth", "PatientSex_DICOM", "StudyDate_DICOM", "Projection"
REQUIRED_COLUMNS = (IMAGE_ID, IMAGE_DIR, PATIENT_ID, BIRTH, SEX, STUDY_DATE, PROJECTION, LABELS_COLUMN)
IMAGE_SUFFIXES = (".png",)


def parse_label_list(text: str) -> list[str]:
    """PadChest's Labels field, e.g. "['pleural effusion', ' cardiomegaly']", as stripped names.

    Raises:
      ValueError: blank, not a list of strings, or a list with no name.
    """
    try:
        value = ast.literal_eval(text.strip()) if text.strip() else None
    except (ValueError, SyntaxError):
        raise ValueError(f"Labels {text!r} is not a list like \"['normal']\".") from None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValueError(f"Labels {text!r} is not a list of names like \"['normal']\".")
    names = [name.strip().lower() for name in value if name.strip()]
    if not names:
        raise ValueError(f"Labels {text!r} names no finding (not even 'normal').")
    return names


class Adapter(base.Adapter):
    """PadChest; see the module docstring."""

    name = "padchest"
    labels = LABELS
    label_states = {"named in Labels": "positive", "not named": "negative"}
    sixteen_bit = "min_max"

    @classmethod
    def recognizes(cls, names: frozenset[str]) -> bool:
        return any(name.startswith("PADCHEST_chest_x_ray_images_labels") for name in names)

    def prepare(self, data_dir: str, *, max_images: int, split_mode: str) -> base.Source:
        labels_csv = self.options.labels_csv or base.find_one(
            data_dir, CSV_PATTERNS, what="PadChest labels CSV"
        )
        _, rows = base.read_table(labels_csv, REQUIRED_COLUMNS, what="PadChest labels CSV")
        keys = [f"{row[IMAGE_DIR]}/{row[IMAGE_ID]}" for row in rows]
        keys = keys[:max_images] if max_images else keys
        files = base.list_relative(data_dir, IMAGE_SUFFIXES)
        return base.Source(
            data_dir=data_dir,
            tables={"labels_csv": labels_csv},
            expected_rows=len(keys),
            expected_images=sum(key in files for key in keys),
            description=labels_csv,
            has_published_split=False,
        )

    def read_rows(self, source: base.Source) -> Iterator[base.RawRow]:
        _, rows = base.read_table(source.tables["labels_csv"], REQUIRED_COLUMNS, what="PadChest labels CSV")
        for fields in rows:
            yield base.RawRow(
                name=f"{fields[IMAGE_DIR]}/{fields[IMAGE_ID]}", line=int(fields["_line"]), fields=fields
            )

    def parse(self, raw: base.RawRow) -> base.Row:
        fields = raw.fields
        if not fields[IMAGE_ID] or not fields[PATIENT_ID]:
            raise ValueError(f"ImageID {fields[IMAGE_ID]!r} or PatientID {fields[PATIENT_ID]!r} is blank.")
        named = {
            _VOCABULARY_OF[name] for name in parse_label_list(fields[LABELS_COLUMN]) if name in _VOCABULARY_OF
        }
        return base.Row(
            line=raw.line,
            image_index=raw.name,
            multi_hot=tuple(int(label in named) for label in LABELS),
            patient_id=base.patient_number(fields[PATIENT_ID]),
            follow_up=0,
            age=_age(fields[BIRTH], fields[STUDY_DATE]),
            sex=base.parse_sex(fields[SEX]),
            view_position=fields[PROJECTION].strip().upper(),
        )

    def list_files(self, source: base.Source) -> Mapping[str, Sequence[str]]:
        return base.list_relative(source.data_dir, IMAGE_SUFFIXES)


def _age(birth: str, study_date: str) -> int:
    """Study year minus birth year; -1 when either is blank.

    Raises:
      ValueError: a value that is not a year (birth) or YYYYMMDD date, or an age outside 0..150.
    """
    if not birth.strip() or not study_date.strip():
        return base.UNKNOWN_AGE
    try:
        born, year = int(float(birth)), int(study_date.strip()[:4])
    except ValueError:
        raise ValueError(f"PatientBirth {birth!r} or StudyDate_DICOM {study_date!r} is not a year.") from None
    return base.parse_age_years(str(year - born))
