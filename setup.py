"""Kept only for Apache Beam's stager: `--setup_file=./setup.py` runs `python setup.py sdist`
when the `build` package is not installed. Everything (metadata, dependencies, console scripts)
is in pyproject.toml.
"""

import setuptools

setuptools.setup()
