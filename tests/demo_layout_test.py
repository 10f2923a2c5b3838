"""Tests for demo_data.layout: the label file's rows and NIH's box file format."""

import tensorflow as tf

from demo_data import layout
from demo_data.canvas import Box


def _row(**overrides):
    fields = dict(
        image_index="00000007_003.png",
        findings=("Effusion", "Mass"),
        follow_up=3,
        patient_id=7,
        age=58,
        sex="F",
        view_position="PA",
        original_width=2500,
        original_height=2048,
        pixel_spacing="0.168",
    )
    return layout.DemoImage(**{**fields, **overrides})


class LabelFileTest(tf.test.TestCase):
    def test_csv_line_like_nih(self):
        self.assertEqual(
            _row().csv_line(), "00000007_003.png,Effusion|Mass,003,00000007,058Y,F,PA,2500,2048,0.168,0.168"
        )
        self.assertEqual(_row(findings=()).finding_labels, "No Finding")

    def test_csv_text_crlf_after_every_line(self):
        text = layout.csv_text([_row(), _row(image_index="00000007_004.png", follow_up=4)])
        lines = text.split("\r\n")
        self.assertEqual(lines[0], layout.CSV_HEADER)
        self.assertLen(lines, 4)
        self.assertEqual(lines[-1], "")

    def test_list_text_without_final_newline(self):
        self.assertEqual(layout.list_text(["a.png", "b.png"]), "a.png\nb.png")


class BoxFileTest(tf.test.TestCase):
    def test_nih_header_rows_numbers_and_order(self):
        text = layout.bbox_text(
            [
                ("00000002_000.png", "Mass", Box(10, 20, 110, 70)),
                ("00000001_000.png", "Infiltration", Box(0.5, 1 / 3, 1000.25, 1024)),
                ("00000001_000.png", "Atelectasis", Box(3, 4, 5, 6)),
                ("00000001_001.png", "Mass", Box(1, 2, 3, 4)),
            ]
        )
        self.assertEqual(
            text,
            "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
            "00000001_000.png,Atelectasis,3,4,2,2\n"
            "00000001_000.png,Infiltrate,0.5,0.333333333333333,999.75,1023.66666666667\n"
            "00000001_001.png,Mass,1,2,2,2\n"
            "00000002_000.png,Mass,10,20,100,50\n",
        )

    def test_empty_box_file_is_the_header(self):
        self.assertEqual(layout.bbox_text([]), "Image Index,Finding Label,Bbox [x,y,w,h],,,\n")

    def test_finding_nih_does_not_box_raises(self):
        with self.assertRaisesRegex(ValueError, "00000001_000.png.*'Hernia'"):
            layout.bbox_text([("00000001_000.png", "Hernia", Box(0, 0, 1, 1))])


if __name__ == "__main__":
    tf.test.main()
