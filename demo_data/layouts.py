"""The demo set in other data sets' download layouts, with their quirks, for the records job.

The same rows (`label_model.sample_images`: patients, follow-ups, findings, age, sex, view) and
the same painted findings (`render`) as the NIH layout, written the way each release writes them:

  chexpert        train.csv, valid.csv (Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations),
                  train|valid/patientNNNNN/studyN/viewN_frontal.jpg. Quirks: 1.0, 0.0, -1.0
                  (uncertain, some positives) and blanks (not mentioned, most negatives) in
                  train.csv; valid.csv only 1.0 and 0.0; lateral views with a blank AP/PA.
  mimic_cxr_jpg   mimic-cxr-2.0.0-{metadata,chexpert,split}.csv.gz, files/pXX/pN/sN/<dicom_id>.jpg.
                  Quirks: labels per study (a quarter of the studies have a second, lateral
                  image sharing them), every 25th study without a labels row, -1.0 and blanks.
  padchest        PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv, <ImageDir>/<ImageID>.png.
                  Quirks: 16-bit PNGs holding 12-bit values (v * 16 + an offset per image),
                  Labels as Python list strings with stray spaces, names outside the adapter's
                  vocabulary, every 40th Labels field blank, 40-digit PatientIDs.
  rsna_pneumonia  stage_2_train_labels.csv (one row per box), stage_2_detailed_class_info.csv,
                  stage_2_train_images/<patientId>.dcm, one image per patient. Quirks: DICOM in
                  the three encodings of `dicom.VARIANTS` (MONOCHROME1 included), boxes of the
                  painted pneumonia and infiltration patterns.
  folders         ROOT/{train,test}/{NORMAL,ABNORMAL}/personN_M.{png,jpeg,dcm} (the pediatric
                  pneumonia set's naming); an image with any finding is ABNORMAL.

Findings a layout's vocabulary has no name for are painted but not labelled (e.g. Hernia in
CheXpert's). TensorFlow-free: numpy, PIL and pydicom.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from demo_data import dicom, png
from demo_data.layout import DemoImage
from tfrecords import schema

LAYOUTS = ("nih", "chexpert", "mimic_cxr_jpg", "padchest", "rsna_pneumonia", "folders")
# NIH findings -> CheXpert observations (also MIMIC-CXR-JPG's labeller's).
CHEXPERT_NAMES = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pleural_Thickening": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}
CHEXPERT_COLUMNS = schema.CHEXPERT_LABELS
MIMIC_COLUMNS = schema.MIMIC_CXR_LABELS
# NIH findings -> PadChest's names (lower case, as its Labels write them).
PADCHEST_NAMES = {
    "Atelectasis": ("atelectasis", "laminar atelectasis"),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation",),
    "Edema": ("pulmonary edema",),
    "Effusion": ("pleural effusion",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("pulmonary fibrosis",),
    "Hernia": ("hiatal hernia",),
    "Infiltration": ("infiltrates",),
    "Mass": ("mass",),
    "Nodule": ("nodule", "multiple nodules"),
    "Pleural_Thickening": ("pleural thickening", "apical pleural thickening"),
    "Pneumonia": ("pneumonia",),
    "Pneumothorax": ("pneumothorax",),
}
# Names PadChest writes that the adapter's vocabulary leaves out.
PADCHEST_OTHER_NAMES = ("kyphosis", "aortic elongation", "chronic changes")
RSNA_OPACITY = ("Pneumonia", "Infiltration")


def write_layout(
    name: str,
    output_dir: str,
    rows: Sequence[DemoImage],
    test: set[str],
    pixels_of: Callable[[int, int], tuple[np.ndarray, dict[str, Any]]],
    *,
    seed: int,
) -> dict[str, Any]:
    """Writes `rows` into `output_dir` in layout `name` (not "nih": see `writer`).

    Args:
      name: one of `LAYOUTS` but "nih".
      output_dir: the data set's folder (created).
      rows: the demo rows; `test`: the image indices of the test patients.
      pixels_of: (row number, variant) -> (uint8 pixels, {finding: box}); variant 1 renders a
        second view of the same findings.
      seed: the random seed of the quirks.

    Returns:
      A summary: layout, files written, and the layout's own counts.
    """
    writers = {
        "chexpert": _write_chexpert,
        "mimic_cxr_jpg": _write_mimic,
        "padchest": _write_padchest,
        "rsna_pneumonia": _write_rsna,
        "folders": _write_folders,
    }
    if name not in writers:
        raise ValueError(f"layout must be one of {tuple(writers)}, got {name!r}.")
    os.makedirs(output_dir, exist_ok=True)
    rng = np.random.default_rng([seed, 7, LAYOUTS.index(name)])
    return {"layout": name, **writers[name](output_dir, rows, test, pixels_of, rng)}


# ---------------------------------------------------------------------------------------------
# Files.


def _write_bytes(output_dir: str, relative: str, data: bytes) -> None:
    path = os.path.join(output_dir, *relative.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _csv_bytes(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    return buffer.getvalue().encode()


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # mtime 0: the same bytes every run.


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png16_bytes(pixels: np.ndarray, offset: int) -> bytes:
    """A 16-bit PNG of 12-bit values: v * 16 + offset (0 <= offset < 16 * 16)."""
    wide = pixels.astype(np.uint16) * 16 + np.uint16(offset)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    return buffer.getvalue()


def _hex_id(*parts: Any, length: int = 40) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:length]


def _chexpert_values(
    row: DemoImage, columns: Sequence[str], rng: np.random.Generator, *, quirks: bool
) -> list[str]:
    """1.0 / 0.0 / -1.0 / "" per observation; without quirks only 1.0 and 0.0."""
    positive = {CHEXPERT_NAMES[f] for f in row.findings if f in CHEXPERT_NAMES}
    if not row.findings:
        positive.add("No Finding")
    values = []
    for column in columns:
        if column in positive:
            values.append("-1.0" if quirks and rng.random() < 0.15 else "1.0")
        elif quirks:
            values.append("0.0" if rng.random() < 0.25 else "")
        else:
            values.append("0.0")
    return values


# ---------------------------------------------------------------------------------------------
# The layouts.


def _write_chexpert(output_dir, rows, test, pixels_of, rng) -> dict[str, Any]:
    tables: dict[str, list[list[Any]]] = {"train": [], "valid": []}
    for number, row in enumerate(rows):
        part = "valid" if row.image_index in test else "train"
        lateral = number % 5 == 4
        view = "view2_lateral.jpg" if lateral else "view1_frontal.jpg"
        relative = f"{part}/patient{row.patient_id:05d}/study{row.follow_up + 1}/{view}"
        _write_bytes(output_dir, relative, jpeg_bytes(pixels_of(number, 0)[0]))
        sex = "Unknown" if number % 17 == 0 else {"M": "Male", "F": "Female"}[row.sex]
        values = _chexpert_values(row, CHEXPERT_COLUMNS, rng, quirks=part == "train")
        frontal = ["Lateral", ""] if lateral else ["Frontal", row.view_position]
        tables[part].append([f"CheXpert-v1.0-small/{relative}", sex, row.age, *frontal, *values])
    header = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_COLUMNS)
    for part, lines in tables.items():
        _write_bytes(output_dir, f"{part}.csv", _csv_bytes(header, lines))
    return {"train_images": len(tables["train"]), "valid_images": len(tables["valid"])}


def _write_mimic(output_dir, rows, test, pixels_of, rng) -> dict[str, Any]:
    metadata, labels, split = [], [], []
    for number, row in enumerate(rows):
        subject, study = str(10000000 + row.patient_id), str(50000000 + number)
        if number % 25 != 24:  # Every 25th study has no labels row, as in the release.
            labels.append([subject, study, *_chexpert_values(row, MIMIC_COLUMNS, rng, quirks=True)])
        part = "test" if row.image_index in test else ("validate" if row.patient_id % 8 == 0 else "train")
        views = [("PA" if row.view_position == "PA" else "AP", 0)]
        views += [("LATERAL", 1)] if number % 4 == 0 else []
        for view, variant in views:
            dicom_id = "-".join(_hex_id("mimic", number, variant)[i : i + 8] for i in range(0, 40, 8))
            relative = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.jpg"
            _write_bytes(output_dir, relative, jpeg_bytes(pixels_of(number, variant)[0]))
            date = 21800101 + row.follow_up * 100  # Shifted dates, as the release's.
            metadata.append(
                [dicom_id, subject, study, "CHEST (PA AND LAT)", view, 64, 64, date, "101500.000"]
            )
            split.append([dicom_id, study, subject, part])
    meta_header = (
        "dicom_id",
        "subject_id",
        "study_id",
        "PerformedProcedureStepDescription",
        "ViewPosition",
        "Rows",
        "Columns",
        "StudyDate",
        "StudyTime",
    )
    _write_bytes(output_dir, "mimic-cxr-2.0.0-metadata.csv.gz", _gzip(_csv_bytes(meta_header, metadata)))
    label_header = ("subject_id", "study_id", *MIMIC_COLUMNS)
    _write_bytes(output_dir, "mimic-cxr-2.0.0-chexpert.csv.gz", _gzip(_csv_bytes(label_header, labels)))
    split_header = ("dicom_id", "study_id", "subject_id", "split")
    _write_bytes(output_dir, "mimic-cxr-2.0.0-split.csv.gz", _gzip(_csv_bytes(split_header, split)))
    return {"images": len(metadata), "studies": len(rows), "studies_without_labels": len(rows) - len(labels)}


def _padchest_labels(row: DemoImage, number: int, rng: np.random.Generator) -> str:
    if number % 40 == 39:
        return ""  # A blank Labels field, as some rows of the release have.
    names = [str(rng.choice(PADCHEST_NAMES[f])) for f in row.findings] or ["normal"]
    if rng.random() < 0.2:
        names.append(str(rng.choice(PADCHEST_OTHER_NAMES)))
    return "[" + ", ".join(repr(" " + n if i else n) for i, n in enumerate(names)) + "]"


def _write_padchest(output_dir, rows, test, pixels_of, rng) -> dict[str, Any]:
    lines = []
    for number, row in enumerate(rows):
        image_id = f"{_hex_id('padchest', number, length=30)}_{number:04d}.png"
        image_dir = number % 3
        offset = int(rng.integers(0, 200))
        _write_bytes(output_dir, f"{image_dir}/{image_id}", png16_bytes(pixels_of(number, 0)[0], offset))
        patient = str(int(_hex_id("padchest-patient", row.patient_id), 16))[:40]
        year = 2009 + row.follow_up % 8
        projection = "PA" if row.view_position == "PA" else "AP_horizontal"
        labels = _padchest_labels(row, number, rng)
        lines.append(
            [image_id, image_dir, f"{year}0315", patient, year - row.age, row.sex, projection, labels]
        )
    header = (
        "ImageID",
        "ImageDir",
        "StudyDate_DICOM",
        "PatientID",
        "PatientBirth",
        "PatientSex_DICOM",
        "Projection",
        "Labels",
    )
    name = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
    _write_bytes(output_dir, name, _csv_bytes(header, lines))
    return {"images": len(lines), "blank_labels": sum(1 for line in lines if not line[-1])}


def _write_rsna(output_dir, rows, test, pixels_of, rng) -> dict[str, Any]:
    labels, classes, seen = [], [], set()
    for number, row in enumerate(rows):
        if row.patient_id in seen:
            continue  # One image per patient, as in the challenge.
        seen.add(row.patient_id)
        patient = str(_uuid(row.patient_id))
        pixels, boxes = pixels_of(number, 0)
        variant = dicom.VARIANTS[len(seen) % len(dicom.VARIANTS)]
        data = dicom.encode_dicom(
            pixels,
            key=patient,
            variant=variant,
            patient_id=patient,
            age=row.age,
            sex=row.sex,
            view_position=row.view_position,
        )
        _write_bytes(output_dir, f"stage_2_train_images/{patient}.dcm", data)
        opacity = [boxes[f] for f in RSNA_OPACITY if f in row.findings and f in boxes]
        label = "Lung Opacity" if opacity else ("No Lung Opacity / Not Normal" if row.findings else "Normal")
        for box in opacity or [None]:
            coords = (
                ["", "", "", ""]
                if box is None
                else [f"{v:g}" for v in (box.x0, box.y0, box.width, box.height)]
            )
            labels.append([patient, *coords, int(box is not None)])
            classes.append([patient, label])
    _write_bytes(
        output_dir,
        "stage_2_train_labels.csv",
        _csv_bytes(("patientId", "x", "y", "width", "height", "Target"), labels),
    )
    _write_bytes(output_dir, "stage_2_detailed_class_info.csv", _csv_bytes(("patientId", "class"), classes))
    return {"images": len(seen), "boxes": sum(1 for line in labels if line[-1])}


def _uuid(patient_id: int) -> str:
    digest = _hex_id("rsna", patient_id, length=32)
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


def _write_folders(output_dir, rows, test, pixels_of, rng) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for number, row in enumerate(rows):
        split = "test" if row.image_index in test else "train"
        label = "ABNORMAL" if row.findings else "NORMAL"
        pixels = pixels_of(number, 0)[0]
        stem = f"person{row.patient_id}_{row.follow_up}"
        if number % 10 == 3:
            name, data = f"{stem}.dcm", dicom.encode_dicom(pixels, key=stem, variant="monochrome1")
        elif number % 3 == 0:
            name, data = f"{stem}.jpeg", jpeg_bytes(pixels)
        else:
            name, data = f"{stem}.png", png.encode_png(pixels)
        _write_bytes(output_dir, f"{split}/{label}/{name}", data)
        counts[label] = counts.get(label, 0) + 1
    return {"images": len(rows), "classes": counts}
