"""Tests of beam_pipelines/datasets/nih.py (CSV rows, ages, labels, the record bytes) and the pixels of beam_pipelines/images.py."""

import gzip
import io
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from beam_pipelines import images
from beam_pipelines.datasets import nih
from tests import fake_data
from tfrecords import codec, schema


def _rows(text: str) -> list[nih.CsvRow]:
    header, data = nih.read_labels_table(io.StringIO(text), name="test.csv")
    return list(nih.iter_csv_rows(header, data))


class RecordTest(parameterized.TestCase, tf.test.TestCase):
    def test_workers_modules_do_not_import_tensorflow(self):
        # The Beam workers import these; TensorFlow would cost each worker 4.4 s and 800 MB.
        code = (
            "import sys, numpy; from beam_pipelines import datasets, images, splits, transforms; "
            "from tfrecords import codec, manifest, schema; "
            "labels = schema.labels_to_multi_hot('Mass'); manifest.shard_name('train', 0, 1); "
            "metadata = schema.ImageMetadata('1.png', 1, 0, 1, 'M', 'PA'); "
            "pixels = numpy.zeros((4, 4), numpy.uint8); "
            "codec.tfrecord_frame(codec.encode_example(pixels, metadata, labels, image_format='png')); "
            "print('tensorflow' in sys.modules)"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(result.stdout.strip(), "False")

    @parameterized.parameters(("raw", 64), ("raw", 256))
    def test_estimated_record_bytes_is_close_for_raw(self, image_format, size):
        row = nih.ParsedRow(
            2, "00000001_000.png", tuple(schema.labels_to_multi_hot("Mass")), 1, 0, 58, "M", "PA"
        )
        record = nih.image_to_record(
            fake_data.png_bytes(fake_data.gray_pixels(size, size)),
            row,
            image_size=size,
            image_format=image_format,
        )
        estimate = codec.estimated_record_bytes(size, image_format)
        self.assertBetween(estimate / len(record), 1.0, 1.01)


class CsvTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.named_parameters(("2017", False), ("v2020", True))
    def test_reads_both_formats(self, v2020):
        header = fake_data.NIH_2020_HEADER if v2020 else fake_data.NIH_2017_HEADER
        lines = [
            fake_data.nih_row("00000001_000.png", "Effusion|Mass", patient_id=1, age="058Y", v2020=v2020),
            fake_data.nih_row(
                "00000002_001.png", "No Finding", follow_up=1, patient_id=2, age="011M", sex="F"
            ),
        ]
        rows = [nih.parse_row(row) for row in _rows("\n".join([header, *lines]) + "\n")]
        self.assertEqual([row.line for row in rows], [2, 3])
        self.assertEqual(rows[0].image_index, "00000001_000.png")
        self.assertEqual((rows[0].patient_id, rows[0].follow_up, rows[0].age), (1, 0, 58))
        self.assertEqual((rows[1].patient_id, rows[1].follow_up, rows[1].age, rows[1].sex), (2, 1, 0, "F"))
        self.assertAllEqual(rows[0].multi_hot, schema.labels_to_multi_hot("Effusion|Mass"))

    def test_rows_parsed_with_a_shared_dict_share_their_multi_hot(self):
        lines = [
            fake_data.nih_row("00000001_000.png", "Effusion|Mass", patient_id=1),
            fake_data.nih_row("00000002_000.png", "Effusion|Mass", patient_id=2, view="ap"),
            fake_data.nih_row("00000003_000.png", "No Finding", patient_id=3),
        ]
        csv_rows = _rows("\n".join([fake_data.NIH_2017_HEADER, *lines]) + "\n")
        shared = {}
        rows = [nih.parse_row(row, shared=shared) for row in csv_rows]
        self.assertEqual(rows, [nih.parse_row(row) for row in csv_rows])
        self.assertIs(rows[0].multi_hot, rows[1].multi_hot)
        self.assertEqual(set(shared), {"Effusion|Mass", "No Finding"})
        self.assertEqual([row.view_position for row in rows], ["PA", "AP", "PA"])
        self.assertIs(rows[0].view_position, rows[2].view_position)

    def test_reads_gzip_through_filesystems(self):
        path = os.path.join(self.get_temp_dir(), "Data_Entry_2017.csv.gz")
        text = "\n".join([fake_data.NIH_2017_HEADER, fake_data.nih_row("00000001_000.png", "Mass")])
        with gzip.open(path, "wt") as f:
            f.write(text)
        with FileSystems.open(path) as f:
            # The records stream from the open file.
            (row,) = nih.iter_csv_rows(*nih.read_labels_table(f, name=path))
        self.assertEqual(nih.parse_row(row).image_index, "00000001_000.png")

    @parameterized.named_parameters(
        (
            "too_many_fields",
            fake_data.nih_row("00000001_000.png", "Mass") + ",extra",
            "has 12 fields, expected 11",
        ),
        ("too_few_fields", "00000001_000.png,Mass,000,00000001", "has 4 fields, expected 11"),
        ("bad_age", fake_data.nih_row("00000001_000.png", "Mass", age="58X"), "Patient Age '58X'"),
        ("bad_sex", fake_data.nih_row("00000001_000.png", "Mass", sex="X"), "Patient Gender 'X'"),
        ("bad_view", fake_data.nih_row("00000001_000.png", "Mass", view="LL"), "View Position 'LL'"),
        ("bad_patient", "00000001_000.png,Mass,000,abc,058Y,M,PA,1024,1024,0.1,0.1", "Patient ID 'abc'"),
        ("bad_name", fake_data.nih_row("00000001_000.jpg", "Mass"), "not a PNG file name"),
        ("empty_labels", fake_data.nih_row("00000001_000.png", ""), "Finding Labels is empty"),
    )
    def test_bad_rows(self, line, message):
        (row,) = _rows(fake_data.NIH_2017_HEADER + "\n" + line + "\n")
        with self.assertRaisesRegex(ValueError, message):
            nih.parse_row(row)

    def test_blank_line_is_a_bad_row_with_its_line_number(self):
        rows = _rows(
            "\n".join([fake_data.NIH_2017_HEADER, fake_data.nih_row("00000001_000.png", "Mass"), "", "x"])
        )
        self.assertEqual([row.line for row in rows], [2, 3, 4])
        with self.assertRaisesRegex(ValueError, "has 0 fields"):
            nih.parse_row(rows[1])

    def test_unknown_label_row(self):
        (row,) = _rows(fake_data.NIH_2017_HEADER + "\n" + fake_data.nih_row("00000001_000.png", "Infiltrate"))
        with self.assertRaisesRegex(schema.UnknownLabelError, "'Infiltrate'"):
            nih.parse_row(row)

    def test_empty_csv(self):
        with self.assertRaisesRegex(nih.CsvError, "'empty.csv' is empty"):
            nih.read_labels_table(io.StringIO(""), name="empty.csv")

    def test_missing_columns_are_named(self):
        with self.assertRaisesRegex(nih.CsvError, r"lacks required column\(s\) \['Patient Age'\]"):
            nih.read_labels_table(
                io.StringIO(
                    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Gender,View Position\n"
                ),
                name="x.csv",
            )

    @parameterized.parameters(
        ("058Y", 58),
        ("414Y", 414),
        ("058", 58),
        ("58", 58),
        ("011M", 0),
        ("024M", 2),
        ("001D", 0),
        (" 7 ", 7),
    )
    def test_ages(self, text, years):
        self.assertEqual(nih.parse_age(text), years)

    @parameterized.parameters("", "Y", "58X", "-5", "5.5Y", "abc")
    def test_bad_ages(self, text):
        with self.assertRaisesRegex(ValueError, "Patient Age"):
            nih.parse_age(text)

    def test_name_lists_without_trailing_newline(self):
        self.assertEqual(nih.read_name_list("a.png\nb.png"), ["a.png", "b.png"])
        self.assertEqual(nih.image_name("gs://bucket/images_001/images/a.png"), "a.png")


class PixelTest(parameterized.TestCase, tf.test.TestCase):
    @parameterized.parameters("L", "LA", "RGB", "RGBA", "I;16")
    def test_decodes_every_mode_to_the_same_gray(self, mode):
        pixels = fake_data.gray_pixels(24, 20, seed=1)
        decoded = images.decode_gray(fake_data.png_bytes(pixels, mode=mode))
        self.assertEqual(decoded.dtype, np.uint8)
        self.assertAllEqual(decoded, pixels)

    def test_decodes_palette_images(self):
        # A palette of 4 grey levels: P -> L must give back the grey values, not the indices.
        pixels = (np.arange(64).reshape(8, 8) % 4 * 80).astype(np.uint8)
        decoded = images.decode_gray(fake_data.png_bytes(pixels, mode="P"))
        self.assertAllClose(decoded, pixels, atol=1)

    def test_sixteen_bit_is_scaled_not_clipped(self):
        wide = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(wide).save(buffer, format="PNG")
        # v / 257 rounded: 0, 1, 3.89 -> 4, 127.5 -> 128, 255.
        self.assertAllEqual(images.decode_gray(buffer.getvalue()), [[0, 1, 4, 128, 255]])

    @parameterized.named_parameters(
        ("empty", b"", "empty file"),
        ("not_an_image", b"Image Index,Finding Labels\n", "UnidentifiedImageError"),
        ("corrupt", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "Error"),
    )
    def test_bad_images(self, data, message):
        with self.assertRaisesRegex(ValueError, message):
            images.decode_gray(data)

    def test_truncated_image(self):
        data = fake_data.png_bytes(fake_data.gray_pixels(64, 64))
        with self.assertRaisesRegex(ValueError, "OSError|truncated|SyntaxError"):
            images.decode_gray(data[: len(data) // 2])

    def test_resize_is_an_area_average(self):
        # 4x4 blocks of constant value: the area filter at 1/4 scale gives exactly the block values.
        blocks = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
        pixels = np.kron(blocks, np.ones((4, 4), np.uint8))
        self.assertAllEqual(images.resize_area(pixels, 8), blocks)
        # A 2x2 checkerboard of 0/200 averages to 100 everywhere (a nearest filter would alias).
        checker = (np.indices((32, 32)).sum(axis=0) % 2 * 200).astype(np.uint8)
        self.assertAllClose(images.resize_area(checker, 16), np.full((16, 16), 100), atol=1)


if __name__ == "__main__":
    tf.test.main()
