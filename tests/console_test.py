"""Tests for cxr_cli.console: verbosity switch, stderr filter, progress line, one-line errors."""

import io
import logging
import os
import subprocess
import sys
import textwrap
from unittest import mock

import tensorflow as tf
from absl.testing import parameterized

from cxr_cli import console
from tfrecords import manifest as manifest_lib

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class VerbosityTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        (["prog"], {}, 0),
        (["prog", "--verbosity=1"], {}, 1),
        (["prog", "--verbosity", "2"], {}, 2),
        (["prog", "-v", "1"], {}, 1),
        (["prog", "-v=1"], {}, 1),
        (["prog", "-v1"], {}, 1),
        (["prog", "--other", "x"], {"CXR_VERBOSITY": "1"}, 1),
        (["prog", "--verbosity=0"], {"CXR_VERBOSITY": "1"}, 0),  # The command line wins.
        (["prog", "--", "--verbosity=1"], {}, 0),  # After "--": not ours.
        (["prog", "--verbose=2"], {}, 0),  # Another flag.
    )
    def test_from_argv(self, argv, environ, expected):
        self.assertEqual(console.verbosity_from_argv(argv, environ), expected)

    def test_bad_value_names_its_source(self):
        with self.assertRaisesRegex(ValueError, r"\$CXR_VERBOSITY must be an integer .* got 'loud'"):
            console.verbosity_from_argv(["prog"], {"CXR_VERBOSITY": "loud"})
        with self.assertRaisesRegex(ValueError, r"--verbosity must be an integer .* got 'x'"):
            console.verbosity_from_argv(["prog", "--verbosity=x"], {})

    @parameterized.parameters((0, "2", logging.WARNING, logging.ERROR), (1, "0", logging.INFO, logging.INFO))
    def test_configure(self, verbosity, tf_level, beam_level, relay_level):
        loggers = ["apache_beam", "apache_beam.runners.portability.local_job_service", "tensorflow"]
        saved = {name: logging.getLogger(name).level for name in loggers}
        self.addCleanup(lambda: [logging.getLogger(n).setLevel(level) for n, level in saved.items()])
        self.addCleanup(console._filter_library_info, quiet=False)
        with mock.patch.dict(os.environ, clear=False):
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
            self.assertEqual(console.configure(verbosity, filter_stderr=False), verbosity)
            self.assertEqual(os.environ["TF_CPP_MIN_LOG_LEVEL"], tf_level)
            self.assertEqual(os.environ["CXR_VERBOSITY"], str(verbosity))  # For subprocesses.
            self.assertEqual(console.is_verbose(), verbosity >= 1)
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
            console.configure(verbosity, filter_stderr=False)
            self.assertEqual(os.environ["TF_CPP_MIN_LOG_LEVEL"], "3")  # A user's own setting stays.
        self.assertEqual(logging.getLogger("apache_beam").level, beam_level)
        self.assertEqual(
            logging.getLogger("apache_beam.runners.worker.sdk_worker").getEffectiveLevel(), beam_level
        )
        self.assertEqual(logging.getLogger(loggers[1]).level, relay_level)

    def test_library_info_is_dropped_from_absls_handler_in_quiet_mode(self):
        from absl import logging as absl_logging

        handler = absl_logging.get_absl_handler()
        self.addCleanup(console._filter_library_info, quiet=False)

        def record(path, level=logging.INFO):
            return logging.LogRecord("absl", level, path, 1, "message", None, None)

        library = os.path.join(os.path.dirname(tf.__file__), "python", "saved_model", "x.py")
        ours = os.path.join(_ROOT, "trainer", "train.py")
        console._filter_library_info(quiet=True)
        self.assertFalse(handler.filter(record(library)))
        self.assertTrue(handler.filter(record(library, logging.WARNING)))
        self.assertTrue(handler.filter(record(ours)))
        console._filter_library_info(quiet=False)
        self.assertTrue(handler.filter(record(library)))


class FilteredStderrTest(tf.test.TestCase):
    def test_drops_matching_lines_of_the_process_and_its_children(self):
        script = textwrap.dedent(
            r"""
            import os, subprocess, sys
            from cxr_cli import console
            with console.filtered_stderr(console.STDERR_NOISE):
                os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n")
                os.write(2, b"E0000 00:00:1.0 1 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\n")
                os.write(2, b"E0000 00:00:1.0 1 other.cc:1] an error that matters\n")
                os.write(2, b"W1126 09:49:52.870660 140425549618048 job.py:403] ours, from Python\n")
                sys.stderr.write("a python warning\n")
                subprocess.run([sys.executable, "-c",
                                "import sys; sys.stderr.write('INFO:__main__:Logging handler created.\\n')"])
                os.write(2, b"progress 1/2\rprogress 2/2\n")
            os.write(2, b"after the block\n")
            """
        )
        env = dict(os.environ, PYTHONPATH=_ROOT)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=60)
        stderr = result.stderr.decode()  # Bytes: text mode would turn the \r into \n.
        self.assertEqual(result.returncode, 0, stderr)
        self.assertEqual(
            stderr,
            "E0000 00:00:1.0 1 other.cc:1] an error that matters\n"
            "W1126 09:49:52.870660 140425549618048 job.py:403] ours, from Python\n"
            "a python warning\n"
            "progress 1/2\rprogress 2/2\n"
            "after the block\n",
        )

    def test_configure_filters_until_exit_even_a_hard_one(self):
        script = textwrap.dedent(
            r"""
            import os, sys
            from cxr_cli import console
            console.configure(argv=["prog"])
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
            os.write(2, b"E0000 00:00:1.0 1 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512.\n")
            sys.stderr.write("kept\n")
            sys.stderr.flush()
            os.write(2, b"last words\n")
            os._exit(3)  # No atexit: what was written still comes through.
            """
        )
        env = dict(os.environ, PYTHONPATH=_ROOT)
        env.pop("CXR_VERBOSITY", None)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=60)
        self.assertEqual(result.returncode, 3)
        self.assertEqual(result.stderr.decode(), "kept\nlast words\n")
        verbose = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, env=dict(env, CXR_VERBOSITY="1"), timeout=60
        )
        self.assertEqual(len(verbose.stderr.decode().splitlines()), 4)  # The switch: nothing filtered.


