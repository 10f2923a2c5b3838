"""Tests for cxr_cli.errors: validation errors end in one line, every other error keeps its traceback."""

import io
import logging
import os
import sys
from unittest import mock

import tensorflow as tf
from absl.testing import parameterized

from cxr_cli import errors, verbosity
from tfrecords import manifest as manifest_lib


class ErrorsTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        # Quiet, whatever another test of this process configured.
        state = mock.patch.dict(verbosity._state, {"verbosity": 0})
        state.start()
        self.addCleanup(state.stop)

    @parameterized.parameters(
        (manifest_lib.ManifestError("records/ has no manifest.json"), True),
        (errors.ValidationError("--epochs must be positive"), True),
        # A ValueError that is not ours (Keras, NumPy, TensorFlow, a bug) is not expected.
        (ValueError("Input 0 of layer 'dense' is incompatible with the layer"), False),
        (FileNotFoundError("no such file"), True),
        (FloatingPointError("loss became nan"), True),
        (tf.errors.DataLossError(None, None, "corrupted record at 12"), True),
        (RuntimeError("bug"), False),
        (KeyError("x"), False),
        (tf.errors.InternalError(None, None, "bug"), False),
    )
    def test_is_expected_error(self, error, expected):
        self.assertEqual(errors.is_expected_error(error), expected)

    def test_expected_error_ends_with_one_line(self):
        def main(argv):
            raise manifest_lib.ManifestError(
                f"Records directory {argv[1]!r} has no manifest.json:\n  re-run."
            )

        stderr = io.StringIO()
        wrapped = errors.exit_on_expected_errors(main, program="trainer.train", log_path="/tmp/run/train.log")
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
        self.assertEqual(errors.log_file(), path)
        self.assertEqual(
            errors.error_line("x", ValueError("bad")), "x: error: bad"
        )  # error_line adds a log only when given one.

    def test_tensorflow_error_keeps_its_class_name(self):
        error = tf.errors.DataLossError(None, None, "corrupted record at 12")
        self.assertEqual(errors.error_line("p", error), "p: error: DataLossError: corrupted record at 12")

    def test_unexpected_error_keeps_its_traceback(self):
        def main(argv):
            raise RuntimeError("a bug")

        with self.assertRaisesRegex(RuntimeError, "a bug"):
            errors.exit_on_expected_errors(main, program="p")(["prog"])

    def test_a_library_value_error_keeps_its_traceback(self):
        def main(argv):
            raise ValueError("operands could not be broadcast together with shapes (2,) (3,)")

        with self.assertRaisesRegex(ValueError, "could not be broadcast"):
            errors.exit_on_expected_errors(main, program="p")(["prog"])

    def test_verbosity_one_brings_the_traceback_back(self):
        def main(argv):
            raise errors.ValidationError("--epochs must be positive")

        verbosity._state["verbosity"] = 1
        with self.assertRaisesRegex(errors.ValidationError, "--epochs must be positive"):
            errors.exit_on_expected_errors(main, program="p")(["prog"])

    def test_command_name_is_what_the_user_typed(self):
        with mock.patch.object(sys, "argv", ["/venv/bin/cxr-train", "--help"]):
            self.assertEqual(errors.command_name("trainer.train"), "cxr-train")
        with mock.patch.object(sys, "argv", ["/repo/trainer/train.py"]):  # python -m trainer.train
            self.assertEqual(errors.command_name("trainer.train"), "trainer.train")

    def test_interrupt(self):
        def main(argv):
            raise KeyboardInterrupt

        stderr = io.StringIO()
        with mock.patch.object(sys, "stderr", stderr), self.assertRaises(SystemExit) as exit_info:
            errors.exit_on_expected_errors(main, program="p")(["prog"])
        self.assertEqual(exit_info.exception.code, 130)
        self.assertEqual(stderr.getvalue(), "\np: interrupted\n")


if __name__ == "__main__":
    tf.test.main()
