# Two commands for a fresh machine:
#   make demo   install the tool alone (no PyTorch) and run the shipped model on the bundled photo
#   make test   set up the course's environment, fetch data, run every check (lint, spelling,
#               unit tests, notebooks)
# Set FKP_DATA_MIRROR=/path/to/folder/with/train-test-data.zip where there is no internet.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the tool alone, as `pip install facial-keypoints` gives it: what `make demo` runs
DEMO_VENV := .venv-demo
DEMO_STAMP := $(DEMO_VENV)/.installed
NOTEBOOKS := 1_Load_and_Visualize.ipynb 2_Define_Train_CNN.ipynb 3_Haar_Detection.ipynb 4_Fun_Filters.ipynb
PYTEST := $(PY) -m pytest -q --durations=15

.PHONY: demo test test-fast unit notebooks lint spell data model venv lab serve clean

# the course's environment: the package (editable) with every extra (requirements.txt)
venv: $(STAMP)
$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

$(DEMO_STAMP): constraints.txt pyproject.toml $(shell git ls-files facial_keypoints 2>/dev/null)
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install --quiet . -c constraints.txt
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(DEMO_VENV)/bin/fkp-detect --annotate out/demo --json out/demo/demo.json --overwrite
	@echo "annotated photo written to out/demo/"

data: $(STAMP)
	$(PY) fetch_data.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

spell: $(STAMP)
	$(VENV)/bin/codespell *.py facial_keypoints benchmarks tests README.md $(wildcard $(NOTEBOOKS)) \
		saved_models/*.md detector_architectures/*.md

unit: data
	$(PYTEST) tests

test-fast: data
	$(PYTEST) -m "not slow" tests

notebooks: data
	FKP_FAST=1 $(PYTEST) --nbval-lax -p no:cacheprovider $(wildcard $(NOTEBOOKS))

# The unit tests run on every core, a test file to a worker (pytest-xdist), except those that
# time the machine (the webcam page's frames/s: marked serial), which run alone after them.
# The tests and the notebooks' fast run never change a committed file (a full run of notebook 2
# replaces saved_models/net_notebook2.pt; its fast run writes under runs/): checked against the
# working tree as it was before, so local edits do not count.
test: data
	$(MAKE) lint spell
	@before="$$(git diff HEAD 2>/dev/null | md5sum)"; \
	$(PYTEST) -n auto --dist loadfile -m "not serial" tests && \
	$(PYTEST) -m serial tests && \
	FKP_FAST=1 $(PYTEST) --nbval-lax -p no:cacheprovider $(wildcard $(NOTEBOOKS)) && \
	if [ "$$before" != "$$(git diff HEAD 2>/dev/null | md5sum)" ]; then \
		echo "make test changed committed files:"; git status --short; exit 1; fi

# The shipped model, trained from nothing in two stages and shipped, with its ONNX twins (float
# and INT8) and card, inside the package: 100 epochs on 112-px grayscale crops, then 30 epochs
# fine-tuning those weights on 128-px colour crops (about 3 h on 2 CPU cores; resumable:
# run `make model` again after an interruption). CI never runs this.
MODEL_ARGS := --arch heatmap --width 32 --input-size 112 --markups course,300w \
	--extra-data 300w+afw --mix-300w 0.5 --loss wing --ema 0.999 --epochs 100 --patience 100 \
	--flip 0 --flip-300w 0.5 --degrees 20 --degrade 0.25 --jitter-scale 0.15 --jitter-shift 0.08 \
	--gamma 0.3 --lr 1e-3 --batch-size 32 --workers 1 --out runs/shipped
FINETUNE_ARGS := --arch heatmap --width 32 --input-size 128 --color --markups course,300w \
	--extra-data 300w+afw --mix-300w 0.5 --loss wing --ema 0.999 --epochs 30 --patience 100 \
	--flip 0 --flip-300w 0.5 --degrees 20 --degrade 0.25 --jitter-scale 0.15 --jitter-shift 0.08 \
	--gamma 0.3 --lr 1e-4 --batch-size 32 --workers 1 --init runs/shipped/best.pt \
	--out runs/shipped_128
model: data
	$(PY) train.py $(MODEL_ARGS) $(if $(wildcard runs/shipped/last.pt),--resume,)
	$(PY) train.py $(FINETUNE_ARGS) $(if $(wildcard runs/shipped_128/last.pt),--resume,)
	$(VENV)/bin/fkp-ship --model runs/shipped_128/best.pt --dest facial_keypoints/keypoints/shipped/keypoints.pt

lab: data
	$(VENV)/bin/jupyter lab

# the web page and the API on http://127.0.0.1:8000/ (Ctrl-C stops it)
serve: $(STAMP)
	$(VENV)/bin/fkp-serve

clean:
	rm -rf runs out .pytest_cache build dist
