"""Tests for cxr_cli.verbosity: the verbosity switch and quiet mode's stderr filter."""

import logging
import os
import re
import subprocess
import sys
import textwrap
from unittest import mock

import tensorflow as tf
from absl.testing import parameterized

from cxr_cli import verbosity

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
        self.assertEqual(verbosity.verbosity_from_argv(argv, environ), expected)

    def test_bad_value_names_its_source(self):
        with self.assertRaisesRegex(ValueError, r"\$CXR_VERBOSITY must be an integer .* got 'loud'"):
            verbosity.verbosity_from_argv(["prog"], {"CXR_VERBOSITY": "loud"})
        with self.assertRaisesRegex(ValueError, r"--verbosity must be an integer .* got 'x'"):
            verbosity.verbosity_from_argv(["prog", "--verbosity=x"], {})

    @parameterized.parameters((0, "2", logging.WARNING, logging.ERROR), (1, "0", logging.INFO, logging.INFO))
    def test_configure(self, level, tf_level, beam_level, relay_level):
        loggers = ["apache_beam", "apache_beam.runners.portability.local_job_service", "tensorflow"]
        saved = {name: logging.getLogger(name).level for name in loggers}
        self.addCleanup(lambda: [logging.getLogger(n).setLevel(level) for n, level in saved.items()])
        self.addCleanup(verbosity._filter_library_info, quiet=False)
        with mock.patch.dict(os.environ, clear=False):
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
            self.assertEqual(verbosity.configure(level, filter_stderr=False), level)
            self.assertEqual(os.environ["TF_CPP_MIN_LOG_LEVEL"], tf_level)
            self.assertEqual(os.environ["CXR_VERBOSITY"], str(level))  # For subprocesses.
            self.assertEqual(verbosity.is_verbose(), level >= 1)
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
            verbosity.configure(level, filter_stderr=False)
            self.assertEqual(os.environ["TF_CPP_MIN_LOG_LEVEL"], "3")  # A user's own setting stays.
        self.assertEqual(logging.getLogger("apache_beam").level, beam_level)
        self.assertEqual(
            logging.getLogger("apache_beam.runners.worker.sdk_worker").getEffectiveLevel(), beam_level
        )
        self.assertEqual(logging.getLogger(loggers[1]).level, relay_level)

    def test_library_info_is_dropped_from_absls_handler_in_quiet_mode(self):
        from absl import logging as absl_logging

        handler = absl_logging.get_absl_handler()
        self.addCleanup(verbosity._filter_library_info, quiet=False)

        def record(path, level=logging.INFO):
            return logging.LogRecord("absl", level, path, 1, "message", None, None)

        library = os.path.join(os.path.dirname(tf.__file__), "python", "saved_model", "x.py")
        ours = os.path.join(_ROOT, "trainer", "train.py")
        verbosity._filter_library_info(quiet=True)
        self.assertFalse(handler.filter(record(library)))
        self.assertTrue(handler.filter(record(library, logging.WARNING)))
        self.assertTrue(handler.filter(record(ours)))
        verbosity._filter_library_info(quiet=False)
        self.assertTrue(handler.filter(record(library)))


# Captured once from this project's environment (TensorFlow 2.21, Apache Beam 2.77, CPU only):
# `python -c "import tensorflow"` (then a Keras fit) with TF_CPP_MIN_LOG_LEVEL=0, and a
# FnApiRunner job in multi_processing mode with 2 workers (one worker's lines shown; the other's
# are the same). Process ids, timestamps and ports vary from run to run.
TENSORFLOW_STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796634427.587924    8335 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796634427.588213    8335 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796634427.629687    8335 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796634431.712192    8335 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""
BEAM_WORKER_STARTUP = """\
WARNING:root:apitools not found, and bigquery client libraries are not available despite the import not raising an ImportError.
INFO:apache_beam.io.gcp.bigquery:No module named google.cloud.bigquery_storage_v1. As a result, the ReadFromBigQuery transform *CANNOT* be used with `method=DIRECT_READ`.
INFO:__main__:Logging handler created.
INFO:__main__:semi_persistent_directory: None
WARNING:__main__:No semi_persistent_directory found:  User registered objects (e.g. schema, logical type) throughregisteries may not be effective
INFO:__main__:Pipeline_options: {}
INFO:apache_beam.runners.worker.statecache:Creating state cache with size 0
INFO:apache_beam.runners.worker.sdk_worker:Creating insecure control channel for localhost:46263.
INFO:apache_beam.runners.worker.sdk_worker:Control channel established.
INFO:apache_beam.runners.worker.sdk_worker:Initializing SDKHarness with unbounded number of workers.
INFO:__main__:Python sdk harness starting.
INFO:apache_beam.runners.worker.sdk_worker:Creating insecure state channel for localhost:35891.
INFO:apache_beam.runners.worker.sdk_worker:State channel established.
INFO:apache_beam.runners.worker.data_plane:Creating client data channel for localhost:33823 (data_stream_id: )
INFO:apache_beam.runners.worker.data_plane:Data channel established.
INFO:apache_beam.runners.worker.sdk_worker:No more requests from control plane
INFO:apache_beam.runners.worker.sdk_worker:SDK Harness waiting for in-flight requests to complete
INFO:apache_beam.runners.worker.data_plane:Closing all cached grpc data channels.
INFO:apache_beam.runners.worker.sdk_worker:Closing all cached gRPC state handlers.
INFO:apache_beam.runners.worker.sdk_worker:Done consuming work.
INFO:__main__:Python sdk harness exiting.
"""
# What must go through: lines the list does not name, whatever their level or prefix.
MUST_SURVIVE = """\
W0000 00:00:1796634431.000000    8335 dso_loader.cc:78] Could not load dynamic library 'libcudnn.so.9'; dlerror: libcudnn.so.9: cannot open shared object file
E0000 00:00:1796634431.000001    8335 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected
W0000 00:00:1796634431.000002    8335 xla_fallback.cc:12] oneDNN custom operations are on. (same text, another file)
I0000 00:00:1796634431.000003    8335 port.cc:153] something else port.cc says
INFO:apache_beam.runners.worker.sdk_worker:Error processing instruction process_bundle-1
INFO:__main__:a line of ours at INFO
INFO:root:Logging handler created. (the text from another logger)
W1126 09:49:52.870660 140425549618048 job.py:403] ours, from Python
"""


