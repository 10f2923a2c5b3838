"""Tests for beam_pipelines.images: PNG, JPEG and DICOM files to 8-bit gray pixels."""

import io

import numpy as np
import pydicom
import tensorflow as tf
from absl.testing import parameterized
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLosslessSV1, RLELossless

from beam_pipelines import images
from demo_data import dicom
from tests import fake_data

# Every grey level 0..255 once, in a 16x16 ramp: any scaling error shows.
_RAMP = np.arange(256, dtype=np.uint8).reshape(16, 16)


def _dicom_dataset(pixels=_RAMP, **kwargs) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(dicom.encode_dicom(pixels, key="test", **kwargs)))


def _bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


class DicomTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters(*dicom.VARIANTS)
    def test_every_encoding_shows_the_same_picture(self, variant):
        # monochrome1 stores 255 - v (inverted back), windowed12 stores v * 16 + 8 with a window
        # of centre 2048 and width 4096 over 0..4095: each must give back the ramp exactly.
        data = dicom.encode_dicom(_RAMP, key=variant, variant=variant, age=45, sex="F", view_position="AP")
        pixels, header = images.decode_with_header(data)
        self.assertAllEqual(pixels, _RAMP)
        self.assertEqual(header, images.HeaderMetadata(age=45, sex="F", view_position="AP"))

    def test_monochrome1_is_inverted(self):
        dataset = _dicom_dataset(variant="monochrome1")
        self.assertEqual(dataset.pixel_array[0, 0], 255)  # Stored inverted: black is 255.
        self.assertEqual(images.decode_gray(_bytes(dataset))[0, 0], 0)

    def test_twelve_bits_without_window_span_the_stored_range(self):
        # 12 bits stored, no window: 0..4095 maps to 0..255, so 4095 -> 255 and 2048 -> 128.
        dataset = _dicom_dataset(variant="windowed12")
        del dataset.WindowCenter
        del dataset.WindowWidth
        dataset.PixelData = np.array([[0, 2048, 4095, 16]], np.uint16).tobytes()
        dataset.Rows, dataset.Columns = 1, 4
        self.assertAllEqual(images.decode_gray(_bytes(dataset)), [[0, 128, 255, 1]])

    def test_a_narrow_window_is_applied(self):
        # Window centre 1000.5, width 200 (DICOM's linear function): 900.5 and below -> 0,
        # 1100.5 and above -> the top of 0..4095, which is 255.
        dataset = _dicom_dataset(variant="windowed12")
        dataset.WindowCenter, dataset.WindowWidth = 1000.5, 200
        dataset.PixelData = np.array([[0, 900, 1000, 1101, 4095]], np.uint16).tobytes()
        dataset.Rows, dataset.Columns = 1, 5
        pixels = images.decode_gray(_bytes(dataset))
        self.assertEqual(pixels[0, 0], 0)
        self.assertEqual(pixels[0, 1], 0)
        self.assertBetween(int(pixels[0, 2]), 120, 135)  # Mid-window: about half of 255.
        self.assertEqual(pixels[0, 3], 255)
        self.assertEqual(pixels[0, 4], 255)

    def test_rle_compressed_is_decoded(self):
        dataset = _dicom_dataset()
        dataset.compress(RLELossless)
        self.assertAllEqual(images.decode_gray(_bytes(dataset)), _RAMP)

    def test_undecodable_transfer_syntax_is_named(self):
        dataset = _dicom_dataset()
        dataset.PixelData = encapsulate([b"\xff\xd8not a jpeg\xff\xd9"])
        dataset.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        with self.assertRaisesRegex(
            ValueError, r"transfer syntax JPEG Lossless.*1\.2\.840\.10008\.1\.2\.4\.70"
        ):
            images.decode_gray(_bytes(dataset))

    def test_bad_dicom_files_are_value_errors(self):
        data = dicom.encode_dicom(_RAMP, key="cut")
        with self.assertRaisesRegex(ValueError, "without pixel data"):
            images.decode_gray(data[:400])
        colour = _dicom_dataset()
        colour.PhotometricInterpretation = "RGB"
        with self.assertRaisesRegex(ValueError, "'RGB' is not grayscale"):
            images.decode_gray(_bytes(colour))
        with self.assertRaisesRegex(ValueError, "DICOM"):
            images.decode_gray(b"not a dicom file at all", name="x.dcm")

    def test_dicom_is_told_by_content_or_suffix(self):
        self.assertTrue(images.is_dicom(dicom.encode_dicom(_RAMP, key="k"), "x.png"))
        self.assertTrue(images.is_dicom(b"x", "IMAGE.DCM"))
        self.assertFalse(images.is_dicom(fake_data.png_bytes(_RAMP), "x.png"))


class PillowTest(tf.test.TestCase):
    def test_sixteen_bit_png_full_range_and_min_max(self):
        # 12-bit values v * 16 + 100 (100..4180): full range divides by 257 (4180 -> 16), min_max
        # maps 100..4180 to 0..255 exactly back to the ramp.
        wide = _RAMP.astype(np.uint16) * 16 + 100
        buffer = io.BytesIO()
        Image.fromarray(wide).save(buffer, format="PNG")
        data = buffer.getvalue()
        self.assertEqual(images.decode_gray(data).max(), 16)
        self.assertAllEqual(images.decode_gray(data, sixteen_bit="min_max"), _RAMP)

    def test_jpeg_is_decoded(self):
        buffer = io.BytesIO()
        Image.fromarray(_RAMP, mode="L").save(buffer, format="JPEG", quality=100)
        self.assertAllClose(images.decode_gray(buffer.getvalue()), _RAMP, atol=3)

    def test_unknown_sixteen_bit_rule_raises(self):
        with self.assertRaisesRegex(ValueError, "sixteen_bit must be one of"):
            images.decode_gray(fake_data.png_bytes(_RAMP), sixteen_bit="clip")
