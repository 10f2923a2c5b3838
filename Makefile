# Every target that needs Python runs in .venv/, created and filled from pyproject.toml with the
# exact versions of requirements.lock when missing or older than either (the stamp file).
SHELL := /bin/bash
# The first of python3.11, python3.12, python3.13 (then python3) that runs and is 3.11-3.13;
# PYTHON=/path/to/python3.x picks another.
SUPPORTED_PYTHONS := 3.11 3.12 3.13
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	$$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

# Inputs. Without DATA_DIR, the synthetic NIH-layout demo set is generated into data/demo.
# DATASET (make tfrecords / inspect): nih, chexpert, mimic_cxr_jpg, padchest, rsna_pneumonia or
# folders (beam_pipelines/datasets/); for another than nih, the demo set in that data set's layout
# (a few hundred images) goes to data/demo-<DATASET> and the records to data/tfrecords-<DATASET>.
DATASET ?= nih
ifeq ($(DATASET),nih)
DEMO_DIR := data/demo
DEMO_MARKER := Data_Entry_2017.csv
NUM_IMAGES ?= 2000
OUTPUT_DIR ?= data/tfrecords
else
DEMO_DIR := data/demo-$(DATASET)
DEMO_MARKER := .demo-layout
NUM_IMAGES ?= 300
OUTPUT_DIR ?= data/tfrecords-$(DATASET)
endif
DATA_DIR ?= $(DEMO_DIR)
IMAGE_SIZE ?= 256
# The folder-per-class demo set names its images like the pediatric pneumonia set (personN_M.png).
ifeq ($(DATASET),folders)
DATASET_ARGS ?= --patient_regex='^person(\d+)_'
else
DATASET_ARGS ?=
endif
DEMO_IMAGE_SIZE ?= 1024
BEAM_ARGS ?=
PYTEST_ARGS ?=

# Training. PROFILE=demo is the small ResUNet for the 64x64 demo records (trainer/training/config.py);
# PROFILE=full is the 2023 thesis recipe for the real data at IMAGE_SIZE.
PROFILE ?= demo
ifeq ($(PROFILE),demo)
TRAIN_IMAGE_SIZE ?= 64
else
TRAIN_IMAGE_SIZE ?= $(IMAGE_SIZE)
endif
RECORDS_DIR ?= data/tfrecords-$(PROFILE)-$(TRAIN_IMAGE_SIZE)
RUN ?= runs/$(PROFILE)
TRAIN_ARGS ?=
BOOTSTRAP ?= 1000
# More trainer.evaluate flags, e.g. EVAL_ARGS="--tta=hflip --calibration=none".
EVAL_ARGS ?=
IMAGES ?= $(DEMO_DIR)/images_001/images
PREDICT_ARGS ?=
# make inspect: the records to check and draw (default: the training records, built if missing;
# with another DATASET than nih, the records of `make tfrecords DATASET=...`).
ifeq ($(DATASET),nih)
RECORDS ?= $(RECORDS_DIR)
else
RECORDS ?= $(OUTPUT_DIR)
endif
INSPECT_ARGS ?=

# The demo set is a prerequisite only when DATA_DIR is the demo folder.
DATA_DEP := $(if $(filter $(DEMO_DIR),$(DATA_DIR)),$(DEMO_DIR)/$(DEMO_MARKER),)

.PHONY: help setup check-python lock demo-data tfrecords train evaluate predict inspect test test-slow lint \
	format clean measurements bench bench-tfrecords bench-input bench-train profile-train bench-bootstrap bench-demo \
	bench-nih-scale

help:
	@echo "make train      demo data -> TFRecords -> train -> export -> reports (runs/demo/)"
	@echo "make test       set up and run the test suite"
	@echo "make inspect    check a records directory against its manifest, summary + contact sheet PNG"
	@echo "make setup | demo-data | tfrecords | evaluate | predict | test-slow | bench | measurements | lint | format | clean"

setup: $(STAMP)