def _filtered(script_body: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    script = "import os, subprocess, sys\nfrom cxr_cli import verbosity\n" + textwrap.dedent(script_body)
    env = dict(os.environ, PYTHONPATH=_ROOT, **(env_extra or {}))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, env=env, timeout=60)


class FilteredStderrTest(tf.test.TestCase):
    def test_drops_the_named_start_up_lines_and_nothing_else(self):
        text = TENSORFLOW_STARTUP + BEAM_WORKER_STARTUP + MUST_SURVIVE
        result = _filtered(
            f"""
            with verbosity.filtered_stderr(verbosity.NOISE):
                os.write(2, {text.encode()!r})
            """
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(result.stderr.decode(), MUST_SURVIVE)

    def test_every_named_line_was_seen(self):
        # Each entry of the list matches a captured line: the list names nothing it never saw,
        # except the one seen in this project's training runs (oneDNN's DT_BOOL / DT_INT32 notice).
        lines = (TENSORFLOW_STARTUP + BEAM_WORKER_STARTUP).splitlines()
        for noise in verbosity.NOISE:
            if noise.source == "util.cc":
                continue
            pattern = re.compile(noise.pattern())
            self.assertTrue(any(pattern.search(line) for line in lines), noise)

    def test_filters_the_process_and_its_children(self):
        result = _filtered(
            r"""
            with verbosity.filtered_stderr(verbosity.NOISE):
                os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on.\n")
                os.write(2, b"E0000 00:00:1.0 1 other.cc:1] an error that matters\n")
                sys.stderr.write("a python warning\n")
                subprocess.run([sys.executable, "-c",
                                "import sys; sys.stderr.write('INFO:__main__:Logging handler created.\\n')"])
                os.write(2, b"progress 1/2\rprogress 2/2\n")
            os.write(2, b"after the block\n")
            """
        )
        stderr = result.stderr.decode()  # Bytes: text mode would turn the \r into \n.
        self.assertEqual(result.returncode, 0, stderr)
        self.assertEqual(
            stderr,
            "E0000 00:00:1.0 1 other.cc:1] an error that matters\n"
            "a python warning\n"
            "progress 1/2\rprogress 2/2\n"
            "after the block\n",
        )

    def test_onednn_notices_of_the_types_seen_are_dropped_and_others_kept(self):
        result = _filtered(
            r"""
            with verbosity.filtered_stderr(verbosity.NOISE):
                os.write(2, b"E0000 00:00:1.0 1 util.cc:131] oneDNN supports DT_INT32 only on platforms with "
                            b"AVX-512. Falling back to the default Eigen-based implementation if present.\n")
                os.write(2, b"E0000 00:00:1.0 1 util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512.\n")
                os.write(2, b"E0000 00:00:1.0 1 util.cc:131] oneDNN supports DT_HALF only on platforms with AVX-512.\n")
            """
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        self.assertEqual(
            result.stderr.decode(),
            "E0000 00:00:1.0 1 util.cc:131] oneDNN supports DT_HALF only on platforms with AVX-512.\n",
        )

    def test_configure_filters_until_exit_even_a_hard_one(self):
        script = textwrap.dedent(
            r"""
            import os, sys
            from cxr_cli import verbosity
            verbosity.configure(argv=["prog"])
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


if __name__ == "__main__":
    tf.test.main()
