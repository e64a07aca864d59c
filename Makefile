# rdistill: set-up, the main job and the tests. `make demo` and `make test` create the virtualenv when missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ../shared/data
ARTIFACTS ?= artifacts
export RDISTILL_DATA_DIR ?= $(abspath $(DATA_DIR))
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast bench-students bench-pipeline clean

# torch is pinned to the CPU wheel first: an unpinned torch (pulled by another package) is a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

# The main job on the default data: the whole pipeline (prepare, teacher train, teacher infer, tune + export) on a
# slice of MovieLens latest-small, then the winner deployed with Ray Serve answering a sample request.
demo: setup
	$(BIN)/rdistill run --config ml-latest-small --profile quick --serve \
		artifact_root=$(ARTIFACTS)/ml-latest-small-quick

test: setup
	$(BIN)/python -m pytest -q

# Unit tests only (no training on real data).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

bench-pipeline: setup
	$(BIN)/python benchmarks/pipeline.py --dataset ml-latest-small --profile quick

bench-students: setup
	$(BIN)/python benchmarks/students.py --out benchmarks/results/students.json

clean:
	rm -rf $(ARTIFACTS) .pytest_cache
