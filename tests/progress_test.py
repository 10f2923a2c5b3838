"""Tests for cxr_cli.progress: the one-line progress display."""

import io
import logging

import tensorflow as tf

from cxr_cli import progress as progress_lib


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class ProgressTest(tf.test.TestCase):
    def test_plain_lines_at_the_interval(self):
        clock, stream = FakeClock(), io.StringIO()
        progress = progress_lib.Progress(
            100,
            description="render",
            unit="images",
            stream=stream,
            interactive=False,
            interval_s=10,
            clock=clock,
        )
        clock.now += 5
        progress.update(10)  # 5 s in: not due yet.
        self.assertEqual(stream.getvalue(), "")
        clock.now += 5
        progress.update(20)  # 10 s, 20 done: 2 images/s, 80 left -> 40 s.
        clock.now += 3
        progress.update(26)
        clock.now += 7
        progress.update(40)  # 20 s, 40 done: 2/s, 60 left -> 30 s.
        progress.close()
        self.assertEqual(
            stream.getvalue().splitlines(),
            [
                "render: 20/100 images (20%), 2.00 images/s, ETA 0:00:40",
                "render: 40/100 images (40%), 2.00 images/s, ETA 0:00:30",
                "render: 40/100 images (40%), 2.00 images/s, ETA 0:00:30",
            ],
        )

    def test_short_work_adds_no_line_to_logs(self):
        clock, stream = FakeClock(), io.StringIO()
        with progress_lib.Progress(
            10, stream=stream, interactive=False, interval_s=30, clock=clock
        ) as progress:
            clock.now += 5
            progress.update(10)
        self.assertEqual(stream.getvalue(), "")
        progress = progress_lib.Progress(10, stream=stream, interactive=False, clock=clock)
        progress.close("done: 10 items")
        self.assertEqual(stream.getvalue(), "done: 10 items\n")

    def test_one_line_rewritten_on_a_terminal(self):
        clock, stream = FakeClock(), io.StringIO()
        with progress_lib.Progress(
            4, unit="steps", stream=stream, interactive=True, refresh_s=1, clock=clock
        ) as p:
            for _ in range(4):
                clock.now += 2
                p.advance()
        text = stream.getvalue()
        self.assertEqual(text.count("\n"), 1)
        self.assertTrue(text.endswith("\n"))
        self.assertEqual(text.count("\r"), 5)  # Four updates and the final line.
        self.assertEqual(text.split("\r")[-1].rstrip(), "progress: 4/4 steps (100%), 0.50 steps/s, 0:00:08")

    def test_refresh_limit_on_a_terminal(self):
        clock, stream = FakeClock(), io.StringIO()
        progress = progress_lib.Progress(1000, stream=stream, interactive=True, refresh_s=1, clock=clock)
        for _ in range(100):
            clock.now += 0.05
            progress.advance()
        self.assertEqual(stream.getvalue().count("\r"), 5)  # At 0.05 s, then once per second.

    def test_through_a_logger_without_total(self):
        clock = FakeClock()
        logger = logging.getLogger("console_test")
        with self.assertLogs(logger, level="INFO") as logs:
            progress = progress_lib.Progress(
                None,
                description="scan",
                unit="rows",
                logger=logger,
                interactive=False,
                interval_s=1,
                clock=clock,
            )
            clock.now += 4
            progress.update(2000)
        self.assertEqual(logs.records[0].getMessage(), "scan: 2,000 rows, 500 rows/s, 0:00:04")

    def test_format_duration(self):
        self.assertEqual(progress_lib.format_duration(3725.4), "1:02:05")
        self.assertEqual(progress_lib.format_duration(float("inf")), "unknown")

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Progress.total must be >= 0"):
            progress_lib.Progress(-1)
        with self.assertRaisesRegex(ValueError, "Progress.interval_s must be > 0"):
            progress_lib.Progress(1, interval_s=0)


if __name__ == "__main__":
    tf.test.main()
