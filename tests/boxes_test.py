"""Tests for trainer.evaluation.localization.boxes: NIH's box file read, checked, scaled, and its bad rows rejected."""

import json
import os

import tensorflow as tf
from absl.testing import parameterized

from tests import fake_data
from trainer.evaluation.localization import boxes


class ReadBoxesTest(parameterized.TestCase, tf.test.TestCase):
    def _write(self, rows, *, name="BBox_List_2017.csv", **kwargs):
        return fake_data.write_box_csv(os.path.join(self.get_temp_dir(), name), rows, **kwargs)

    @parameterized.parameters("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
    def test_reads_nih_format_and_scales_to_the_records(self, name):
        # NIH's header with its three trailing empty columns; a 1024-pixel box scaled to 64 pixels
        # is divided by 16: x 160 -> 10, y 320 -> 20, w 96 -> 6, h 48 -> 3.
        path = self._write(
            [("a.png", "Mass", 160, 320, 96, 48), ("b.png", "Infiltrate", 0.0, 512.0, 1024, 512)], name=name
        )
        found = boxes.read_boxes(path, image_size=64, images={"a.png", "b.png"})
        self.assertEqual(found.rows, 2)
        self.assertEmpty(found.rejects)
        first, second = found.boxes
        self.assertEqual((first.image_index, first.finding, first.row), ("a.png", "Mass", 2))
        self.assertAllClose([first.x, first.y, first.width, first.height], [10, 20, 6, 3])
        # Infiltrate is NIH's spelling of Infiltration; the box spans the lower half: y 32, h 32.
        self.assertEqual(second.finding, "Infiltration")
        self.assertAllClose([second.x, second.y, second.width, second.height], [0, 32, 64, 32])
        self.assertEqual(found.reject_counts(), dict.fromkeys(boxes.REJECT_REASONS, 0))

    def test_source_size_is_the_coordinates_grid(self):
        # Coordinates on a 512 grid scaled to 64: divided by 8.
        path = self._write([("a.png", "Nodule", 80, 40, 16, 8)])
        (box,) = boxes.read_boxes(path, image_size=64, images={"a.png"}, source_size=512).boxes
        self.assertAllClose([box.x, box.y, box.width, box.height], [10, 5, 2, 1])

    def test_file_without_trailing_columns_is_read(self):
        path = self._write(
            [("a.png", "Effusion", 1, 2, 3, 4)], header="Image Index,Finding Label,Bbox [x,y,w,h]"
        )
        self.assertLen(boxes.read_boxes(path, image_size=1024, images={"a.png"}).boxes, 1)

    def test_bad_rows_are_rejected_with_reasons_and_line_numbers(self):
        rows = [
            ("a.png", "Atelectasis", 10, 10, 100, 100),  # line 2: kept
            ("a.png", "Fracture", 10, 10, 100, 100),  # 3: not one of the 14 findings
            ("b.png", "No Finding", 10, 10, 100, 100),  # 4: "No Finding" has nothing to box
            ("a.png", "Mass", 1000, 10, 100, 100),  # 5: x + w = 1100 > 1024
            ("a.png", "Mass", -1, 10, 100, 100),  # 6: x < 0
            ("a.png", "Nodule", 10, 10, 0, 100),  # 7: zero width
            ("c.png", "Mass", 10, 10, 100, 100),  # 8: image not among the records
            "a.png,Mass,10,ten,100,100",  # 9: not a number
            "a.png,Mass,10,10,100",  # 10: h missing
            ",Mass,10,10,100,100",  # 11: no image name
            "a.png,Mass,10,10,100,100,7",  # 12: a value in the trailing columns
        ]
        found = boxes.read_boxes(
            self._write(rows), image_size=64, images={"a.png", "b.png"}, images_name="test records"
        )
        self.assertEqual(found.rows, len(rows))
        self.assertEqual([b.row for b in found.boxes], [2])
        reasons = {r.row: r.reason for r in found.rejects}
        self.assertEqual(
            reasons,
            {
                3: boxes.UNKNOWN_FINDING,
                4: boxes.UNKNOWN_FINDING,
                5: boxes.BOX_OUTSIDE_IMAGE,
                6: boxes.BOX_OUTSIDE_IMAGE,
                7: boxes.BOX_NOT_POSITIVE,
                8: boxes.IMAGE_NOT_EVALUATED,
                9: boxes.MALFORMED_ROW,
                10: boxes.MALFORMED_ROW,
                11: boxes.MALFORMED_ROW,
                12: boxes.MALFORMED_ROW,
            },
        )
        details = {r.row: r.detail for r in found.rejects}
        self.assertIn("'Fracture' is not one of the 14 findings", details[3])
        self.assertIn("leaves the 1024x1024 image", details[5])
        self.assertIn("not among the 2 test records", details[8])
        self.assertIn("'ten'", details[9])
        self.assertEqual(
            found.reject_counts(),
            {
                boxes.MALFORMED_ROW: 4,
                boxes.UNKNOWN_FINDING: 2,
                boxes.BOX_NOT_POSITIVE: 1,
                boxes.BOX_OUTSIDE_IMAGE: 2,
                boxes.IMAGE_NOT_EVALUATED: 1,
            },
        )

    def test_blank_lines_keep_line_numbers(self):
        path = self._write(["", ("a.png", "Mass", 1, 2, 3, 4)])
        (box,) = boxes.read_boxes(path, image_size=1024, images={"a.png"}).boxes
        self.assertEqual(box.row, 3)

    def test_by_image_groups_boxes(self):
        rows = [("a.png", "Mass", 1, 2, 3, 4), ("b.png", "Mass", 1, 2, 3, 4), ("a.png", "Nodule", 5, 6, 7, 8)]
        grouped = boxes.read_boxes(self._write(rows), image_size=1024, images={"a.png", "b.png"}).by_image()
        self.assertEqual(list(grouped), ["a.png", "b.png"])
        self.assertEqual([b.finding for b in grouped["a.png"]], ["Mass", "Nodule"])

    def test_write_rejects_one_json_line_each(self):
        found = boxes.read_boxes(
            self._write([("a.png", "Fracture", 1, 2, 3, 4), ("z.png", "Mass", 1, 2, 3, 4)]),
            image_size=64,
            images={"a.png"},
        )
        path = boxes.write_rejects(
            os.path.join(self.get_temp_dir(), "reports", "box_rejects.jsonl"), found.rejects
        )
        with open(path) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(
            [line["reason"] for line in lines], [boxes.UNKNOWN_FINDING, boxes.IMAGE_NOT_EVALUATED]
        )
        self.assertEqual(lines[1], {**lines[1], "row": 3, "image_index": "z.png", "finding": "Mass"})

    def test_find_box_file_in_data_dir_or_one_level_down(self):
        root = os.path.join(self.get_temp_dir(), "nih")
        self.assertIsNone(boxes.find_box_file(root))
        path = fake_data.write_box_csv(os.path.join(root, "metadata", "BBox_List_2017.csv.gz"), [])
        self.assertEqual(boxes.find_box_file(root), path)
        fake_data.write_box_csv(os.path.join(root, "BBox_List_2017.csv"), [])
        with self.assertRaisesRegex(ValueError, r"Several box files under .*--boxes_csv"):
            boxes.find_box_file(root)

    def test_errors_name_the_file(self):
        missing = os.path.join(self.get_temp_dir(), "none.csv")
        with self.assertRaisesRegex(ValueError, r"Box file .*none.csv' does not exist"):
            boxes.read_boxes(missing, image_size=64, images=set())
        wrong = self._write(
            [("a.png", "Mass", 1, 2, 3, 4)], header="Image Index,Finding Labels,Follow-up #,a,b,c"
        )
        with self.assertRaisesRegex(ValueError, r"expected NIH's header .*got 'Image Index,Finding Labels"):
            boxes.read_boxes(wrong, image_size=64, images=set())
        with self.assertRaisesRegex(ValueError, r"image_size must be a positive number of pixels, got 0"):
            boxes.read_boxes(wrong, image_size=0, images=set())


if __name__ == "__main__":
    tf.test.main()
