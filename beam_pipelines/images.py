"""Image files to 8-bit gray pixels: PNG and JPEG through Pillow, DICOM through pydicom.

Every adapter's images go through `decode_gray`, which tells a DICOM file by its content (the
`DICM` tag after the 128-byte preamble) or by its `.dcm` suffix, and everything else by Pillow.

PNG and JPEG (`decode_gray` without DICOM):
  - 8-bit gray (L) as is; LA drops alpha; RGB, RGBA and P through Pillow's ITU-R 601 luma
    (exact for R=G=B images);
  - 16-bit gray (I;16 and friends) by `sixteen_bit`: "full_range" maps 0..65535 to 0..255
    (v / 257, rounded; NIH's rule), "min_max" maps the image's own lowest..highest value to
    0..255, for sets whose 16-bit PNGs hold 12-bit values with a range that varies per image
    (PadChest).

DICOM (`decode_dicom`), in the order of the standard's grayscale pipeline (PS3.3 C.11):
  1. pixel data decoded by pydicom: uncompressed, RLE, and the JPEG baseline/extended and
     JPEG 2000 transfer syntaxes through Pillow; any other (e.g. JPEG lossless, JPEG-LS) is a
     `bad_image` reject that names the transfer syntax, as are a missing pixel data element,
     colour images and several frames (only the first frame of a multi-frame file is not
     guessed at);
  2. the modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence);
  3. the VOI LUT: a VOI LUT Sequence, else the first Window Center/Width, when present;
  4. scaling to 8 bits: the result's lowest..highest possible value (the window when one was
     applied, else the stored bit depth, 12 or 16 bits, after the modality LUT) maps linearly
     to 0..255, so a 12-bit image is not left dark in a 16-bit range;
  5. MONOCHROME1 (bright = low values) inverted, so bone is bright as in MONOCHROME2.
The header's PatientAge, PatientSex and ViewPosition are returned beside the pixels, for
tables that lack them (RSNA Pneumonia).
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

DICOM_SUFFIX = ".dcm"
SIXTEEN_BIT_SCALINGS = ("full_range", "min_max")
_BUFFER_REPR_RE = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")
# Pixel modes Pillow gives 16-bit grayscale PNGs (I;16 on little-endian machines, I when converted).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# "045Y", "011M"; a bare number (as RSNA's files write it) is years.
_DICOM_AGE_RE = re.compile(r"^(\d{1,3})([YMWD]?)$")
_DICOM_AGE_DAYS = {"Y": 365.25, "M": 365.25 / 12, "W": 7.0, "D": 1.0}


@dataclasses.dataclass(frozen=True)
class HeaderMetadata:
    """What a DICOM header says of the patient and view; -1 / "" where it says nothing."""

    age: int = -1
    sex: str = ""
    view_position: str = ""


def is_dicom(data: bytes, name: str = "") -> bool:
    """Whether `data` is a DICOM file: the `DICM` magic after the preamble, or a `.dcm` name."""
    return data[128:132] == b"DICM" or name.lower().endswith(DICOM_SUFFIX)


def decode_gray(data: bytes, *, name: str = "", sixteen_bit: str = "full_range") -> np.ndarray:
    """Decodes an image file of any supported kind into one 8-bit gray channel [H, W].

    Pillow rather than tf.image for PNG and JPEG: both decode and resize at about the same speed
    (the "decode_pil" and "decode_tf" cases of benchmarks/bench_tfrecords.py), but TensorFlow
    would have to be imported by every Beam worker.

    Args:
      data: the file's bytes.
      name: the file's name or path, which tells a DICOM file without a preamble by its suffix.
      sixteen_bit: how 16-bit PNGs become 8 bits, one of `SIXTEEN_BIT_SCALINGS` (see the module
        docstring).

    Raises:
      ValueError: empty, truncated, corrupt or not an image, or a DICOM file that cannot be
        shown (see `decode_dicom`); the message is the decoder's.
    """
    return decode_with_header(data, name=name, sixteen_bit=sixteen_bit)[0]


def decode_with_header(
    data: bytes, *, name: str = "", sixteen_bit: str = "full_range"
) -> tuple[np.ndarray, HeaderMetadata]:
    """`decode_gray`, with the DICOM header's metadata (empty for other files)."""
    if not data:
        raise ValueError("empty file (0 bytes)")
    if is_dicom(data, name):
        return decode_dicom(data)
    return _decode_pillow(data, sixteen_bit), HeaderMetadata()


