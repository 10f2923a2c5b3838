# Every target that needs Python runs in .venv/, created and filled from setup.py's pins
# when missing or older than setup.py (the stamp file).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Inputs. Without DATA_DIR, the synthetic NIH-layout demo set is generated into data/demo.
DEMO_DIR := data/demo
DATA_DIR ?= $(DEMO_DIR)
OUTPUT_DIR ?= data/tfrecords
IMAGE_SIZE ?= 256
NUM_IMAGES ?= 2000
DEMO_IMAGE_SIZE ?= 1024
BEAM_ARGS ?=
PYTEST_ARGS ?=

.PHONY: help setup demo-data tfrecords test test-slow lint format clean

help:
	@echo "make train      demo data -> TFRecords -> train -> export -> reports"
	@echo "make test       set up and run the test suite"
	@echo "make setup | demo-data | tfrecords | lint | format | clean"

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo set is generated only when DATA_DIR is the demo folder and it is not there yet.
$(DEMO_DIR)/Data_Entry_2017.csv: | $(STAMP)
	$(PY) -m beam_pipelines.demo_data --output_dir=$(DEMO_DIR) --num_images=$(NUM_IMAGES) --image_size=$(DEMO_IMAGE_SIZE)

demo-data: $(STAMP) $(DEMO_DIR)/Data_Entry_2017.csv

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) data runs build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