# Stops with the versions it needs when no supported Python is found (or PYTHON is another one).
check-python:
	@test -n "$(PYTHON)" && $(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' \
		2>/dev/null || { echo "make: needs Python 3.11, 3.12 or 3.13: $(if $(PYTHON),PYTHON=$(PYTHON) is not one,none of" \
		"python3.11 python3.12 python3.13 python3 is)." "Install one, or pass PYTHON=/path/to/python3.12." >&2; exit 1; }

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || { $(MAKE) --no-print-directory check-python && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

# Re-pins requirements.lock to what .venv/ holds now (after changing a range in pyproject.toml).
lock: $(STAMP)
	{ sed -n '/^#/p' $(LOCK); $(PY) -m pip freeze --exclude-editable | grep -v '^#'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

# The benchmark-only environment: the product plus tf-keras, for the Keras 2 baseline.
$(BENCH_STAMP): pyproject.toml $(LOCK)
	test -x $(BENCH_VENV)/bin/python || { $(MAKE) --no-print-directory check-python && $(PYTHON) -m venv $(BENCH_VENV); }
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -c $(LOCK) -e '.[bench-baseline]'
	touch $(BENCH_STAMP)

# The demo set is generated only when DATA_DIR is the demo folder and it is not there yet.
$(DEMO_DIR)/$(DEMO_MARKER): | $(STAMP)
	$(PY) -m demo_data.generate --layout=$(DATASET) --output_dir=$(DEMO_DIR) --num_images=$(NUM_IMAGES) \
		--image_size=$(DEMO_IMAGE_SIZE)

demo-data: $(STAMP) $(DEMO_DIR)/$(DEMO_MARKER)

# Re-running into a finished OUTPUT_DIR is refused by the job; pass BEAM_ARGS=--overwrite.
tfrecords: $(STAMP) $(DATA_DEP)
	$(PY) -m beam_pipelines.build_tfrecords --dataset=$(DATASET) --data_dir=$(DATA_DIR) \
		--output_dir=$(OUTPUT_DIR) --image_size=$(IMAGE_SIZE) $(DATASET_ARGS) $(BEAM_ARGS)

# make inspect DATASET=<not nih> builds the data set's demo records first when they are missing.
ifneq ($(DATASET),nih)
$(OUTPUT_DIR)/manifest.json: | $(STAMP) $(DATA_DEP)
	$(PY) -m beam_pipelines.build_tfrecords --dataset=$(DATASET) --data_dir=$(DATA_DIR) \
		--output_dir=$(OUTPUT_DIR) --image_size=$(IMAGE_SIZE) $(DATASET_ARGS) $(BEAM_ARGS)
endif

# The training records are built once per profile and size, then reused.
$(RECORDS_DIR)/manifest.json: | $(STAMP) $(DATA_DEP)
	$(PY) -m beam_pipelines.build_tfrecords --data_dir=$(DATA_DIR) --output_dir=$(RECORDS_DIR) \
		--image_size=$(TRAIN_IMAGE_SIZE) --overwrite $(BEAM_ARGS)

train: $(STAMP) $(RECORDS_DIR)/manifest.json
	$(PY) -m trainer.train --profile=$(PROFILE) --records_dir=$(RECORDS_DIR) --run_dir=$(RUN) $(TRAIN_ARGS)
	$(PY) -m trainer.evaluate --run_dir=$(RUN) --bootstrap_resamples=$(BOOTSTRAP) $(EVAL_ARGS)

evaluate: $(STAMP)
	$(PY) -m trainer.evaluate --run_dir=$(RUN) --bootstrap_resamples=$(BOOTSTRAP) $(EVAL_ARGS)

predict: $(STAMP)
	$(PY) -m trainer.predict --run_dir=$(RUN) --images=$(IMAGES) $(PREDICT_ARGS)

# Summary and <RECORDS>-contact-sheet.png; e.g. INSPECT_ARGS="--label=Effusion --augmented".
inspect: $(STAMP) $(if $(filter $(RECORDS_DIR),$(RECORDS)),$(RECORDS_DIR)/manifest.json,) \
		$(if $(filter-out nih,$(DATASET)),$(if $(filter $(OUTPUT_DIR),$(RECORDS)),$(OUTPUT_DIR)/manifest.json,),)
	$(PY) -m trainer.inspect $(RECORDS) $(INSPECT_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# Benchmarks: side-by-side ratios in one run each, written to runs/bench/*.json, then
# merged into benchmarks/results.json and docs/measurements.md.
bench: bench-tfrecords bench-input bench-train profile-train bench-bootstrap bench-demo
	$(PY) -m benchmarks.measurements

# The current figure of each benchmark (runs/bench/*.json, newer replaces older) into
# benchmarks/results.json, docs/measurements.md and the README's results table.
measurements: $(STAMP)
	$(PY) -m benchmarks.measurements

bench-tfrecords: $(STAMP)
	$(PY) -m benchmarks.bench_tfrecords

# The full-size rehearsal (112,120 rows, about 7.5 GB of scratch space, deleted after): the real
# CSV and PNGs when given, e.g. NIH_LABELS_CSV=.../Data_Entry_2017_v2020.csv.gz NIH_PNG_POOL=.../images.
NIH_LABELS_CSV ?=
NIH_PNG_POOL ?=
bench-nih-scale: $(STAMP)
	$(PY) -m benchmarks.nih_scale $(if $(NIH_LABELS_CSV),--labels_csv=$(NIH_LABELS_CSV)) \
		$(if $(NIH_PNG_POOL),--png_pool=$(NIH_PNG_POOL))

bench-input: $(STAMP) $(BENCH_STAMP)
	$(PY) -m benchmarks.bench_input

bench-train: $(STAMP)
	$(PY) -m benchmarks.bench_train

# Where the training loop's wall time goes (steps, metrics, input, validation, each callback),
# the fit/bare-step ratio, CPU cores busy and epoch spread, for the demo and full profiles.
profile-train: $(STAMP)
	$(PY) -m benchmarks.profile_train --full_variants=before,after

bench-bootstrap: $(STAMP)
	$(PY) -m benchmarks.bench_bootstrap --nih_scale

# Demo renderer speed, and how separable the planted findings are (logistic regression, tiny CNN).
bench-demo: demo-data
	$(PY) -m benchmarks.demo_render --num_images=20
	$(PY) -m benchmarks.demo_separability --data_dir=$(DEMO_DIR) --sizes=32,64 --cnn_size=128 --cnn_epochs=12

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(BENCH_VENV) data runs build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