def _decode_pillow(data: bytes, sixteen_bit: str) -> np.ndarray:
    if sixteen_bit not in SIXTEEN_BIT_SCALINGS:
        raise ValueError(f"sixteen_bit must be one of {SIXTEEN_BIT_SCALINGS}, got {sixteen_bit!r}.")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode == "L":
                return np.asarray(image)
            if mode in _SIXTEEN_BIT_MODES:
                wide = np.asarray(image).astype(np.int64)
                if sixteen_bit == "min_max":
                    return _stretch(wide, int(wide.min()), int(wide.max()))
                return np.clip((wide * 255 + 32767) // 65535, 0, 255).astype(np.uint8)
            if mode == "LA":
                return np.asarray(image.getchannel("L"))
            return np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # Pillow raises OSError for truncated data, SyntaxError for broken PNG chunks. Its message
        # names the in-memory buffer by address, which would make rejects differ between runs.
        message = _BUFFER_REPR_RE.sub("the file", str(e))
        raise ValueError(f"{type(e).__name__}: {message}") from None


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Maps low..high linearly to 0..255 (rounded, clipped); a flat image becomes 0."""
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.asarray(values, np.float64) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def decode_dicom(data: bytes) -> tuple[np.ndarray, HeaderMetadata]:
    """A DICOM file's first frame as 8-bit gray pixels, with its header's metadata.

    See the module docstring for the steps.

    Raises:
      ValueError: not a readable DICOM file, no pixel data, a transfer syntax pydicom cannot
        decode with the installed packages (named), colour or several frames.
    """
    import pydicom  # Only DICOM sets need it; loaded on first use by each worker.
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as e:
        raise ValueError(f"not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in dataset:
        raise ValueError("DICOM file without pixel data (no PixelData element)")
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"DICOM PhotometricInterpretation {photometric!r} is not grayscale")
    if int(dataset.get("NumberOfFrames", 1) or 1) != 1:
        raise ValueError(f"DICOM file with {dataset.NumberOfFrames} frames; one image per file is expected")
    try:
        stored = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as e:
        name = getattr(syntax, "name", str(syntax))
        raise ValueError(f"DICOM transfer syntax {name} ({syntax}) cannot be decoded here: {e}") from None
    except (ValueError, AttributeError, KeyError, OSError) as e:
        raise ValueError(f"DICOM pixel data cannot be read ({type(e).__name__}: {e})") from None
    pixels = _to_eight_bits(dataset, stored, apply_modality_lut, apply_voi_lut)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels, _header_metadata(dataset)


def _to_eight_bits(dataset, stored: np.ndarray, apply_modality_lut, apply_voi_lut) -> np.ndarray:
    """Modality LUT, then the VOI LUT or window when present, then the value range to 0..255."""
    values = np.asarray(apply_modality_lut(stored, dataset), np.float64)
    if dataset.get("VOILUTSequence"):
        values = np.asarray(apply_voi_lut(values, dataset, index=0), np.float64)
        return _stretch(values, 0.0, float(2 ** int(dataset.VOILUTSequence[0].LUTDescriptor[2]) - 1))
    if "WindowCenter" in dataset and "WindowWidth" in dataset:
        # pydicom's windowing maps the window onto the modality output's range (below).
        values = np.asarray(apply_voi_lut(values, dataset, index=0), np.float64)
    return _stretch(values, *_modality_output_range(dataset))


def _modality_output_range(dataset) -> tuple[float, float]:
    """The lowest and highest value the modality LUT can give (as pydicom's windowing takes it)."""
    if dataset.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(dataset.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(dataset.get("BitsStored", 0) or dataset.get("BitsAllocated", 16) or 16)
    if int(dataset.get("PixelRepresentation", 0) or 0):
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    else:
        low, high = 0.0, float(2**bits - 1)
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = sorted((low * float(slope) + float(intercept), high * float(slope) + float(intercept)))
    return low, high


def _header_metadata(dataset) -> HeaderMetadata:
    age = -1
    match = _DICOM_AGE_RE.match(str(dataset.get("PatientAge", "")).strip().upper())
    if match:
        unit = match.group(2) or "Y"
        age = int(int(match.group(1)) * _DICOM_AGE_DAYS[unit] / _DICOM_AGE_DAYS["Y"] + 1e-9)
    sex = str(dataset.get("PatientSex", "")).strip().upper()
    view = str(dataset.get("ViewPosition", "")).strip().upper()
    return HeaderMetadata(age=age, sex=sex if sex in ("M", "F") else "", view_position=view)


def resize_area(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """Resizes gray uint8 pixels to image_size x image_size with an area (box) filter.

    Pillow's BOX filter averages every source pixel a target pixel covers (antialiased); for the
    1024 -> 256 case it matches tf.image.resize(method="area") within one grey level.
    """
    if pixels.shape == (image_size, image_size):
        return pixels
    image = Image.fromarray(pixels, mode="L")
    return np.asarray(image.resize((image_size, image_size), Image.Resampling.BOX))