class ProgressTest(tf.test.TestCase):
    def test_plain_lines_at_the_interval(self):
        clock, stream = FakeClock(), io.StringIO()
        progress = console.Progress(
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
        with console.Progress(10, stream=stream, interactive=False, interval_s=30, clock=clock) as progress:
            clock.now += 5
            progress.update(10)
        self.assertEqual(stream.getvalue(), "")
        progress = console.Progress(10, stream=stream, interactive=False, clock=clock)
        progress.close("done: 10 items")
        self.assertEqual(stream.getvalue(), "done: 10 items\n")

    def test_one_line_rewritten_on_a_terminal(self):
        clock, stream = FakeClock(), io.StringIO()
        with console.Progress(
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
        progress = console.Progress(1000, stream=stream, interactive=True, refresh_s=1, clock=clock)
        for _ in range(100):
            clock.now += 0.05
            progress.advance()
        self.assertEqual(stream.getvalue().count("\r"), 5)  # At 0.05 s, then once per second.

    def test_through_a_logger_without_total(self):
        clock = FakeClock()
        logger = logging.getLogger("console_test")
        with self.assertLogs(logger, level="INFO") as logs:
            progress = console.Progress(
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
        self.assertEqual(console.format_duration(3725.4), "1:02:05")
        self.assertEqual(console.format_duration(float("inf")), "unknown")

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "Progress.total must be >= 0"):
            console.Progress(-1)
        with self.assertRaisesRegex(ValueError, "Progress.interval_s must be > 0"):
            console.Progress(1, interval_s=0)


class ErrorsTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        (manifest_lib.ManifestError("records/ has no manifest.json"), True),
        (ValueError("--epochs must be positive"), True),
        (FileNotFoundError("no such file"), True),
        (FloatingPointError("loss became nan"), True),
        (tf.errors.DataLossError(None, None, "corrupted record at 12"), True),
        (RuntimeError("bug"), False),
        (KeyError("x"), False),
        (tf.errors.InternalError(None, None, "bug"), False),
    )
    def test_is_expected_error(self, error, expected):
        self.assertEqual(console.is_expected_error(error), expected)

    def test_expected_error_ends_with_one_line(self):
        def main(argv):
            raise manifest_lib.ManifestError(
                f"Records directory {argv[1]!r} has no manifest.json:\n  re-run."
            )

        stderr = io.StringIO()
        wrapped = console.exit_on_expected_errors(
            main, program="trainer.train", log_path="/tmp/run/train.log"
        )
        with mock.patch.object(sys, "stderr", stderr), self.assertRaises(SystemExit) as exit_info:
            wrapped(["prog", "data/x"])
        self.assertEqual(exit_info.exception.code, 1)
        self.assertEqual(
            stderr.getvalue(),
            "trainer.train: error: Records directory 'data/x' has no manifest.json: re-run. (log: /tmp/run/train.log)\n",
        )

    def test_log_file_of_a_file_handler(self):
        path = os.path.join(self.get_temp_dir(), "run.log")
        handler = logging.FileHandler(path)
        logging.getLogger().addHandler(handler)
        self.addCleanup(logging.getLogger().removeHandler, handler)
        self.addCleanup(handler.close)
        self.assertEqual(console.log_file(), path)
        self.assertEqual(
            console.error_line("x", ValueError("bad")), "x: error: bad"
        )  # error_line adds a log only when given one.

    def test_tensorflow_error_keeps_its_class_name(self):
        error = tf.errors.DataLossError(None, None, "corrupted record at 12")
        self.assertEqual(console.error_line("p", error), "p: error: DataLossError: corrupted record at 12")

    def test_unexpected_error_keeps_its_traceback(self):
        def main(argv):
            raise RuntimeError("a bug")

        with self.assertRaisesRegex(RuntimeError, "a bug"):
            console.exit_on_expected_errors(main, program="p")(["prog"])

    def test_interrupt(self):
        def main(argv):
            raise KeyboardInterrupt

        stderr = io.StringIO()
        with mock.patch.object(sys, "stderr", stderr), self.assertRaises(SystemExit) as exit_info:
            console.exit_on_expected_errors(main, program="p")(["prog"])
        self.assertEqual(exit_info.exception.code, 130)
        self.assertEqual(stderr.getvalue(), "\np: interrupted\n")


if __name__ == "__main__":
    tf.test.main()
