"""Writes 8-bit demo pixels as DICOM files the way X-ray modalities store them.

Three encodings of the same picture (`VARIANTS`), which a reader must all show the same way:
  - `monochrome2`: 8 bits stored, bright = high (what most digitised films look like);
  - `monochrome1`: 8 bits stored, bright = low (inverted; CR and DR systems often write this);
  - `windowed12`: 12 bits in 16 (values v * 16 + 8), with a Window Center/Width that spans
    the stored range, as a DR system writes its raw detector values.
All uncompressed (Explicit VR Little Endian), one frame, with PatientID, PatientAge ("045Y"),
PatientSex and ViewPosition. UIDs derive from the file's key, so the same key gives the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

VARIANTS = ("monochrome2", "monochrome1", "windowed12")


def encode_dicom(
    pixels: np.ndarray,
    *,
    key: str,
    variant: str = "monochrome2",
    patient_id: str = "",
    age: int | None = None,
    sex: str = "",
    view_position: str = "",
) -> bytes:
    """The bytes of a DICOM file holding uint8 gray `pixels` [H, W] in `variant`'s encoding.

    Args:
      pixels: uint8 [H, W]; what a correct reader shows (after inversion or windowing).
      key: a name unique to the file; fixes its UIDs.
      variant: one of `VARIANTS`.
      patient_id, age, sex, view_position: header fields (age in years, written "045Y").

    Raises:
      ValueError: an unknown variant or pixels that are not uint8 [H, W].
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ValueError(f"pixels must be uint8 [H, W], got {pixels.dtype} {pixels.shape}.")
    dataset = _header(key, patient_id, age, sex, view_position)
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PixelRepresentation = 0
    if variant == "windowed12":
        stored = pixels.astype(np.uint16) * 16 + 8
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
        # The window that maps 0..4095 onto the display range, as pydicom's linear function reads it.
        dataset.WindowCenter, dataset.WindowWidth = 2048, 4096
    else:
        stored = pixels if variant == "monochrome2" else 255 - pixels
        dataset.PhotometricInterpretation = variant.upper()
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = np.ascontiguousarray(stored).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _header(key: str, patient_id: str, age: int | None, sex: str, view_position: str) -> Dataset:
    instance = generate_uid(entropy_srcs=["cxr-demo", key])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.preamble = b"\0" * 128
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = instance
    dataset.StudyInstanceUID = generate_uid(entropy_srcs=["cxr-demo-study", key])
    dataset.SeriesInstanceUID = generate_uid(entropy_srcs=["cxr-demo-series", key])
    dataset.Modality = "CR"
    dataset.PatientID = patient_id
    if age is not None:
        dataset.PatientAge = f"{age:03d}Y"
    dataset.PatientSex = sex
    dataset.ViewPosition = view_position
    return dataset
