"""NIH ChestX-ray14's folder layout and file formats, as the demo set writes them.

Files, relative to the data set's folder:

  images_001/images/00000001_000.png   one 8-bit grayscale PNG per row of the label file
  Data_Entry_2017.csv                  the 2017 label file (`DemoImage.csv_line`)
  train_val_list.txt, test_list.txt    the official split, one image index a line
  BBox_List_2017.csv                   boxes of 8 findings on some test images (`bbox_text`)
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable, Sequence

from demo_data.canvas import Box
from tfrecords import schema

CSV_NAME = "Data_Entry_2017.csv"
TRAIN_VAL_LIST_NAME = schema.NIH_TRAIN_VAL_LIST_NAME
TEST_LIST_NAME = schema.NIH_TEST_LIST_NAME
BBOX_NAME = "BBox_List_2017.csv"
IMAGES_SUBDIR = posixpath.join("images_001", "images")

# The real 2017 header: the two bracketed column names each contain a comma and the line ends with
# one, so it has 12 fields while every data row has 11. Lines end with CRLF, as in NIH's file.
CSV_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
CSV_LINE_END = "\r\n"
MAX_FOLLOW_UPS = 1000  # `Follow-up #` has three digits.
MAX_PATIENTS = 10**8  # `Patient ID` has eight digits.

# NIH's box file: the bracketed column name spans the four data columns x, y, w, h and the header
# ends with three empty fields, so it has 9 fields while every data row has 6. Lines end with LF.
# x, y is the top-left corner, w, h the size, in pixels of the image as written (1024x1024 in
# NIH's release); numbers are printed with 15 significant digits, as in NIH's file.
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
BBOX_LINE_END = "\n"
# The 8 findings NIH boxed, with the label its box file gives them (it spells Infiltrate).
BBOX_LABELS: dict[str, str] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Effusion",
    "Infiltration": "Infiltrate",
    "Mass": "Mass",
    "Nodule": "Nodule",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
}


@dataclasses.dataclass(frozen=True)
class DemoImage:
    """One row of the generated `Data_Entry_2017.csv`."""

    image_index: str
    findings: tuple[str, ...]  # Empty for "No Finding".
    follow_up: int
    patient_id: int
    age: int
    sex: str
    view_position: str
    original_width: int
    original_height: int
    pixel_spacing: str

    @property
    def finding_labels(self) -> str:
        """NIH's `Finding Labels` field: findings joined by "|" or "No Finding"."""
        return schema.LABEL_SEPARATOR.join(self.findings) if self.findings else schema.NO_FINDING

    def csv_line(self) -> str:
        """The row as NIH writes it, without the line end."""
        return ",".join(
            [
                self.image_index,
                self.finding_labels,
                f"{self.follow_up:03d}",
                f"{self.patient_id:08d}",
                f"{self.age:03d}Y",
                self.sex,
                self.view_position,
                str(self.original_width),
                str(self.original_height),
                self.pixel_spacing,
                self.pixel_spacing,
            ]
        )


def image_index_name(patient_id: int, follow_up: int) -> str:
    """NIH's file name of an image, e.g. `00000001_000.png`."""
    return f"{patient_id:08d}_{follow_up:03d}.png"


def csv_text(rows: Sequence[DemoImage]) -> str:
    """The whole `Data_Entry_2017.csv`: header, one line per row, CRLF after every line."""
    return CSV_LINE_END.join([CSV_HEADER, *(row.csv_line() for row in rows)]) + CSV_LINE_END


def list_text(image_indices: Sequence[str]) -> str:
    """A split list: one image index a line, no newline after the last (like NIH's)."""
    return "\n".join(image_indices)


def bbox_text(boxes: Iterable[tuple[str, str, Box]]) -> str:
    """The whole `BBox_List_2017.csv`, ordered like NIH's: by box label, then image index.

    Args:
      boxes: (image index, finding from `BBOX_LABELS`, box in the written image's pixels).

    Returns:
      The file's text, with a line end after every line.

    Raises:
      ValueError: a finding NIH does not box.
    """
    rows = []
    for image_index, finding, box in boxes:
        if finding not in BBOX_LABELS:
            raise ValueError(f"{image_index}: NIH boxes only {', '.join(BBOX_LABELS)}; got {finding!r}.")
        values = (f"{float(v):.15g}" for v in (box.x0, box.y0, box.width, box.height))
        rows.append(
            (BBOX_LABELS[finding], image_index, ",".join([image_index, BBOX_LABELS[finding], *values]))
        )
    lines = [BBOX_HEADER, *(line for _, _, line in sorted(rows))]
    return "".join(line + BBOX_LINE_END for line in lines)
