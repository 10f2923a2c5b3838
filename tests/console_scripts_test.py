"""The console scripts of pyproject.toml, run as a user runs them: `--help`, errors, `python -m`.

Each command runs in a subprocess. When the environment's bin/ holds pip's wrapper of the entry
point this checkout's pyproject.toml names (a fresh clone after `make setup`), the test runs that
script; otherwise (an environment installed from another checkout, whose scripts may call other
entry points) it runs the same entry function the wrapper would, through `python -c`, with the
command's name as `sys.argv[0]`, as the wrapper does.
"""

import concurrent.futures
import dataclasses
import os
import re
import subprocess
import sys
import tomllib

import pytest
import tensorflow as tf

from beam_pipelines import build_tfrecords, job
from cxr_cli import config_flags, verbosity
from demo_data import writer
from trainer import inspect as inspect_binary
from trainer.evaluation import pipeline
from trainer.prediction import predictor
from trainer.training import config as train_config

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as _f:
    SCRIPTS = tomllib.load(_f)["project"]["scripts"]
# Each command's configuration dataclasses (every field with a flag must be listed by --help),
# and the flags the binary defines besides them.
CONFIGS = {
    "cxr-demo-data": ((writer.DemoDataConfig,), ()),
    "cxr-build-tfrecords": ((job.JobConfig, build_tfrecords.SplitFlags), ()),
    "cxr-train": ((train_config.TrainConfig,), ("strategy", "dump_flagfile")),
    "cxr-evaluate": ((pipeline.EvaluateConfig,), ()),
    "cxr-predict": ((predictor.PredictConfig,), ()),
    "cxr-inspect": ((inspect_binary.InspectConfig,), ()),
}
# Any sign of the libraries' start-up, absl's or ours failing.
_STARTUP = re.compile(r"absl::InitializeLog|\] oneDNN|cuda|cpu_feature_guard|rebuild TensorFlow|Traceback")


def command(name):
    """The argv that runs console script `name` as installed from this checkout."""
    module, function = SCRIPTS[name].split(":")
    installed = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(installed, os.X_OK):
        with open(installed, encoding="utf-8", errors="replace") as f:
            if f"from {module} import {function}\n" in f.read():  # pip's wrapper of this entry point.
                return [installed]
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, "-c", code]


def run(argv, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in (verbosity.ENV_VAR, verbosity.TF_LOG_ENV_VAR)}
    env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=_ROOT, timeout=timeout)


def expected_flags(name):
    classes, extra = CONFIGS[name]
    names = [config_flags.flag_name(f) for cls in classes for f in dataclasses.fields(cls)]
    return [n for n in names if n is not None] + list(extra)


class ConsoleScriptsTest(tf.test.TestCase):
    def test_every_script_is_known(self):
        self.assertCountEqual(SCRIPTS, CONFIGS)

    def test_help_lists_every_flag_and_no_library_line(self):
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(SCRIPTS)) as pool:
            results = dict(zip(SCRIPTS, pool.map(lambda n: run([*command(n), "--help"]), SCRIPTS)))
        for name, result in results.items():
            with self.subTest(command=name):
                self.assertEqual(result.returncode, 0, result.stderr[-3000:])
                self.assertNotRegex(result.stdout + result.stderr, _STARTUP)
                self.assertEqual(result.stderr, "")
                for flag in expected_flags(name):
                    # absl: `--name: help` or `--[no]name: help`, then `(default: ...)`.
                    self.assertRegex(result.stdout, rf"\n  --(\[no\])?{flag}: (.|\n)*?\(default: ", flag)
                self.assertIn("--flagfile=FILE", result.stdout)
                # `cxr-train --help | head` shows the summary, the usage line and flags already.
                head = result.stdout.splitlines()[:10]
                self.assertRegex(head[1], rf"^USAGE: {name} ")
                self.assertTrue(any(line.startswith("  --") for line in head), head)

    @pytest.mark.slow
    def test_the_script_is_python_dash_m(self):
        script = run([*command("cxr-predict"), "--help"])
        module = run([sys.executable, "-m", "trainer.predict", "--help"])
        self.assertEqual(module.returncode, 0, module.stderr[-3000:])

        def flags_part(text):  # absl heads the flag list with the program's path.
            return text.split("\nflags:\n", 1)[1].split("\n", 2)[2]

        self.assertEqual(flags_part(script.stdout), flags_part(module.stdout))

    def test_error_line_names_the_command(self):
        missing = os.path.join(self.get_temp_dir(), "no-records")
        result = run([*command("cxr-inspect"), missing])
        self.assertEqual(result.returncode, 1, result.stderr[-3000:])
        self.assertNotIn("Traceback", result.stderr)
        self.assertRegex(
            result.stderr.strip().splitlines()[-1], rf"^cxr-inspect: error: .*{re.escape(missing)}"
        )


if __name__ == "__main__":
    tf.test.main()
