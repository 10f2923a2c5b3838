"""The `mimic_cxr_jpg` adapter: MIMIC-CXR-JPG 2.0.0 / 2.1.0 (Johnson et al., PhysioNet 2019).

Layout (the release's folder, e.g. physionet.org/files/mimic-cxr-jpg/2.0.0/):

  mimic-cxr-2.0.0-metadata.csv.gz   one row per image: dicom_id, subject_id, study_id, ViewPosition,
                                    StudyDate, StudyTime, ...
  mimic-cxr-2.0.0-chexpert.csv.gz   one row per study: subject_id, study_id, 14 CheXpert-labeller
                                    labels (1.0, 0.0, -1.0 uncertain, blank not mentioned)
  mimic-cxr-2.0.0-split.csv.gz      one row per image: dicom_id, study_id, subject_id, split
                                    (train, validate, test)
  files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg

  python -m beam_pipelines.build_tfrecords --dataset=mimic_cxr_jpg --data_dir=mimic-cxr-jpg/2.0.0 \
      --output_dir=data/tfrecords-mimic --image_size=256

One record per row of the metadata table; its labels are its study's (joined by study_id), in the
labels table's column order (`LABELS`), with the states of `chexpert.STATES`. An image whose
study has no labels row (the labeller found no findings or impression section) is a `bad_row`
reject that says so. image_index: `files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg`; patient:
subject_id; follow_up: the study's rank among the subject's studies by StudyDate and StudyTime
(0 = first); view: ViewPosition (PA, AP, LATERAL, LL, ...; "" when blank). The release holds no
age or sex (those are in MIMIC-IV): age -1, sex "".

Published split: the split table's train, validate (val) and test, kept as they are (they are
patient-disjoint); an image the split table does not name is a `not_in_split_lists` reject.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from beam_pipelines.datasets import base, chexpert
from tfrecords import schema

LABELS = schema.MIMIC_CXR_LABELS
METADATA = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv")
LABELS_TABLE = ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv")
SPLIT_TABLE = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
DICOM_ID, SUBJECT_ID, STUDY_ID, VIEW = "dicom_id", "subject_id", "study_id", "ViewPosition"
METADATA_COLUMNS = (DICOM_ID, SUBJECT_ID, STUDY_ID, VIEW, "StudyDate", "StudyTime")
SPLITS = {"train": base.TRAIN, "validate": base.VAL, "test": base.TEST}
IMAGE_SUFFIXES = (".jpg",)


def image_key(subject_id: str, study_id: str, dicom_id: str) -> str:
    """The image's path relative to the release folder."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


class Adapter(base.Adapter):
    """MIMIC-CXR-JPG; see the module docstring."""

    name = "mimic_cxr_jpg"
    labels = LABELS
    label_states = chexpert.STATES
    split_lists_detail = "the image is not in mimic-cxr-2.0.0-split.csv.gz."

    @classmethod
    def recognizes(cls, names: frozenset[str]) -> bool:
        return bool(names & set(LABELS_TABLE)) and bool(names & set(METADATA))

    def prepare(self, data_dir: str, *, max_images: int, split_mode: str) -> base.Source:
        tables = {
            "metadata": base.find_one(data_dir, METADATA, what="MIMIC-CXR-JPG metadata table"),
            "labels": base.find_one(data_dir, LABELS_TABLE, what="MIMIC-CXR-JPG labels table"),
            "split": base.find_one(data_dir, SPLIT_TABLE, what="MIMIC-CXR-JPG split table"),
        }
        base.check_columns(
            tables["labels"], (SUBJECT_ID, STUDY_ID, *LABELS), what="MIMIC-CXR-JPG labels table"
        )
        base.check_columns(tables["split"], (DICOM_ID, "split"), what="MIMIC-CXR-JPG split table")
        _, rows = base.read_table(tables["metadata"], METADATA_COLUMNS, what="MIMIC-CXR-JPG metadata table")
        keys = [image_key(r[SUBJECT_ID], r[STUDY_ID], r[DICOM_ID]) for r in rows]
        keys = keys[:max_images] if max_images else keys
        root = base.parent(tables["metadata"])
        files = base.list_relative(root, IMAGE_SUFFIXES)
        return base.Source(
            data_dir=root,
            tables=tables,
            expected_rows=len(keys),
            expected_images=sum(key in files for key in keys),
            description=tables["metadata"],
            has_published_split=True,
        )

    def read_rows(self, source: base.Source) -> Iterator[base.RawRow]:
        studies = _study_labels(source.tables["labels"])
        splits = {
            r[DICOM_ID]: SPLITS.get(r["split"]) for r in _rows(source.tables["split"], (DICOM_ID, "split"))
        }
        metadata = list(_rows(source.tables["metadata"], METADATA_COLUMNS))
        ranks = _study_ranks(metadata)
        for fields in metadata:
            key = image_key(fields[SUBJECT_ID], fields[STUDY_ID], fields[DICOM_ID])
            extra = (studies.get(fields[STUDY_ID]), ranks.get(fields[STUDY_ID], 0))
            yield base.RawRow(
                name=key,
                line=int(fields["_line"]),
                fields=(fields, *extra),
                official=splits.get(fields[DICOM_ID]),
            )

    def parse(self, raw: base.RawRow) -> base.Row:
        fields, study, rank = raw.fields
        if study is None:
            raise ValueError(f"study_id {fields[STUDY_ID]!r} has no row in the labels table (no labels).")
        multi_hot, mask, uncertain = chexpert.parse_states(study, LABELS)
        for column in (SUBJECT_ID, STUDY_ID):
            if not fields[column].isdigit():
                raise ValueError(f"{column} {fields[column]!r} is not a number.")
        return base.Row(
            line=raw.line,
            image_index=raw.name,
            multi_hot=multi_hot,
            patient_id=int(fields[SUBJECT_ID]),
            follow_up=rank,
            age=base.UNKNOWN_AGE,
            sex="",
            view_position=fields[VIEW].strip().upper(),
            label_mask=mask,
            label_uncertain=uncertain,
        )

    def list_files(self, source: base.Source) -> Mapping[str, Sequence[str]]:
        return base.list_relative(source.data_dir, IMAGE_SUFFIXES)


def _rows(path: str, required: Sequence[str]) -> Iterator[dict[str, str]]:
    return base.read_table(path, required, what=base.file_name(path))[1]


def _study_labels(path: str) -> dict[str, dict[str, str]]:
    """study_id -> its label values (only the label columns)."""
    return {
        row[STUDY_ID]: {label: row[label] for label in LABELS} for row in _rows(path, (STUDY_ID, *LABELS))
    }


def _study_ranks(metadata: Sequence[Mapping[str, str]]) -> dict[str, int]:
    """study_id -> its rank among its subject's studies by (StudyDate, StudyTime, study_id)."""
    firsts: dict[str, tuple[str, str, str]] = {}
    for row in metadata:
        when = (row["StudyDate"], row["StudyTime"].zfill(13), row[STUDY_ID])
        firsts[row[STUDY_ID]] = min(firsts.get(row[STUDY_ID], when), when)
    by_subject: dict[str, list[tuple[str, str, str]]] = {}
    for row in metadata:
        by_subject.setdefault(row[SUBJECT_ID], [])
    subject_of = {row[STUDY_ID]: row[SUBJECT_ID] for row in metadata}
    for study, when in firsts.items():
        by_subject[subject_of[study]].append(when)
    ranks = {}
    for studies in by_subject.values():
        for rank, (_, _, study) in enumerate(sorted(studies)):
            ranks[study] = rank
    return ranks
